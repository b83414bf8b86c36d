"""The `m2ugen` CLI as a subprocess against a real server: JSON lines, status file, WAV output, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from conftest import SlowModel
from server.client import Client

CLI = [sys.executable, "-m", "server.cli"]


def run(args, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ}, **kw)


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_generate_out_and_status_file(server, tmp_path):
    out, status = tmp_path / "gen.wav", tmp_path / "status.json"
    p = run(["generate", "--server", server, "--prompt", "lofi piano", "--duration", "0.5", "--sample-rate", "48000",
             "--channels", "2", "--seed", "3", "--bpm", "92", "--max-new-tokens", "4", "--out", str(out),
             "--status-file", str(status)])
    assert p.returncode == 0, p.stderr
    events = lines(p.stdout)
    ops = [e["op"] for e in events]
    assert ops[0] == "accepted" and "progress" in ops and ops[-2:] == ["done", "exit"]
    assert events[-1]["code"] == 0
    done = events[-2]
    assert done["audio_path"] == str(out) and done["model"]["tiny"] is True
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 24000)
    st = json.loads(status.read_text())
    assert st["state"] == "done" and st["exit_code"] == 0 and st["audio_path"] == str(out)
    assert st["fraction"] == 1.0 and st["job"] == done["job"] and st["error"] is None
    assert json.loads(Path(done["sidecar_path"]).read_text())["params"]["context"]["bpm"] == 92


def test_console_script_request_file_upload_and_result(server, tmp_path, wav_file):
    exe = shutil.which("m2ugen", path=str(Path(sys.executable).parent))
    assert exe, "the m2ugen console script is not installed in this venv"
    src = wav_file(seconds=1.0, sr=22050, channels=2)
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"kind": "edit", "prompt": "more drums, it's \"fun\"; rm -rf /", "audio": str(src),
                               "start": 0.25, "end": 0.75, "max_new_tokens": 4, "out": str(tmp_path / "edit.wav"),
                               "status_file": str(tmp_path / "st.json"), "server": server}))
    p = subprocess.run([exe, "submit", "--request", str(req), "--upload"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    done = lines(p.stdout)[-2]
    assert done["op"] == "done"
    info = sf.info(tmp_path / "edit.wav")
    assert info.frames == int(round(0.5 * info.samplerate))  # duration defaults to the cropped input
    assert done["params"]["prompt"].endswith("rm -rf /")
    p = run(["result", done["job"], "--server", server, "--out", str(tmp_path / "again.wav")])
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "again.wav").read_bytes() == (tmp_path / "edit.wav").read_bytes()
    p = run(["jobs", "--server", server])
    assert p.returncode == 0 and lines(p.stdout)[0]["job"] == done["job"]
    p = run(["status", done["job"], "--server", server])
    assert p.returncode == 0 and lines(p.stdout)[0]["state"] == "done"


def test_no_server_exits_3_quickly(tmp_path):
    status = tmp_path / "s.json"
    t0 = time.monotonic()
    p = run(["generate", "--server", "tcp://127.0.0.1:9", "--prompt", "x", "--status-file", str(status),
             "--connect-timeout", "1"])
    assert p.returncode == 3
    assert time.monotonic() - t0 < 10
    assert "no m2ugen server answers at tcp://127.0.0.1:9" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert lines(p.stdout)[-1] == {"op": "exit", "code": 3}
    st = json.loads(status.read_text())
    assert st["exit_code"] == 3 and st["error"]["code"] == "unreachable"


def test_bad_input_exits_4(server, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnot really")
    status = tmp_path / "s.json"
    p = run(["ask", "--server", server, "--audio", str(bad), "--prompt", "key?", "--status-file", str(status)])
    assert p.returncode == 4
    err = next(e for e in lines(p.stdout) if e["op"] != "upload")  # the file went up, then was refused
    assert err["op"] == "error" and err["code"] == "bad_audio"
    assert "bad_audio" in p.stderr
    st = json.loads(status.read_text())
    assert st["state"] == "failed" and st["exit_code"] == 4 and st["error"]["code"] == "bad_audio"


def test_usage_errors_exit_2(server, tmp_path):
    assert run(["generate", "--server", server]).returncode == 2  # no --prompt
    assert run(["ask", "--server", server, "--prompt", "x"]).returncode == 2  # no --audio
    assert run(["frobnicate"]).returncode == 2
    bad = tmp_path / "r.json"
    bad.write_text("[1]")
    assert run(["submit", "--request", str(bad)]).returncode == 2


def test_cancel_exits_5(make_server, tiny_model, tmp_path):
    srv = make_server(SlowModel(tiny_model, step_s=0.2))
    status = tmp_path / "s.json"
    proc = subprocess.Popen([*CLI, "generate", "--server", srv.endpoint, "--prompt", "long", "--duration", "2",
                             "--max-new-tokens", "4", "--status-file", str(status)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        first = json.loads(proc.stdout.readline())
        assert first["op"] == "accepted"
        p = run(["cancel", first["job"], "--server", srv.endpoint])
        assert p.returncode == 0, p.stderr
        assert lines(p.stdout)[0]["op"] == "cancelling"
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5
    assert lines(rest)[-2]["op"] == "cancelled"
    st = json.loads(status.read_text())
    assert st["state"] == "cancelled" and st["exit_code"] == 5
    with Client(srv.endpoint) as c:
        assert c.call("status", job=first["job"]).header["state"] == "cancelled"


@pytest.mark.parametrize("cmd", [[], ["serve"], ["generate"], ["result"], ["keys"], ["chat"], ["bridge"]])
def test_help_everywhere(cmd):
    p = run([*cmd, "--help"], timeout=60)
    assert p.returncode == 0 and "usage: m2ugen" in p.stdout


def test_keys_command_creates_keys(tmp_path):
    p = run(["keys", "--dir", str(tmp_path / "k")])
    assert p.returncode == 0, p.stderr
    made = json.loads(p.stdout)
    assert Path(made["server_secret"]).is_file() and (tmp_path / "k" / "authorized" / "client.key").is_file()
    assert run(["keys", "--dir", str(tmp_path / "k")]).returncode == 4  # refuses to overwrite


def test_result_wait_fetches_a_job_submitted_elsewhere(server, tmp_path):
    c = Client(server)
    job = c.call("submit", kind="generate", params={"prompt": "later", "duration": 0.5, "max_new_tokens": 4}).job
    c.close()  # the submitter is gone
    out = tmp_path / "fetched.wav"
    p = run(["result", job, "--wait", "--server", server, "--out", str(out), "--status-file", str(tmp_path / "s.json")])
    assert p.returncode == 0, p.stderr
    last = lines(p.stdout)[-2]
    assert last["op"] == "result" and last["audio_path"] == str(out)
    assert sf.info(out).frames == int(0.5 * sf.info(out).samplerate)
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["state"] == "done" and st["exit_code"] == 0
    assert run(["result", "nosuchjob", "--server", server]).returncode == 4


def test_ctrl_c_exits_6_and_the_job_keeps_running(make_server, tiny_model, tmp_path):
    import signal

    srv = make_server(SlowModel(tiny_model, step_s=0.05))
    status = tmp_path / "s.json"
    proc = subprocess.Popen([*CLI, "generate", "--server", srv.endpoint, "--prompt", "keep going", "--duration", "0.5",
                             "--max-new-tokens", "4", "--status-file", str(status)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
                            # Ctrl-C reaches the CLI also when this test runs where SIGINT is ignored (a
                            # background job of a shell without job control passes SIG_IGN on)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        job = json.loads(proc.stdout.readline())["job"]
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 6
    assert f"m2ugen result {job}" in err and lines(rest)[-1] == {"op": "exit", "code": 6}
    assert json.loads(status.read_text())["exit_code"] == 6
    with Client(srv.endpoint) as c:
        end = time.monotonic() + 60
        while c.call("status", job=job).header["state"] != "done":
            assert time.monotonic() < end
            time.sleep(0.1)


def test_unreadable_request_file_still_writes_the_status_file(tmp_path):
    """A DAW script polls the status file: a usage error must land there at once, not only on stderr."""
    status = tmp_path / "status.json"
    r = run(["generate", "--request", str(tmp_path / "missing.json"), "--status-file", str(status)], timeout=60)
    assert r.returncode == 2, r.stderr
    state = json.loads(status.read_text())
    assert state["state"] == "failed" and state["exit_code"] == 2, state
    assert state["error"]["code"] == "usage" and "missing.json" in state["error"]["message"], state
    wrong = tmp_path / "req.json"
    wrong.write_text(json.dumps({"kind": "ask", "prompt": "x", "status_file": str(status)}))
    r = run(["generate", "--request", str(wrong)], timeout=60)
    assert r.returncode == 2
    assert "kind 'ask'" in json.loads(status.read_text())["error"]["message"]


def test_cli_modules_do_not_import_torch():
    """Every `m2ugen status` a DAW script runs must start fast: the client side never imports torch."""
    code = "import sys, server.cli, server.client, m2ugen.paths; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_chat_reports_a_model_side_value_error_in_one_line():
    p = run(["chat", "--preset", "tiny", "--max-new-tokens", "-1", "hello"])
    assert p.returncode == 4 and p.stdout == ""  # EXIT_FAILED
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == \
        "m2ugen: chat failed: ValueError: max_new_tokens must be a positive integer, got -1"
    p = run(["chat", "--preset", "tiny", "--duration", "nan", "hello"])  # refused before the model loads
    assert p.returncode == 2 and "finite" in p.stderr and "Traceback" not in p.stderr
