"""The benchmark's playing conditions (benchmarks/mir_set.py): a reverberant room (``in_room``), a
swaying tempo (``with_rubato``), with labels that stay true, and pink noise (``with_noise``)."""

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


def test_noise_is_pink_at_the_given_level():
    sr = 8000
    t = np.arange(4 * sr) / sr
    y = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    noisy = mir_set.with_noise(y, 20.0, seed=1)
    noise = (noisy - y).astype(np.float64)
    assert abs(10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise ** 2)) - 20.0) < 0.1
    assert not np.allclose(noise[0], noise[1])  # each channel its own noise
    # pink: the octave 1-2 kHz holds about as much power as 125-250 Hz (white noise: 8 times as much)
    power = np.abs(np.fft.rfft(noise[0])) ** 2
    freqs = np.fft.rfftfreq(noise.shape[1], 1 / sr)
    band = [power[(freqs >= lo) & (freqs < 2 * lo)].sum() for lo in (125.0, 1000.0)]
    assert 0.7 < band[1] / band[0] < 1.4
    assert np.array_equal(mir_set.with_noise(y, 20.0, seed=1), noisy)
