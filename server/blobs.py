"""Uploaded input files: a content-addressed store in the server's data dir (docs/protocol.md §2, ``upload``).

The server opens no client path. A client reads its own file and offers its sha256; the server answers
whether it holds those bytes already (a regenerate, more takes, the same clip in several jobs or
fine-tunes: nothing is sent again), else the client sends them in chunks, appended to a partial file
and hashed as they come (the server never holds more than one chunk of an upload in memory), and the
finished file is renamed to ``blobs/<sha256>`` once its hash matches.

Nobody may use bytes it does not have: a submit names a blob with a *proof*, the sha256 of the
connection's challenge followed by the file's bytes (``proof_of``). The challenge is an HMAC of the
connection's identity under a key made at start, so offering a hash someone else uploaded gives a
client nothing: it needs the bytes themselves to make the proof. An owner (a connection identity; a
client identity when the server issues them) only bounds and scopes unfinished uploads: a partial
upload belongs to the owner that began it.

Blobs unused for ``ttl_s`` are deleted, and the least recently used go first when the store passes
``max_total_bytes``; a queued job never needs its blob again (its inputs were decoded or copied into
its folder at submit).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from server.protocol import ProtocolError

SHA256_RE = re.compile(r"[0-9a-f]{64}")
CHUNK_BYTES = 4 * 2**20  # the largest chunk a client may send in one message
SWEEP_EVERY_S = 600.0  # expiry runs at start and at most this often on an offer
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_PARTIAL = "partial"


def proof_of(challenge: str, f: BinaryIO, block: int = 1 << 20) -> str:
    """sha256(challenge || the file's bytes), hex; reads ``f`` from where it is to its end."""
    h = hashlib.sha256(challenge.encode("ascii"))
    while chunk := f.read(block):
        h.update(chunk)
    return h.hexdigest()


@dataclass
class _Partial:
    path: Path
    size: int
    hasher: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    received: int = 0
    touched: float = field(default_factory=time.time)


class BlobStore:
    def __init__(self, root: Path, *, max_blob_bytes: int, max_total_bytes: int, ttl_s: float = 24 * 3600.0,
                 partial_ttl_s: float = 3600.0, max_partials_per_owner: int = 4, max_partials: int = 64):
        self.root = Path(root)
        self.max_blob_bytes = max_blob_bytes
        self.max_total_bytes = max_total_bytes
        self.ttl_s = ttl_s
        self.partial_ttl_s = partial_ttl_s
        self.max_partials_per_owner = max_partials_per_owner
        self.max_partials = max_partials
        self._key = os.urandom(32)
        self._lock = threading.Lock()
        self._partials: dict[tuple[bytes, str], _Partial] = {}
        self.received_bytes = 0  # chunk bytes accepted since start (tests and benchmarks count uploads)
        self._swept = time.monotonic()
        (self.root / _PARTIAL).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        for leftover in (self.root / _PARTIAL).iterdir():  # a stopped server's unfinished uploads
            _unlink(leftover)

    # -----------------------------------------------------------------------------------------
    def challenge(self, owner: bytes) -> str:
        return hmac.new(self._key, owner, hashlib.sha256).hexdigest()[:32]

    def _blob_path(self, sha: str) -> Path:
        return self.root / sha

    def _check(self, sha: str, size: int | None = None) -> None:
        if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
            raise ProtocolError("bad_request", "field 'sha256' must be 64 lower-case hex digits", "sha256")
        if size is not None and size > self.max_blob_bytes:
            raise ProtocolError("bad_upload", f"the file is {size} bytes; this server takes uploads of at most "
                                              f"{self.max_blob_bytes // 2**20} MiB", "size")

    def has(self, sha: str) -> bool:
        return os.path.isfile(self._blob_path(sha)) and not os.path.islink(self._blob_path(sha))

    def offer(self, owner: bytes, sha: str, size: int) -> dict:
        """A client offers a file: do we hold it (it needs to send nothing), else from where to send it."""
        self._check(sha, size)
        if time.monotonic() - self._swept > SWEEP_EVERY_S:  # a long-running server expires as it goes
            self.sweep()
        reply = {"sha256": sha, "size": size, "challenge": self.challenge(owner), "chunk_bytes": CHUNK_BYTES}
        path = self._blob_path(sha)
        with self._lock:
            if self.has(sha) and os.path.getsize(path) == size:
                _touch(path)
                return {**reply, "have": True, "offset": size}
            part = self._partials.get((owner, sha))
            if part is not None and part.size == size:
                part.touched = time.time()
                return {**reply, "have": False, "offset": part.received}
            self._begin(owner, sha, size)
        return {**reply, "have": False, "offset": 0}

    def _begin(self, owner: bytes, sha: str, size: int) -> _Partial:
        mine = [k for k in self._partials if k[0] == owner]
        if len(mine) >= self.max_partials_per_owner or len(self._partials) >= self.max_partials:
            raise ProtocolError("busy", f"too many unfinished uploads ({len(mine)} of this client, "
                                        f"{len(self._partials)} in all); finish them or try again later")
        self._make_room(size)
        old = self._partials.pop((owner, sha), None)
        if old is not None:
            _unlink(old.path)
        path = self.root / _PARTIAL / f"{owner.hex()[:32]}-{sha}-{os.urandom(4).hex()}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        os.close(fd)
        part = self._partials[(owner, sha)] = _Partial(path, size)
        return part

    def put_chunk(self, owner: bytes, sha: str, size: int, offset: int, data) -> dict:
        """One chunk at ``offset`` (exactly where the upload stands). The last one checks the hash and
        stores the blob; bytes that do not match are thrown away."""
        self._check(sha, size)
        if len(data) > CHUNK_BYTES:
            raise ProtocolError("bad_request", f"a chunk is at most {CHUNK_BYTES} bytes, got {len(data)}", "frame")
        with self._lock:
            part = self._partials.get((owner, sha))
            if part is None or part.size != size:
                if self.has(sha):
                    return {"sha256": sha, "size": size, "have": True, "offset": size}
                raise ProtocolError("bad_upload", f"no upload of {sha[:12]}… ({size} bytes) is under way for this "
                                                  f"client; offer it first (op upload without a frame)", "sha256")
            if offset != part.received or part.received + len(data) > size:
                raise ProtocolError("bad_upload", f"chunk at offset {offset} of {len(data)} bytes: the upload of "
                                                  f"{sha[:12]}… stands at {part.received} of {size} bytes", "offset")
            part.touched = time.time()
        fd = os.open(part.path, os.O_WRONLY | os.O_APPEND | _NOFOLLOW)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        part.hasher.update(data)
        part.received += len(data)
        self.received_bytes += len(data)
        if part.received < size:
            return {"sha256": sha, "size": size, "have": False, "offset": part.received}
        with self._lock:
            self._partials.pop((owner, sha), None)
        if part.hasher.hexdigest() != sha:
            _unlink(part.path)
            raise ProtocolError("bad_upload", f"the {size} bytes received do not have sha256 {sha}; upload the file "
                                              f"again", "sha256")
        os.replace(part.path, self._blob_path(sha))
        return {"sha256": sha, "size": size, "have": True, "offset": size}

    def open(self, owner: bytes, sha: str, proof: str, field_name: str) -> BinaryIO:
        """The blob's file, opened without following a link, once ``proof`` shows the client has its
        bytes (the file is read once here; the caller reads it from the start)."""
        if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
            raise ProtocolError("bad_request", f"field '{field_name}.blob' must be a sha256 (64 hex digits)",
                                field_name + ".blob")
        try:
            fd = os.open(self._blob_path(sha), os.O_RDONLY | _NOFOLLOW)
        except OSError:
            raise ProtocolError("blob_unknown", f"'{field_name}.blob': this server holds no upload {sha[:12]}… (it "
                                                f"expired or was never finished); upload the file again",
                                field_name + ".blob") from None
        f = os.fdopen(fd, "rb")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ProtocolError("blob_unknown", f"'{field_name}.blob' is not a stored upload", field_name + ".blob")
            _touch(self._blob_path(sha))
            expected = proof_of(self.challenge(owner), f)
            if not isinstance(proof, str) or not hmac.compare_digest(expected, proof):
                raise ProtocolError("bad_request", f"field '{field_name}.proof' does not prove this connection holds "
                                                   f"the bytes of {sha[:12]}… (it is sha256(challenge + the file), "
                                                   f"with the challenge of this connection's upload offer)",
                                    field_name + ".proof")
            f.seek(0)
            return f
        except BaseException:
            f.close()
            raise

    # -----------------------------------------------------------------------------------------
    def stored(self) -> list[tuple[float, int, Path]]:
        out = []
        for entry in os.scandir(self.root):
            if SHA256_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                out.append((st.st_mtime, st.st_size, Path(entry.path)))
        return sorted(out)

    def _make_room(self, incoming: int) -> None:
        """Least recently used blobs go until ``incoming`` more bytes fit (under the lock)."""
        blobs = self.stored()
        reserved = sum(p.size for p in self._partials.values())
        total = sum(size for _, size, _ in blobs) + reserved
        for _, size, path in blobs:
            if total + incoming <= self.max_total_bytes:
                return
            _unlink(path)
            total -= size
        if total + incoming > self.max_total_bytes:
            raise ProtocolError("busy", f"the upload store is full ({self.max_total_bytes // 2**20} MiB, with "
                                        f"unfinished uploads); try again later")

    def sweep(self, now: float | None = None) -> int:
        """Delete blobs unused for ``ttl_s`` and unfinished uploads idle for ``partial_ttl_s``."""
        now = time.time() if now is None else now
        self._swept = time.monotonic()
        removed = 0
        with self._lock:
            for key, part in list(self._partials.items()):
                if now - part.touched > self.partial_ttl_s:
                    del self._partials[key]
                    _unlink(part.path)
                    removed += 1
            for mtime, _, path in self.stored():
                if now - mtime > self.ttl_s:
                    _unlink(path)
                    removed += 1
        return removed


def _touch(path: Path) -> None:
    try:
        os.utime(path, follow_symlinks=False)
    except OSError:
        pass


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
