"""Frozen-encoder features (MERT / ViT / ViViT) computed once and cached on disk.

The encoders are frozen in every stage, so their outputs for a file never change: stage 1 would
otherwise run MERT-330M over every clip in every epoch. A cached entry is keyed by the SHA-256 of
the file's content and the encoder's identity (its weights source or random config, and every
setting that changes its output: sample rate, MERT windows, frame count and sampling, image size),
so renaming a file keeps its features and changing an encoder setting recomputes them. Layout:
``<dir>/<encoder key>/<sha[:2]>/<sha>.safetensors`` plus ``encoder.json`` describing the key, and
``hashes.json`` (path, size, mtime -> sha) so unchanged files are not re-hashed.

Note: with ``video_sampling="reference"`` (a random 32-frame window per read) the cache freezes one
window per file.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Callable

import torch

from m2ugen.train.data import Entry

_ENCODER_OF = {"audio": "music_encoder", "image": "image_encoder", "video": "video_encoder"}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def encoder_identity(model_cfg, modality: str) -> dict:
    """Everything that determines an encoder's output for a given file."""
    c = model_cfg
    if modality == "audio":
        return dict(kind="MERT", path=c.mert_path, config=c.mert_config, sr=c.audio_sample_rate,
                    windows=c.mert_windows, window_s=c.mert_window_s, max_s=c.max_audio_s,
                    shape=[c.mert_layers, c.mert_dim])
    if modality == "image":
        return dict(kind="ViT", path=c.vit_path, config=c.vit_config, size=c.image_size,
                    shape=[c.vit_tokens, c.vit_dim])
    if modality == "video":
        return dict(kind="ViViT", path=c.vivit_path, config=c.vivit_config, size=c.image_size,
                    frames=c.video_frames, sampling=c.video_sampling, shape=[c.vivit_tokens, c.vivit_dim])
    raise ValueError(f"no encoder for modality {modality!r}")


def _key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FeatureCache:
    def __init__(self, directory: str | os.PathLike, model_cfg):
        self.dir = Path(directory)
        self.model_cfg = model_cfg
        self.dir.mkdir(parents=True, exist_ok=True)
        self._keys = {m: _key(encoder_identity(model_cfg, m)) for m in _ENCODER_OF}
        self._hash_file = self.dir / "hashes.json"
        self._hashes: dict[str, str] = {}
        if self._hash_file.is_file():
            try:
                self._hashes = json.loads(self._hash_file.read_text())
            except (OSError, json.JSONDecodeError):
                self._hashes = {}
        self._lock = threading.Lock()

    def sha(self, path: str) -> str:
        st = os.stat(path)
        stamp = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
        got = self._hashes.get(stamp)
        if got is None:
            got = file_sha256(path)
            with self._lock:
                self._hashes[stamp] = got
        return got

    def path_for(self, path: str, modality: str) -> Path:
        sha = self.sha(path)
        return self.dir / self._keys[modality] / sha[:2] / f"{sha}.safetensors"

    def has(self, path: str, modality: str) -> bool:
        return self.path_for(path, modality).is_file()

    def get(self, path: str, modality: str) -> torch.Tensor:
        from safetensors.torch import load_file

        p = self.path_for(path, modality)
        if not p.is_file():
            raise FileNotFoundError(f"no cached {modality} features for {path} (run the precompute pass)")
        return load_file(str(p))["feats"]

    def put(self, path: str, modality: str, feats: torch.Tensor) -> None:
        from safetensors.torch import save_file

        p = self.path_for(path, modality)
        p.parent.mkdir(parents=True, exist_ok=True)
        ident = p.parent.parent / "encoder.json"
        if not ident.is_file():
            ident.write_text(json.dumps(encoder_identity(self.model_cfg, modality), indent=1, default=str))
        tmp = p.with_name(p.name + f".{os.getpid()}.partial")
        save_file({"feats": feats.detach().float().cpu().contiguous()}, str(tmp))
        os.replace(tmp, p)

    def save_hashes(self) -> None:
        tmp = self._hash_file.with_name(f"hashes.{os.getpid()}.partial")
        tmp.write_text(json.dumps(self._hashes))
        os.replace(tmp, self._hash_file)


def encode_media(model, modality: str, decoded) -> torch.Tensor:
    """A decoded input (wave / RGB array / frames) -> the frozen encoder's output [tokens, dim]."""
    return getattr(model, _ENCODER_OF[modality]).encode(decoded)


def precompute(model, entries: list[Entry], cache: FeatureCache, *, num_workers: int = 0, is_main: bool = True,
               on_progress: Callable[[float], None] | None = None) -> int:
    """Encode every input file that is not cached yet (decoding in DataLoader workers); returns how
    many were computed. Under several processes each one takes every world-th file."""
    from m2ugen.train.data import TrainDataset

    todo, seen = [], set()
    for e in entries:
        if e.media is not None and (e.media, e.modality) not in seen:
            seen.add((e.media, e.modality))
            if not cache.has(e.media, e.modality):
                todo.append(e)
    if not todo:
        return 0
    loader_ds = TrainDataset(todo, None, model.cfg, 0)
    loader = torch.utils.data.DataLoader(_Decoded(loader_ds), batch_size=None, num_workers=num_workers,
                                         collate_fn=_as_is)
    for i, (e, decoded) in enumerate(loader):
        cache.put(e.media, e.modality, encode_media(model, e.modality, decoded))
        if on_progress is not None:
            on_progress((i + 1) / len(todo))
    if is_main:
        cache.save_hashes()
    return len(todo)


def _as_is(x):
    return x


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        e = self.ds.entries[i]
        try:
            return e, self.ds.load_media(e)
        except Exception as err:
            raise ValueError(f"{e.media}: cannot decode ({e.where}): {err}") from err
