"""Bridges, output projector and lazily built encoders (tiny configs, CPU)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m2ugen.bridges import UnderstandingBridge
from m2ugen.projector import OutputProjector


# ----------------------------------------------------------------------------------------------
# bridges


def _official_bridge_shapes(prefix: str, tokens: int, in_dim: int, dim: int = 4096) -> dict[str, tuple]:
    """Reference §2.4: the official ``{prefix}_*`` keys of one bridge (7B, feature_scaler 1)."""
    shapes = {
        f"{prefix}_agg.weight": (1, tokens, 1),
        f"{prefix}_agg.bias": (1,),
        f"{prefix}_proj.weight": (dim, in_dim),
        f"{prefix}_proj.bias": (dim,),
    }
    for k in (1, 2, 3):
        shapes[f"{prefix}_norm_{k}.weight"] = (dim,)
        for j in (1, 2, 3):
            shapes[f"{prefix}_f{j}_{k}.weight"] = (dim, dim)
    return shapes


@pytest.mark.parametrize("prefix,tokens,in_dim", [("mu_mert", 25, 1024), ("iu_vit", 197, 768), ("iu_vivit", 3137, 768)])
def test_bridge_keys_match_official_7b(prefix, tokens, in_dim):
    with torch.device("meta"):
        bridge = UnderstandingBridge(tokens, in_dim, 4096)
    ours = {f"{prefix}_{k}": tuple(v.shape) for k, v in bridge.state_dict().items()}
    assert ours == _official_bridge_shapes(prefix, tokens, in_dim)
    with torch.device("meta"):
        out = bridge(torch.empty(2, tokens, in_dim))
    assert out.shape == (2, 1, 4096)


def test_bridge_param_count_matches_reference():
    with torch.device("meta"):
        bridge = UnderstandingBridge(25, 1024, 4096)
    assert sum(p.numel() for p in bridge.parameters()) == 155_205_658  # reference §2.2 (MERT bridge)


def test_bridge_math_equals_hand_computation():
    torch.manual_seed(0)
    bridge = UnderstandingBridge(5, 6, 8, feature_scaler=2, eps=1e-6)
    with torch.no_grad():
        for k in (1, 2, 3):
            getattr(bridge, f"norm_{k}").weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 6)

    # by hand: Conv1d(k=1) over the token axis is a weighted sum of the token rows plus a bias
    w = bridge.agg.weight[0, :, 0]  # [5]
    pooled = (x * w[None, :, None]).sum(1) + bridge.agg.bias  # [3, 6]
    pooled = pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    h = pooled @ bridge.proj.weight.T + bridge.proj.bias  # [3, 8]
    for k in (1, 2, 3):
        g = getattr(bridge, f"norm_{k}").weight
        n = h / torch.sqrt((h * h).mean(-1, keepdim=True) + 1e-6) * g
        a = n @ getattr(bridge, f"f1_{k}").weight.T
        b = n @ getattr(bridge, f"f3_{k}").weight.T
        h = h + (a * torch.sigmoid(a) * b) @ getattr(bridge, f"f2_{k}").weight.T
    out = bridge(x)
    assert out.shape == (3, 1, 8)
    torch.testing.assert_close(out[:, 0], h, rtol=1e-5, atol=1e-6)


def test_bridge_rejects_wrong_input_shape():
    bridge = UnderstandingBridge(5, 6, 8)
    with pytest.raises(ValueError, match=r"\[B, 5, 6\]"):
        bridge(torch.randn(1, 4, 6))


# ----------------------------------------------------------------------------------------------
# output projector


def _official_projector_shapes(nq: int, out_dim: int) -> dict[str, tuple]:
    """Reference §2.4: ``output_projector.*`` for the 7B model (d_model 512, 4+4 layers, ff 2048)."""
    s: dict[str, tuple] = {
        "fc.weight": (512, 4096), "fc.bias": (512,),
        "model.weight": (out_dim, 512), "model.bias": (out_dim,),
        "query_embs": (1, nq, 512),
        "tfm.encoder.norm.weight": (512,), "tfm.encoder.norm.bias": (512,),
        "tfm.decoder.norm.weight": (512,), "tfm.decoder.norm.bias": (512,),
    }
    attn = {"in_proj_weight": (1536, 512), "in_proj_bias": (1536,), "out_proj.weight": (512, 512), "out_proj.bias": (512,)}
    ffn = {"linear1.weight": (2048, 512), "linear1.bias": (2048,), "linear2.weight": (512, 2048), "linear2.bias": (512,)}
    for m in range(4):
        enc, dec = f"tfm.encoder.layers.{m}.", f"tfm.decoder.layers.{m}."
        for k, v in attn.items():
            s[enc + "self_attn." + k] = v
            s[dec + "self_attn." + k] = v
            s[dec + "multihead_attn." + k] = v
        for k, v in ffn.items():
            s[enc + k] = v
            s[dec + k] = v
        for i in (1, 2):
            s[enc + f"norm{i}.weight"] = s[enc + f"norm{i}.bias"] = (512,)
        for i in (1, 2, 3):
            s[dec + f"norm{i}.weight"] = s[dec + f"norm{i}.bias"] = (512,)
    return s


@pytest.mark.parametrize("nq,out_dim", [(128, 768), (1, 137216)])
def test_projector_keys_match_official_7b(nq, out_dim):
    with torch.device("meta"):
        proj = OutputProjector(4096, out_dim, num_output_tokens=nq)
        out = proj(torch.empty(1, 8, 4096), torch.empty(1, 8, 4096))
    ours = {k: tuple(v.shape) for k, v in proj.state_dict().items()}
    assert ours == _official_projector_shapes(nq, out_dim)
    assert out.shape == (1, nq, out_dim)


def test_projector_forward_tiny_and_batch_independent():
    torch.manual_seed(0)
    proj = OutputProjector(16, 12, num_output_tokens=5, d_model=8, nhead=2, num_layers=1, dim_feedforward=16).eval()
    x, e = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    out = proj(x, e)
    assert out.shape == (2, 5, 12)
    # each sample is projected on its own: batch row 1 alone gives the same result
    torch.testing.assert_close(proj(x[1:], e[1:]), out[1:], rtol=1e-5, atol=1e-5)
    # it is model(tfm(fc(x + e), query_embs))
    ref = proj.model(proj.tfm(proj.fc(x + e), proj.query_embs.repeat(2, 1, 1)))
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="differ in shape"):
        proj(x, e[:, :7])
