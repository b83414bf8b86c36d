"""Building the model to train, and where its frozen base comes from (for the output weights.json)."""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger("m2ugen.train")

# weights-spec entries describing the frozen parts; copied into the run's weights.json
BASE_KEYS = ("llama_dir", "tokenizer_path", "mert_path", "vit_path", "vivit_path", "decoder_path")


def load_model(weights: str | None = None, *, preset: str | None = None, seed: int = 0, dtype: str | None = None,
               device: str | None = None, zero_gates: bool = False):
    """-> (model, base_spec). ``weights``: a weights spec / directory / checkpoint as for ``serve``
    (e.g. the previous stage's output directory); without it a random model of ``preset`` (seeded,
    so every process of a multi-process run builds the same one).

    ``zero_gates``: set every attention gate to 0 (the official initialisation) after building.
    """
    from m2ugen.model import M2UGen

    if weights is None:
        if preset is None:
            raise ValueError("give --weights (a weights spec or a previous run's directory) or --preset")
        from m2ugen.config import M2UGenConfig

        cfg = M2UGenConfig.preset(preset)
        if dtype:
            cfg = cfg.replace(dtype=dtype)
        if not cfg.is_tiny:
            raise ValueError(f"preset {preset!r} has real sub-models: give --weights with its llama_dir")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = M2UGen.from_config(cfg, device=device)
        base: dict[str, Any] = {}
    else:
        from m2ugen.checkpoint import resolve_source

        spec = resolve_source(weights)
        model = M2UGen.from_pretrained(weights, preset=preset, dtype=dtype, device=device)
        base = {k: spec.get(k) for k in BASE_KEYS if spec.get(k)}
        for k in BASE_KEYS[2:]:  # the paths the model actually used
            v = getattr(model.cfg, k, None)
            if v and k not in base:
                base[k] = v
        if model.cfg.tokenizer_path and "tokenizer_path" not in base:
            base["tokenizer_path"] = model.cfg.tokenizer_path
    if zero_gates:
        with torch.no_grad():
            for layer in model.llama.layers:
                layer.attention.gate.zero_()
    return model, base
