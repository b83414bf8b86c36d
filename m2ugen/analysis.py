"""Measured analysis of an audio input: tempo and beats, meter, key and mode, loudness and peaks.

    from m2ugen.analysis import analyze, measured_line
    a = analyze(wave, sr)          # wave: float [channels, samples] (or [samples]), any rate, any channels
    a.to_dict()                    # JSON-safe, keys in ANALYSIS_KEYS; None where a value is not measurable
    measured_line(a)               # "Measured: 92 BPM, F# minor, -14 LUFS, 8.0 s." (a factual prompt line)

Methods (each step is a public function, so benchmarks and tests can time or call it alone):

- ``measure_loudness``: integrated loudness (ITU-R BS.1770-4, K-weighted, 400 ms blocks with 75 %
  overlap, absolute gate -70 LUFS and relative gate -10 LU) through pyloudnorm, which weights the channels
  as L, R, C, Ls, Rs. More than 5 channels have no known layout: every channel is weighted 1.0 and the
  per-channel block powers pyloudnorm measures are summed before the same two gates. ``None`` for a clip
  shorter than one 400 ms gating block, and for silence (every block under the absolute gate).
- ``measure_true_peak``: BS.1770-4 Annex 2: oversample 4x (2x at 88.2/96 kHz, none from 176.4 kHz),
  take the largest absolute value, in dBTP. soxr's linear-phase "HQ" filter does the oversampling.
- Beats, meter and key use a mono analysis signal: channels averaged, DC removed, resampled to 22050 Hz
  and peak-normalised (so the level does not matter). Silence has no beats and no key.
- ``track_beats``: librosa's onset strength and dynamic-programming beat tracker. librosa's own tempo
  is quantised to its tempogram bins (a clean 120 BPM click reads 117.45), so the BPM is refined from the
  beat times: beats are numbered by the median inter-beat interval and a least-squares line through
  (beat number, time) gives the period, which averages out the 23 ms frame grid (a clean click reads within
  0.1 BPM). Fewer than 4 beats, or an onset envelope without periodicity at the beat period (noise), give
  no tempo.
- ``estimate_meter``: beats per bar (3 or 4) from beat-synchronous accents: each beat's onset strength
  and short-time energy (z-scored, averaged). For a bar length m in {3, 4} and each phase, the accent of
  the beats at that phase is compared with the others by a Welch t statistic; the larger significant one
  wins and its phase gives the downbeats. Limits: it needs accented downbeats (louder or denser onsets
  on beat 1) and at least 2 bars; music with even accents, syncopation that accents off-beats, or
  harmony-only downbeats gives ``None``; 2/4 and 6/8 read as 4 (duple); 6/4 or 12/8 may read as 3.
- ``estimate_key``: chroma from librosa's constant-Q transform at 11025 Hz (C1 to C8), energy-weighted
  over the whole clip (quiet frames weigh little), correlated (Pearson) with the 24 rotations of the
  Krumhansl-Kessler major and minor key profiles. The best correlation is ``key_confidence``
  ([-1, 1]; tonal music typically above 0.6). A flat chroma (noise) or a best correlation under 0.5
  (e.g. a single repeated pitch) gives no key. Key names use the usual
  spelling (Bb major, F# minor, C# minor, Eb minor ...).

librosa is imported on first use, never at import time (the CLI imports m2ugen). Its first call in a
process is slow (loading numba-compiled code; ``preload()`` does it ahead of time). When the directory
librosa's numba cache lives in is not writable (a read-only install), ``NUMBA_CACHE_DIR`` is set to a
writable user cache (or temp) directory before librosa is imported, unless it is set already.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

ANALYSIS_KEYS = (
    "duration_s", "channels", "sample_rate", "bpm", "beats", "downbeats", "meter", "key", "mode",
    "key_name", "key_confidence", "lufs", "true_peak_dbtp", "peak_dbfs", "summary",
)

ANALYSIS_SR = 22050          # beats and meter
KEY_SR = 11025               # chroma (C1..C8 fits under its Nyquist)
HOP = 512                    # onset envelope frames: 23.2 ms at 22050 Hz
LOUDNESS_BLOCK_S = 0.400     # BS.1770 gating block
SILENCE_DBFS = -90.0         # below this peak the mono analysis signal counts as silence
MIN_BEATS = 4
PULSE_CLARITY_MIN = 0.15     # onset autocorrelation at the beat period / at lag 0
METER_T_MIN = 3.0            # Welch t statistic a downbeat accent must reach
CHROMA_SPREAD_MIN = 0.5      # (max - min) / mean of the clip's chroma: noise 0.05-0.15, chords about 3
KEY_CONFIDENCE_MIN = 0.5     # below this best profile correlation (a single pitch: 0.3) there is no key
MIN_BEAT_SECONDS = 1.0       # shorter clips are not beat-tracked

MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

Progress = Callable[[str, float], None]


# ----------------------------------------------------------------------------------------------
# the result


@dataclass
class Analysis:
    duration_s: float
    channels: int
    sample_rate: int
    bpm: float | None = None
    beats: list[float] = field(default_factory=list)
    downbeats: list[float] | None = None
    meter: int | None = None
    key: str | None = None
    mode: str | None = None
    key_confidence: float | None = None
    lufs: float | None = None
    true_peak_dbtp: float | None = None
    peak_dbfs: float | None = None

    @property
    def key_name(self) -> str | None:
        return f"{self.key} {self.mode}" if self.key and self.mode else None

    @property
    def summary(self) -> str:
        """A short human line, e.g. "92 BPM, F# minor, -14.0 LUFS, 8.0 s"."""
        parts = _measured_parts(self.bpm, self.key_name, self.lufs, self.duration_s, self.peak_dbfs, lufs_fmt=".1f")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: plain ints, floats (never NaN/inf), strings, lists and None; keys = ANALYSIS_KEYS."""
        d = {
            "duration_s": _num(self.duration_s, 3),
            "channels": int(self.channels),
            "sample_rate": int(self.sample_rate),
            "bpm": _num(self.bpm, 2),
            "beats": [_num(t, 3) for t in self.beats],
            "downbeats": None if self.downbeats is None else [_num(t, 3) for t in self.downbeats],
            "meter": None if self.meter is None else int(self.meter),
            "key": self.key,
            "mode": self.mode,
            "key_name": self.key_name,
            "key_confidence": _num(self.key_confidence, 3),
            "lufs": _num(self.lufs, 2),
            "true_peak_dbtp": _num(self.true_peak_dbtp, 2),
            "peak_dbfs": _num(self.peak_dbfs, 2),
            "summary": self.summary,
        }
        assert tuple(d) == ANALYSIS_KEYS
        return d


def _num(x: float | None, digits: int) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), digits)


def _fmt_bpm(bpm: float) -> str:
    return f"{round(bpm):d}" if abs(bpm - round(bpm)) < 0.05 else f"{bpm:.1f}"


def _measured_parts(bpm, key_name, lufs, duration_s, peak_dbfs, lufs_fmt: str) -> list[str]:
    parts = []
    if peak_dbfs is None:
        parts.append("silence")
    if bpm is not None:
        parts.append(f"{_fmt_bpm(bpm)} BPM")
    if key_name:
        parts.append(key_name)
    if lufs is not None:
        parts.append(f"{lufs:{lufs_fmt}} LUFS")
    parts.append(f"{duration_s:.1f} s" if duration_s >= 0.1 else f"{duration_s * 1e3:.0f} ms")
    return parts


def measured_line(analysis: Analysis | Mapping[str, Any]) -> str:
    """The factual prompt line for the LLM, e.g. "Measured: 92 BPM, F# minor, -14 LUFS, 8.0 s.".

    Takes an ``Analysis`` or its ``to_dict()``; values that were not measurable are left out.
    """
    d = analysis.to_dict() if isinstance(analysis, Analysis) else analysis
    missing = [k for k in ("bpm", "key_name", "lufs", "duration_s", "peak_dbfs") if k not in d]
    if missing:
        raise ValueError(f"analysis: missing key(s) {missing}; pass an Analysis or its to_dict()")
    parts = _measured_parts(d["bpm"], d["key_name"], d["lufs"], d["duration_s"], d["peak_dbfs"], lufs_fmt=".0f")
    return "Measured: " + ", ".join(parts) + "."


# ----------------------------------------------------------------------------------------------
# inputs


def as_wave(wave: Any, name: str = "wave") -> np.ndarray:
    """A float [channels, samples] (or [samples]) array -> float32 [channels, samples], or ValueError."""
    w = np.asarray(wave)
    if w.dtype == np.bool_ or not np.issubdtype(w.dtype, np.number) or np.issubdtype(w.dtype, np.complexfloating):
        raise ValueError(f"{name}: must be a real numeric array, got dtype {w.dtype}")
    if w.ndim == 1:
        w = w[None, :]
    elif w.ndim != 2:
        raise ValueError(f"{name}: must be [channels, samples] (or 1-D [samples]), got shape {list(w.shape)}")
    if w.shape[0] == 0:
        raise ValueError(f"{name}: has 0 channels")
    if w.shape[1] == 0:
        raise ValueError(f"{name}: is empty (0 samples)")
    if w.shape[0] > 64 and w.shape[1] <= 64:
        raise ValueError(f"{name}: shape {list(w.shape)} looks like [samples, channels]; pass [channels, samples]")
    if np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"{name}: must be floating point in [-1, 1], got dtype {w.dtype}")
    w = w.astype(np.float32, copy=False)
    if not np.isfinite(w).all():
        raise ValueError(f"{name}: contains {int((~np.isfinite(w)).sum())} non-finite value(s) (NaN or inf)")
    return w


def as_sample_rate(sr: Any, name: str = "sample rate") -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: must be a number, got {type(sr).__name__}")
    if not math.isfinite(float(sr)) or float(sr) != int(sr) or int(sr) <= 0:
        raise ValueError(f"{name}: must be a positive whole number of Hz, got {sr!r}")
    if int(sr) < 1000:
        raise ValueError(f"{name}: {int(sr)} Hz is too low for audio (at least 1000 Hz)")
    return int(sr)


# ----------------------------------------------------------------------------------------------
# librosa, lazily


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def configure_numba_cache(environ: dict | None = None) -> str | None:
    """Give numba a writable cache directory when librosa's own ``__pycache__`` is not writable.

    Returns the directory set, or None when nothing had to be set (already set, or librosa's dir is
    writable, or librosa is not installed). Must run before numba is imported to take effect.
    """
    env = os.environ if environ is None else environ
    if env.get("NUMBA_CACHE_DIR"):
        return None
    spec = importlib.util.find_spec("librosa")
    if spec is None or not spec.origin:
        return None
    if _writable_dir(Path(spec.origin).parent / "__pycache__"):
        return None
    import platformdirs

    for candidate in (Path(platformdirs.user_cache_dir("m2ugen")) / "numba",
                      Path(tempfile.gettempdir()) / f"m2ugen-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        if _writable_dir(candidate):
            env["NUMBA_CACHE_DIR"] = str(candidate)
            return str(candidate)
    return None


def _librosa():
    configure_numba_cache()
    import librosa

    return librosa


def preload() -> None:
    """Import librosa and run every analysis step once on a short tone (a server does this at start)."""
    sr = ANALYSIS_SR
    t = np.arange(2 * sr) / sr
    analyze((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], sr)


# ----------------------------------------------------------------------------------------------
# loudness and peaks


def _db(x: float) -> float | None:
    return 20.0 * math.log10(x) if x > 0 else None


def measure_peak(wave: np.ndarray) -> float | None:
    """Sample peak in dBFS (None for digital silence)."""
    return _db(float(np.max(np.abs(wave))))


def measure_true_peak(wave: np.ndarray, sr: int) -> float | None:
    """True peak in dBTP (BS.1770-4 Annex 2: 4x oversampling below 88.2 kHz, 2x below 176.4 kHz)."""
    return _db(true_peak_envelope(wave, sr).max())


def true_peak_envelope(wave: np.ndarray, sr: int) -> np.ndarray:
    """Per input sample, the largest |value| over channels and the oversampled points in its period."""
    factor = 4 if sr < 88200 else 2 if sr < 176400 else 1
    mag = np.abs(wave).max(axis=0)
    if factor == 1:
        return mag
    import soxr

    n = wave.shape[1]
    up = soxr.resample(np.ascontiguousarray(wave.T), sr, sr * factor, quality="HQ")  # [n * factor, C]
    # elementwise maxima of strided views (a reduction over a short axis is many times slower)
    for c in range(up.shape[1]):
        channel = np.abs(up[: n * factor, c])
        for k in range(factor):
            phase = channel[k::factor]
            np.maximum(mag[: phase.size], phase, out=mag[: phase.size])
    return mag


def measure_loudness(wave: np.ndarray, sr: int) -> float | None:
    """Integrated loudness in LUFS (BS.1770-4 via pyloudnorm); None if shorter than 400 ms or silent."""
    if wave.shape[1] < LOUDNESS_BLOCK_S * sr + 1:
        return None
    import pyloudnorm

    meter = pyloudnorm.Meter(sr, block_size=LOUDNESS_BLOCK_S)
    data = wave.T.astype(np.float64)
    if wave.shape[0] <= 5:
        lufs = float(meter.integrated_loudness(data))
    else:  # unknown layout: every channel weighted 1.0, block powers summed, then the two gates
        power = 0.0
        for ch in range(wave.shape[0]):
            meter.integrated_loudness(data[:, ch])
            power = power + 10.0 ** ((np.asarray(meter.blockwise_loudness) + 0.691) / 10.0)
        lufs = _gated_loudness(np.asarray(power))
    return lufs if math.isfinite(lufs) and lufs > -70.0 else None


def _gated_loudness(block_power: np.ndarray) -> float:
    """BS.1770-4 gating of summed, channel-weighted block mean squares -> LUFS (-inf if all gated)."""
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(block_power)
    kept = block_power[block_lufs > -70.0]
    if kept.size == 0:
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(kept.mean()) - 10.0
    kept = block_power[(block_lufs > -70.0) & (block_lufs > relative)]
    return -0.691 + 10.0 * math.log10(kept.mean())


# ----------------------------------------------------------------------------------------------
# beats, meter, key


def analysis_signal(wave: np.ndarray, sr: int) -> np.ndarray | None:
    """Mono, DC removed, resampled to ANALYSIS_SR, peak 1.0; None when silent."""
    mono = wave.mean(axis=0, dtype=np.float64)
    mono -= mono.mean()
    peak = float(np.abs(mono).max())
    if peak <= 10.0 ** (SILENCE_DBFS / 20.0):
        return None
    mono = (mono / peak).astype(np.float32)
    if sr != ANALYSIS_SR:
        import soxr

        mono = soxr.resample(mono, sr, ANALYSIS_SR, quality="HQ")
    return mono


@dataclass
class Beats:
    bpm: float | None
    times: np.ndarray          # seconds
    frames: np.ndarray         # onset-envelope frames at HOP
    onset_envelope: np.ndarray


def track_beats(mono: np.ndarray, sr: int = ANALYSIS_SR) -> Beats:
    """Beat times (librosa) and a BPM refined from them (see the module docstring)."""
    librosa = _librosa()
    oenv = librosa.onset.onset_strength(y=mono, sr=sr, hop_length=HOP)
    none = Beats(None, np.zeros(0), np.zeros(0, dtype=int), oenv)
    if oenv.size < 8 or not np.any(oenv > 0):
        return none
    _, frames = librosa.beat.beat_track(onset_envelope=oenv, sr=sr, hop_length=HOP)
    frames = np.asarray(frames, dtype=int)
    if frames.size < MIN_BEATS:
        return none
    times = librosa.frames_to_time(frames, sr=sr, hop_length=HOP)
    period = refine_period(times)
    if _pulse_clarity(oenv, period * sr / HOP) < PULSE_CLARITY_MIN:
        return none
    return Beats(60.0 / period, times, frames, oenv)


def refine_period(times: np.ndarray) -> float:
    """Beat period in seconds: least-squares slope of beat time against beat number.

    A first period is the mean of the inter-beat intervals within 25 % of their median (the median
    alone sits on one side of the frame grid: 18 or 19 frames for 18.46). Beats are numbered with it,
    so a skipped beat keeps its place, and the line is fitted twice (numbering again with the first
    slope). When the times do not follow one line (tempo changes), the first period is returned.
    """
    intervals = np.diff(times)
    median = float(np.median(intervals))
    period = float(intervals[np.abs(intervals - median) <= 0.25 * median].mean())
    slope = period
    for _ in range(2):
        index = np.round((times - times[0]) / slope)
        if index[-1] < 2:
            return period
        slope, intercept = np.polyfit(index, times, 1)
        residual = times - (slope * index + intercept)
        if slope <= 0 or float(np.sqrt(np.mean(residual**2))) > 0.25 * period:
            return period
    return float(slope)


def _pulse_clarity(oenv: np.ndarray, lag_frames: float) -> float:
    """Normalised autocorrelation of the onset envelope at the beat period (1 = perfectly periodic)."""
    x = oenv - oenv.mean()
    denom = float(np.dot(x, x))
    centre = int(round(lag_frames))
    lags = [lag for lag in (centre - 1, centre, centre + 1) if 0 < lag < x.size]
    if denom <= 0 or not lags:
        return 0.0
    # unbiased: scale by the number of overlapping frames, so a long lag is not penalised
    return max(float(np.dot(x[:-lag], x[lag:])) / denom * x.size / (x.size - lag) for lag in lags)


def estimate_meter(mono: np.ndarray, beats: Beats, sr: int = ANALYSIS_SR) -> tuple[int | None, np.ndarray | None]:
    """(beats per bar 3 or 4, downbeat times) from beat-synchronous accents, or (None, None)."""
    n = beats.frames.size
    if beats.bpm is None or n < 8:
        return None, None
    librosa = _librosa()
    rms = librosa.feature.rms(y=mono, frame_length=2 * HOP, hop_length=HOP)[0]
    energy = 10.0 * np.log10(rms**2 + 1e-10)
    oenv = beats.onset_envelope
    accents = []
    for feature in (oenv, energy):
        at_beat = np.array([feature[max(f - 1, 0): f + 2].max() for f in np.minimum(beats.frames, feature.size - 1)])
        sd = at_beat.std()
        accents.append((at_beat - at_beat.mean()) / sd if sd > 0 else np.zeros(n))
    accent = (accents[0] + accents[1]) / 2.0
    best = (None, 0, METER_T_MIN)   # (meter, phase, t)
    for meter in (3, 4):
        if n < 2 * meter:
            continue
        for phase in range(meter):
            on = np.zeros(n, dtype=bool)
            on[phase::meter] = True
            t = _welch_t(accent[on], accent[~on])
            if t > best[2]:
                best = (meter, phase, t)
    meter, phase, _ = best
    if meter is None:
        return None, None
    return meter, beats.times[phase::meter]


def _welch_t(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or b.size < 2:
        return 0.0
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    diff = float(a.mean() - b.mean())
    if se == 0:
        return math.inf if diff > 0 else 0.0
    return diff / se


def key_profiles() -> np.ndarray:
    """[24, 12]: rows 0..11 major keys on C..B, 12..23 minor keys on C..B (Krumhansl-Kessler)."""
    return np.stack([np.roll(KK_MAJOR, k) for k in range(12)] + [np.roll(KK_MINOR, k) for k in range(12)])


def estimate_key(mono: np.ndarray, sr: int = ANALYSIS_SR) -> tuple[str | None, str | None, float | None]:
    """(key, "major"/"minor", confidence) from the clip's chroma, or (None, None, None)."""
    chroma = clip_chroma(mono, sr)
    if chroma is None:
        return None, None, None
    r = np.array([np.corrcoef(chroma, p)[0, 1] for p in key_profiles()])
    best = int(np.argmax(r))
    if r[best] < KEY_CONFIDENCE_MIN:
        return None, None, None
    tonic, minor = best % 12, best >= 12
    key = (MINOR_NAMES if minor else MAJOR_NAMES)[tonic]
    return key, "minor" if minor else "major", float(r[best])


def clip_chroma(mono: np.ndarray, sr: int = ANALYSIS_SR) -> np.ndarray | None:
    """Energy-weighted chroma of the whole clip [12] (C..B, sums to 1), or None if flat or silent."""
    librosa = _librosa()
    import soxr

    y = soxr.resample(mono, sr, KEY_SR, quality="HQ") if sr != KEY_SR else mono
    if y.size < 2048:
        return None
    c = librosa.feature.chroma_cqt(y=y, sr=KEY_SR, hop_length=1024, fmin=librosa.note_to_hz("C1"),
                                   n_octaves=7, norm=None)
    total = c.sum(axis=1)
    if not np.all(np.isfinite(total)) or total.sum() <= 0:
        return None
    total = total / total.sum()
    if (total.max() - total.min()) / total.mean() < CHROMA_SPREAD_MIN:
        return None
    return total


# ----------------------------------------------------------------------------------------------
# the whole analysis


def analyze(wave: Any, sr: Any, on_progress: Progress | None = None) -> Analysis:
    """Measure tempo, beats, meter, key, loudness and peaks of ``wave`` (float [channels, samples]).

    Never fails on valid audio (silence, DC, a few samples, any channel count); values that cannot be
    measured are None. Raises ValueError for a bad array or sample rate. ``on_progress(step, fraction)``
    is called after each step ("loudness", "true_peak", "beats", "meter", "key").
    """
    w = as_wave(wave, "analyze: wave")
    sr = as_sample_rate(sr, "analyze: sample rate")
    report = on_progress or (lambda step, fraction: None)
    result = Analysis(duration_s=w.shape[1] / sr, channels=w.shape[0], sample_rate=sr)
    result.peak_dbfs = measure_peak(w)
    result.lufs = measure_loudness(w, sr)
    report("loudness", 0.2)
    result.true_peak_dbtp = measure_true_peak(w, sr)
    report("true_peak", 0.4)
    mono = analysis_signal(w, sr)
    if mono is not None:
        with warnings.catch_warnings():  # librosa warns about FFT sizes longer than a very short clip
            warnings.simplefilter("ignore", UserWarning)
            _analyze_music(mono, result, report)
    report("key", 1.0)
    return result


def _analyze_music(mono: np.ndarray, result: Analysis, report: Progress) -> None:
    if mono.size >= MIN_BEAT_SECONDS * ANALYSIS_SR:
        beats = track_beats(mono)
        report("beats", 0.6)
        if beats.bpm is not None:
            result.bpm = beats.bpm
            result.beats = [float(t) for t in beats.times]
            meter, downbeats = estimate_meter(mono, beats)
            if meter is not None:
                result.meter, result.downbeats = meter, [float(t) for t in downbeats]
    report("meter", 0.7)
    result.key, result.mode, result.key_confidence = estimate_key(mono)
