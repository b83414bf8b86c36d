"""Uploaded input files: a content-addressed store in the server's data dir (docs/protocol.md §2.1, ``upload``).

The server opens no client path. A client sends a file's bytes in chunks, appended to a partial file
and hashed as they come (the server never holds more than the chunks in flight of an upload in memory,
and hashes each byte once); the finished file is renamed to ``blobs/<blake3>`` of its bytes. A client
that knows a file's blake3 (it hashed the file, or remembers it: server/hashcache.py) offers it first
and the server answers whether it holds those bytes already (a regenerate, more takes, the same clip in
several jobs or fine-tunes: nothing is sent again); one that does not know it just sends the bytes
(``begin``): the server names them, and bytes it holds already are thrown away, not stored twice.

Nobody may use bytes it does not have. Sending the bytes proves it: an owner (server/owners.py: a
client's token or CURVE key, else its connection) that finished an upload is *granted* that blob. An
owner that was not must name the blob with a *proof*, the blake3 of its connection's challenge followed
by the file's bytes (``protocol.content_digest``); a right proof grants it too. The challenge is an HMAC of the
connection's identity under a key made at start, so offering a hash someone else uploaded gives a
client nothing: it needs the bytes themselves. Grants live in memory (after a restart, a proof).
An unfinished upload belongs to the connection that began it.

Blobs unused for ``ttl_s`` are deleted, and the least recently used go first when the store passes
``max_total_bytes``; a queued job never needs its blob again (its inputs were decoded or copied into
its folder at submit).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import mmap
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from server.protocol import CONTENT_HASH, CONTENT_HASH_RE, ProtocolError, content_digest, content_hasher

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

CHUNK_BYTES = 4 * 2**20  # the largest chunk a client may send in one message
MAX_GRANTS = 256  # owners remembered per blob (the latest)
SWEEP_EVERY_S = 600.0  # expiry runs at start and at most this often on an offer
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
LOCAL_SEGMENT = 8 * 2**20  # a descriptor's file is copied and hashed in segments of this (take_fd)
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: fault the mapping in at once
_NO_COPY_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY}
_PARTIAL = "partial"
_SPLICE = hasattr(os, "splice") and fcntl is not None
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def write_at(fd: int, data, offset: int) -> None:
    """Write ``data`` to the file ``fd`` at ``offset``. On Linux the bytes go through a pipe and
    splice(2) into the file: the kernel's own page copy, several times faster and cheaper than write(2)
    from process memory into the page cache (measured on Linux 6.18: 1.0 vs 0.2 GB/s; what a plain file
    copy uses); elsewhere, or if splice fails, pwrite(2)."""
    view = memoryview(data).cast("B")
    if _SPLICE and len(view) >= 65536:
        try:
            r, w = os.pipe()
        except OSError:
            r = w = -1
        if r >= 0:
            try:
                try:
                    fcntl.fcntl(w, _F_SETPIPE_SZ, 1 << 20)
                except OSError:  # a smaller pipe still works
                    pass
                os.set_blocking(w, False)
                while view:
                    n = os.write(w, view[:1 << 20])  # into an empty pipe: never blocks
                    done = 0
                    while done < n:
                        done += os.splice(r, fd, n - done, offset_dst=offset + done)
                    view, offset = view[n:], offset + n
                return
            except OSError:  # splice unsupported on this file system: the rest by pwrite
                pass
            finally:
                os.close(r)
                os.close(w)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


@dataclass
class _Partial:
    path: Path
    size: int
    identity: bytes  # the connection that began it (only it may send the chunks)
    owner: str  # who is granted the blob once it is whole
    sha: str | None  # what the client offered; None: named by its bytes when whole
    ticket: str | None = None  # a local client may hand its file's descriptor with this (server/localfd.py)
    taking: bool = False  # a descriptor is being copied in: no chunks
    hasher: Any = field(default_factory=content_hasher)
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
        self._partials: dict[str, _Partial] = {}  # by upload id
        self._grants: dict[str, dict[str, None]] = {}  # blake3 -> the owners that hold its bytes (ordered)
        self.received_bytes = 0  # bytes stored from clients since start, chunks and descriptors (tests and
        # benchmarks count uploads)
        self.local_socket: str | None = None  # where local clients hand descriptors (server/localfd.py), if open
        self._swept = time.monotonic()
        (self.root / _PARTIAL).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        for leftover in (self.root / _PARTIAL).iterdir():  # a stopped server's unfinished uploads
            _unlink(leftover)

    # -----------------------------------------------------------------------------------------
    def challenge(self, identity: bytes) -> str:
        return hmac.new(self._key, identity, hashlib.sha256).hexdigest()[:32]

    def _blob_path(self, sha: str) -> Path:
        return self.root / sha

    def _check(self, sha: str | None, size: int | None = None) -> None:
        if sha is not None and (not isinstance(sha, str) or not CONTENT_HASH_RE.fullmatch(sha)):
            raise ProtocolError("bad_request", f"field '{CONTENT_HASH}' must be 64 lower-case hex digits", CONTENT_HASH)
        if size is not None and size > self.max_blob_bytes:
            raise ProtocolError("bad_upload", f"the file is {size} bytes; this server takes uploads of at most "
                                              f"{self.max_blob_bytes // 2**20} MiB", "size")

    def has(self, sha: str) -> bool:
        return os.path.isfile(self._blob_path(sha)) and not os.path.islink(self._blob_path(sha))

    def granted(self, owner: str, sha: str) -> bool:
        with self._lock:
            return owner in self._grants.get(sha, ())

    def _grant(self, owner: str, sha: str) -> None:
        """(under the lock) ``owner`` holds the bytes of ``sha``; a blob keeps its latest MAX_GRANTS owners."""
        owners = self._grants.setdefault(sha, {})
        owners.pop(owner, None)
        owners[owner] = None
        while len(owners) > MAX_GRANTS:
            del owners[next(iter(owners))]

    def _reply(self, identity: bytes, part: _Partial | None = None, **fields) -> dict:
        local = {"local_socket": self.local_socket, "ticket": part.ticket} if part is not None and part.ticket else {}
        return {**fields, **local, "challenge": self.challenge(identity), "chunk_bytes": CHUNK_BYTES}

    def offer(self, identity: bytes, owner: str, sha: str, size: int, local: bool = False) -> dict:
        """A client offers a file by its hash: do we hold it (it sends nothing; ``granted``: it may name it
        without a proof), else the upload to send it to and from where (``local``: the client can hand its
        file's descriptor instead: the reply says where, with a ticket)."""
        self._check(sha, size)
        if time.monotonic() - self._swept > SWEEP_EVERY_S:  # a long-running server expires as it goes
            self.sweep()
        path = self._blob_path(sha)
        with self._lock:
            if self.has(sha) and os.path.getsize(path) == size:
                _touch(path)
                return self._reply(identity, **{CONTENT_HASH: sha}, size=size, have=True, offset=size,
                                   granted=owner in self._grants.get(sha, ()))
            upload, part = next(((k, p) for k, p in self._partials.items()
                                 if p.identity == identity and p.sha == sha and p.size == size), (None, None))
            if part is not None:  # this connection's unfinished upload of it: go on from where it stands
                part.touched = time.time()
            else:
                upload, part = self._begin(identity, owner, size, sha)
            self._ticket(part, local)
        return self._reply(identity, part, **{CONTENT_HASH: sha}, size=size, have=False, granted=False, upload=upload,
                           offset=part.received)

    def begin(self, identity: bytes, owner: str, size: int, local: bool = False) -> dict:
        """A client sends a file without offering its hash first (it does not know it): a new upload."""
        self._check(None, size)
        with self._lock:
            upload, part = self._begin(identity, owner, size, None)
            self._ticket(part, local)
        return self._reply(identity, part, size=size, have=False, granted=False, upload=upload, offset=0)

    def _ticket(self, part: _Partial, local: bool) -> None:
        """(under the lock) A one-use ticket to hand the descriptor with, for a client that can, while the
        upload has not begun by chunks and descriptors are taken here."""
        if local and self.local_socket is not None and part.received == 0:
            part.ticket = part.ticket or os.urandom(16).hex()

    def _begin(self, identity: bytes, owner: str, size: int, sha: str | None) -> tuple[str, _Partial]:
        mine = [p for p in self._partials.values() if p.identity == identity]
        if len(mine) >= self.max_partials_per_owner or len(self._partials) >= self.max_partials:
            raise ProtocolError("busy", f"too many unfinished uploads ({len(mine)} of this client, "
                                        f"{len(self._partials)} in all); finish them or try again later")
        self._make_room(size)
        upload = os.urandom(12).hex()
        path = self.root / _PARTIAL / f"{upload}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        os.close(fd)
        part = self._partials[upload] = _Partial(path, size, identity, owner, sha)
        return upload, part

    def put_chunk(self, identity: bytes, upload: str, offset: int, data) -> dict:
        """One chunk at ``offset`` (exactly where the upload stands). The last one names the blob by the
        blake3 of the bytes (which must be the offered one), stores it unless it is held already, and
        grants the uploader; bytes that do not match the offer are thrown away."""
        if len(data) > CHUNK_BYTES:
            raise ProtocolError("bad_request", f"a chunk is at most {CHUNK_BYTES} bytes, got {len(data)}", "frame")
        with self._lock:
            part = self._partials.get(upload) if isinstance(upload, str) else None
            if part is None or part.identity != identity:
                raise ProtocolError("bad_upload", f"no upload {str(upload)[:24]!r} is under way for this client "
                                                  f"(finished, expired or never begun); offer the file again", "upload")
            if part.taking:
                raise ProtocolError("bad_upload", f"upload {upload} is being copied from the file's descriptor; "
                                                  f"send no chunks to it", "upload")
            part.ticket = None  # sent as bytes: no descriptor any more
            if offset != part.received or part.received + len(data) > part.size:
                raise ProtocolError("bad_upload", f"chunk at offset {offset} of {len(data)} bytes: upload {upload} "
                                                  f"stands at {part.received} of {part.size} bytes", "offset")
            part.touched = time.time()
        part.hasher.update(data)
        fd = os.open(part.path, os.O_WRONLY | _NOFOLLOW)
        try:
            write_at(fd, data, part.received)
        finally:
            os.close(fd)
        part.received += len(data)
        self.received_bytes += len(data)
        if part.received < part.size:
            return {"upload": upload, "size": part.size, "have": False, "offset": part.received}
        return self._finish(upload, part)

    def take_fd(self, ticket: str, src: int, on_progress=None) -> dict:
        """A local client's file by the descriptor it opened and handed over with the upload's ``ticket``
        (server/localfd.py): copied in the kernel into the partial file, each segment hashed once stored
        (read back from the server's own file, so a client that writes its file meanwhile changes what it
        uploads, never what the stored bytes are named), then finished as by its last chunk. On any error
        the upload is dropped."""
        with self._lock:
            upload, part = next(((k, p) for k, p in self._partials.items()
                                 if p.ticket and hmac.compare_digest(p.ticket, ticket)), (None, None))
            if part is None:
                raise ProtocolError("bad_upload", "no upload under way has this ticket (used, expired, or begun "
                                                  "by chunks); offer the file again", "ticket")
            part.ticket, part.taking, part.touched = None, True, time.time()
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise ProtocolError("bad_upload", "the descriptor handed over is not a regular file; send its bytes",
                                    "ticket")
            if st.st_size < part.size:
                raise ProtocolError("bad_upload", f"the file handed over is {st.st_size} bytes, the upload "
                                                  f"{part.size}; offer it again", "size")
            dst = os.open(part.path, os.O_RDWR | _NOFOLLOW)
            try:
                _copy_and_hash(src, dst, part.size, part.hasher, on_progress)
            finally:
                os.close(dst)
        except BaseException:
            with self._lock:
                self._partials.pop(upload, None)
            _unlink(part.path)
            raise
        part.received = part.size
        self.received_bytes += part.size
        return self._finish(upload, part)

    def _finish(self, upload: str, part: _Partial) -> dict:
        """The whole file is in ``part``: name it, keep it unless held already, grant its owner."""
        with self._lock:
            self._partials.pop(upload, None)
        sha = part.hasher.hexdigest()
        if part.sha is not None and sha != part.sha:
            _unlink(part.path)
            raise ProtocolError("bad_upload", f"the {part.size} bytes received do not have {CONTENT_HASH} {part.sha}; "
                                              f"upload the file again", CONTENT_HASH)
        with self._lock:
            if self.has(sha):  # sent without an offer, and held already: stored once
                _unlink(part.path)
                _touch(self._blob_path(sha))
            else:
                os.replace(part.path, self._blob_path(sha))
            self._grant(part.owner, sha)
        return {"upload": upload, CONTENT_HASH: sha, "size": part.size, "have": True, "granted": True,
                "offset": part.size}

    def open(self, identity: bytes, owner: str, sha: str, proof: str | None, field_name: str) -> BinaryIO:
        """The blob's file, opened without following a link, for an owner granted it, or once ``proof``
        shows this connection has its bytes (the file is then read once here; the caller reads it from
        the start)."""
        if not isinstance(sha, str) or not CONTENT_HASH_RE.fullmatch(sha):
            raise ProtocolError("bad_request", f"field '{field_name}.blob' must be a blake3 (64 hex digits)",
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
            if self.granted(owner, sha):
                return f
            if proof is None:
                raise ProtocolError("bad_request", f"field '{field_name}.proof' is missing: this client did not "
                                                   f"upload {sha[:12]}…, so it must prove it holds the bytes "
                                                   f"(blake3(challenge + the file), with the challenge of this "
                                                   f"connection's upload offer)", field_name + ".proof")
            expected = content_digest(f, self.challenge(identity).encode("ascii"))
            if not isinstance(proof, str) or not hmac.compare_digest(expected, proof):
                raise ProtocolError("bad_request", f"field '{field_name}.proof' does not prove this connection holds "
                                                   f"the bytes of {sha[:12]}… (it is blake3(challenge + the file), "
                                                   f"with the challenge of this connection's upload offer)",
                                    field_name + ".proof")
            with self._lock:
                self._grant(owner, sha)
            f.seek(0)
            return f
        except BaseException:
            f.close()
            raise

    # -----------------------------------------------------------------------------------------
    def stored(self) -> list[tuple[float, int, Path]]:
        out = []
        for entry in os.scandir(self.root):
            if CONTENT_HASH_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
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
            self._forget(path)
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
                    self._forget(path)
                    removed += 1
        return removed

    def _forget(self, path: Path) -> None:
        """(under the lock) A blob goes, and who was granted it."""
        _unlink(path)
        self._grants.pop(path.name, None)


def _copy_and_hash(src: int, dst: int, size: int, hasher, on_progress=None) -> None:
    """``size`` bytes of ``src`` into ``dst`` from offset 0, segment by segment in the kernel, while a
    second thread hashes the segment before, mapped from ``dst`` (no copy; pre-faulted: 0.2-0.26 CPU s/GiB
    here against 0.31-0.36 read into a buffer): the copy and the hash overlap, and what is hashed is what
    was stored."""

    def hash_segment(offset: int, n: int) -> None:
        mm = mmap.mmap(dst, n, flags=mmap.MAP_SHARED | _MAP_POPULATE, prot=mmap.PROT_READ, offset=offset)
        try:
            with memoryview(mm) as view:
                hasher.update(view)
        finally:
            mm.close()

    with ThreadPoolExecutor(1, thread_name_prefix="m2ugen-hash") as pool:
        pending = None
        offset = 0
        while offset < size:
            n = min(LOCAL_SEGMENT, size - offset)
            _copy_range(src, dst, offset, n)
            if pending is not None:
                pending.result()  # the buffer is free again
            pending = pool.submit(hash_segment, offset, n)
            offset += n
            if on_progress is not None:
                on_progress(offset)
        if pending is not None:
            pending.result()


def _copy_range(src: int, dst: int, offset: int, n: int) -> None:
    """``n`` bytes at ``offset`` of ``src`` to the same offset of ``dst``: copy_file_range(2) (the kernel's
    own copy, what a plain file copy uses), else (macOS, or files it cannot join) pread + write."""
    done = 0
    kernel = hasattr(os, "copy_file_range")
    while done < n:
        k = -1
        if kernel:
            try:
                k = os.copy_file_range(src, dst, n - done, offset + done, offset + done)
            except OSError as e:
                if e.errno not in _NO_COPY_RANGE:
                    raise
                kernel = False  # not between these files: the rest of the segment by read + write
        if k < 0:
            data = os.pread(src, min(n - done, CHUNK_BYTES), offset + done)
            if data:
                write_at(dst, data, offset + done)
            k = len(data)
        if k == 0:
            raise ProtocolError("bad_upload", f"the file handed over ended at {offset + done} bytes while it was "
                                              f"read; offer it again", "size")
        done += k


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
