"""Our LLaMA against transformers' LlamaForCausalLM, and the M2UGen extras (LoRA, bias, gates, adapters)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from m2ugen.config import M2UGenConfig
from m2ugen.llama import (
    Transformer,
    build_adapters,
    permute_hf_to_meta,
    permute_meta_to_hf,
)


def small_cfg(**kw):
    base = dict(name="t", dim=64, n_layers=3, n_heads=4, vocab_size=97, multiple_of=32, max_seq_len=64,
                lora_rank=4, query_layer=1, legacy_prefix_layers=2)
    base.update(kw)
    return M2UGenConfig(**base)


def hf_model(cfg):
    import transformers

    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        rms_norm_eps=cfg.norm_eps, max_position_embeddings=2 * cfg.max_seq_len, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    )
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(1)
    return transformers.LlamaForCausalLM(hf_cfg).eval()


def copy_hf_to_ours(hf, ours, cfg):
    m = hf.model
    with torch.no_grad():
        ours.tok_embeddings.weight.copy_(m.embed_tokens.weight)
        ours.norm.weight.copy_(m.norm.weight)
        ours.output.weight.copy_(hf.lm_head.weight)
        for hl, ol in zip(m.layers, ours.layers):
            a, f = hl.self_attn, hl.mlp
            ol.attention.wq.weight.copy_(permute_hf_to_meta(a.q_proj.weight, cfg.n_heads))
            ol.attention.wk.weight.copy_(permute_hf_to_meta(a.k_proj.weight, cfg.n_heads))
            ol.attention.wv.weight.copy_(a.v_proj.weight)
            ol.attention.wo.weight.copy_(a.o_proj.weight)
            ol.feed_forward.w1.weight.copy_(f.gate_proj.weight)
            ol.feed_forward.w3.weight.copy_(f.up_proj.weight)
            ol.feed_forward.w2.weight.copy_(f.down_proj.weight)
            ol.attention_norm.weight.copy_(hl.input_layernorm.weight)
            ol.ffn_norm.weight.copy_(hl.post_attention_layernorm.weight)


@pytest.fixture(scope="module")
def pair():
    cfg = small_cfg()
    hf = hf_model(cfg)
    torch.manual_seed(2)
    ours = Transformer(cfg).eval()
    copy_hf_to_ours(hf, ours, cfg)
    return cfg, hf, ours


def test_permutation_roundtrip():
    w = torch.randn(64, 10)
    assert torch.equal(permute_hf_to_meta(permute_meta_to_hf(w, 4), 4), w)
    assert not torch.equal(permute_meta_to_hf(w, 4), w)
    b = torch.randn(64)
    assert torch.equal(permute_meta_to_hf(permute_hf_to_meta(b, 4), 4), b)


def test_equals_hf_llama(pair):
    cfg, hf, ours = pair
    tokens = torch.randint(0, cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(tokens).logits
        logits, h = ours(tokens, logits_for="all")
    assert logits.shape == ref.shape == (2, 11, cfg.vocab_size)
    assert h.shape == (2, 11, cfg.dim)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)


def test_without_permutation_differs(pair):
    # guards the test above: the q/k permutation really matters
    cfg, hf, ours = pair
    tokens = torch.randint(0, cfg.vocab_size, (1, 9), generator=torch.Generator().manual_seed(3))
    bad = Transformer(cfg).eval()
    bad.load_state_dict(ours.state_dict())
    with torch.no_grad():
        for hl, bl in zip(hf.model.layers, bad.layers):
            bl.attention.wq.weight.copy_(hl.self_attn.q_proj.weight)
            bl.attention.wk.weight.copy_(hl.self_attn.k_proj.weight)
        diff = (bad(tokens, logits_for="all")[0] - hf(tokens).logits).abs().max()
    assert diff > 1e-3


def test_kv_cache_matches_full_forward(pair):
    cfg, _, ours = pair
    tokens = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full, _ = ours(tokens, logits_for="all")
        ours.setup_cache(2, 12)
        try:
            first, _ = ours(tokens[:, :8], start_pos=0, logits_for="all")
            steps = [ours(tokens[:, i:i + 1], start_pos=i)[0] for i in range(8, 12)]
        finally:
            ours.clear_cache()
    torch.testing.assert_close(first, full[:, :8], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 8:], atol=1e-5, rtol=1e-5)


def test_left_padding_equals_alone(pair):
    cfg, _, ours = pair
    row = torch.randint(3, cfg.vocab_size, (1, 6), generator=torch.Generator().manual_seed(5))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), row], 1)
    valid = torch.tensor([[False] * 3 + [True] * 6])
    with torch.no_grad():
        alone, _ = ours(row, logits_for="all")
        pad, _ = ours(padded, key_valid=valid, logits_for="all")
    torch.testing.assert_close(pad[:, 3:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["lora", "bias", "gate"])
def test_tuning_params_change_output(which):
    cfg = small_cfg()
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (1, 7), generator=torch.Generator().manual_seed(6))
    adapters = build_adapters(cfg, torch.randn(cfg.n_prefix, cfg.dim))
    with torch.no_grad():
        before, _ = model(tokens, adapters=adapters, logits_for="all")
        layer = model.layers[-1]
        if which == "lora":
            layer.attention.lora_wq_l2.weight.normal_()
            layer.feed_forward.lora_w2_l2.weight.normal_()
        elif which == "bias":
            layer.attention.wo.bias.normal_()
            layer.feed_forward.w1.bias.normal_()
        else:
            layer.attention.gate.fill_(0.5)
        after, _ = model(tokens, adapters=adapters, logits_for="all")
    assert (after - before).abs().max() > 1e-4


def test_zero_init_is_plain_llama():
    cfg = small_cfg()
    model = Transformer(cfg)
    for layer in model.layers:
        assert torch.count_nonzero(layer.attention.gate) == 0
        assert torch.count_nonzero(layer.attention.lora_wv_l2.weight) == 0
        assert torch.count_nonzero(layer.feed_forward.w2.bias) == 0
        assert layer.attention.wq.bias is not None and layer.attention.wk.bias is None
    assert not any("freqs" in k for k in model.state_dict())


def _layers_affected(cfg, adapters_a, adapters_b):
    """Indices of layers whose output changes between two adapter lists (gates set non-zero)."""
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.gate.fill_(0.7)
    tokens = torch.randint(0, cfg.vocab_size, (2, 5), generator=torch.Generator().manual_seed(7))
    outs = []
    for adapters in (adapters_a, adapters_b):
        hs = []
        hooks = [l.register_forward_hook(lambda m, i, o: hs.append(o.clone())) for l in model.layers]
        with torch.no_grad():
            model(tokens, adapters=adapters)
        for hk in hooks:
            hk.remove()
        outs.append(hs)
    return [i for i, (a, b) in enumerate(zip(*outs)) if (a - b).abs().max() > 1e-6]


def test_adapter_layout_per_modality():
    cfg = small_cfg(n_layers=5, query_layer=1)  # layers 2, 3, 4 get audio, image, video
    pq = torch.randn(cfg.n_prefix, cfg.dim)
    audio = torch.randn(2, 1, cfg.dim)
    video = torch.randn(2, 1, cfg.dim)
    base = build_adapters(cfg, pq)
    assert [a is None for a in base] == [True, True, False, False, False]
    assert base[2].shape == (1, 1, cfg.dim)  # prefix-only: broadcast over the batch
    with_audio = build_adapters(cfg, pq, audio_feats=audio)
    torch.testing.assert_close(with_audio[2], audio + pq[0])
    torch.testing.assert_close(with_audio[3], pq[1].view(1, 1, -1))
    # audio first changes layer 2 (and everything above it through the residual stream)
    assert _layers_affected(cfg, base, with_audio)[0] == 2
    assert _layers_affected(cfg, base, build_adapters(cfg, pq, video_feats=video)) == [4]


def test_adapter_layout_legacy():
    cfg = small_cfg(n_layers=4, legacy_prefix=True, legacy_prefix_layers=2)
    pq = torch.randn(cfg.n_prefix, cfg.dim)
    audio, image = torch.randn(1, 1, cfg.dim), torch.randn(1, 1, cfg.dim)
    ad = build_adapters(cfg, pq, audio_feats=audio, image_feats=image)
    assert [a is None for a in ad] == [True, True, False, False]
    torch.testing.assert_close(ad[3], audio + image + pq[1])
    affected = _layers_affected(cfg, build_adapters(cfg, pq), ad)
    assert affected == [2, 3]


def test_multi_token_adapter_branch():
    cfg = small_cfg()
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.gate.fill_(0.3)
    tokens = torch.randint(0, cfg.vocab_size, (1, 4))
    adapters = [None, None, torch.randn(1, 3, cfg.dim)]
    with torch.no_grad():
        a, _ = model(tokens, adapters=adapters)
        b, _ = model(tokens)
    assert a.shape == (cfg.vocab_size,) or a.shape == (1, cfg.vocab_size)
    assert (a - b).abs().max() > 1e-5


def test_bad_inputs():
    cfg = small_cfg()
    model = Transformer(cfg)
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="start_pos"):
        model(torch.zeros(1, 2, dtype=torch.long), start_pos=3)
    with pytest.raises(ValueError, match="modality features"):
        build_adapters(cfg, torch.randn(cfg.n_prefix, cfg.dim), audio_feats=torch.randn(1, cfg.dim))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_with_cache(pair, dtype):
    cfg, _, ours = pair
    half = Transformer(cfg).eval()
    half.load_state_dict(ours.state_dict())
    half.to(dtype)
    with torch.no_grad():
        for layer in half.layers:
            layer.attention.gate.fill_(0.2)
    adapters = build_adapters(cfg, torch.randn(cfg.n_prefix, cfg.dim), audio_feats=torch.randn(1, 1, cfg.dim))
    tokens = torch.randint(0, cfg.vocab_size, (1, 10), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        full, h = half(tokens, adapters=adapters, logits_for="all")
        half.setup_cache(1, 10)
        try:
            assert half.layers[0].attention.cache.k.dtype == dtype
            half(tokens[:, :9], start_pos=0, adapters=adapters)
            last, _ = half(tokens[:, 9:], start_pos=9, adapters=adapters)
        finally:
            half.clear_cache()
    assert full.dtype == torch.float32 and h.dtype == dtype
    assert torch.isfinite(full).all()
    torch.testing.assert_close(last, full[:, -1], atol=0.1, rtol=0.05)


def test_kv_cache_is_sized_for_the_request_and_grows_with_use():
    """A short request holds one KV_BLOCK of positions, not max_seq_len (LLaMA-2 7B bf16: 0.5 MiB per
    position and row); the kept cache serves later requests that fit and grows for those that do not."""
    from m2ugen.llama import KV_BLOCK

    cfg = small_cfg(max_seq_len=4 * KV_BLOCK)
    model = Transformer(cfg).eval()
    ids = torch.randint(1, cfg.vocab_size, (1, 9))

    def prefill(batch: int, max_len: int | None) -> tuple[int, int, int]:
        model.setup_cache(batch, max_len)
        try:
            logits, _ = model(ids.expand(batch, -1), start_pos=0)
            kv = model._kv_store[0].k
            return kv.shape[0], kv.shape[1], kv.data_ptr()
        finally:
            model.clear_cache()

    with torch.no_grad():
        full, _ = model(ids)
        rows, cols, ptr = prefill(1, 60)
        assert (rows, cols) == (1, KV_BLOCK)
        assert prefill(1, KV_BLOCK) == (1, KV_BLOCK, ptr)  # fits: reused, not reallocated
        assert prefill(1, KV_BLOCK + 1)[:2] == (1, 2 * KV_BLOCK)  # more positions: grows by blocks
        assert prefill(2, 10)[:2] == (2, 2 * KV_BLOCK)  # more rows: grows, keeps its positions
        assert prefill(1, None)[:2] == (2, cfg.max_seq_len)  # no length given: the whole context
        model.setup_cache(1, 60)
        logits, _ = model(ids, start_pos=0)
        model.release_cache()
    torch.testing.assert_close(logits, full)
