"""m2ugen.fit: bar-exact lengths, loudness targets under a true-peak ceiling, seamless loops, tempo fit.

Loudness is checked with pyloudnorm directly and true peak with scipy's 4x polyphase oversampler, not
with the functions under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly
from test_analysis import click_track

from m2ugen import fit
from m2ugen.analysis import analyze

SR = 44100


def lufs(wave, sr=SR):
    import pyloudnorm

    return pyloudnorm.Meter(sr).integrated_loudness(wave.T.astype(np.float64))


def true_peak_db(wave):
    return 20 * np.log10(np.abs(resample_poly(wave.astype(np.float64), 4, 1, axis=1)).max())


def noise(seconds=5.0, level=0.05, channels=2, seed=0):
    return (np.random.default_rng(seed).standard_normal((channels, int(seconds * SR))) * level).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# length


def test_bars_to_seconds_is_bar_exact():
    assert fit.bars_to_seconds(4, 120, "4/4") == 8.0
    assert fit.bars_to_seconds(4, 120, (3, 4)) == 6.0          # the numerator matters
    assert fit.bars_to_seconds(1, 120, "6/8") == 1.5           # so does the denominator (quarter-note BPM)
    assert fit.bars_to_seconds(8, 90, "4/4") == pytest.approx(21.333333333333332, abs=1e-12)
    assert fit.bars_to_seconds(2, 60, [7, 8]) == 7.0
    assert fit.bars_to_samples(3, 92, "4/4", 48000) == round(3 * 4 * 60 / 92 * 48000)


@pytest.mark.parametrize(
    "bars, bpm, ts, match",
    [
        (0, 120, "4/4", "bars"), (-1, 120, "4/4", "bars"), (4, 0, "4/4", "bpm"), (4, float("nan"), "4/4", "bpm"),
        (4, 120, "4/3", "denominator"), (4, 120, "x", "time signature"), (4, 120, (4,), "time signature"),
        (4, 120, "0/4", "beats per bar"), (True, 120, "4/4", "bars"), ("4", 120, "4/4", "bars"),
    ],
)
def test_bars_to_seconds_rejects_bad_input(bars, bpm, ts, match):
    with pytest.raises(ValueError, match=match):
        fit.bars_to_seconds(bars, bpm, ts)


# ----------------------------------------------------------------------------------------------
# loudness


@pytest.mark.parametrize("target", [-23.0, -14.0])
def test_normalize_noise_to_target(target):
    out = fit.normalize_loudness(noise(level=0.01), SR, target_lufs=target)
    assert out.dtype == np.float32 and out.shape == (2, 5 * SR)
    assert lufs(out) == pytest.approx(target, abs=0.5)
    assert true_peak_db(out) <= -1.0 + 0.05


def test_normalize_holds_the_true_peak_ceiling_and_still_reaches_the_target():
    x = noise(level=0.01)
    x[:, SR::SR] = 0.3  # a spike every second: a static gain to -14 LUFS would push them over 0 dBFS
    gain = 10 ** ((-14.0 - lufs(x)) / 20)
    assert true_peak_db(x * gain) > 0.0
    out = fit.normalize_loudness(x, SR, target_lufs=-14.0, true_peak_ceiling_dbtp=-1.0)
    assert lufs(out) == pytest.approx(-14.0, abs=0.5)
    assert true_peak_db(out) <= -1.0 + 0.05 and np.abs(out).max() < 1.0
    stricter = fit.normalize_loudness(x, SR, target_lufs=-14.0, true_peak_ceiling_dbtp=-6.0)
    assert true_peak_db(stricter) <= -6.0 + 0.05  # the ceiling argument is used


def test_limiter_acts_on_true_peak_not_sample_peak():
    n = np.arange(2 * SR)
    x = (0.95 * np.sin(np.pi / 2 * n + np.pi / 4)).astype(np.float32)[None]  # samples at 0.67, peaks at 0.95
    assert 20 * np.log10(np.abs(x).max()) < -1.0 < true_peak_db(x)
    out = fit.limit_true_peak(x, SR, -1.0)
    assert true_peak_db(out) <= -1.0 + 0.05
    quiet = 0.5 * x
    assert np.array_equal(fit.limit_true_peak(quiet, SR, -1.0), quiet)  # under the ceiling: untouched


def test_limiter_gain_never_exceeds_the_gain_each_sample_needs():
    env = np.abs(np.random.default_rng(3).standard_normal(20000)) * 0.4
    env[[5, 700, 701, 19990]] = [3.0, 2.0, 4.0, 5.0]
    gain = fit.limiter_gain(env, 0.9, SR)
    assert np.all(gain <= np.minimum(1.0, 0.9 / env) + 1e-12)
    assert gain.min() == pytest.approx(0.9 / 5.0)
    assert np.all(np.abs(np.diff(gain)) < 0.2)  # ramps, not steps


def test_match_loudness_matches_the_reference():
    quiet = noise(level=0.002, seed=1)
    for level in (0.01, 0.05):
        reference = noise(seconds=3.0, level=level, seed=2)
        out = fit.match_loudness(quiet, SR, reference, SR)
        assert lufs(out) == pytest.approx(lufs(reference), abs=0.5)
    # a reference at another rate and channel count
    reference = noise(seconds=3.0, level=0.02, channels=1, seed=4)[:, ::2]
    out = fit.match_loudness(quiet, SR, reference, SR // 2)
    assert lufs(out) == pytest.approx(lufs(reference, SR // 2), abs=0.5)


def test_unmeasurable_loudness_is_a_clear_error():
    with pytest.raises(ValueError, match="400 ms"):
        fit.normalize_loudness(noise(seconds=0.2), SR)
    with pytest.raises(ValueError, match="silent"):
        fit.match_loudness(noise(), SR, np.zeros((2, SR)), SR)
    with pytest.raises(ValueError, match="true_peak_ceiling_dbtp"):
        fit.normalize_loudness(noise(), SR, true_peak_ceiling_dbtp=0.5)
    with pytest.raises(ValueError, match="target_lufs"):
        fit.normalize_loudness(noise(), SR, target_lufs=3)


# ----------------------------------------------------------------------------------------------
# loop


def tones(seconds=6.0):
    t = np.arange(int(seconds * SR)) / SR
    # 441.3 and 523.7 Hz: no whole number of cycles in a bar, so a plain cut jumps at the wrap
    return np.stack([0.5 * np.sin(2 * np.pi * 441.3 * t), 0.4 * np.sin(2 * np.pi * 523.7 * t + 1.0)]).astype(np.float32)


def test_loop_is_bar_exact_and_seamless():
    x = tones()
    length = fit.bars_to_samples(2, 120, "4/4", SR)
    loop = fit.make_loop(x, SR, 120, "4/4", bars=2)
    assert loop.shape == (2, length)
    for ch in range(2):
        typical = np.median(np.abs(np.diff(loop[ch])))
        wrap = abs(loop[ch, 0] - loop[ch, -1])
        assert wrap <= 1.5 * np.abs(np.diff(x[ch])).max()
        assert abs(x[ch, 0] - x[ch, length - 1]) > 5 * typical  # the plain cut would click
    fade = int(0.05 * SR)
    assert np.array_equal(loop[:, fade:], x[:, fade:length])  # the body is the source, untouched


def test_loop_bars_start_and_time_signature_matter():
    x = tones(seconds=8.0)
    assert fit.make_loop(x, SR, 120, "4/4").shape[1] == 3 * 2 * SR  # 3 whole bars fit with the crossfade
    assert fit.make_loop(x, SR, 120, "3/4", bars=2).shape[1] == 3 * SR
    assert fit.make_loop(x, SR, 90, "4/4", bars=1).shape[1] == round(8 / 3 * SR)
    shifted = fit.make_loop(x, SR, 120, "4/4", bars=1, start_s=1.0)
    assert np.array_equal(shifted[:, SR:], x[:, 2 * SR:3 * SR])


def test_loop_rejects_a_source_too_short():
    x = tones(seconds=4.0)
    with pytest.raises(ValueError, match="need"):
        fit.make_loop(x, SR, 120, "4/4", bars=2)  # exactly 2 bars leave nothing to crossfade
    with pytest.raises(ValueError, match="no whole bar"):
        fit.make_loop(x[:, : SR], SR, 120, "4/4")
    with pytest.raises(ValueError, match="crossfade_s"):
        fit.make_loop(x, SR, 120, "4/4", bars=1, crossfade_s=0)


# ----------------------------------------------------------------------------------------------
# tempo


def test_fit_tempo_100_to_120_bpm_measures_120():
    x = click_track(100, seconds=10.0)
    out = fit.fit_tempo(x, SR, 100, 120)
    assert out.shape == (2, round(x.shape[1] * 100 / 120))
    assert analyze(out, SR).bpm == pytest.approx(120, abs=2)
    assert analyze(x, SR).bpm == pytest.approx(100, abs=2)


def test_fit_tempo_keeps_pitch():
    t = np.arange(3 * SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    out = fit.fit_tempo(x, SR, 90, 120)
    spectrum = np.abs(np.fft.rfft(out[0] * np.hanning(out.shape[1])))
    assert np.argmax(spectrum) * SR / out.shape[1] == pytest.approx(440, abs=2)


@pytest.mark.parametrize("from_bpm, to_bpm, match", [(100, 0, "to_bpm"), (0, 100, "from_bpm"), (20, 120, "stretch")])
def test_fit_tempo_rejects_bad_tempi(from_bpm, to_bpm, match):
    with pytest.raises(ValueError, match=match):
        fit.fit_tempo(np.zeros((1, SR), np.float32), SR, from_bpm, to_bpm)
