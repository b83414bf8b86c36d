"""Weights: official checkpoints (7B key names on the meta device, tiny round trips), conversion,
LLaMA-2 base weights in Meta and HF format."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json

import pytest
import torch

from m2ugen import checkpoint as ck
from m2ugen.config import M2UGenConfig
from m2ugen.llama import Transformer, permute_meta_to_hf


# ----------------------------------------------------------------------------------------------
# LLaMA base weights (a bare Transformer is enough)


def llama_cfg(**kw):
    base = dict(name="t", dim=64, n_layers=3, n_heads=4, vocab_size=100 + 8, multiple_of=32, max_seq_len=64,
                lora_rank=4)
    base.update(kw)
    return M2UGenConfig(**base)


def random_llama(cfg, seed):
    torch.manual_seed(seed)
    m = Transformer(cfg).eval()
    with torch.no_grad():  # non-trivial norms so a wrong mapping shows
        for n, p in m.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return m


def meta_base_sd(m, n_base):
    """The base tensors of ``m`` under Meta's names, vocabulary cut to ``n_base`` rows."""
    sd = {n: t.detach().clone() for n, t in m.state_dict().items() if ck._is_base_param(n)}
    sd["tok_embeddings.weight"] = sd["tok_embeddings.weight"][:n_base].clone()
    sd["output.weight"] = sd["output.weight"][:n_base].clone()
    sd["rope.freqs"] = torch.zeros(8)  # present in Meta files, must be ignored
    return sd


def params_json(cfg, n_base):
    return {"dim": cfg.dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "multiple_of": cfg.multiple_of,
            "norm_eps": cfg.norm_eps, "vocab_size": n_base}


def compare_base_logits(src, dst, n_base):
    tokens = torch.randint(0, n_base, (2, 9))
    a, _ = src(tokens, logits_for="all")
    b, _ = dst(tokens, logits_for="all")
    torch.testing.assert_close(b[..., :n_base], a[..., :n_base], rtol=0, atol=1e-5)


def test_meta_format_single_shard(tmp_path):
    cfg = llama_cfg()
    n_base = cfg.vocab_size - 8
    src = random_llama(cfg, 0)
    torch.save(meta_base_sd(src, n_base), tmp_path / "consolidated.00.pth")
    (tmp_path / "params.json").write_text(json.dumps(params_json(cfg, n_base)))
    dst = random_llama(cfg, 1)
    ck.load_llama(dst, tmp_path)
    compare_base_logits(src, dst, n_base)
    assert torch.equal(dst.tok_embeddings.weight[n_base:], torch.ones(8, cfg.dim))  # [AUD] rows := 1.0


def test_meta_format_two_shards_on_meta_device(tmp_path):
    """Tensor-parallel shards joined with the official key_to_dim rules, into a meta-device model."""
    cfg = llama_cfg()
    n_base = cfg.vocab_size - 8
    src = random_llama(cfg, 0)
    full = meta_base_sd(src, n_base)
    shards = [{}, {}]
    for name, t in full.items():
        kind = name.split(".")[-2]
        if kind in ck._CAT_DIM:
            for s, part in zip(shards, t.chunk(2, dim=ck._CAT_DIM[kind])):
                s[name] = part.clone()
        else:
            for s in shards:
                s[name] = t.clone()
    d = tmp_path / "7B"
    d.mkdir()
    for i, s in enumerate(shards):
        torch.save(s, d / f"consolidated.{i:02d}.pth")
    (d / "params.json").write_text(json.dumps(params_json(cfg, n_base)))
    with torch.device("meta"):
        dst = Transformer(cfg)
    ck.load_llama(dst, tmp_path)  # finds 7B/params.json
    # gates / LoRA / biases are not base weights: they stay on meta
    assert dst.layers[0].attention.gate.is_meta and not dst.layers[0].attention.wq.weight.is_meta
    for layer in dst.layers:
        layer.attention.gate = torch.nn.Parameter(torch.zeros_like(layer.attention.gate, device="cpu"))
    for n, p in list(dst.named_parameters()):
        if p.is_meta:
            ck._put(dst, n, torch.zeros(p.shape))
    compare_base_logits(src, dst, n_base)


def test_meta_format_wrong_dims_named(tmp_path):
    cfg = llama_cfg()
    src = random_llama(cfg, 0)
    torch.save(meta_base_sd(src, 100), tmp_path / "consolidated.00.pth")
    bad = params_json(cfg, 100) | {"n_layers": 5}
    (tmp_path / "params.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="n_layers: file 5 vs config 3"):
        ck.load_llama(random_llama(cfg, 1), tmp_path)


def test_hf_format_undoes_rotary_permutation(tmp_path):
    import transformers

    cfg = llama_cfg()
    n_base = cfg.vocab_size - 8
    src = random_llama(cfg, 0)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=n_base, hidden_size=cfg.dim, intermediate_size=cfg.ffn_hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        rms_norm_eps=cfg.norm_eps, max_position_embeddings=2 * cfg.max_seq_len, tie_word_embeddings=False,
    )
    hf = transformers.LlamaForCausalLM(hf_cfg)
    m = hf.model
    with torch.no_grad():  # share the weights of ``src``
        m.embed_tokens.weight.copy_(src.tok_embeddings.weight[:n_base])
        hf.lm_head.weight.copy_(src.output.weight[:n_base])
        m.norm.weight.copy_(src.norm.weight)
        for hl, ol in zip(m.layers, src.layers):
            hl.self_attn.q_proj.weight.copy_(permute_meta_to_hf(ol.attention.wq.weight, cfg.n_heads))
            hl.self_attn.k_proj.weight.copy_(permute_meta_to_hf(ol.attention.wk.weight, cfg.n_heads))
            hl.self_attn.v_proj.weight.copy_(ol.attention.wv.weight)
            hl.self_attn.o_proj.weight.copy_(ol.attention.wo.weight)
            hl.mlp.gate_proj.weight.copy_(ol.feed_forward.w1.weight)
            hl.mlp.up_proj.weight.copy_(ol.feed_forward.w3.weight)
            hl.mlp.down_proj.weight.copy_(ol.feed_forward.w2.weight)
            hl.input_layernorm.weight.copy_(ol.attention_norm.weight)
            hl.post_attention_layernorm.weight.copy_(ol.ffn_norm.weight)
    hf.save_pretrained(tmp_path)
    assert list(tmp_path.glob("model*.safetensors"))
    dst = random_llama(cfg, 1)
    ck.load_llama(dst, tmp_path)
    compare_base_logits(src, dst, n_base)
    assert torch.equal(dst.tok_embeddings.weight[n_base:], torch.ones(8, cfg.dim))


# ----------------------------------------------------------------------------------------------
# names and file reading


def test_name_mapping_round_trip():
    cases = {
        "mu_mert_agg.weight": ("", "mu_mert.agg.weight"),
        "iu_vit_f2_3.weight": ("", "iu_vit.f2_3.weight"),
        "iu_vivit_norm_1.weight": ("", "iu_vivit.norm_1.weight"),
        "llama.layers.3.attention.gate": ("", "llama.layers.3.attention.gate"),
        "mert_model.encoder.layers.0.attention.k_proj.weight": ("music_encoder", "encoder.layers.0.attention.k_proj.weight"),
        "vivit_model.pooler.dense.weight": ("video_encoder", "pooler.dense.weight"),
        "generation_model.enc_to_dec_proj.weight": ("decoder", "enc_to_dec_proj.weight"),
        "something.else": (None, "something.else"),
    }
    for official, want in cases.items():
        assert ck.to_ours(official) == want
        if want[0] is not None:
            assert ck.to_official(want[1], want[0]) == official


def test_read_official_checkpoint_strips_only_leading_module(tmp_path):
    sd = {"module.llama.norm.weight": torch.ones(4), "prefix_query.weight": torch.zeros(2, 4),
          "module.output_projector.module.x": torch.ones(1)}
    torch.save({"model": sd, "optimizer": {"state": {}}, "epoch": 3, "scaler": {"scale": 1.0},
                "args": argparse.Namespace(lr=1e-4, music_decoder="musicgen")}, tmp_path / "checkpoint.pth")
    out = ck.read_official_checkpoint(tmp_path / "checkpoint.pth")
    assert sorted(out) == ["llama.norm.weight", "output_projector.module.x", "prefix_query.weight"]
    torch.save(sd, tmp_path / "bare.pth")  # a bare state dict is accepted too
    assert sorted(ck.read_official_checkpoint(tmp_path / "bare.pth")) == sorted(out)


def test_read_official_checkpoint_refuses_unknown_pickled_objects(tmp_path):
    import fractions

    torch.save({"model": {"a": torch.ones(1)}, "args": fractions.Fraction(1, 3)}, tmp_path / "c.pth")
    with pytest.raises(ValueError, match="trust_pickle"):
        ck.read_official_checkpoint(tmp_path / "c.pth")
    (tmp_path / "old.pth").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a torch zip checkpoint"):
        ck.read_official_checkpoint(tmp_path / "old.pth")
