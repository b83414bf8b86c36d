"""kill -9 the real `m2ugen serve` process mid-job, restart it on the same data dir: finished results are
still listed and fetchable, the interrupted jobs are reported failed with code `interrupted`."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import soundfile as sf

from server import discovery
from server.client import Client


def start_server(tmp_path, env, log_name):
    log = open(tmp_path / log_name, "w")
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--preset", "tiny", "--port", "0"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    end = time.monotonic() + 180
    while time.monotonic() < end:
        assert proc.poll() is None, (tmp_path / log_name).read_text()
        os.environ["M2UGEN_CONFIG_DIR"] = env["M2UGEN_CONFIG_DIR"]
        info = discovery.read()
        if info and info.get("pid") == proc.pid and info.get("running"):
            return proc, info["endpoint"]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start: " + (tmp_path / log_name).read_text())


def test_kill_9_and_restart_loses_nothing(tmp_path, monkeypatch):
    env = {**os.environ, "M2UGEN_CONFIG_DIR": str(tmp_path / "cfg"), "M2UGEN_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    monkeypatch.setenv("M2UGEN_CONFIG_DIR", env["M2UGEN_CONFIG_DIR"])
    proc, endpoint = start_server(tmp_path, env, "first.log")
    try:
        with Client(endpoint, timeout_s=10) as c:
            quick = {"duration": 0.5, "max_new_tokens": 4}
            finished = c.call("submit", kind="generate", params={"prompt": "keep me", **quick}).job
            end = time.monotonic() + 120
            while True:
                m = c.recv(timeout_s=1)
                if m is not None and m.job == finished and m.op in ("done", "error"):
                    assert m.op == "done", m.header
                    break
                assert time.monotonic() < end
            running = c.call("submit", kind="generate", params={**quick, "prompt": "cut short", "duration": 8}).job
            queued = c.call("submit", kind="generate", params={"prompt": "never ran", **quick}).job
            while True:
                m = c.recv(timeout_s=30)
                assert m is not None
                if m.job == running and m.op == "progress":
                    break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()

    proc, endpoint = start_server(tmp_path, env, "second.log")
    try:
        with Client(endpoint, timeout_s=10) as c:
            listed = {j["job"]: j for j in c.call("jobs").header["jobs"]}
            assert set(listed) >= {finished, running, queued}
            assert listed[finished]["state"] == "done"
            r = c.call("result", job=finished, want="bytes")
            assert r.op == "result" and r.header["state"] == "done"
            wave, sr = sf.read(io.BytesIO(r.frames[0]))
            assert len(wave) == int(0.5 * sr)
            for job in (running, queued):
                st = c.call("status", job=job).header
                assert st["state"] == "failed" and st["error"]["code"] == "interrupted", st
                assert "stopped" in st["error"]["message"]
            assert c.call("ping").op == "pong"
        assert "interrupted" in (tmp_path / "second.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert discovery.read()["running"] is False  # a clean stop says so in the discovery file
