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
