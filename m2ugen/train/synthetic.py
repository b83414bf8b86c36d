"""Tiny synthetic datasets in the official published layouts (m2ugen.train.data.LAYOUTS), for tests
and benchmarks: sine-tone WAVs, flat-colour PNGs and short MPEG-4 clips, one caption vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from m2ugen.train.data import LAYOUTS

_INSTRUMENTS = ["piano", "guitar", "violin", "drums", "flute", "bass", "organ", "cello"]
_MOODS = ["calm", "happy", "sad", "dark", "bright", "slow", "fast", "soft"]


def caption(i: int) -> str:
    return f"A {_MOODS[i % 8]} song with {_INSTRUMENTS[(i * 3) % 8]} and {_INSTRUMENTS[(i * 5 + 1) % 8]}."


def write_audio(path: Path, i: int, seconds: float = 0.5, sr: int = 16000) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * (110.0 * (1 + i % 12)) * t) + 0.05 * np.sin(2 * np.pi * 3000 * t * (i % 3 + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), sr)


def write_image(path: Path, i: int, size: int = 32) -> None:
    from PIL import Image

    rgb = ((37 * i) % 256, (91 * i + 40) % 256, (53 * i + 120) % 256)
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[:] = rgb
    arr[: size // 2, : size // 2] = 255 - np.array(rgb, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_video(path: Path, i: int, frames: int = 6, size: int = 32) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = size, size, "yuv420p"
        for f in range(frames):
            img = np.full((size, size, 3), (16 + 23 * i + 30 * f) % 240, dtype=np.uint8)
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)


_WRITERS = {"audio": (write_audio, ".wav"), "image": (write_image, ".png"), "video": (write_video, ".mp4")}


def write_dataset(root: str | Path, name: str, n: int = 4, offset: int = 0) -> Path:
    """Write dataset ``name`` with ``n`` entries under ``root`` in its published layout; returns the JSON path."""
    lay = LAYOUTS[name]
    base = Path(root) / lay.folder
    base.mkdir(parents=True, exist_ok=True)
    jpath = base / lay.json_name
    writer, ext = _WRITERS.get(lay.modality, (None, ""))
    items = []
    for k in range(n):
        i = offset + k
        fname = f"{name}_{i:04d}{ext}"
        if writer is not None and lay.media_dir:
            writer(base / lay.media_dir / fname, i)
        if lay.kind in ("captions", "captions-decoder"):
            items.append((fname if writer else f"clip_{i:04d}.wav", caption(i)))
        elif lay.kind == "qa":
            items.append({"image_name": fname, "conversation": [
                {"from": "human", "value": "What instruments are playing?"},
                {"from": "gpt", "value": caption(i)}]})
        elif lay.kind == "alpaca":
            items.append({"conversation": [{"from": "human", "value": f"Name a {_MOODS[i % 8]} instrument."},
                                           {"from": "gpt", "value": f"The {_INSTRUMENTS[i % 8]}."}]})
        else:
            items.append({"input_file": fname, "output_file": f"out_{i:04d}.wav", "conversation": [
                {"from": "human", "value": f"Make {_MOODS[i % 8]} music for this.", "input_modality": lay.modality,
                 "caption": caption(i + 1)},
                {"from": "gpt", "value": "Here is a music that is " + _MOODS[(i + 2) % 8] + ".",
                 "caption": caption(i + 2), "output_modality": "audio"}]})
    if lay.kind in ("captions", "captions-decoder"):
        old = json.loads(jpath.read_text()) if jpath.is_file() else {}
        old.update(dict(items))
        jpath.write_text(json.dumps(old, indent=1))
    else:
        jpath.write_text(json.dumps(items, indent=1))
    return jpath


def write_stage(root: str | Path, stage: int, n: int = 4) -> Path:
    """Every dataset of ``stage`` with ``n`` entries each."""
    from m2ugen.train.config import STAGE_DATASETS

    for name in STAGE_DATASETS[stage]:
        if name == "mucaps-decoder":
            name = "mucaps"  # the same file (and audio) serves stage 2
        write_dataset(root, name, n)
    return Path(root)
