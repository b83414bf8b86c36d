"""Measured analysis of an audio input: tempo and beats, meter, key and mode, loudness and peaks.

    from m2ugen.analysis import analyze, measured_line
    a = analyze(wave, sr)          # wave: float [channels, samples] (or [samples]), any rate, any channels
    a.to_dict()                    # JSON-safe, keys in ANALYSIS_KEYS; None where a value is not measurable
    measured_line(a)               # "Measured: 92 BPM in 4/4, F# minor, -14 LUFS, 8.0 s." (a factual prompt line)

Methods (each step is a public function, so benchmarks and tests can time or call it alone):

- ``measure_loudness``: integrated loudness (ITU-R BS.1770-4, K-weighted, 400 ms blocks with 75 %
  overlap, absolute gate -70 LUFS and relative gate -10 LU) through pyloudnorm, which weights the channels
  as L, R, C, Ls, Rs. More than 5 channels have no known layout: every channel is weighted 1.0 and the
  per-channel block powers pyloudnorm measures are summed before the same two gates. ``None`` for a clip
  shorter than one 400 ms gating block, and for silence (every block under the absolute gate).
- ``measure_true_peak``: BS.1770-4 Annex 2: oversample 4x (2x at 88.2/96 kHz, none from 176.4 kHz),
  take the largest absolute value, in dBTP. soxr's linear-phase "HQ" filter does the oversampling.
- Beats, meter and key use a mono analysis signal: channels averaged, DC removed, resampled to 22050 Hz
  and peak-normalised (so the level does not matter). Silence has no beats and no key. One constant-Q
  spectrum (``constant_q``: 11025 Hz, 3 bins per semitone, C1..B7, 23.2 ms frames, with the clip's
  tuning) serves the onsets, the meter and the key.
- ``track_beats``: the onset envelope (``novelty``) adds librosa's mel spectral flux (attacks, drums)
  and a semitone-resolution log flux of the constant-Q spectrum (a new pitch or chord without an
  attack: organ, strings, choir). The tempo is decided once for the whole clip (``tempo_salience``:
  the envelope's autocorrelation summed at 1, 2, 3 and 4 beats, under a broad log-normal prior), then
  librosa's dynamic-programming tracker places the beats at that tempo, each moved to the strongest
  onset within 46 ms. The BPM is refined from the beat times (a least-squares line through beat number
  and time; a clean click reads within 0.1 BPM). No tempo when the envelope has no events and does not
  repeat (``has_pulse``: noise).
- ``estimate_meter``: 3 or 4 beats per bar from beat-synchronous features: accent (onset strength and
  energy), harmonic change (chroma distance to the previous beat), bass onsets (flux under C3) and bar
  repetition (beat chroma alike 1 and 2 bars apart). See the function for the rule. Limits: 2/4 and 6/8
  read as duple or triple at the beat level (4 or 3 here); a piece that changes harmony every beat with
  no bass line and no accents has little to go on; clicks or drums alone need clear accents.
- ``key_analysis``: a harmonic-suppressed pitch-class profile: per 0.5 s segment the median constant-Q
  spectrum (drum hits drop out) is explained as a non-negative sum of note spectra with harmonic
  partials (NNLS over 84 notes), so a note's third partial no longer counts as its fifth; the square
  roots of the note activations are summed into 12 pitch classes and correlated (Pearson) with the 24
  rotations of Temperley's major and minor profiles. ``key_confidence`` (0..1) is the best key's share
  of a softmax over the 24 correlations: near 1 when one key stands out, near 0.5 when two (usually
  relative or fifth-related) keys are about equal. ``key_sections``: where a clip of at least 24 s
  holds more than one key for at least 12 s each (16 s windows), the sections in order; otherwise
  empty. A flat profile (noise) or a best correlation under 0.5 (a single repeated pitch) gives no key.
  Key names use the usual spelling (Bb major, F# minor, C# minor, Eb minor ...).
- Measured on rendered real music (music21 corpus through FluidSynth, ``benchmarks/bench_mir.py``;
  figures in docs/analysis.md).

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
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

ANALYSIS_KEYS = (
    "duration_s", "channels", "sample_rate", "bpm", "beats", "downbeats", "meter", "key", "mode",
    "key_name", "key_confidence", "lufs", "true_peak_dbtp", "peak_dbfs", "summary", "key_sections",
)

ANALYSIS_SR = 22050          # beats and meter
KEY_SR = 11025               # constant-Q spectrum (C1..B7 fits under its Nyquist)
HOP = 512                    # onset envelope frames: 23.2 ms at 22050 Hz
CQT_HOP = 256                # the same 23.2 ms at KEY_SR
SEMITONE_BINS = 3
CQT_BPO = 12 * SEMITONE_BINS
CQT_BINS = 7 * CQT_BPO       # C1..B7
LOG_GAIN = 1000.0            # log(1 + gain * |X| / max) for the constant-Q flux
LOUDNESS_BLOCK_S = 0.400     # BS.1770 gating block
SILENCE_DBFS = -90.0         # below this peak the mono analysis signal counts as silence
MIN_BEATS = 4
PULSE_PEAKINESS_MIN = 1.38   # onset envelope 95th percentile / median: noise 1.2-1.3, music 1.45 and up
PULSE_RATIO_MIN = 1.6        # or: autocorrelation at 1-4 beats / its spread over 0.25-4 s lags (noise < 1.3)
TEMPO_MIN, TEMPO_MAX = 40.0, 220.0
TEMPO_PRIOR_BPM = 135.0      # log-normal tempo prior: centre and width (octaves), chosen on the dev set
TEMPO_PRIOR_OCTAVES = 1.4
TEMPO_MULTIPLES = ((1, 1.0), (2, 0.5), (3, 0.25), (4, 0.25))  # (beats, weight) summed per tempo candidate
BEAT_TIGHTNESS = 100.0       # librosa's DP: how strictly beats keep the whole clip's tempo
METER_EVIDENCE_MIN = 0.02    # weighted explained variance a bar length must reach (chosen on the dev set)
# weights of (accent, harmonic change, bass change, bass onsets) for the bar length and for the phase
METER_WEIGHTS = np.array([1.0, 1.0, 0.0, 1.0])
METER_PHASE_WEIGHTS = np.array([1.0, 1.0, 0.5, 1.0])
METER_ACCENT_T = 3.0         # an accent t statistic under this (music without drums: chance) counts 0
METER_MIN_BARS = 4           # accents alone decide a bar length only over this many bars of beats
METER_W_SIMILARITY = 0.5     # weight of "beat chroma repeats at 1 and 2 bars"
ONSET_SPREAD_MIN = 0.1       # bass onsets per beat vary less than this (relative): no evidence
CHANGE_SD_MIN = 0.02         # beat-to-beat chroma change varies less than this: no harmony to use
BASS_SHARE_MIN = 0.05        # the bass features need at least this share of the spectrum under C3
BASS_PEAKINESS_MIN = 2.0     # mean over beats of the bass pitch classes' max / mean (flat noise ~1.2)
BASS_SEMITONES = 24          # C1..B2: the bass line for meter
CHROMA_SPREAD_MIN = 0.5      # (max - min) / mean of the clip's chroma: noise 0.05-0.15, chords about 3
KEY_CONFIDENCE_MIN = 0.5     # below this best profile correlation (a single pitch: 0.3) there is no key
KEY_SEGMENT_S = 0.5          # spectra are summarised per segment (median) before the note fit
KEY_WINDOW_S = 16.0          # local keys for sections
KEY_SECTION_MIN_S = 12.0     # a key section lasts at least this long
KEY_SOFTMAX_GAIN = 20.0
KEY_UNSURE = 0.5             # under this confidence the prompt line says "(unsure)"
NNLS_DECAY = 0.7             # note dictionary: partial h has amplitude NNLS_DECAY ** (h - 1)
NNLS_PARTIALS = 12
MIN_BEAT_SECONDS = 1.0       # shorter clips are not beat-tracked

MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
# Temperley (2007) major and minor key profiles (Kostka-Payne corpus), tonic first
KEY_MAJOR = np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])
KEY_MINOR = np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])

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
    key_sections: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def key_name(self) -> str | None:
        return f"{self.key} {self.mode}" if self.key and self.mode else None

    @property
    def summary(self) -> str:
        """A short human line, e.g. "92 BPM, F# minor, -14.0 LUFS, 8.0 s"."""
        parts = _measured_parts(self.bpm, self.key_name, self.lufs, self.duration_s, self.peak_dbfs, lufs_fmt=".1f",
                                meter=self.meter, key_confidence=self.key_confidence)
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
            "key_sections": [{"start": _num(a, 2), "end": _num(b, 2), "key_name": k} for a, b, k in self.key_sections],
        }
        assert tuple(d) == ANALYSIS_KEYS
        return d


def _num(x: float | None, digits: int) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), digits)


def _fmt_bpm(bpm: float) -> str:
    return f"{round(bpm):d}" if abs(bpm - round(bpm)) < 0.05 else f"{bpm:.1f}"


def _measured_parts(bpm, key_name, lufs, duration_s, peak_dbfs, lufs_fmt: str, meter=None,
                    key_confidence=None) -> list[str]:
    parts = []
    if peak_dbfs is None:
        parts.append("silence")
    if bpm is not None:
        parts.append(f"{_fmt_bpm(bpm)} BPM" + (f" in {int(meter)}/4" if meter else ""))
    if key_name:
        unsure = key_confidence is not None and key_confidence < KEY_UNSURE
        parts.append(key_name + (" (unsure)" if unsure else ""))
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
    parts = _measured_parts(d["bpm"], d["key_name"], d["lufs"], d["duration_s"], d["peak_dbfs"], lufs_fmt=".0f",
                            meter=d.get("meter"), key_confidence=d.get("key_confidence"))
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
# the shared front end: a mono signal and one constant-Q spectrum


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
class Spectrum:
    """Constant-Q magnitudes of the analysis signal at KEY_SR: [CQT_BINS, frames], 3 bins per semitone
    from C1, one frame per CQT_HOP samples (23.2 ms, the onset envelope's frame)."""
    mag: np.ndarray
    tuning: float              # semitones (-0.5..0.5) the music sits above equal temperament at A440

    @property
    def frames(self) -> int:
        return self.mag.shape[1]


def constant_q(mono: np.ndarray, sr: int = ANALYSIS_SR) -> Spectrum | None:
    """The constant-Q spectrum (see ``Spectrum``) and its tuning, or None for a clip too short to hold one."""
    librosa = _librosa()
    import soxr

    y = soxr.resample(mono, sr, KEY_SR, quality="HQ") if sr != KEY_SR else mono
    if y.size < 2048:
        return None
    mag = np.abs(librosa.cqt(y, sr=KEY_SR, hop_length=CQT_HOP, fmin=librosa.note_to_hz("C1"), n_bins=CQT_BINS,
                             bins_per_octave=CQT_BPO)).astype(np.float32)
    return Spectrum(mag, _tuning(mag))


def _tuning(mag: np.ndarray) -> float:
    """Energy-weighted circular mean of the spectral peaks' positions within their semitone."""
    e = mag.sum(axis=1).astype(np.float64)
    i = np.flatnonzero((e[1:-1] > e[:-2]) & (e[1:-1] >= e[2:])) + 1
    if i.size == 0:
        return 0.0
    a, b, c = e[i - 1], e[i], e[i + 1]
    denom = a - 2 * b + c
    pos = i + np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
    per = SEMITONE_BINS
    z = np.sum(b * np.exp(2j * np.pi * pos / per))
    return float(np.angle(z) / (2 * np.pi)) if abs(z) > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# onsets, tempo and beats


def novelty(mono: np.ndarray, spec: Spectrum | None, sr: int = ANALYSIS_SR) -> tuple[np.ndarray, np.ndarray]:
    """(onset envelope, attack envelope) at HOP. The attack envelope is librosa's mel spectral flux
    (attacks, drums); the onset envelope adds a semitone-resolution log-magnitude flux of the
    constant-Q spectrum (new pitches: harmonic change without an attack), each at unit deviation."""
    librosa = _librosa()
    mel = librosa.onset.onset_strength(y=mono, sr=sr, hop_length=HOP)
    if spec is None or spec.frames < 3:
        return mel, mel
    log_mag = np.log1p(LOG_GAIN * spec.mag / max(float(spec.mag.max()), 1e-12))
    # SuperFlux-style: compare with the previous frame's maximum over +-1 bin (vibrato is not an onset)
    prev = np.maximum(np.maximum(log_mag[:-2, :-1], log_mag[1:-1, :-1]), log_mag[2:, :-1])
    flux = np.maximum(log_mag[1:-1, 1:] - prev, 0.0).sum(axis=0)
    flux = np.concatenate([[0.0], flux])
    n = min(mel.size, flux.size)
    out = np.zeros(max(mel.size, flux.size))
    for f in (mel[:n], flux[:n]):
        sd = float(f.std())
        if sd > 0:
            out[:n] += f / sd
    return out, mel


@dataclass
class Beats:
    bpm: float | None
    times: np.ndarray          # seconds
    frames: np.ndarray         # onset-envelope frames at HOP
    onset_envelope: np.ndarray
    attack_envelope: np.ndarray | None = None


def tempo_salience(oenv: np.ndarray, sr: int = ANALYSIS_SR) -> tuple[np.ndarray, np.ndarray]:
    """(bpm grid, salience): the whole clip's onset autocorrelation summed over each period's multiples
    (a beat period also repeats at 2, 3 and 4 beats), weighted by a broad log-normal tempo prior."""
    acf = _autocorrelation(oenv)
    n = acf.size
    if acf[0] <= 0:
        return np.zeros(0), np.zeros(0)
    fps = sr / HOP
    bpms = TEMPO_MIN * 2.0 ** (np.arange(int(np.log2(TEMPO_MAX / TEMPO_MIN) * 240) + 1) / 240)  # 0.3 % steps
    lags = 60.0 * fps / bpms
    sal = np.zeros_like(bpms)
    for k, w in TEMPO_MULTIPLES:
        lk = lags * k
        ok = lk < n - 1
        sal[ok] += w * np.interp(lk[ok], np.arange(n), np.maximum(acf, 0.0))
    prior = np.exp(-0.5 * (np.log2(bpms / TEMPO_PRIOR_BPM) / TEMPO_PRIOR_OCTAVES) ** 2)
    return bpms, sal * prior


def estimate_tempo(oenv: np.ndarray, sr: int = ANALYSIS_SR) -> float | None:
    """The clip's tempo (BPM) from ``tempo_salience``, or None without a periodic onset envelope."""
    bpms, sal = tempo_salience(oenv, sr)
    if sal.size == 0 or not np.any(sal > 0):
        return None
    return float(bpms[int(np.argmax(sal))])


def track_beats(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None) -> Beats:
    """Beat times: the whole clip's tempo (``estimate_tempo``), then librosa's dynamic-programming beat
    tracker held to it on the ``novelty`` envelope; the BPM is refined from the beat times."""
    librosa = _librosa()
    oenv, attacks = novelty(mono, spec, sr)
    none = Beats(None, np.zeros(0), np.zeros(0, dtype=int), oenv, attacks)
    if oenv.size < 8 or not np.any(oenv > 0):
        return none
    tempo = estimate_tempo(oenv, sr)
    if tempo is None or not has_pulse(oenv, tempo, sr):
        return none
    _, frames = librosa.beat.beat_track(onset_envelope=oenv, sr=sr, hop_length=HOP, bpm=tempo,
                                        tightness=BEAT_TIGHTNESS)
    frames = _snap(np.asarray(frames, dtype=int), oenv)
    if frames.size < MIN_BEATS:
        return none
    times = librosa.frames_to_time(frames, sr=sr, hop_length=HOP)
    period = refine_period(times)
    return Beats(60.0 / period, times, frames, oenv, attacks)


def _snap(frames: np.ndarray, oenv: np.ndarray, reach: int = 2) -> np.ndarray:
    """Each beat moved to the strongest onset-envelope frame within +-``reach`` frames (46 ms)."""
    out = frames.copy()
    for i, f in enumerate(frames):
        lo, hi = max(f - reach, 0), min(f + reach + 1, oenv.size)
        if hi > lo:
            out[i] = lo + int(np.argmax(oenv[lo:hi]))
    return out


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


def has_pulse(oenv: np.ndarray, bpm: float, sr: int = ANALYSIS_SR) -> bool:
    """Whether the onset envelope holds events at all (its 95th percentile stands out of its median)
    or repeats at the beat period (its autocorrelation at 1-4 beats stands out of the autocorrelation's
    spread over lags of 0.25-4 s). Noise fails both; music with a steady pulse passes one."""
    peakiness = float(np.percentile(oenv, 95)) / max(float(np.median(oenv)), 1e-9)
    if peakiness >= PULSE_PEAKINESS_MIN:
        return True
    acf = _autocorrelation(oenv)
    fps = sr / HOP
    lag = 60.0 / bpm * fps
    multiples = [int(round(k * lag)) for k in range(1, 5) if k * lag < acf.size / 2]
    if len(multiples) < 3:   # too short to tell a repeating envelope from chance
        return False
    at_beats = float(np.mean(acf[multiples]))
    lo, hi = int(0.25 * fps), int(min(acf.size / 2, 4 * fps))
    spread = float(acf[lo:hi].std()) if hi > lo + 2 else 0.0
    return spread > 0 and at_beats / spread >= PULSE_RATIO_MIN


def _autocorrelation(oenv: np.ndarray) -> np.ndarray:
    """Unbiased autocorrelation of the mean-removed envelope, 1 at lag 0 (zeros for a flat one)."""
    x = oenv - oenv.mean()
    n = x.size
    acf = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * n)) ** 2)[:n]
    if acf[0] <= 0:
        return np.zeros(n)
    return acf / acf[0] * n / np.maximum(n - np.arange(n), 1)


# ----------------------------------------------------------------------------------------------
# meter


def estimate_meter(mono: np.ndarray, beats: Beats, sr: int = ANALYSIS_SR,
                   spec: Spectrum | None = None) -> tuple[int | None, np.ndarray | None]:
    """(beats per bar 3 or 4, downbeat times) from beat-synchronous accents, harmony and bass, or (None, None).

    Per beat: accent (onset strength and energy), harmonic change (chroma distance to the previous
    beat), bass change (the same for the pitch classes under C3) and bass onsets (semitone flux under
    C3). The bar length: for m in (3, 4), how much of each feature's variance the beat's position in
    an m-beat bar explains (eta squared, less its chance level (m-1)/(beats-1)), weighted
    (METER_WEIGHTS), plus how much more alike the beat chroma is 1 and 2 bars apart than at the other
    length (bars repeat). A pattern counts whether the downbeat is louder or softer (a waltz's bass
    note alone is softer than its chords). Under METER_EVIDENCE_MIN there is no answer. The downbeat
    phase is the one where accents (only where their Welch t reaches METER_ACCENT_T: drums), harmonic
    changes and bass onsets stand out most (METER_PHASE_WEIGHTS). Without harmony or bass (clicks,
    percussion alone) only a clear accent (t >= METER_ACCENT_T) gives a meter.
    """
    n = beats.frames.size
    if beats.bpm is None or n < 8:
        return None, None
    feats, audible, chroma = _beat_features(mono, beats, sr, spec)
    if not any(np.any(f) for f in feats[1:]):
        return _meter_from_accents(beats, feats[0], audible)
    sims = {lag: _lag_similarity(chroma, lag) for lag in (3, 4, 6, 8)}
    score = {}
    for meter in (3, 4):
        other = 7 - meter
        explained = np.array([_explained(f, audible, meter) for f in feats])
        score[meter] = float(METER_WEIGHTS @ explained) + METER_W_SIMILARITY * (
            sims[meter] + sims[2 * meter] - sims[other] - sims[2 * other])
    meter = max(score, key=score.get)
    if score[meter] < METER_EVIDENCE_MIN:
        return None, None

    def phase_evidence(phase: int) -> float:
        on = np.zeros(n, dtype=bool)
        on[phase::meter] = True
        t = np.array([_welch_t(f[on & audible], f[~on & audible]) for f in feats])
        if abs(t[0]) < METER_ACCENT_T:
            t[0] = 0.0
        return float(METER_PHASE_WEIGHTS @ t)

    phase = max(range(meter), key=phase_evidence)
    return meter, beats.times[phase::meter]


def _meter_from_accents(beats: Beats, accent: np.ndarray, audible: np.ndarray):
    """Without harmony or bass (percussion, clicks): the bar length and phase whose beats' accent
    stands out by a Welch t of at least METER_ACCENT_T, or (None, None)."""
    n = accent.size
    best = (None, 0, METER_ACCENT_T)
    for meter in (3, 4):
        if int(audible.sum()) < METER_MIN_BARS * meter:  # a t statistic over 2 or 3 bars is chance
            continue
        for phase in range(meter):
            on = np.zeros(n, dtype=bool)
            on[phase::meter] = True
            t = _welch_t(accent[on & audible], accent[~on & audible])
            if t > best[2]:
                best = (meter, phase, t)
    meter, phase, _ = best
    return (None, None) if meter is None else (meter, beats.times[phase::meter])


def _explained(feature: np.ndarray, audible: np.ndarray, meter: int) -> float:
    """Eta squared of ``feature`` grouped by beat position in a bar of ``meter`` beats, less chance."""
    index = np.flatnonzero(audible)
    f = feature[index]
    if f.size <= meter:
        return 0.0
    total = float(((f - f.mean()) ** 2).sum())
    if total <= 0:
        return 0.0
    groups = index % meter
    between = sum(float((groups == g).sum()) * (float(f[groups == g].mean()) - float(f.mean())) ** 2
                  for g in range(meter) if np.any(groups == g))
    return between / total - (meter - 1) / (f.size - 1)


def _lag_similarity(chroma: np.ndarray | None, lag: int) -> float:
    """Mean cosine similarity of beat chroma ``lag`` beats apart (0 without chroma)."""
    if chroma is None or chroma.shape[1] <= lag:
        return 0.0
    unit = chroma / np.maximum(np.linalg.norm(chroma, axis=0), 1e-12)
    return float(np.mean(np.sum(unit[:, lag:] * unit[:, :-lag], axis=0)))


def _zscore(x: np.ndarray) -> np.ndarray:
    """Standard scores clipped to +-2.5 (one beat in silence at the clip's end is not evidence)."""
    sd = float(x.std())
    return np.clip((x - x.mean()) / sd, -2.5, 2.5) if sd > 0 else np.zeros_like(x)


def _beat_features(mono, beats: Beats, sr, spec: Spectrum | None):
    """([accent, harmonic change, bass change, bass onsets] per beat, audible beats mask, beat chroma
    [12, beats] or None). Beats 30 dB under the median beat (past the clip's end, in a pause) and the
    clip's first and last beats are left out of the comparison; a feature that cannot be measured is
    zeros."""
    librosa = _librosa()
    n = beats.frames.size
    rms = librosa.feature.rms(y=mono, frame_length=2 * HOP, hop_length=HOP)[0]
    energy = 10.0 * np.log10(rms**2 + 1e-10)
    oenv = beats.attack_envelope if beats.attack_envelope is not None else beats.onset_envelope
    raw = []
    for feature in (oenv, energy):
        idx = np.minimum(beats.frames, feature.size - 1)
        raw.append(np.array([feature[max(f - 2, 0): f + 3].max() for f in idx]))
    audible = raw[1] > np.median(raw[1]) - 30.0
    audible[[0, -1]] = False  # the clip's first and last beats are cut by its edges
    at = [_zscore(np.where(audible, r, np.median(r))) for r in raw]
    zeros = np.zeros(n)
    feats = [(at[0] + at[1]) / 2.0, zeros, zeros, zeros]
    if spec is None or spec.frames < 2:
        return feats, audible, None
    frames = np.minimum(beats.frames, spec.frames - 1)
    bounds = np.concatenate([frames, [spec.frames]])
    semis = _semitones(spec)                          # [84, frames]
    chroma = np.zeros((12, n))
    bass = np.zeros((12, n))
    for i in range(n):
        seg = semis[:, bounds[i]: max(bounds[i + 1], bounds[i] + 1)].mean(axis=1)
        chroma[:, i] = seg.reshape(7, 12).sum(axis=0)
        bass[:, i] = seg[:BASS_SEMITONES].reshape(-1, 12).sum(axis=0)
    # a bass line: a share of the spectrum under C3, and pitched (its pitch classes uneven; clicks are flat)
    peaky = float(np.mean(bass.max(axis=0) / np.maximum(bass.mean(axis=0), 1e-12)))
    has_bass = (float(semis[:BASS_SEMITONES].sum()) >= BASS_SHARE_MIN * float(semis.sum())
                and peaky >= BASS_PEAKINESS_MIN)
    for j, c in ((1, chroma), (2, bass)) if has_bass else ((1, chroma),):
        change = _change(c)
        if change.std() > CHANGE_SD_MIN:  # a steady sound's tiny changes are no evidence
            feats[j] = _zscore(change)
    if not has_bass:
        return feats, audible, chroma
    low = np.log1p(LOG_GAIN * semis[:BASS_SEMITONES] / max(float(semis.max()), 1e-12))
    flux = np.concatenate([[0.0], np.maximum(np.diff(low, axis=1), 0.0).sum(axis=0)])
    onsets = np.where(audible, np.array([flux[max(f - 2, 0): f + 3].max() for f in frames]), 0.0)
    onsets = np.where(audible, onsets, np.median(onsets[audible]) if audible.any() else 0.0)
    if onsets.std() > ONSET_SPREAD_MIN * max(float(onsets.mean()), 1e-12):  # equal onsets are no evidence
        feats[3] = _zscore(onsets)
    return feats, audible, chroma


def _change(c: np.ndarray) -> np.ndarray:
    """Per column, 1 - cosine similarity with the previous column (0 for the first)."""
    norm = np.linalg.norm(c, axis=0)
    unit = c / np.where(norm > 0, norm, 1.0)
    d = np.zeros(c.shape[1])
    d[1:] = 1.0 - np.sum(unit[:, 1:] * unit[:, :-1], axis=0)
    return d


def _welch_t(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or b.size < 2:
        return 0.0
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    diff = float(a.mean() - b.mean())
    if se == 0:
        return math.inf if diff > 0 else 0.0
    return diff / se


# ----------------------------------------------------------------------------------------------
# key


def key_profiles() -> np.ndarray:
    """[24, 12]: rows 0..11 major keys on C..B, 12..23 minor keys on C..B (KEY_MAJOR / KEY_MINOR)."""
    return np.stack([np.roll(KEY_MAJOR, k) for k in range(12)] + [np.roll(KEY_MINOR, k) for k in range(12)])


def _semitones(spec: Spectrum) -> np.ndarray:
    """[84, frames] semitone magnitudes C1..B7: each semitone's 3 bins, read at the clip's tuning."""
    shift = spec.tuning * SEMITONE_BINS
    base = np.arange(84) * SEMITONE_BINS + shift
    idx = np.clip(np.round(base).astype(int), 0, CQT_BINS - 1)
    lo, hi = np.clip(idx - 1, 0, CQT_BINS - 1), np.clip(idx + 1, 0, CQT_BINS - 1)
    return (spec.mag[lo] + spec.mag[idx] + spec.mag[hi]) / 3.0


@lru_cache(maxsize=8)
def _note_dictionary(tuning_bins: float) -> np.ndarray:
    """[CQT_BINS, 84]: each note's harmonic spectrum (partial h at amplitude NNLS_DECAY**(h-1)) on the
    constant-Q bins, partials between two bins shared linearly."""
    d = np.zeros((CQT_BINS, 84))
    for note in range(84):
        for h in range(1, NNLS_PARTIALS + 1):
            pos = note * SEMITONE_BINS + CQT_BPO * math.log2(h) + tuning_bins
            i = int(math.floor(pos))
            if i + 1 >= CQT_BINS:
                break
            if i < 0:
                continue
            frac = pos - i
            d[i, note] += (1 - frac) * NNLS_DECAY ** (h - 1)
            d[i + 1, note] += frac * NNLS_DECAY ** (h - 1)
    return d / np.linalg.norm(d, axis=0, keepdims=True)


def note_activations(spec: Spectrum) -> tuple[np.ndarray, float]:
    """([84, segments] note activations, seconds per segment): NNLS of each segment's spectrum (the
    median over KEY_SEGMENT_S, which drops drum hits) on the harmonic note dictionary, so a note's
    harmonics are explained by that note instead of adding their own pitch classes."""
    import scipy.optimize

    seg = max(1, int(round(KEY_SEGMENT_S * KEY_SR / CQT_HOP)))
    count = max(1, spec.frames // seg)
    usable = spec.mag[:, : count * seg] if spec.frames >= seg else spec.mag
    x = np.median(usable.reshape(CQT_BINS, count, -1), axis=2)
    d = _note_dictionary(round(spec.tuning * SEMITONE_BINS, 2))
    acts = np.zeros((84, count))
    for t in range(count):
        if x[:, t].max() > 0:
            acts[:, t] = scipy.optimize.nnls(d, x[:, t].astype(np.float64), maxiter=200)[0]
    return acts, seg * CQT_HOP / KEY_SR


def _key_scores(chroma: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(chroma, p)[0, 1] for p in key_profiles()])


def _key_of(r: np.ndarray) -> tuple[str, str]:
    best = int(np.argmax(r))
    tonic, minor = best % 12, best >= 12
    return (MINOR_NAMES if minor else MAJOR_NAMES)[tonic], "minor" if minor else "major"


def _confidence(r: np.ndarray) -> float:
    """Softmax weight of the best key among the 24 (KEY_SOFTMAX_GAIN on the correlations)."""
    z = np.exp(KEY_SOFTMAX_GAIN * (r - r.max()))
    return float(1.0 / z.sum())


def estimate_key(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None
                 ) -> tuple[str | None, str | None, float | None]:
    """(key, "major"/"minor", confidence 0..1) from the clip's pitch-class profile, or (None, None, None)."""
    found = key_analysis(mono, sr, spec)
    return (found[0], found[1], found[2]) if found else (None, None, None)


def key_analysis(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None):
    """(key, mode, confidence, sections) or None; sections: [(start_s, end_s, "G major")] when the clip
    modulates (more than one key, each held for at least KEY_SECTION_MIN_S), else []."""
    spec = spec if spec is not None else constant_q(mono, sr)
    if spec is None:
        return None
    acts, seg_s = note_activations(spec)
    weighted = np.sqrt(acts)
    chroma = clip_chroma_from(weighted)
    if chroma is None:
        return None
    r = _key_scores(chroma)
    if r.max() < KEY_CONFIDENCE_MIN:
        return None
    key, mode = _key_of(r)
    return key, mode, _confidence(r), _key_sections(weighted, seg_s)


def clip_chroma_from(weighted: np.ndarray) -> np.ndarray | None:
    """Pitch-class profile [12] (sums to 1) of [84, segments] activations, or None if flat or silent."""
    total = weighted.sum(axis=1).reshape(7, 12).sum(axis=0)
    if not np.all(np.isfinite(total)) or total.sum() <= 0:
        return None
    total = total / total.sum()
    if (total.max() - total.min()) / total.mean() < CHROMA_SPREAD_MIN:
        return None
    return total


def clip_chroma(mono: np.ndarray, sr: int = ANALYSIS_SR) -> np.ndarray | None:
    """The clip's harmonic-suppressed pitch-class profile [12] (C..B, sums to 1), or None."""
    spec = constant_q(mono, sr)
    if spec is None:
        return None
    return clip_chroma_from(np.sqrt(note_activations(spec)[0]))


def _key_sections(weighted: np.ndarray, seg_s: float) -> list[tuple[float, float, str]]:
    win = max(1, int(round(KEY_WINDOW_S / seg_s)))
    count = weighted.shape[1]
    if count * seg_s < 2 * KEY_SECTION_MIN_S:
        return []
    labels = []
    for c in range(count):
        prof = clip_chroma_from(weighted[:, max(0, c - win // 2): c + win // 2 + 1])
        labels.append(None if prof is None else " ".join(_key_of(_key_scores(prof))))
    # runs of one label, short runs merged into their neighbour
    runs: list[list] = []
    for c, lab in enumerate(labels):
        if runs and runs[-1][2] == lab:
            runs[-1][1] = c + 1
        else:
            runs.append([c, c + 1, lab])
    min_len = int(math.ceil(KEY_SECTION_MIN_S / seg_s))
    merged: list[list] = []
    for run in runs:
        if run[2] is None or run[1] - run[0] < min_len:
            if merged:
                merged[-1][1] = run[1]
            continue
        if merged and merged[-1][2] == run[2]:
            merged[-1][1] = run[1]
        else:
            if merged:
                merged[-1][1] = run[0]
            merged.append(list(run) if merged else [0, run[1], run[2]])
    if len(merged) < 2:
        return []
    merged[-1][1] = count
    return [(round(a * seg_s, 2), round(b * seg_s, 2), lab) for a, b, lab in merged]


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
    spec = constant_q(mono)
    if mono.size >= MIN_BEAT_SECONDS * ANALYSIS_SR:
        beats = track_beats(mono, spec=spec)
        report("beats", 0.6)
        if beats.bpm is not None:
            result.bpm = beats.bpm
            result.beats = [float(t) for t in beats.times]
            meter, downbeats = estimate_meter(mono, beats, spec=spec)
            if meter is not None:
                result.meter, result.downbeats = meter, [float(t) for t in downbeats]
    report("meter", 0.7)
    found = key_analysis(mono, spec=spec)
    if found is not None:
        result.key, result.mode, result.key_confidence, result.key_sections = found
