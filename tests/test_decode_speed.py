"""Serving speed without changing results: per-row generation, row cancellation and batch compaction,
the static-shape (compilable) decode step and its kept KV cache, int8 weight-only LLaMA."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from m2ugen.config import M2UGenConfig, PROMPT_TEMPLATE
from m2ugen.generate import generate
from m2ugen.llama import Transformer, build_adapters
from m2ugen.tokenizer import load_tokenizer

TEXTS = ["Describe this music.", "Generate a calm piano melody with soft strings and a slow beat.", "Tempo?"]
OPEN = dict(stop_text="", stop_on_eos=False)  # no early stop: every row runs to its own length


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    os.environ["M2UGEN_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    cfg = M2UGenConfig.preset("tiny")
    tok = load_tokenizer(cfg)
    cfg = cfg.replace(vocab_size=len(tok), max_seq_len=100)
    torch.manual_seed(0)
    llama = Transformer(cfg).eval()
    with torch.no_grad():
        llama.output.weight.mul_(8)  # peaked enough that greedy is no tie-break, flat enough to sample
        for layer in llama.layers:
            layer.attention.gate.fill_(0.5)  # the adapters reach the text
    prompts = [tok(PROMPT_TEMPLATE.format(instruction=t)).input_ids for t in TEXTS]
    assert len({len(p) for p in prompts}) == 3
    g = torch.Generator().manual_seed(1)
    B = len(prompts)
    # per-row audio adapters ([B, 1, dim]) in the audio layer, prefix-only ([1, 1, dim]) above it, and a
    # per-row multi-token adapter ([B, 3, dim]) in layer 0 (the softmax branch)
    adapters = build_adapters(cfg, torch.randn(cfg.n_prefix, cfg.dim, generator=g),
                              audio_feats=torch.randn(B, 1, cfg.dim, generator=g))
    adapters[0] = torch.randn(B, 3, cfg.dim, generator=g)
    assert {a.shape[0] for a in adapters if a is not None} == {1, B}
    return cfg, tok, llama, prompts, adapters


def row_adapters(adapters, b):
    return [a if a is None or a.shape[0] == 1 else a[b:b + 1] for a in adapters]


def seeded(seeds):
    return [None if s is None else torch.Generator().manual_seed(s) for s in seeds]


# row 1 (89 prompt tokens) is bounded by the context (100) at 11 new tokens, row 2 (77) is not, so the
# left-padded batch needs 89 + 20 columns: more than max_seq_len
ROWS = dict(max_new_tokens=[12, 50, 20], temperature=[0.0, 1.0, 0.9], top_p=[0.8, 0.95, 0.9])
SEEDS = [None, 5, 6]


def alone(setup, b, seeds=SEEDS, max_new=ROWS["max_new_tokens"], **kw):
    cfg, tok, llama, prompts, adapters = setup
    return generate(llama, tok, [prompts[b]], adapters=row_adapters(adapters, b), generator=seeded(seeds)[b],
                    max_new_tokens=max_new[b], temperature=ROWS["temperature"][b], top_p=ROWS["top_p"][b],
                    **OPEN, **kw)[0]


@pytest.mark.parametrize("recompute", [False, True])
def test_rows_of_a_batch_equal_each_row_alone(setup, recompute):
    cfg, tok, llama, prompts, adapters = setup
    both = generate(llama, tok, prompts, adapters=adapters, generator=seeded(SEEDS), recompute=recompute,
                    **ROWS, **OPEN)
    singles = [alone(setup, b) for b in range(3)]
    assert [g.tokens for g in both] == [g.tokens for g in singles]
    assert [len(g.tokens) for g in both] == [12, 100 - 89, 20]
    assert [g.stop_reason for g in both] == ["length"] * 3


def test_per_row_inputs_matter(setup):
    # guards the test above: each row's adapters and seed change its tokens
    cfg, tok, llama, prompts, adapters = setup
    base = alone(setup, 0)
    other = generate(llama, tok, [prompts[0]], adapters=row_adapters(adapters, 1), max_new_tokens=12,
                     temperature=0.0, **OPEN)[0]
    assert base.tokens != other.tokens
    assert alone(setup, 1).tokens != alone(setup, 1, seeds=[None, 50, 6]).tokens


def test_cancelled_row_stops_and_others_go_on(setup):
    cfg, tok, llama, prompts, adapters = setup
    sizes = []
    real_step = llama.decode_step

    def spy(tokens, *a, **kw):
        sizes.append(tokens.shape[0])
        return real_step(tokens, *a, **kw)

    def cancel_row_1(rows):
        return [1] if len(rows[1]) == 4 else None

    max_new = [12, 20, 7]
    llama.decode_step = spy
    try:
        out = generate(llama, tok, prompts, adapters=adapters, generator=seeded(SEEDS), on_step=cancel_row_1,
                       **{**ROWS, "max_new_tokens": max_new}, **OPEN)
    finally:
        del llama.decode_step
    assert out[1].stop_reason == "cancelled"
    assert out[1].tokens == alone(setup, 1, max_new=max_new).tokens[:4]
    assert [out[b].tokens for b in (0, 2)] == [alone(setup, b, max_new=max_new).tokens for b in (0, 2)]
    # row 1 left the batch after its 4th token, row 2 after its 7th: the steps ran on 3, 2, then 1 rows
    assert sizes == [3] * 3 + [2] * 3 + [1] * 5


def test_on_step_bad_row_and_bad_lists(setup):
    cfg, tok, llama, prompts, adapters = setup
    with pytest.raises(ValueError, match="row indices"):
        generate(llama, tok, prompts[:2], max_new_tokens=3, on_step=lambda rows: [5])
    assert not llama.has_cache
    with pytest.raises(ValueError, match="temperature lists 2 values for 3 prompts"):
        generate(llama, tok, prompts, max_new_tokens=3, temperature=[0.0, 0.5])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(llama, tok, prompts, max_new_tokens=[3, 0, 2])
    with pytest.raises(ValueError, match="adapter has batch 2"):
        generate(llama, tok, prompts, max_new_tokens=3, adapters=[None, None, torch.zeros(2, 1, cfg.dim), None])


def test_decode_step_equals_full_forward(setup):
    # the static-shape step (cache column and RoPE positions as tensors, mask from them) against the
    # dynamic path without a cache, on left-padded rows with per-row adapters
    cfg, tok, llama, prompts, adapters = setup
    B, P, n = 3, max(len(p) for p in prompts), 5
    g = torch.Generator().manual_seed(2)
    seq = torch.randint(3, cfg.vocab_size, (B, P + n), generator=g)
    valid = torch.ones(B, P + n, dtype=torch.bool)
    for b, p in enumerate(prompts):
        valid[b, :P - len(p)] = False
    with torch.no_grad():
        full, h_full = llama(seq, adapters=adapters, key_valid=valid, logits_for="all")
        llama.setup_cache(B, P + n)
        try:
            llama(seq[:, :P], adapters=adapters, key_valid=valid[:, :P])
            kv = llama.adapter_kv(adapters)
            step_valid = torch.ones(B, llama.cache_len, dtype=torch.bool)
            step_valid[:, :P + n] = valid
            steps = []
            for i in range(P, P + n):
                rope_pos = valid[:, :i + 1].sum(-1) - 1
                steps.append(llama.decode_step(seq[:, i:i + 1], torch.tensor([i]), rope_pos, step_valid, kv))
        finally:
            llama.clear_cache()
    torch.testing.assert_close(torch.stack([s[0] for s in steps], 1), full[:, P:], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(torch.stack([s[1] for s in steps], 1), h_full[:, P:], atol=1e-5, rtol=1e-5)


def test_kv_cache_is_kept_across_generations(setup):
    cfg, tok, llama, prompts, adapters = setup
    generate(llama, tok, prompts[:1], max_new_tokens=3)
    store = llama._kv_store
    ptr = store[0].k.data_ptr()
    assert store[0].k.shape[1] >= cfg.max_seq_len and not llama.has_cache
    generate(llama, tok, prompts[:1], max_new_tokens=5)
    assert llama._kv_store is store and store[0].k.data_ptr() == ptr  # reused, not reallocated
    generate(llama, tok, prompts, max_new_tokens=2)  # more rows than it holds: it grows
    assert llama._kv_store[0].k.shape[0] >= 3
    llama.release_cache()
    assert llama._kv_store is None


def test_compiled_step_is_traced_once_and_equals_eager(setup):
    # torch.compile with a counting backend: the step is captured as one graph for every position
    # (static shapes; inductor's code generation is too slow for a test on CPU and is timed in
    # benchmarks/roofline.py instead)
    cfg, tok, llama, prompts, adapters = setup
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    kw = dict(max_new_tokens=10, temperature=0.0, adapters=row_adapters(adapters, 0), **OPEN)
    eager = generate(llama, tok, prompts[:1], compile=False, **kw)[0]
    llama.compile_decode(backend=backend)
    try:
        compiled = generate(llama, tok, prompts[:1], **kw)[0]
        assert len(graphs) == 1
        again = generate(llama, tok, prompts[:1], compile=False, **kw)[0]  # compile=False: eager even now
        assert len(graphs) == 1
        # one step both ways at the same position (rewriting the same cache column): the same logits
        ids = torch.tensor(prompts[:1])
        P = ids.shape[1]
        with torch.no_grad():
            llama.setup_cache(1, P + 1)
            try:
                llama(ids, adapters=kw["adapters"])
                valid = torch.ones(1, llama.cache_len, dtype=torch.bool)
                args = (ids[:, -1:], torch.tensor([P]), torch.tensor([P]), valid, llama.adapter_kv(kw["adapters"]))
                step_eager, _ = llama.decode_step(*args, eager=True)
                step_compiled, _ = llama.decode_step(*args)
            finally:
                llama.clear_cache()
    finally:
        llama.eager_decode()
    torch.testing.assert_close(step_compiled, step_eager, atol=1e-5, rtol=1e-5)
    assert compiled.tokens == eager.tokens == again.tokens
    assert compiled.aud_hidden is None and len(compiled.tokens) == 10


# ---------------------------------------------------------------------------------------------------
# int8 weight-only LLaMA (torchao)


def test_int8_llama_close_to_fp32_and_a_quarter_of_the_bytes(setup):
    from m2ugen.quant import decode_weight_bytes, llama_is_int8, quantize_llama_int8, weight_bytes

    cfg, tok, llama, prompts, adapters = setup
    big = cfg.replace(dim=256, n_heads=4)  # rows of 256+: the per-row scale is a small overhead
    torch.manual_seed(3)
    ref = Transformer(big).eval()
    with torch.no_grad():
        ref.output.weight.mul_(8)
        for layer in ref.layers:
            layer.attention.gate.fill_(0.5)
            layer.attention.lora_wq_l2.weight.normal_(std=0.02)
    q = Transformer(big).eval()
    q.load_state_dict(ref.state_dict())
    lora_before = q.layers[0].attention.lora_wq_l2.weight.clone()
    fp32_bytes = weight_bytes(ref, skip=("tok_embeddings.",))
    quantize_llama_int8(q)
    assert llama_is_int8(q) and not llama_is_int8(ref)
    assert q.layers[0].attention.wq.weight.qdata.dtype == torch.int8
    # LoRA, gates, norms untouched
    assert type(q.layers[0].attention.lora_wq_l2.weight) is torch.nn.Parameter
    assert torch.equal(q.layers[0].attention.lora_wq_l2.weight, lora_before)
    ratio = fp32_bytes / decode_weight_bytes(q)
    assert 3.3 < ratio < 4.0, ratio

    pq = torch.randn(big.n_prefix, big.dim, generator=torch.Generator().manual_seed(4))
    ad = build_adapters(big, pq, audio_feats=torch.randn(1, 1, big.dim, generator=torch.Generator().manual_seed(5)))
    x = torch.tensor([prompts[1]])
    with torch.no_grad():
        lf, _ = ref(x, adapters=ad, logits_for="all")
        lq, _ = q(x, adapters=ad, logits_for="all")
    # per-row int8 weights: logits within 3% of their spread
    assert (lq - lf).abs().max() < 0.03 * lf.std() * 6
    kw = dict(max_new_tokens=24, temperature=0.0, adapters=ad, **OPEN)
    a = generate(ref, tok, [prompts[1]], **kw)[0].tokens
    b = generate(q, tok, [prompts[1]], **kw)[0].tokens
    same = sum(x == y for x, y in zip(a, b)) / len(a)
    assert same >= 0.75, (a, b)


# ---------------------------------------------------------------------------------------------------
# the benchmark scripts run (tiny, CPU) so that they cannot rot


def _benchmark(name):
    from conftest import load_benchmark

    return load_benchmark(name)


@pytest.mark.timeout(600)  # a minute alone; more on a loaded machine
def test_gpu_check_runs_tiny_on_cpu(setup, capsys):
    gpu_check = _benchmark("gpu_check")
    gpu_check.main(["--preset", "tiny", "--device", "cpu", "--no-compile", "--chat-seconds", "0.3",
                    "--musicgen-seconds", "0.3", "--max-new-tokens", "2", "--iters", "1", "--budget-s", "0"])
    out = capsys.readouterr().out
    assert "ERROR" not in out and "skipped" not in out, out
    for row in ("copy bandwidth", "weights, tiny", "generate job, M2UGen.chat", "LLaMA decode_step float32, batch 4",
                "MusicGen decode", "vocoder='mbd'", "continuous batching vs serial vs static", "int8 weight-only", "LLaMA decode_step int8, batch 1"):
        assert row in out, (row, out)


def test_roofline_rows_and_step_fraction():
    roofline = _benchmark("roofline")
    r = roofline.step_fraction(lambda: torch.mv(torch.ones(64, 64), torch.ones(64)), 64 * 64 * 4, 1e9, iters=3)
    assert r["floor_ms"] == pytest.approx(64 * 64 * 4 / 1e9 * 1e3) and r["step_ms"] > 0
    assert r["fraction"] == pytest.approx(r["floor_ms"] / r["step_ms"])
    rows = roofline.llama_rows(64, 3, dtypes=("float32",), compile=(False,), bandwidth=1e9, iters=2)
    assert len(rows) == 1 and "error" not in rows[0], rows[0].get("error")
    assert rows[0]["tokens_per_s"] > 0 and rows[0]["weight_mb"] > 0
