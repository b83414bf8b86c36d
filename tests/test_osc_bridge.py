"""The OSC bridge (in a thread) against the real job server with the tiny preset, through a
python-osc-encoded UDP peer that receives on its own port."""

import os
import socket
import time

import pytest
import soundfile as sf

from bridge_osc import osc
from bridge_osc.bridge import start_in_thread
from server.client import Client

from test_osc_fake_server import OscPeer


@pytest.fixture
def bridge(server):
    handle = start_in_thread(server, port=0, ping_interval_s=0.2, ping_timeout_s=5.0)
    yield handle
    handle.stop()


FAST_TOKENS = 8  # the tiny model's text is noise: 8 tokens instead of 512 keep every job well under 1 s


def make_fast(peer):
    """A per-client setting through OSC: every later job of this client stops after 8 tokens."""
    peer.send("/m2u/set", ("s", "max_new_tokens"), ("f", float(FAST_TOKENS)))
    assert peer.expect("/m2u/set")[-1].args == ["max_new_tokens", FAST_TOKENS]


@pytest.fixture
def peer(bridge):
    p = OscPeer(bridge.port)
    p.send("/m2u/hello", ("i", p.port))
    p.expect("/m2u/welcome")
    make_fast(p)
    yield p
    p.close()


def server_record(endpoint, job):
    with Client(endpoint, timeout_s=10) as c:
        reply = c.call("status", job=job)
    assert reply.op == "job", reply
    return reply.header


@pytest.mark.timeout(120)
def test_hello_ping_generate_roundtrip(server, bridge):
    p = OscPeer(bridge.port)
    try:
        p.send("/m2u/hello", ("f", float(p.port)))  # a float where an int belongs
        welcome = p.expect("/m2u/welcome")[-1]
        assert welcome.tags == "ssssiiis"
        bridge_version, state, server_version, model, tiny, sample_rate, port, capture_dir = welcome.args
        assert (state, tiny, port) == ("up", 1, p.port)
        assert os.path.isdir(capture_dir)  # where a device records its input (cleaned up by the bridge)
        assert server_version and model and sample_rate > 0

        make_fast(p)
        p.send("/m2u/ping")
        pong = p.expect("/m2u/pong")[-1]
        assert pong.tags == "ss" and pong.args == [bridge_version, "up"]

        p.send("/m2u/generate", ("s", "lofi"), ("s", "piano"), ("i", 1), ("f", float(p.port)))
        got = p.expect("/m2u/done", timeout=100)
        accepted = got[0]
        assert accepted.address == "/m2u/accepted" and accepted.tags == "si"
        job = accepted.args[0]
        progress = [m for m in got if m.address == "/m2u/progress"]
        assert progress and all(m.tags == "sfs" and m.args[0] == job for m in progress)
        fractions = [m.args[1] for m in progress]
        assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0
        assert {m.args[2] for m in progress} <= {"encoding", "thinking", "generating", "writing"}
        assert not [m for m in got if m.address == "/m2u/error"]

        done = got[-1]
        assert done.tags == "ssfi" and done.args[0] == job
        path, seconds, rate = done.args[1:]
        info = sf.info(path)
        assert info.samplerate == rate == sample_rate
        assert info.frames / info.samplerate == pytest.approx(seconds, abs=1e-3)
        assert seconds == pytest.approx(1.0, abs=0.02)
        record = server_record(server, job)
        assert record["params"]["prompt"] == "lofi piano" and record["audio_path"] == path
        assert record["params"]["max_new_tokens"] == FAST_TOKENS  # /m2u/set reached the job
        text_chunks = [m.args[3] for m in got if m.address == "/m2u/text"]
        assert "".join(text_chunks) == (record["text"] or "").replace("\x00", "")
    finally:
        p.close()


@pytest.mark.timeout(150)
def test_ask_edit_last_status(server, peer, wav_file):
    wav = wav_file(seconds=2.0, sr=22050, channels=2)
    peer.send("/m2u/ask", ("s", "what"), ("s", "instruments?"), ("s", str(wav)), ("f", 0.5), ("f", 1.5))
    got = peer.expect("/m2u/done", timeout=100)
    job = got[0].args[0]
    assert got[-1].args == [job, "", 0.0, 0]  # ask: text only
    record = server_record(server, job)
    assert record["kind"] == "ask" and record["params"]["prompt"] == "what instruments?"
    chunks = [m for m in got if m.address == "/m2u/text"]
    assert "".join(m.args[3] for m in chunks) == (record["text"] or "").replace("\x00", "")
    assert all(m.args[2] == len(chunks) for m in chunks)

    peer.send("/m2u/edit", ("s", "more drums"), ("s", "last"))  # last = the ask job, no audio
    error = peer.expect("/m2u/error")[-1]
    assert error.args[:2] == ["", "not_ready"] and job in error.args[2]

    peer.send("/m2u/generate", ("s", "drone"), ("f", 1.0))
    first = peer.expect("/m2u/done", timeout=100)[-1]
    peer.send("/m2u/edit", ("s", "more"), ("s", "drums"), ("s", "last"), ("f", 0.25), ("f", 0.75), ("f", 0.5))
    got = peer.expect("/m2u/done", timeout=100)
    edit_job, path, seconds, _ = got[-1].args
    assert seconds == pytest.approx(0.5, abs=0.02) and sf.info(path).frames > 0
    record = server_record(server, edit_job)
    assert record["kind"] == "edit" and record["params"]["prompt"] == "more drums"

    # status of a finished job re-sends its outcome (a lost /m2u/done can be fetched again)
    peer.send("/m2u/status", ("s", first.args[0]))
    got = peer.expect("/m2u/done")
    status = [m for m in got if m.address == "/m2u/status"][-1]
    assert status.tags == "ssfsi" and status.args[:3] == [first.args[0], "done", 1.0]
    assert got[-1].args == first.args

    peer.send("/m2u/status", ("s", "no-such-job"))
    error = peer.expect("/m2u/error")[-1]
    assert error.args[:2] == ["no-such-job", "not_found"]
    peer.send("/m2u/ask", ("s", "what?"), ("s", "/definitely/not/here.wav"))
    error = peer.expect("/m2u/error")[-1]
    assert error.args[1] in ("bad_audio", "path_not_allowed", "bad_request")


@pytest.mark.timeout(60)
def test_bad_input_is_answered_and_the_bridge_keeps_serving(server, peer):
    cases = [
        (b"\x00\x01garbage", "bad_osc"),
        (b"/m2u/generate\x00\x00\x00,sf\x00" + b"ab\x00\x00", "bad_osc"),  # float bytes missing
        (osc.encode("/m2u/generate", ("i", 5)), "bad_args"),  # wrong type: number for the prompt
        (osc.encode("/m2u/cancel", ("s", "x"), ("T", True)), "bad_args"),
        (osc.encode("/m2u/generate", ("s", "x"), ("b", b"RIFF....")), "bad_args"),  # no audio inside OSC
        (osc.encode("/m2u/fly", ("s", "away")), "unknown_address"),
        (osc.encode("/m2u/hello", ("f", 9101.5)), "bad_args"),
    ]
    for dgram, code in cases:
        peer.send_raw(dgram)
        error = peer.expect("/m2u/error")[-1]
        assert error.tags == "sss" and error.args[0] == "" and error.args[1] == code, (dgram, error.args)
        assert error.args[2]  # a message naming what is wrong
    # a server-side validation error passes through with the server's code
    peer.send("/m2u/generate", ("s", "x"), ("f", 1000.0))
    error = peer.expect("/m2u/error")[-1]
    assert error.args[1] == "bad_request" and "duration" in error.args[2]
    # still alive, also for bundles
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(OscMessageBuilder("/m2u/ping").build())
    peer.send_raw(bundle.build().dgram)
    assert peer.expect("/m2u/pong")[-1].args[1] == "up"


@pytest.mark.timeout(60)
def test_reply_port_rules(server, bridge):
    receiver = OscPeer(bridge.port)  # listens; never sends
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a throw-away source port, like oscsend
    try:
        sender.sendto(osc.encode("/m2u/ping", ("i", receiver.port)), ("127.0.0.1", bridge.port))
        assert receiver.expect("/m2u/pong")[-1].address == "/m2u/pong"
        sender.sendto(osc.encode("/m2u/hello", ("i", receiver.port)), ("127.0.0.1", bridge.port))
        receiver.expect("/m2u/welcome")
        sender.sendto(osc.encode("/m2u/ping"), ("127.0.0.1", bridge.port))  # remembered for this host
        assert receiver.expect("/m2u/pong")[-1].address == "/m2u/pong"
        # reply_port 0: answer the source address itself
        receiver.send("/m2u/ping", ("i", 0))
        assert receiver.expect("/m2u/pong")[-1].address == "/m2u/pong"
    finally:
        sender.close()
        receiver.close()


@pytest.mark.timeout(120)
def test_cancel_a_running_job(make_server, tiny_model):
    from conftest import SlowModel

    running = make_server(SlowModel(tiny_model, step_s=0.3))
    handle = start_in_thread(running.endpoint, port=0, ping_interval_s=0.2, ping_timeout_s=10.0)
    peer = OscPeer(handle.port)
    try:
        peer.send("/m2u/generate", ("s", "long"), ("s", "drone"), ("f", 1.0), ("i", peer.port))
        job = peer.expect("/m2u/accepted")[-1].args[0]
        peer.expect("/m2u/progress", timeout=30)
        peer.send("/m2u/cancel", ("s", "last"), ("i", peer.port))
        got = peer.expect("/m2u/cancelled", timeout=60)
        assert got[-1].args == [job]
        assert not [m for m in got if m.address == "/m2u/done"]
        peer.send("/m2u/status", ("s", job), ("i", peer.port))
        got = peer.expect("/m2u/cancelled")
        assert [m.args[1] for m in got if m.address == "/m2u/status"] == ["cancelled"]
    finally:
        peer.close()
        handle.stop()


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.timeout(120)
def test_real_server_stops_and_another_starts_on_the_same_port(tmp_path, tiny_model, monkeypatch):
    """Stop the server mid-job; a new server on the same port and data dir is found again; the OSC
    client hears interrupted, down, server_unavailable for a request meanwhile, up."""
    from conftest import SlowModel
    from server.app import ServerApp, ServerSettings, model_info

    monkeypatch.setenv("M2UGEN_CONFIG_DIR", str(tmp_path / "config"))
    port = _free_port()

    def start(model):
        app = ServerApp(model, model_info(model, preset="tiny"),
                        ServerSettings(host="127.0.0.1", port=port, data_dir=tmp_path / "data"))
        app.start()
        return app

    first = start(SlowModel(tiny_model, step_s=0.3))
    handle = start_in_thread(first.endpoint, port=0, ping_interval_s=0.2, ping_timeout_s=1.0)
    peer = OscPeer(handle.port)
    second = None
    try:
        peer.send("/m2u/hello", ("i", peer.port))
        peer.expect("/m2u/welcome")
        make_fast(peer)
        peer.send("/m2u/generate", ("s", "long drone"), ("f", 1.0))
        job = peer.expect("/m2u/accepted")[-1].args[0]
        peer.expect("/m2u/progress", timeout=30)
        first.stop()
        seen = peer.expect("/m2u/server", timeout=10)
        assert seen[-1].args[0] == "down"
        peer.send("/m2u/generate", ("s", "lofi"), ("f", 1.0))
        assert peer.expect("/m2u/error")[-1].args[:2] == ["", "server_unavailable"]

        second = start(tiny_model)
        got = peer.expect("/m2u/server", timeout=20)
        assert got[-1].args[0] == "up"
        seen += got
        # a graceful stop reports the job at once; after a crash the bridge learns it on re-subscribing
        errors = [m.args for m in seen if m.address == "/m2u/error" and m.args[0] == job]
        if not errors:
            errors = [peer.expect("/m2u/error", timeout=10)[-1].args]
        assert errors[0][:2] == [job, "interrupted"]
        peer.send("/m2u/generate", ("s", "lofi"), ("f", 1.0))
        done = peer.expect("/m2u/done", timeout=100)[-1]
        assert sf.info(done.args[1]).frames > 0
    finally:
        peer.close()
        handle.stop()
        if second is not None:
            second.stop()
        else:
            first.stop()


@pytest.mark.timeout(150)
def test_audio_by_job_id_of_another_client(server, peer):
    """A job id the bridge has never seen (made by the CLI, say) is resolved through the server."""
    with Client(server, timeout_s=10) as c:
        params = {"prompt": "pad", "duration": 1.0, "max_new_tokens": FAST_TOKENS}
        c.send("submit", kind="generate", params=params)
        deadline = time.monotonic() + 100
        while True:
            m = c.recv(timeout_s=max(0.1, deadline - time.monotonic()))
            assert m is not None, "no done from the server"
            if m.op in ("done", "error"):
                break
        assert m.op == "done", m
        other_job, other_path = m.job, m.header["audio_path"]
    peer.send("/m2u/edit", ("s", "brighter"), ("s", other_job), ("f", 0.5))
    got = peer.expect("/m2u/done", timeout=100)
    job = got[0].args[0]
    assert job != other_job
    record = server_record(server, job)
    assert record["params"]["prompt"] == "brighter"
    assert record["kind"] == "edit" and record["inputs"]["audio"]["job"] == other_job  # named by its job, no path
    assert other_path not in str(record["inputs"]["audio"])
    peer.send("/m2u/edit", ("s", "brighter"), ("s", "nonexistent42"))
    error = peer.expect("/m2u/error")[-1]
    assert error.args[1] == "not_found" and "nonexistent42" in error.args[2]


@pytest.mark.timeout(150)
def test_submit_with_options_writes_the_result_into_the_results_folder(server, server_info, peer, tmp_path, monkeypatch):
    """The real server: the request's own options reach the job, and the WAV the client is told about is
    a copy the bridge wrote from the server's bytes into the client's folder (not the jobs folder),
    fetched chunk by chunk (`result` with `offset`; the server's chunk made small so a short WAV has several)."""
    from server import handlers, protocol

    chunk, offsets = 16 * 1024, []
    monkeypatch.setattr(protocol, "RESULT_CHUNK_BYTES", chunk)
    op_result = handlers.Handlers.op_result

    def spy(self, identity, header, frames):
        offsets.append((header.get("take"), header.get("offset")))
        return op_result(self, identity, header, frames)

    monkeypatch.setattr(handlers.Handlers, "op_result", spy)
    folder = tmp_path / "Set Project" / "Samples" / "M2UGen"
    folder.parent.parent.mkdir()  # a saved Set's folder
    peer.send("/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "warm pads"), ("s", "duration"), ("f", 1.0),
              ("s", "seed"), ("i", 3), ("s", "sample_rate"), ("i", 44100), ("s", "takes"), ("i", 1),
              ("s", "bpm"), ("f", 90.0), ("s", "results_dir"), ("s", str(folder)), ("s", "reply_port"), ("i", peer.port))
    got = peer.expect("/m2u/done", timeout=120)
    job, path, seconds, rate = got[-1].args
    assert os.path.dirname(path) == str(folder) and rate == 44100 == sf.info(path).samplerate
    record = server_record(server, job)
    assert record["params"]["seed"] == 3 and record["params"]["context"]["bpm"] == 90.0
    assert record["params"]["takes"] == 1
    assert open(path, "rb").read() == open(record["audio_path"], "rb").read()
    size = os.path.getsize(path)
    assert size > 2 * chunk and offsets == [(None, k) for k in range(0, size, chunk)]
    assert str(server_info.jobs_dir) not in " ".join(str(a) for m in got for a in m.args)
    # takes 2: two takes come back, each fetched as bytes and written into the folder
    peer.send("/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "x"), ("s", "duration"), ("f", 0.5),
              ("s", "takes"), ("i", 2), ("s", "results_dir"), ("s", str(folder)))
    reply = peer.expect_any(("/m2u/error", "/m2u/accepted"))
    assert reply.address == "/m2u/accepted", reply.args
    got = peer.expect("/m2u/done", timeout=120)
    takes = [m.args for m in got if m.address == "/m2u/take"]
    assert [t[1:3] for t in takes] == [[0, 2], [1, 2]]
    assert all(os.path.dirname(t[3]) == str(folder) for t in takes)
    assert takes[0][4] + 1 == takes[1][4]  # distinct seeds, recorded
    assert open(takes[0][3], "rb").read() != open(takes[1][3], "rb").read()
