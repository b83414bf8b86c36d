"""``from_pretrained``: where the weights are (``$M2UGEN_WEIGHTS``, ``<config dir>/weights.json``, a
weights spec, a directory or one file), the config they imply, and building the model from them."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from m2ugen.checkpoint.architectures import detect_prefix_layout, guess_preset, offline_config
from m2ugen.checkpoint.assign import fmt_list
from m2ugen.checkpoint.files import is_converted, read_any_state_dict
from m2ugen.checkpoint.llama_base import load_llama
from m2ugen.checkpoint.state_dict import load_converted_state_dict, load_reference_state_dict
from m2ugen.config import M2UGenConfig
from m2ugen.paths import config_dir

log = logging.getLogger("m2ugen.checkpoint")

SPEC_PATH_KEYS = ("checkpoint", "llama_dir", "tokenizer_path", "mert_path", "vit_path", "vivit_path", "decoder_path")
SUBMODEL_PATH_KEYS = ("mert_path", "vit_path", "vivit_path", "decoder_path")
SPEC_KEYS = {"preset", "dtype", "device", "config", "adapters", *SPEC_PATH_KEYS}


def find_weights() -> str | None:
    """The weights spec to use: ``$M2UGEN_WEIGHTS``, else ``<config dir>/weights.json`` if present."""
    env = os.environ.get("M2UGEN_WEIGHTS")
    if env:
        return env
    p = config_dir() / "weights.json"
    return str(p) if p.is_file() else None


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """A weights spec JSON file; relative paths are made relative to the file's directory."""
    p = Path(path)
    try:
        spec = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON: {e}") from e
    if not isinstance(spec, dict):
        raise ValueError(f"{p}: a weights spec must be a JSON object")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{p}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    for k in SPEC_PATH_KEYS:
        v = spec.get(k)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{p}: {k} must be a string path, got {type(v).__name__}")
        if not v:
            continue
        v = os.path.expanduser(v)
        local = Path(v) if os.path.isabs(v) else (p.parent / v).resolve()
        # sub-model entries may be Hub ids ("owner/name", read from the local HF cache by the holders)
        hub_id = k in SUBMODEL_PATH_KEYS and v.count("/") == 1 and not v.startswith((".", "/")) and not local.exists()
        spec[k] = v if hub_id else str(local)
    if spec.get("adapters") is not None:
        spec["adapters"] = _spec_adapters(p, spec["adapters"])
    return spec


def _spec_adapters(p: Path, value: Any) -> list[list[str | None]]:
    """weights.json ``adapters``: ``{"name": "dir", ...}`` or ``["dir", ...]`` (each adapter's own name)
    -> [[name or None, absolute dir], ...]; relative dirs are relative to the spec file."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = [(None, v) for v in value]
    else:
        raise ValueError(f"{p}: adapters must be an object {{name: dir}} or a list of dirs")
    out = []
    for name, d in items:
        if not isinstance(d, str) or not d:
            raise ValueError(f"{p}: adapters: each adapter must be a directory path string, got {d!r}")
        d = os.path.expanduser(d)
        out.append([name, d if os.path.isabs(d) else str((p.parent / d).resolve())])
    return out


def spec_adapters(source: str | os.PathLike | None) -> list[tuple[str | None, str]]:
    """The LoRA adapters a weights spec lists (``adapters``), for ``serve`` to load; [] for a spec
    without them or a plain checkpoint."""
    if source is None:
        return []
    return [tuple(a) for a in resolve_source(source).get("adapters") or []]


def resolve_source(source: str | os.PathLike) -> dict[str, Any]:
    """Turn ``source`` (spec file, directory, checkpoint.pth, .safetensors) into a spec dict."""
    p = Path(source).expanduser()
    if p.is_dir():
        if (p / "weights.json").is_file():
            return read_spec(p / "weights.json")
        for name in ("checkpoint.pth", "m2ugen.safetensors"):
            if (p / name).is_file():
                return {"checkpoint": str(p / name)}
        found = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.pth"))
        if len(found) == 1:
            return {"checkpoint": str(found[0])}
        raise ValueError(f"{p}: no weights.json, checkpoint.pth or single .safetensors/.pth file inside")
    if not p.is_file():
        raise ValueError(f"weights not found: {p}")
    if p.suffix == ".json":
        return read_spec(p)
    if p.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        return {"checkpoint": str(p)}
    raise ValueError(f"{p}: unknown weights file type (want .json, .pth or .safetensors)")


def from_pretrained(cls, source=None, *, preset=None, llama_dir=None, mert_path=None, vit_path=None,
                    vivit_path=None, decoder_path=None, tokenizer_path=None, device=None, dtype=None):
    """Build ``cls`` (M2UGen) from weights; see the module docstring for the formats.

    ``source``: a weights spec JSON file, a directory with ``weights.json`` (or one checkpoint), an
    official ``checkpoint.pth``, or a converted ``.safetensors``; ``None`` uses ``find_weights()``.
    Keyword arguments override the spec. The model is built on the meta device and the tensors
    assigned, so nothing is allocated twice; tensors whose dtype matches stay memory-mapped.

    ``dtype`` (the LLaMA's; bridges and projector stay fp32 as official): the argument, else the
    spec's ``"dtype"``, else the stored dtype of a full official checkpoint's frozen LLaMA (fp16
    stays fp16), else the preset's (float32). ``device``: the argument, else the spec's, else CPU.
    Sub-models a full official checkpoint holds are built from their known architectures when
    their Hub id is not in the local cache; a converted file needs ``llama_dir`` and the sub-model
    paths (local directories or Hub ids in the local cache).
    """
    t_start = time.perf_counter()
    if source is None:
        source = find_weights()
    spec: dict[str, Any] = resolve_source(source) if source is not None else {}
    overrides = dict(preset=preset, llama_dir=llama_dir, mert_path=mert_path, vit_path=vit_path,
                     vivit_path=vivit_path, decoder_path=decoder_path, tokenizer_path=tokenizer_path, dtype=dtype)
    spec.update({k: v for k, v in overrides.items() if v is not None})
    if not spec.get("checkpoint") and not spec.get("llama_dir"):
        raise ValueError("no weights given: pass a weights spec / checkpoint, set M2UGEN_WEIGHTS, "
                         f"or write {config_dir() / 'weights.json'}")

    sd: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    ckpt = spec.get("checkpoint")
    if ckpt:
        log.info("reading %s", ckpt)
        sd, meta = read_any_state_dict(ckpt)
    converted = is_converted(meta)

    name = spec.get("preset") or (meta.get("preset") or None) or (guess_preset(sd) if sd else None)
    if name is None:
        raise ValueError(f"cannot tell the preset of {ckpt or spec.get('llama_dir')}: "
                         "give preset= (tiny, musicgen-small, musicgen-medium, audioldm2)")
    full = bool(sd) and not converted
    cfg = _config_for(name, spec, sd, full)
    log.info("building %s (LLaMA %s) on the meta device", cfg.name, cfg.dtype)

    if full:
        with torch.device("meta"):
            model = cls.from_config(cfg, device="meta")
        load_reference_state_dict(model, sd, strict=True, release_source=True)
    elif converted:
        if not cfg.llama_dir:
            raise ValueError(f"{ckpt} holds only the trained tensors; give llama_dir (LLaMA-2 base weights)")
        with torch.device("meta"):
            model = cls.from_config(cfg, device="meta")
        load_llama(model, cfg.llama_dir)
        load_converted_state_dict(model, sd, meta, release_source=True)
    else:
        # no M2UGen checkpoint: a fresh model (official init) on the LLaMA-2 base weights
        model = cls.from_config(cfg)
        load_llama(model, cfg.llama_dir)
    _check_materialized(model)
    model.place(device or spec.get("device") or "cpu")
    model.eval()
    log.info("model ready in %.1f s", time.perf_counter() - t_start)
    return model


def _resolvable(path: str | None) -> bool:
    """True when a sub-model path is a local directory or a repo in the local Hugging Face cache."""
    if not path:
        return False
    from m2ugen.submodel import resolve_pretrained_dir

    try:
        resolve_pretrained_dir(path, "sub-model")
        return True
    except (FileNotFoundError, ValueError):
        return False


def _config_for(name: str, spec: dict[str, Any], sd: dict[str, torch.Tensor], full: bool) -> M2UGenConfig:
    """The preset, with the spec's paths/dtype/overrides and what the checkpoint's shapes imply.

    ``full``: ``sd`` is a complete official state dict (sub-model weights and frozen LLaMA inside).
    """
    cfg = M2UGenConfig.preset(name)
    changes: dict[str, Any] = {k: spec[k] for k in ("llama_dir", "tokenizer_path") if spec.get(k)}
    known = offline_config(name)
    for sub in ("mert", "vit", "vivit", "decoder"):
        key = f"{sub}_path"
        if spec.get(key):
            changes[key], changes[f"{sub}_config"] = spec[key], None
        elif full and getattr(known, key) is None and not _resolvable(getattr(cfg, key)):
            # the official checkpoint holds this sub-model's weights: its known architecture suffices
            log.info("%s: %r not available locally; using the checkpoint's weights with the known architecture",
                     sub, getattr(cfg, key))
            changes[key], changes[f"{sub}_config"] = None, getattr(known, f"{sub}_config")
    dtype = spec.get("dtype")
    if dtype is None and full:
        # half-precision frozen LLaMA weights stay half (no fp32 copy of a 13 GB fp16 file)
        wq = sd.get("llama.layers.0.attention.wq.weight")
        if wq is not None and wq.dtype in (torch.float16, torch.bfloat16):
            dtype = wq.dtype
    if dtype is not None:
        changes["dtype"] = str(dtype).removeprefix("torch.")
    changes.update(spec.get("config") or {})
    cfg = cfg.replace(**changes)
    emb = sd.get("llama.tok_embeddings.weight")
    if emb is not None and cfg.vocab_size <= 0:
        cfg = cfg.replace(vocab_size=emb.shape[0])
    pq = sd.get("prefix_query.weight")
    if pq is not None and detect_prefix_layout(cfg, pq.shape[0]) is not None:
        cfg = cfg.replace(legacy_prefix=bool(detect_prefix_layout(cfg, pq.shape[0])))
    if not cfg.is_tiny and not cfg.tokenizer_path:
        cfg = cfg.replace(tokenizer_path=_find_tokenizer(cfg.llama_dir))
    return cfg


def _find_tokenizer(llama_dir: str | None) -> str:
    """The LLaMA-2 ``tokenizer.model``: in llama_dir or its parent (Meta's layout: llama-2/7B + tokenizer.model)."""
    if llama_dir:
        for d in (Path(llama_dir), Path(llama_dir).parent):
            if (d / "tokenizer.model").is_file():
                return str(d)
    raise ValueError("the real model needs the LLaMA-2 tokenizer: set tokenizer_path (a directory with "
                     "tokenizer.model) in the weights spec, or put tokenizer.model next to llama_dir")


def _check_materialized(model) -> None:
    left = [n for n, t in model.state_dict(keep_vars=True).items() if t.is_meta]
    if left:
        raise ValueError(f"weights left unset after loading: {fmt_list(left)}")
