"""The KV-cached decoding loop against the official whole-sequence recompute."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from m2ugen.config import M2UGenConfig, PROMPT_TEMPLATE
from m2ugen.generate import generate, reference_generate, sample_top_p, teacher_force_hidden
from m2ugen.llama import Transformer, build_adapters
from m2ugen.tokenizer import audio_token_ids, load_tokenizer



def stop_ids(tok):
    """Token ids of "\\n###" without the SentencePiece dummy-prefix piece."""
    return [t for t in tok("\n###", add_special_tokens=False).input_ids if tok.convert_ids_to_tokens(t) != "\u2581"]

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    os.environ["M2UGEN_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    cfg = M2UGenConfig.preset("tiny")
    tok = load_tokenizer(cfg)
    cfg = cfg.replace(vocab_size=len(tok), max_seq_len=160)
    torch.manual_seed(0)
    llama = Transformer(cfg).eval()
    # make the random model less uniform so greedy decoding is not a flat tie-break contest
    with torch.no_grad():
        llama.output.weight.mul_(20)
    return cfg, tok, llama


def prompt_ids(tok, text):
    return tok(PROMPT_TEMPLATE.format(instruction=text)).input_ids


PROMPTS = ["Describe this music.", "What is the tempo?", "Generate a calm piano melody with soft strings."]


@pytest.mark.parametrize("text", PROMPTS)
def test_cached_greedy_equals_recompute(setup, text):
    cfg, tok, llama = setup
    ids = prompt_ids(tok, text)
    fast = generate(llama, tok, [ids], max_new_tokens=24, temperature=0.0, stop_text="", stop_on_eos=False)[0]
    slow = reference_generate(llama, tok, [ids], max_new_tokens=24, temperature=0.0, stop_text="", stop_on_eos=False)[0]
    assert len(fast.tokens) == 24
    assert fast.tokens == slow.tokens
    assert len(set(fast.tokens)) > 1


def test_cached_greedy_with_adapters_equals_recompute(setup):
    cfg, tok, llama = setup
    with torch.no_grad():
        for layer in llama.layers:
            layer.attention.gate.fill_(0.5)
    try:
        torch.manual_seed(3)
        adapters = build_adapters(cfg, torch.randn(cfg.n_prefix, cfg.dim), audio_feats=torch.randn(1, 1, cfg.dim))
        ids = prompt_ids(tok, PROMPTS[0])
        kw = dict(max_new_tokens=16, temperature=0.0, stop_text="", stop_on_eos=False, adapters=adapters)
        fast = generate(llama, tok, [ids], **kw)[0]
        slow = generate(llama, tok, [ids], recompute=True, **kw)[0]
        plain = generate(llama, tok, [ids], **{**kw, "adapters": None})[0]
    finally:
        with torch.no_grad():
            for layer in llama.layers:
                layer.attention.gate.zero_()
    assert fast.tokens == slow.tokens
    assert fast.tokens != plain.tokens  # the adapters reached the decoding


@pytest.mark.parametrize("with_adapters", [False, True])
def test_batch_with_padding_equals_alone(setup, with_adapters):
    cfg, tok, llama = setup
    a, b = prompt_ids(tok, PROMPTS[0]), prompt_ids(tok, PROMPTS[2])
    assert len(a) != len(b)
    kw = dict(max_new_tokens=20, temperature=0.0, stop_text="", stop_on_eos=False)
    gate = 0.5 if with_adapters else 0.0
    if with_adapters:  # prefix-only adapters ([1, 1, dim]: no modality given) broadcast over the batch
        kw["adapters"] = build_adapters(cfg, torch.randn(cfg.n_prefix, cfg.dim, generator=torch.Generator().manual_seed(9)))
    with torch.no_grad():
        for layer in llama.layers:
            layer.attention.gate.fill_(gate)
    try:
        both = generate(llama, tok, [a, b], **kw)
        alone = [generate(llama, tok, [p], **kw)[0].tokens for p in (a, b)]
        both_slow = generate(llama, tok, [a, b], recompute=True, **kw)
    finally:
        with torch.no_grad():
            for layer in llama.layers:
                layer.attention.gate.zero_()
    assert [g.tokens for g in both] == alone
    assert [g.tokens for g in both_slow] == alone


def test_one_generation_at_a_time(setup):
    cfg, tok, llama = setup
    llama.setup_cache(1, 8)
    try:
        with pytest.raises(RuntimeError, match="another generation"):
            generate(llama, tok, [prompt_ids(tok, "x")], max_new_tokens=2)
    finally:
        llama.clear_cache()


def test_seeded_sampling_reproducible(setup):
    cfg, tok, llama = setup
    ids = prompt_ids(tok, PROMPTS[1])
    kw = dict(max_new_tokens=30, temperature=1.0, top_p=0.95, stop_text="", stop_on_eos=False)
    runs = [generate(llama, tok, [ids], generator=torch.Generator().manual_seed(s), **kw)[0].tokens for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_sample_top_p_keeps_nucleus_only():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    g = torch.Generator().manual_seed(0)
    draws = {sample_top_p(probs, 0.7, g).item() for _ in range(300)}
    assert draws == {0, 1}  # 0.5 < 0.7 keeps token 1 too; 0.8 already exceeds 0.7 so token 2 is dropped
    assert {sample_top_p(probs, 0.4, g).item() for _ in range(50)} == {0}


class ForcedLlama(Transformer):
    """A real Transformer whose logits are overridden to follow a script (its hidden states are real)."""

    script: list[int] = []

    def _forced(self, logits, step):
        forced = torch.full_like(logits, -1e4)
        forced[:, self.script[min(step, len(self.script) - 1)]] = 0.0
        return forced

    def forward(self, tokens=None, **kw):
        logits, h = super().forward(tokens, **kw)
        if logits is None:
            return logits, h
        return self._forced(logits, int(kw.get("start_pos", 0)) + h.shape[1] - self.prompt_len), h

    def decode_step(self, tokens, cache_pos, *args, **kw):
        logits, h = super().decode_step(tokens, cache_pos, *args, **kw)
        return self._forced(logits, int(cache_pos) + 1 - self.prompt_len), h


def _forced(setup, script, prompt):
    cfg, tok, llama = setup
    m = ForcedLlama(cfg).eval()
    m.load_state_dict(llama.state_dict())
    m.script, m.prompt_len = script, len(prompt)
    return m


def test_stops_on_newline_hash(setup):
    cfg, tok, llama = setup
    ids = prompt_ids(tok, PROMPTS[0])
    body = tok("Here is a music", add_special_tokens=False).input_ids
    stop = stop_ids(tok)
    more = tok(" never reached", add_special_tokens=False).input_ids
    m = _forced(setup, body + stop + more, ids)
    g = generate(m, tok, [ids], max_new_tokens=60, temperature=0.0)[0]
    assert g.stop_reason == "stop_text"
    assert g.tokens == body + stop
    assert g.text.strip() == "Here is a music"
    assert g.aud_hidden is None


def test_stops_on_eos(setup):
    cfg, tok, llama = setup
    ids = prompt_ids(tok, PROMPTS[0])
    body = tok("The tempo is fast", add_special_tokens=False).input_ids
    m = _forced(setup, body + [tok.eos_token_id, 5, 6], ids)
    g = generate(m, tok, [ids], max_new_tokens=60, temperature=0.0)[0]
    assert g.stop_reason == "eos"
    assert g.tokens == body + [tok.eos_token_id]
    assert g.reply_tokens == body


def test_aud_gathering_picks_predicting_positions(setup):
    cfg, tok, llama = setup
    ids = prompt_ids(tok, PROMPTS[2])
    aud = audio_token_ids(tok)
    body = tok("Here is a music", add_special_tokens=False).input_ids
    stop = stop_ids(tok)
    # two complete runs: the second [AUD0] restarts the list, so the second run is kept
    script = body + aud + body[:1] + aud + stop
    m = _forced(setup, script, ids)
    g = generate(m, tok, [ids], max_new_tokens=80, temperature=0.0, audio_token_ids=aud)[0]
    assert g.tokens == script
    assert g.aud_hidden is not None and g.aud_hidden.shape == (8, cfg.dim)
    first = len(body) + 8 + 1  # index of the second [AUD0] in the generated tokens
    assert g.aud_positions == list(range(first, first + 8))
    # the state that predicts generated token i sits at sequence position len(prompt) + i - 1
    expected = teacher_force_hidden(llama, ids + script[:first], aud)
    torch.testing.assert_close(g.aud_hidden, expected, atol=1e-5, rtol=1e-5)
    assert "[AUD0]" in g.text and "[AUD7]" in g.text


def test_aud_gathering_official_false_start(setup):
    # official quirk kept: after [AUD0][AUD1] the next expected token is [AUD2]; a new [AUD0]
    # is only matched when the counter is back at 0, so the run continues from [AUD2]
    cfg, tok, llama = setup
    ids = prompt_ids(tok, PROMPTS[2])
    aud = audio_token_ids(tok)
    body = tok("Here is a music", add_special_tokens=False).input_ids
    script = body + aud[:2] + body[:1] + aud + stop_ids(tok)
    g = generate(_forced(setup, script, ids), tok, [ids], max_new_tokens=80, temperature=0.0, audio_token_ids=aud)[0]
    n = len(body)
    assert g.aud_positions == [n, n + 1] + list(range(n + 2 + 1 + 2, n + 2 + 1 + 8))


def test_incomplete_aud_run_gives_none(setup):
    cfg, tok, llama = setup
    ids = prompt_ids(tok, PROMPTS[2])
    aud = audio_token_ids(tok)
    script = aud[:5] + stop_ids(tok)
    g = generate(_forced(setup, script, ids), tok, [ids], max_new_tokens=40, temperature=0.0, audio_token_ids=aud)[0]
    assert g.aud_hidden is None


def test_length_bounded_by_context(setup):
    cfg, tok, llama = setup
    ids = prompt_ids(tok, PROMPTS[0])
    g = generate(llama, tok, [ids], max_new_tokens=10_000, temperature=0.0, stop_text="", stop_on_eos=False)[0]
    assert len(ids) + len(g.tokens) == cfg.max_seq_len
    assert g.stop_reason == "length"
    with pytest.raises(ValueError, match="context of 160"):
        generate(llama, tok, [list(range(3, 200))], max_new_tokens=4)


def test_on_step_exception_propagates(setup):
    cfg, tok, llama = setup

    class Stop(Exception):
        pass

    calls = []

    def cb(rows):
        calls.append(len(rows[0]))
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        generate(llama, tok, [prompt_ids(tok, "x")], max_new_tokens=20, temperature=0.0, on_step=cb)
    assert calls == [1, 2, 3]
    assert not llama.has_cache  # the cache is released on the way out


def test_tiny_tokenizer_is_deterministic_and_cached(tmp_path, monkeypatch):
    from m2ugen import tokenizer as tk

    dirs = []
    for name in ("a", "b"):
        monkeypatch.setenv("M2UGEN_DATA_DIR", str(tmp_path / name))
        dirs.append(tk.tiny_tokenizer_dir())
    import sentencepiece as spm

    a, b = (spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model")) for d in dirs)
    pieces = [[(p.id_to_piece(i), p.get_score(i)) for i in range(p.get_piece_size())] for p in (a, b)]
    assert pieces[0] == pieces[1] and len(pieces[0]) == tk.TINY_VOCAB  # same pieces, same order
    stamp = (dirs[1] / "tokenizer.model").stat().st_mtime_ns
    assert tk.tiny_tokenizer_dir() == dirs[1]  # reused, not retrained
    assert (dirs[1] / "tokenizer.model").stat().st_mtime_ns == stamp


def test_tokenizer_prompt_and_audio_tokens(setup):
    cfg, tok, llama = setup
    ids = tok(PROMPT_TEMPLATE.format(instruction="Describe this music.")).input_ids
    assert ids[0] == tok.bos_token_id == 1 and tok.eos_token_id == 2
    aud = audio_token_ids(tok)
    assert aud == list(range(len(tok) - 8, len(tok)))
    text = "Here is a music [AUD0][AUD1][AUD2][AUD3][AUD4][AUD5][AUD6][AUD7]"
    enc = tok(text, add_special_tokens=False).input_ids
    assert enc[-8:] == aud
    assert tok.decode(enc) == text
    assert tok.convert_tokens_to_ids("<0x0A>") == 13  # the official newline cut id


def test_real_tokenizer_path_is_checked(setup, tmp_path):
    from m2ugen import tokenizer as tk

    with pytest.raises(ValueError, match="no tokenizer.model"):
        tk.load_tokenizer(M2UGenConfig.preset("tiny").replace(tokenizer_path=str(tmp_path)))
    # a LLaMA-style model of the wrong size is refused (real LLaMA-2 has 32000 pieces)
    with pytest.raises(ValueError, match="32000"):
        tk.load_tokenizer(M2UGenConfig.preset("tiny").replace(tokenizer_path=str(tk.tiny_tokenizer_dir())))
