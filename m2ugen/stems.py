"""Source separation on Demucs (PyPI ``demucs`` 4.1.0, MIT): a mix -> its stems.

Models (``MODELS``): ``htdemucs`` (drums, bass, other, vocals) and ``htdemucs_6s`` (+ guitar, piano),
the Hybrid Transformer Demucs of Rouard, Massa and Défossez (2023). Weights are only ever read from
local files, never downloaded:

- ``load_separator(name, location)``: ``location`` a weights file (``.th`` as demucs publishes them, or
  ``.safetensors`` as demucs 4.1 exports them), or a folder holding the file under demucs' own name
  (``955717e8-8726e21a.th`` / ``955717e8.safetensors`` for htdemucs, ``5c90dfd2-34c22ccb.th`` /
  ``5c90dfd2.safetensors`` for htdemucs_6s); default: the torch hub cache where ``demucs`` itself puts
  them, ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints``). A missing file is a
  ``FileNotFoundError`` naming every path looked at.

Nothing is unpickled from disk. demucs' ``.th`` file is a ``torch.save`` of ``{"klass": HTDemucs,
"args": (), "kwargs": {...}, "state": {name: tensor}, "training_args": {...}}`` (demucs/states.py,
``serialize_model``); it is read with ``torch.load(weights_only=True)``, torch's restricted unpickler,
with exactly two classes allowed beyond tensors and plain containers: ``demucs.htdemucs.HTDemucs`` (the
``klass`` entry, a class reference, never called by the unpickler) and ``fractions.Fraction`` (the
``segment`` keyword). A ``.safetensors`` file names its class in its metadata; only ``HTDemucs`` is
accepted. The model is then built by calling ``HTDemucs(*args, **kwargs)`` with keywords it knows and
given the state (strictly). A file named ``<sig>-<sha256 prefix>.th`` is checked against its hash, as
torch hub checks demucs' downloads.

``DemucsSeparator.separate(wave, sr)`` -> {stem: [C, N] float32 at ``sr``}, the same length and
channels as the input: resampled to the model's 44.1 kHz stereo, normalised as demucs does, cut into
the model's training segments with 25 % overlap (``demucs.apply.apply_model(split=True)``: the model's
memory stays the same for any length; the stems of the whole region are kept on the CPU), on the
server's device (and, on CUDA, autocast to its half dtype). The separations of the last
``cache_size`` regions are kept, keyed by the audio's content, so the takes of a job, or a ``stems``
job followed by an edit of the same region, separate once.

Any object with ``sources`` (the stem names) and ``separate(wave, sr, on_progress=None)`` serves as a
separator (the tests inject an exact one).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from m2ugen.stem_ops import STEMS_4, STEMS_6

SAMPLE_RATE = 44100


@dataclass(frozen=True)
class StemModel:
    name: str
    sig: str  # demucs' model signature
    th_file: str  # the file name demucs downloads it as (torch hub cache)
    sources: tuple[str, ...]

    @property
    def safetensors_file(self) -> str:
        return f"{self.sig}.safetensors"


MODELS = {
    "htdemucs": StemModel("htdemucs", "955717e8", "955717e8-8726e21a.th", STEMS_4),
    "htdemucs_6s": StemModel("htdemucs_6s", "5c90dfd2", "5c90dfd2-34c22ccb.th", STEMS_6),
}
DEFAULT_MODEL = "htdemucs"


def hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch hub's cache, where demucs keeps its downloads)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(name: str, location: str | os.PathLike | None = None) -> Path:
    """The local weights file of model ``name``: ``location`` itself when it is a file, else demucs'
    file names in the folder ``location`` (default: the torch hub cache). FileNotFoundError names them."""
    if name not in MODELS:
        raise ValueError(f"unknown separation model {name!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[name]
    if location is not None and Path(location).expanduser().is_file():
        return Path(location).expanduser()
    folder = Path(location).expanduser() if location is not None else hub_checkpoints_dir()
    tried = [folder / spec.th_file, folder / spec.safetensors_file]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"separation model {name}: no weights at {' or '.join(str(p) for p in tried)}. Weights are never "
        f"downloaded: copy demucs' {spec.th_file} there (on a connected machine `python -m demucs -n {name}` "
        f"puts it in its torch hub cache), or give its path (m2ugen serve --stems-dir)")


def _allowed_classes() -> dict[str, type]:
    from demucs.htdemucs import HTDemucs

    return {"demucs.htdemucs.HTDemucs": HTDemucs}


def _check_hash(path: Path) -> None:
    """A file named ``<sig>-<hash>.th`` (demucs' published names) must have that sha256 prefix."""
    parts = path.stem.split("-")
    if len(parts) != 2 or not all(c in "0123456789abcdef" for c in parts[1]) or len(parts[1]) < 8:
        return
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    if not sha.hexdigest().startswith(parts[1]):
        raise ValueError(f"{path}: its sha256 does not start with {parts[1]} (the name it has): a damaged or "
                         "different file")


def read_package(path: str | os.PathLike) -> dict[str, Any]:
    """A demucs weights file -> {klass, args, kwargs, state}, without unpickling anything but tensors,
    plain containers, HTDemucs (as a class reference) and Fraction."""
    path = Path(path)
    allowed = _allowed_classes()
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        if "structure" in meta:
            raise ValueError(f"{path}: a quantized demucs model (packed state); only plain HTDemucs weights are read")
        if meta.get("klass") not in allowed:
            raise ValueError(f"{path}: model class {meta.get('klass')!r} is not one this loader builds "
                             f"({', '.join(allowed)})")

        def fractions(v):
            if isinstance(v, dict):
                if v.get("_type") == "fraction":
                    return Fraction(v["numerator"], v["denominator"])
                return {k: fractions(x) for k, x in v.items()}
            return [fractions(x) for x in v] if isinstance(v, list) else v

        return {"klass": allowed[meta["klass"]], "args": fractions(json.loads(meta.get("args", "[]"))),
                "kwargs": fractions(json.loads(meta.get("kwargs", "{}"))), "state": state}
    _check_hash(path)
    try:
        with torch.serialization.safe_globals([*allowed.values(), Fraction]):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError: a class outside the allow-list, or not a torch file
        raise ValueError(f"{path}: not a demucs HTDemucs weights file this loader reads "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(package, dict) or not {"klass", "kwargs", "state"} <= set(package):
        raise ValueError(f"{path}: not a demucs model package (needs klass, args, kwargs, state)")
    if package["klass"] not in allowed.values():
        raise ValueError(f"{path}: model class {package['klass']!r} is not HTDemucs")
    if package["state"].get("__quantized"):
        raise ValueError(f"{path}: a quantized demucs model (diffq); only plain HTDemucs weights are read")
    return package


def build_model(package: dict[str, Any]) -> torch.nn.Module:
    """demucs' own ``load_model`` steps, on a package already read: the class with the keywords it
    knows (demucs drops the others too), then the state, strictly."""
    klass, args, kwargs = package["klass"], tuple(package.get("args") or ()), dict(package["kwargs"])
    known = inspect.signature(klass).parameters
    dropped = sorted(k for k in kwargs if k not in known)
    if dropped:
        warnings.warn(f"demucs model: dropping unknown parameter(s) {', '.join(dropped)}")
    model = klass(*args, **{k: v for k, v in kwargs.items() if k in known})
    model.load_state_dict(package["state"], strict=True)
    return model.eval()


def package_of(model: torch.nn.Module, half: bool = True) -> dict[str, Any]:
    """A model built through demucs' classes -> the package demucs saves (tests, benchmarks)."""
    args, kwargs = model._init_args_kwargs
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    return {"klass": type(model), "args": args, "kwargs": kwargs, "state": state, "training_args": {}}


def tiny_htdemucs(sources=STEMS_4, seed: int = 0, **overrides) -> torch.nn.Module:
    """A small random HTDemucs (tests, smoke runs): demucs' own class, few channels, 1 s segments."""
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    kw = dict(channels=4, depth=4, nfft=1024, t_layers=1, t_heads=2, t_hidden_scale=1.0, dconv_comp=2,
              segment=Fraction(1))
    kw.update(overrides)
    return HTDemucs(list(sources), **kw).eval()


class DemucsSeparator:
    """An HTDemucs as a separator: ``separate(wave [C, N] or [N], sr) -> {stem: [C, N] float32}``."""

    def __init__(self, model: torch.nn.Module, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, overlap: float = 0.25, cache_size: int = 2,
                 name: str = "htdemucs"):
        self.model = model.to(device).float().eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.overlap = overlap
        self.name = name
        self.sources: tuple[str, ...] = tuple(model.sources)
        self.samplerate = int(model.samplerate)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.separations = 0  # separations run (not served from the cache)

    @staticmethod
    def _key(wave: np.ndarray, sr: int) -> str:
        h = hashlib.sha256(np.ascontiguousarray(wave).tobytes())
        h.update(f"{wave.shape}|{wave.dtype}|{sr}".encode())
        return h.hexdigest()

    def separate(self, wave: np.ndarray, sr: int,
                 on_progress: Callable[[float], None] | None = None) -> dict[str, np.ndarray]:
        w = np.asarray(wave, dtype=np.float32)
        mono = w.ndim == 1
        w = w[None, :] if mono else w
        key = self._key(w, sr)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return {k: v.copy() for k, v in self._cache[key].items()}
        stems = self._run(w, int(sr), on_progress)
        if mono:
            stems = {k: v[0] for k, v in stems.items()}
        with self._lock:
            self._cache[key] = stems
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return {k: v.copy() for k, v in stems.items()}

    def _run(self, w: np.ndarray, sr: int, on_progress) -> dict[str, np.ndarray]:
        import soxr
        from demucs.apply import apply_model

        channels, n = w.shape
        x = w if sr == self.samplerate else soxr.resample(w.T, sr, self.samplerate, quality="HQ").T
        x = np.repeat(x[:1], 2, axis=0) if channels == 1 else x[:2]  # the model hears stereo
        mix = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        ref = mix.mean(0)  # demucs' own normalisation (demucs/separate.py)
        mean, std = ref.mean(), ref.std().clamp_min(1e-8)
        segments = max(1, int(np.ceil(mix.shape[-1] / (float(self.model.segment) * self.samplerate
                                                       * (1 - self.overlap)))))
        done = [0]

        def callback(info: dict) -> None:
            if info.get("state") == "end" and on_progress is not None:
                done[0] += 1
                on_progress(min(1.0, done[0] / segments))

        autocast = (torch.autocast("cuda", dtype=self.dtype)
                    if self.device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16) else _null())
        self.separations += 1
        with torch.inference_mode(), autocast:
            out = apply_model(self.model, ((mix - mean) / std)[None], shifts=0, split=True, overlap=self.overlap,
                              device=self.device, progress=False, callback=callback)[0]
        out = (out.float() * std + mean).numpy()  # [sources, 2, samples at the model's rate]
        stems = {}
        for name, s in zip(self.sources, out):
            y = s if sr == self.samplerate else soxr.resample(s.T, self.samplerate, sr, quality="HQ").T
            y = y.mean(axis=0, keepdims=True) if channels == 1 else (
                np.concatenate([y, np.repeat(y[:1], channels - 2, axis=0)]) if channels > 2 else y)
            y = y[:, :n] if y.shape[1] >= n else np.pad(y, ((0, 0), (0, n - y.shape[1])))
            stems[name] = np.ascontiguousarray(y, dtype=np.float32)
        return stems


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def load_separator(name: str = DEFAULT_MODEL, location: str | os.PathLike | None = None, *,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> DemucsSeparator:
    """Model ``name`` from local weights (see ``find_weights``) as a ``DemucsSeparator``."""
    path = find_weights(name, location)
    model = build_model(read_package(path))
    expected = MODELS[name].sources
    if tuple(model.sources) != expected:
        raise ValueError(f"{path}: the model separates {', '.join(model.sources)}, not {name}'s "
                         f"{', '.join(expected)}")
    return DemucsSeparator(model, device=device, dtype=dtype, name=name)


class Separators:
    """The server's separators, one per model, loaded on first use from ``location`` (a folder; default
    the torch hub cache) on the server's device and dtype. ``injected``: {model name: separator} used
    as they are (tests, a caller's own separator)."""

    def __init__(self, location: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, injected: dict[str, Any] | None = None):
        self.location = location
        self.device = device
        self.dtype = dtype
        self._loaded: dict[str, Any] = dict(injected or {})
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load_separator(name, self.location, device=self.device, dtype=self.dtype)
            return self._loaded[name]
