"""Issue 14, item 1 through the server: a MIDI sketch is the melody of a generation (mode melody)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import run_job
from server.client import Client


def write_mid(path: Path, pitches: list[int], beat_s: float = 0.25) -> Path:
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=int(beat_s * 1e6)))
    for p in pitches:
        track.append(mido.Message("note_on", note=p, velocity=100, time=0))
        track.append(mido.Message("note_off", note=p, velocity=0, time=480))
    mid.save(path)
    return path


@pytest.fixture(scope="module")
def melody_model():
    from m2ugen import M2UGen, M2UGenConfig

    return M2UGen.from_config(M2UGenConfig.preset("tiny-melody"))


def generate(c: Client, midi: Path, **params):
    return run_job(c, "generate", {"prompt": "strings", "seed": 2, "max_new_tokens": 4, **params},
                   {"midi": c.upload(midi)})


def test_a_midi_sketch_is_the_melody_and_changes_the_music(make_server, melody_model, tmp_path):
    srv = make_server(melody_model, preset="tiny-melody")
    scale = write_mid(tmp_path / "scale.mid", [60, 62, 64, 65, 67, 69, 71, 72])
    fifths = write_mid(tmp_path / "fifths.mid", [66, 61, 68, 63, 70, 65, 72, 67])
    with Client(srv.endpoint, timeout_s=30) as c:
        a = generate(c, scale)
        b = generate(c, fifths)
    assert a["params"]["mode"] == "melody" and a["inputs"]["midi"]["notes"] == 8
    assert a["duration"] == pytest.approx(2.0, abs=0.01)  # as long as its notes (8 x 0.25 s)
    assert not np.array_equal(sf.read(a["audio_path"])[0], sf.read(b["audio_path"])[0])
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not really")
    with Client(srv.endpoint) as c:
        r = c.call("submit", kind="generate", params={"prompt": "x"}, inputs={"midi": c.upload(bad)})
    assert r.op == "error" and r.header["code"] == "bad_midi"


def test_midi_needs_a_melody_decoder(server, tmp_path):
    good = write_mid(tmp_path / "ok.mid", [60, 64, 67])
    with Client(server) as c:  # refused before the file is even read
        r = c.call("submit", kind="generate", params={"prompt": "x"}, inputs={"midi": c.upload(good)})
    assert r.op == "error" and r.header["field"] == "params.mode" and "MusicGen" in r.header["message"]


def test_midi_from_the_cli_and_osc(tmp_path):
    from bridge_osc import requests as osc_requests
    from server.cli import build_parser
    from server.cli.jobs import build_submit

    sketch = write_mid(tmp_path / "s.mid", [60])
    args = build_parser().parse_args(["generate", "--prompt", "x", "--midi", str(sketch)])
    fields, files, _, _ = build_submit(args, "generate", {})
    assert files == {"midi": sketch} and fields["inputs"]["midi"]["name"] == "s.mid"  # read and uploaded here
    assert osc_requests.OPTIONS["midi"] == ("request", "s")


def _long_chords(path: Path, n: int, seconds: float) -> Path:
    """``n`` notes held together for ``seconds`` (a tiny file whose chroma would be costly)."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000))  # 120 bpm: 960 ticks a second
    for i in range(n):
        track.append(mido.Message("note_on", note=24 + i % 96, velocity=100, time=0))
    ticks = int(seconds * 960)
    for i in range(n):
        track.append(mido.Message("note_off", note=24 + i % 96, velocity=0, time=ticks if i == 0 else 0))
    mid.save(path)
    return path


def test_midi_past_the_budgets_is_refused_at_submit(make_server, melody_model, tmp_path):
    from m2ugen import midi

    srv = make_server(melody_model, preset="tiny-melody")
    costly = _long_chords(tmp_path / "costly.mid", 96 * 11, 330.0)  # ~2.7 M note-frames of chroma
    with Client(srv.endpoint) as c:
        r = c.call("submit", kind="generate", params={"prompt": "x"}, inputs={"midi": c.upload(costly)})
    assert r.op == "error" and r.header["code"] == "bad_midi" and "note-frames" in r.header["message"], r.header
    with pytest.raises(ValueError, match="more than 10 notes"):  # the notes budget stops the parse itself
        midi.read_notes(write_mid(tmp_path / "many.mid", list(range(40, 60))), max_notes=10)


def test_a_midi_file_is_parsed_once(make_server, melody_model, tmp_path, monkeypatch):
    from m2ugen import midi

    loads = []
    original = midi.load_midi
    monkeypatch.setattr(midi, "load_midi", lambda m: loads.append(1) or original(m))
    srv = make_server(melody_model, preset="tiny-melody")
    with Client(srv.endpoint, timeout_s=30) as c:
        done = generate(c, write_mid(tmp_path / "scale.mid", [60, 62, 64, 65]))
    assert done["inputs"]["midi"]["notes"] == 4 and len(loads) == 1  # at submit; the worker keeps the notes


def test_a_cancel_stops_the_midi_chroma_at_its_next_chunk(make_server, melody_model, monkeypatch):
    import threading

    from m2ugen import midi

    started, go, checks = threading.Event(), threading.Event(), []
    original = midi.pitch_class_weights

    def gated(notes, frame_rate, n_frames, check=None):
        def counting(done):
            checks.append(done)
            if len(checks) == 1:
                started.set()
                assert go.wait(120)
            check(done)
        return original(notes, frame_rate, n_frames, counting)

    monkeypatch.setattr(midi, "pitch_class_weights", gated)
    srv = make_server(melody_model, preset="tiny-melody")
    notes = [[i * 0.01, i * 0.01 + 0.5, 48 + i % 24, 100] for i in range(4 * midi.CHROMA_CHUNK)]
    try:
        with Client(srv.endpoint, timeout_s=30) as c:
            r = c.call("submit", kind="generate", params={"prompt": "x", "max_new_tokens": 4},
                       inputs={"midi": {"notes": notes}})
            assert r.op == "accepted", r.header
            assert started.wait(120)  # the chroma runs
            assert c.call("cancel", job=r.job).header["state"] == "running"
            go.set()
            while (m := c.recv(timeout_s=60)) is not None and m.op not in ("done", "error", "cancelled"):
                pass
            assert m is not None and m.op == "cancelled", m
    finally:
        go.set()
    assert checks == [0]  # it stopped at the first cancel point after the cancel: no other chunk ran
