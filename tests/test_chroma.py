"""m2ugen.chroma against MusicgenMelodyFeatureExtractor's own math and against pure tones."""

from __future__ import annotations

import ast
import importlib.util
import types

import numpy as np
import pytest
import torch

from m2ugen import chroma


def tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


@pytest.mark.parametrize("freq,name", [(440.0, "A"), (261.63, "C"), (369.99, "F#"), (987.77, "B")])
def test_pure_tone_is_its_pitch_class_in_every_frame(freq, name):
    sr = 44100  # resampled to 32 kHz inside
    c = chroma.chroma_from_audio(tone(freq, 2.0, sr), sr)
    n32 = int(round(2.0 * 32000))
    assert c.shape == (1 + n32 // 4096, 12) == (chroma.num_frames(n32), 12)
    assert c.dtype == np.float32 and np.all(c.sum(axis=1) == 1.0)  # one-hot per frame
    assert [chroma.PITCH_CLASSES[i] for i in c.argmax(axis=1)] == [name] * c.shape[0]


def test_stereo_is_averaged_and_long_audio_cut_at_30_s():
    sr = 32000
    a4, c4 = tone(440.0, 1.0, sr), tone(261.63, 1.0, sr)
    both = chroma.chroma_from_audio(np.stack([a4, 0.2 * c4]), sr)  # louder A wins after averaging
    assert set(both.argmax(axis=1)) == {9}
    long = np.tile(a4, 31)
    assert chroma.chroma_from_audio(long, sr).shape[0] == 1 + 30 * sr // 4096
    assert chroma.chroma_from_audio(long, sr, max_seconds=None).shape[0] == 1 + 31 * sr // 4096
    short = chroma.chroma_from_audio(a4[:1000], sr)  # shorter than n_fft: zero-padded to it
    assert short.shape == (1 + 16384 // 4096, 12)


def _reference_power_spectrogram(x: np.ndarray, n_fft: int = 16384, hop: int = 4096) -> np.ndarray:
    """torchaudio's Spectrogram(n_fft, hop, power=2, center=True, normalized=True), written with numpy."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    frames = [padded[i:i + n_fft] * window for i in range(0, len(padded) - n_fft + 1, hop)]
    spec = np.abs(np.fft.rfft(np.stack(frames), axis=1)) ** 2 / np.sum(window ** 2)
    return spec.T  # [F, T]


def _extractor_method():
    """MusicgenMelodyFeatureExtractor._torch_extract_fbank_features, compiled from transformers' own source
    (the class itself refuses to exist without torchaudio)."""
    path = importlib.util.find_spec("transformers.models.musicgen_melody.feature_extraction_musicgen_melody").origin
    tree = ast.parse(open(path).read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MusicgenMelodyFeatureExtractor")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "_torch_extract_fbank_features")
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), namespace)
    return namespace["_torch_extract_fbank_features"]


@pytest.mark.parametrize("samples", [3 * 32000 + 123, 5000])
def test_matches_the_feature_extractor(samples):
    from transformers.audio_utils import chroma_filter_bank

    x = np.random.default_rng(samples).standard_normal(samples).astype(np.float32)
    # the STFT step against an independent numpy spectrogram (short clips: after the extractor's padding)
    padded = np.pad(x, ((16384 - samples) // 2, 16384 - samples - (16384 - samples) // 2)) if samples < 16384 else x
    ref_power = _reference_power_spectrogram(padded)
    ours_power = chroma.power_spectrogram(x)
    np.testing.assert_allclose(ours_power, ref_power, rtol=2e-3, atol=1e-6 * ref_power.max())
    # the filter bank, normalisation and one-hot steps: the extractor's own code on that spectrogram
    extractor = types.SimpleNamespace(
        n_fft=16384,
        chroma_filters=torch.from_numpy(chroma_filter_bank(sampling_rate=32000, num_frequency_bins=16384, tuning=0,
                                                           num_chroma=12)).float(),
        spectrogram=lambda w: torch.from_numpy(
            np.stack([_reference_power_spectrogram(row.numpy()) for row in w])).float()[:, None],
    )
    expected = _extractor_method()(extractor, torch.from_numpy(x)[None])[0].numpy()
    ours = chroma.chroma_from_spectrogram(ours_power)
    assert ours.shape == expected.shape == (chroma.num_frames(samples), 12)
    assert (ours.argmax(1) == expected.argmax(1)).mean() >= 0.95  # ties aside, the same pitch class
    np.testing.assert_array_equal(chroma.chroma_from_spectrogram(ref_power.astype(np.float32)), expected)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 11)), r"\[frames, 12\]"),
    (np.zeros((0, 12)), "at least one frame"),
    (np.full((3, 12), np.nan), "NaN"),
    (-np.ones((3, 12)), "non-negative"),
    (np.array([["a"] * 12]), "numeric"),
])
def test_check_chroma_refuses_malformed_input(bad, match):
    with pytest.raises(ValueError, match=match):
        chroma.check_chroma(bad)
    assert chroma.check_chroma(np.eye(12)[None]).shape == (12, 12)  # batched [1, T, 12] accepted
