"""Issue 14 through the server: the ``transcribe`` job kind (audio -> .mid, no model), its output rules,
the CLI as its client, and MIDI notes sent inline as ``inputs.midi.notes`` (validated at submit, the
melody decoder's chroma)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from conftest import run_job
from m2ugen import midi as M
from server import protocol
from server.client import Client
from test_transcribe import MELODY, synth

PITCHES = [p for _, _, p, _ in MELODY]


@pytest.fixture(scope="module")
def melody_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "line.wav"
    sf.write(path, synth(MELODY, 3.6, sr=22050, harmonics=(1.0, 0.5, 0.3)), 22050)
    return path


def transcribe(c: Client, wav, params=None, **fields) -> dict:
    return run_job(c, "transcribe", {"context": {"bpm": 90.0}, "chords": False, **(params or {})},
                   {"audio": c.upload(wav)}, **fields)


@pytest.mark.timeout(300)
def test_a_transcribe_job_writes_the_melody_as_a_mid(server, server_info, melody_wav):
    with Client(server, timeout_s=30) as c:
        r = c.call("submit", kind="transcribe", params={"context": {"bpm": 90.0}, "chords": False},
                   inputs={"audio": c.upload(melody_wav)})
        assert r.op == "accepted", r.header
        stages, done = set(), None
        while done is None:
            m = c.recv(timeout_s=300)
            assert m is not None and m.op != "error", m and m.header
            stages.add(m.header.get("stage"))
            done = m.header if m.op == "done" else None
        result = c.call("result", job=r.job, want="bytes")
    assert "transcribing" in stages
    path = done["midi_path"]
    assert path.endswith(".mid") and path.startswith(str(server_info.jobs_dir)) and done["audio_path"] is None
    assert [n.pitch for n in M.read_notes(path)] == PITCHES  # read back with mido
    import mido

    mid = mido.MidiFile(path)
    assert round(mido.tempo2bpm(next(m.tempo for m in mid.tracks[0] if m.type == "set_tempo"))) == 90
    midi_bytes = open(path, "rb").read()
    assert result.header["midi"] == {"frame": 1, "size": len(midi_bytes)} and result.frames[0] == midi_bytes
    sidecar = result.header["sidecar"]
    assert sidecar["bpm"] == 90.0 and sidecar["bpm_source"] == "context" and sidecar["midi_path"] == path
    assert [n[2] for n in sidecar["notes"]] == PITCHES
    assert done["kind"] == "transcribe" and "prompt" not in done["params"]  # the record: transcribe's params only
    assert done["params"]["chords"] is False and done["params"]["context"] == {"bpm": 90.0}


@pytest.mark.timeout(300)
def test_transcribe_output_rules(server, melody_wav, tmp_path):
    """Where a transcription is written is the client's business (protocol 2): the server refuses an output
    path, and ``Client.save_result`` keeps the rules — a ``.mid`` name, an existing file replaced only with
    overwrite and only when it is a MIDI file."""
    from server.security import OutputExists, PathNotAllowed

    out = tmp_path / "take.mid"
    with Client(server, timeout_s=30) as c:
        ref = c.upload(melody_wav)
        r = c.call("submit", kind="transcribe", params={}, inputs={"audio": ref},
                   output={"path": str(tmp_path / "take.wav")})
        assert r.op == "error" and r.header["field"] == "output.path"  # the client writes its results
        r = c.call("submit", kind="transcribe", params={}, inputs={})
        assert r.op == "error" and r.header["field"] == "inputs.audio"
        r = c.call("submit", kind="transcribe", params={}, inputs={"audio": ref, "midi": {"notes": [[0, 1, 60]]}})
        assert r.op == "error" and r.header["field"] == "inputs.midi"
        first = transcribe(c, melody_wav, output={"want": "bytes"})
        with pytest.raises(PathNotAllowed, match=r"is a MIDI file; name it \.mid"):  # not as a .wav
            c.save_result(first["job"], tmp_path / "take.wav")
        assert not (tmp_path / "take.wav").exists() and not (tmp_path / "take.json").exists()  # nothing written
        out.write_bytes(b"not a MIDI file at all")  # never replaced, even with overwrite
        for overwrite, why in ((False, "--overwrite"), (True, "is not a MIDI file")):
            with pytest.raises(OutputExists, match=why):
                c.save_result(first["job"], out, overwrite=overwrite)
        assert out.read_bytes() == b"not a MIDI file at all" and not (tmp_path / "take.json").exists()
        out.unlink()
        assert c.save_result(first["job"], out)["midi_path"] == str(out) and (tmp_path / "take.json").is_file()
        again = transcribe(c, melody_wav, {"context": {"bpm": 120.0}})
        with pytest.raises(OutputExists):  # an existing .mid: only with overwrite
            c.save_result(again["job"], out)
        assert c.save_result(again["job"], out, overwrite=True)["midi_path"] == str(out)
    assert json.loads((tmp_path / "take.json").read_text())["bpm"] == 120.0  # replaced by the new job
    assert [n.pitch for n in M.read_notes(out)] == PITCHES


@pytest.mark.timeout(300)
def test_a_previous_result_can_be_transcribed(server, tiny_model, tmp_path):
    """inputs.audio may be an earlier job's result, named by its job (the server reads its own file)."""
    with Client(server, timeout_s=30) as c:
        gen = run_job(c, "generate", {"prompt": "x", "duration": 1.0, "max_new_tokens": 4, "seed": 1})
        done = run_job(c, "transcribe", {}, {"audio": {"job": gen["job"]}})
    assert done["midi_path"].endswith(".mid") and done["inputs"]["audio"]["job"] == gen["job"]
    sidecar = json.loads(open(done["sidecar_path"]).read())
    assert sidecar["bpm_source"] in ("measured", "default")  # no project tempo: measured, else 120


@pytest.mark.timeout(300)
def test_the_cli_is_a_client_of_the_server(server, melody_wav, tmp_path, capsys):
    from server import cli

    out = tmp_path / "cli.mid"
    code = cli.main(["transcribe", "--audio", str(melody_wav), "--out", str(out), "--bpm", "90", "--no-chords",
                     "--server", server, "--status-file", str(tmp_path / "s.json")])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0 and lines[-1] == {"op": "exit", "code": 0}
    done = next(x for x in lines if x["op"] == "done")
    assert done["midi_path"] == str(out) and done["params"]["chords"] is False
    assert [n.pitch for n in M.read_notes(out)] == PITCHES
    assert json.loads((tmp_path / "s.json").read_text())["midi_path"] == str(out)
    # as to a remote server: the .mid comes back as bytes into --out
    remote = tmp_path / "remote.mid"
    assert cli.main(["transcribe", "--audio", str(melody_wav), "--out", str(remote), "--no-chords", "--upload",
                     "--server", server]) == 0
    done = next(json.loads(x) for x in capsys.readouterr().out.splitlines() if '"done"' in x)
    assert done["midi_path"] == str(remote) and remote.read_bytes()[:4] == b"MThd"
    assert cli.main(["transcribe", "--audio", str(melody_wav), "--out", str(tmp_path / "x.wav"),
                     "--server", server]) == 2


# ---------------------------------------------------------------------------------------------
# inputs.midi.notes


def notes_submit(notes, kind="generate"):
    return {"op": "submit", "kind": kind, "params": {"prompt": "x"}, "inputs": {"midi": {"notes": notes}}}


@pytest.mark.parametrize("notes,field", [
    ([[0.0, 0.5, 60, 100], [0.5, 1.0, 128, 100]], "inputs.midi.notes[1].pitch"),
    ([[0.0, 0.5, 60, 100], [0.5, float("nan"), 62]], "inputs.midi.notes[1].end"),
    ([[0.0, float("inf"), 60]], "inputs.midi.notes[0].end"),
    ([[0.5, 0.5, 60]], "inputs.midi.notes[0]"),
    ([[-1.0, 0.5, 60]], "inputs.midi.notes[0].start"),
    ([[0.0, 0.5, 60, 0]], "inputs.midi.notes[0].velocity"),
    ([[0.0, 0.5, 60.5]], "inputs.midi.notes[0].pitch"),
    ([[0.0, 0.5]], "inputs.midi.notes[0]"),
    ([], "inputs.midi.notes"),
    ("[[0, 1, 60]]", "inputs.midi.notes"),
    ([[0.0, 0.01, 60]] * (protocol.MAX_NOTES + 1), "inputs.midi.notes"),
])
def test_bad_notes_are_refused_naming_the_field(notes, field):
    with pytest.raises(protocol.ProtocolError) as e:
        protocol.check_submit(notes_submit(notes), 0)
    assert e.value.field == field and e.value.code == "bad_request"


def test_notes_are_normalised_and_take_no_other_field():
    spec = protocol.check_submit(notes_submit([[0, 1, 60], [1, 2.5, 64, 90]]), 0)
    assert spec["inputs"]["midi"] == {"notes": [[0.0, 1.0, 60, 100], [1.0, 2.5, 64, 90]]}
    assert spec["params"]["mode"] == "melody"
    with pytest.raises(protocol.ProtocolError, match="takes no other field"):
        protocol.check_submit(notes_submit([[0, 1, 60]]) | {"inputs": {"midi": {"notes": [[0, 1, 60]], "frame": 1}}}, 1)


def test_a_note_list_is_the_same_chroma_as_its_file(tmp_path):
    from test_midi_server import write_mid

    pitches = [60, 64, 67, 72, 71]
    path = write_mid(tmp_path / "s.mid", pitches, beat_s=0.4)
    notes = [[i * 0.4, (i + 1) * 0.4, p, 100] for i, p in enumerate(pitches)]
    assert np.array_equal(M.midi_to_chroma(notes, duration_s=2.0), M.midi_to_chroma(path, duration_s=2.0))
    assert M.chroma_labels(M.midi_to_chroma(notes))[:6] == ["C", "C", "C", "C", "E", "E"]  # 0.128 s frames


def test_nan_in_the_header_is_refused_by_the_server(server):
    """A client's JSON may hold NaN (Python's json writes it): refused at submit with the field."""
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server)
    try:
        header = ('{"v": 3, "op": "submit", "req": "n", "kind": "generate", "params": {"prompt": "x"}, '
                  '"inputs": {"midi": {"notes": [[0, NaN, 60]]}}}')
        sock.send_multipart([header.encode()])
        assert sock.poll(10000)
        reply = json.loads(sock.recv_multipart()[0])
    finally:
        sock.close(0)
    assert reply["op"] == "error" and reply["field"] == "inputs.midi.notes[0].end", reply


@pytest.fixture(scope="module")
def melody_model():
    from m2ugen import M2UGen, M2UGenConfig

    return M2UGen.from_config(M2UGenConfig.preset("tiny-melody"))


@pytest.mark.timeout(300)
def test_notes_are_the_melody_of_the_generation(make_server, melody_model):
    srv = make_server(melody_model, preset="tiny-melody")
    scale = [[i * 0.25, (i + 1) * 0.25, p, 100] for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]
    fifths = [[i * 0.25, (i + 1) * 0.25, p, 100] for i, p in enumerate([66, 61, 68, 63, 70, 65, 72, 67])]
    with Client(srv.endpoint, timeout_s=30) as c:
        a, b = (run_job(c, "generate", {"prompt": "strings", "seed": 2, "max_new_tokens": 4}, {"midi": {"notes": n}})
                for n in (scale, fifths))
    assert a["params"]["mode"] == "melody" and a["inputs"]["midi"] == {"notes": 8, "seconds": 2.0, "inline": True}
    assert a["duration"] == pytest.approx(2.0, abs=0.01)  # as long as its notes
    assert not np.array_equal(sf.read(a["audio_path"])[0], sf.read(b["audio_path"])[0])


def test_audio_too_short_to_transcribe_is_refused_at_submit(server, tmp_path):
    one = tmp_path / "one.wav"
    sf.write(one, np.zeros((1, 2), np.float32), 22050)  # one sample
    with Client(server) as c:
        r = c.call("submit", kind="transcribe", params={}, inputs={"audio": c.upload(one)})
        assert r.op == "error" and r.header["code"] == "bad_audio" and r.header["field"] == "inputs.audio", r.header
        assert "1 sample" in r.header["message"] and "100 ms" in r.header["message"]
        assert c.call("jobs").header["jobs"] == []  # nothing was accepted


CLIP = {"frame": 1, "name": "a.wav"}  # inputs are sent again as bytes (or an upload); the params as recorded


@pytest.mark.parametrize("kind, params, inputs", [
    ("generate", {"prompt": "x"}, {}),
    ("ask", {"prompt": "x"}, {"audio": CLIP}),
    ("edit", {"prompt": "x", "mode": "continue"}, {"audio": CLIP}),
    ("transcribe", {}, {"audio": CLIP}),
    ("finetune", {"adapter_name": "mine"}, {"audio_set": [CLIP]}),
])
def test_recorded_params_resubmit_as_they_are(kind, params, inputs):
    recorded = protocol.check_submit({"kind": kind, "params": params, "inputs": inputs}, 1)["params"]
    again = protocol.check_submit({"kind": kind, "params": json.loads(json.dumps(recorded)), "inputs": inputs}, 1)
    assert again["params"] == recorded


def test_a_finished_jobs_params_resubmit_as_they_are(server, melody_wav):
    with Client(server) as c:
        first = transcribe(c, melody_wav)
        again = c.call("submit", kind="transcribe", params=first["params"], inputs={"audio": c.upload(melody_wav)})
        assert again.op == "accepted", again.header
        done = run_job(c, "generate", {"prompt": "x", "duration": 0.5, "max_new_tokens": 4})
        sidecar = json.loads(open(done["sidecar_path"]).read())
        for params in (done["params"], sidecar["params"]):
            r = c.call("submit", kind="generate", params=params)
            assert r.op == "accepted", r.header


@pytest.mark.timeout(300)
def test_dereverb_reaches_the_transcriber(server, tmp_path):
    """Repeated bowed notes in a synthetic hall, through the server: with ``dereverb`` (the default) more of
    them are found than with ``dereverb: false`` (the room's tails merge them), the same counts as the
    library gives either way."""
    from test_transcribe import REPEATS, SR, bowed, found_in_hall, found_of, in_hall

    path = tmp_path / "hall.wav"
    sf.write(path, in_hall(bowed(REPEATS, REPEATS[-1][1] + 0.8, tau_attack=0.03, tau_release=0.01)), SR)
    found = {}
    with Client(server, timeout_s=30) as c:
        for flag in (True, False):
            done = transcribe(c, path, {"dereverb": flag})
            found[flag] = found_of(REPEATS, [(n.start, n.pitch) for n in M.read_notes(done["midi_path"])])
            assert done["params"]["dereverb"] is flag
    assert found[True] == found_in_hall(REPEATS, True) and found[False] == found_in_hall(REPEATS, False)
    assert found[True] > found[False], found
