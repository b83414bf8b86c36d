"""End to end: the REAPER Lua actions (lua5.4, fake ``reaper`` table, defer loop driven by the fake) start
the REAL ``m2ugen`` CLI named by the discovery file of a REAL server (tiny preset, ``server_info`` fixture
from conftest.py) and end with the result inserted into the fake project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "lua" / "e2e_driver.lua"
LUA = shutil.which("lua5.4")


def run_action(kind: str, server_info, tmp_path: Path, prompt: str, clean: bool = True, **extra_env: str) -> dict:
    assert LUA, "lua5.4 is not installed (apt-get install lua5.4)"
    discovery = json.loads((server_info.config_dir / "server.json").read_text())
    assert Path(discovery["cli"]).exists(), discovery["cli"]
    project = tmp_path / "My project é"
    project.mkdir()
    work_tmp = tmp_path / "tmp dir"
    work_tmp.mkdir()
    env = dict(os.environ, M2UGEN_CONFIG_DIR=str(server_info.config_dir), TMPDIR=str(work_tmp),
               E2E_KIND=kind, E2E_PROJECT=str(project), E2E_PROMPT=prompt, E2E_TIMEOUT="150")
    env.update(extra_env)
    t0 = time.monotonic()
    proc = subprocess.run([LUA, str(DRIVER)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=float(env["E2E_TIMEOUT"]) + 50)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["seconds"] = time.monotonic() - t0
    out["project"] = project
    out["tmp"] = work_tmp
    story = (f"messages: {out['messages']}\ntimeline: {out.get('timeline')}\ncommands: {out['commands']}\n"
             f"undo: {out['undo']}")
    if not out["ok"]:  # the whole story, untruncated: the Lua error, the message boxes, the timeline
        pytest.fail(f"{out['error']}\n{story}", pytrace=False)
    assert out["violations"] == [], out["violations"]
    if not clean:  # the caller checks the rest
        return out
    if not out["undo"]["begin"] == out["undo"]["end"] == 1:  # nothing inserted: the message boxes say why
        pytest.fail(f"undo blocks {out['undo']} (one expected)\n{story}", pytrace=False)
    assert out["render_restored"], out
    assert out["messages"] == [] or kind == "generate" and out["messages"] == [
        "Condition the music on an image or a video file?"], out["messages"]
    # the only temporary files left are none
    assert not any(p.is_file() for p in (work_tmp / "m2ugen-reaper").rglob("*")), list(work_tmp.rglob("*"))
    return out


def new_track(out: dict, index: int = 2) -> dict:
    created = [t for t in out["tracks"] if t["created"]]
    assert len(created) == 1, out["tracks"]
    assert created[0]["index"] == index  # default: right below "Keys" (index 1)
    assert len(out["tracks"]) == 4
    return created[0]


def job_record(server_info, job: str) -> dict:
    from server.client import Client

    with Client(server_info.endpoint) as client:
        reply = client.call("status", job=job)
    assert reply.op == "job", reply.header
    return reply.header


def assert_region_reached_the_job(server_info, out: dict, seconds: float) -> None:
    """The rendered selection (the selected track over the time selection) is what the job got."""
    job = out["proj_ext"]["last_job"]
    audio = job_record(server_info, job)["inputs"]["audio"]
    assert abs(audio["seconds"] - seconds) < 0.02, audio
    record = json.loads(out["proj_ext"]["job:" + job])
    if record.get("analysis"):  # the measured source, once the server sends it
        assert abs(record["analysis"]["duration_s"] - seconds) < 0.05, record["analysis"]


@pytest.mark.timeout(240)
def test_generate_inserts_the_real_result(server_info, tmp_path):
    # through the preview (no SWS here: the result is in the project while previewing) and Accept
    out = run_action("generate", server_info, tmp_path, "a calm piano melody, it's late", E2E_ACCEPT="1")
    track = new_track(out)
    assert track["name"] == "M2UGen generate: a calm piano melody, it's late"
    item = track["items"][0]
    assert item["position"] == 1.0
    src = Path(item["source"])
    assert src.parent == out["project"] / "M2UGen" and src.exists()
    sidecar = json.loads(src.with_suffix(".json").read_text())  # the server's provenance, kept too
    assert "a calm piano melody" in json.dumps(sidecar)
    data, sr = sf.read(src)
    assert sr == 48000  # the project sample rate was requested
    assert abs(len(data) / sr - 1.0) < 0.02  # the requested duration
    assert abs(item["length"] - len(data) / sr) < 1e-3
    assert "Prompt: a calm piano melody" in item["notes"]
    assert item["take_name"].startswith(out["proj_ext"]["last_job"])  # "<job> seed 7"
    record = json.loads(out["proj_ext"]["job:" + item["take_name"].split(" ")[0]])
    assert record["kind"] == "generate" and record["seed"] == 7 and record["state"] == "accepted"
    assert record["files"][0]["path"] == str(src)
    # relaunch ignored while running (toggle on), then relaunch replaces the window (toggle off); atexit: off
    assert out["action_options"] == [2 | 4, 1 | 2 | 8, 8], out["action_options"]


@pytest.mark.timeout(240)
def test_edit_renders_sends_and_inserts(server_info, tmp_path):
    out = run_action("edit", server_info, tmp_path, "add more reverb")
    assert out["renders"] == 1
    assert_region_reached_the_job(server_info, out, 1.0)
    track = new_track(out)
    item = track["items"][0]
    assert item["position"] == 1.0
    data, sr = sf.read(item["source"])
    assert abs(len(data) / sr - 1.0) < 0.02  # edit keeps the selection length
    assert abs(item["length"] - 1.0) < 0.02


@pytest.mark.timeout(240)
def test_ask_keeps_the_answer_with_the_project(server_info, tmp_path):
    out = run_action("ask", server_info, tmp_path, "What instruments do you hear?")
    assert_region_reached_the_job(server_info, out, 1.0)
    track = new_track(out, index=3)  # the project's one "M2UGen answers" track, at the end
    assert track["name"] == "M2UGen answers"
    item = track["items"][0]
    assert item["source"] is None  # a note item, no audio
    assert item["notes"].startswith("Q: What instruments do you hear?\n\nA: ")
    answer = item["notes"].split("\n\nA: ", 1)[1].split("\n\nMeasured: ", 1)[0]
    assert answer.strip() != ""
    record = json.loads(out["proj_ext"]["job:" + out["proj_ext"]["last_job"]])
    assert record["text"] == answer


@pytest.mark.timeout(240)
def test_transcribe_puts_the_real_transcription_on_a_midi_track(server_info, tmp_path):
    """The rendered selection (the fake's 440 Hz sine) -> the real CLI -> a transcribe job -> A4 (69) and
    one chord, written into a MIDI item of a new track."""
    out = run_action("transcribe", server_info, tmp_path, "")
    assert out["renders"] == 1
    assert_region_reached_the_job(server_info, out, 1.0)
    track = new_track(out)
    job = out["proj_ext"]["last_job"]
    assert track["name"] == f"M2UGen transcribe: job {job}"
    item = track["items"][0]
    assert item["position"] == 1.0 and item["take_name"] == job
    assert 69 in item["midi_pitches"] and len(item["midi_pitches"]) == 4, item  # the melody A4 + one triad
    assert "Tempo: 100 bpm (context)" in item["notes"] and "Chords: 1" in item["notes"]
    kept = sorted(p.name for p in (out["project"] / "M2UGen").iterdir())
    assert len(kept) == 2 and kept[0].endswith(".json") and kept[1].endswith(".mid")
    assert job_record(server_info, job)["kind"] == "transcribe"


class FractionSeparator:
    """A separator whose stems are fixed fractions of the mix (FRACTIONS: drums 0.4, bass 0.3, other 0.2,
    vocals 0.1): which file lands on which track shows in its level."""
    sources = ("drums", "bass", "other", "vocals")
    FRACTIONS = (0.4, 0.3, 0.2, 0.1)  # each a different level: a swapped pair shows

    def separate(self, wave, sr, on_progress=None):
        if on_progress is not None:
            on_progress(1.0)
        return {s: (wave * f).astype("float32") for s, f in zip(self.sources, self.FRACTIONS)}


@pytest.mark.timeout(240)
def test_split_into_stems_puts_the_real_stems_under_a_folder(make_server, monkeypatch, tmp_path):
    """The Keys item rendered -> the real `m2ugen stems` -> a stems job on a real server -> four stem files
    kept with the project, each on its own track under a folder track named after the item, aligned to
    it; the item muted; one undo point."""
    import numpy as np

    server_info = make_server(separators={"htdemucs": FractionSeparator()})
    monkeypatch.setenv("M2UGEN_DATA_DIR", str(server_info.data_dir))
    out = run_action("stems", server_info, tmp_path, "")
    assert out["renders"] == 1
    created = [t for t in out["tracks"] if t["created"]]
    assert [t["name"] for t in created] == ["keys source stems", *FractionSeparator.sources]
    assert [t["index"] for t in created] == [2, 3, 4, 5, 6]  # below Keys, a top-level track
    assert [t["depth"] for t in created] == [1, 0, 0, 0, -1]  # the folder, closed by its last stem
    keys = out["tracks"][1]
    assert keys["name"] == "Keys" and keys["items"][0]["mute"] == 1
    job = out["proj_ext"]["last_job"]
    assert job_record(server_info, job)["kind"] == "stems"
    waves = {}
    for t in created[1:]:
        item = t["items"][0]
        assert item["position"] == keys["items"][0]["position"]
        src = Path(item["source"])
        assert src.parent == out["project"] / "M2UGen" and src.name.endswith(f"-{t['name']}.wav")
        data, sr = sf.read(src, always_2d=True)
        assert abs(item["length"] - len(data) / sr) < 1e-9 and abs(item["length"] - 3.0) < 1e-3
        waves[t["name"]] = data
    assert np.abs(waves["drums"]).max() > 0.01
    for name, frac in zip(FractionSeparator.sources, FractionSeparator.FRACTIONS):  # the right file on each track
        np.testing.assert_allclose(waves[name] * FractionSeparator.FRACTIONS[0] / frac, waves["drums"], atol=3e-4)


@pytest.mark.timeout(240)
def test_cancel_action_cancels_the_real_job(make_server, tiny_model, monkeypatch, tmp_path):
    from conftest import SlowModel

    # the real tiny model, slowed per step, so the job is still running when Cancel arrives
    server_info = make_server(SlowModel(tiny_model, step_s=0.25))
    monkeypatch.setenv("M2UGEN_DATA_DIR", str(server_info.data_dir))
    project = tmp_path / "proj"
    project.mkdir()
    env = dict(os.environ, M2UGEN_CONFIG_DIR=str(server_info.config_dir), TMPDIR=str(tmp_path),
               E2E_KIND="generate", E2E_PROJECT=str(project), E2E_TIMEOUT="150", E2E_CANCEL="1")
    proc = subprocess.run([LUA, str(DRIVER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["violations"] == [], out
    job = out["cancelled_job"]
    assert job, out
    assert out["argv"][1][1:4] == ["cancel", job, "--no-wait"], out["argv"]
    assert "cancelled" in out["messages"][-1], out["messages"]
    assert [t for t in out["tracks"] if t["created"]] == []
    assert out["undo"]["begin"] == out["undo"]["end"] == 0
    assert not list((project / "M2UGen").glob("*.wav")) if (project / "M2UGen").exists() else True
    from server.client import Client

    with Client(server_info.endpoint) as client:  # the server's record says so too
        reply = client.call("status", job=job)
    assert reply.header["state"] == "cancelled", reply.header


@pytest.mark.timeout(240)
def test_a_killed_cli_ends_the_action_with_the_command_that_fetches_the_result(make_server, tiny_model,
                                                                                monkeypatch, tmp_path):
    """SIGKILL the real CLI mid-job (a closed console): the script says so at once, names the job and the
    exact `m2ugen result JOB --wait --out FILE` command, and that command really fetches the WAV."""
    import shlex

    from conftest import SlowModel

    server_info = make_server(SlowModel(tiny_model, step_s=0.25))
    monkeypatch.setenv("M2UGEN_DATA_DIR", str(server_info.data_dir))
    project = tmp_path / "proj"
    project.mkdir()
    env = dict(os.environ, M2UGEN_CONFIG_DIR=str(server_info.config_dir), TMPDIR=str(tmp_path),
               E2E_KIND="generate", E2E_PROJECT=str(project), E2E_TIMEOUT="150", E2E_KILL="1")
    proc = subprocess.run([LUA, str(DRIVER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["violations"] == [], out
    assert out["killed_pid"], out
    msg = out["messages"][-1]
    assert "ended (exit status 137) without reporting a result" in msg, msg
    job = out["proj_ext"]["last_job"]
    assert json.loads(out["proj_ext"]["job:" + job])["state"] == "lost"
    assert f"The job {job} may still finish" in msg
    assert out["ticks"] * 0.05 < 30  # seen from the exit file, not after the 120 s stale bound
    argv = shlex.split(msg.rsplit("\n", 1)[1])
    at = argv.index("result")
    assert argv[at:at + 4] == ["result", job, "--wait", "--out"], argv
    fetched = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=150)
    assert fetched.returncode == 0, fetched.stderr
    wav_path = Path(argv[at + 4])
    data, sr = sf.read(wav_path)
    assert wav_path.parent == project / "M2UGen" and abs(len(data) / sr - 1.0) < 0.02


@pytest.mark.timeout(240)
def test_ask_hears_two_selected_tracks_together(server_info, tmp_path):
    """Keys and Bass selected: REAPER's "selected tracks via master" writes one file per track; the job
    gets their sum (Keys at 0 dB + Bass at half volume = 1.5 x one sine), not the first file only."""
    out = run_action("ask", server_info, tmp_path, "What instruments do you hear?", E2E_TRACKS="2")
    assert out["render_files"] == 2
    assert abs(out["input_gain"] - 1.5) < 0.02, out["input_gain"]
    assert abs(out["input_seconds"] - 1.0) < 0.02
    assert_region_reached_the_job(server_info, out, 1.0)
    assert new_track(out, index=3)["name"] == "M2UGen answers"


@pytest.mark.timeout(240)
def test_a_full_project_disk_keeps_the_complete_cli_file(server_info, tmp_path):
    """The project's disk fills while the result is copied next to it: no truncated copy is kept; the CLI's
    complete file is inserted from where it is, and the message says where."""
    out = run_action("generate", server_info, tmp_path, "a calm piano melody", clean=False, E2E_DISK_FULL="20000")
    assert out["disk_failures"] >= 1
    assert out["undo"]["begin"] == out["undo"]["end"] == 1
    kept = list((out["project"] / "M2UGen").glob("*")) if (out["project"] / "M2UGen").exists() else []
    assert [p for p in kept if p.suffix in (".wav", ".part")] == [], kept
    src = Path(new_track(out)["items"][0]["source"])
    assert src.is_relative_to(out["tmp"]) and src.exists()
    data, sr = sf.read(src)
    assert abs(len(data) / sr - 1.0) < 0.02  # complete
    assert any(str(src) in m for m in out["messages"]), out["messages"]


@pytest.mark.timeout(300)
def test_an_ask_completes_while_a_learn_trains(server_info, tmp_path):
    """A Learn (a 20,000-step fine-tune on the real server) runs in the background; an Ask started beside it
    is answered and kept while the Learn still trains; then M2UGen - Cancel stops the Learn."""
    out = run_action("learn_ask", server_info, tmp_path, "What do you hear?", clean=False, E2E_TIMEOUT="250")
    assert out["ask_done_while_learning"] is True, f"messages: {out['messages']}\ntimeline: {out['timeline']}"
    assert out["learn_cancelled"] is True
    answers = [t for t in out["tracks"] if t["name"] == "M2UGen answers"]
    assert len(answers) == 1 and answers[0]["items"][0]["notes"].startswith("Q: What do you hear?")
    assert not any("still running" in m for m in out["messages"]), out["messages"]
    assert "cancelled" in out["messages"][-1], out["messages"]
    assert job_record(server_info, out["learn_job"])["state"] == "cancelled"


def test_server_not_running_gives_exit_code_3_message(tmp_path):
    """The real CLI against a dead endpoint: the status file says exit code 3 and the action says so."""
    cfg = tmp_path / "config"
    cfg.mkdir()
    cli = ROOT / ".venv" / "bin" / "m2ugen"
    if not cli.exists():
        cli = Path(shutil.which("m2ugen") or "")
    assert cli.is_file(), "the m2ugen CLI is not installed in the venv"
    # a discovery file naming the CLI, and Settings pointing at a port nobody listens on
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    (cfg / "server.json").write_text(json.dumps({"cli": str(cli), "endpoint": f"tcp://127.0.0.1:{port}"}))
    project = tmp_path / "proj"
    project.mkdir()
    env = dict(os.environ, M2UGEN_CONFIG_DIR=str(cfg), TMPDIR=str(tmp_path), E2E_KIND="generate",
               E2E_PROJECT=str(project), E2E_TIMEOUT="60", E2E_SERVER=f"tcp://127.0.0.1:{port}")
    proc = subprocess.run([LUA, str(DRIVER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["violations"] == []
    assert "server is not running" in out["messages"][-1], out["messages"]
    assert [t for t in out["tracks"] if t["created"]] == []
    assert out["undo"]["begin"] == out["undo"]["end"] == 0
