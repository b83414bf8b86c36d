"""Turn a validated submit's ``inputs`` into what the model takes, at submit time (so bad inputs are
answered right away): audio decoded to ``(wave [C, S], sr)``, image/video as checked file paths.
Frames (bytes) of images and videos are saved into the job's directory first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from server import audio_io
from server.protocol import ProtocolError
from server.security import AllowedRoots, PathNotAllowed

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _bytes_of(frame) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


def _read_path(ref: dict, roots: AllowedRoots, what: str, code: str) -> Path:
    try:
        return roots.check_read(ref["path"], what)
    except PathNotAllowed as e:
        raise ProtocolError("path_not_allowed", str(e), f"inputs.{what}.path") from None
    except FileNotFoundError as e:
        raise ProtocolError(code, str(e), f"inputs.{what}.path") from None


def _check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise ProtocolError("bad_image", f"image {path.name!r} is empty (0 bytes)", "inputs.image")
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ProtocolError("bad_image", f"image {path.name!r} cannot be decoded: {e}", "inputs.image") from None


def _check_video(path: Path) -> None:
    import av

    if path.stat().st_size == 0:
        raise ProtocolError("bad_video", f"video {path.name!r} is empty (0 bytes)", "inputs.video")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ProtocolError("bad_video", f"video {path.name!r} has no video stream", "inputs.video")
    except ProtocolError:
        raise
    except Exception as e:  # PyAV raises its own error family (av.error.*)
        raise ProtocolError("bad_video", f"video {path.name!r} cannot be decoded: {e}", "inputs.video") from None


def resolve(spec: dict[str, Any], frames: list, roots: AllowedRoots, job_dir: Path, *,
            max_audio_s: float, max_audio_bytes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (model inputs {"audio": (wave, sr) | None, "image": str | None, "video": str | None},
    recorded info {name: {"path"|"name", "start", "end", "seconds"}})."""
    out: dict[str, Any] = {"audio": None, "image": None, "video": None}
    info: dict[str, Any] = {}

    ref = spec.get("audio")
    if ref is not None:
        if "path" in ref:
            source: Any = _read_path(ref, roots, "audio", "bad_audio")
            label = f"audio {ref['path']!r}"
            info["audio"] = {"path": str(source)}
        else:
            source = _bytes_of(frames[ref["frame"] - 1])
            label = f"audio frame {ref['frame']}" + (f" ({ref['name']})" if ref.get("name") else "")
            info["audio"] = {"name": ref.get("name") or "", "bytes": len(source)}
        try:
            wave, sr = audio_io.decode(source, name=label, start=ref.get("start"), end=ref.get("end"),
                                       max_seconds=max_audio_s, max_bytes=max_audio_bytes)
        except audio_io.BadAudio as e:
            raise ProtocolError("bad_audio", str(e), "inputs.audio") from None
        info["audio"].update(start=ref.get("start"), end=ref.get("end"), seconds=wave.shape[1] / sr,
                             sample_rate=sr, channels=wave.shape[0])
        out["audio"] = (wave, sr)

    for what, code, check in (("image", "bad_image", _check_image), ("video", "bad_video", _check_video)):
        ref = spec.get(what)
        if ref is None:
            continue
        if "path" in ref:
            path = _read_path(ref, roots, what, code)
            info[what] = {"path": str(path)}
        else:
            data = _bytes_of(frames[ref["frame"] - 1])
            suffix = Path(_SAFE_NAME.sub("_", ref.get("name") or "")).suffix or (".png" if what == "image" else ".mp4")
            job_dir.mkdir(parents=True, exist_ok=True)
            path = job_dir / f"input_{what}{suffix}"
            path.write_bytes(data)
            info[what] = {"name": ref.get("name") or "", "bytes": len(data)}
        check(path)
        out[what] = str(path)
    return out, info
