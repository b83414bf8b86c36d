"""Issue 9: no client can hurt the server or another client. Each test is written as the attack: what
a hostile or careless client sends, and what must (not) have happened afterwards."""

from __future__ import annotations

import io
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zmq

from conftest import SlowModel, tone
from m2ugen import media
from server import protocol, security
from server.client import Client
from server.handlers import Limits

FINAL = {"done", "error", "cancelled"}
QUICK = {"duration": 0.5, "max_new_tokens": 4}


def submit(c: Client, kind="generate", params=None, **fields):
    return c.call("submit", kind=kind, params={"prompt": "x", **QUICK, **(params or {})}, **fields)


def wait_final(c: Client, job: str, timeout_s: float = 120.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        m = c.recv(timeout_s=0.5)
        if m is not None and m.job == job and m.op in FINAL:
            return m
    raise AssertionError(f"job {job} did not finish")


def raw_call(endpoint: str, header_bytes: bytes, timeout_s: float = 10.0) -> dict:
    """Send frame 0 exactly as given (no client-side encoding) and return the reply header."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.connect(endpoint)
    try:
        s.send_multipart([header_bytes])
        assert s.poll(int(timeout_s * 1000)), "no reply"
        return json.loads(s.recv_multipart()[0])
    finally:
        s.close()


def wav_bytes(seconds=0.5, sr=16000, channels=1) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, sr, channels).T, sr, format="WAV")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# 1. no client path reaches the server's filesystem calls; results are written by the client


def test_no_client_path_reaches_the_servers_file_calls(server_info, tiny_model, make_server, monkeypatch, tmp_path):
    """Every path field a client could send is refused before anything is opened, and the server's
    threads open nothing of the client's (they read uploads from their own store)."""
    import builtins

    client_dir = tmp_path / "client"
    client_dir.mkdir()
    clip = client_dir / "clip.wav"
    clip.write_bytes(wav_bytes())
    journal = server_info.data_dir / "jobs.sqlite"
    before = journal.read_bytes()
    opened: list[tuple[str, str]] = []
    server_threads = ("m2ugen-transport", "m2ugen-intake", "m2ugen-worker")

    def spy(real):
        def wrapper(path, *args, **kw):
            name = threading.current_thread().name
            if name.startswith(server_threads) and isinstance(path, (str, bytes, os.PathLike)):
                opened.append((name, os.fsdecode(path)))
            return real(path, *args, **kw)
        return wrapper

    for module, attr in ((os, "open"), (builtins, "open"), (os, "stat"), (os, "lstat")):
        monkeypatch.setattr(module, attr, spy(getattr(module, attr)))
    with Client(server_info.endpoint) as c:
        for fields in ({"output": {"path": str(journal)}}, {"output": {"path": str(client_dir / "o.wav")}},
                       {"kind": "edit", "inputs": {"audio": {"path": str(clip)}}},
                       {"inputs": {"image": {"path": str(client_dir / "x.png")}}},
                       {"inputs": {"midi": {"path": str(client_dir / "x.mid")}}},
                       {"kind": "finetune", "params": {"adapter_name": "a"},
                        "inputs": {"audio_set": [{"path": str(clip)}]}}):
            r = submit(c, **fields)
            assert r.op == "error" and r.header["code"] == "bad_request" and r.header["field"].endswith(".path")
        ref = c.upload(clip)  # the client reads its file (this thread), the server gets bytes
        done = wait_final(c, submit(c, kind="edit", inputs={"audio": ref}).job)
        assert done.op == "done"
    monkeypatch.undo()
    assert opened and not [p for _, p in opened if p.startswith(str(client_dir))], opened
    assert journal.read_bytes()[:16] == before[:16] == b"SQLite format 3\x00"
    # the data dir still opens as a server's
    server_info.app.stop()
    from server.app import ServerApp, ServerSettings, model_info

    again = ServerApp(tiny_model, model_info(tiny_model, "tiny"),
                      ServerSettings(port=0, data_dir=server_info.data_dir, write_discovery=False))
    again.start()
    again.stop()


def test_no_client_writes_into_another_jobs_folder(server_info):
    with Client(server_info.endpoint) as c:
        first = submit(c)
        done = wait_final(c, first.job)
        assert done.op == "done"
        victim = Path(done.header["audio_path"])
        data = victim.read_bytes()
        r = submit(c, output={"path": str(victim), "overwrite": True})
    assert r.op == "error" and r.header["code"] == "bad_request" and r.header["field"] == "output.path"
    assert victim.read_bytes() == data


def test_existing_files_are_replaced_only_when_asked_and_only_by_their_kind(server, tmp_path):
    from server.security import OutputExists

    out = tmp_path / "take.wav"
    with Client(server) as c:
        first = wait_final(c, submit(c).job)
        assert c.save_result(first.job, out)["audio_path"] == str(out) and out.is_file()
        wav_before = out.read_bytes()
        with pytest.raises(OutputExists, match="--overwrite"):  # exists, not asked to overwrite
            c.save_result(first.job, out)
        again = wait_final(c, submit(c, params={"seed": 7}).job)
        c.save_result(again.job, out, overwrite=True)
        assert out.read_bytes() != wav_before
        assert json.loads(out.with_suffix(".json").read_text())["job"] == again.job

        notes = tmp_path / "notes.wav"  # named .wav but is the user's text: never replaced
        notes.write_text("my lyrics")
        with pytest.raises(OutputExists, match="not a WAV"):
            c.save_result(again.job, notes, overwrite=True)
        assert notes.read_text() == "my lyrics"

        mix = tmp_path / "mix.wav"  # a WAV whose sidecar name holds the user's own JSON
        mix.write_bytes(wav_bytes())
        (tmp_path / "mix.json").write_text('{"my": "settings"}')
        with pytest.raises(OutputExists, match="sidecar"):
            c.save_result(again.job, mix, overwrite=True)
        assert json.loads((tmp_path / "mix.json").read_text()) == {"my": "settings"}
        assert mix.read_bytes() == wav_bytes()  # nothing of the result was written either


def test_a_file_created_at_the_output_path_while_queued_is_not_replaced(server, tmp_path):
    from server.security import OutputExists

    out = tmp_path / "late.wav"
    with Client(server) as c:
        r = submit(c)
        assert r.op == "accepted"
        out.write_bytes(wav_bytes())  # another take lands there first
        theirs = out.read_bytes()
        assert wait_final(c, r.job).op == "done"
        with pytest.raises(OutputExists):
            c.save_result(r.job, out)
    assert out.read_bytes() == theirs


# ---------------------------------------------------------------------------------------------
# 2. a symlink swapped in cannot redirect a write or a read


def test_the_directory_walk_refuses_a_component_swapped_for_a_symlink(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    real = (root / "d" / "x.wav").resolve()  # resolved when the user named it ...
    (root / "d").rename(root / "d.real")
    (root / "d").symlink_to(outside, target_is_directory=True)  # ... the swap ...
    with pytest.raises(security.PathNotAllowed, match="changed while in use"):
        security.write_atomic_confined(real, b"RIFF", "output")  # ... the write
    assert list(outside.iterdir()) == []


def test_an_input_swapped_for_a_symlink_after_submit_changes_nothing(server_info, tmp_path, make_server, tiny_model):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(wav_bytes())
    srv = make_server(SlowModel(tiny_model, 0.05))
    with Client(srv.endpoint) as c:
        img = tmp_path / "pic.png"
        from PIL import Image

        Image.new("RGB", (8, 8), "red").save(img)
        r = submit(c, inputs={"image": c.upload(img)})
        assert r.op == "accepted"
        img.unlink()
        img.symlink_to(outside / "secret.wav")  # swapped after submit: the job uses the bytes sent then
        final = wait_final(c, r.job)
    assert final.op == "done"
    copy = srv.jobs_dir / r.job / "input_image.png"
    assert copy.is_file() and Image.open(copy).getpixel((0, 0)) == (255, 0, 0)


# ---------------------------------------------------------------------------------------------
# 3. decompression bombs


def flac_bomb(path: Path, seconds: float, channels: int = 8, sr: int = 48000) -> Path:
    """A tiny FLAC that decodes to ``seconds`` of ``channels`` x ``sr`` (digital silence + a click)."""
    with sf.SoundFile(path, "w", samplerate=sr, channels=channels, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((sr, channels), np.float32)
        for i in range(int(seconds)):
            block[0] = 0.5 if i % 2 else 0.0
            f.write(block)
    return path


class HeldModel(SlowModel):
    """The tiny model, held before it starts (so queued jobs stay queued and nothing else allocates)."""

    def __init__(self, model):
        super().__init__(model, 0.0)
        self.release = threading.Event()

    def chat(self, *args, on_event=None, **kwargs):
        self.release.wait(120)
        if on_event is not None:
            from m2ugen.model import Event

            on_event(Event("encoding", 0.0, ""))  # a job cancelled meanwhile ends here
        return super().chat(*args, on_event=on_event, **kwargs)

    def chat_batch(self, requests):
        self.release.wait(120)  # a job cancelled meanwhile ends at its first (encoding) event
        return super().chat_batch(requests)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_audio_bomb_is_decoded_into_the_intake_format_and_the_queue_budget_holds(make_server, tiny_model,
                                                                                   tmp_path):
    bomb = flac_bomb(tmp_path / "bomb.flac", 30)
    assert bomb.stat().st_size < 200_000
    naive = 30 * 48000 * 8 * 4  # float32 as declared: 46 MB a job
    held_model = HeldModel(tiny_model)
    srv = make_server(held_model, limits=Limits(max_queued_audio_mb=8))
    rss0 = rss_bytes()
    accepted, busy = [], []
    with Client(srv.endpoint, timeout_s=60) as c:
        for _ in range(6):
            r = submit(c, kind="ask", inputs={"audio": c.upload(bomb)})
            (accepted if r.op == "accepted" else busy).append(r)
        held = srv.app.handlers.held_audio_bytes()
        rss1 = rss_bytes()
        for r in accepted:
            c.call("cancel", job=r.job)
        held_model.release.set()
    per_job = 30 * 32000 * 1 * 2  # 8 channels -> mono, 48 -> 32 kHz, 16 bit: 1.9 MB
    assert len(accepted) == (8 * 2**20) // per_job == 4 and len(busy) == 2  # the budget: 4 fit in 8 MiB
    assert held == per_job * len(accepted)
    assert rss1 - rss0 < naive * len(accepted)  # the process grew less than decoding as declared would hold
    assert all(b.header["code"] == "busy" for b in busy)


def test_audio_budget_refuses_with_busy(make_server, tiny_model, tmp_path):
    clip = tmp_path / "ten.wav"
    sf.write(clip, tone(10.0, 32000, 2).T, 32000)  # 10 s stereo at 32 kHz, 16 bit: 1.28 MB held
    srv = make_server(SlowModel(tiny_model, step_s=0.5), limits=Limits(max_queued_audio_mb=2))
    with Client(srv.endpoint, timeout_s=60) as c:
        first = submit(c, kind="ask", inputs={"audio": c.upload(clip)})
        second = submit(c, kind="ask", inputs={"audio": c.upload(clip)})
        assert first.op == "accepted"
        assert second.op == "error" and second.header["code"] == "busy" and "MiB of decoded audio" in second.header["message"]
        c.call("cancel", job=first.job)
        wait_final(c, first.job)
        third = submit(c, kind="ask", inputs={"audio": c.upload(clip)})  # released again
        assert third.op == "accepted"
        c.call("cancel", job=third.job)


def test_decode_memory_is_bounded_by_the_output_format(tmp_path):
    bomb = flac_bomb(tmp_path / "b.flac", 20)
    wave_, sr = media.decode_audio(bomb, sample_rate=24000, max_channels=1, dtype="int16")
    assert (wave_.shape, wave_.dtype, sr) == ((1, 20 * 24000), np.int16, 24000)
    with pytest.raises(media.MediaError, match="limit is 10 s"):
        media.decode_audio(bomb, max_seconds=10.0)


def test_absurd_audio_header_is_refused_at_submit(server, tmp_path):
    good = wav_bytes()
    bad = bytearray(good)
    bad[24:28] = (2**31 - 1).to_bytes(4, "little")  # sample rate field of the fmt chunk
    with Client(server) as c:
        r = c.call("submit", [bytes(bad)], kind="ask", params={"prompt": "x"},
                   inputs={"audio": {"frame": 1, "name": "x.wav"}})
    assert r.op == "error" and r.header["code"] == "bad_audio"


def test_image_bomb_is_a_clear_bad_image(server, tmp_path):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("1", (20000, 20000)).save(big)  # 400 Mpixels, a few hundred KB
    with Client(server) as c:
        r = submit(c, inputs={"image": c.upload(big)})
    assert r.op == "error" and r.header["code"] == "bad_image"
    assert "too large" in r.header["message"] and "400000000 pixels" in r.header["message"]


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100, "one_frame"])
def test_unusable_video_is_refused_at_submit(server, tmp_path, content):
    path = tmp_path / "clip.mp4"
    if content == "one_frame":
        import av

        with av.open(str(path), "w") as out:
            st = out.add_stream("mpeg4", rate=10)
            st.width = st.height = 32
            st.pix_fmt = "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in st.encode(frame):
                out.mux(packet)
            for packet in st.encode():
                out.mux(packet)
    else:
        path.write_bytes(content)
    with Client(server) as c:
        r = submit(c, inputs={"video": c.upload(path) if content != b"" else {"frame": 1, "name": "clip.mp4"}},
                   frames=[b""] if content == b"" else [])
    assert r.op == "error" and r.header["code"] == "bad_video", r.header


# ---------------------------------------------------------------------------------------------
# 4. text that breaks other clients; malformed frames


def test_lone_surrogate_is_refused_and_jobs_still_prints(server_info, monkeypatch):
    reply = raw_call(server_info.endpoint, b'{"v":1,"op":"submit","req":"r1","kind":"generate",'
                                           b'"params":{"prompt":"\\ud800 hi"}}')
    assert reply["code"] == "bad_request" and reply["req"] == "r1" and "surrogate" in reply["message"]
    p = subprocess.run([sys.executable, "-m", "server.cli", "jobs", "--server", server_info.endpoint],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1]) == {"op": "exit", "code": 0}


def test_print_line_survives_what_a_terminal_cannot_encode():
    from server.cli.common import print_line

    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    print_line({"text": "caf\u00e9 \ud800"}, out)  # a record an older server may have stored
    out.flush()
    assert json.loads(out.buffer.getvalue().decode("ascii")) == {"text": "caf\u00e9 \ud800"}


@pytest.mark.parametrize("raw,code", [
    (b'{"v":1,"op":"ping","req":"r2","x":"caf\xe9"}', "bad_json"),  # a Latin-1 byte
    (b'{"v":1,"op":"ping","req":"r3","x":' + b"[" * 30000 + b"]" * 30000 + b"}", "bad_json"),
    (b'{"v":1,"op":"ping","req":"r4","x":' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}", "bad_request"),
])
def test_malformed_headers_are_answered_with_their_req(server, raw, code):
    reply = raw_call(server, raw)
    assert reply["op"] == "error" and reply["code"] == code and reply["req"] == raw.split(b'"req":"')[1][:2].decode()


def test_oversized_header_carries_req_so_the_client_sees_the_error(server):
    with Client(server, timeout_s=5) as c:
        r = submit(c, params={"prompt": "p" * 200_000})
    assert r.op == "error" and r.header["code"] == "bad_request" and "limit is 65536" in r.header["message"]


# ---------------------------------------------------------------------------------------------
# CLI: clear usage errors instead of tracebacks or timeouts


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_cli_refuses_nan_and_huge_prompts_before_sending(tmp_path):
    p = run_cli("generate", "--prompt", "x", "--duration", "nan", "--server", "tcp://127.0.0.1:9")
    assert p.returncode == 2 and "finite" in p.stderr and "Traceback" not in p.stderr
    status = tmp_path / "s.json"
    p = run_cli("generate", "--prompt", "p" * 100_000, "--server", "tcp://127.0.0.1:9", "--status-file", str(status))
    assert p.returncode == 2 and "--prompt" in p.stderr and "limit is 4000" in p.stderr
    assert json.loads(status.read_text())["error"]["code"] == "usage"  # not 'is the server running?'


def test_serve_curve_without_keys_fails_before_loading_the_model(tmp_path):
    env = {"M2UGEN_CONFIG_DIR": str(tmp_path / "cfg"), "M2UGEN_DATA_DIR": str(tmp_path / "data")}
    p = run_cli("serve", "--curve", "--keys-dir", str(tmp_path / "none"), "--port", "0", "--preset", "tiny", env=env)
    assert p.returncode == 2 and "no CURVE server key" in p.stderr
    assert "attention gates" not in p.stderr  # the model load logs its gates: it never started
    p = run_cli("serve", "--osc", "--osc-host", "0.0.0.0", "--port", "0", "--preset", "tiny", env=env)
    assert p.returncode == 2 and "--allow-remote-osc" in p.stderr and "attention gates" not in p.stderr


def test_a_send_with_no_connected_peer_does_not_block():
    """With no connection to send on (a refused handshake, a peer that is not there yet), ZeroMQ blocks a
    DEALER's send; the client's timeout must apply to it as to the reply."""
    from server.client import ServerUnavailable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    c = Client(endpoint, timeout_s=0.5, server_public_key=False)
    c.socket.disconnect(endpoint)
    c.socket.setsockopt(zmq.IMMEDIATE, 1)  # queue only on a completed connection: there is none
    c.socket.connect(endpoint)
    outcome = []

    def ping():
        try:
            c.call("ping")
        except ServerUnavailable as e:
            outcome.append(str(e))

    t = threading.Thread(target=ping, daemon=True)
    t.start()
    t.join(60)  # a guard against a hang, not a measurement
    try:
        assert not t.is_alive(), "send() blocked"
        assert outcome and "could not send 'ping'" in outcome[0], outcome
    finally:
        if not t.is_alive():
            c.close()


def test_curve_refusal_says_refused_not_unreachable(make_server, tmp_path):
    keys = tmp_path / "keys"
    paths = security.create_keys(keys)
    srv = make_server(curve=True, keys_dir=keys)
    from server.client import ServerRefused, ServerUnavailable

    stranger = zmq.curve_keypair()
    with Client(srv.endpoint, server_public_key=security.load_public_key(paths["server_public"]),
                client_keys=stranger, timeout_s=2) as c:
        # the refusal is an event of the connection: wait for it (a loaded machine may need several tries);
        # no try may hang, even when the refused connection leaves the socket with no peer to send to
        end = time.monotonic() + 120
        while True:
            try:
                c.call("ping")
            except ServerRefused as e:
                assert re.search("refused .*wrong or unknown key", str(e)), e
                break
            except ServerUnavailable:
                assert time.monotonic() < end, "the refusal never came"
                continue
            raise AssertionError("a stranger's key got an answer")


# ---------------------------------------------------------------------------------------------
# kill -9 mid-write: temp files cleaned at start


def test_temp_files_of_an_interrupted_write_are_removed_at_start(tmp_path, tiny_model):
    from server.app import ServerApp, ServerSettings, model_info

    data, outdir = tmp_path / "data", tmp_path / "mine"
    job_dir = data / "jobs" / "abc123"
    job_dir.mkdir(parents=True)
    outdir.mkdir()
    (data / "uploads" / "partial").mkdir(parents=True)
    left = [job_dir / ".result.wav.k3j4h5g6.tmp", data / "uploads" / "partial" / "ab-cd.part"]
    keep = [outdir / ".take.wav.0123456789ab.tmp", job_dir / "result.wav.tmp", job_dir / "input_image.png"]
    for p in left + keep:
        p.write_bytes(b"x" * 1000)
    app = ServerApp(tiny_model, model_info(tiny_model, "tiny"),
                    ServerSettings(port=0, data_dir=data, write_discovery=False, keep_days=0))
    app.start()
    app.stop()
    assert [p.exists() for p in left] == [False, False]
    assert all(p.exists() for p in keep)  # only its own temp names, only in its own data dir


# ---------------------------------------------------------------------------------------------
# 5. the OSC bridge under CURVE, and its supervision


def test_osc_bridge_answers_ping_under_curve_with_a_custom_keys_dir(tmp_path):
    from pythonosc.osc_message_builder import OscMessageBuilder
    import socket as so

    keys = tmp_path / "K"
    security.create_keys(keys)
    env = {**os.environ, "M2UGEN_CONFIG_DIR": str(tmp_path / "cfg"), "M2UGEN_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--curve", "--keys-dir", str(keys),
                             "--osc", "--osc-port", "0", "--port", "0", "--preset", "tiny"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        info_path = tmp_path / "cfg" / "server.json"
        end = time.monotonic() + 120
        while time.monotonic() < end and not (info_path.exists() and json.loads(info_path.read_text()).get("osc")):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        osc = json.loads(info_path.read_text())["osc"]
        udp = so.socket(so.AF_INET, so.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(1.0)
        b = OscMessageBuilder("/m2u/ping")
        b.add_arg(udp.getsockname()[1])
        got = []
        end = time.monotonic() + 30
        while time.monotonic() < end and not any(b"/m2u/pong" in g for g in got):
            udp.sendto(b.build().dgram, (osc["host"], osc["port"]))
            try:
                got.append(udp.recv(65536))
            except so.timeout:
                pass
        assert any(b"/m2u/pong" in g and b"up" in g for g in got), got  # the bridge reaches the CURVE server
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_a_dying_bridge_is_restarted_and_never_stops_the_server(monkeypatch):
    from bridge_osc import bridge as bridge_mod
    from server.cli import serve

    deaths = []

    def dying_serve(self):
        deaths.append(1)
        self.close()
        raise RuntimeError("boom")

    monkeypatch.setattr(bridge_mod.Bridge, "serve", dying_serve)
    sup = serve.SupervisedBridge("tcp://127.0.0.1:9", "127.0.0.1", 0, allow_remote=False,
                                 client_factory=lambda ep: Client(ep, server_public_key=False))
    now = 1000.0  # a clock of the test's own: the back-off is checked without waiting for it
    sup.thread.join(5)
    sup.bridge.router.hello_ports[("127.0.0.1", 5000)] = 9400  # a client's /m2u/hello before the death
    for _ in range(serve.BRIDGE_RESTARTS):  # quick restarts
        sup.thread.join(5)
        assert sup.check(now) is True
        assert sup.bridge.router.hello_ports == {("127.0.0.1", 5000): 9400}  # kept by every restart
    assert len(deaths) == serve.BRIDGE_RESTARTS + 1 or sup.thread.is_alive()
    sup.thread.join(5)
    assert sup.check(now) is True and len(deaths) == serve.BRIDGE_RESTARTS + 1  # now it waits (1 s) ...
    assert sup.check(now + 0.5) is True and len(deaths) == serve.BRIDGE_RESTARTS + 1
    assert sup.check(now + 1.0) is True  # ... then tries again
    sup.thread.join(5)
    assert len(deaths) == serve.BRIDGE_RESTARTS + 2 and "boom" in str(sup.error)
    assert sup.check(now + 1.0) is True and sup.next_try == now + 3.0  # the next wait is longer (2 s)
    sup.stop()


def test_hostile_datagrams_do_not_stop_a_supervised_bridge():
    """Four datagrams nested past the JSON parser's limit used to kill the bridge thread four times, and the
    fourth death stopped `m2ugen serve` (exit 4)."""
    from server.cli import serve
    from test_osc_fake_server import OscPeer

    sup = serve.SupervisedBridge("tcp://127.0.0.1:9", "127.0.0.1", 0, allow_remote=False,
                                 client_factory=lambda ep: Client(ep, server_public_key=False))
    peer = OscPeer(sup.port)
    try:
        deep = "[" * 1100 + "]" * 1100
        peer.send("/m2u/hello", ("i", peer.port))  # an unparsable request is answered on the declared port
        for _ in range(serve.BRIDGE_RESTARTS + 1):
            peer.send("/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "x"), ("s", "midi_notes"),
                      ("s", deep), ("s", "reply_port"), ("i", peer.port))
            assert peer.expect("/m2u/error", timeout=60)[-1].args[1] == "bad_args"  # 60 s: a guard, not a bound
        peer.send("/m2u/ping", ("i", peer.port))
        assert peer.expect("/m2u/pong", timeout=60)[-1].address == "/m2u/pong"
        assert sup.thread.is_alive() and sup.failures == [] and sup.check() is True
    finally:
        peer.close()
        sup.stop()
