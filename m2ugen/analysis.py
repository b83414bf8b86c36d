"""Measured analysis of an audio input: tempo and beats, meter, key and mode, loudness and peaks.

    from m2ugen.analysis import analyze, measured_line
    a = analyze(wave, sr)          # wave: float [channels, samples] (or [samples]), any rate, any channels
    a.to_dict()                    # JSON-safe, keys in ANALYSIS_KEYS; None where a value is not measurable
    measured_line(a)               # "Measured: 92 BPM in 4/4, F# minor, -14 LUFS, 8.0 s." (a factual prompt line)

This module holds the result, the input checks and ``analyze``; each step lives in its own module and
is re-exported here (benchmarks and tests time or call them alone):

- ``m2ugen.loudness``: integrated loudness (BS.1770-4 through pyloudnorm) and true peak.
- ``m2ugen.spectrum``: the mono analysis signal and the constant-Q spectrum the other steps share.
- ``m2ugen.beats``: onset envelope, whole-clip tempo, beat tracking.
- ``m2ugen.meter``: beats per bar and downbeats.
- ``m2ugen.key``: key, mode, confidence and key sections.

Measured on rendered real music (music21 corpus through FluidSynth, ``benchmarks/bench_mir.py``;
figures in docs/analysis.md).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from m2ugen.beats import (  # noqa: F401 - re-exported
    Beats, estimate_tempo, has_pulse, novelty, refine_period, tempo_salience, track_beats, MIN_BEAT_SECONDS,
    TEMPO_UNSURE,
)
from m2ugen.key import (  # noqa: F401 - re-exported
    KEY_UNSURE, clip_chroma, estimate_key, key_analysis, key_profiles, note_activations,
)
from m2ugen.loudness import (  # noqa: F401 - re-exported
    measure_loudness, measure_peak, measure_true_peak, true_peak_envelope,
)
from m2ugen.meter import estimate_meter  # noqa: F401 - re-exported
from m2ugen.spectrum import (  # noqa: F401 - re-exported
    ANALYSIS_SR, HOP, KEY_SR, Spectrum, _tuning, analysis_signal, configure_numba_cache, constant_q,
)

ANALYSIS_KEYS = (
    "duration_s", "channels", "sample_rate", "bpm", "beats", "downbeats", "meter", "key", "mode",
    "key_name", "key_confidence", "lufs", "true_peak_dbtp", "peak_dbfs", "summary", "key_sections",
    "bpm_confidence", "bpm_alternative",
)


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
    bpm_confidence: float | None = None    # the tempo level's probability (m2ugen.beats.tempo_level)
    bpm_alternative: float | None = None   # the other likely tempo level, where bpm_confidence < TEMPO_UNSURE

    @property
    def key_name(self) -> str | None:
        return f"{self.key} {self.mode}" if self.key and self.mode else None

    @property
    def summary(self) -> str:
        """A short human line, e.g. "92 BPM, F# minor, -14.0 LUFS, 8.0 s"."""
        parts = _measured_parts(self.bpm, self.key_name, self.lufs, self.duration_s, self.peak_dbfs, lufs_fmt=".1f",
                                meter=self.meter, key_confidence=self.key_confidence,
                                bpm_alternative=self.bpm_alternative)
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
            "bpm_confidence": _num(self.bpm_confidence, 3),
            "bpm_alternative": _num(self.bpm_alternative, 2),
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
                    key_confidence=None, bpm_alternative=None) -> list[str]:
    parts = []
    if peak_dbfs is None:
        parts.append("silence")
    if bpm is not None:
        other = f" (or {_fmt_bpm(bpm_alternative)})" if bpm_alternative else ""
        parts.append(f"{_fmt_bpm(bpm)} BPM{other}" + (f" in {int(meter)}/4" if meter else ""))
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
                            meter=d.get("meter"), key_confidence=d.get("key_confidence"),
                            bpm_alternative=d.get("bpm_alternative"))
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



def preload() -> None:
    """Import librosa and run every analysis step once on a short tone (a server does this at start)."""
    sr = ANALYSIS_SR
    t = np.arange(2 * sr) / sr
    analyze((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], sr)



# ----------------------------------------------------------------------------------------------
# the whole analysis


def analyze(wave: Any, sr: Any, on_progress: Progress | None = None, project_bpm: float | None = None) -> Analysis:
    """Measure tempo, beats, meter, key, loudness and peaks of ``wave`` (float [channels, samples]).
    ``project_bpm``: the DAW project's tempo; where the sound leaves the tempo level open (two levels
    named, ``bpm_alternative``), the one at the project's tempo is reported (``m2ugen.beats.tempo_level``).

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
            _analyze_music(mono, result, report, project_bpm)
    report("key", 1.0)
    return result


def _analyze_music(mono: np.ndarray, result: Analysis, report: Progress, project_bpm: float | None) -> None:
    spec = constant_q(mono)
    if mono.size >= MIN_BEAT_SECONDS * ANALYSIS_SR:
        beats = track_beats(mono, spec=spec, project_bpm=project_bpm)
        report("beats", 0.6)
        if beats.bpm is not None:
            result.bpm = beats.bpm
            result.beats = [float(t) for t in beats.times]
            result.bpm_confidence = beats.level_confidence
            if beats.alternative_ratio is not None:
                result.bpm_alternative = beats.bpm * beats.alternative_ratio
            meter, downbeats = estimate_meter(mono, beats, spec=spec)
            if meter is not None:
                result.meter, result.downbeats = meter, [float(t) for t in downbeats]
    report("meter", 0.7)
    found = key_analysis(mono, spec=spec)
    if found is not None:
        result.key, result.mode, result.key_confidence, result.key_sections = found
