"""Where a job's result files may go, checked twice: at submit (a clear error at once) and again when
they are written (through a directory fd, so a symlink swapped in meanwhile cannot redirect them).

A client may name an output path (``output.path``, a ``.wav``, or a ``.mid`` for ``transcribe``: the
kind's ``output_ext``; its sidecar is the same name with ``.json``): it must lie inside the allowed
roots and outside the server's own files, and an existing file there is replaced only when the client
asked (``output.overwrite``) and only by one of its kind: a WAV over a WAV, a MIDI file over a MIDI
file, a sidecar over a sidecar this server wrote. Without a path, results go to the job's
own folder in the jobs dir.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from server.protocol import ProtocolError
from server.security import AllowedRoots, OutputExists, PathNotAllowed, write_atomic_confined


def is_wav(head: bytes) -> bool:
    """The first bytes of a WAV file (RIFF/RF64/BW64 + WAVE)."""
    return len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE"


def is_midi(head: bytes) -> bool:
    """The first bytes of a Standard MIDI File (the ``MThd`` chunk)."""
    return len(head) >= 14 and head[:4] == b"MThd"


def is_sidecar(head: bytes) -> bool:
    """A result sidecar this server wrote (a JSON object with its ``job`` and ``server_version``)."""
    try:
        data = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and "job" in data and "server_version" in data


CONTENT_CHECKS: dict[str, Callable[[bytes], bool]] = {".wav": is_wav, ".mid": is_midi}
_CONTENT_NAMES = {is_wav: "a WAV", is_midi: "a MIDI file", is_sidecar: "a result sidecar of this server"}


def content_check(output_ext: str | None) -> Callable[[bytes], bool]:
    """What an existing file at a kind's output path must be for ``overwrite`` to replace it."""
    return CONTENT_CHECKS.get((output_ext or ".wav").lower(), is_wav)


def sidecar_of(out_path: Path) -> Path:
    return out_path.with_suffix(".json")


def take_path(first: Path, take: int) -> Path:
    """Take 1 is the path itself; take k is ``<stem>-take<k>.wav`` beside it."""
    return first if take == 1 else first.with_name(f"{first.stem}-take{take}{first.suffix}")


def stem_path(first: Path, stem: str) -> Path:
    """A ``stems`` job's file for one stem: ``<stem of the name>-<stem>.wav`` beside ``first``."""
    return first.with_name(f"{first.stem}-{stem}{first.suffix}")


def targets(path: Path, takes: int = 1, stems=()) -> list[Path]:
    """Every file a job with output ``path`` writes: its stems or takes, then the sidecar."""
    files = [stem_path(path, s) for s in stems] or [take_path(path, k) for k in range(1, takes + 1)]
    return files + [sidecar_of(path)]


def check(roots: AllowedRoots, out: dict[str, Any], takes: int = 1,
          kind_ok: Callable[[bytes], bool] = is_wav, stems: tuple[str, ...] = ()) -> dict[str, Any]:
    """Submit time: the validated ``output`` object -> the job's output {want, path (resolved), overwrite}
    (with ``takes`` > 1 the other takes' paths are checked too, with ``stems`` the stems' paths instead;
    ``kind_ok``: what an existing result file must be to be replaced, ``content_check(kind.output_ext)``)."""
    output: dict[str, Any] = {"want": out["want"], "path": None, "overwrite": out["overwrite"]}
    if out["path"] is None:
        return output
    try:
        path = roots.check_write(out["path"], "output")
        files = targets(path, takes, stems)
        for target, ok in zip(files, [kind_ok] * (len(files) - 1) + [is_sidecar]):
            if not (target.exists() or target.is_symlink()):
                continue
            if target.is_symlink() or not target.is_file():
                raise OutputExists(f"output path {str(target)!r} exists and is not a regular file")
            if not out["overwrite"]:
                raise OutputExists(f"output path {str(target)!r} exists; pass overwrite (`--overwrite`) "
                                   f"to replace it")
            with open(target, "rb") as f:
                if not ok(f.read(65536)):
                    kind = _CONTENT_NAMES.get(ok, "a result file of its kind")
                    raise OutputExists(f"output path {str(target)!r} exists and is not {kind}; it is never "
                                       f"replaced")
    except OutputExists as e:
        raise ProtocolError("output_exists", str(e), "output.path") from None
    except PathNotAllowed as e:
        raise ProtocolError("path_not_allowed", str(e), "output.path") from None
    output["path"] = path
    return output


def refusal(e: PathNotAllowed) -> dict[str, str]:
    """The job's error when its output changed between submit and write (a symlink swapped in, a file
    created): ``output_exists`` or ``path_not_allowed``."""
    return {"code": "output_exists" if isinstance(e, OutputExists) else "path_not_allowed", "message": str(e)}


def write(roots: AllowedRoots, output: dict[str, Any], path: Path, data: bytes,
          kind_ok: Callable[[bytes], bool]) -> None:
    """Write time. A client's path: the roots checked again and the file written through a directory
    fd, an existing file replaced only when asked and of the right kind (raises PathNotAllowed /
    OutputExists); the job's own folder: written the same way, never replacing anything."""
    if output.get("path") is not None:
        roots.write_atomic(path, data, "output", kind_ok if output.get("overwrite") else None)
    else:  # the server's own folder: resolve it here (no client controls it), then write the same way
        write_atomic_confined(Path(os.path.realpath(path.parent)) / path.name, data, "result")
