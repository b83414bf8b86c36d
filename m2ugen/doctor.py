"""``m2ugen doctor``: check a weights spec before anyone waits for a load.

Every check reads as little as it can: tensor names, shapes and dtypes come from the file headers
(safetensors' header; a ``checkpoint.pth`` is opened with ``torch.load(mmap=True, weights_only=True)``,
so no tensor data is read and no code can run), and the layout is compared by the very loaders
``from_pretrained`` uses, run on the meta device. Only the attention gates are read (a few hundred
numbers) to tell a deaf checkpoint. Each check gives one line: ok / warn / FAIL, what was found, and
for a problem what to do about it. A FAIL is a blocker: loading would fail or could not fit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

OK, WARN, FAIL = "ok", "warn", "FAIL"
_GATE = re.compile(r"^(module\.)?llama\.layers\.\d+\.attention\.gate$")
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
GB = 1e9


@dataclass
class Check:
    name: str
    status: str  # ok | warn | FAIL
    found: str
    fix: str = ""

    def line(self) -> str:
        tail = f" -> {self.fix}" if self.fix and self.status != OK else ""
        return f"{self.status:<4} {self.name}: {self.found}{tail}"


@dataclass
class _Header:
    """What a weights file holds, without its tensor data: meta tensors + metadata + a gate reader."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]
    read: Callable[[list[str]], dict[str, torch.Tensor]]


def read_header(path: str | Path) -> _Header:
    """Names, shapes and dtypes of a ``.safetensors`` or torch zip checkpoint, as meta tensors."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {}
            for k in f.keys():
                s = f.get_slice(k)
                tensors[k] = torch.empty(s.get_shape(), dtype=_ST_DTYPES.get(s.get_dtype(), torch.float32),
                                         device="meta")

        def read(keys: list[str]) -> dict[str, torch.Tensor]:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in keys}

        return _Header(_strip(tensors), meta, lambda keys: _strip(read(keys)))
    from m2ugen.checkpoint.files import read_official_checkpoint

    sd = read_official_checkpoint(p)  # memory-mapped, weights-only: no tensor data read, no code run
    return _Header({k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in sd.items()}, {},
                   lambda keys: {k: sd[k].clone() for k in keys})


def _strip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from m2ugen.checkpoint.names import strip_module_prefix

    return strip_module_prefix(sd)


def available_memory(device: str) -> int | None:
    """Bytes free for weights on ``device``: CUDA's free memory, else the OS's MemAvailable."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def diagnose(source: str | None = None, *, device: str = "cpu", dtype: str | None = None,
             free_bytes: int | None = None, preset: str | None = None) -> list[Check]:
    """All checks of the weights ``source`` (a spec, directory or checkpoint; None: the configured one).

    ``free_bytes``: the memory to compare the estimate with (default: measured on ``device``).
    """
    from m2ugen.checkpoint import pretrained

    checks: list[Check] = []
    source = source if source is not None else pretrained.find_weights()
    if source is None and preset is None:
        checks.append(Check("weights", WARN, "no weights configured: serve would run the tiny random model",
                            "pass --weights SPEC, set M2UGEN_WEIGHTS or write <config dir>/weights.json"))
        return checks
    try:
        spec = pretrained.resolve_source(source) if source is not None else {}
    except (ValueError, OSError) as e:
        checks.append(Check("weights spec", FAIL, str(e), "give a weights.json, a run directory or a checkpoint"))
        return checks
    if preset:
        spec["preset"] = preset
    if source is not None:
        checks.append(Check("weights spec", OK, f"{source}: " + ", ".join(sorted(k for k, v in spec.items() if v))))

    files_ok = _check_files(spec, checks)
    header = None
    ckpt = spec.get("checkpoint")
    if ckpt and files_ok.get("checkpoint"):
        try:
            header = read_header(ckpt)
        except (ValueError, OSError, RuntimeError) as e:
            checks.append(Check("checkpoint readable", FAIL, f"{ckpt}: {e}",
                                "the file is damaged or not a checkpoint: copy it again"))
    cfg = _config(spec, header, dtype, checks)
    if cfg is None:
        return checks
    _check_tokenizer(cfg, checks)
    _check_hf_dirs(cfg, checks)
    model = _check_layout(cfg, header, spec, checks)
    _check_gates(header, checks)
    _check_dtype(device, dtype or cfg.dtype, checks)
    if model is not None:
        _check_memory(model, cfg, device, dtype, free_bytes, checks)
    return checks


def blockers(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]


# ----------------------------------------------------------------------------------------------
# the checks


def _check_files(spec: dict[str, Any], checks: list[Check]) -> dict[str, bool]:
    from m2ugen.checkpoint.pretrained import SUBMODEL_PATH_KEYS, _resolvable

    found: dict[str, bool] = {}
    for key in ("checkpoint", "llama_dir", "tokenizer_path", *SUBMODEL_PATH_KEYS):
        v = spec.get(key)
        if not v:
            continue
        if key in SUBMODEL_PATH_KEYS:
            ok = _resolvable(v)
            what = "a local directory or a Hugging Face repo in the local cache"
            fix = f"download it on a connected machine (`hf download {v}`) or point {key} at a local copy"
        else:
            ok = Path(v).is_file() if key == "checkpoint" else Path(v).is_dir()
            what = "a file" if key == "checkpoint" else "a directory"
            fix = f"{key} in the weights spec must name an existing {what.split()[-1]} (relative paths are " \
                  "relative to the spec file)"
        found[key] = ok
        checks.append(Check(f"file {key}", OK if ok else FAIL, f"{v}" + ("" if ok else f" is not {what}"), fix))
    if spec.get("llama_dir") and found.get("llama_dir"):
        d = Path(spec["llama_dir"])
        meta_fmt = (d / "params.json").is_file() and any(d.glob("consolidated.*.pth"))
        hf_fmt = (d / "config.json").is_file() and (any(d.glob("*.safetensors")) or any(d.glob("pytorch_model*.bin")))
        if not (meta_fmt or hf_fmt):
            checks.append(Check("llama_dir contents", FAIL, f"{d} holds neither params.json + consolidated.*.pth "
                                "(Meta) nor config.json + *.safetensors (Hugging Face)",
                                "point llama_dir at the LLaMA-2 7B weights directory"))
        else:
            checks.append(Check("llama_dir contents", OK, "Meta format" if meta_fmt else "Hugging Face format"))
    return found


def _config(spec, header, dtype, checks):
    from m2ugen.checkpoint import architectures, pretrained
    from m2ugen.checkpoint.files import is_converted

    sd = header.tensors if header else {}
    meta = header.meta if header else {}
    name = spec.get("preset") or meta.get("preset") or (architectures.guess_preset(sd) if sd else None)
    if name is None:
        if header is not None or spec.get("llama_dir"):
            checks.append(Check("preset", FAIL, "cannot tell the preset from the checkpoint's shapes",
                                'add "preset" (tiny, musicgen-small, musicgen-medium, audioldm2) to the weights spec'))
        return None
    full = bool(sd) and not is_converted(meta)
    spec = dict(spec, dtype=dtype or spec.get("dtype"))
    try:
        cfg = pretrained._config_for(name, spec, sd, full)
    except ValueError as e:
        if "tokenizer" in str(e):
            checks.append(Check("tokenizer", FAIL, "no tokenizer.model in the spec or next to llama_dir",
                                "set tokenizer_path in the weights spec to the directory holding LLaMA-2's "
                                "tokenizer.model, or put it next to llama_dir"))
        else:
            checks.append(Check("config", FAIL, str(e), "fix the weights spec"))
        return None
    checks.append(Check("preset", OK, f"{cfg.name} (LLaMA {cfg.dtype}, "
                        f"{'full official checkpoint' if full else 'trained tensors only' if sd else 'base LLaMA'})"))
    return cfg


def _check_tokenizer(cfg, checks: list[Check]) -> None:
    if cfg.is_tiny:
        return
    p = Path(cfg.tokenizer_path or "")
    if cfg.tokenizer_path and (p / "tokenizer.model").is_file():
        checks.append(Check("tokenizer", OK, str(p / "tokenizer.model")))
    else:
        checks.append(Check("tokenizer", FAIL, f"no tokenizer.model in {cfg.tokenizer_path or '(not set)'}",
                            "set tokenizer_path in the weights spec to the directory holding LLaMA-2's "
                            "tokenizer.model, or put it next to llama_dir"))


def _check_hf_dirs(cfg, checks: list[Check]) -> None:
    from m2ugen.submodel import resolve_pretrained_dir

    for field_ in ("mert", "vit", "vivit", "decoder"):
        path = getattr(cfg, f"{field_}_path")
        if not path:
            continue
        try:
            d = resolve_pretrained_dir(path, field_)
        except (FileNotFoundError, ValueError):
            continue  # reported by the file checks
        conf = d / "config.json"
        try:
            json.loads(conf.read_text())
            checks.append(Check(f"{field_} config", OK, str(conf)))
        except (OSError, json.JSONDecodeError) as e:
            checks.append(Check(f"{field_} config", FAIL, f"{conf}: {type(e).__name__}: {e}",
                                "the Hugging Face directory is incomplete: download it again"))


def _check_layout(cfg, header, spec, checks: list[Check]):
    """Build the model on the meta device and run the real loader on the header's meta tensors."""
    from m2ugen.checkpoint import state_dict
    from m2ugen.checkpoint.files import is_converted
    from m2ugen.model import M2UGen

    try:
        with torch.device("meta"):
            model = M2UGen(cfg)
    except Exception as e:  # a sub-model config the holders refuse, a tokenizer that does not load, ...
        checks.append(Check("model config", FAIL, f"{type(e).__name__}: {e}", "fix the weights spec"))
        return None
    if header is None:
        return model
    try:
        if is_converted(header.meta):
            try:
                state_dict.load_converted_state_dict(model, dict(header.tensors), header.meta)
            except ValueError as e:
                if "before a converted checkpoint" not in str(e):  # layout fine; the base is read at load time
                    raise
        else:
            state_dict.load_reference_state_dict(model, dict(header.tensors), strict=True)
    except ValueError as e:
        checks.append(Check("checkpoint layout", FAIL, str(e)[:600],
                            "the checkpoint is not an M2UGen checkpoint of this preset: check the preset and the file"))
        return model
    n = len(header.tensors)
    checks.append(Check("checkpoint layout", OK, f"{n} tensors, names and shapes match {cfg.name}"))
    return model


def _check_gates(header, checks: list[Check]) -> None:
    if header is None:
        return
    keys = [k for k in header.tensors if _GATE.match(k)]
    if not keys:
        return
    gates = header.read(keys)
    nonzero = sum(int(torch.count_nonzero(g)) for g in gates.values())
    if nonzero == 0:
        checks.append(Check("attention gates", WARN, f"all {len(keys)} layers' gates are zero: a deaf checkpoint "
                            "(audio, image and video cannot change the text; text-to-music still works)",
                            "train stage 1 with the gates trained (`m2ugen train --stage 1 --weights ...`)"))
    else:
        checks.append(Check("attention gates", OK, f"non-zero in {sum(bool(torch.count_nonzero(g)) for g in gates.values())}"
                            f" of {len(keys)} layers"))


def _check_dtype(device: str, dtype: str, checks: list[Check]) -> None:
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            checks.append(Check("device", FAIL, f"{device}: no CUDA device here", "use --device cpu"))
            return
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            checks.append(Check("dtype", FAIL, f"bfloat16 is not supported by {torch.cuda.get_device_name(dev)}",
                                "use --dtype float16"))
            return
    elif dtype == "float16":
        checks.append(Check("dtype", WARN, "float16 on CPU is slow and may overflow", "use bfloat16 or float32 on CPU"))
        return
    checks.append(Check("dtype", OK, f"{dtype} on {dev.type}"))


def _check_memory(model, cfg, device, dtype, free_bytes, checks: list[Check]) -> None:
    from m2ugen.quant import weight_bytes

    sub_dtype = getattr(torch, dtype) if dtype else torch.float32
    size = torch.tensor([], dtype=sub_dtype).element_size()
    need = weight_bytes(model)  # LLaMA in cfg.dtype, bridges/projector fp32 (meta: sizes only)
    parts = {"LLaMA + bridges": need}
    for holder in model.holders():
        try:
            n = sum(s.numel() for s in holder.expected_shapes().values()) * size
        except Exception:
            continue
        parts[holder.kind] = n
        need += n
    free = available_memory(device) if free_bytes is None else free_bytes
    detail = ", ".join(f"{k} {v / GB:.1f}" for k, v in parts.items())
    if free is None:
        checks.append(Check("memory", WARN, f"needs ~{need / GB:.1f} GB ({detail}); free memory unknown"))
    elif need > free:
        checks.append(Check("memory", FAIL, f"needs ~{need / GB:.1f} GB for the weights ({detail}), "
                            f"{free / GB:.1f} GB free on {device}",
                            "free memory, use --dtype bfloat16, --int8 (about half the LLaMA), or a larger device"))
    else:
        checks.append(Check("memory", OK, f"~{need / GB:.1f} GB of weights, {free / GB:.1f} GB free on {device}"))
