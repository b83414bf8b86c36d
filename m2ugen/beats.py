"""Onsets, the whole clip's tempo and the beats of the measured analysis.

- ``track_beats``: the onset envelope (``novelty``) adds librosa's mel spectral flux (attacks, drums)
  and a semitone-resolution log flux of the constant-Q spectrum (a new pitch or chord without an
  attack: organ, strings, choir). The tempo is found once for the whole clip (``tempo_salience``:
  the envelope's autocorrelation summed at 1, 2, 3 and 4 beats, under a broad log-normal prior), and
  its metrical level is chosen among it and its relatives 1/2, 2, 2/3, 3/2, 1/3, 3
  (``tempo_level``: a conditional logit over ``tempo_level_features``, the autocorrelation of
  four onset functions (onset envelope, attacks, harmonic change, bass onsets) at fractions and
  multiples of each candidate's period, how much of each function falls on its beats and between
  them, and the prior; fitted on rendered corpus music by ``benchmarks/fit_tempo.py``, weights in
  ``assets/tempo_level_model.json``). The model's softmax over the candidates is the chance that each
  is the beat: under TEMPO_UNSURE the next most likely level is kept as the alternative the answer
  names ("146 BPM (or 73)"; ``tempo_level``), and where only it lies at the DAW project's tempo, it is
  reported first. A player off the click sways, and the sway blurs the envelope's
  autocorrelation at 2-4 beats more than at half a beat (the level reads double, the one tempo fits
  badly): ``steady_pulse`` finds the local beat period in 4 s windows, warps the onset functions so
  that it is steady (``sway_warp``, three passes) and keeps the warp where the pulse is clearer there.
  The level and the beats are found on the steady functions; then librosa's dynamic-programming
  tracker places the beats at that tempo (taken back to the clip's time through the warp), each moved
  to the strongest onset within 46 ms. The BPM is refined from the beat times (a least-squares line
  through beat number and time: the mean tempo; a clean click reads within 0.1 BPM). Where the
  envelope has no clear events and does not repeat (``has_pulse``), legato music still has its chord changes: the chroma flux
  (``harmonic_change``) is added to the envelope, the tempo is decided again, and it is kept when the
  chord changes repeat at that beat (a legato choir was silent before). Unpitched sound (``tonality``)
  has no harmonic change, so noise still has no tempo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
BASS_SEMITONES = 24          # C1..B2: the bass line
TEMPO_RELATIVES = (1.0, 0.5, 2.0, 2.0 / 3.0, 1.5, 1.0 / 3.0, 3.0)   # the tempo levels the model chooses from
TEMPO_LEVEL_MIN_BEATS = 8    # shorter clips keep the tempo as found
PROJECT_TEMPO_TOLERANCE = 0.04  # a level this close to the project's tempo is the project's (Acc1's 4 %)
TEMPO_UNSURE = 0.8           # under this probability of the chosen level the next one is named too (chosen
# on train cross-validation: 14 % of clips named two levels there, 94 % of the others right)
TEMPO_FUNCTIONS = ("onsets", "attacks", "harmonic", "bass")
TEMPO_LAG_BEATS = (1.0 / 3.0, 0.5, 1.0, 2.0, 3.0, 4.0)
TEMPO_LEVEL_MODEL = Path(__file__).with_name("assets") / "tempo_level_model.json"
# a player off the click: the local beat period, searched within SWAY_SEARCH of the clip's, in windows of
# SWAY_WINDOW_S (or 4 beats) every SWAY_HOP_S, smoothed over SWAY_SMOOTH_S; a clip whose smoothed
# period sways by more than SWAY_MIN (standard deviation of its log) is heard on a steady time axis
SWAY_SEARCH = 0.15
SWAY_WINDOW_S = 4.0
SWAY_HOP_S = 0.5
SWAY_SMOOTH_S = 1.5
SWAY_MIN = 0.01
SWAY_PASSES = 3
SWAY_LEFT_MIN = 0.005
SWAY_GAIN_MIN = 1.1   # and kept where the steady clip's pulse (tempo salience) is this much clearer
SWAY_WEIGHT_MIN = 0.22  # no warp where the windows' median autocorrelation at 1 and 2 periods is under this:
# legato music whose windows hold too little pulse to measure a local period (the dry dev choir and train
# pad that the warp misread: 0.13 and 0.20; the swaying dev items it set right: 0.37 and up)


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
    functions: dict[str, np.ndarray] | None = None   # the onset functions of ``pulse`` (meter uses them)
    autocorrelations: dict[str, np.ndarray] | None = None   # theirs (``function_autocorrelations``)
    level_confidence: float | None = None   # the chosen tempo level's probability (``tempo_level``)
    alternative_ratio: float | None = None  # the other likely level's tempo / the chosen one's, where unsure


def _bpm_grid() -> np.ndarray:
    return TEMPO_MIN * 2.0 ** (np.arange(int(np.log2(TEMPO_MAX / TEMPO_MIN) * 240) + 1) / 240)  # 0.3 % steps


def _salience(oenv: np.ndarray, sr: int = ANALYSIS_SR) -> np.ndarray:
    """On ``_bpm_grid``: the envelope's autocorrelation summed at 1-4 beats (TEMPO_MULTIPLES), no prior."""
    acf = _autocorrelation(oenv) if oenv.size else np.zeros(0)
    n = acf.size
    if n == 0 or acf[0] <= 0:
        return np.zeros(0)
    bpms = _bpm_grid()
    lags = 60.0 * (sr / HOP) / bpms
    sal = np.zeros_like(bpms)
    for k, w in TEMPO_MULTIPLES:
        lk = lags * k
        ok = lk < n - 1
        sal[ok] += w * np.interp(lk[ok], np.arange(n), np.maximum(acf, 0.0))
    return sal


def tempo_salience(oenv: np.ndarray, sr: int = ANALYSIS_SR) -> tuple[np.ndarray, np.ndarray]:
    """(bpm grid, salience): the whole clip's onset autocorrelation summed over each period's multiples
    (a beat period also repeats at 2, 3 and 4 beats), weighted by a broad log-normal tempo prior."""
    sal = _salience(oenv, sr)
    if sal.size == 0:
        return np.zeros(0), np.zeros(0)
    bpms = _bpm_grid()
    prior = np.exp(-0.5 * (np.log2(bpms / TEMPO_PRIOR_BPM) / TEMPO_PRIOR_OCTAVES) ** 2)
    return bpms, sal * prior


def estimate_tempo(oenv: np.ndarray, sr: int = ANALYSIS_SR) -> float | None:
    """The clip's tempo (BPM) from ``tempo_salience``, or None without a periodic onset envelope."""
    bpms, sal = tempo_salience(oenv, sr)
    if sal.size == 0 or not np.any(sal > 0):
        return None
    return float(bpms[int(np.argmax(sal))])


def pulse(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None
          ) -> tuple[float | None, dict[str, np.ndarray]]:
    """(the whole clip's tempo before its level is chosen, or None without a pulse; the onset functions
    at HOP: "onsets" (the envelope the beats are tracked on), "attacks", "harmonic", "bass")."""
    oenv, attacks = novelty(mono, spec, sr)
    harmonic = harmonic_change(spec)
    functions = {"onsets": oenv, "attacks": attacks, "harmonic": harmonic, "bass": bass_onsets(spec)}
    if oenv.size < 8 or not np.any(oenv > 0):
        return None, functions
    tempo = estimate_tempo(oenv, sr)
    if tempo is None or not has_pulse(oenv, tempo, sr):
        # legato music without attacks (choir, organ, strings): the pulse is where its chords change
        with_harmonic = _with_harmonic_change(oenv, harmonic)
        tempo = estimate_tempo(with_harmonic, sr) if with_harmonic is not None else None
        if tempo is None or not _repeats_at(harmonic, tempo, sr, HARMONIC_PULSE_RATIO_MIN):
            return None, functions
        functions["onsets"] = with_harmonic
    return tempo, functions


def steady_pulse(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None
                 ) -> tuple[float | None, dict[str, np.ndarray], dict[str, np.ndarray], "Warp | None"]:
    """(tempo, the onset functions of ``pulse``, the same heard on a steady beat, the warp between them):
    where the player sways (``sway_warp``) the functions are resampled so that the beat period is the
    same throughout and the tempo is found again there; on a steady clip, or where the steady clip's
    pulse is not clearer by SWAY_GAIN_MIN (dry legato music whose local periods wander), the warp is
    None and the two are the same functions. The tempo level and the beat tracker work on the steady functions."""
    tempo, functions = pulse(mono, sr, spec)
    if tempo is None:
        return None, functions, functions, None
    warp = sway_warp(functions["onsets"], tempo, sr)
    if warp is None:
        return tempo, functions, functions, None
    steady = {name: warp.to_steady(f) for name, f in functions.items()}
    if float(_salience(steady["onsets"], sr).max()) < SWAY_GAIN_MIN * float(_salience(functions["onsets"], sr).max()):
        return tempo, functions, functions, None   # no clearer pulse on the steady beat: the sway was noise
    return estimate_tempo(steady["onsets"], sr) or tempo, functions, steady, warp


def track_beats(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None,
                project_bpm: float | None = None) -> Beats:
    """Beat times: the whole clip's tempo (``steady_pulse``) at the level ``tempo_level`` picks (where
    it is unsure, the one at the project's tempo ``project_bpm``),
    then librosa's dynamic-programming beat tracker held to it on the onset envelope (heard on a steady
    beat where the player sways, the beats then taken back to the clip's time); the BPM is refined from
    the beat times (their mean tempo)."""
    librosa = _librosa()
    tempo, functions, steady, warp = steady_pulse(mono, sr, spec)
    oenv, attacks = functions["onsets"], functions["attacks"]
    none = Beats(None, np.zeros(0), np.zeros(0, dtype=int), oenv, attacks, functions)
    if tempo is None:
        return none
    acfs = function_autocorrelations(steady)
    level = tempo_level(tempo, steady, sr, acfs, project_bpm)
    tempo = level.bpm
    _, frames = librosa.beat.beat_track(onset_envelope=steady["onsets"], sr=sr, hop_length=HOP, bpm=tempo,
                                        tightness=BEAT_TIGHTNESS)
    frames = np.asarray(frames, dtype=int)
    if warp is not None:
        frames = np.unique(np.round(warp.to_clip(frames)).astype(int))
    frames = _snap(frames, oenv)
    if frames.size < MIN_BEATS:
        return none
    times = librosa.frames_to_time(frames, sr=sr, hop_length=HOP)
    period = refine_period(times)
    ratio = None if level.alternative is None else level.alternative / level.bpm
    return Beats(60.0 / period, times, frames, oenv, attacks, functions, acfs, level.confidence, ratio)


# ----------------------------------------------------------------------------------------------
# a player off the click: the clip heard on a steady beat


@dataclass
class Warp:
    """Clip frame ``t`` lies at frame ``steady[t]`` of the steady time (increasing, the same length)."""
    steady: np.ndarray

    def to_steady(self, f: np.ndarray) -> np.ndarray:
        """``f`` (clip frames) resampled at every steady frame."""
        if f.size < 2:
            return f
        n = min(f.size, self.steady.size)
        at = np.interp(np.arange(n, dtype=np.float64), self.steady[:n], np.arange(n, dtype=np.float64))
        return np.interp(at, np.arange(f.size, dtype=np.float64), f)

    def to_clip(self, frames: np.ndarray) -> np.ndarray:
        """Steady frames -> clip frames (fractional)."""
        return np.interp(np.asarray(frames, dtype=np.float64), self.steady, np.arange(self.steady.size, dtype=np.float64))


def local_periods(oenv: np.ndarray, tempo: float, sr: int = ANALYSIS_SR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window centres, beat period in frames, weight) of the onset envelope in windows of SWAY_WINDOW_S
    (at least 4 beats) every SWAY_HOP_S: the lag within SWAY_SEARCH of the clip's beat period where the
    window's autocorrelation at one and two periods is highest (weight: that autocorrelation, 0 for a
    window without events)."""
    fps = sr / HOP
    period = 60.0 * fps / tempo
    width = int(max(SWAY_WINDOW_S * fps, 4.0 * period))
    hop = max(int(SWAY_HOP_S * fps), 1)
    lags = np.arange(period * (1.0 - SWAY_SEARCH), period * (1.0 + SWAY_SEARCH), 0.25)
    starts = np.arange(0, max(oenv.size - width, 0) + 1, hop)
    centres, periods, weights = [], [], []
    for a in starts:
        window = oenv[a: a + width]
        centres.append(a + window.size / 2.0)
        acf = _autocorrelation(window, unbiased=False)
        if acf[0] <= 0 or window.size < 2.5 * lags[-1]:   # no events, or too short for two periods
            periods.append(period)
            weights.append(0.0)
            continue
        grid = np.arange(acf.size, dtype=np.float64)
        score = np.interp(lags, grid, acf) + np.interp(2.0 * lags, grid, acf)
        best = int(np.argmax(score))
        periods.append(float(lags[best]))
        weights.append(max(float(score[best]), 0.0))
    return np.asarray(centres), np.asarray(periods), np.asarray(weights)


def sway_warp(oenv: np.ndarray, tempo: float, sr: int = ANALYSIS_SR) -> Warp | None:
    """The warp that makes the beat period steady, or None for a clip on a click (``_one_warp``). Each
    pass hears only part of the sway (its windows and smoothing average it), so the envelope is heard
    again through the warp found so far and what sway is left is taken out too (SWAY_PASSES)."""
    warp = _one_warp(oenv, tempo, sr, SWAY_MIN)
    if warp is None:
        return None
    for _ in range(SWAY_PASSES - 1):
        more = _one_warp(warp.to_steady(oenv), tempo, sr, SWAY_LEFT_MIN)
        if more is None:
            break
        warp = Warp(np.interp(warp.steady, np.arange(more.steady.size, dtype=np.float64), more.steady))
    return warp


def _one_warp(oenv: np.ndarray, tempo: float, sr: int, sway_min: float) -> Warp | None:
    """The warp that makes the beat period steady (``local_periods``, smoothed over SWAY_SMOOTH_S by
    weight), or None where the smoothed period sways by less than ``sway_min``, the clip holds fewer
    than three windows or their median weight is under SWAY_WEIGHT_MIN."""
    centres, periods, weights = local_periods(oenv, tempo, sr)
    if centres.size < 3 or float(np.median(weights)) < SWAY_WEIGHT_MIN:
        return None
    from scipy.ndimage import gaussian_filter1d

    sigma = SWAY_SMOOTH_S / SWAY_HOP_S
    weights = weights + 1e-3        # a stretch without events keeps the clip's period
    smooth = (gaussian_filter1d(weights * np.log(periods), sigma, mode="constant")
              / gaussian_filter1d(weights, sigma, mode="constant"))
    if float(smooth.std()) < sway_min:
        return None
    frames = np.arange(oenv.size, dtype=np.float64)
    period = np.exp(np.interp(frames, centres, smooth))      # the local beat period at every frame
    beats = np.concatenate([[0.0], np.cumsum(1.0 / period[:-1])])   # beats played by each frame
    return Warp(beats * (frames[-1] / beats[-1]))


# ----------------------------------------------------------------------------------------------
# the tempo level: which of a tempo's relatives (1/2, 2, 2/3, 3/2, 1/3, 3) is the beat


def bass_onsets(spec: Spectrum | None) -> np.ndarray:
    """Semitone log-magnitude flux under C3 (BASS_SEMITONES) at the constant-Q frame rate: where a
    bass note starts (empty without a spectrum)."""
    if spec is None or spec.frames < 2:
        return np.zeros(0)
    semis = _semitones(spec)
    low = np.log1p(LOG_GAIN * semis[:BASS_SEMITONES] / max(float(semis.max()), 1e-12))
    return np.concatenate([[0.0], np.maximum(np.diff(low, axis=1), 0.0).sum(axis=0)])


def tempo_candidates(tempo: float) -> np.ndarray:
    """``tempo`` and its relatives (TEMPO_RELATIVES) within TEMPO_MIN..TEMPO_MAX."""
    c = tempo * np.asarray(TEMPO_RELATIVES)
    return c[(c >= TEMPO_MIN) & (c <= TEMPO_MAX)]


def function_autocorrelations(functions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each onset function's ``_autocorrelation`` (empty for one under 8 frames): computed once, read by
    the tempo level and by the bar length (``m2ugen.meter``)."""
    return {name: _autocorrelation(f) if f.size >= 8 else np.zeros(0) for name, f in functions.items()}


def tempo_level_features(candidates: np.ndarray, functions: dict[str, np.ndarray],
                         sr: int = ANALYSIS_SR, acfs: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """[candidates, features] (names: ``tempo_level_feature_names``): per onset function (the onset
    envelope, attacks, harmonic change, bass onsets), its autocorrelation at 1/3, 1/2, 1, 2, 3 and 4
    beat periods of each candidate (the largest within 2 %: a bar of 3 or 4 repeats, a level's
    subdivisions), the onset envelope's tempo salience relative to its best tempo, and the
    candidate's octave distance from TEMPO_PRIOR_BPM and its square. A missing function is zeros.
    ``acfs``: the functions' autocorrelations where already computed (``function_autocorrelations``)."""
    fps = sr / HOP
    rows = [[] for _ in candidates]
    acfs = function_autocorrelations(functions) if acfs is None else acfs
    for name in TEMPO_FUNCTIONS:
        acf = acfs.get(name, np.zeros(0))
        for i, bpm in enumerate(candidates):
            lag = 60.0 * fps / bpm
            rows[i] += [acf_near(acf, k * lag, acf.size // 2 + 1) for k in TEMPO_LAG_BEATS]
    for name in TEMPO_FUNCTIONS:
        f = functions.get(name)
        for i, bpm in enumerate(candidates):
            rows[i] += list(_grid_fill(f, 60.0 * fps / bpm)) if f is not None and f.size >= 8 else [0.0, 0.0]
    sal = _salience(functions["onsets"], sr)
    grid_bpms = _bpm_grid()
    best = float(sal.max()) if sal.size and sal.max() > 0 else 1.0
    for i, bpm in enumerate(candidates):
        at = float(np.interp(np.log2(bpm), np.log2(grid_bpms), sal)) if sal.size else 0.0
        octaves = float(np.log2(bpm / TEMPO_PRIOR_BPM))
        rows[i] += [at / best, octaves, octaves**2]
    return np.asarray(rows, dtype=np.float64).reshape(len(candidates), -1)


def acf_near(acf: np.ndarray, lag: float, usable: float) -> float:
    """The autocorrelation's largest value within 2 % of ``lag`` frames (0 where that reaches past
    ``usable`` frames: too few pairs to count)."""
    lo, hi = int(np.floor(0.98 * lag)), int(np.ceil(1.02 * lag)) + 1
    return float(acf[lo:hi].max()) if acf.size and hi <= usable else 0.0


def tempo_level_feature_names() -> list[str]:
    return ([f"{name}@{k:.3g}" for name in TEMPO_FUNCTIONS for k in TEMPO_LAG_BEATS]
            + [f"{name} {where}" for name in TEMPO_FUNCTIONS for where in ("on beats", "between beats")]
            + ["salience", "octaves", "octaves^2"])


def _grid_fill(f: np.ndarray, period: float) -> tuple[float, float]:
    """(on, between): at the phase where a grid of beats ``period`` frames apart catches most of ``f``,
    the mean of ``f`` (its largest within +-2 frames) on the beats and half-way between them, each over
    its mean everywhere. A beat level has events on nearly every beat; a level below it (half the
    tempo) also has them between its beats."""
    peak = np.lib.stride_tricks.sliding_window_view(np.pad(f, 2, mode="edge"), 5).max(axis=1)
    mean = float(peak.mean())
    count = int((f.size - 1) // period)
    if mean <= 0 or count < 2:
        return 0.0, 0.0
    k = np.arange(count) * period
    on = np.array([peak[np.round(phase + k).astype(int)].mean() for phase in range(int(period))])
    best = int(np.argmax(on))
    between = np.round(best + period / 2 + k[:-1]).astype(int)
    return float(on[best]) / mean, float(peak[between].mean()) / mean


@lru_cache(maxsize=1)
def _tempo_level_model() -> dict:
    model = json.loads(TEMPO_LEVEL_MODEL.read_text())
    if model["features"] != tempo_level_feature_names():
        raise RuntimeError(f"{TEMPO_LEVEL_MODEL}: fitted on other features; run benchmarks/fit_tempo.py")
    return {k: np.asarray(model[k], dtype=np.float64) for k in ("mean", "std", "weights")}


def tempo_level_scores(candidates: np.ndarray, functions: dict[str, np.ndarray], sr: int = ANALYSIS_SR,
                       acfs: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The fitted model's score of each candidate (a conditional logit: the softmax over a clip's
    candidates is the chance that each one is the beat)."""
    m = _tempo_level_model()
    x = (tempo_level_features(candidates, functions, sr, acfs) - m["mean"]) / m["std"]
    return x @ m["weights"]


@dataclass(frozen=True)
class TempoLevel:
    bpm: float                  # the chosen candidate
    confidence: float | None    # its probability among the candidates; None where no level was chosen
    alternative: float | None   # where the model is unsure (under TEMPO_UNSURE): the other of its two likeliest


def tempo_level(tempo: float, functions: dict[str, np.ndarray], sr: int = ANALYSIS_SR,
                acfs: dict[str, np.ndarray] | None = None, project_bpm: float | None = None) -> TempoLevel:
    """The candidate among ``tempo``'s relatives that the tempo-level model scores highest, its
    probability (the softmax over the candidates) and, under TEMPO_UNSURE, the runner-up; ``tempo``
    itself (no confidence) in a clip shorter than TEMPO_LEVEL_MIN_BEATS of it (its bars cannot be
    compared) or without relatives in range. ``project_bpm`` (the DAW project's tempo) decides between
    the two where the model is unsure and only the runner-up lies within PROJECT_TEMPO_TOLERANCE of it
    (the first choice is then the alternative); a level the model is sure of stands."""
    cands = tempo_candidates(tempo)
    if cands.size < 2 or functions["onsets"].size < TEMPO_LEVEL_MIN_BEATS * 60.0 * sr / HOP / tempo:
        return TempoLevel(float(tempo), None, None)
    scores = tempo_level_scores(cands, functions, sr, acfs)
    p = np.exp(scores - scores.max())
    p /= p.sum()
    first, second = np.argsort(-p, kind="stable")[:2]
    if p[first] >= TEMPO_UNSURE:
        return TempoLevel(float(cands[first]), float(p[first]), None)
    if project_bpm and _near(cands[second], project_bpm) and not _near(cands[first], project_bpm):
        first, second = second, first
    return TempoLevel(float(cands[first]), float(p[first]), float(cands[second]))


def _near(bpm: float, other: float) -> bool:
    return abs(bpm / other - 1.0) <= PROJECT_TEMPO_TOLERANCE


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


def _autocorrelation(oenv: np.ndarray, unbiased: bool = True) -> np.ndarray:
    """Autocorrelation of the mean-removed envelope, 1 at lag 0 (zeros for a flat one); ``unbiased``:
    each lag divided by its number of pairs (else by the envelope's length: a short window's long lags
    weigh less)."""
    x = oenv - oenv.mean()
    n = x.size
    acf = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * n)) ** 2)[:n]
    if acf[0] <= 0:
        return np.zeros(n)
    return acf / acf[0] * (n / np.maximum(n - np.arange(n), 1) if unbiased else 1.0)
