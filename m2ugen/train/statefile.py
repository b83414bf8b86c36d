"""Resumable training state on disk without pickle: one safetensors file whose tensors are the state's
tensors and whose metadata is the rest of the structure as tagged JSON.

    save(path, {"step": 3, "optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}})
    state = load(path)          # the same structure: dict keys, tuples, ints, floats, numpy arrays exact

Nothing in a state file can run code when it is read (safetensors holds tensors and strings only), so a
state planted in a data dir is at worst refused. The tagging keeps what JSON alone would lose, which a
bit-identical resume needs: integer dict keys (an optimizer's ``state`` is keyed by parameter index),
tuples (Python's and NumPy's RNG states), NumPy arrays (the Mersenne Twister key) and non-finite floats.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "m2ugen-state-v1"
_META_KEY = "m2ugen_state"


class StateFileError(ValueError):
    """A state file that cannot be read as one (corrupt, or not written by ``save``)."""


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray": [str(obj.dtype), list(obj.shape), obj.ravel().tolist()]}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors)
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else {"__float": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        for k in obj:
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"state dict keys must be str or int, got {type(k).__name__}")
        return {"__dict": [[k, _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} in a state file")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) != 1:
        raise StateFileError("a state node must have one tag")
    (tag, value), = obj.items()
    if tag == "__tensor":
        if value not in tensors:
            raise StateFileError(f"the state names a tensor {value!r} the file does not hold")
        return tensors[value]
    if tag == "__ndarray":
        dtype, shape, data = value
        return np.asarray(data, dtype=np.dtype(dtype)).reshape(shape)
    if tag == "__float":
        return float(value)
    if tag == "__tuple":
        return tuple(_decode(v, tensors) for v in value)
    if tag == "__dict":
        return {k: _decode(v, tensors) for k, v in value}
    raise StateFileError(f"unknown state node {tag!r}")


def save(path: str | os.PathLike, state: Any) -> Path:
    """Write ``state`` atomically (a ``.partial`` file renamed over ``path``)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    meta = json.dumps({"format": FORMAT, "state": _encode(state, tensors)}, allow_nan=False)
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata={_META_KEY: meta})
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike) -> Any:
    """Read a state written by ``save``; raises StateFileError for anything else."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a file that is not one
        raise StateFileError(f"{path}: not a state file ({type(e).__name__}: {e})") from None
    try:
        doc = json.loads(meta) if meta is not None else None
    except ValueError as e:
        raise StateFileError(f"{path}: unreadable state metadata ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateFileError(f"{path}: not an {FORMAT} file")
    return _decode(doc["state"], tensors)
