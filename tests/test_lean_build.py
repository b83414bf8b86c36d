"""Building in bf16 makes each tensor once, in bf16: no fp32 copy to cast (issue 24).

``MaterializedBytes`` counts every tensor an op creates on a real device, per dtype (a dispatch
mode: deterministic, no timing). With the old build (fp32, then ``.to(bfloat16)``) the LLaMA's
bytes would appear twice, once in fp32.
"""

import torch

from m2ugen.config import M2UGenConfig
from m2ugen.lean import MaterializedBytes, default_dtype
from m2ugen.model import M2UGen
from m2ugen.quant import weight_bytes

KIB = 1024


def _small(**kw) -> M2UGenConfig:
    return M2UGenConfig.preset("tiny").replace(dtype="bfloat16", dim=128, n_heads=4, n_layers=4, **kw)


def _fp32_param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters() if p.dtype == torch.float32)


def test_bf16_llama_is_made_once_in_bf16():
    with MaterializedBytes() as mb:
        model = M2UGen.from_config(_small())
    llama = weight_bytes(model.llama)
    assert all(p.dtype == torch.bfloat16 for p in model.llama.parameters())
    # every bf16 byte made is a LLaMA weight, made once
    assert llama <= mb.created[torch.bfloat16] <= llama + 4 * KIB
    # fp32: only the bridges, projector and prefix query (fp32 as official), nothing LLaMA-sized more
    rest = _fp32_param_bytes(model)
    assert rest <= mb.created[torch.float32] <= rest + 0.1 * llama, (mb.created[torch.float32], rest, llama)
    assert mb.peak <= 1.1 * (llama + rest)


def test_submodels_are_made_in_their_dtype():
    model = M2UGen.from_config(_small())
    for holder in (model.music_encoder, model.image_encoder, model.video_encoder):
        holder.dtype = torch.bfloat16
        with MaterializedBytes() as mb:
            sub = holder.model
        params = weight_bytes(sub)
        assert all(p.dtype == torch.bfloat16 for p in sub.parameters()), holder.kind
        assert mb.created[torch.float32] <= KIB, (holder.kind, mb.created[torch.float32])
        assert mb.peak <= 1.3 * params + 4 * KIB, (holder.kind, mb.peak, params)


def test_musicgen_is_made_in_bf16():
    cfg = _small()
    dec = dict(cfg.decoder_config, decoder=dict(cfg.decoder_config["decoder"], max_position_embeddings=64))
    model = M2UGen.from_config(cfg.replace(decoder_config=dec))
    holder = model.decoder
    holder.dtype = torch.bfloat16
    with MaterializedBytes() as mb:
        sub = holder.model
    params = weight_bytes(sub)
    assert all(p.dtype == torch.bfloat16 for p in sub.parameters())
    # the one fp32 made: transformers' sinusoidal position table, computed in fp32 and cast (a few copies)
    table = 64 * sub.config.decoder.hidden_size * 4
    assert mb.created[torch.float32] <= 8 * table + 16 * KIB < params, (mb.created[torch.float32], params)


def test_int8_llama_is_built_block_by_block():
    """The int8 build never holds the whole bf16 LLaMA: its peak stays below the bf16 LLaMA's bytes."""
    cfg = _small().replace(dim=256, n_layers=6)
    with MaterializedBytes() as mb:
        model = M2UGen.from_config(cfg, int8=True)
    from m2ugen.quant import llama_is_int8

    assert llama_is_int8(model.llama)
    bf16_llama = sum(p.numel() * 2 for p in M2UGen(cfg, llama_device="meta").llama.parameters())
    rest = _fp32_param_bytes(model)
    assert mb.peak - rest < 0.75 * bf16_llama, (mb.peak, rest, bf16_llama)
    # it runs: next-token logits through the int8 projections
    ids = torch.tensor([model.prompt_ids("hello")])
    assert torch.isfinite(model.next_token_logits(ids)).all()


def test_default_dtype_is_scoped():
    before = torch.get_default_dtype()
    with default_dtype("bfloat16"):
        assert torch.nn.Linear(2, 2).weight.dtype == torch.bfloat16
    assert torch.get_default_dtype() == before


def test_int8_matmul_converts_a_block_of_rows_at_a_time(monkeypatch):
    """An int8 projection converts at most CHUNK_BYTES of its weight to bf16 per call (torchao alone
    converts the whole weight: the LLaMA-2 head is 262 MB per step) and computes the same outputs."""
    from m2ugen import quant

    cfg = _small().replace(dim=256, n_layers=3)
    model = M2UGen.from_config(cfg, int8=True)
    head = model.llama.output
    assert type(head) is quant.Int8Linear and type(model.llama.layers[0].feed_forward.w2) is quant.Int8Linear
    x = torch.randn(3, cfg.dim, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = torch.nn.Linear.forward(head, x)  # torchao's own weight-only linear
        with MaterializedBytes() as mb_whole:
            torch.nn.Linear.forward(head, x)
        monkeypatch.setattr(quant, "CHUNK_BYTES", 8 * KIB)
        with MaterializedBytes() as mb:
            blocked = head(x)
    converted = head.weight.qdata.numel() * 2
    assert mb_whole.largest[torch.bfloat16] >= converted  # the transient this avoids
    assert mb.largest[torch.bfloat16] <= 8 * KIB < converted
    torch.testing.assert_close(blocked, whole, rtol=0, atol=0)
    # the whole model still answers through the blocked projections
    ids = torch.tensor([model.prompt_ids("hello")])
    assert torch.isfinite(model.next_token_logits(ids)).all()
