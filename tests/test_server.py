"""The job server over real loopback sockets with the tiny preset: events, results, concurrency,
disconnects, cancel, the queue bound, and bad input of every kind (the server keeps serving)."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import SlowModel, tone
from server.client import Client, Message, ServerUnavailable
from server.handlers import Limits

FINAL = ("done", "error", "cancelled")
QUICK = {"duration": 0.5, "max_new_tokens": 4}  # keeps the tiny model to about a second per job


def wait_final(client: Client, job: str, timeout_s: float = 60.0) -> tuple[Message, list[Message]]:
    """Collect this job's events until done/error/cancelled."""
    events = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        m = client.recv(timeout_s=0.5)
        if m is None or m.job != job:
            continue
        events.append(m)
        if m.op in FINAL:
            return m, events
    raise AssertionError(f"job {job} did not finish in {timeout_s} s; events: {[e.op for e in events]}")


def wav_bytes(seconds=1.0, sr=16000, channels=1, subtype="PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, sr, channels).T, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def assert_alive(endpoint: str) -> None:
    with Client(endpoint, timeout_s=5) as c:
        assert c.call("ping").op == "pong"


def test_hello_and_ping_say_tiny(server):
    with Client(server) as c:
        w = c.call("hello", client="pytest")
        assert w.op == "welcome" and w.header["protocol"] == 3
        assert w.header["model"]["tiny"] is True
        assert w.header["limits"]["queue_size"] == 16
        p = c.call("ping")
        assert p.op == "pong" and p.header["req"] != w.header["req"]


def test_generate_streams_events_and_writes_requested_wav(server, tmp_path):
    out = tmp_path / "take.wav"
    with Client(server) as c:
        acc = c.call("submit", kind="generate",
                     params={"prompt": "calm piano", "duration": 1.25, "sample_rate": 44100, "channels": 2, "seed": 7,
                             "max_new_tokens": 6,
                             "context": {"bpm": 90, "key": "A minor"}})
        assert acc.op == "accepted", acc.header
        assert acc.header["queue_position"] == 0 and acc.header["model"]["tiny"] is True
        done, events = wait_final(c, acc.job)
    assert done.op == "done", done.header
    stages = [e.header["stage"] for e in events if e.op == "progress"]
    assert stages[0] == "encoding" and "generating" in stages and stages[-1] == "writing"
    fractions = [e.header["fraction"] for e in events if e.op == "progress"]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0
    assert done.header["model"]["tiny"] is True
    with Client(server) as c:  # the client writes the result where it wants it
        assert c.save_result(acc.job, out)["audio_path"] == str(out)
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, int(1.25 * 44100))
    sidecar = json.loads(open(done.header["sidecar_path"]).read())
    assert sidecar["prompt"] == "calm piano" and sidecar["seed"] == 7
    assert sidecar["prompt_sent"].endswith("at 90 bpm, in A minor")
    assert sidecar["conditioning"] == "text" and sidecar["model"]["tiny"] is True
    assert "chat" in sidecar["timings"]


def test_ask_with_audio_bytes_streams_text(server):
    with Client(server) as c:
        acc = c.call("submit", [wav_bytes(1.0, 22050, 2)], kind="ask",
                     inputs={"audio": {"frame": 1, "name": "clip.wav", "start": 0.1, "end": 0.9}},
                     params={"prompt": "What key is this?", "max_new_tokens": 8})
        assert acc.op == "accepted", acc.header
        done, events = wait_final(c, acc.job)
    assert done.op == "done", done.header
    assert done.header["audio_path"] is None and isinstance(done.header["text"], str)
    texts = [e for e in events if e.op == "text"]
    if done.header["text"]:
        assert texts and texts[-1].header["text"].strip() == done.header["text"].strip()
    assert done.header["inputs"]["audio"]["seconds"] == pytest.approx(0.8, abs=1e-3)


def test_several_concurrent_clients_get_only_their_own_events(server):
    results: dict[int, tuple] = {}

    def run(i: int) -> None:
        with Client(server, timeout_s=30) as c:
            acc = c.call("submit", kind="generate",
                         params={"prompt": f"client {i}", "seed": i, **QUICK})
            done, events = wait_final(c, acc.job, timeout_s=120)
            results[i] = (acc.job, done, events)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert sorted(results) == [0, 1, 2]
    jobs = {r[0] for r in results.values()}
    assert len(jobs) == 3
    for job, done, events in results.values():
        assert done.op == "done" and all(e.job == job for e in events)
        assert sf.info(done.header["audio_path"]).frames == int(0.5 * done.header["sample_rate"])


def test_disconnect_then_refetch_by_job_id(server):
    c = Client(server)
    job = c.call("submit", kind="generate", params={"prompt": "gone", **QUICK}).job
    c.close()  # the submitting client vanishes; the job must still finish
    with Client(server) as c2:
        end = time.monotonic() + 60
        while c2.call("status", job=job).header["state"] != "done":
            assert time.monotonic() < end
            time.sleep(0.1)
        r = c2.call("result", job=job, want="bytes")
        assert r.op == "result" and r.header["audio"] == {"frame": 1, "size": len(r.frames[0])}
        wave, sr = sf.read(io.BytesIO(r.frames[0]))
        assert sr == r.header["sample_rate"] and len(wave) == int(0.5 * sr)
        assert r.header["sidecar"]["prompt"] == "gone"
        listed = c2.call("jobs").header["jobs"]
        assert listed[0]["job"] == job and listed[0]["state"] == "done"


def test_cancel_queued_and_running(make_server, tiny_model):
    slow = SlowModel(tiny_model, step_s=0.1)
    srv = make_server(slow)
    with Client(srv.endpoint) as c:
        j1 = c.call("submit", kind="generate", params={"prompt": "one", **QUICK}).job
        j2 = c.call("submit", kind="generate", params={"prompt": "two", **QUICK})
        assert j2.header["queue_position"] == 0
        j2 = j2.job
        assert slow.started.wait(30)
        r = c.call("result", job=j1)
        assert r.op == "error" and r.header["code"] == "not_ready"
        r = c.call("cancel", job=j2)
        assert r.op == "cancelling" and r.header["state"] == "cancelled"
        final, _ = wait_final(c, j2, timeout_s=5)
        assert final.op == "cancelled"
        r = c.call("cancel", job=j1)
        assert r.op == "cancelling" and r.header["state"] == "running"
        final, _ = wait_final(c, j1, timeout_s=10)
        assert final.op == "cancelled"
        assert c.call("status", job=j1).header["state"] == "cancelled"
        assert c.call("status", job=j2).header["state"] == "cancelled"
        assert c.call("cancel", job=j1).header["state"] == "cancelled"  # idempotent
    assert_alive(srv.endpoint)


def test_full_queue_answers_busy(make_server, tiny_model):
    slow = SlowModel(tiny_model, step_s=0.1)
    srv = make_server(slow, limits=Limits(queue_size=1))
    with Client(srv.endpoint) as c:
        running = c.call("submit", kind="generate", params={"prompt": "a", **QUICK}).job
        assert slow.started.wait(30)
        queued = c.call("submit", kind="generate", params={"prompt": "b", **QUICK})
        assert queued.op == "accepted"
        busy = c.call("submit", kind="generate", params={"prompt": "c", **QUICK})
        assert busy.op == "error" and busy.header["code"] == "busy" and "full" in busy.header["message"]
        for job in (queued.job, running):
            c.call("cancel", job=job)
        wait_final(c, running, timeout_s=10)
    assert_alive(srv.endpoint)


# ---------------------------------------------------------------------------------------------
# bad input: each gets a clear error and the server keeps serving


def nan_wav() -> bytes:
    x = tone(0.5, 16000, 1).T.copy()
    x[100] = np.nan
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _submit(**kw):
    h = {"v": 3, "op": "submit", "kind": "ask", "params": {"prompt": "hi"}, "inputs": {"audio": {"frame": 1}}}
    h.update(kw)
    return h


BAD = [
    ("non-utf8 garbage", [b"\xff\xfe\x00garbage"], "bad_json", None),
    ("malformed json", [b'{"v": 3, "op": "ping",'], "bad_json", None),
    ("json array", [b"[1, 2]"], "bad_json", None),
    ("empty frame 0", [b""], "bad_json", None),
    ("wrong version", [{"v": 4, "op": "ping"}], "bad_version", None),
    ("protocol 1 client", [{"v": 1, "op": "ping"}], "bad_version", None),
    ("protocol 2 client (sha256 uploads)", [{"v": 2, "op": "ping"}], "bad_version", None),
    ("version as string", [{"v": "1", "op": "ping"}], "bad_request", "v"),
    ("missing op", [{"v": 3}], "bad_request", "op"),
    ("unknown op", [{"v": 3, "op": "explode"}], "unknown_op", None),
    ("unknown kind", [_submit(kind="remix"), b""], "unknown_kind", None),
    ("prompt not a string", [_submit(params={"prompt": 5}), wav_bytes()], "bad_request", "params.prompt"),
    ("duration not a number", [_submit(kind="edit", params={"prompt": "x", "duration": "long"}), wav_bytes()],
     "bad_request", "params.duration"),
    ("negative seed", [_submit(params={"prompt": "x", "seed": -1}), wav_bytes()], "bad_request", "params.seed"),
    ("channels as bool", [_submit(params={"prompt": "x", "channels": True}), wav_bytes()], "bad_request",
     "params.channels"),
    ("params not an object", [_submit(params=["x"]), wav_bytes()], "bad_request", "params"),
    ("unknown param", [_submit(params={"prompt": "x", "volume": 11}), wav_bytes()], "bad_request", "params.volume"),
    ("ask without audio", [_submit(inputs={})], "bad_request", "inputs.audio"),
    ("missing frame", [_submit()], "missing_frame", "inputs.audio.frame"),
    ("empty audio", [_submit(), b""], "bad_audio", "inputs.audio"),
    ("corrupt audio", [_submit(), b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 10], "bad_audio", "inputs.audio"),
    ("nan audio", [_submit(), nan_wav()], "bad_audio", "inputs.audio"),
    ("too long audio", [_submit(), wav_bytes(seconds=4.0, sr=8000)], "bad_audio", "inputs.audio"),
    ("crop past end", [_submit(inputs={"audio": {"frame": 1, "start": 5.0}}), wav_bytes()], "bad_audio",
     "inputs.audio"),
    ("end before start", [_submit(inputs={"audio": {"frame": 1, "start": 0.5, "end": 0.2}}), wav_bytes()],
     "bad_request", "inputs.audio.end"),
    ("a client path", [_submit(inputs={"audio": {"path": "/etc/hostname"}})], "bad_request",
     "inputs.audio.path"),
    ("unknown audio field", [_submit(inputs={"audio": {"frame": 1, "strat": 1.0}}), wav_bytes()], "bad_request",
     "inputs.audio.strat"),
    ("output path", [_submit(kind="generate", inputs={}, output={"path": "/etc/m2ugen.wav"})],
     "bad_request", "output.path"),
    ("unknown blob without proof", [_submit(inputs={"audio": {"blob": "a" * 64}})], "blob_unknown", "inputs.audio.blob"),
    ("unknown blob", [_submit(inputs={"audio": {"blob": "a" * 64, "proof": "b" * 64}})], "blob_unknown",
     "inputs.audio.blob"),
    ("upload chunk without offer", [{"v": 3, "op": "upload", "upload": "0" * 24, "offset": 0}, b"abc"],
     "bad_upload", "upload"),
    ("corrupt image", [_submit(kind="generate", inputs={"image": {"frame": 1, "name": "x.png"}}), b"not a png"],
     "bad_image", "inputs.image"),
    ("image and video", [_submit(kind="generate", inputs={"image": {"frame": 1}, "video": {"frame": 1}}), b"x"],
     "bad_request", "inputs.video"),
    ("unknown job", [{"v": 3, "op": "status", "job": "nope"}], "not_found", "job"),
    ("job id wrong type", [{"v": 3, "op": "result", "job": 42}], "bad_request", "job"),
    ("jobs limit wrong type", [{"v": 3, "op": "jobs", "limit": "many"}], "bad_request", "limit"),
    ("header too big", [{"v": 3, "op": "ping", "pad": "x" * 70000}], "bad_request", "header"),
]


@pytest.fixture
def strict_server(make_server, tmp_path):
    return make_server(limits=Limits(max_audio_s=3.0))


@pytest.mark.parametrize("name,frames,code,field", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_clear_error_and_server_keeps_serving(strict_server, name, frames, code, field):
    with Client(strict_server.endpoint, timeout_s=5) as c:
        raw = [json.dumps(f).encode() if isinstance(f, dict) else f for f in frames]
        if isinstance(frames[0], dict):
            raw[0] = json.dumps({**frames[0], "req": "r1"}).encode()
        c.socket.send_multipart(raw)
        m = c.recv(timeout_s=5)
        assert m is not None, f"no reply to {name}"
        assert m.op == "error", m.header
        assert m.header["code"] == code, m.header
        assert len(m.header["message"]) > 5
        if field is not None:
            assert m.header.get("field") == field, m.header
        if isinstance(frames[0], dict) and code != "bad_json" and field != "header":
            assert m.header.get("req") == "r1"
        assert c.call("ping").op == "pong"


def test_oversized_message_is_dropped_and_server_keeps_serving(make_server):
    srv = make_server(limits=Limits(max_message_mb=1))
    with Client(srv.endpoint, timeout_s=3) as big, Client(srv.endpoint, timeout_s=3) as other:
        assert big.call("ping").op == "pong"
        big.send("submit", [b"\0" * (2 * 2**20)], kind="ask", params={"prompt": "x"},
                 inputs={"audio": {"frame": 1}})
        assert big.recv(timeout_s=1.0) is None  # libzmq dropped it (MAXMSGSIZE) before the server saw it
        assert other.call("ping").op == "pong"
        assert big.call("ping", timeout_s=5).op == "pong"  # the DEALER reconnects by itself


def test_client_times_out_without_server():
    c = Client("tcp://127.0.0.1:9", timeout_s=0.3)
    with pytest.raises(ServerUnavailable, match="no reply"):
        c.call("ping")
    c.close()


def test_subscribe_from_another_client_and_jobs_filter(server):
    with Client(server) as a, Client(server) as b:
        job = a.call("submit", kind="generate", params={"prompt": "shared", **QUICK}).job
        sub = b.call("subscribe", job=job)
        assert sub.op == "subscribed" and sub.header["job"] == job
        done_b, _ = wait_final(b, job)
        done_a, _ = wait_final(a, job)
        assert done_a.op == done_b.op == "done" and done_a.header["audio_path"] == done_b.header["audio_path"]
        assert [j["job"] for j in a.call("jobs", state="done").header["jobs"]] == [job]
        assert a.call("jobs", state="failed").header["jobs"] == []


def test_model_failure_is_reported_and_worker_survives(server):
    with Client(server) as c:
        # far more tokens than the tiny model's 512-token context: chat raises ValueError
        long_prompt = " ".join(f"word{i}" for i in range(600))[:4000]
        job = c.call("submit", kind="generate", params={"prompt": long_prompt, **QUICK}).job
        final, _ = wait_final(c, job)
        assert final.op == "error" and final.header["code"] == "job_failed", final.header
        assert "ValueError" in final.header["message"]
        st = c.call("status", job=job).header
        assert st["state"] == "failed" and st["error"]["code"] == "job_failed"
        r = c.call("result", job=job)
        assert r.op == "result" and r.header["state"] == "failed"
        ok = c.call("submit", kind="generate", params={"prompt": "after the failure", **QUICK}).job
        assert wait_final(c, ok)[0].op == "done"


def test_clean_stop_reports_running_and_queued_jobs_interrupted(make_server, tiny_model):
    from server.app import ServerApp, ServerSettings, model_info

    slow = SlowModel(tiny_model, step_s=0.1)
    srv = make_server(slow)
    with Client(srv.endpoint) as c:
        running = c.call("submit", kind="generate", params={"prompt": "r", **QUICK}).job
        queued = c.call("submit", kind="generate", params={"prompt": "q", **QUICK}).job
        assert slow.started.wait(30)
    srv.app.stop()
    again = ServerApp(tiny_model, model_info(tiny_model, "tiny"),
                      ServerSettings(port=0, data_dir=srv.data_dir, write_discovery=False))
    again.start()
    try:
        with Client(again.endpoint) as c:
            for job in (running, queued):
                st = c.call("status", job=job).header
                assert st["state"] == "failed" and st["error"]["code"] == "interrupted", st
    finally:
        again.stop()
