"""Weights: official checkpoints (7B key names on the meta device, tiny round trips), conversion,
LLaMA-2 base weights in Meta and HF format."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json

import pytest
import torch

from m2ugen import checkpoint as ck
from m2ugen.checkpoint import assign, llama_base, pretrained
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
    sd = {n: t.detach().clone() for n, t in m.state_dict().items() if ck.is_base_param(n)}
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
        if kind in llama_base.SHARD_CAT_DIM:
            for s, part in zip(shards, t.chunk(2, dim=llama_base.SHARD_CAT_DIM[kind])):
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
            assign.put(dst, n, torch.zeros(p.shape))
    compare_base_logits(src, dst, n_base)


def test_meta_format_wrong_dims_named(tmp_path):
    cfg = llama_cfg()
    src = random_llama(cfg, 0)
    torch.save(meta_base_sd(src, 100), tmp_path / "consolidated.00.pth")
    bad = params_json(cfg, 100) | {"n_layers": 5}
    (tmp_path / "params.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="n_layers: file 5 vs config 3"):
        ck.load_llama(random_llama(cfg, 1), tmp_path)


@pytest.mark.parametrize("safetensors", [True, False])
def test_hf_format_undoes_rotary_permutation(tmp_path, safetensors):
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
    if not safetensors:  # the older pytorch_model.bin layout (transformers 5 writes safetensors only)
        (tmp_path / "model.safetensors").unlink()
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert bool(list(tmp_path.glob("model*.safetensors"))) == safetensors
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


class _Payload:
    """A pickled object that creates ``marker`` when it is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_read_official_checkpoint_refuses_unknown_pickled_objects(tmp_path):
    import fractions

    torch.save({"model": {"a": torch.ones(1)}, "args": fractions.Fraction(1, 3)}, tmp_path / "c.pth")
    with pytest.raises(ValueError, match="never fully unpickled"):
        ck.read_official_checkpoint(tmp_path / "c.pth")
    torch.save({"model": {"a": torch.ones(1)}, "args": _Payload(tmp_path / "pwned")}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused"):
        ck.read_official_checkpoint(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()  # nothing from the file ran
    (tmp_path / "old.pth").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a torch zip checkpoint"):
        ck.read_official_checkpoint(tmp_path / "old.pth")


# ----------------------------------------------------------------------------------------------
# 7B key names and shapes, written from the official spec table (reference §2.4), on the meta device

FP16, FP32 = torch.float16, torch.float32


def official_7b_m2ugen_keys(variant):
    """{official name: (shape, dtype)} for everything but the encoders / MusicGen sub-models."""
    d, ffn, r, V = 4096, 11008, 16, 32008
    keys = {"llama.tok_embeddings.weight": ([V, d], FP32), "llama.norm.weight": ([d], FP32),
            "llama.output.weight": ([V, d], FP16), "prefix_query.weight": ([18, d], FP32)}
    for n in range(32):
        a, f = f"llama.layers.{n}.attention.", f"llama.layers.{n}.feed_forward."
        for w in ("wq", "wk", "wv", "wo"):
            keys[a + w + ".weight"] = ([d, d], FP16)
        keys[a + "wq.bias"] = keys[a + "wo.bias"] = ([d], FP32)
        for w in "qkvo":
            keys[a + f"lora_w{w}_l1.weight"] = ([r, d], FP32)
            keys[a + f"lora_w{w}_l2.weight"] = ([d, r], FP32)
        keys[a + "gate"] = ([1, 32, 1, 1], FP16)
        keys[f + "w1.weight"] = keys[f + "w3.weight"] = ([ffn, d], FP16)
        keys[f + "w2.weight"] = ([d, ffn], FP16)
        keys[f + "w1.bias"] = keys[f + "w3.bias"] = ([ffn], FP32)
        keys[f + "w2.bias"] = ([d], FP32)
        keys[f + "lora_w1_l1.weight"] = keys[f + "lora_w3_l1.weight"] = ([r, d], FP32)
        keys[f + "lora_w1_l2.weight"] = keys[f + "lora_w3_l2.weight"] = ([ffn, r], FP32)
        keys[f + "lora_w2_l1.weight"] = ([r, ffn], FP32)
        keys[f + "lora_w2_l2.weight"] = ([d, r], FP32)
        keys[f"llama.layers.{n}.attention_norm.weight"] = keys[f"llama.layers.{n}.ffn_norm.weight"] = ([d], FP32)
    for prefix, tokens, width in (("mu_mert", 25, 1024), ("iu_vit", 197, 768), ("iu_vivit", 3137, 768)):
        keys[f"{prefix}_agg.weight"] = ([1, tokens, 1], FP32)
        keys[f"{prefix}_agg.bias"] = ([1], FP32)
        keys[f"{prefix}_proj.weight"] = ([d, width], FP32)
        keys[f"{prefix}_proj.bias"] = ([d], FP32)
        for k in (1, 2, 3):
            keys[f"{prefix}_norm_{k}.weight"] = ([d], FP32)
            for j in (1, 2, 3):
                keys[f"{prefix}_f{j}_{k}.weight"] = ([d, d], FP32)
    p = "output_projector."
    keys[p + "fc.weight"], keys[p + "fc.bias"] = ([512, d], FP32), ([512], FP32)
    attn = {"in_proj_weight": [1536, 512], "in_proj_bias": [1536], "out_proj.weight": [512, 512], "out_proj.bias": [512]}
    ff = {"linear1.weight": [2048, 512], "linear1.bias": [2048], "linear2.weight": [512, 2048], "linear2.bias": [512]}
    for side, attns, norms in (("encoder", ["self_attn"], [1, 2]), ("decoder", ["self_attn", "multihead_attn"], [1, 2, 3])):
        for m in range(4):
            lp = f"{p}tfm.{side}.layers.{m}."
            for at in attns:
                for k, s in attn.items():
                    keys[f"{lp}{at}.{k}"] = (s, FP32)
            for k, s in ff.items():
                keys[lp + k] = (s, FP32)
            for i in norms:
                keys[f"{lp}norm{i}.weight"] = keys[f"{lp}norm{i}.bias"] = ([512], FP32)
        keys[f"{p}tfm.{side}.norm.weight"] = keys[f"{p}tfm.{side}.norm.bias"] = ([512], FP32)
    out_rows, queries = (768, 128) if variant == "musicgen" else (137216, 1)
    keys[p + "model.weight"], keys[p + "model.bias"] = ([out_rows, 512], FP32), ([out_rows], FP32)
    keys[p + "query_embs"] = ([1, queries, 512], FP32)
    return keys


def meta_7b_model(preset):
    from m2ugen.model import M2UGen

    cfg = ck.offline_config(preset)
    with torch.device("meta"):
        return M2UGen.from_config(cfg, device="meta")


@pytest.mark.parametrize("preset,prefix_rows", [("musicgen-medium", 18), ("audioldm2", 20)])
def test_official_7b_keys_load_on_meta_device(preset, prefix_rows):
    """Every official key, no missing / unexpected ones; 20 prefix rows select the legacy layout."""
    model = meta_7b_model(preset)
    spelled = official_7b_m2ugen_keys("audioldm2" if preset == "audioldm2" else "musicgen")
    spelled["prefix_query.weight"] = ([prefix_rows, 4096], FP32)
    sd = {k: torch.empty(s, dtype=dt, device="meta") for k, (s, dt) in spelled.items()}
    holder_keys = 0
    for prefix, holder in ck.HOLDER_PREFIXES.items():
        for name, shape in getattr(model, holder).expected_shapes().items():
            sd[prefix + name] = torch.empty(tuple(shape), dtype=FP32, device="meta")
            holder_keys += 1
    # a few official sub-model names and shapes, spelled out
    must = {"mert_model.feature_projection.projection.weight": [1024, 512],
            "mert_model.encoder.pos_conv_embed.conv.weight_g": [1, 1, 128],
            "vit_model.pooler.dense.weight": [768, 768],
            "vit_model.embeddings.position_embeddings": [1, 197, 768],
            "vivit_model.embeddings.position_embeddings": [1, 3137, 768]}
    if preset == "musicgen-medium":
        must["generation_model.enc_to_dec_proj.weight"] = [1536, 768]
        must["generation_model.decoder.model.decoder.layers.47.fc1.weight"] = [6144, 1536]
    else:
        assert not any(k.startswith("generation_model.") for k in sd)  # the pipeline is no nn.Module
    for k, s in must.items():
        assert list(sd[k].shape) == s, k
    sd = {"module." + k: v for k, v in sd.items()}  # DDP prefix, stripped by the loader
    model.load_reference_state_dict(sd)
    assert model.cfg.legacy_prefix == (prefix_rows == 20)
    assert model.prefix_query.weight.shape == (prefix_rows, 4096)
    assert model.llama.layers[31].attention.wq.weight.shape == (4096, 4096)
    assert ck.guess_preset({k.removeprefix("module."): v for k, v in sd.items()}) == preset
    assert holder_keys > 300


def test_legacy_prefix_rows_7b_detected():
    cfg = ck.offline_config("musicgen-medium")
    assert ck.detect_prefix_layout(cfg, 20) is True
    assert ck.detect_prefix_layout(cfg, 18) is False
    assert ck.detect_prefix_layout(cfg, 19) is None
    shapes = {"llama.tok_embeddings.weight": (32008, 4096), "output_projector.model.weight": (768, 512),
              "generation_model.enc_to_dec_proj.weight": (1024, 768)}
    assert ck.guess_preset(shapes) == "musicgen-small"
    del shapes["generation_model.enc_to_dec_proj.weight"]  # small and medium differ only in the decoder
    assert ck.guess_preset(shapes) is None


# ----------------------------------------------------------------------------------------------
# tiny model: official-format checkpoint.pth round trip, conversion, errors


def tiny_model(seed=0, **cfg_changes):
    """A tiny M2UGen whose gates, LoRA and biases are non-zero (so every tensor matters) and whose
    frozen LLaMA matrices hold fp16-representable values (as in the official files)."""
    from m2ugen.model import M2UGen

    torch.manual_seed(seed)
    model = M2UGen.from_config(M2UGenConfig.preset("tiny").replace(**cfg_changes))
    with torch.no_grad():
        for name, p in model.llama.named_parameters():
            if not ck.is_base_param(name):
                p.normal_(0, 0.05)
            if ck.is_base_param(name) or name.endswith("gate"):  # stored as fp16 in official files
                p.copy_(p.half().float())
    return model


def official_state_dict(model, frozen_dtype=torch.float16):
    """The model as the official code would save it: official names, frozen LLaMA in fp16."""
    sd = {}
    for name, t in model.state_dict().items():
        official = ck.to_official(name)
        frozen = official.startswith("llama.") and not ck.is_trained_key(official)
        sd[official] = t.detach().to(frozen_dtype if frozen else torch.float32).clone()
    gen = torch.Generator().manual_seed(7)
    for prefix, holder in ck.HOLDER_PREFIXES.items():
        for name, shape in getattr(model, holder).expected_shapes().items():
            sd[prefix + name] = torch.randn(tuple(shape), generator=gen) * 0.02
    for k in [k for k in sd if k.endswith(".attention.gate")]:
        sd[k] = sd[k].half()  # official gates are fp16
    sd["llama.norm.weight"] = sd["llama.norm.weight"].bfloat16()  # the medium file also holds bf16 storages
    return sd


def save_official(sd, path):
    torch.save({"model": {"module." + k: v for k, v in sd.items()},
                "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]},
                "epoch": 2, "scaler": {"scale": 65536.0, "growth_tracker": 0},
                "args": argparse.Namespace(music_decoder="musicgen", lr=1e-4, max_words=1024)}, path)


def tokens_for(model, n=11):
    return torch.randint(0, model.cfg.vocab_size, (2, n), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    model = tiny_model()
    sd = official_state_dict(model)
    save_official(sd, d / "checkpoint.pth")
    return model, sd, d


def test_official_checkpoint_round_trip(tiny):
    from m2ugen.model import M2UGen

    model, sd, d = tiny
    ids = tokens_for(model)
    want = model.next_token_logits(ids)
    loaded = M2UGen.from_pretrained(d / "checkpoint.pth", dtype="float32")
    assert loaded.cfg.name == "tiny" and not loaded.cfg.legacy_prefix
    assert torch.equal(loaded.next_token_logits(ids), want)
    assert torch.equal(loaded.llama.layers[1].attention.gate, model.llama.layers[1].attention.gate.half().float())
    # the holders received their official sub-state dicts
    for prefix, holder in ck.HOLDER_PREFIXES.items():
        assert getattr(loaded, holder).expected_shapes()


def test_half_weights_stay_half_by_default(tiny):
    from m2ugen.model import M2UGen

    _, _, d = tiny
    loaded = M2UGen.from_pretrained(d)  # a directory holding checkpoint.pth
    assert loaded.llama.layers[0].attention.wq.weight.dtype == torch.float16
    assert loaded.mu_mert.proj.weight.dtype == torch.float32  # bridges stay fp32 (official)


def test_mismatches_are_listed_in_one_error(tiny):
    model, sd, _ = tiny
    bad = dict(sd)
    bad["llama.layers.0.attention.wq.bias"] = torch.zeros(5)
    bad["llama.layers.0.attention.not_a_thing"] = torch.zeros(1)
    bad["totally.unknown"] = torch.zeros(1)
    del bad["iu_vit_proj.bias"]
    del bad["mert_model.feature_projection.projection.weight"]
    fresh = tiny_model(seed=1)
    with pytest.raises(ValueError) as e:
        fresh.load_reference_state_dict(bad)
    msg = str(e.value)
    for name in ("llama.layers.0.attention.wq.bias: checkpoint [5] vs model [64]", "llama.layers.0.attention.not_a_thing",
                 "totally.unknown", "iu_vit_proj.bias", "mert_model.feature_projection.projection.weight"):
        assert name in msg, name
    assert "2 missing" in msg and "2 unexpected" in msg and "1 mis-shaped" in msg
    # nothing was loaded: the fresh model still differs from the source
    lora = "llama.layers.1.attention.lora_wq_l2.weight"
    assert not torch.equal(fresh.state_dict()[lora], model.state_dict()[lora])
    # strict=False tolerates missing / unexpected keys, never a wrong shape
    del bad["llama.layers.0.attention.wq.bias"]
    fresh.load_reference_state_dict(bad, strict=False)
    assert torch.equal(fresh.state_dict()[lora], model.state_dict()[lora])


def test_legacy_prefix_layout_detected_tiny():
    """Tiny analogue of the [20, 4096] legacy file: cfg.legacy_prefix_layers rows."""
    src = tiny_model(legacy_prefix_layers=4, legacy_prefix=True)
    assert src.prefix_query.weight.shape[0] == 4
    sd = official_state_dict(src, frozen_dtype=torch.float32)
    dst = tiny_model(seed=1, legacy_prefix_layers=4)
    assert dst.prefix_query.weight.shape[0] == 3 and not dst.cfg.legacy_prefix
    dst.load_reference_state_dict(sd)
    assert dst.cfg.legacy_prefix and dst.prefix_query.weight.shape[0] == 4
    ids = tokens_for(src)
    assert torch.equal(dst.next_token_logits(ids), src.next_token_logits(ids))


def test_convert_then_load_with_meta_llama(tiny, tmp_path):
    from m2ugen.model import M2UGen

    model, sd, d = tiny
    out = tmp_path / "m2ugen.safetensors"
    stats = ck.convert_checkpoint(d / "checkpoint.pth", out, progress=False)
    assert stats["preset"] == "tiny" and stats["prefix_layout"] == "per-modality"
    conv, meta = ck.read_safetensors(out)
    assert ck.is_converted(meta) and meta["preset"] == "tiny"
    # only trained tensors (+ the [AUD] output rows), dtypes as stored
    assert all(ck.is_trained_key(k) for k in conv if k != ck.AUD_ROWS_KEY)
    assert not any(k.endswith(("wq.weight", "w2.weight")) or k.startswith("mert_model.") for k in conv)
    assert "llama.output.weight" not in conv and conv[ck.AUD_ROWS_KEY].shape == (8, 64)
    assert conv["llama.layers.0.attention.gate"].dtype == torch.float16  # fp16 stayed fp16
    assert conv[ck.AUD_ROWS_KEY].dtype == torch.float16
    assert conv["llama.tok_embeddings.weight"].dtype == torch.float32
    assert conv["llama.norm.weight"].dtype == torch.bfloat16
    assert stats["kept_tensors"] == len(conv) and stats["dropped_tensors"] > 0

    # base LLaMA weights in Meta format (vocabulary without the 8 [AUD] rows)
    llama_dir = tmp_path / "llama"
    llama_dir.mkdir()
    n_base = model.cfg.vocab_size - 8
    base = {k.removeprefix("llama."): v.half() for k, v in sd.items()
            if k.startswith("llama.") and ck.is_base_param(k.removeprefix("llama."))}
    base["output.weight"] = base["output.weight"][:n_base].clone()
    base["tok_embeddings.weight"] = torch.randn(n_base, 64).half()  # replaced by the converted file's
    torch.save(base, llama_dir / "consolidated.00.pth")
    (llama_dir / "params.json").write_text(json.dumps(params_json(model.cfg, n_base)))

    spec = tmp_path / "weights.json"
    spec.write_text(json.dumps({"preset": "tiny", "checkpoint": "m2ugen.safetensors", "llama_dir": "llama",
                                "dtype": "float32"}))
    loaded = M2UGen.from_pretrained(spec)
    ids = tokens_for(model)
    assert torch.equal(loaded.next_token_logits(ids), model.next_token_logits(ids))
    with pytest.raises(ValueError, match="llama_dir"):
        M2UGen.from_pretrained(out)

    # no M2UGen checkpoint: a fresh model (official init) on the base weights
    fresh = M2UGen.from_pretrained(preset="tiny", llama_dir=llama_dir, dtype="float32")
    attn = fresh.llama.layers[2].attention
    assert torch.equal(attn.wk.weight, model.llama.layers[2].attention.wk.weight)
    assert not attn.lora_wq_l2.weight.any() and not attn.wq.bias.any()
    # gates follow cfg.gate_init: the tiny preset's seeded random ones (the real presets': zero)
    assert fresh.cfg.gate_init == "random" and attn.gate.any()
    assert torch.equal(attn.gate, M2UGen.from_config(fresh.cfg, tokenizer=fresh.tokenizer).llama.layers[2].attention.gate)
    assert torch.equal(fresh.llama.tok_embeddings.weight[n_base:], torch.ones(8, 64))


def test_weights_spec_discovery(tmp_path, monkeypatch):
    monkeypatch.delenv("M2UGEN_WEIGHTS", raising=False)
    monkeypatch.setenv("M2UGEN_CONFIG_DIR", str(tmp_path))
    assert ck.find_weights() is None
    (tmp_path / "weights.json").write_text(json.dumps({"checkpoint": "sub/ckpt.pth", "mert_path": "m-a-p/MERT-v1-330M"}))
    assert ck.find_weights() == str(tmp_path / "weights.json")
    spec = ck.resolve_source(ck.find_weights())
    assert spec["checkpoint"] == str(tmp_path / "sub" / "ckpt.pth")  # relative to the spec file
    assert spec["mert_path"] == "m-a-p/MERT-v1-330M"  # Hub ids stay ids
    monkeypatch.setenv("M2UGEN_WEIGHTS", "/elsewhere/weights.json")
    assert ck.find_weights() == "/elsewhere/weights.json"
    (tmp_path / "bad.json").write_text(json.dumps({"checkpoint": "x", "colour": "red"}))
    with pytest.raises(ValueError, match="unknown key.*colour"):
        ck.resolve_source(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="weights not found"):
        ck.resolve_source(tmp_path / "nope.pth")


def test_file_pages_release_keeps_values_and_spares_memory_tensors(tmp_path):
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    src = torch.randn(8 << 20)  # 32 MiB
    torch.save({"w": src}, tmp_path / "w.pth")
    mapped = torch.load(tmp_path / "w.pth", mmap=True, weights_only=True)["w"]
    assert torch.equal(mapped, src)  # every page of the map is now resident
    in_memory = src.clone()
    pages = ck.FilePages()
    before = rss()
    pages.release(mapped)  # file-backed: pages dropped, re-read from the file on the next touch
    assert before - rss() > 24 << 20
    pages.release(in_memory)  # anonymous memory: must be left alone (DONTNEED would zero it)
    assert torch.equal(mapped, src) and torch.equal(in_memory, src)


def test_real_presets_need_the_llama_tokenizer(tmp_path):
    (tmp_path / "7B").mkdir()
    (tmp_path / "tokenizer.model").write_bytes(b"x")
    assert pretrained._find_tokenizer(str(tmp_path / "7B")) == str(tmp_path)  # Meta layout: next to 7B/
    with pytest.raises(ValueError, match="tokenizer_path"):
        pretrained._find_tokenizer(str(tmp_path / "7B" / "nothing" / "here"))
    with pytest.raises(ValueError, match="tokenizer_path"):
        pretrained._config_for("musicgen-medium", {}, {}, full=False)


def test_weight_norm_keys_in_either_spelling_load(tiny):
    """Sub-models saved with torch >= 2.1 may name weight norm parametrizations.weight.original0/1
    instead of weight_g/_v; both spellings load, into the same weights."""
    from m2ugen.model import M2UGen

    model, sd, _ = tiny
    renamed = {k.replace(".weight_g", ".parametrizations.weight.original0")
               .replace(".weight_v", ".parametrizations.weight.original1"): v for k, v in sd.items()}
    assert any("mert_model." in k and "parametrizations" in k for k in renamed)  # the case is exercised
    fresh = M2UGen.from_config(model.cfg)
    fresh.load_reference_state_dict(renamed)
    mert = fresh.music_encoder.model
    got = dict(mert.named_parameters())
    key = next(k for k in sd if k.startswith("mert_model.") and k.endswith(".weight_g"))
    ours = key.removeprefix("mert_model.").replace(".weight_g", ".parametrizations.weight.original0")
    assert torch.equal(got[ours].float(), sd[key].float())


def test_weights_spec_found_where_the_server_looks(tmp_path, monkeypatch):
    """The model's weights lookup and the server's discovery file use the same config dir, '~' included."""
    from server import discovery

    monkeypatch.delenv("M2UGEN_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("M2UGEN_CONFIG_DIR", "~/cfg")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "weights.json").write_text(json.dumps({"checkpoint": "ckpt.pth"}))
    assert ck.find_weights() == str(tmp_path / "cfg" / "weights.json")
    assert discovery.discovery_path().parent == tmp_path / "cfg"
