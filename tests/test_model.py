"""The top-level model on the tiny preset: chat with every input kind, audio semantics, bad inputs."""

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from conftest import decoder_calls
from m2ugen import Event, M2UGen, M2UGenConfig, Reply


def stop_ids(tok):
    """Token ids of "\\n###" without the SentencePiece dummy-prefix piece."""
    return [t for t in tok("\n###", add_special_tokens=False).input_ids if tok.convert_ids_to_tokens(t) != "\u2581"]

FAST = dict(max_new_tokens=12, temperature=0.6, top_p=0.8, seed=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    os.environ["M2UGEN_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    return M2UGen.from_config(M2UGenConfig.preset("tiny"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    t = np.arange(22050) / 22050
    sf.write(d / "tone.wav", np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 330 * t)], 1) * 0.3, 22050)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / "cover.png")
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.png").write_text("this is not an image\n")
    for name, n in (("clip.mp4", 12), ("one.mp4", 1)):
        with av.open(str(d / name), "w") as out:
            vs = out.add_stream("mpeg4", rate=10)
            vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * i + 20, np.uint8), format="rgb24")
                for packet in vs.encode(frame):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
    return d


def force_script(model, script):
    """Make the LLaMA's logits follow ``script`` (its hidden states stay real); returns an undo function.
    Both paths are forced: the prefill (``forward``) and the cached one-token ``decode_step``."""
    llama = model.llama
    original, original_step = llama.forward, llama.decode_step
    state = {"prompt_len": None}

    def forced(logits, end):
        step = end - state["prompt_len"]
        out = torch.full_like(logits, -1e4)
        out[:, script[min(step, len(script) - 1)]] = 0.0
        return out

    def forward(tokens=None, **kw):
        logits, h = original(tokens, **kw)
        if logits is None or kw.get("logits_for", "last") != "last":
            return logits, h
        end = kw.get("start_pos", 0) + h.shape[1]
        if kw.get("start_pos", 0) == 0:  # the prefill of a new request (chat decodes with the cache)
            state["prompt_len"] = end
        return forced(logits, end), h

    def decode_step(tokens, cache_pos, *args, **kw):
        logits, h = original_step(tokens, cache_pos, *args, **kw)
        return forced(logits, int(cache_pos[0]) + 1), h

    llama.forward, llama.decode_step = forward, decode_step
    return lambda: (llama.__dict__.pop("forward"), llama.__dict__.pop("decode_step"))


def test_text_only_chat(model):
    reply = model.chat("Describe this music.", want_audio=False, **FAST)
    # numpy scalars (as a server may pass them) are accepted
    same = model.chat("Describe this music.", want_audio=False, max_new_tokens=np.int64(12), temperature=np.float64(0.6),
                      top_p=0.8, seed=np.int64(1))
    assert same.raw_text == reply.raw_text and same.seed == 1
    assert isinstance(reply, Reply)
    assert isinstance(reply.text, str) and reply.audio is None
    assert reply.sample_rate == model.sample_rate == model.decoder.sample_rate
    assert reply.seed == 1 and "thinking" in reply.timings
    again = model.chat("Describe this music.", want_audio=False, **FAST)
    assert again.raw_text == reply.raw_text  # same seed, same reply
    assert model.name == "tiny" and model.config.vocab_size == len(model.tokenizer)


@pytest.mark.parametrize("kind", ["audio_tuple", "audio_path", "image", "video", "all"])
def test_inputs_run(model, files, kind):
    wave = (0.1 * np.sin(np.arange(24000) / 5)).astype(np.float32)
    kw = {
        "audio_tuple": dict(audio=(wave, 24000)),
        "audio_path": dict(audio=str(files / "tone.wav")),
        "image": dict(image=str(files / "cover.png")),
        "video": dict(video=str(files / "clip.mp4")),
        "all": dict(audio=(wave, 24000), image=Image.open(files / "cover.png"), video=str(files / "clip.mp4")),
    }[kind]
    events = []
    reply = model.chat("What is in this input?", want_audio=False, on_event=events.append, **kw, **FAST)
    assert isinstance(reply.text, str)
    enc = [e for e in events if e.stage == "encoding"]
    assert enc[-1].fraction == 1.0
    assert {e.text for e in enc} >= {k for k in ("audio", "image", "video") if k in kw}


@pytest.mark.parametrize("conditioning", ["text", "embedding"])
def test_audio_of_requested_duration(model, conditioning):
    events = []
    reply = model.chat("Generate a calm piano melody.", want_audio=True, conditioning=conditioning,
                       duration_s=0.6, on_event=events.append, **FAST)
    sr = model.sample_rate
    assert reply.sample_rate == sr
    assert reply.audio is not None and reply.audio.dtype == np.float32 and reply.audio.ndim == 2
    assert reply.audio.shape[1] == round(0.6 * sr)  # exactly the requested duration
    assert np.isfinite(reply.audio).all()
    assert "generating" in reply.timings
    stages = [e.stage for e in events]
    assert stages.index("encoding") < stages.index("thinking") < stages.index("generating")
    assert all(0.0 <= e.fraction <= 1.0 for e in events)
    # want_audio=True appended the eight tokens when the random model did not produce them
    assert reply.raw_text.endswith("".join(f"[AUD{i}]" for i in range(8)))
    assert "[AUD" not in reply.text


def test_embedding_conditioning_uses_projector(model):
    hidden = torch.randn(8, model.config.dim)
    emb = model.music_embeddings(hidden)
    assert emb.shape == (1, model.config.num_output_tokens, model.config.output_dim)
    with torch.no_grad():
        aud = model.llama.tok_embeddings(torch.tensor(model.audio_token_ids))[None]
        ref = model.output_projector(hidden[None], aud) * 0.1
    torch.testing.assert_close(emb, ref)


def test_want_audio_none_follows_the_reply(model):
    tok = model.tokenizer
    aud = model.audio_token_ids
    body = tok("Here is a music", add_special_tokens=False).input_ids
    stop = stop_ids(tok)
    undo = force_script(model, body + aud + stop)
    try:
        with decoder_calls(model.decoder) as calls:
            with_aud = model.chat("Make music", want_audio=None, duration_s=0.2, **FAST)
            never = model.chat("Make music", want_audio=False, duration_s=0.2, **FAST)
    finally:
        undo()
    assert with_aud.audio is not None and never.audio is None
    assert len(calls) == 1
    # text conditioning: the official decoder prompt is the decoded first line with literal [AUDk]
    assert calls[0]["text"] == with_aud.raw_text
    assert "[AUD0]" in calls[0]["text"] and "[AUD" not in with_aud.text
    assert with_aud.text.strip() == "Here is a music"

    undo = force_script(model, body + aud[:3] + stop)
    try:
        partial = model.chat("Make music", want_audio=None, duration_s=0.2, **FAST)
    finally:
        undo()
    assert partial.audio is None  # only 3 of the 8 [AUD] tokens: the model decided against music


def test_want_audio_true_teacher_forces(model):
    tok = model.tokenizer
    body = tok("The tempo is fast", add_special_tokens=False).input_ids
    stop = stop_ids(tok)
    seen = []
    original = model.music_embeddings
    model.music_embeddings = lambda h: (seen.append(h.clone()), original(h))[1]
    undo = force_script(model, body + stop)
    try:
        reply = model.chat("Make music", want_audio=True, conditioning="embedding", duration_s=0.2, **FAST)
    finally:
        undo()
        del model.music_embeddings
    assert reply.audio is not None
    assert reply.raw_text.endswith("[AUD7]") and reply.text == "The tempo is fast"
    ids = model.prompt_ids("Make music") + body + model.audio_token_ids
    with torch.no_grad():
        _, h = model.llama(torch.tensor([ids]), adapters=model.adapters(), logits_for="none")
    n = len(ids) - 8
    torch.testing.assert_close(seen[0], h[0, n - 1:n + 7])


@pytest.mark.parametrize("case,match", [
    ("empty_audio", "empty"),
    ("nan_audio", "NaN"),
    ("zero_byte", "empty"),
    ("not_image", "image"),
    ("one_frame", "frame"),
    ("long_prompt", "context limit"),
    ("empty_prompt", "prompt"),
    ("bad_conditioning", "conditioning"),
    ("bad_duration", "duration_s"),
    ("bad_top_p", "top_p"),
    ("bad_tokens", "max_new_tokens"),
])
def test_bad_inputs(model, files, case, match):
    kw = {
        "empty_audio": dict(audio=(np.zeros(0, np.float32), 24000)),
        "nan_audio": dict(audio=(np.full(4800, np.nan, np.float32), 24000)),
        "zero_byte": dict(audio=str(files / "empty.wav")),
        "not_image": dict(image=str(files / "notes.png")),
        "one_frame": dict(video=str(files / "one.mp4")),
        "long_prompt": dict(prompt="describe the music " * 300),
        "empty_prompt": dict(prompt="   "),
        "bad_conditioning": dict(conditioning="midi"),
        "bad_duration": dict(duration_s=float("nan")),
        "bad_top_p": dict(top_p=1.5),
        "bad_tokens": dict(max_new_tokens=0),
    }[case]
    prompt = kw.pop("prompt", "Describe this.")
    with pytest.raises(ValueError, match=match):
        model.chat(prompt, **{**FAST, **kw})


@pytest.mark.parametrize("stage", ["encoding", "thinking", "generating"])
def test_cancellation_propagates(model, stage):
    class Cancelled(Exception):
        pass

    def on_event(e: Event):
        if e.stage == stage:
            raise Cancelled(stage)

    with pytest.raises(Cancelled):
        model.chat("Make music", want_audio=True, duration_s=0.2, on_event=on_event, **FAST)
    assert not model.llama.has_cache


def test_next_token_logits_and_gates(model, caplog):
    model = M2UGen.from_config(model.config.replace(gate_init="zero"), tokenizer=model.tokenizer)
    cfg = model.config
    p = model.prompt_ids("Describe this music.")
    ids = torch.tensor([p, p[:-1] + [5]])
    audio = torch.randn(cfg.mert_layers, cfg.mert_dim, generator=torch.Generator().manual_seed(0))
    image = torch.randn(2, cfg.vit_tokens, cfg.vit_dim, generator=torch.Generator().manual_seed(1))
    plain = model.next_token_logits(ids)
    assert plain.shape == (2, cfg.vocab_size) and plain.dtype == torch.float32
    # the official init (gate_init="zero"): all gates zero, so features cannot reach the logits
    assert model.gate_report()["all_zero"] is True
    torch.testing.assert_close(model.next_token_logits(ids, audio_feats=audio, image_feats=image), plain)
    gates = [layer.attention.gate for layer in model.llama.layers]
    try:
        with torch.no_grad():
            for g in gates:
                g.fill_(0.5)
        caplog.clear()  # building the zero-gate model above warned
        with caplog.at_level(logging.INFO, logger="m2ugen"):
            rep = model.log_gate_report()
        assert rep["all_zero"] is False and rep["max"] == pytest.approx(np.tanh(0.5))
        assert "every attention gate is zero" not in caplog.text
        with_gates = model.next_token_logits(ids)  # prefix_query alone now matters
        with_audio = model.next_token_logits(ids, audio_feats=audio)
        assert (with_gates - plain).abs().max() > 1e-4
        assert (with_audio - with_gates).abs().max() > 1e-4
        # batch row 0 alone gives the same logits as in the batch
        torch.testing.assert_close(model.next_token_logits(ids[:1], audio_feats=audio), with_audio[:1],
                                   atol=1e-5, rtol=1e-5)
    finally:
        with torch.no_grad():
            for g in gates:
                g.zero_()
    with pytest.raises(ValueError, match="token_ids"):
        model.next_token_logits([[1, 2, 3]])
    with pytest.raises(ValueError, match="audio features"):
        model.next_token_logits(ids, audio_feats=torch.randn(3, 7))


def test_zero_gates_warn(model, caplog):
    with caplog.at_level(logging.WARNING, logger="m2ugen"):
        M2UGen.from_config(M2UGenConfig.preset("tiny"), tokenizer=model.tokenizer)  # random gates: no warning
    assert "no effect on the text" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="m2ugen"):
        m = M2UGen.from_config(M2UGenConfig.preset("tiny").replace(gate_init="zero"), tokenizer=model.tokenizer)
    assert "image/video/music inputs have no effect on the text" in caplog.text
    # official init of the [AUD] input embeddings and of LoRA
    emb = m.llama.tok_embeddings.weight[m.audio_token_ids]
    assert torch.all(emb == 1.0)
    assert torch.count_nonzero(m.llama.layers[0].attention.lora_wq_l2.weight) == 0
    keys = m.state_dict().keys()
    assert "prefix_query.weight" in keys and "llama.layers.0.attention.gate" in keys
    assert not any(k.startswith(("music_encoder", "decoder", "image_encoder")) for k in keys)


@pytest.mark.parametrize("conditioning", ["text", "embedding"])
def test_audioldm2_decoder(model, conditioning):
    # built per test from the already-trained tiny tokenizer (same data dir as ``model``)
    m = M2UGen.from_config(M2UGenConfig.preset("tiny-audioldm2"), tokenizer=model.tokenizer)
    reply = m.chat("Generate music", want_audio=True, conditioning=conditioning, duration_s=0.5, **FAST)
    assert reply.sample_rate == m.sample_rate == 16000
    assert reply.audio.dtype == np.float32 and reply.audio.shape == (1, 8000)
    assert np.isfinite(reply.audio).all()
    emb = m.music_embeddings(torch.zeros(8, m.config.dim))
    assert emb.shape == (1, 1, m.config.output_dim)


def test_tiny_audioldm2_text_mode_never_overflows_its_gpt2(model, caplog):
    """Replies of the tiny model often exceed, as T5 prompts, what its GPT-2 (99 positions) takes:
    they are truncated with a warning instead of failing with an IndexError."""
    cfg = M2UGenConfig.preset("tiny-audioldm2").replace(audioldm2_steps=1)  # one diffusion step: faster
    m = M2UGen.from_config(cfg, tokenizer=model.tokenizer)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: several OpenMP threads per job only spin
    try:
        with caplog.at_level(logging.WARNING, logger="m2ugen.decoders"):
            for seed in range(10):
                reply = m.chat("Generate music", want_audio=True, conditioning="text", duration_s=0.1,
                               max_new_tokens=32, seed=seed)
                assert reply.audio.shape == (1, 1600)
    finally:
        torch.set_num_threads(threads)
    assert "only the first 87 are used" in caplog.text  # some of the ten replies were that long


def test_from_config_on_meta_device(model):
    # m2ugen.checkpoint builds the real model this way before assigning the checkpoint's tensors
    with torch.device("meta"):
        m = M2UGen.from_config(M2UGenConfig.preset("tiny"), tokenizer=model.tokenizer)
    assert m.llama.tok_embeddings.weight.is_meta and m.prefix_query.weight.is_meta
    assert m.gate_report()["all_zero"] is None
    assert set(m.state_dict()) == set(model.state_dict())


def test_preload_builds_only_the_named_parts():
    model = M2UGen.from_config(M2UGenConfig.preset("tiny"))
    assert not model.decoder.loaded and not model.music_encoder.loaded
    model.preload("decoder", "music_encoder")
    assert model.decoder.loaded and model.music_encoder.loaded
    assert not model.image_encoder.loaded and not model.video_encoder.loaded  # still lazy
    with pytest.raises(ValueError, match="unknown part 'llm'"):
        model.preload("llm")


def test_preload_tiny_audioldm2_decoder_has_no_processor_to_build():
    model = M2UGen.from_config(M2UGenConfig.preset("tiny-audioldm2"))
    model.preload("decoder")
    assert model.decoder.loaded
