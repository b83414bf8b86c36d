"""Bridges, output projector and lazily built encoders (tiny configs, CPU)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from m2ugen.bridges import UnderstandingBridge
from m2ugen.projector import OutputProjector


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # the test box has 2 cores shared by parallel jobs: 2 OpenMP threads each spin and slow to a crawl
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


# ----------------------------------------------------------------------------------------------
# encoders (tiny random configs)

from m2ugen.config import M2UGenConfig  # noqa: E402
from m2ugen.encoders import (  # noqa: E402
    ImageEncoder,
    MusicEncoder,
    VideoEncoder,
    hubert_config_from_mert,
)
from m2ugen.submodel import legacy_weight_norm_name  # noqa: E402


@pytest.fixture(scope="module")
def tiny_cfg() -> M2UGenConfig:
    return M2UGenConfig.preset("tiny")


def _clip(seconds: float, sr: int = 24000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(seconds * sr))).astype(np.float32)


def test_encoders_are_lazy(tiny_cfg):
    holders = [MusicEncoder(tiny_cfg), ImageEncoder(tiny_cfg), VideoEncoder(tiny_cfg)]
    assert all(h.loaded is False for h in holders)
    for h in holders:
        assert len(h.expected_shapes()) > 10  # meta-device build only
        assert h.loaded is False
    holders[1].encode(np.zeros((8, 8, 3), np.uint8))
    assert [h.loaded for h in holders] == [False, True, False]


def test_encoder_output_shapes(tiny_cfg, tmp_path):
    mert = MusicEncoder(tiny_cfg)
    assert mert.encode(_clip(1.5)).shape == (tiny_cfg.mert_layers, tiny_cfg.mert_dim)
    assert mert.encode(_clip(0.001)).shape == (3, 32)  # 24 samples: padded to the 400-sample receptive field
    vit = ImageEncoder(tiny_cfg)
    assert vit.encode(np.full((40, 50, 3), 0.5, np.float32)).shape == (tiny_cfg.vit_tokens, tiny_cfg.vit_dim)
    vivit = VideoEncoder(tiny_cfg)
    frames = [np.full((30, 40, 3), 10 * i, np.uint8) for i in range(7)]
    assert vivit.encode(frames).shape == (tiny_cfg.vivit_tokens, tiny_cfg.vivit_dim)
    with pytest.raises(ValueError, match="NaN or inf"):
        mert.encode(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="only 1 frame"):
        vivit.encode(frames[:1])


def test_tiny_random_encoders_are_deterministic(tiny_cfg):
    x = _clip(1.0)
    torch.manual_seed(123)
    a = MusicEncoder(tiny_cfg).encode(x)
    torch.manual_seed(456)  # the global RNG state does not matter
    b = MusicEncoder(tiny_cfg).encode(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mert_windowing_all_vs_reference(tiny_cfg):
    cfg_all = tiny_cfg.replace(mert_window_s=1.0, mert_windows="all")
    cfg_ref = tiny_cfg.replace(mert_window_s=1.0, mert_windows="reference")
    enc_all, enc_ref = MusicEncoder(cfg_all), MusicEncoder(cfg_ref)
    first = _clip(1.0, seed=1)
    second = np.sin(2 * np.pi * 220 * np.arange(24000) / 24000).astype(np.float32)
    two_windows = np.concatenate([first, second])

    ref = enc_ref.encode(two_windows)
    both = enc_all.encode(two_windows)
    assert not torch.allclose(ref, both, atol=1e-4)
    torch.testing.assert_close(ref, enc_ref.encode(first))  # reference = the first window only
    # all = plain mean of the per-window results
    torch.testing.assert_close(both, (enc_ref.encode(first) + enc_ref.encode(second)) / 2, rtol=1e-5, atol=1e-5)
    # a tail shorter than 1 s is ignored; a clip shorter than one window is encoded identically
    torch.testing.assert_close(enc_all.encode(np.concatenate([two_windows, first[:12000]])), both)
    short = _clip(0.7, seed=2)
    torch.testing.assert_close(enc_all.encode(short), enc_ref.encode(short))


def _perturbed(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}


def test_mert_legacy_weight_norm_round_trip(tiny_cfg):
    x = _clip(1.0)
    source = MusicEncoder(tiny_cfg)
    new_sd = _perturbed(source.model)
    legacy = {legacy_weight_norm_name(k): v for k, v in new_sd.items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in legacy and "encoder.pos_conv_embed.conv.weight_v" in legacy
    assert set(legacy) == set(source.expected_shapes())

    pending = MusicEncoder(tiny_cfg)  # not built yet: weights kept and applied at build
    pending.load_state_dict(legacy)
    assert pending.loaded is False
    out_pending = pending.encode(x)

    built = MusicEncoder(tiny_cfg)
    before = built.encode(x)
    built.load_state_dict(legacy)  # already built: applied at once
    out_built = built.encode(x)

    torch.testing.assert_close(out_pending, out_built, rtol=0, atol=0)
    assert not torch.allclose(before, out_built, atol=1e-4)
    # the loaded weights are exactly the ones given (weight norm g/v restored)
    got = pending.model.state_dict()
    for k, v in new_sd.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    # a checkpoint saved by a transformers that already used parametrized weight norm loads too
    parametrized = MusicEncoder(tiny_cfg)
    parametrized.load_state_dict(new_sd)
    torch.testing.assert_close(parametrized.encode(x), out_pending, rtol=0, atol=0)


def test_encoder_state_dict_errors_name_the_key(tiny_cfg):
    enc = ImageEncoder(tiny_cfg)
    good = {k: torch.zeros(s) for k, s in enc.expected_shapes().items()}
    bad = dict(good)
    bad["encoder.layer.0.attention.attention.query.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"mis-shaped.*encoder\.layer\.0\.attention\.attention\.query\.weight"):
        enc.load_state_dict(bad)
    extra = dict(good, **{"encoder.layer.9.bogus.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected key\(s\): encoder\.layer\.9\.bogus\.weight"):
        enc.load_state_dict(extra)
    missing = dict(good)
    del missing["pooler.dense.bias"]
    with pytest.raises(ValueError, match=r"missing key\(s\): pooler\.dense\.bias"):
        enc.load_state_dict(missing)
    assert enc.loaded is False
    enc.load_state_dict(good)  # official names load
    assert torch.count_nonzero(enc.model.embeddings.cls_token) == 0


@pytest.mark.parametrize("holder", [ImageEncoder, VideoEncoder])
def test_vit_official_names_match_transformers_legacy_format(tiny_cfg, tmp_path, holder):
    """transformers' save_pretrained writes the old (4.35) names; ours must be exactly those."""
    from safetensors import safe_open

    enc = holder(tiny_cfg)
    enc.model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    ours = {k: tuple(v) for k, v in enc.expected_shapes().items()}
    assert ours == saved


def test_mert_from_local_dir_with_mert_config(tiny_cfg, tmp_path):
    """A MERT-style directory (MERT config.json keys, legacy weight-norm names) loads as HubertModel."""
    import json

    from safetensors.torch import save_file

    source = MusicEncoder(tiny_cfg)
    legacy = {legacy_weight_norm_name(k): v.contiguous() for k, v in _perturbed(source.model, 1).items()}
    save_file(legacy, str(tmp_path / "model.safetensors"))
    mert_json = dict(tiny_cfg.mert_config, architectures=["MERTModel"], model_type="mert_model",
                     attention_relax=32.0, deepnorm=False, feature_extractor_cqt=False,
                     feature_extractor_cqt_bins=336, sample_rate=24000,
                     auto_map={"AutoModel": "modeling_MERT.MERTModel"})
    (tmp_path / "config.json").write_text(json.dumps(mert_json))
    from_dir = MusicEncoder(tiny_cfg.replace(mert_path=str(tmp_path)))
    from_sd = MusicEncoder(tiny_cfg)
    from_sd.load_state_dict(legacy)
    x = _clip(1.0, seed=5)
    torch.testing.assert_close(from_dir.encode(x), from_sd.encode(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="CQT"):
        hubert_config_from_mert(dict(mert_json, feature_extractor_cqt=True))


def test_missing_weights_give_clear_error(tiny_cfg, tmp_path):
    enc = MusicEncoder(tiny_cfg.replace(mert_path="nobody/not-a-cached-model"))
    assert enc.loaded is False
    with pytest.raises(FileNotFoundError, match="not-a-cached-model.*local cache"):
        enc.encode(_clip(0.5))


def test_full_size_mert_expected_shapes_from_config_only(tiny_cfg, tmp_path):
    """MERT-v1-330M's config.json alone gives the official key shapes (meta device, nothing loaded)."""
    import json

    mert_330m = {
        "architectures": ["MERTModel"], "model_type": "mert_model", "attention_relax": 32.0, "deepnorm": False,
        "feature_extractor_cqt": False, "feature_extractor_cqt_bins": 336, "sample_rate": 24000,
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
        "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_bias": False, "feat_extract_norm": "group", "feat_proj_layer_norm": True,
        "do_stable_layer_norm": True, "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
        "layer_norm_eps": 1e-5, "mask_time_prob": 0.05,
    }
    (tmp_path / "config.json").write_text(json.dumps(mert_330m))
    enc = MusicEncoder(tiny_cfg.replace(mert_path=str(tmp_path), mert_layers=25, mert_dim=1024))
    shapes = enc.expected_shapes()
    assert enc.loaded is False
    assert shapes["encoder.pos_conv_embed.conv.weight_g"] == (1, 1, 128)
    assert shapes["encoder.pos_conv_embed.conv.weight_v"] == (1024, 64, 128)
    assert shapes["feature_extractor.conv_layers.0.conv.weight"] == (512, 1, 10)
    assert shapes["encoder.layers.23.feed_forward.output_dense.weight"] == (1024, 4096)
    assert "encoder.layers.24.layer_norm.weight" not in shapes
    assert 310e6 < sum(int(np.prod(s)) for s in shapes.values()) < 320e6  # ~315 M parameters
