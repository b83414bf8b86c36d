"""Result files: the server writes only into its own jobs folder; a CLIENT writes the bytes it fetched
where its user asked (``save``).

``save`` is the one client-side write (the m2ugen CLI's ``--out``, the OSC bridge's results folder, the
Python API): the bytes go to a temp file in the target folder and are renamed over the target, walking
the folder with directory fds so that no symlink is followed at any step; an existing target is
replaced only when the user asked (``overwrite``) and only by one of its kind — a WAV over a WAV, a MIDI
file over a MIDI file, a sidecar over a sidecar an m2ugen server wrote — never a link, never a folder.
A result's takes go beside it as ``<stem>-take<k>.wav``, its sidecar as ``<stem>.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

from server.security import OutputExists, PathNotAllowed, write_atomic_confined


def is_wav(head: bytes) -> bool:
    """The first bytes of a WAV file (RIFF/RF64/BW64 + WAVE)."""
    return len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE"


def is_midi(head: bytes) -> bool:
    """The first bytes of a Standard MIDI File (the ``MThd`` chunk)."""
    return len(head) >= 14 and head[:4] == b"MThd"


def is_sidecar(head: bytes) -> bool:
    """A result sidecar an m2ugen server wrote (a JSON object with its ``job`` and ``server_version``)."""
    try:
        data = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and "job" in data and "server_version" in data


CONTENT_CHECKS: dict[str, Callable[[bytes], bool]] = {".wav": is_wav, ".mid": is_midi, ".midi": is_midi,
                                                      ".json": is_sidecar}
CONTENT_NAMES = {".wav": "a WAV", ".mid": "a MIDI file", ".midi": "a MIDI file", ".json": "a result sidecar"}


def content_check(ext: str | None) -> Callable[[bytes], bool]:
    """What an existing file must be for ``overwrite`` to replace it with a result ending in ``ext``."""
    return CONTENT_CHECKS.get((ext or ".wav").lower(), is_wav)


def sidecar_of(out_path: Path) -> Path:
    return out_path.with_suffix(".json")


def take_path(first: Path, take: int) -> Path:
    """Take 1 is the path itself; take k is ``<stem>-take<k>.wav`` beside it."""
    return first if take == 1 else first.with_name(f"{first.stem}-take{take}{first.suffix}")


def stem_path(first: Path, stem: str) -> Path:
    """A ``stems`` job's file for one stem: ``<stem of the name>-<stem>.wav`` beside ``first``."""
    return first.with_name(f"{first.stem}-{stem}{first.suffix}")


def check_target(path: Path, overwrite: bool) -> None:
    """Before a job is submitted: would ``save(path, ..., overwrite)`` be refused? (OutputExists)."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not path.is_file():
        raise OutputExists(f"{path} exists and is not a regular file; it is never replaced")
    if not overwrite:
        raise OutputExists(f"{path} exists; pass --overwrite to replace it")
    with open(path, "rb") as f:
        if not content_check(path.suffix)(f.read(65536)):
            raise OutputExists(f"{path} exists and is not {CONTENT_NAMES.get(path.suffix.lower(), 'a result')}; "
                               f"it is never replaced")


def save(path: str | Path, data: bytes | Iterable[bytes], *, overwrite: bool = False) -> Path:
    """Write fetched result bytes (or its chunks as they come) to the client's ``path`` atomically (see
    the module doc); the kind of file that may be replaced follows the name's extension. Raises
    OutputExists / PathNotAllowed."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    if path.name in ("", ".", ".."):
        raise PathNotAllowed(f"{path} is not a file name")
    real = Path(os.path.realpath(path.parent)) / path.name  # the folder the user named, links and all
    try:
        return write_atomic_confined(real, data, "output", content_check(path.suffix) if overwrite else None)
    except OutputExists as e:
        raise OutputExists(f"{e}; pass --overwrite to replace it" if not overwrite else
                           f"{path} exists and is not {CONTENT_NAMES.get(path.suffix.lower(), 'a result')}; "
                           f"it is never replaced") from None


def write_own(path: Path, data: bytes) -> None:
    """The server's write of a result into its own job folder (never replacing anything)."""
    write_atomic_confined(Path(os.path.realpath(path.parent)) / path.name, data, "result")


def write_error(e: PathNotAllowed) -> dict[str, str]:
    """A job's error when its result could not be written into its own folder (a link or a file planted there)."""
    return {"code": "job_failed", "message": f"the result could not be written: {e}"}
