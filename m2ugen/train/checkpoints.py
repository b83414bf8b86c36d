"""What a training run writes: the servable weights and the resumable state.

``<out>/m2ugen.safetensors`` is in the format of ``m2ugen convert`` (official names of every tensor
M2UGen trains, the gates included, plus the ``[AUD]`` rows of ``llama.output.weight``) and
``<out>/weights.json`` points at it together with the frozen base (``llama_dir``) and the
sub-model paths, so ``m2ugen serve --weights <out>`` loads the result like a converted checkpoint.
A model built from random base weights (the tiny preset) gets its frozen LLaMA written once, in
Meta format, to ``<out>/base/``.

``<out>/state/step-NNNNNNNN/`` holds what ``--resume`` needs to continue exactly: the trained
tensors at full precision (our names), the AdamW state, the schedule position, every RNG state and
the data position (epoch, micro-batch). The newest ``keep_states`` states are kept.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2ugen.train import statefile

WEIGHTS_FILE = "m2ugen.safetensors"
STATE_DIR = "state"
OPTIMIZER_FILE = "optimizer.safetensors"  # m2ugen.train.statefile (safetensors + JSON): no pickle is ever loaded

log = logging.getLogger("m2ugen.train")


def rng_file(rank: int) -> str:
    return f"rng-{rank}.safetensors"


def _atomic_dir(final: Path) -> Path:
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


# ----------------------------------------------------------------------------------------------
# servable weights


def trained_state_dict(model, full: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Official-named tensors of every trainable M2UGen tensor + the [AUD] output rows.

    ``full``: the model's state dict gathered by the engine (FSDP / ZeRO-3), else ``model.state_dict()``.
    """
    from m2ugen.checkpoint import AUD_ROWS_KEY, is_trained_key, to_official

    full = model.state_dict() if full is None else full
    out = {}
    for name, t in full.items():
        off = to_official(name)
        if is_trained_key(off):
            out[off] = t.detach().cpu().contiguous()
    n_aud = len(model.audio_token_ids)
    w = full["llama.output.weight"]
    out[AUD_ROWS_KEY] = w[w.shape[0] - n_aud:].detach().cpu().clone()
    return out


def save_weights(model, out_dir: str | os.PathLike, base: dict[str, Any], meta: dict[str, str] | None = None,
                 full: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``m2ugen.safetensors`` + ``weights.json``; ``base`` holds the spec's source entries
    (llama_dir, tokenizer_path, sub-model paths); returns the weights.json path."""
    from safetensors.torch import save_file

    from m2ugen.checkpoint import CONVERTED_FORMAT

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = trained_state_dict(model, full)
    w = model.llama.output.weight
    metadata = {
        "format": "pt",
        "format_m2ugen": CONVERTED_FORMAT,
        "preset": model.cfg.name,
        "prefix_layout": "legacy" if model.cfg.legacy_prefix else "per-modality",
        "prefix_rows": str(model.prefix_query.weight.shape[0]),
        "aud_row_start": str(w.shape[0] - len(model.audio_token_ids)),
        "source_name": "m2ugen train",
        **(meta or {}),
    }
    tmp = out / (WEIGHTS_FILE + ".partial")
    save_file(sd, str(tmp), metadata=metadata)
    os.replace(tmp, out / WEIGHTS_FILE)
    spec = {"preset": model.cfg.name, "checkpoint": WEIGHTS_FILE, "dtype": str(w.dtype).removeprefix("torch."),
            **{k: v for k, v in base.items() if v}}
    if not spec.get("llama_dir"):
        spec["llama_dir"] = str(write_base_llama(model, out / "base", full))
    (out / "weights.json").write_text(json.dumps(spec, indent=1) + "\n")
    return out / "weights.json"


def write_base_llama(model, directory: Path, full: dict[str, torch.Tensor] | None = None) -> Path:
    """The frozen LLaMA (base vocabulary) in Meta format, for models built from random weights."""
    from m2ugen.checkpoint import is_base_param

    if (directory / "params.json").is_file():
        return directory
    cfg = model.cfg
    n_base = cfg.vocab_size - len(model.audio_token_ids)
    params = full if full is not None else {f"llama.{n}": p for n, p in model.llama.named_parameters()}
    sd = {n[len("llama."):]: p.detach().cpu().clone() for n, p in params.items()
          if n.startswith("llama.") and is_base_param(n[len("llama."):])}
    for n in ("tok_embeddings.weight", "output.weight"):
        sd[n] = sd[n][:n_base].clone()
    tmp = _atomic_dir(directory)
    torch.save(sd, tmp / "consolidated.00.pth")
    (tmp / "params.json").write_text(json.dumps({"dim": cfg.dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                                                 "multiple_of": cfg.multiple_of, "norm_eps": cfg.norm_eps,
                                                 "vocab_size": n_base}))
    os.replace(tmp, directory)
    return directory


# ----------------------------------------------------------------------------------------------
# resumable state


def rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_state(out_dir: str | os.PathLike, trained: dict[str, torch.nn.Parameter], optimizer, progress: dict[str, Any],
               rank: int = 0, keep: int = 2) -> Path:
    """Write state/step-N (rank 0 writes tensors/optimizer; every rank its RNG state)."""
    from safetensors.torch import save_file

    root = Path(out_dir) / STATE_DIR
    final = root / f"step-{progress['step']:08d}"
    if rank == 0:
        tmp = _atomic_dir(final)
        save_file({n: p.detach().cpu().contiguous() for n, p in trained.items()}, str(tmp / "trainable.safetensors"))
        statefile.save(tmp / OPTIMIZER_FILE, optimizer.state_dict())
        statefile.save(tmp / rng_file(0), rng_state())
        (tmp / "progress.json").write_text(json.dumps(progress, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-keep]:
            if not old.name.endswith(".partial"):
                shutil.rmtree(old, ignore_errors=True)
    return final


def save_rank_rng(state_dir: Path, rank: int) -> None:
    if rank != 0:
        statefile.save(state_dir / rng_file(rank), rng_state())


def latest_state(out_dir: str | os.PathLike) -> Path | None:
    root = Path(out_dir) / STATE_DIR
    done = [p for p in sorted(root.glob("step-*")) if (p / "progress.json").is_file() and not p.name.endswith(".partial")]
    return done[-1] if done else None


def load_state(state_dir: Path, trained: dict[str, torch.nn.Parameter], optimizer, rank: int = 0) -> dict[str, Any]:
    """Restore tensors, optimizer and RNG; return the progress record."""
    from safetensors.torch import load_file

    sd = load_file(str(state_dir / "trainable.safetensors"))
    missing = sorted(set(trained) - set(sd))
    extra = sorted(set(sd) - set(trained))
    if missing or extra:
        raise ValueError(f"{state_dir}: trained tensors differ from this run's (missing {missing[:5]}, "
                         f"unexpected {extra[:5]}): resume with the same stage and switches")
    with torch.no_grad():
        for n, p in trained.items():
            if tuple(sd[n].shape) != tuple(p.shape):
                raise ValueError(f"{state_dir}: {n} has shape {list(sd[n].shape)}, the model {list(p.shape)}")
            p.copy_(sd[n])
    legacy = sorted(p.name for p in state_dir.glob("*.pt"))
    if legacy:
        log.warning("%s: pickle state file(s) %s are never loaded (they could run code); ignored", state_dir,
                    ", ".join(legacy))
    if not (state_dir / OPTIMIZER_FILE).is_file():
        raise ValueError(f"{state_dir}: no {OPTIMIZER_FILE} (a state saved by an older version in pickle files is "
                         f"not loaded: it could run code); start the run again without --resume")
    optimizer.load_state_dict(statefile.load(state_dir / OPTIMIZER_FILE))
    rng = state_dir / rng_file(rank)
    if rng.is_file():
        set_rng_state(statefile.load(rng))
    return json.loads((state_dir / "progress.json").read_text())
