"""Reading weight files: the official ``checkpoint.pth`` (memory-mapped, weights-only unpickling)
and ``.safetensors`` (ours or any), plus the source hash written into converted files."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from m2ugen.checkpoint.names import CONVERTED_FORMAT, strip_module_prefix

log = logging.getLogger("m2ugen.checkpoint")


def _check_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: not a state dict; non-tensor entries: {', '.join(map(str, bad[:10]))}")
    return obj


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of an official ``checkpoint.pth`` (or of a bare state dict file).

    Memory-mapped (``mmap=True``): tensors are read from the file on first use, so the optimizer
    state is never loaded. Loaded with ``weights_only=True`` and ``argparse.Namespace`` (the pickled
    ``args``) allow-listed; a file whose pickle holds any other object is refused (it is never fully
    unpickled: that could run code from the file).
    Returns the state dict with a leading ``module.`` stripped from the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a torch zip checkpoint (torch.save since torch 1.6); cannot memory-map it")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler refused a global
        raise ValueError(f"{path}: the safe (weights-only) loader refused this file: {e}. A checkpoint is never "
                         f"fully unpickled (it could run code); convert it where it was made, e.g. save only its "
                         f"'model' state dict, or to safetensors") from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        extra = sorted(k for k in obj if k != "model")
        log.info("%s: official checkpoint (ignoring %s)", path.name, ", ".join(extra) or "nothing")
        obj = obj["model"]
    return strip_module_prefix(_check_state_dict(obj, path))


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors file; tensors are zero-copy views of a memory map."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"safetensors file not found: {path}")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def is_converted(meta: dict[str, str]) -> bool:
    return meta.get("format_m2ugen") == CONVERTED_FORMAT


def sha256_file(path: Path, progress: bool) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    done, t0 = 0, time.perf_counter()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress and time.perf_counter() - t0 > 5:
                log.info("hashing %s: %.0f%%", path.name, 100 * done / size)
                t0 = time.perf_counter()
    return h.hexdigest()


def read_any_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(official-named state dict, metadata) from a checkpoint.pth or a .safetensors file."""
    p = Path(path)
    if p.suffix == ".safetensors":
        sd, meta = read_safetensors(p)
        return strip_module_prefix(sd), meta
    return read_official_checkpoint(p), {}
