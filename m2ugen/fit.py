"""Results that fit the project: bar-exact lengths, loudness targets under a true-peak ceiling, loops, tempo.

    from m2ugen import fit
    fit.bars_to_seconds(4, 120, "4/4")                        # 8.0
    fit.normalize_loudness(wave, sr, target_lufs=-14.0, true_peak_ceiling_dbtp=-1.0)
    fit.match_loudness(wave, sr, reference_wave, reference_sr)  # to the reference's integrated LUFS
    fit.make_loop(wave, sr, bpm=120, time_signature="4/4", bars=4)
    fit.fit_tempo(wave, sr, from_bpm=100, to_bpm=120)          # Rubber Band via pedalboard, pitch kept

Waves are float [channels, samples] (or [samples], returned as [1, samples]) and come back float32
[channels, samples]. Every function raises ValueError naming the bad input.

Conventions and methods:

- Tempo counts quarter notes per minute (as REAPER and Live do), so a bar of N/D lasts
  N * (4 / D) * 60 / bpm seconds: 6/8 at 120 BPM is 1.5 s.
- Loudness: integrated loudness (BS.1770-4, ``m2ugen.analysis.measure_loudness``) is brought to the target
  by a static gain; then ``limit_true_peak`` holds the true peak (4x oversampled,
  ``m2ugen.analysis.true_peak_envelope``) at or under the ceiling. When limiting lowers the loudness, the
  gain is raised again and the limiter rerun (up to 6 passes), so the result reaches the target unless
  the ceiling makes that impossible. The result is never clipped: its true peak, hence every sample, is
  at most the ceiling (at most 0 dBTP).
- The limiter is a look-ahead gain computer, not a compressor: the gain each sample needs
  (ceiling / true-peak envelope, at most 1) goes through a sliding minimum (5 ms ahead, 50 ms behind:
  look-ahead and hold), then a 10 ms moving average. Every averaged point is a minimum over a window that
  contains the sample itself, so the smooth gain is never above the gain that sample needs: peaks are
  caught without overshoot, with a 10 ms linear attack, a 45 ms hold and a 10 ms release. Any residual
  overshoot from the oversampling of the gain-changed signal is removed by rerunning it, then a final
  static trim.
- Loop: ``bars`` bars from ``start_s`` (a bar boundary, e.g. a downbeat), exactly round(seconds * sr)
  samples. The audio that follows the loop end (``crossfade_s``, default 50 ms) is crossfaded into the
  head with equal-power (sine/cosine) fades, so sample 0 of the loop continues from its last sample as the
  source did across the bar line: the wrap has no discontinuity. The source must hold bars + crossfade.
- Tempo: ``pedalboard.time_stretch`` (Rubber Band, high-quality mode, pitch and formants kept),
  stretch factor to_bpm / from_bpm, trimmed or padded to exactly round(samples * from_bpm / to_bpm).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from m2ugen.analysis import as_sample_rate, as_wave, measure_loudness, true_peak_envelope

MAX_PASSES = 6
LOOKAHEAD_S = 0.005
HOLD_S = 0.050
TRUE_PEAK_MARGIN_DB = 0.01   # the limiter aims this far under the ceiling (float32 rounding)
MAX_STRETCH = 4.0            # fit_tempo ratios outside [1/4, 4] are refused


# ----------------------------------------------------------------------------------------------
# checks


def _number(x: Any, name: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: must be a number, got {type(x).__name__}")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {x!r}")
    if low is not None and v <= low:
        raise ValueError(f"{name}: must be greater than {low:g}, got {x!r}")
    if high is not None and v > high:
        raise ValueError(f"{name}: must be at most {high:g}, got {x!r}")
    return v


def _bpm(x: Any, name: str = "bpm") -> float:
    return _number(x, name, low=0.0, high=1000.0)


def parse_time_signature(time_signature: Any) -> tuple[int, int]:
    """"3/4", (3, 4) or [3, 4] -> (3, 4); the denominator must be 1, 2, 4, 8, 16 or 32."""
    ts = time_signature
    if isinstance(ts, str):
        try:
            ts = tuple(int(p) for p in ts.strip().split("/"))
        except ValueError:
            raise ValueError(f"time signature: expected 'N/D' such as '4/4', got {time_signature!r}") from None
    if not isinstance(ts, (tuple, list)) or len(ts) != 2 or not all(
        isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in ts
    ):
        raise ValueError(f"time signature: expected 'N/D' or (N, D), got {time_signature!r}")
    num, den = int(ts[0]), int(ts[1])
    if not 1 <= num <= 64:
        raise ValueError(f"time signature: {num} beats per bar is out of range (1..64)")
    if den not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"time signature: denominator {den} must be 1, 2, 4, 8, 16 or 32")
    return num, den


# ----------------------------------------------------------------------------------------------
# length


def bars_to_seconds(bars: Any, bpm: Any, time_signature: Any = "4/4") -> float:
    """Duration of ``bars`` bars in seconds (quarter-note BPM): bars * N * 4/D * 60 / bpm."""
    n_bars = _number(bars, "bars", low=0.0, high=10000.0)
    num, den = parse_time_signature(time_signature)
    quarters = Fraction(n_bars) * num * Fraction(4, den)
    return float(quarters * 60 / Fraction(_bpm(bpm)))


def bars_to_samples(bars: Any, bpm: Any, time_signature: Any, sr: Any) -> int:
    """Length of ``bars`` bars in samples at ``sr``, rounded to the nearest sample."""
    return int(round(bars_to_seconds(bars, bpm, time_signature) * as_sample_rate(sr)))


# ----------------------------------------------------------------------------------------------
# loudness


def _ceiling(true_peak_ceiling_dbtp: Any) -> float:
    return _number(true_peak_ceiling_dbtp, "true_peak_ceiling_dbtp", low=-60.0, high=0.0)


def _sliding_min(x: np.ndarray, behind: int, ahead: int) -> np.ndarray:
    """out[k] = min(x[k - behind : k + ahead + 1]), the ends padded with 1.0 (no reduction); O(n)."""
    from scipy.ndimage import minimum_filter1d

    size = behind + ahead + 1
    padded = np.pad(x, (behind, ahead), constant_values=1.0)
    # scipy's window for output j starts at j - size // 2, so padded[k : k + size] is output k + size // 2
    return minimum_filter1d(padded, size=size)[size // 2: size // 2 + x.size]


def limiter_gain(envelope: np.ndarray, ceiling: float, sr: int) -> np.ndarray:
    """The limiter's smooth gain [samples] for a true-peak envelope and a linear ceiling (see docstring)."""
    need = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    ahead, behind = max(1, round(LOOKAHEAD_S * sr)), max(1, round(HOLD_S * sr))
    # held[k] for k in [-ahead, n + ahead): the sliding minimum over [k - behind, k + ahead]
    held = _sliding_min(np.pad(need, ahead, constant_values=1.0), behind, ahead)
    # average over k in [n - ahead, n + ahead]: each such window [k - behind, k + ahead] contains n
    width = 2 * ahead + 1
    csum = np.concatenate([[0.0], np.cumsum(held)])
    return np.minimum((csum[width:] - csum[:-width]) / width, need)  # (the minimum: float rounding only)


def limit_true_peak(wave: Any, sr: Any, true_peak_ceiling_dbtp: Any = -1.0) -> np.ndarray:
    """Hold the true peak of ``wave`` at or under the ceiling (dBTP) with the look-ahead limiter."""
    w = as_wave(wave, "limit_true_peak: wave").astype(np.float64)
    sr = as_sample_rate(sr, "limit_true_peak: sample rate")
    ceiling_db = _ceiling(true_peak_ceiling_dbtp)
    return _limit(w, sr, ceiling_db)


def _limit(w: np.ndarray, sr: int, ceiling_db: float) -> np.ndarray:
    ceiling = 10.0 ** (ceiling_db / 20.0)
    aim = 10.0 ** ((ceiling_db - TRUE_PEAK_MARGIN_DB) / 20.0)
    y = w
    for _ in range(3):
        env = true_peak_envelope(y.astype(np.float32), sr)
        if env.max() <= ceiling:
            break
        y = y * limiter_gain(env.astype(np.float64), aim, sr)
    out = y.astype(np.float32)
    peak = float(true_peak_envelope(out, sr).max())
    if peak > ceiling:  # residual overshoot: a final static trim
        out = (out * np.float32(aim / peak)).astype(np.float32)
    return out


def normalize_loudness(wave: Any, sr: Any, target_lufs: Any = -14.0, true_peak_ceiling_dbtp: Any = -1.0) -> np.ndarray:
    """Gain to ``target_lufs`` (integrated, BS.1770-4), true peak held at or under the ceiling."""
    w = as_wave(wave, "normalize_loudness: wave")
    sr = as_sample_rate(sr, "normalize_loudness: sample rate")
    target = _number(target_lufs, "target_lufs", low=-70.0, high=0.0)
    return _normalize(w, sr, target, _ceiling(true_peak_ceiling_dbtp), "normalize_loudness: wave")


def match_loudness(wave: Any, sr: Any, reference_wave: Any, reference_sr: Any,
                   true_peak_ceiling_dbtp: Any = -1.0) -> np.ndarray:
    """Bring ``wave`` to the integrated loudness of ``reference_wave`` (true peak under the ceiling)."""
    w = as_wave(wave, "match_loudness: wave")
    sr = as_sample_rate(sr, "match_loudness: sample rate")
    ref = as_wave(reference_wave, "match_loudness: reference_wave")
    ref_sr = as_sample_rate(reference_sr, "match_loudness: reference sample rate")
    target = measure_loudness(ref, ref_sr)
    if target is None:
        raise ValueError(_unmeasurable("match_loudness: reference_wave", ref, ref_sr))
    return _normalize(w, sr, target, _ceiling(true_peak_ceiling_dbtp), "match_loudness: wave")


def _unmeasurable(name: str, w: np.ndarray, sr: int) -> str:
    seconds = w.shape[1] / sr
    if seconds < 0.4:
        return f"{name}: loudness needs at least one 400 ms gating block; the clip is {seconds * 1e3:.0f} ms"
    return f"{name}: loudness is not measurable (silent: every 400 ms block is under -70 LUFS)"


def _normalize(w: np.ndarray, sr: int, target: float, ceiling_db: float, name: str) -> np.ndarray:
    measured = measure_loudness(w, sr)
    if measured is None:
        raise ValueError(_unmeasurable(name, w, sr))
    x = w.astype(np.float64)
    gain_db = target - measured
    best = None
    for _ in range(MAX_PASSES):
        out = _limit(x * 10.0 ** (gain_db / 20.0), sr, ceiling_db)
        got = measure_loudness(out, sr)
        if got is None:
            break
        if best is not None and abs(got - best[1]) < 0.05 and got < target:
            break  # more gain only goes into the limiter: the ceiling caps the loudness here
        if best is None or abs(got - target) < abs(best[1] - target):
            best = (out, got)
        if abs(got - target) < 0.05:
            break
        gain_db += target - got
    return best[0] if best is not None else _limit(x * 10.0 ** (gain_db / 20.0), sr, ceiling_db)


# ----------------------------------------------------------------------------------------------
# loop


def make_loop(wave: Any, sr: Any, bpm: Any, time_signature: Any = "4/4", bars: Any = None,
              crossfade_s: Any = 0.05, start_s: Any = 0.0) -> np.ndarray:
    """A seamless loop of exactly ``bars`` bars (default: as many whole bars as the source holds)."""
    w = as_wave(wave, "make_loop: wave")
    sr = as_sample_rate(sr, "make_loop: sample rate")
    bar_s = bars_to_seconds(1, bpm, time_signature)
    fade = int(round(_number(crossfade_s, "crossfade_s", low=0.0, high=10.0) * sr))
    if fade < 1:
        raise ValueError(f"crossfade_s: {crossfade_s!r} s is under one sample at {sr} Hz")
    start = int(round(_number(start_s, "start_s", low=None) * sr))
    if start < 0 or start >= w.shape[1]:
        raise ValueError(f"start_s: {start_s!r} s is outside the wave ({w.shape[1] / sr:.3f} s)")
    available = w.shape[1] - start
    if bars is None:
        bars = int((available - fade) // (bar_s * sr))
        if bars >= 1 and bars_to_samples(bars, bpm, time_signature, sr) + fade > available:
            bars -= 1  # the bar length rounded up to a whole sample
        if bars < 1:
            raise ValueError(f"make_loop: wave: {available / sr:.3f} s from start_s holds no whole bar of "
                             f"{bar_s:.3f} s plus the {fade / sr * 1e3:.0f} ms crossfade")
    length = bars_to_samples(bars, bpm, time_signature, sr)
    if fade > length // 2:
        raise ValueError(f"crossfade_s: {fade / sr:.3f} s is longer than half the loop ({length / sr:.3f} s)")
    if available < length + fade:
        raise ValueError(f"make_loop: wave: {bars} bar(s) plus the crossfade need {(length + fade) / sr:.3f} s "
                         f"({length + fade} samples) from start_s; the wave has {available / sr:.3f} s")
    head = w[:, start:start + length].astype(np.float64)
    tail = w[:, start + length:start + length + fade].astype(np.float64)
    phase = np.arange(fade) / fade * (np.pi / 2.0)
    head[:, :fade] = head[:, :fade] * np.sin(phase) + tail * np.cos(phase)
    return head.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# tempo


def fit_tempo(wave: Any, sr: Any, from_bpm: Any, to_bpm: Any) -> np.ndarray:
    """Time-stretch ``wave`` from ``from_bpm`` to ``to_bpm`` keeping pitch (Rubber Band via pedalboard)."""
    w = as_wave(wave, "fit_tempo: wave")
    sr = as_sample_rate(sr, "fit_tempo: sample rate")
    src, dst = _bpm(from_bpm, "from_bpm"), _bpm(to_bpm, "to_bpm")
    ratio = dst / src
    if not 1.0 / MAX_STRETCH <= ratio <= MAX_STRETCH:
        raise ValueError(f"fit_tempo: {src:g} -> {dst:g} BPM is a stretch of {ratio:.3f}; "
                         f"the limit is 1/{MAX_STRETCH:g} .. {MAX_STRETCH:g}")
    length = int(round(w.shape[1] / ratio))
    if ratio == 1.0:
        return w.copy()
    import pedalboard

    out = pedalboard.time_stretch(np.ascontiguousarray(w), float(sr), stretch_factor=ratio,
                                  pitch_shift_in_semitones=0.0, high_quality=True)
    out = np.asarray(out, dtype=np.float32).reshape(w.shape[0], -1)
    if out.shape[1] >= length:
        return np.ascontiguousarray(out[:, :length])
    return np.pad(out, ((0, 0), (0, length - out.shape[1])))
