"""Music decoders on tiny random configs: lengths, seeding, guidance, progress/cancel, weights."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from m2ugen.config import M2UGenConfig
from m2ugen.decoders import (
    AudioLDM2Decoder,
    MusicGenDecoder,
    build_decoder,
    continue_hidden_states,
    prompt_token_limits,
    tiny_t5_tokenizer_dir,
)
from m2ugen.submodel import legacy_weight_norm_name


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # the test box has 2 cores shared by parallel jobs: 2 OpenMP threads each spin and slow to a crawl
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", autouse=True)
def _data_dir(tmp_path_factory):
    old = os.environ.get("M2UGEN_DATA_DIR")
    os.environ["M2UGEN_DATA_DIR"] = str(tmp_path_factory.mktemp("m2ugen-data"))
    yield
    if old is None:
        os.environ.pop("M2UGEN_DATA_DIR", None)
    else:
        os.environ["M2UGEN_DATA_DIR"] = old


@pytest.fixture(scope="module")
def musicgen() -> MusicGenDecoder:
    return build_decoder(M2UGenConfig.preset("tiny"))


@pytest.fixture(scope="module")
def audioldm2() -> AudioLDM2Decoder:
    return build_decoder(M2UGenConfig.preset("tiny-audioldm2"))


class Cancelled(Exception):
    pass


# ----------------------------------------------------------------------------------------------
# MusicGen


def test_build_decoder_is_lazy_and_picks_the_class():
    d = build_decoder(M2UGenConfig.preset("tiny"))
    assert isinstance(d, MusicGenDecoder) and d.loaded is False
    assert d.sample_rate == 32000 and d.frame_rate == 50  # known without building
    assert d.loaded is False
    assert isinstance(build_decoder(M2UGenConfig.preset("tiny-audioldm2")), AudioLDM2Decoder)
    with pytest.raises(ValueError, match="unknown music_decoder"):
        build_decoder(M2UGenConfig.preset("tiny").replace(music_decoder="jukebox"))


def test_musicgen_text_mode_length_and_seed(musicgen):
    # 51.2 tokens/s * 1 s = 51 decoder steps; 4 codebooks in a delay pattern cost 3 steps;
    # 48 EnCodec frames at 50 Hz of 640 samples (32 kHz) each
    a = musicgen.generate(text="a calm piano melody [AUD0][AUD1]", duration_s=1.0, seed=7)
    assert a.dtype == np.float32 and a.shape == (1, (51 - 3) * 640) == (1, musicgen.num_samples(1.0))
    assert np.isfinite(a).all() and np.abs(a).max() > 0
    b = musicgen.generate(text="a calm piano melody [AUD0][AUD1]", duration_s=1.0, seed=7)
    np.testing.assert_array_equal(a, b)
    c = musicgen.generate(text="a calm piano melody [AUD0][AUD1]", duration_s=1.0, seed=8)
    assert not np.array_equal(a, c)
    # 2.5 s -> int(128.0) = 128 steps -> 125 frames
    assert musicgen.generate(text="rock", duration_s=2.5, seed=1).shape == (1, 125 * 640)
    # past the decoder's 1024 positions (20 s here) the sinusoidal positions are extended
    assert musicgen.generate(text="rock", duration_s=20.5, seed=1).shape == (1, (1049 - 3) * 640)


def test_musicgen_embedding_mode_with_guidance(musicgen):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 8, 32, generator=g)
    a = musicgen.generate(embeds=emb, duration_s=0.5, seed=3, guidance_scale=3.5)
    assert a.shape == (1, (int(51.2 * 0.5) - 3) * 640)
    np.testing.assert_array_equal(a, musicgen.generate(embeds=emb, duration_s=0.5, seed=3, guidance_scale=3.5))
    # guidance and the conditioning both change the result
    assert not np.array_equal(a, musicgen.generate(embeds=emb, duration_s=0.5, seed=3, guidance_scale=1.0))
    other = torch.randn(1, 8, 32, generator=g)
    assert not np.array_equal(a, musicgen.generate(embeds=other, duration_s=0.5, seed=3, guidance_scale=3.5))
    # [Nq, D] without the batch axis is accepted
    np.testing.assert_array_equal(a, musicgen.generate(embeds=emb[0], duration_s=0.5, seed=3, guidance_scale=3.5))


def test_embedding_mode_equals_text_mode_on_the_text_embedding(musicgen):
    """With a caption that fills all 128 T5 positions (no padding mask), feeding T5(text) as embeds must give
    exactly the text-mode audio: the pass-through and its zero null branch match MusicGen's own CFG."""
    caption = "a calm piano melody with soft strings and a slow tempo " * 20
    mask = musicgen._text_inputs([caption])["attention_mask"]
    assert int(mask.sum()) == 128
    emb = musicgen.text_embedding([caption])
    assert emb.shape == (1, 128, 32)
    a = musicgen.generate(text=caption, duration_s=0.4, seed=11, guidance_scale=3.0)
    b = musicgen.generate(embeds=emb, duration_s=0.4, seed=11, guidance_scale=3.0)
    np.testing.assert_array_equal(a, b)
    # not vacuous: another caption (also 128 tokens) gives other audio at the same seed
    other = musicgen.generate(text="loud drums and distorted guitars " * 30, duration_s=0.4, seed=11, guidance_scale=3.0)
    assert not np.array_equal(a, other)


def test_text_embedding_shape(musicgen):
    out = musicgen.text_embedding(["calm piano", "loud drums"])
    assert out.shape == (2, 128, 32) and out.dtype == torch.float32
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="non-empty list"):
        musicgen.text_embedding("calm piano")


def test_musicgen_progress_and_cancel(musicgen):
    seen: list[float] = []
    musicgen.generate(text="jazz", duration_s=0.5, seed=1, on_progress=seen.append)
    n = int(51.2 * 0.5)
    assert len(seen) == n and seen[-1] == 1.0
    assert all(b > a for a, b in zip(seen, seen[1:]))

    def stop_at_five(fraction: float):
        if fraction >= 5 / n:
            raise Cancelled(f"cancelled at {fraction:.2f}")

    with pytest.raises(Cancelled, match="cancelled at"):
        musicgen.generate(text="jazz", duration_s=0.5, on_progress=stop_at_five)
    t5 = musicgen.model.text_encoder
    with pytest.raises(Cancelled):
        musicgen.generate(embeds=torch.zeros(1, 4, 32), duration_s=0.5, on_progress=stop_at_five)
    assert musicgen.model.text_encoder is t5  # the pass-through is removed again after an error


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(duration_s=1.0), "exactly one of text= or embeds="),
        (dict(text="a", embeds=torch.zeros(1, 4, 32), duration_s=1.0), "exactly one"),
        (dict(text="a", duration_s=0.0), "positive number of seconds"),
        (dict(text="a", duration_s=float("nan")), "positive number of seconds"),
        (dict(text="a", duration_s=0.02), "decoder steps"),
        (dict(embeds=torch.zeros(1, 4, 31), duration_s=1.0), r"\[1, 4, 32\]"),
        (dict(embeds=torch.full((1, 4, 32), float("nan")), duration_s=1.0), "NaN"),
        (dict(text=123, duration_s=1.0), "must be a string"),
        (dict(embeds=torch.zeros(32), duration_s=1.0), r"\[1, 1, 32\]"),
        (dict(embeds=[[0.0] * 32], duration_s=1.0), "torch.Tensor"),
        (dict(text="a", duration_s=True), "positive number of seconds"),
    ],
)
def test_musicgen_bad_requests(musicgen, kwargs, match):
    with pytest.raises(ValueError, match=match):
        musicgen.generate(**kwargs)


def _legacy_sd(model: torch.nn.Module, seed: int) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    ours = {}
    for k, v in model.state_dict().items():
        ours[k] = v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
    ours["text_encoder.encoder.embed_tokens.weight"] = ours["text_encoder.shared.weight"]  # tied, as saved
    legacy = {legacy_weight_norm_name(k): v for k, v in ours.items()}
    return ours, legacy


def test_musicgen_official_names_round_trip(musicgen):
    cfg = M2UGenConfig.preset("tiny")
    expected = MusicGenDecoder(cfg).expected_shapes()
    assert "audio_encoder.encoder.layers.0.conv.weight_g" in expected
    assert "audio_encoder.encoder.layers.0.conv.weight_v" in expected
    assert not any("parametrizations" in k for k in expected)
    assert expected["decoder.model.decoder.embed_positions.weights"] == (1024, 48)

    ours, legacy = _legacy_sd(musicgen.model, 0)
    legacy["decoder.model.decoder.embed_positions.weights"] = torch.zeros(1024, 48)
    assert set(legacy) == set(expected)
    fresh = MusicGenDecoder(cfg)
    fresh.load_state_dict(legacy)
    assert fresh.loaded is False
    got = fresh.model.state_dict()
    for k, v in ours.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    # and the loaded model generates (tied T5 embeddings, weight-norm parametrizations all real)
    assert fresh.generate(text="piano", duration_s=0.3, seed=0).shape == (1, (15 - 3) * 640)


def test_musicgen_state_dict_errors(musicgen):
    cfg = M2UGenConfig.preset("tiny")
    _, legacy = _legacy_sd(musicgen.model, 1)
    bad = dict(legacy)
    bad["enc_to_dec_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"mis-shaped key\(s\): enc_to_dec_proj\.weight"):
        MusicGenDecoder(cfg).load_state_dict(bad)
    with pytest.raises(ValueError, match=r"unexpected key\(s\): decoder\.bogus"):
        MusicGenDecoder(cfg).load_state_dict(dict(legacy, **{"decoder.bogus": torch.zeros(1)}))
    missing = dict(legacy)
    del missing["audio_encoder.encoder.layers.0.conv.weight_g"]
    with pytest.raises(ValueError, match=r"missing key\(s\): audio_encoder\.encoder\.layers\.0\.conv\.weight_g"):
        MusicGenDecoder(cfg).load_state_dict(missing)
    with pytest.raises(ValueError, match="embed_positions"):
        MusicGenDecoder(cfg).load_state_dict(dict(legacy, **{
            "decoder.model.decoder.embed_positions.weights": torch.zeros(5, 5)}))


def test_musicgen_medium_expected_shapes_on_meta():
    """Official generation_model.* shapes of MusicGen-medium (reference §2.4), from the config alone."""
    t5 = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    encodec = dict(sampling_rate=32000, audio_channels=1, num_filters=64, hidden_size=128, codebook_size=2048,
                   codebook_dim=128, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_lstm_layers=2)
    dec = dict(vocab_size=2048, max_position_embeddings=2048, hidden_size=1536, num_hidden_layers=48,
               num_attention_heads=24, ffn_dim=6144, num_codebooks=4, pad_token_id=2048, bos_token_id=2048,
               decoder_start_token_id=2048)
    cfg = M2UGenConfig.preset("tiny").replace(decoder_config=dict(text_encoder=t5, audio_encoder=encodec, decoder=dec))
    d = MusicGenDecoder(cfg)
    shapes = d.expected_shapes()
    assert d.loaded is False
    assert shapes["enc_to_dec_proj.weight"] == (1536, 768)  # reference §2.4: [1536, 768] for medium
    assert shapes["decoder.model.decoder.embed_positions.weights"] == (2048, 1536)
    assert shapes["decoder.lm_heads.3.weight"] == (2048, 1536)
    assert shapes["audio_encoder.quantizer.layers.3.codebook.embed"] == (2048, 128)
    assert "decoder.model.decoder.layers.47.fc2.weight" in shapes
    assert "audio_encoder.decoder.layers.0.conv.weight_g" in shapes


def _pieces(d) -> list[tuple[str, float]]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(d / "spiece.model"))
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


def test_tiny_t5_tokenizer_is_cached_and_deterministic(tmp_path):
    a = tiny_t5_tokenizer_dir()
    b = tiny_t5_tokenizer_dir()
    assert a == b and (a / "spiece.model").is_file()
    os.environ["M2UGEN_DATA_DIR"], old = str(tmp_path), os.environ["M2UGEN_DATA_DIR"]
    try:
        c = tiny_t5_tokenizer_dir()
    finally:
        os.environ["M2UGEN_DATA_DIR"] = old
    assert c != a and _pieces(c) == _pieces(a)  # retrained to the same pieces and scores
    pieces = [p for p, _ in _pieces(a)]
    assert pieces[:3] == ["<pad>", "</s>", "<unk>"] and len(pieces) <= 96


# ----------------------------------------------------------------------------------------------
# AudioLDM2


def test_audioldm2_embedding_mode(audioldm2):
    assert audioldm2.sample_rate == 16000
    assert audioldm2.embed_split() == (4, 32, 8, 16)  # 4 x 32 T5-space ++ 8 x 16 GPT-2-space = 256
    emb = torch.randn(1, 1, 256, generator=torch.Generator().manual_seed(0))
    seen: list[float] = []
    a = audioldm2.generate(embeds=emb, duration_s=0.5, seed=2, on_progress=seen.append)
    assert a.dtype == np.float32 and a.shape == (1, 8000)  # int(0.5 * 16000)
    assert np.isfinite(a).all()
    assert seen == [1 / 3, 2 / 3, 1.0]  # cfg.audioldm2_steps = 3
    np.testing.assert_array_equal(a, audioldm2.generate(embeds=emb, duration_s=0.5, seed=2))
    assert not np.array_equal(a, audioldm2.generate(embeds=emb, duration_s=0.5, seed=3))
    with pytest.raises(ValueError, match=r"\[1, 1, 256\]"):
        audioldm2.generate(embeds=torch.zeros(1, 1, 255), duration_s=0.5)


def test_audioldm2_text_mode_and_cancel(audioldm2):
    a = audioldm2.generate(text="calm piano [AUD0]", duration_s=0.3, seed=1)
    assert a.shape == (1, 4800)
    np.testing.assert_array_equal(a, audioldm2.generate(text="calm piano [AUD0]", duration_s=0.3, seed=1))

    def cancel(fraction):
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        audioldm2.generate(text="calm piano", duration_s=0.3, on_progress=cancel)


def test_audioldm2_text_mode_ranks_several_waveforms():
    """cfg.audioldm2_waveforms > 1 (official: 3): diffusers ranks the candidates with CLAP; we return the best."""
    d = build_decoder(M2UGenConfig.preset("tiny-audioldm2").replace(audioldm2_waveforms=2))
    assert d.generate(text="calm piano", duration_s=0.2, seed=1).shape == (1, 3200)


def test_audioldm2_prompt_bound_is_what_the_gpt2_takes(audioldm2):
    """The T5 bound is exact: the projection (CLAP 1 + T5 T, each in SOS ... EOS) and the 7 fed-back
    states of the GPT-2 step fill the tiny GPT-2's 99 positions at T = 87; one more token overflows."""
    pipe = audioldm2.pipe
    clap_limit, t5_limit = prompt_token_limits(pipe)
    assert t5_limit == 99 - 5 - 7
    assert pipe.tokenizer_2.model_max_length == t5_limit  # the pipeline's own truncation stops there

    def gpt2_step(n_t5: int) -> torch.Tensor:
        proj = pipe.projection_model(hidden_states=torch.zeros(1, 1, 16), hidden_states_1=torch.zeros(1, n_t5, 32))
        return continue_hidden_states(pipe.language_model, proj.hidden_states, 8)

    with torch.no_grad():
        assert gpt2_step(t5_limit).shape == (1, 8, 16)
        with pytest.raises(IndexError):
            gpt2_step(t5_limit + 1)


def test_audioldm2_long_prompt_is_truncated_with_a_warning(audioldm2, caplog):
    long = "calm piano with soft strings over a slow beat, " * 12
    with caplog.at_level(logging.WARNING, logger="m2ugen.decoders"):
        a = audioldm2.generate(text=long, duration_s=0.2, seed=1)
    assert a.shape == (1, 3200) and np.isfinite(a).all()
    assert "only the first 87 are used" in caplog.text
    # what lies past the bound is dropped: another tail gives the same audio
    np.testing.assert_array_equal(a, audioldm2.generate(text=long + " loud drums", duration_s=0.2, seed=1))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="m2ugen.decoders"):
        audioldm2.generate(text="calm piano", duration_s=0.2, seed=1)
    assert "only the first" not in caplog.text


def test_audioldm2_has_no_checkpoint_keys(audioldm2):
    assert audioldm2.expected_shapes() == {}
    audioldm2.load_state_dict({})
    with pytest.raises(ValueError, match="no generation_model"):
        audioldm2.load_state_dict({"unet.conv_in.weight": torch.zeros(1)})


def test_gpt2_continuation_matches_full_recompute(audioldm2):
    """Our KV-cached replacement of generate_language_model equals the plain loop that re-runs the
    whole sequence and appends the last hidden state each step."""
    lm = audioldm2.pipe.language_model
    x = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cached = continue_hidden_states(lm, x, 8)
        seq = x
        for _ in range(8):
            h = lm(inputs_embeds=seq).last_hidden_state[:, -1:]
            seq = torch.cat([seq, h], dim=1)
    assert cached.shape == (1, 8, 16)
    torch.testing.assert_close(cached, seq[:, -8:], rtol=1e-5, atol=1e-5)
