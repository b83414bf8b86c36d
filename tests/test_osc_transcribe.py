"""Issue 14 through the OSC bridge: `/m2u/submit transcribe` (no prompt) returns the transcribed notes
as `/m2u/notes` chunks and the .mid (written into the client's results folder) in `/m2u/done`;
`midi_notes` (a MIDI clip's notes, JSON text) becomes the submit's `inputs.midi.notes`."""

from __future__ import annotations

import json
import os

import pytest
import soundfile as sf

from bridge_osc import osc
from bridge_osc import requests as osc_requests
from m2ugen import midi as M
from test_osc_bridge import bridge, make_fast, peer  # noqa: F401 (fixtures)
from test_transcribe import MELODY, synth


def submit(*args):
    return osc.Message("/m2u/submit", "".join(t for t, _ in args), [v for _, v in args])


def test_submit_parses_transcribe_and_midi_notes():
    r = osc_requests.parse(submit(("s", "transcribe"), ("s", "audio"), ("s", "/tmp/a.wav"), ("s", "bpm"), ("f", 90.0),
                                  ("s", "chords"), ("i", 0)))
    assert r.kind == "transcribe" and r.prompt == "" and r.params == {"chords": False} and r.context == {"bpm": 90.0}
    r = osc_requests.parse(submit(("s", "transcribe"), ("s", "audio"), ("s", "/tmp/a.wav"), ("s", "dereverb"), ("i", 0)))
    assert r.params == {"dereverb": False}  # a dry DI piano: the room's late reverberation is not subtracted
    with pytest.raises(osc_requests.ArgError, match="needs the option audio"):
        osc_requests.parse(submit(("s", "transcribe"), ("s", "bpm"), ("f", 90.0)))
    r = osc_requests.parse(submit(("s", "generate"), ("s", "prompt"), ("s", "x"),
                                  ("s", "midi_notes"), ("s", "[[0, 0.5, 60, 100], [0.5, 1, 64]]")))
    assert r.midi_notes == [[0.0, 0.5, 60, 100], [0.5, 1.0, 64, 100]]
    for bad, why in (("[[0, 0.5, 130]]", "pitch"), ("[[0, NaN, 60]]", "finite"), ("[[1, 0.5, 60]]", "greater"),
                     ("not json", "not JSON"), ("[]", "no notes")):
        with pytest.raises(osc_requests.ArgError, match=why):
            osc_requests.parse(submit(("s", "generate"), ("s", "prompt"), ("s", "x"), ("s", "midi_notes"), ("s", bad)))
    with pytest.raises(osc_requests.ArgError, match="takes no midi"):
        osc_requests.parse(submit(("s", "transcribe"), ("s", "audio"), ("s", "/tmp/a.wav"),
                                  ("s", "midi_notes"), ("s", "[[0, 1, 60]]")))


@pytest.mark.timeout(300)
def test_transcribe_through_the_bridge(server, peer, tmp_path):  # noqa: F811
    wav = tmp_path / "line.wav"
    sf.write(wav, synth(MELODY, 3.6, sr=22050, harmonics=(1.0, 0.5, 0.3)), 22050)
    folder = tmp_path / "Set" / "Samples" / "M2UGen"
    folder.parent.parent.mkdir()  # a saved Set's folder
    peer.send("/m2u/submit", ("s", "transcribe"), ("s", "audio"), ("s", str(wav)), ("s", "bpm"), ("f", 90.0),
              ("s", "chords"), ("i", 0), ("s", "results_dir"), ("s", str(folder)))
    got = peer.expect("/m2u/done", timeout=120)
    chunks = [m.args for m in got if m.address == "/m2u/notes"]
    assert chunks and all(c[2] == len(chunks) for c in chunks)
    notes = json.loads("".join(c[3] for c in sorted(chunks, key=lambda c: c[1])))
    assert [n[2] for n in notes] == [p for _, _, p, _ in MELODY] and all(n[4] == 0 for n in notes)
    job, path, seconds, rate = got[-1].args
    assert os.path.dirname(path) == str(folder) and path.endswith(".mid") and rate == 0
    assert seconds == pytest.approx(3.6, abs=0.01)
    assert [n.pitch for n in M.read_notes(path)] == [p for _, _, p, _ in MELODY]


@pytest.mark.timeout(120)
def test_midi_notes_reach_the_server_as_the_melody(server, peer):  # noqa: F811
    """The tiny preset has no melody decoder: the server refuses mode melody, which the notes set."""
    peer.send("/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "x"),
              ("s", "midi_notes"), ("s", "[[0, 0.5, 60, 100]]"))
    err = peer.expect("/m2u/error", timeout=60)[-1]
    assert err.args[1] == "bad_request" and "melody" in err.args[2], err.args
