"""Where results for a DAW go: a folder the client names (never the server's jobs folder, which
`--keep-days` prunes and which does not exist on this machine for a remote server), written here
from the bytes the server sends (`result` with `want: bytes`).

The bridge writes only inside that folder and only files it names itself:

    folder = results_folder("/Users/me/Music/Set Project/Samples/M2UGen")   # ResultsRefused if unsafe
    path = write_result(folder, file_name("lofi piano", "f7c22b835872", take=0), wav_bytes)

Refused (`ResultsRefused`, OSC code `bad_results_dir`): a relative folder, a folder with `..` in it,
a file name with a path separator, and a target that is a symbolic link or resolves outside the
folder. Writes go to a temporary name in the folder and are renamed (a reader never sees half a file).

Recordings a device makes for a request go to `capture_folder()` (in the system temp folder, told
to the device in `/m2u/welcome`), where files older than `CAPTURE_MAX_AGE_S` are deleted.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import platformdirs

from server.security import PathNotAllowed, write_atomic_confined

CAPTURE_PREFIX = "m2ugen-capture-"
CAPTURE_MAX_AGE_S = 24 * 3600.0
_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


class ResultsRefused(ValueError):
    """The results folder or file cannot be used; the message says why (OSC code bad_results_dir)."""


def default_results_folder() -> Path:
    """The user folder results go to when the client knows no better place (an unsaved Live Set)."""
    return Path(platformdirs.user_music_dir()) / "M2UGen"


def results_folder(path: str) -> Path:
    """The real (symlinks resolved) folder for `path`, created if needed; raises ResultsRefused."""
    if not path or not path.strip():
        raise ResultsRefused("the results folder is empty")
    path = os.path.expanduser(path.strip())
    if not (os.path.isabs(path) or re.match(r"^[A-Za-z]:[\\/]", path)):
        raise ResultsRefused(f"the results folder {path!r} must be an absolute path")
    if ".." in re.split(r"[\\/]+", path):
        raise ResultsRefused(f"the results folder {path!r} contains '..'; give the folder itself")
    real = Path(os.path.realpath(path))
    try:
        real.mkdir(parents=True, exist_ok=True)
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


def write_result(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` as `folder/name` (folder from results_folder()); returns the path."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ResultsRefused(f"result file name {name!r} is not a plain file name")
    target = folder / name
    if target.is_symlink():
        raise ResultsRefused(f"{target} is a symbolic link; the bridge does not write through links")
    if Path(os.path.realpath(target)).parent != folder:
        raise ResultsRefused(f"{target} resolves outside the results folder {folder}")
    if target.is_file() and target.stat().st_size == len(data):
        return target  # the same result fetched again (re-insert): keep the file Live may have open
    try:  # the project's one confined atomic write (no symlink followed at any step, checked again)
        write_atomic_confined(Path(folder) / name, data, "result", lambda head: True)
    except PathNotAllowed as err:
        raise ResultsRefused(str(err)) from None
    return target


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
