"""The benchmark's playing conditions (benchmarks/mir_set.py): a reverberant room (``in_room``) and a
swaying tempo (``with_rubato``), with labels that stay true."""

from __future__ import annotations

import numpy as np
from conftest import load_benchmark

mir_set = load_benchmark("mir_set", "mir_set_conditions")


def _item(bpm=120.0, bars=8):
    beat = 60.0 / bpm
    beats = [k * beat for k in range(4 * bars)]
    notes = [[t, t + 0.5 * beat, 60 + k % 12] for k, t in enumerate(beats)]
    return mir_set.Item(name="x", source="s", start_measure=1, composer="c", ensemble="e", programs=[0], bpm=bpm,
                        transpose=0, drums=False, meter=4, key="C major", key_source="signature", beats=beats,
                        downbeats=beats[::4], duration_s=4 * bars * beat, notes=notes, parts=[notes])


def test_rubato_moves_notes_and_labels_together_and_sways_the_tempo():
    item = _item()
    played = mir_set.with_rubato(item, 0.08, period_s=8.0, seed=3)
    # each note that started on a beat still starts on that (moved) beat; downbeats are every 4th beat
    assert [n[0] for n in played.notes] == played.beats
    assert played.downbeats == played.beats[::4]
    ibi = np.diff(played.beats)
    local_bpm = 60.0 / ibi
    # the tempo sways by about +-8 % around the set tempo, and its mean stays the set tempo
    assert local_bpm.max() > 1.06 * item.bpm and local_bpm.min() < 0.94 * item.bpm
    assert abs(len(ibi) * 60.0 / (played.beats[-1] - played.beats[0]) - item.bpm) < 0.02 * item.bpm
    assert mir_set.with_rubato(item, 0.08, seed=3) == mir_set.with_rubato(item, 0.08, seed=3)
    assert mir_set.with_rubato(item, 0.0).beats == item.beats


def test_a_room_keeps_the_peak_and_adds_a_tail_of_the_given_length():
    sr = 8000
    y = np.zeros((2, 3 * sr), np.float32)
    y[:, 100] = 0.5  # one click
    wet = mir_set.in_room(y, sr, rt60_s=1.0, direct_to_reverb_db=-6.0, seed=0)
    assert wet.shape == y.shape and abs(np.abs(wet).max() - 0.5) < 1e-6
    tail = wet[0, 100 + int(0.01 * sr):]
    energy = np.cumsum(tail[::-1] ** 2)[::-1]  # Schroeder backward integration
    decay_db = 10 * np.log10(energy / energy[0])
    # the tail falls 60 dB in about RT60 (fit over -5..-35 dB)
    sel = (decay_db < -5) & (decay_db > -35)
    slope = np.polyfit(np.arange(tail.size)[sel] / sr, decay_db[sel], 1)[0]
    assert 0.8 < -60.0 / slope < 1.25
    # direct-to-reverberant energy ratio as asked
    direct = wet[0, 100] ** 2
    assert abs(10 * np.log10(direct / np.sum(tail ** 2)) - (-6.0)) < 1.0
    assert not np.allclose(wet[0], wet[1])  # each channel its own response
