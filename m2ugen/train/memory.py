"""The training memory plan, computed from parameter counts (docs/training.md prints its output).

Counts come from the real-size model built on the meta device (no memory, no files): frozen LLaMA
matrices in bf16, trained tensors in fp32 with fp32 gradients and two fp32 AdamW moments, the
frozen encoders / decoder in bf16, and an activation estimate per token and layer of the
LLaMA-7B forward with SDPA attention (see ``activation_bytes_per_token``).

    python -m m2ugen.train.memory            # the table for musicgen-medium, stages 1-3
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

GB = 1e9


@dataclass
class Counts:
    frozen_llama: int
    trained: int  # this stage's trainable tensors
    encoders: int  # MERT + ViT + ViViT
    decoder: int  # MusicGen (T5 + EnCodec + decoder)


@functools.lru_cache(maxsize=None)
def count_parameters(preset: str, stage: int, train_gates: bool = True) -> Counts:
    import logging

    import torch

    logging.getLogger("m2ugen").setLevel(logging.ERROR)  # the meta-device build needs no real tokenizer

    from m2ugen.checkpoint import offline_config
    from m2ugen.model import M2UGen
    from m2ugen.train.stages import is_trainable

    cfg = offline_config(preset)
    with torch.device("meta"):
        model = M2UGen(cfg)
        trained = sum(p.numel() for n, p in model.named_parameters() if is_trainable(n, stage, train_gates))
        frozen = sum(p.numel() for n, p in model.named_parameters()
                     if n.startswith("llama.") and not is_trainable(n, stage, train_gates))
        sub = {}
        for name in ("music_encoder", "image_encoder", "video_encoder", "decoder"):
            holder = getattr(model, name)
            try:
                sub[name] = sum(p.numel() for p in holder._new_model(holder._hf_config()).parameters())
            except Exception:  # e.g. the AudioLDM2 pipeline is not an nn.Module
                sub[name] = 0
    return Counts(frozen, trained, sub["music_encoder"] + sub["image_encoder"] + sub["video_encoder"], sub["decoder"])


def activation_bytes_per_token(cfg, checkpointing: bool) -> float:
    """bf16 activations kept for backward, per token, whole LLaMA (+ fp32 logits).

    Per layer: norm inputs/outputs (4 dim), q/k/v/attention output/wo input/residual (6 dim), fp32
    RoPE and RMSNorm copies (4 dim x 2), SwiGLU w1/w3 outputs, silu and product (4 x ffn), LoRA
    rank-r intermediates (negligible). With checkpointing only each layer's input (1 dim) is kept,
    plus one layer's worth during its recompute (counted once, per token).
    """
    per_layer = 2 * (10 * cfg.dim + 4 * cfg.ffn_hidden_dim) + 4 * 4 * cfg.dim
    logits = 2 * 4 * cfg.vocab_size  # fp32 logits and their log-softmax
    if checkpointing:
        return cfg.n_layers * 2 * cfg.dim + per_layer + logits
    return cfg.n_layers * per_layer + logits


def plan(preset: str = "musicgen-medium", stage: int = 3, tokens_per_gpu: int = 1024, gpus: int = 1,
         checkpointing: bool = False, cached_features: bool = True, zero3: bool = False,
         offload_optimizer: bool = False) -> dict[str, float]:
    """GB per GPU. ``zero3``: frozen and trained tensors, grads and moments sharded over ``gpus``."""
    from m2ugen.config import M2UGenConfig

    cfg = M2UGenConfig.preset(preset)
    c = count_parameters(preset, stage)
    shard = gpus if zero3 else 1
    out = {
        "frozen LLaMA (bf16)": 2 * c.frozen_llama / shard / GB,
        "trained tensors (fp32)": 4 * c.trained / shard / GB,
        "gradients (fp32)": 4 * c.trained / shard / GB,
        "AdamW moments (fp32)": 0.0 if offload_optimizer else 8 * c.trained / shard / GB,
        "encoders (bf16)": 0.0 if cached_features else 2 * c.encoders / GB,
        "decoder for MSE targets (bf16)": (2 * c.decoder / GB) if stage > 1 else 0.0,
        "activations": tokens_per_gpu * activation_bytes_per_token(cfg, checkpointing) / GB,
    }
    out["total"] = sum(out.values())
    return out


def main(argv: list[str] | None = None) -> int:
    preset = (argv or sys.argv[1:] or ["musicgen-medium"])[0]
    for stage in (1, 2, 3):
        c = count_parameters(preset, stage)
        print(f"stage {stage}: trained {c.trained / 1e6:.1f} M, frozen LLaMA {c.frozen_llama / 1e6:.1f} M, "
              f"encoders {c.encoders / 1e6:.1f} M, decoder {c.decoder / 1e6:.1f} M")
    setups = [
        ("1x24 GB", dict(gpus=1, tokens_per_gpu=1024, checkpointing=True)),
        ("1x24 GB", dict(gpus=1, tokens_per_gpu=1024, checkpointing=True, offload_optimizer=True)),
        ("1x80 GB", dict(gpus=1, tokens_per_gpu=4096, checkpointing=False)),
        ("8x80 GB DDP", dict(gpus=8, tokens_per_gpu=4096, checkpointing=False)),
        ("8x80 GB ZeRO-3", dict(gpus=8, tokens_per_gpu=16384, checkpointing=True, zero3=True)),
    ]
    cols = ["frozen LLaMA (bf16)", "trained tensors (fp32)", "gradients (fp32)", "AdamW moments (fp32)",
            "encoders (bf16)", "decoder for MSE targets (bf16)", "activations", "total"]
    print("\n| stage | GPUs | tokens/GPU | options | frozen LLaMA | trained | grads | AdamW | encoders | "
          "decoder | activations | **total GB/GPU** |")
    print("|---" * 12 + "|")
    for stage in (1, 2, 3):
        for name, kw in setups:
            p = plan(preset, stage, **kw)
            opts = ", ".join(k.replace("_", " ") for k in ("checkpointing", "offload_optimizer", "zero3") if kw.get(k))
            print(f"| {stage} | {name} | {kw['tokens_per_gpu']} | {opts or '-'} | "
                  + " | ".join(f"{p[c]:.1f}" for c in cols[:-1]) + f" | **{p['total']:.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
