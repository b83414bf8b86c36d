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


def test_old_finished_jobs_are_forgotten_at_start_but_client_files_stay(tmp_path, tiny_model, monkeypatch):
    import sqlite3

    from server.app import ServerApp, ServerSettings, model_info

    monkeypatch.setenv("M2UGEN_CONFIG_DIR", str(tmp_path / "cfg"))
    data = tmp_path / "data"
    client_out = tmp_path / "mine.wav"

    def start(keep_days):
        app = ServerApp(tiny_model, model_info(tiny_model, preset="tiny"),
                        ServerSettings(port=0, data_dir=data, keep_days=keep_days, write_discovery=False))
        app.start()
        return app

    def run(c, out=None):
        job = c.call("submit", kind="generate", params={"prompt": "old", "duration": 0.5, "max_new_tokens": 4}).job
        while (m := c.recv(timeout_s=120)) is not None and not (m.job == job and m.op in ("done", "error")):
            pass
        assert m is not None and m.op == "done", m and m.header
        if out is not None:
            c.save_result(job, out)  # the client's own copy
        return job

    app = start(keep_days=30)
    try:
        with Client(app.endpoint) as c:
            old_default = run(c)
            old_client = run(c, client_out)
            recent = run(c)
    finally:
        app.stop()
    assert (data / "jobs" / old_default / "result.wav").exists() and client_out.exists()
    with sqlite3.connect(data / "jobs.sqlite") as db:  # 40 days pass for two of them
        db.execute("UPDATE jobs SET created = created - 40 * 86400 WHERE id IN (?, ?)", (old_default, old_client))

    app = start(keep_days=30)
    try:
        with Client(app.endpoint) as c:
            listed = {j["job"] for j in c.call("jobs", limit=50).header["jobs"]}
            gone = c.call("result", job=old_default)
    finally:
        app.stop()
    assert listed == {recent}
    assert gone.op == "error" and gone.header["code"] == "not_found"
    assert not (data / "jobs" / old_default).exists()
    assert (data / "jobs" / recent / "result.wav").exists()
    assert client_out.exists()  # the client's own file is never deleted


def test_keep_days_zero_keeps_everything(tmp_path, tiny_model, monkeypatch):
    from server.app import ServerApp, ServerSettings, model_info
    from server.journal import Journal

    monkeypatch.setenv("M2UGEN_CONFIG_DIR", str(tmp_path / "cfg"))
    data = tmp_path / "data"
    j = Journal(data / "jobs.sqlite")
    from server import owners

    mine = owners.owner_of(b"", {"token": owners.user_token()})  # the Client below is this user's
    j.save({"job": "a1b2c3", "created": 1.0, "state": "done", "owner": mine})  # from 1970
    j.close()
    (data / "jobs" / "a1b2c3").mkdir(parents=True)
    app = ServerApp(tiny_model, model_info(tiny_model, preset="tiny"),
                    ServerSettings(port=0, data_dir=data, keep_days=0, write_discovery=False))
    app.start()
    try:
        with Client(app.endpoint) as c:
            assert c.call("status", job="a1b2c3").header["state"] == "done"
    finally:
        app.stop()
    assert (data / "jobs" / "a1b2c3").is_dir()
