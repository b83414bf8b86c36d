"""MIDI -> chroma (m2ugen.midi): known notes written with mido in the test, checked frame by frame.

The expected pitch class of a frame is found independently of the implementation: the frame's
window ``[(t - 1/2) / fr, (t + 1/2) / fr)`` is sampled at 2000 points and the note that sounds at most
of them (velocity-weighted) wins.
"""

from __future__ import annotations

import mido
import numpy as np
import pytest

from m2ugen import midi as M

FR = M.MELODY_FRAME_RATE
TPB = 480
NAMES = M.PITCH_CLASSES


def write_file(path, notes_beats, *, tempos=((0, 120.0),), type_=1, channel=0):
    """notes_beats: [(start_beat, end_beat, pitch, velocity)]; tempos: [(beat, bpm)] in the conductor track."""
    mid = mido.MidiFile(type=type_, ticks_per_beat=TPB)
    events = [(round(b * TPB), 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))) for b, bpm in tempos]
    notes = []
    for s, e, p, v in notes_beats:
        notes.append((round(s * TPB), 2, mido.Message("note_on", channel=channel, note=p, velocity=v)))
        notes.append((round(e * TPB), 1, mido.Message("note_off", channel=channel, note=p, velocity=0)))
    tracks = [events + notes] if type_ == 0 else [events, notes]
    for evs in tracks:
        track, now = mido.MidiTrack(), 0
        for tick, _, msg in sorted(evs, key=lambda x: (x[0], x[1])):
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    mid.save(str(path))
    return path


def expected_labels(notes_s, n_frames, fr=FR):
    """notes_s: [(start_s, end_s, pitch, velocity)] -> strongest pitch class name per frame (sampled);
    a tie (within one sample) goes to the lowest sounding pitch, as documented."""
    out = []
    for t in range(n_frames):
        xs = (t - 0.5 + (np.arange(2000) + 0.5) / 2000) / fr
        w, low = np.zeros(12), np.full(12, 999)
        for s, e, p, v in notes_s:
            hits = np.count_nonzero((xs >= s) & (xs < e))
            w[p % 12] += v * hits
            if hits:
                low[p % 12] = min(low[p % 12], p)
        tied = np.flatnonzero(w >= w.max() - 127)
        out.append(NAMES[int(tied[np.argmin(low[tied])])] if w.max() > 0 else None)
    return out


SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def test_c_major_scale_frame_by_frame(tmp_path):
    f = write_file(tmp_path / "scale.mid", [(i, i + 1, p, 100) for i, p in enumerate(SCALE)])
    chroma = M.midi_to_chroma(f, FR)
    assert chroma.dtype == np.float32 and chroma.shape == (M.frame_count(4.0, FR), 12) == (32, 12)
    notes_s = [(i * 0.5, i * 0.5 + 0.5, p, 100) for i, p in enumerate(SCALE)]
    assert M.chroma_labels(chroma) == expected_labels(notes_s, 32)
    assert set(M.chroma_labels(chroma)) == {"C", "D", "E", "F", "G", "A", "B"}
    assert np.allclose(chroma.sum(axis=1), 1.0)  # one-hot per frame, like the extractor's argmax

    # the frame rate matters: another rate, another grid
    c10 = M.midi_to_chroma(f, 10.0)
    assert c10.shape == (41, 12) and M.chroma_labels(c10) == expected_labels(notes_s, 41, fr=10.0)


def test_silence_is_zero_by_default_and_c_in_reference_mode(tmp_path):
    # one note from 1 s to 1.5 s, asked for 3 s: frames before and after are silent
    f = write_file(tmp_path / "one.mid", [(2, 3, 67, 90)])
    chroma = M.midi_to_chroma(f, FR, duration_s=3.0)
    labels = M.chroma_labels(chroma)
    assert chroma.shape[0] == M.frame_count(3.0, FR) == 24
    assert labels == expected_labels([(1.0, 1.5, 67, 90)], 24)
    silent = [i for i, lab in enumerate(labels) if lab is None]
    assert silent and np.all(chroma[silent] == 0)
    ref = M.midi_to_chroma(f, FR, duration_s=3.0, reference=True)
    assert np.all(ref[silent, 0] == 1) and np.allclose(ref.sum(axis=1), 1.0)  # the extractor's C
    assert np.array_equal(ref[[i for i in range(24) if i not in silent]], chroma[[i for i in range(24) if i not in silent]])


II_V_I = [  # beats, voiced with the root in the bass
    (0, 2, [50, 53, 57, 60]),   # Dm7: D F A C
    (2, 4, [43, 47, 50, 53]),   # G7:  G B D F
    (4, 8, [48, 52, 55, 59]),   # Cmaj7: C E G B
]


def _ii_v_i(tmp_path, accent=None):
    notes = [(s, e, p, 110 if p == accent else 80) for s, e, ps in II_V_I for p in ps]
    return write_file(tmp_path / "two-five-one.mid", notes)


def test_ii_v_i_pitch_classes_and_bass(tmp_path):
    f = _ii_v_i(tmp_path)
    weights = M.midi_to_chroma(f, FR, polyphony="weights")
    onehot = M.midi_to_chroma(f, FR)
    assert weights.shape == onehot.shape == (M.frame_count(4.0, FR), 12)
    for t in range(weights.shape[0]):
        window = ((t - 0.5) / FR, (t + 0.5) / FR)
        inside = [(ps, s * 0.5) for s, e, ps in II_V_I if s * 0.5 <= window[0] and window[1] <= e * 0.5]
        if not inside:
            continue  # a frame across a chord change: covered by the sampled check below
        ps, _ = inside[0]
        assert set(np.flatnonzero(weights[t] == 1.0)) == {p % 12 for p in ps}, t
        assert np.count_nonzero(weights[t]) == 4
        assert M.chroma_labels(onehot[t:t + 1]) == [NAMES[min(ps) % 12]], t  # equal weights: the bass
    # frames across a change: the pitch class sounding most of the window wins (a common tone of both
    # chords, e.g. D at the Dm7 -> G7 change, counts twice)
    labels = M.chroma_labels(onehot)
    notes_s = [(s * 0.5, e * 0.5, p, 80) for s, e, ps in II_V_I for p in ps]
    assert labels == expected_labels(notes_s, len(labels))
    assert labels[4] == "D" and labels[12] == "G" and labels[24] == "C" and labels[8] == "D"


def test_velocity_decides_in_a_chord(tmp_path):
    f = _ii_v_i(tmp_path, accent=53)  # F louder: in Dm7 and G7 it is the strongest pitch class
    labels = M.chroma_labels(M.midi_to_chroma(f, FR))
    assert labels[2] == "F" and labels[12] == "F" and labels[20] == "C"


def test_tempo_change_mid_file(tmp_path):
    # 8 one-beat notes; at beat 3.5 (in the middle of the 4th note) the tempo drops from 120 to 60 bpm
    beats = [(i, i + 1, p, 100) for i, p in enumerate(SCALE)]
    f = write_file(tmp_path / "tempo.mid", beats, tempos=[(0, 120.0), (3.5, 60.0)])

    def beat_s(b):
        return b * 0.5 if b <= 3.5 else 1.75 + (b - 3.5) * 1.0

    notes = M.read_notes(f)
    assert [(n.start, n.end, n.pitch) for n in notes] == [(beat_s(s), beat_s(e), p) for s, e, p, _ in beats]
    assert notes[3].end == 2.25 and notes[7].end == 6.25  # exact, not accumulated floats
    # mido's own playback clock agrees
    clock, starts = 0.0, []
    for msg in mido.MidiFile(str(f)):
        clock += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            starts.append(clock)
    assert np.allclose(starts, [n.start for n in notes], atol=1e-9)

    chroma = M.midi_to_chroma(f, FR)
    n_frames = M.frame_count(6.25, FR)
    assert chroma.shape == (n_frames, 12)
    want = expected_labels([(beat_s(s), beat_s(e), p, v) for s, e, p, v in beats], n_frames)
    assert M.chroma_labels(chroma) == want
    # ignoring the tempo map (everything at 120 bpm) would put these frames on other notes
    wrong = expected_labels([(s * 0.5, e * 0.5, p, v) for s, e, p, v in beats], n_frames)
    assert sum(a != b for a, b in zip(want, wrong)) > 10


def test_type0_bytes_and_note_list_agree(tmp_path):
    beats = [(i, i + 1, p, 100) for i, p in enumerate(SCALE)]
    f = write_file(tmp_path / "t0.mid", beats, type_=0, tempos=[(0, 90.0)])
    from_path = M.midi_to_chroma(f, FR)
    from_bytes = M.midi_to_chroma(f.read_bytes(), FR)
    notes = M.read_notes(f)
    assert notes[1].start == pytest.approx(60 / 90)
    from_list = M.notes_to_chroma(M.parse_notes([n.as_list() for n in notes]), FR)
    from_dicts = M.notes_to_chroma(M.parse_notes([{"start": n.start, "end": n.end, "pitch": n.pitch,
                                                   "velocity": n.velocity} for n in notes]), FR)
    assert np.array_equal(from_path, from_bytes) and np.array_equal(from_path, from_list)
    assert np.array_equal(from_path, from_dicts)


def test_drums_left_out_and_overlapping_same_pitch(tmp_path):
    f = write_file(tmp_path / "drums.mid", [(0, 4, 38, 100)], channel=9)
    assert M.read_notes(f) == [] and len(M.read_notes(f, include_drums=True)) == 1
    mid = mido.MidiFile(type=0, ticks_per_beat=TPB)
    mid.tracks.append(mido.MidiTrack([
        mido.Message("note_on", note=60, velocity=100, time=0),
        mido.Message("note_on", note=60, velocity=50, time=480),  # same pitch again before the off
        mido.Message("note_off", note=60, time=480),               # ends the first (FIFO)
        mido.Message("note_on", note=60, velocity=0, time=480)]))  # velocity 0 = off: ends the second
    got = [(n.start, n.end, n.velocity) for n in M.read_notes(mid)]
    assert got == [(0.0, 1.0, 100), (0.5, 1.5, 50)]


def test_frame_grid_matches_the_melody_extractor():
    # 30 s at 32 kHz, hop 4096, centred STFT: 1 + 960000 // 4096 = 235 frames = MusicGen-Melody's chroma_length
    assert M.frame_count(30.0, FR) == 1 + (30 * 32000) // 4096 == 235
    assert M.frame_count(0.0, FR) == 1


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="not a Standard MIDI File"):
        M.midi_to_chroma(b"RIFF....", FR)
    with pytest.raises(ValueError, match="no such file"):
        M.read_notes(tmp_path / "missing.mid")
    with pytest.raises(ValueError, match=r"notes\[1\].*start < end"):
        M.parse_notes([[0, 1, 60], [2, 1, 60]])
    with pytest.raises(ValueError, match=r"notes\[0\].*pitch 0..127"):
        M.parse_notes([[0, 1, 200]])
    with pytest.raises(ValueError, match=r"notes\[0\].*unknown key"):
        M.parse_notes([{"start": 0, "end": 1, "pitch": 60, "pich": 1}])
    with pytest.raises(ValueError, match="polyphony"):
        M.notes_to_chroma([], FR, 1.0, polyphony="max")
    with pytest.raises(ValueError, match="frame_rate"):
        M.notes_to_chroma([], 0, 1.0)


def test_long_notes_add_up_as_frame_by_frame(monkeypatch):
    """Notes spanning many frames are added as arrays: the very same floats as the frame-by-frame loop."""
    import random

    from m2ugen import midi

    rng = random.Random(0)
    notes = []
    for _ in range(400):
        start = rng.uniform(0, 60)
        notes.append(midi.Note(start, start + rng.uniform(0.01, 20), rng.randint(20, 100), rng.randint(1, 127), 0))
    n = midi.frame_count(81.0, midi.MELODY_FRAME_RATE)
    fast = midi.pitch_class_weights(notes, midi.MELODY_FRAME_RATE, n)
    monkeypatch.setattr(midi, "_SCALAR_FRAMES", 10**9)  # every note frame by frame
    slow = midi.pitch_class_weights(notes, midi.MELODY_FRAME_RATE, n)
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
