"""Key, mode, confidence and key sections of the measured analysis.

- ``key_analysis``: a harmonic-suppressed pitch-class profile: per 0.5 s segment the median constant-Q
  spectrum (drum hits drop out) is explained as a non-negative sum of note spectra with harmonic
  partials (NNLS over 84 notes), so a note's third partial no longer counts as its fifth; the square
  roots of the note activations from C2 up (C1..B1 is fitted, so kick drums and rumble are explained
  there, but not counted: with drums the key was lost) are summed into 12 pitch classes and
  correlated (Pearson) with the 24 rotations of Temperley's (Kostka-Payne) and of Aarden's (Essen folk
  songs) major and minor profiles: the profile score is its mean correlation with the two. A chord view
  adds to it: each second is labelled with its major or minor triad (soft: a softmax over the 24 triads'
  cosine with the notes that sound, notes under CHORD_NOTE_FLOOR of the segment's strongest left out),
  and each key scores the mean log probability of those chords as degrees of that key (I, V, vi, bVII
  ... ; a table per mode fitted on rendered corpus music), so a minor key's V and raised leading-tone
  chords tell it from its relative major, and a piece's chords tell a key from its dominant. A key's
  score is the profile score plus the chord weight (chosen beside the table) times the chord score.
  ``key_confidence`` (0..1) is the best key's probability: a softmax over the 24 scores with a gain
  fitted by maximum likelihood on rendered corpus music (``benchmarks/fit_key.py``,
  ``assets/key_model.json``), so that it averages about the share of keys that are right; under
  KEY_UNSURE (two keys, usually relative or fifth-related, about equal) the prompt line says "(unsure)".
  ``key_sections``: where a clip of at least 24 s holds more than one key for at least 12 s each
  (16 s windows), the sections in order; otherwise empty. Unpitched sound (``tonality`` under
  TONALITY_MIN: noise), a flat profile, a best profile score under KEY_CONFIDENCE_MIN (clicks) or one
  pitch class holding KEY_ONE_PITCH_SHARE of the profile (one note, a drone) gives no key. Limits:
  relative major/minor, the dominant and the subdominant are the usual misses (the note fit still
  leaves some ghost notes a fifth under real ones); a reverberant room costs a few points (docs/analysis.md).
  Key names use the usual spelling (Bb major, F# minor, C# minor, Eb minor ...).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from m2ugen.spectrum import (
    ANALYSIS_SR, CQT_BINS, CQT_BPO, CQT_HOP, KEY_SR, SEMITONE_BINS, TONALITY_MIN, Spectrum, constant_q, tonality,
)

CHROMA_SPREAD_MIN = 0.5      # (max - min) / mean of the clip's chroma: noise 0.05-0.15, chords about 3
KEY_CONFIDENCE_MIN = 0.3     # below this best profile correlation (clicks, unpitched hits: 0.25) there is no key
# one pitch class holding this share of the profile is one note or a drone, not a key (a sine 0.64, a sawtooth
# note 0.37; rendered music at most 0.31, also in a reverberant room, where the best profile correlation of
# mixes with drums falls to 0.40-0.49: the correlation alone, at 0.5, gave those no key)
KEY_ONE_PITCH_SHARE = 0.35
KEY_SEGMENT_S = 0.5          # spectra are summarised per segment (median) before the note fit
KEY_WINDOW_S = 16.0          # local keys for sections
KEY_SECTION_MIN_S = 12.0     # a key section lasts at least this long
KEY_MODEL = Path(__file__).with_name("assets") / "key_model.json"   # chord-degree table, its weight, the gain
KEY_UNSURE = 0.5             # under this confidence the prompt line says "(unsure)"
NNLS_DECAY = 0.7             # note dictionary: partial h has amplitude NNLS_DECAY ** (h - 1)
KEY_LOWEST_NOTE = 12         # C2: notes under it are fitted (they absorb kick drums and rumble) but not counted
NNLS_PARTIALS = 12
CHORD_SEGMENTS = 2           # a chord label per this many KEY_SEGMENT_S segments (1 s)
CHORD_NOTE_FLOOR = 0.2       # notes under this share of the segment's strongest activation are not in its chord
CHORD_SHARPNESS = 20.0       # softmax gain on the triads' cosine with the segment's notes
CHORD_QUIET = 0.05           # segments under this share of the clip's loudest one carry no chord
# scale degrees (semitones above the tonic) as roman numerals: major triads upper case, minor lower case
DEGREES = ("I", "bII", "II", "bIII", "III", "IV", "#IV", "V", "bVI", "VI", "bVII", "VII")
CHORD_DEGREES = DEGREES + tuple(d.lower() for d in DEGREES)
MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
# Temperley (2007) major and minor key profiles (Kostka-Payne corpus), tonic first
KEY_MAJOR = np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])
KEY_MINOR = np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])
# Aarden (2003) major and minor profiles (Essen folk song collection), tonic first
AARDEN_MAJOR = np.array([17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062, 0.145624,
                         8.15494, 0.232998, 4.95122])
AARDEN_MINOR = np.array([18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161, 4.56621,
                         1.93186, 7.37619, 1.75623])
# a key's score is its mean correlation with these (major, minor) profile pairs
PROFILE_PAIRS = ((KEY_MAJOR, KEY_MINOR), (AARDEN_MAJOR, AARDEN_MINOR))


def key_profiles(major: np.ndarray = KEY_MAJOR, minor: np.ndarray = KEY_MINOR) -> np.ndarray:
    """[24, 12]: rows 0..11 major keys on C..B, 12..23 minor keys on C..B (``major`` / ``minor`` rotated)."""
    return np.stack([np.roll(major, k) for k in range(12)] + [np.roll(minor, k) for k in range(12)])


@lru_cache(maxsize=1)
def _triads() -> np.ndarray:
    """[24, 12] unit-norm triad templates: rows 0..11 major triads on C..B, 12..23 minor triads."""
    t = np.zeros((24, 12))
    for root in range(12):
        t[root, [root, (root + 4) % 12, (root + 7) % 12]] = 1.0
        t[12 + root, [root, (root + 3) % 12, (root + 7) % 12]] = 1.0
    return t / math.sqrt(3.0)


def chord_histogram(weighted: np.ndarray) -> np.ndarray | None:
    """[24] the clip's share of time in each major (0..11 on C..B) and minor (12..23) triad, or None
    without a sounding segment: per CHORD_SEGMENTS segments, the notes at least CHORD_NOTE_FLOOR of the
    strongest (in activation) folded into pitch classes, each triad's cosine with them, softmax
    (CHORD_SHARPNESS); segments under CHORD_QUIET of the loudest are left out, the rest count equally."""
    strongest = (weighted ** 2).max(axis=0, keepdims=True)
    notes = weighted * (weighted ** 2 >= CHORD_NOTE_FLOOR * strongest)
    count = notes.shape[1] // CHORD_SEGMENTS
    if count:
        notes = notes[:, : count * CHORD_SEGMENTS].reshape(notes.shape[0], count, CHORD_SEGMENTS).sum(axis=2)
    pcs = notes.reshape(7, 12, -1).sum(axis=0)
    energy = pcs.sum(axis=0)
    if energy.size == 0 or energy.max() <= 0:
        return None
    pcs = pcs[:, energy >= CHORD_QUIET * energy.max()]
    cosine = _triads() @ (pcs / np.linalg.norm(pcs, axis=0))
    p = np.exp(CHORD_SHARPNESS * (cosine - cosine.max(axis=0)))
    hist = (p / p.sum(axis=0)).sum(axis=1)
    return hist / hist.sum()


def chord_degrees(hist: np.ndarray, tonic: int) -> np.ndarray:
    """[24] a chord histogram (rows as ``chord_histogram``) as degrees of ``tonic`` (CHORD_DEGREES order)."""
    return np.concatenate([np.roll(hist[:12], -tonic), np.roll(hist[12:], -tonic)])


def chord_scores(hist: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    """[24] per key (rows as ``key_profiles``): the mean log probability of the clip's chords (``hist``)
    as degrees of that key, under ``log_p`` [2, 24] (log P(chord degree | major, minor key))."""
    return np.array([chord_degrees(hist, k % 12) @ log_p[int(k >= 12)] for k in range(24)])


@lru_cache(maxsize=1)
def _centred_profiles() -> np.ndarray:
    """[pairs, 24, 12] key profiles of PROFILE_PAIRS, each row centred and of unit norm."""
    p = np.stack([key_profiles(major, minor) for major, minor in PROFILE_PAIRS])
    p = p - p.mean(axis=2, keepdims=True)
    return p / np.linalg.norm(p, axis=2, keepdims=True)


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


def segment_frames() -> int:
    """Constant-Q frames per note-fit segment (KEY_SEGMENT_S, 22 frames: 0.51 s)."""
    return max(1, int(round(KEY_SEGMENT_S * KEY_SR / CQT_HOP)))


def note_activations(spec: Spectrum) -> tuple[np.ndarray, float]:
    """([84, segments] note activations, seconds per segment): NNLS of each segment's spectrum (the
    median over KEY_SEGMENT_S, which drops drum hits) on the harmonic note dictionary, so a note's
    harmonics are explained by that note instead of adding their own pitch classes."""
    import scipy.optimize

    seg = segment_frames()
    count = max(1, spec.frames // seg)
    usable = spec.mag[:, : count * seg] if spec.frames >= seg else spec.mag
    x = np.median(usable.reshape(CQT_BINS, count, -1), axis=2)
    d = _note_dictionary(round(spec.tuning * SEMITONE_BINS, 2))
    acts = np.zeros((84, count))
    for t in range(count):
        if x[:, t].max() > 0:
            acts[:, t] = scipy.optimize.nnls(d, x[:, t].astype(np.float64), maxiter=200)[0]
    return acts, seg * CQT_HOP / KEY_SR


def _profile_scores(chroma: np.ndarray) -> np.ndarray:
    """[24] the mean over PROFILE_PAIRS of the Pearson correlations of ``chroma`` with each key's profile."""
    c = chroma - chroma.mean()
    norm = np.linalg.norm(c)
    return (_centred_profiles() @ c).mean(axis=0) / norm if norm > 0 else np.zeros(24)


def _key_of(r: np.ndarray) -> tuple[str, str]:
    best = int(np.argmax(r))
    tonic, minor = best % 12, best >= 12
    return (MINOR_NAMES if minor else MAJOR_NAMES)[tonic], "minor" if minor else "major"


def _key_scores(chroma: np.ndarray, hist: np.ndarray | None) -> np.ndarray:
    """[24] each key's score: its profile score plus the fitted chord weight times its chord score (the
    profile score alone where no segment sounds a chord)."""
    r = _profile_scores(chroma)
    if hist is None:
        return r
    weight, log_p = chord_model()
    return r + weight * chord_scores(hist, log_p)


@lru_cache(maxsize=1)
def chord_model() -> tuple[float, np.ndarray]:
    """(chord weight, [2, 24] log P(chord degree | major, minor key)) from ``assets/key_model.json``
    (``benchmarks/fit_key.py``: the table counts the chords of rendered corpus music in its labelled
    key)."""
    model = json.loads(KEY_MODEL.read_text())
    weight, table = model.get("chord_weight"), model.get("chord_degrees")
    if not isinstance(weight, (int, float)) or not 0 <= weight < 100:
        raise ValueError(f"{KEY_MODEL}: chord_weight must be a number in [0, 100), not {weight!r}")
    try:
        p = np.array([[float(table[mode][d]) for d in CHORD_DEGREES] for mode in ("major", "minor")])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{KEY_MODEL}: chord_degrees must give each of {', '.join(CHORD_DEGREES)} a "
                         "probability for 'major' and 'minor'; refit it with benchmarks/fit_key.py") from None
    if not np.all(p > 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{KEY_MODEL}: chord_degrees must be positive probabilities summing to 1 per mode")
    return float(weight), np.log(p)


@lru_cache(maxsize=1)
def softmax_gain() -> float:
    """The gain on the 24 key scores that makes their softmax a calibrated probability of the key:
    fitted by maximum likelihood on rendered training music (``benchmarks/fit_key.py``), stored in
    ``assets/key_model.json``."""
    gain = json.loads(KEY_MODEL.read_text()).get("softmax_gain")
    if not isinstance(gain, (int, float)) or not 0 < gain < 1000:
        raise ValueError(f"{KEY_MODEL}: softmax_gain must be a number in (0, 1000), not {gain!r}")
    return float(gain)


def key_posterior(r: np.ndarray, gain: float) -> np.ndarray:
    """[24] softmax of ``gain`` times the key scores ``r``: the probability of each key."""
    z = np.exp(gain * (r - r.max()))
    return z / z.sum()


def _confidence(r: np.ndarray) -> float:
    """The best key's probability among the 24 (``key_posterior`` at the fitted ``softmax_gain``)."""
    return float(key_posterior(r, softmax_gain()).max())


def estimate_key(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None
                 ) -> tuple[str | None, str | None, float | None]:
    """(key, "major"/"minor", confidence 0..1) from the clip's pitch-class profile, or (None, None, None)."""
    found = key_analysis(mono, sr, spec)
    return (found[0], found[1], found[2]) if found else (None, None, None)


def key_analysis(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None):
    """(key, mode, confidence, sections) or None; sections: [(start_s, end_s, "G major")] when the clip
    modulates (more than one key, each held for at least KEY_SECTION_MIN_S), else []."""
    found = clip_key_inputs(mono, sr, spec)
    return None if found is None else key_of_inputs(*found)


def key_of_inputs(chroma: np.ndarray, hist: np.ndarray | None, weighted: np.ndarray, seg_s: float):
    """``key_analysis`` from what ``clip_key_inputs`` returns: (key, mode, confidence, sections), or None
    for clicks (best profile score under KEY_CONFIDENCE_MIN) and one note or a drone."""
    if _profile_scores(chroma).max() < KEY_CONFIDENCE_MIN or chroma.max() >= KEY_ONE_PITCH_SHARE:
        return None
    scores = _key_scores(chroma, hist)
    key, mode = _key_of(scores)
    return key, mode, _confidence(scores), _key_sections(weighted, seg_s)


def clip_key_scores(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None):
    """([24] key scores of the clip, [84, segments] counted note activations, seconds per segment), or
    None for noise, a clip too short for a spectrum, or a flat or silent profile. Rows as
    ``key_profiles``."""
    found = clip_key_inputs(mono, sr, spec)
    if found is None:
        return None
    chroma, hist, weighted, seg_s = found
    return _key_scores(chroma, hist), weighted, seg_s


def clip_key_inputs(mono: np.ndarray, sr: int = ANALYSIS_SR, spec: Spectrum | None = None):
    """(pitch-class profile [12], chord histogram [24] or None, counted note activations [84, segments],
    seconds per segment) of the clip, or None (as ``clip_key_scores``): what the key scores are made of
    (``benchmarks/fit_key.py`` fits the chord table and the gain on them)."""
    spec = spec if spec is not None else constant_q(mono, sr)
    if spec is None or tonality(spec) < TONALITY_MIN:  # noise has no key
        return None
    return key_inputs_of(*note_activations(spec))


def key_inputs_of(acts: np.ndarray, seg_s: float):
    """``clip_key_inputs`` from [84, segments] note activations (C1..B7) and the seconds per segment, or
    None for a flat or silent profile (``benchmarks/key_bound.py`` feeds the scores' exact notes here)."""
    weighted = _counted(acts)
    chroma = clip_chroma_from(weighted)
    if chroma is None:
        return None
    return chroma, chord_histogram(weighted), weighted, seg_s


def _counted(acts: np.ndarray) -> np.ndarray:
    """Square roots of the note activations (a loud note does not swamp the rest), the lowest octave
    (C1..B1, where kick drums and rumble sit, under almost every bass line) set to 0."""
    weighted = np.sqrt(acts)
    weighted[:KEY_LOWEST_NOTE] = 0.0
    return weighted


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
    return clip_chroma_from(_counted(note_activations(spec)[0]))


def _key_sections(weighted: np.ndarray, seg_s: float) -> list[tuple[float, float, str]]:
    win = max(1, int(round(KEY_WINDOW_S / seg_s)))
    count = weighted.shape[1]
    if count * seg_s < 2 * KEY_SECTION_MIN_S:
        return []
    labels = []
    for c in range(count):
        window = weighted[:, max(0, c - win // 2): c + win // 2 + 1]
        prof = clip_chroma_from(window)
        labels.append(None if prof is None else " ".join(_key_of(_key_scores(prof, chord_histogram(window)))))
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
