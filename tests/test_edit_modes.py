"""The source reaches the music (issue 11 §2, §4) on tiny presets: random gates, continue, melody, stereo.

Edits are tested on models with the official zero gates, so the LLM cannot hear the source and its
reply is the same for two sources: any difference in the audio then comes from the decoder's use of
the source, and ``mode="text"`` (the control) gives byte-identical audio.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from conftest import decoder_calls
from m2ugen import M2UGen, M2UGenConfig, chroma, decoders

SR = 24000
FAST = dict(max_new_tokens=6, seed=3, duration_s=0.3)


def sine(freq=440.0, seconds=1.0, sr=SR):
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def noise(seconds=1.0, sr=SR):
    return (0.3 * np.random.default_rng(0).standard_normal(int(seconds * sr))).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _setup(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: two spinning OpenMP threads per job slow everything down
    old = os.environ.get("M2UGEN_DATA_DIR")
    os.environ["M2UGEN_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    yield
    torch.set_num_threads(n)
    if old is None:
        os.environ.pop("M2UGEN_DATA_DIR", None)
    else:
        os.environ["M2UGEN_DATA_DIR"] = old


@pytest.fixture(scope="module")
def tiny():
    return M2UGen.from_config(M2UGenConfig.preset("tiny"))  # random gates


def deaf(preset: str, tokenizer) -> M2UGen:
    """The preset with the official zero gates (the LLM cannot hear the source)."""
    return M2UGen.from_config(M2UGenConfig.preset(preset).replace(gate_init="zero"), tokenizer=tokenizer)


@pytest.fixture(scope="module")
def mono(tiny):
    return deaf("tiny", tiny.tokenizer)


@pytest.fixture(scope="module")
def melody(tiny):
    return deaf("tiny-melody", tiny.tokenizer)


# ----------------------------------------------------------------------------------------------
# §4: random gates, every input reaches the text


def test_tiny_gates_are_random_and_reproducible(tiny):
    rep = tiny.gate_report()
    assert rep["all_zero"] is False and len(rep["nonzero_layers"]) == tiny.config.n_layers
    again = M2UGen.from_config(M2UGenConfig.preset("tiny"), tokenizer=tiny.tokenizer)
    assert all(torch.equal(a.attention.gate, b.attention.gate) for a, b in zip(tiny.llama.layers, again.llama.layers))
    zero = M2UGen.from_config(M2UGenConfig.preset("tiny").replace(gate_init="zero"), tokenizer=tiny.tokenizer)
    assert zero.gate_report()["all_zero"] is True
    assert M2UGenConfig.preset("musicgen-medium").gate_init == "zero"  # real presets: the official init
    with pytest.raises(ValueError, match="gate_init"):
        M2UGen.from_config(M2UGenConfig.preset("tiny").replace(gate_init="ones"), tokenizer=tiny.tokenizer)


def test_audio_changes_the_answer(tiny, mono):
    a = tiny.chat("What is this music?", audio=(sine(), SR), want_audio=False, **FAST)
    b = tiny.chat("What is this music?", audio=(noise(), SR), want_audio=False, **FAST)
    assert a.raw_text != b.raw_text
    ids = torch.tensor([tiny.prompt_ids("What is this music?")])
    fa, fb = (tiny.music_encoder.encode(x) for x in (sine(), noise()))
    assert (tiny.next_token_logits(ids, audio_feats=fa) - tiny.next_token_logits(ids, audio_feats=fb)).abs().max() > 1e-3
    # the control: with zero gates the same two sources give the same logits
    torch.testing.assert_close(mono.next_token_logits(ids, audio_feats=fa), mono.next_token_logits(ids, audio_feats=fb))


def test_image_and_video_change_the_answer(tiny):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), np.full((40, 48, 3), 200, np.uint8)]
    videos = [[rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(4)],
              [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(4)]]
    ids = torch.tensor([tiny.prompt_ids("Describe it.")])
    li = [tiny.next_token_logits(ids, image_feats=tiny.image_encoder.encode(x)) for x in images]
    lv = [tiny.next_token_logits(ids, video_feats=tiny.video_encoder.encode(x)) for x in videos]
    assert (li[0] - li[1]).abs().max() > 1e-3 and (lv[0] - lv[1]).abs().max() > 1e-3
    ti = [tiny.chat("Describe it.", image=x, want_audio=False, **FAST).raw_text for x in images]
    tv = [tiny.chat("Describe it.", video=x, want_audio=False, **FAST).raw_text for x in videos]
    assert ti[0] != ti[1] and tv[0] != tv[1]


# ----------------------------------------------------------------------------------------------
# mode="text": the official behaviour, unchanged


def test_text_mode_is_the_official_decoding(mono):
    with decoder_calls(mono.decoder) as calls:
        default = mono.chat("Make music", audio=(sine(), SR), want_audio=True, **FAST)
        text = mono.chat("Make music", audio=(noise(), SR), want_audio=True, mode="text", **FAST)
    # exactly the official call: reply text, length, guidance, seed, nothing of the source
    assert set(calls[0]) == {"text", "duration_s", "guidance_scale", "seed", "tokens_per_s", "on_progress"}
    assert calls[0]["text"] == default.raw_text and calls[0]["seed"] == 3
    assert default.mode == text.mode == "text"
    np.testing.assert_array_equal(default.audio, text.audio)  # the source does not reach the decoder
    again = mono.decoder.generate(**{k: v for k, v in calls[0].items() if k != "on_progress"})
    np.testing.assert_array_equal(default.audio, again[:, :default.audio.shape[1]])


# ----------------------------------------------------------------------------------------------
# mode="continue"


def _prompt_codes_seen(model, run):
    """Run ``run()``; return the codes of the decoder's first (prefill) input with the delay undone
    (the first ids each codebook's embedding sees: transformers' generate and our loop both embed there)."""
    lm = model.decoder.model.decoder.model.decoder
    seen: dict[int, torch.Tensor] = {}
    for k, table in enumerate(lm.embed_tokens):
        def spy(ids, k=k, original=table.forward):
            seen.setdefault(k, ids.reshape(-1, ids.shape[-1])[0].clone())  # conditional branch: [1 + S]
            return original(ids)

        table.forward = spy
    try:
        out = run()
    finally:
        for table in lm.embed_tokens:
            del table.forward
    return out, [seen[k][1 + k:] for k in range(lm.num_codebooks)]  # codebook k delayed by k: its first S - k codes


def test_continue_prompts_with_encodec_codes_of_the_source(mono):
    dec = mono.decoder
    reply, codes = _prompt_codes_seen(
        mono, lambda: mono.chat("Continue it", audio=(sine(), SR), mode="continue", **FAST))
    assert reply.mode == "continue" and reply.audio.shape == (1, round(0.3 * dec.sample_rate))  # exact length
    source = __import__("m2ugen.media", fromlist=["load_audio"]).load_audio((sine(), SR), dec.sample_rate)
    n = dec.prompt_samples(len(source))
    assert n == len(source) // dec.hop_length * dec.hop_length
    own = dec.model.audio_encoder.encode(torch.from_numpy(source[-n:])[None, None]).audio_codes[0, 0]
    assert own.shape == (4, n // dec.hop_length) and len(codes[0]) == n // dec.hop_length
    for k, row in enumerate(codes):
        assert torch.equal(row, own[k, :len(row)])

    other = mono.chat("Continue it", audio=(noise(), SR), mode="continue", **FAST)
    assert other.raw_text == reply.raw_text  # zero gates: the LLM did not hear the difference ...
    assert np.abs(other.audio - reply.audio).max() > 1e-4  # ... the decoder did
    control = [mono.chat("Continue it", audio=(x, SR), mode="text", want_audio=True, **FAST).audio
               for x in (sine(), noise())]
    np.testing.assert_array_equal(control[0], control[1])


def test_continue_with_source_starts_with_the_redecoded_source(mono):
    dec = mono.decoder
    new = mono.chat("Continue it", audio=(sine(), SR), mode="continue", **FAST)
    both = mono.chat("Continue it", audio=(sine(), SR), mode="continue", continuation="with_source", **FAST)
    source = __import__("m2ugen.media", fromlist=["load_audio"]).load_audio((sine(), SR), dec.sample_rate)
    n = dec.prompt_samples(len(source))
    assert both.audio.shape == (1, n + new.audio.shape[1])
    codes = dec.model.audio_encoder.encode(torch.from_numpy(source[-n:])[None, None]).audio_codes
    redecoded = dec.model.audio_encoder.decode(codes, [None]).audio_values[0].numpy()
    np.testing.assert_allclose(both.audio[:, :n], redecoded[:, :n], atol=1e-5)
    np.testing.assert_array_equal(both.audio[:, n:], new.audio)  # then the same continuation


# ----------------------------------------------------------------------------------------------
# mode="melody"


def test_melody_conditions_on_the_chroma_of_the_source(melody):
    with decoder_calls(melody.decoder) as calls:
        a = melody.chat("Same tune, strings", audio=(sine(440.0), SR), mode="melody", **FAST)
        b = melody.chat("Same tune, strings", audio=(sine(261.63), SR), mode="melody", **FAST)
        given = melody.chat("Same tune, strings", chroma=calls[0]["chroma"], mode="melody", **FAST)
    ca, cb = calls[0]["chroma"], calls[1]["chroma"]
    np.testing.assert_array_equal(ca, chroma.chroma_from_audio(sine(440.0), SR))
    assert set(ca.argmax(1)) == {9} and set(cb.argmax(1)) == {0}  # A and C
    assert a.raw_text == b.raw_text and a.audio.shape == (1, round(0.3 * melody.sample_rate))
    assert np.abs(a.audio - b.audio).max() > 1e-4
    np.testing.assert_array_equal(given.audio, a.audio)  # a precomputed chroma is the same condition
    control = [melody.chat("Same tune, strings", audio=(sine(f), SR), mode="text", want_audio=True, **FAST).audio
               for f in (440.0, 261.63)]
    np.testing.assert_array_equal(control[0], control[1])


def test_melody_decoder_strict_official_names(melody):
    dec = melody.decoder
    sd = {dec._official_name(k): v.clone() for k, v in dec.model.state_dict().items()}
    expected = dec.expected_shapes()
    # the fixed sinusoids, a parameter in transformers 4.35 checkpoints, a non-saved buffer in 5.x: optional
    assert set(expected) - set(sd) == {"decoder.model.decoder.embed_positions.weights"}
    assert set(sd) <= set(expected) and "audio_enc_to_dec_proj.weight" in expected
    fresh = decoders.MusicGenMelodyDecoder(dec.cfg)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.model.audio_enc_to_dec_proj.weight, dec.model.audio_enc_to_dec_proj.weight)
    with pytest.raises(ValueError, match=r"unexpected key\(s\): bogus"):
        decoders.MusicGenMelodyDecoder(dec.cfg).load_state_dict(dict(sd, bogus=torch.zeros(1)))


# ----------------------------------------------------------------------------------------------
# stereo


def test_stereo_decoder_makes_two_different_channels(tiny):
    stereo = deaf("tiny-stereo", tiny.tokenizer)
    assert stereo.decoder_info()["channels"] == 2 and stereo.name == "tiny-stereo"
    r = stereo.chat("Make music", want_audio=True, **FAST)
    assert r.audio.shape == (2, round(0.3 * stereo.sample_rate))
    assert np.abs(r.audio[0] - r.audio[1]).max() > 1e-4
    left_right = np.stack([sine(440.0), sine(261.63)])  # a stereo source keeps its two channels
    c = stereo.chat("Continue it", audio=(left_right, SR), mode="continue", **FAST)
    assert c.audio.shape == r.audio.shape
    wide = M2UGenConfig.preset("tiny-stereo")
    wide = wide.replace(decoder_config=dict(wide.decoder_config,
                                            text_encoder=dict(wide.decoder_config["text_encoder"], d_model=48)))
    with pytest.raises(ValueError, match=r"output_dim=32.*text encoder \(48.*2 channel"):
        M2UGen.from_config(wide, tokenizer=tiny.tokenizer).chat("Make music", conditioning="embedding", **FAST)


# ----------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("preset,kw,match", [
    ("tiny", dict(mode="melody", audio=(sine(), SR)), r"mode='melody'.*MusicGen \(tiny random\).*MusicGen-Melody"),
    ("tiny-melody", dict(mode="continue", audio=(sine(), SR)), r"mode='continue'.*MusicGen-Melody"),
    ("tiny", dict(mode="remix"), "mode must be one of"),
    ("tiny", dict(mode="continue"), "needs the source audio"),
    ("tiny-melody", dict(mode="melody"), "needs a source"),
    ("tiny", dict(mode="continue", audio=(sine(), SR), continuation="all"), "continuation must be"),
    ("tiny", dict(continuation="with_source"), "needs mode='continue'"),
    ("tiny", dict(chroma=np.eye(12)), "only used by mode='melody'"),
    ("tiny", dict(mode="continue", audio=(sine(), SR), want_audio=False), "want_audio=False"),
    ("tiny", dict(mode="continue", audio=(sine(seconds=0.01), SR)), "at least one EnCodec frame"),
])
def test_refusals_name_the_mode_and_decoder(preset, kw, match, mono, melody):
    model = {"tiny": mono, "tiny-melody": melody}[preset]
    with pytest.raises(ValueError, match=match):
        model.chat("Edit it", **{**FAST, **kw})


def test_audioldm2_cannot_continue_or_follow_a_melody():
    dec = decoders.AudioLDM2Decoder(M2UGenConfig.preset("tiny-audioldm2"))  # not built: the check is cheap
    for mode in ("continue", "melody"):
        with pytest.raises(ValueError, match=rf"mode='{mode}' is not possible with the loaded decoder AudioLDM2"):
            decoders.check_mode(dec, mode)
    decoders.check_mode(dec, "text")


@pytest.mark.parametrize("preset,heads,chroma_proj", [
    ("musicgen-stereo-medium", 8, None),
    ("musicgen-stereo-melody", 8, (1536, 12)),
])
def test_real_melody_and_stereo_shapes_on_meta(preset, heads, chroma_proj):
    """The real decoders' official-named shapes from their public configs alone (nothing built, no file)."""
    from m2ugen.checkpoint import offline_config

    cfg = offline_config(preset)
    dec = decoders.build_decoder(cfg)
    shapes = dec.expected_shapes()
    assert dec.loaded is False and dec.text_dim == cfg.output_dim == 768
    assert f"decoder.lm_heads.{heads - 1}.weight" in shapes and f"decoder.lm_heads.{heads}.weight" not in shapes
    assert shapes["decoder.model.decoder.layers.47.fc2.weight"] == (1536, 6144)
    assert shapes.get("audio_enc_to_dec_proj.weight") == chroma_proj
    assert dec.channels == (2 if heads == 8 else 1) and dec.num_samples(1.0) == (51 - 3) * 640
