"""Where results for a DAW go: a folder the client names (never the server's jobs folder, which
`--keep-days` prunes and which does not exist on this machine for a remote server), written here
from the bytes the server sends (`result` with `want: bytes`).

The bridge writes only inside that folder and only files it names itself: WAV and MIDI files whose
bytes are a WAV or a MIDI file, never through a symbolic link and never over another file (a name
that is taken by different bytes gets ` (2)`, ` (3)`... instead):

    folder = results_folder("/Users/me/Music/Set Project/Samples/M2UGen")   # ResultsRefused if unsafe
    path = write_result(folder, file_name("lofi piano", "f7c22b835872", take=0), wav_bytes)
    path = write_result(folder, name, lambda: client.result_chunks(job, None), size)   # chunk by chunk

The folder must exist, or at least the folder two levels up (a saved Live Set's folder, for its
`Samples/M2UGen`: at most those two are made, never a longer chain). Refused (`ResultsRefused`, OSC code `bad_results_dir`): a relative folder, a
folder with `..` in it, a missing parent, a file name with a path separator or another extension, bytes
that are not what the name says, a target that is a symbolic link. Writes go to a temporary name in
the folder and are renamed (a reader never sees half a file).

Recordings a device makes for a request go to `capture_folder()` (in the system temp folder, told
to the device in `/m2u/welcome`), where files older than `CAPTURE_MAX_AGE_S` are deleted.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import platformdirs

from server.outputs import is_midi, is_wav
from server.security import PathNotAllowed, write_atomic_confined

CAPTURE_PREFIX = "m2ugen-capture-"
CAPTURE_MAX_AGE_S = 24 * 3600.0
_UNSAFE = re.compile(r"[^A-Za-z0-9]+")
MAX_NEW_FOLDERS = 2  # a Live Set's Samples/M2UGen


class ResultsRefused(ValueError):
    """The results folder or file cannot be used; the message says why (OSC code bad_results_dir)."""


def default_results_folder() -> Path:
    """The user folder results go to when the client knows no better place (an unsaved Live Set)."""
    return Path(platformdirs.user_music_dir()) / "M2UGen"


def results_folder(path: str) -> Path:
    """The real (symlinks resolved) folder for `path`; at most its last `MAX_NEW_FOLDERS` folders are
    created, under an existing one; raises ResultsRefused."""
    if not path or not path.strip():
        raise ResultsRefused("the results folder is empty")
    path = os.path.expanduser(path.strip())
    if not (os.path.isabs(path) or re.match(r"^[A-Za-z]:[\\/]", path)):
        raise ResultsRefused(f"the results folder {path!r} must be an absolute path")
    if ".." in re.split(r"[\\/]+", path):
        raise ResultsRefused(f"the results folder {path!r} contains '..'; give the folder itself")
    real = Path(os.path.realpath(path))
    missing = [q for q in [real, *real.parents] if not q.exists()]
    if len(missing) > MAX_NEW_FOLDERS:
        raise ResultsRefused(f"the results folder {path!r} does not exist, nor {str(missing[-1].parent)!r}'s "
                             f"{missing[-1].name!r}; the bridge creates at most the last {MAX_NEW_FOLDERS} folders "
                             f"of a results folder")
    try:
        for folder in reversed(missing):
            folder.mkdir()
    except OSError as e:
        raise ResultsRefused(f"cannot create the results folder {path!r}: {e.strerror or e}") from None
    if not real.is_dir():
        raise ResultsRefused(f"the results folder {path!r} is not a folder")
    return real


def file_name(prompt: str, job: str, take: int = 0, ext: str = ".wav") -> str:
    """`<prompt words>-<job>[-take2].wav` (a transcription: `.mid`): readable in Live's browser, unique
    per job and take."""
    words = _UNSAFE.sub("-", prompt).strip("-")[:40].strip("-") or "result"
    job = _UNSAFE.sub("", job)[:64] or "job"
    return f"M2UGen-{words}-{job}" + (f"-take{take + 1}" if take else "") + ext


RESULT_KINDS = {".wav": (is_wav, "a WAV"), ".mid": (is_midi, "a MIDI file")}


Chunks = Callable[[], Iterable[bytes]]  # a fresh iterator over a result's bytes each call (a fetch from offset 0)


def write_result(folder: Path, name: str, data: Chunks, size: int) -> Path:
    """Write a result as `folder/name` (folder from results_folder()), or as `name (2)`... when that name
    holds other bytes; the same bytes there already (a re-fetch) are kept as they are (Live may have the
    file open). `data`: a function returning the result's chunks as they are fetched
    (`server.client.Client.result_chunks`: neither side holds the whole file), `size` their total; it is
    called again only when a file of that size must be compared first. Returns the path."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ResultsRefused(f"result file name {name!r} is not a plain file name")
    stem, ext = os.path.splitext(name)
    if ext.lower() not in RESULT_KINDS:
        raise ResultsRefused(f"result file name {name!r}: the bridge writes only .wav and .mid files")
    is_kind, what = RESULT_KINDS[ext.lower()]

    def checked() -> Iterator[bytes]:  # the bytes, refused at the first chunk when they are not their kind
        first = True
        for chunk in data():
            if first and not is_kind(bytes(chunk[:65536])):
                raise ResultsRefused(f"the bytes for {name!r} are not {what}; nothing was written")
            first = False
            yield chunk
        if first:
            raise ResultsRefused(f"no bytes came for {name!r}; nothing was written")

    for n in range(1, 100):
        target = folder / (name if n == 1 else f"{stem} ({n}){ext}")
        if target.is_symlink():
            continue  # never written through, never replaced
        if target.exists():
            if target.is_file() and target.stat().st_size == size and _holds(target, checked()):
                return target  # the same result fetched again (re-insert)
            continue
        try:  # the project's one confined atomic write: no link followed, nothing replaced
            write_atomic_confined(Path(folder) / target.name, checked(), "result", None)
        except PathNotAllowed as err:  # appeared meanwhile: the next name
            if target.exists() or target.is_symlink():
                continue
            raise ResultsRefused(str(err)) from None
        return target
    raise ResultsRefused(f"{folder} holds 99 other files named like {name!r}; nothing was written")


def _holds(path: Path, chunks: Iterable[bytes]) -> bool:
    """Does the file at `path` hold exactly these chunks (read beside them, never whole)?"""
    with open(path, "rb") as f:
        for chunk in chunks:
            if f.read(len(chunk)) != chunk:
                return False
        return not f.read(1)


def capture_folder(base: Path | None = None) -> Path:
    """The folder devices record into (created), with captures older than a day removed."""
    folder = Path(base) if base is not None else Path(tempfile.gettempdir()) / "m2ugen-captures"
    folder.mkdir(parents=True, exist_ok=True)
    purge_captures(folder)
    return folder


def purge_captures(folder: Path, max_age_s: float = CAPTURE_MAX_AGE_S, now: float | None = None) -> list[Path]:
    """Delete `m2ugen-capture-*` files older than `max_age_s` (plain files only); returns them."""
    now = time.time() if now is None else now
    removed = []
    for entry in folder.glob(CAPTURE_PREFIX + "*"):
        try:
            if entry.is_symlink() or not entry.is_file() or now - entry.stat().st_mtime < max_age_s:
                continue
            entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed
