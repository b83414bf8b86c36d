"""The benchmark's key labels (benchmarks/mir_set.py): the home key from the signature, the final bass
note and the third above it, decided by music theory (no music21 needed for these parts)."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


mir_set = load_benchmark("mir_set", "mir_set_labels")


@pytest.mark.parametrize("sharps, final, expected", [
    (-1, 5, (5, "major", "final")),    # one flat ending on F: F major
    (-1, 2, (2, "minor", "final")),    # one flat ending on D: D minor
    (-1, 7, (7, "minor", "modal")),    # one flat ending on G: Bach's Dorian G minor
    (3, 6, (6, "minor", "final")),     # three sharps ending on F#: F# minor
    (3, 9, (9, "major", "final")),     # three sharps ending on A: A major
    (0, 4, None),                      # no signature ending on E (Phrygian / half close): no decision
    (0, 7, None),                      # no signature ending on G: Mixolydian G or a half close in C
])
def test_final_bass_note_decides_major_or_relative_minor(sharps, final, expected):
    assert mir_set._key_from_final(sharps, (sharps, final, None)) == expected
    # the octave of the final does not matter, the pitch class does
    assert mir_set._key_from_final(sharps, (sharps, final + 24, None)) == expected


def test_the_third_above_the_final_names_the_mode():
    # four flats ending on Ab whose notes sound Cb (a minor third) more than C: Ab minor, written with
    # the major's signature (folk-song collections spell accidentals in the notes)
    assert mir_set._key_from_final(-4, (-4, 8, "minor")) == (8, "minor", "final")
    assert mir_set._key_from_final(-4, (-4, 8, "major")) == (8, "major", "final")
    tune = [[(0.0, 1.0, [68]), (1.0, 3.0, [71]), (3.0, 4.0, [72]), (4.0, 8.0, [68])]]   # Ab, Cb (long), C
    assert mir_set.third_mode(8, tune) == "minor"
    assert mir_set.third_mode(8, [[(0.0, 1.0, [71]), (1.0, 4.0, [72])]]) == "major"
    assert mir_set.third_mode(8, [[(0.0, 1.0, [68])]]) is None


def test_no_decision_when_the_piece_closes_under_another_signature():
    # a minuet in C whose written end is a trio in A major: the ending says nothing of the opening key
    assert mir_set._key_from_final(0, (3, 9, "major")) is None
    assert mir_set._key_from_final(0, (0, 9, None)) == (9, "minor", "final")
    assert mir_set._key_from_final(0, None) is None


def test_final_bass_is_the_lowest_note_of_the_closing_sonority():
    soprano = [(0.0, 4.0, [72]), (4.0, 8.0, [69])]             # ends on A
    bass = [(0.0, 4.0, [48]), (4.0, 6.0, [41]), (6.0, 8.0, [45, 38])]  # final chord D2 + A2
    assert mir_set.final_bass([soprano, bass]) == 38
    # an upper line alone at the written end (the bass silent for more than a bar) is no final cadence
    early_bass = [(0.0, 2.0, [36])]
    assert mir_set.final_bass([soprano, early_bass]) is None
    assert mir_set.final_bass([soprano]) == 69
    # an inner part that rests at the end does not matter; a bass ending within the last bar still counts
    early_alto = [(0.0, 2.0, [60])]
    short_bass = [(0.0, 4.0, [48]), (4.0, 5.0, [41])]
    assert mir_set.final_bass([soprano, early_alto, short_bass]) == 41
    assert mir_set.final_bass([[], []]) is None
