"""Conversion of an official checkpoint to our trainable-only ``.safetensors`` (official names,
stored dtypes, the ``[AUD]`` output rows, provenance in the metadata)."""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from m2ugen.checkpoint.architectures import detect_prefix_layout, guess_preset
from m2ugen.checkpoint.files import is_converted, read_any_state_dict, sha256_file
from m2ugen.checkpoint.names import AUD_ROWS_KEY, CONVERTED_FORMAT, is_trained_key
from m2ugen.config import M2UGenConfig

log = logging.getLogger("m2ugen.checkpoint")


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, progress: bool = True,
                       hash_source: bool = True) -> dict[str, Any]:
    """Write the tensors M2UGen trained from an official checkpoint into a .safetensors file.

    Kept (official names, stored dtypes unchanged): llama norms / biases / LoRA / tok_embeddings /
    gates, prefix_query, the bridges, output_projector, and ``llama.output.weight`` rows past the
    base vocabulary (the [AUD] rows, only in M2UGen checkpoints) as ``llama.output.aud_rows``.
    Dropped: frozen LLaMA matrices, encoders, MusicGen, optimizer state. Returns statistics.
    """
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"output must end in .safetensors: {dst}")
    t0 = time.perf_counter()
    sd, meta_in = read_any_state_dict(src)
    if is_converted(meta_in):
        raise ValueError(f"{src} is already a converted M2UGen file")
    preset = guess_preset(sd)
    cfg = M2UGenConfig.preset(preset) if preset else M2UGenConfig()
    pq = sd.get("prefix_query.weight")
    if pq is None:
        raise ValueError(f"{src}: no prefix_query.weight: not an M2UGen checkpoint")
    legacy = detect_prefix_layout(cfg, pq.shape[0])

    kept: dict[str, torch.Tensor] = {}
    dropped, dropped_bytes = 0, 0
    for k, t in sd.items():
        if is_trained_key(k):
            kept[k] = t
        else:
            dropped += 1
            dropped_bytes += t.numel() * t.element_size()
    out_w = sd.get("llama.output.weight")
    n_aud = cfg.num_gen_audio_tokens
    if out_w is None:
        raise ValueError(f"{src}: no llama.output.weight")
    aud_start = out_w.shape[0] - n_aud
    kept[AUD_ROWS_KEY] = out_w[aud_start:].clone()  # [8, dim], stored dtype
    kept = {k: (v if v.is_contiguous() else v.contiguous()) for k, v in kept.items()}

    dtypes = dict(collections.Counter(str(v.dtype).removeprefix("torch.") for v in kept.values()))
    kept_bytes = sum(v.numel() * v.element_size() for v in kept.values())
    metadata = {
        "format": "pt",
        "format_m2ugen": CONVERTED_FORMAT,
        "preset": preset or "",
        "prefix_layout": {True: "legacy", False: "per-modality", None: "unknown"}[legacy],
        "prefix_rows": str(pq.shape[0]),
        "aud_row_start": str(aud_start),
        "source_name": src.name,
        "source_size": str(src.stat().st_size),
        "source_sha256": sha256_file(src, progress) if hash_source else "",
        "dtypes": json.dumps(dtypes, sort_keys=True),
    }
    if progress:
        log.info("writing %d tensors (%.1f MB) to %s", len(kept), kept_bytes / 1e6, dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    save_file(kept, str(tmp), metadata=metadata)
    os.replace(tmp, dst)
    stats = {
        "preset": preset,
        "prefix_layout": metadata["prefix_layout"],
        "kept_tensors": len(kept),
        "kept_bytes": kept_bytes,
        "dropped_tensors": dropped,
        "dropped_bytes": dropped_bytes,
        "dtypes": dtypes,
        "output": str(dst),
        "output_bytes": dst.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if progress:
        log.info("converted %s -> %s: %s", src.name, dst.name, stats)
    return stats
