"""The content hash (BLAKE3, protocol.content_hasher) of files a client uploaded, remembered by what ``stat`` says of them, so that a regenerate
(another CLI run, more takes, the same clip in another job) offers the hash without reading the file
again (server/client.py ``Client.upload``; docs/protocol.md §2.1).

An entry is keyed by (device, inode, size, mtime_ns, ctime_ns): any write to the file, a rename over it
or a new file in its place changes one of them (ctime cannot be set back by a program). A write in the
same clock tick as the file's last change could still go unseen, so an entry is *trusted* only when the
file had not changed for ``RACY_S`` when it was read (git's "racily clean" rule); an untrusted entry
only says "this file was sent before": the client hashes it and offers the hash, never trusting the
remembered one. A file not known by its stat but of the same size and first and last 64 KiB as one sent
before (``hint_of``: a DAW renders the same selection again into a new file) is likely the same bytes:
the client hashes it and offers it rather than sending it. The file is JSON in the config dir (never a pickle), at most ``MAX_ENTRIES`` entries,
replaced atomically; a file that cannot be read or written is an empty cache, never an error.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from server.protocol import CONTENT_HASH_RE, content_hasher

RACY_S = 3.0  # longer than the coarsest file-time tick a sample drive has (FAT: 2 s)
MAX_ENTRIES = 1024
HINT_BYTES = 65536


def key_of(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def hint_of(f, size: int) -> str:
    """A cheap sign that a file may hold bytes sent before: its size and the hash of its first and last
    ``HINT_BYTES`` (read here; ``f`` is left where it was). Only ever a reason to hash the file."""
    pos = f.tell()
    h = content_hasher(str(size).encode("ascii"))
    f.seek(0)
    h.update(f.read(HINT_BYTES))
    if size > HINT_BYTES:
        f.seek(max(HINT_BYTES, size - HINT_BYTES))
        h.update(f.read(HINT_BYTES))
    f.seek(pos)
    return "hint:" + h.hexdigest()[:32]


def default_path() -> Path:
    from m2ugen import paths

    return paths.config_dir() / "upload-blake3.json"  # protocol 3 (upload-hashes.json held sha256s)


class HashCache:
    def __init__(self, path: Path | None = None):
        self.path = path  # None: this process only
        self._entries: dict[str, list] = {}  # key -> [blake3, trusted], oldest first
        if path is not None:
            try:
                data = json.loads(Path(path).read_text(encoding="utf-8"))
                self._entries = {k: [v[0], bool(v[1])] for k, v in data.items()
                                 if isinstance(k, str) and isinstance(v, list) and len(v) == 2
                                 and isinstance(v[0], str) and CONTENT_HASH_RE.fullmatch(v[0])}
            except (OSError, ValueError, AttributeError, UnicodeDecodeError):
                self._entries = {}

    def lookup(self, st: os.stat_result) -> tuple[str | None, bool]:
        """-> (the remembered hash if it may be used as it is, whether this file was sent before)."""
        entry = self._entries.get(key_of(st))
        if entry is None:
            return None, False
        return (entry[0] if entry[1] else None), True

    def seen_like(self, hint: str) -> bool:
        """Was a file with this ``hint_of`` sent before?"""
        return hint in self._entries

    def remember(self, before: os.stat_result, after: os.stat_result, sha: str, read_at_ns: int,
                 hint: str | None = None) -> None:
        """``sha`` of the bytes read from a file that ``stat`` showed as ``before`` when its read began at
        ``read_at_ns`` (time.time_ns) and as ``after`` when it ended (and its ``hint_of``); nothing if it
        changed meanwhile."""
        key = key_of(before)
        if key != key_of(after):
            return
        settled = read_at_ns - max(before.st_mtime_ns, before.st_ctime_ns) >= RACY_S * 1e9
        for k, entry in ((hint, [sha, False]), (key, [sha, settled])):  # a hint is never trusted as a hash
            if k is not None:
                self._entries.pop(k, None)
                self._entries[k] = entry
        while len(self._entries) > MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = Path(f"{self.path}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._entries, f, separators=(",", ":"))
            os.replace(tmp, self.path)  # another client's newer copy may lose to this one: entries, not facts
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
