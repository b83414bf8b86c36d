"""Official <-> our state-dict names, and which tensors M2UGen trained.

``llama.*``, ``prefix_query.*`` and ``output_projector.*`` are identical; the bridges ``mu_mert_X`` /
``iu_vit_X`` / ``iu_vivit_X`` become ``mu_mert.X`` / ``iu_vit.X`` / ``iu_vivit.X``; the sub-models
``mert_model.*``, ``vit_model.*``, ``vivit_model.*``, ``generation_model.*`` go, prefix removed, to
the lazy holders ``music_encoder``, ``image_encoder``, ``video_encoder``, ``decoder``.
"""

from __future__ import annotations

import torch

BRIDGE_PREFIXES = {"mu_mert_": "mu_mert.", "iu_vit_": "iu_vit.", "iu_vivit_": "iu_vivit."}
HOLDER_PREFIXES = {
    "mert_model.": "music_encoder",
    "vit_model.": "image_encoder",
    "vivit_model.": "video_encoder",
    "generation_model.": "decoder",
}
OWN_PREFIXES = ("llama.", "prefix_query.", "output_projector.")
# the converted file stores llama.output.weight[base_vocab:] (the [AUD] rows) under this name
AUD_ROWS_KEY = "llama.output.aud_rows"
CONVERTED_FORMAT = "m2ugen-trainable-v1"


def to_ours(official: str) -> tuple[str | None, str]:
    """Official key -> (where, name): where is "" for the model itself, a holder attribute, or None."""
    if official.startswith(OWN_PREFIXES):
        return "", official
    for prefix, ours in BRIDGE_PREFIXES.items():
        if official.startswith(prefix):
            return "", ours + official[len(prefix):]
    for prefix, holder in HOLDER_PREFIXES.items():
        if official.startswith(prefix):
            return holder, official[len(prefix):]
    return None, official


def to_official(ours: str, holder: str = "") -> str:
    """Inverse of ``to_ours``."""
    if holder:
        prefix = {h: p for p, h in HOLDER_PREFIXES.items()}[holder]
        return prefix + ours
    for prefix, mod in BRIDGE_PREFIXES.items():
        if ours.startswith(mod):
            return prefix + ours[len(mod):]
    return ours


def strip_module_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove one leading ``module.`` (the DDP wrapper of mid-epoch saves) from every key."""
    out = {}
    for k, v in sd.items():
        k2 = k[len("module."):] if k.startswith("module.") else k
        if k2 in out:
            raise ValueError(f"checkpoint holds {k2!r} both with and without the 'module.' prefix")
        out[k2] = v
    return out


def is_trained_key(name: str) -> bool:
    """True for the tensors M2UGen trained (reference §2.2) and the gates, by official name."""
    if name.startswith("llama."):
        return (
            name == "llama.tok_embeddings.weight"
            or name.endswith(".attention.gate")
            or any(s in name for s in ("norm", "bias", "lora"))
        )
    return name.startswith(("prefix_query.", "output_projector.", *BRIDGE_PREFIXES))
