"""Onsets, the whole clip's tempo and the beats of the measured analysis.

- ``track_beats``: the onset envelope (``novelty``) adds librosa's mel spectral flux (attacks, drums)
  and a semitone-resolution log flux of the constant-Q spectrum (a new pitch or chord without an
  attack: organ, strings, choir). The tempo is decided once for the whole clip (``tempo_salience``:
  the envelope's autocorrelation summed at 1, 2, 3 and 4 beats, under a broad log-normal prior), then
  librosa's dynamic-programming tracker places the beats at that tempo, each moved to the strongest
  onset within 46 ms. The BPM is refined from the beat times (a least-squares line through beat number
  and time; a clean click reads within 0.1 BPM). Where the envelope has no clear events and does not
  repeat (``has_pulse``), legato music still has its chord changes: the chroma flux
  (``harmonic_change``) is added to the envelope, the tempo is decided again, and it is kept when the
  chord changes repeat at that beat (a legato choir was silent before). Unpitched sound (``tonality``)
  has no harmonic change, so noise still has no tempo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m2ugen.spectrum import ANALYSIS_SR, HOP, LOG_GAIN, TONALITY_MIN, Spectrum, _librosa, _semitones, tonality

MIN_BEATS = 4
PULSE_PEAKINESS_MIN = 1.38   # onset envelope 95th percentile / median: noise 1.2-1.3, music 1.45 and up
PULSE_RATIO_MIN = 1.6        # or: autocorrelation at 1-4 beats / its spread over 0.25-4 s lags (noise < 1.3)
TEMPO_MIN, TEMPO_MAX = 40.0, 220.0
TEMPO_PRIOR_BPM = 115.0      # log-normal tempo prior: centre and width (octaves), chosen on dev and dev folk tunes
TEMPO_PRIOR_OCTAVES = 1.1
TEMPO_MULTIPLES = ((1, 1.0), (2, 0.5), (3, 0.25), (4, 0.25))  # (beats, weight) summed per tempo candidate
HARMONIC_PULSE_RATIO_MIN = 1.2  # that test on the harmonic change alone (noise < 0.8, dev legato choir 2.0)
HARMONIC_LAG = 3             # frames (70 ms): chroma compared with the chroma this long before
HARMONIC_SMOOTH = 3          # frames of moving average before (vibrato and bowing wobble are not changes)
BEAT_TIGHTNESS = 100.0       # librosa's DP: how strictly beats keep the whole clip's tempo
MIN_BEAT_SECONDS = 1.0       # shorter clips are not beat-tracked


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


def harmonic_change(spec: Spectrum | None) -> np.ndarray:
    """Chroma flux at the constant-Q frame rate: how much new pitch-class content each frame has that
    the frame HARMONIC_LAG before lacked (log-compressed semitone chroma, smoothed, unit length). A
    chord change in a legato choir or organ shows here even where no note has an attack. Empty for
    unpitched sound (``tonality`` under TONALITY_MIN), whose chroma wanders at random."""
    if spec is None or spec.frames <= HARMONIC_LAG + 1 or tonality(spec) < TONALITY_MIN:
        return np.zeros(0)
    semis = _semitones(spec)
    c = np.log1p(100.0 * semis / max(float(semis.max()), 1e-12)).reshape(7, 12, -1).sum(axis=0)
    kernel = np.ones(HARMONIC_SMOOTH) / HARMONIC_SMOOTH
    c = np.stack([np.convolve(row, kernel, "same") for row in c])
    c = c / np.maximum(np.linalg.norm(c, axis=0), 1e-9)
    flux = np.zeros(c.shape[1])
    flux[HARMONIC_LAG:] = np.maximum(c[:, HARMONIC_LAG:] - c[:, :-HARMONIC_LAG], 0.0).sum(axis=0)
    return flux


def _with_harmonic_change(oenv: np.ndarray, harmonic: np.ndarray) -> np.ndarray | None:
    """The onset envelope plus the harmonic change (same 23.2 ms frames), each at unit deviation, or
    None when there is no harmonic change to add."""
    n = min(oenv.size, harmonic.size)
    if n < 8 or float(harmonic[:n].std()) <= 0 or float(oenv.std()) <= 0:
        return None
    out = oenv / float(oenv.std())
    out[:n] += harmonic[:n] / float(harmonic[:n].std())
    return out


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
        # legato music without attacks (choir, organ, strings): the pulse is where its chords change
        harmonic = harmonic_change(spec)
        oenv = _with_harmonic_change(oenv, harmonic)
        tempo = estimate_tempo(oenv, sr) if oenv is not None else None
        if tempo is None or not _repeats_at(harmonic, tempo, sr, HARMONIC_PULSE_RATIO_MIN):
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
    return _repeats_at(oenv, bpm, sr)


def _repeats_at(oenv: np.ndarray, bpm: float, sr: int = ANALYSIS_SR, ratio_min: float = PULSE_RATIO_MIN) -> bool:
    """Whether the envelope's autocorrelation at 1-4 beats stands out of its spread over 0.25-4 s lags."""
    acf = _autocorrelation(oenv)
    fps = sr / HOP
    lag = 60.0 / bpm * fps
    multiples = [int(round(k * lag)) for k in range(1, 5) if k * lag < acf.size / 2]
    if len(multiples) < 3:   # too short to tell a repeating envelope from chance
        return False
    at_beats = float(np.mean(acf[multiples]))
    lo, hi = int(0.25 * fps), int(min(acf.size / 2, 4 * fps))
    spread = float(acf[lo:hi].std()) if hi > lo + 2 else 0.0
    return spread > 0 and at_beats / spread >= ratio_min


def _autocorrelation(oenv: np.ndarray) -> np.ndarray:
    """Unbiased autocorrelation of the mean-removed envelope, 1 at lag 0 (zeros for a flat one)."""
    x = oenv - oenv.mean()
    n = x.size
    acf = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * n)) ** 2)[:n]
    if acf[0] <= 0:
        return np.zeros(n)
    return acf / acf[0] * n / np.maximum(n - np.arange(n), 1)
