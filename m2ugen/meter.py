"""Beats per bar and downbeats of the measured analysis.

- ``estimate_meter``: 3 or 4 beats per bar, and the downbeats, from beat-synchronous features: accent
  (onset strength and energy), harmonic change (chroma distance to the previous beat), bass change,
  bass onsets and bass level (under C3), low onsets (the same flux with or without a bass line: the
  kick where there is none), bar
  repetition of the beat chroma and bass, and each onset function's autocorrelation at 3 against 4
  beats. Two small models fitted on rendered corpus music (``benchmarks/fit_tempo.py``,
  ``assets/meter_model.json``) decide the bar length (logistic) and the downbeat phase (conditional
  logit). Limits: 2/4 and 6/8 read as duple or triple at the beat level (4 or 3 here); a piece that
  changes harmony every beat with no bass line and no accents has little to go on; clicks or drums
  alone need clear accents (a rule: no model)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from m2ugen.beats import BASS_SEMITONES, TEMPO_FUNCTIONS, Beats, acf_near, bass_onsets, function_autocorrelations
from m2ugen.spectrum import ANALYSIS_SR, HOP, Spectrum, _librosa, _semitones

BEAT_FEATURES = ("accent", "harmonic change", "bass change", "bass onsets", "bass level", "low onsets")
HARMONY_FEATURES = slice(1, 5)  # those that need pitched sound: without them only accents decide
PHASE_OFFSETS = (0, -1, 1)      # a phase's evidence: its beats, the beats before them, the beats after them
FRAME_FUNCTIONS = TEMPO_FUNCTIONS   # the onset functions of m2ugen.beats.pulse
METER_MODEL = Path(__file__).with_name("assets") / "meter_model.json"
METER_ACCENT_T = 3.0         # accents alone (clicks, drums) give a meter only from this Welch t up
METER_MIN_BARS = 4           # accents alone decide a bar length only over this many bars of beats
ONSET_SPREAD_MIN = 0.1       # bass onsets per beat vary less than this (relative): no evidence
CHANGE_SD_MIN = 0.02         # beat-to-beat chroma change varies less than this: no harmony to use
BASS_SHARE_MIN = 0.05        # the bass features need at least this share of the spectrum under C3
BASS_PEAKINESS_MIN = 2.0     # mean over beats of the bass pitch classes' max / mean (flat noise ~1.2)


def estimate_meter(mono: np.ndarray, beats: Beats, sr: int = ANALYSIS_SR,
                   spec: Spectrum | None = None) -> tuple[int | None, np.ndarray | None]:
    """(beats per bar 3 or 4, downbeat times) from beat-synchronous accents, harmony and bass, or (None, None).

    Per beat (``_beat_features``): accent (onset strength and energy), harmonic change (chroma
    distance to the previous beat), bass change (the same for the pitch classes under C3), bass
    onsets (semitone flux under C3, where there is a bass line), bass level (its share of the beat's
    chroma) and low onsets (the same flux, measured with or without a bass line: the kick where there
    is none). The bar length
    is a logistic model's call (``meter_features``: how much more of each feature's variance the
    beat's place in a bar of 4 explains than in a bar of 3, how much more alike the beat chroma and
    the bass are 4 and 8 beats apart than 3 and 6, the same for each feature's and each onset
    function's autocorrelation, and the variance and likeness at 2 beats against 3); with harmony or a bass line there is always an answer. The downbeat
    is the phase a second model scores highest (``phase_features``: how far each feature stands out
    on that phase's beats and on the beats just before and after them). Without harmony or bass (clicks, percussion alone) only a clear accent
    (Welch t >= METER_ACCENT_T) gives a meter. Both models: ``assets/meter_model.json``, fitted by
    ``benchmarks/fit_tempo.py``.
    """
    n = beats.frames.size
    if beats.bpm is None or n < 8:
        return None, None
    per_beat = _beat_features(mono, beats, sr, spec)
    if not any(np.any(f) for f in per_beat.feats[HARMONY_FEATURES]):
        return _meter_from_accents(beats, per_beat.feats[0], per_beat.audible)
    model = _meter_model()
    x = (meter_features(per_beat, beats, sr) - model["meter_mean"]) / model["meter_std"]
    meter = 4 if float(x @ model["meter_weights"] + model["meter_bias"]) >= 0.0 else 3
    phase = int(np.argmax(phase_scores(per_beat, meter)))
    return meter, beats.times[phase::meter]


def meter_feature_names() -> list[str]:
    return ([f"explained 4-3 {f}" for f in BEAT_FEATURES]
            + [f"{what} alike 4-3" for what in ("chroma", "bass")] + [f"{what} alike 8-6" for what in ("chroma", "bass")]
            + [f"repeats 4-3 {f}" for f in BEAT_FEATURES]
            + [f"{f} acf 4-3 beats" for f in FRAME_FUNCTIONS] + [f"{f} acf 8-6 beats" for f in FRAME_FUNCTIONS]
            + [f"explained 2-3 {f}" for f in BEAT_FEATURES] + [f"{what} alike 2-3" for what in ("chroma", "bass")])


def meter_features(per_beat: "BeatFeatures", beats: Beats, sr: int = ANALYSIS_SR) -> np.ndarray:
    """The bar-length evidence, 4 (and 2) beats against 3 (names: ``meter_feature_names``)."""
    feats, audible = per_beat.feats, per_beat.audible
    out = [_explained(f, audible, 4) - _explained(f, audible, 3) for f in feats]
    for lags in ((4, 3), (8, 6)):
        for c in (per_beat.chroma, per_beat.bass):
            out.append(_lag_similarity(c, lags[0]) - _lag_similarity(c, lags[1]))
    out += [_beat_autocorrelation(f, audible, 4) - _beat_autocorrelation(f, audible, 3) for f in feats]
    fps = sr / HOP
    period = 60.0 / beats.bpm * fps
    acfs = beats.autocorrelations
    if acfs is None:
        acfs = function_autocorrelations(beats.functions or {})
    for pair in ((4, 3), (8, 6)):
        for name in FRAME_FUNCTIONS:
            acf = acfs.get(name, np.zeros(0))
            usable = 0.75 * acf.size
            out.append(acf_near(acf, pair[0] * period, usable) - acf_near(acf, pair[1] * period, usable))
    # a bar of 4 is two halves alike: a feature grouped in 2s against 3s (a chord every 2 beats, a bass on 1 and 3)
    out += [_explained(f, audible, 2) - _explained(f, audible, 3) for f in feats]
    out += [_lag_similarity(c, 2) - _lag_similarity(c, 3) for c in (per_beat.chroma, per_beat.bass)]
    return np.asarray(out, dtype=np.float64)


def phase_feature_names() -> list[str]:
    return [f"{f} {'on' if k == 0 else f'{k:+d} from'} downbeats" for k in PHASE_OFFSETS for f in BEAT_FEATURES]


def phase_features(per_beat: "BeatFeatures", meter: int) -> np.ndarray:
    """[meter, features] (names: ``phase_feature_names``): per phase, how far each beat feature's mean
    on that phase's beats (and on the beats just before and after them) stands above its mean on the
    other beats (standard scores): a kick on 1 and a snare on 2 and 4, the bass and a new chord on 1."""
    feats, audible = per_beat.feats, per_beat.audible
    n = audible.size
    rows = []
    for phase in range(meter):
        row = []
        for k in PHASE_OFFSETS:
            on = np.zeros(n, dtype=bool)
            on[(phase + k) % meter::meter] = True
            a, b = on & audible, ~on & audible
            row += [float(f[a].mean() - f[b].mean()) if a.any() and b.any() else 0.0 for f in feats]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def phase_scores(per_beat: "BeatFeatures", meter: int) -> np.ndarray:
    model = _meter_model()
    return phase_features(per_beat, meter) @ model["phase_weights"]


@lru_cache(maxsize=1)
def _meter_model() -> dict:
    model = json.loads(METER_MODEL.read_text())
    if model["meter_features"] != meter_feature_names() or model["phase_features"] != phase_feature_names():
        raise RuntimeError(f"{METER_MODEL}: fitted on other features; run benchmarks/fit_tempo.py")
    return {k: np.asarray(v, dtype=np.float64) if k.endswith(("mean", "std", "weights")) else v
            for k, v in model.items() if k.startswith(("meter_", "phase_"))}


def _beat_autocorrelation(f: np.ndarray, audible: np.ndarray, lag: int) -> float:
    """Correlation of a per-beat feature with itself ``lag`` beats later, over audible beat pairs."""
    both = audible[lag:] & audible[:-lag]
    if both.sum() < 4:
        return 0.0
    a, b = f[lag:][both], f[:-lag][both]
    if a.std() <= 0 or b.std() <= 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


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


@dataclass
class BeatFeatures:
    feats: list[np.ndarray]      # per beat, BEAT_FEATURES (standard scores; zeros where not measurable)
    audible: np.ndarray          # beats compared (not in a pause, not the clip's first or last)
    chroma: np.ndarray | None    # [12, beats] beat chroma
    bass: np.ndarray | None      # [12, beats] beat chroma under C3 (None without a bass line)


def _beat_features(mono, beats: Beats, sr, spec: Spectrum | None) -> BeatFeatures:
    """Per beat: BEAT_FEATURES, the audible-beats mask, the beat chroma and bass chroma. Beats 30 dB
    under the median beat (past the clip's end, in a pause) and the clip's first and last beats are
    left out of the comparison; a feature that cannot be measured is zeros."""
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
    feats = [(at[0] + at[1]) / 2.0] + [zeros] * (len(BEAT_FEATURES) - 1)
    out = BeatFeatures(feats, audible, None, None)
    if spec is None or spec.frames < 2:
        return out
    frames = np.minimum(beats.frames, spec.frames - 1)
    bounds = np.concatenate([frames, [spec.frames]])
    semis = _semitones(spec)                          # [84, frames]
    chroma = np.zeros((12, n))
    bass = np.zeros((12, n))
    for i in range(n):
        seg = semis[:, bounds[i]: max(bounds[i + 1], bounds[i] + 1)].mean(axis=1)
        chroma[:, i] = seg.reshape(7, 12).sum(axis=0)
        bass[:, i] = seg[:BASS_SEMITONES].reshape(-1, 12).sum(axis=0)
    out.chroma = chroma
    # a bass line: a share of the spectrum under C3, and pitched (its pitch classes uneven; clicks are flat)
    peaky = float(np.mean(bass.max(axis=0) / np.maximum(bass.mean(axis=0), 1e-12)))
    has_bass = (float(semis[:BASS_SEMITONES].sum()) >= BASS_SHARE_MIN * float(semis.sum())
                and peaky >= BASS_PEAKINESS_MIN)
    for j, c in ((1, chroma), (2, bass)) if has_bass else ((1, chroma),):
        change = _change(c)
        if change.std() > CHANGE_SD_MIN:  # a steady sound's tiny changes are no evidence
            feats[j] = _zscore(change)
    # under C3: bass notes, and the kick drum where there is no bass line (pulse computed it already)
    flux = beats.functions["bass"] if beats.functions and "bass" in beats.functions else bass_onsets(spec)
    onsets = np.where(audible, np.array([flux[max(f - 2, 0): f + 3].max() for f in frames]), 0.0)
    onsets = np.where(audible, onsets, np.median(onsets[audible]) if audible.any() else 0.0)
    if onsets.std() > ONSET_SPREAD_MIN * max(float(onsets.mean()), 1e-12):  # equal onsets are no evidence
        feats[5] = _zscore(onsets)
    if not has_bass:
        return out
    out.bass = bass
    feats[3] = feats[5]
    level = bass.sum(axis=0) / np.maximum(chroma.sum(axis=0), 1e-12)
    feats[4] = _zscore(np.where(audible, level, np.median(level[audible]) if audible.any() else 0.0))
    return out


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
