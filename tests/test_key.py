"""m2ugen.key: the key profiles, the fitted confidence and the key sections, on synthetic chords.

The signals are harmonic tones made here (``tests/test_analysis.py``'s ``chord_progression``); the
confidence's gain fit is checked on synthetic draws with a known gain.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

from m2ugen import key
from m2ugen.analysis import analyze
from m2ugen.spectrum import analysis_signal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_analysis import chord_progression  # noqa: E402

AM, C, EM, F, G = ("A", "C", "E"), ("C", "E", "G"), ("E", "G", "B"), ("F", "A", "C"), ("G", "B", "D")
DM = ("D", "F", "A")
E, A, B = ("E", "G#", "B"), ("A", "C#", "E"), ("B", "D#", "F#")


def _fit_key_module():
    return load_benchmark("fit_key")


@pytest.fixture
def no_chords(monkeypatch):
    """The key scores from the profiles alone (chord weight 0: the scores before the chord view)."""
    monkeypatch.setattr(key, "chord_model", lambda: (0.0, np.zeros((2, 24))))


@pytest.fixture
def temperley_only(monkeypatch, no_chords):
    """The key scores from Temperley's profiles alone (the profile set before Aarden's was added)."""
    monkeypatch.setattr(key, "PROFILE_PAIRS", key.PROFILE_PAIRS[:1])
    key._centred_profiles.cache_clear()
    yield
    key._centred_profiles.cache_clear()


NATURAL_MINOR = [AM, G, AM, EM, AM]  # i VII i v i: A minor without a leading tone (Aeolian)
# A minor with its major dominant (E: G#) among chords of C major: by pitch classes alone its relative
# major, C major, by the chords (V and i of A minor; E major is no chord of C major) A minor
HARMONIC_MINOR = [AM, DM, E, AM, C, G, C, E]


@pytest.mark.parametrize("progression, scores, expected", [
    (NATURAL_MINOR, None, "A minor"),
    # Temperley's minor profile expects the raised leading tone (G#); without it C major wins
    (NATURAL_MINOR, "temperley_only", "C major"),
    (HARMONIC_MINOR, None, "A minor"),
    # the profiles alone hear the relative major: the chord view is what reads A minor
    (HARMONIC_MINOR, "no_chords", "C major"),
], ids=["natural-minor", "natural-minor-temperley-only", "harmonic-minor", "harmonic-minor-no-chords"])
def test_minor_against_its_relative_major(progression, scores, expected, request):
    if scores:
        request.getfixturevalue(scores)
    assert analyze(chord_progression(progression), 22050).key_name == expected


def test_chord_histogram_names_the_sounding_triads():
    y = analysis_signal(chord_progression([C, C, E, E]), 22050)
    hist = key.clip_key_inputs(y)[1]
    assert set(np.argsort(hist)[-2:]) == {0, 4}          # C major and E major triads
    assert hist[0] + hist[4] > 0.8 and hist[12 + 9] < 0.1  # not A minor (C, E shared)


def test_chord_table_fit_counts_degrees_in_the_true_key():
    """Histograms of I and V (major) or i and V (minor) in random keys: the fitted table puts its weight
    there, whatever the keys' tonics."""
    fit_key = _fit_key_module()
    rng = np.random.default_rng(0)
    hists, truth = [], []
    for _ in range(40):
        tonic, minor = int(rng.integers(12)), bool(rng.integers(2))
        h = np.zeros(24)
        h[12 + tonic if minor else tonic] = 0.6
        h[(tonic + 7) % 12] = 0.4
        hists.append(h)
        truth.append(tonic + 12 * minor)
    table = fit_key.fit_chord_table(np.array(hists), np.array(truth))
    major, minor = dict(zip(key.CHORD_DEGREES, table[0])), dict(zip(key.CHORD_DEGREES, table[1]))
    assert major["I"] > 0.5 and major["V"] > 0.3 and minor["i"] > 0.5 and minor["V"] > 0.3
    assert major["i"] < 0.01 and minor["I"] < 0.01 and np.allclose(table.sum(axis=1), 1.0)


def _write_model(tmp_path, monkeypatch, gain, **changes):
    """The shipped key model with its gain (and ``changes``) replaced, in place of the asset."""
    model = json.loads(key.KEY_MODEL.read_text()) | {"softmax_gain": gain} | changes
    path = tmp_path / f"key_model_{gain}.json"
    path.write_text(json.dumps(model))
    monkeypatch.setattr(key, "KEY_MODEL", path)
    key.softmax_gain.cache_clear()
    key.chord_model.cache_clear()


def test_confidence_is_the_posterior_at_the_fitted_gain(tmp_path, monkeypatch):
    y = chord_progression([C, AM] * 3)  # relative keys close: the gain decides how sure
    r = key.clip_key_scores(analysis_signal(y, 22050))[0]
    found = {}
    try:
        for gain in (1.0, 30.0):
            _write_model(tmp_path, monkeypatch, gain)
            found[gain] = analyze(y, 22050).key_confidence
            assert found[gain] == pytest.approx(key.key_posterior(r, gain).max())
    finally:
        key.softmax_gain.cache_clear()
        key.chord_model.cache_clear()
    assert found[1.0] < key.KEY_UNSURE < found[30.0]


def test_a_bad_key_model_is_named(tmp_path, monkeypatch):
    try:
        _write_model(tmp_path, monkeypatch, -1)
        with pytest.raises(ValueError, match="key_model.*softmax_gain"):
            key.softmax_gain()
        _write_model(tmp_path, monkeypatch, 5.0, chord_degrees={"major": {"I": 1.0}})
        with pytest.raises(ValueError, match="key_model.*chord_degrees.*fit_key"):
            key.chord_model()
    finally:
        key.softmax_gain.cache_clear()
        key.chord_model.cache_clear()


def test_shipped_gain_is_a_fitted_number():
    model = json.loads(key.KEY_MODEL.read_text())
    assert 1.0 < key.softmax_gain() < 100.0 and model["train_folds"]["items"] > 0
    weight, log_p = key.chord_model()
    assert weight > 0 and log_p.shape == (2, 24)


@pytest.mark.parametrize("planted", [6.0, 15.0])
def test_gain_fit_recovers_a_planted_gain(planted):
    """Keys drawn from softmax(planted * r): the maximum-likelihood fit finds the planted gain."""
    fit_key = _fit_key_module()
    rng = np.random.default_rng(0)
    r = rng.uniform(-0.5, 0.9, size=(3000, 24))
    p = np.stack([key.key_posterior(row, planted) for row in r])
    truth = np.array([rng.choice(24, p=row) for row in p])
    gain = fit_key.fit_gain(r, truth)
    assert gain == pytest.approx(planted, rel=0.12)
    assert fit_key.nll(gain, r, truth) < fit_key.nll(2 * planted, r, truth)


def test_modulating_clip_reports_its_sections():
    """16 s in C major, then 16 s in E major: two sections, the change near 16 s."""
    y = chord_progression([C, F, G, C] * 4 + [E, A, B, E] * 4)
    a = analyze(y, 22050)
    names = [s[2] for s in a.key_sections]
    assert names == ["C major", "E major"]
    assert a.key_sections[0][0] == 0.0 and a.key_sections[1][1] == pytest.approx(32.0, abs=0.6)
    assert a.key_sections[0][1] == pytest.approx(16.0, abs=4.0)


def test_one_key_clip_has_no_sections():
    a = analyze(chord_progression([C, F, G, C] * 8), 22050)
    assert a.key_name == "C major" and a.key_sections == []


def _washed(progression, wash_level: float, seed: int, sr: int = 22050) -> np.ndarray:
    """``progression`` under a sustained chromatic wash (every semitone C3..B5 at random phase) at
    ``wash_level`` times its peak: a room's reverberant tail of a mix with drums, whose partials land on
    every pitch class, dilutes the key profile in the same way."""
    tone = chord_progression(progression, sr=sr)[0].astype(np.float64)
    t = np.arange(tone.size) / sr
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, 36)
    wash = sum(np.sin(2 * np.pi * 440.0 * 2 ** ((m - 69) / 12) * t + p) for m, p in zip(range(48, 84), phases))
    y = tone / np.abs(tone).max() + wash_level * wash / np.abs(wash).max()
    return (0.5 * y / np.abs(y).max()).astype(np.float32)[None]


def test_a_diluted_profile_still_has_its_key():
    """I IV V I under 4.5 times its level of chromatic wash: the best profile correlation falls under 0.5
    (reverberant held-out mixes with drums read 0.44-0.49), and the key is still answered and right.
    With the correlation gate at 0.5 (before) the clip had no key."""
    mono = analysis_signal(_washed([C, F, G, C] * 3, 4.5, seed=1), 22050)
    chroma = key.clip_key_inputs(mono)[0]
    assert key._profile_scores(chroma).max() < 0.5
    assert key.key_analysis(mono)[:2] == ("C", "major")


@pytest.mark.parametrize("wave", ["sine", "sawtooth"])
def test_one_note_has_no_key(wave):
    """One sustained note (a test tone, a drone) is no key, however well its one pitch class correlates
    with a profile (a sine: 0.63, above the correlation gate)."""
    sr = 22050
    t = np.arange(4 * sr) / sr
    y = np.sin(2 * np.pi * 440 * t) if wave == "sine" else 2 * ((110 * t) % 1.0) - 1
    assert analyze((0.3 * y).astype(np.float32)[None], sr).key_name is None


def test_key_bound_reads_a_score_s_exact_notes_through_the_back_end():
    """benchmarks/key_bound.py: a score's notes (no audio) go through the same back-end as the note fit's
    activations. I IV V I in G reads G major every way; the same notes three semitones up read Bb major,
    so the notes, not a default, decide; with no audio the audio's reading is no key."""
    from types import SimpleNamespace

    bound = load_benchmark("key_bound")
    roots = [55, 48, 50, 55] * 3                      # G3 C3 D3 G3: a major triad on each, 2 s apiece
    parts = [[[2.0 * bar, 2.0 * bar + 1.9, root + step] for bar, root in enumerate(roots)] for step in (0, 4, 7)]

    def item(shift):
        return SimpleNamespace(parts=[[[a, b, m + shift] for a, b, m in p] for p in parts], duration_s=24.5)

    assert bound.readings(item(0), None, None) == [None, "G major", "G major", "G major"]
    assert bound.readings(item(3), None, None)[1:] == ["Bb major"] * 3
