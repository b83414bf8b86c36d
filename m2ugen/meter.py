"""Beats per bar and downbeats of the measured analysis.

- ``estimate_meter``: 3 or 4 beats per bar from beat-synchronous features: accent (onset strength and
  energy), harmonic change (chroma distance to the previous beat), bass onsets (flux under C3) and bar
  repetition (beat chroma alike 1 and 2 bars apart). See the function for the rule. Limits: 2/4 and 6/8
  read as duple or triple at the beat level (4 or 3 here); a piece that changes harmony every beat with
  no bass line and no accents has little to go on; clicks or drums alone need clear accents.
"""

from __future__ import annotations

import math

import numpy as np

from m2ugen.beats import Beats
from m2ugen.spectrum import ANALYSIS_SR, HOP, LOG_GAIN, Spectrum, _librosa, _semitones

# weights of (accent, harmonic change, bass change, bass onsets) for the bar length and for the phase
METER_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0])
METER_PHASE_WEIGHTS = np.array([1.0, 1.0, 0.0, 1.0])  # bass change did not place downbeats on dev
METER_ACCENT_T = 3.0         # accents alone (clicks, drums) give a meter only from this Welch t up
METER_MIN_BARS = 4           # accents alone decide a bar length only over this many bars of beats
METER_W_SIMILARITY = 0.5     # weight of "beat chroma repeats at 1 and 2 bars"
ONSET_SPREAD_MIN = 0.1       # bass onsets per beat vary less than this (relative): no evidence
CHANGE_SD_MIN = 0.02         # beat-to-beat chroma change varies less than this: no harmony to use
BASS_SHARE_MIN = 0.05        # the bass features need at least this share of the spectrum under C3
BASS_PEAKINESS_MIN = 2.0     # mean over beats of the bass pitch classes' max / mean (flat noise ~1.2)
BASS_SEMITONES = 24          # C1..B2: the bass line for meter


def estimate_meter(mono: np.ndarray, beats: Beats, sr: int = ANALYSIS_SR,
                   spec: Spectrum | None = None) -> tuple[int | None, np.ndarray | None]:
    """(beats per bar 3 or 4, downbeat times) from beat-synchronous accents, harmony and bass, or (None, None).

    Per beat: accent (onset strength and energy), harmonic change (chroma distance to the previous
    beat), bass change (the same for the pitch classes under C3) and bass onsets (semitone flux under
    C3). The bar length: for m in (3, 4), how much of each feature's variance the beat's position in
    an m-beat bar explains (eta squared, less its chance level (m-1)/(beats-1)), weighted
    (METER_WEIGHTS), plus how much more alike the beat chroma is 1 and 2 bars apart than at the other
    length (bars repeat). A pattern counts whether the downbeat is louder or softer (a waltz's bass
    note alone is softer than its chords). The larger score is the answer: with harmony or bass to go on
    there is always one (a weak call was right more often than not on the dev set). The downbeat
    phase is the one where accents, harmonic changes and bass onsets stand out most (the sum of their
    Welch t statistics, METER_PHASE_WEIGHTS). Without harmony or bass (clicks,
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

    def phase_evidence(phase: int) -> float:
        on = np.zeros(n, dtype=bool)
        on[phase::meter] = True
        t = np.array([_welch_t(f[on & audible], f[~on & audible]) for f in feats])
        return float(METER_PHASE_WEIGHTS @ np.clip(t, -10.0, 10.0))  # a perfect split is t = inf

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
