"""The OSC bridge against a scripted fake ROUTER that speaks docs/protocol.md.

Kept beside the real-server tests (test_osc_bridge.py) for what the tiny model cannot produce on
demand: a long multi-byte text answer (chunking), streamed `text` events (thinking progress), a job
that fails, a job the server forgets across a restart, and exact control of when the server dies.
"""

import blake3
import socket
import threading
import time
from pathlib import Path

import pytest
import zmq

from bridge_osc import osc
from bridge_osc.bridge import start_in_thread
from server import protocol

LONG_TEXT = ("Ceci est une réponse très détaillée 🎵 — " * 80).strip()  # ~3.6 KB, 2- and 4-byte chars


ANALYSIS = {"duration_s": 8.0, "channels": 2, "sample_rate": 44100, "bpm": 92.0, "beats": [0.1, 0.75],
            "downbeats": [0.1], "meter": 4, "key": "F#", "mode": "minor", "key_name": "F# minor",
            "key_confidence": 0.8, "lufs": -14.0, "true_peak_dbtp": -1.2, "peak_dbfs": -1.5,
            "bpm_confidence": 0.97, "bpm_alternative": None}


def wav_bytes(job: str, take: int) -> bytes:
    """What the fake server sends as a take's WAV: recognisable per job and take."""
    return b"RIFF\x00\x00\x00\x00WAVE" + f"{job}:take{take}".encode() + b"\x00" * 64


def uploaded(path, **extra) -> dict:
    """The input reference the bridge sends for a local file it uploaded to the fake (it sent the bytes: no
    proof needed)."""
    data = Path(path).read_bytes()
    return {"blob": blake3.blake3(data).hexdigest(), "name": Path(path).name, **extra}


class FakeServer:
    """A ROUTER on 127.0.0.1 answering ping/hello/submit/status/cancel/subscribe from a script."""

    def __init__(self, port: int | None = None, forget_jobs: bool = False, knows_take: bool = True):
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if port is None:
            port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        else:
            deadline = time.monotonic() + 5
            while True:  # the previous server's port may take a moment to free
                try:
                    self.sock.bind(f"tcp://127.0.0.1:{port}")
                    break
                except zmq.ZMQError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.port = port
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.forget_jobs = forget_jobs
        self.knows_take = knows_take  # `result` with `take: n` (1..N) sends take n, as the server does
        self.make_wav = wav_bytes  # (job, take index from 0) -> the bytes `result` sends
        self.refuse_offsets: set[int] = set()  # `result` at these offsets: error/not_found (a file gone midway)
        self.records: dict[str, dict] = {}  # job -> its done record
        self.requests: list[dict] = []
        self.frames: list[list[bytes]] = []  # the binary frames of each request, index-aligned
        self.held: dict[str, bytes] = {}  # job -> identity of jobs waiting for a cancel
        self.uploads: dict[str, bytes] = {}  # blake3 -> the bytes uploaded (op upload, as the server keeps them)
        self._partial: dict[str, dict] = {}  # upload id -> its size, offered blake3 and bytes so far
        self._count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def _send(self, identity, header):
        self.sock.send_multipart([identity, *protocol.encode({"v": 1, **header})])

    def _run(self):
        while not self._stop.is_set():
            if not self.sock.poll(20):
                continue
            identity, *frames = self.sock.recv_multipart()
            header, rest = protocol.decode(frames)
            self.requests.append(header)
            self.frames.append(rest)
            self._answer(identity, header)
        self.sock.close(0)

    def _answer(self, identity, h):
        op, req = h["op"], h.get("req")
        if op == "ping":
            self._send(identity, {"op": "pong", "req": req, "server_version": "fake", "time": time.time()})
        elif op == "hello":
            self._send(identity, {"op": "welcome", "req": req, "server_version": "fake-1", "protocol": 1,
                                  "model": {"name": "fake", "preset": "tiny", "tiny": True, "sample_rate": 32000}})
        elif op == "upload":  # as server/blobs.py: an offer or a begin, then chunks in order; the uploader is granted
            reply = {"op": "uploaded", "req": req, "challenge": "c" * 32, "chunk_bytes": 1 << 20}
            if "offset" in h:
                up = self._partial[h["upload"]]
                up["data"] += self.frames[-1][0]
                reply.update(upload=h["upload"], size=up["size"], offset=len(up["data"]), have=False)
                if len(up["data"]) == up["size"]:
                    sha = blake3.blake3(up["data"]).hexdigest()
                    assert up["sha"] in (None, sha)
                    self.uploads[sha] = self._partial.pop(h["upload"])["data"]
                    reply.update(blake3=sha, have=True, granted=True)
            elif h.get("blake3") in self.uploads:
                reply.update(blake3=h["blake3"], size=h["size"], offset=h["size"], have=True, granted=True)
            else:
                upload = f"up{len(self._partial) + len(self.uploads)}"
                self._partial[upload] = {"size": h["size"], "sha": h.get("blake3"), "data": b""}
                reply.update(upload=upload, size=h["size"], offset=0, have=False, granted=False)
            self._send(identity, reply)
        elif op == "submit":
            self._count += 1
            job = f"job{self._count}"
            prompt = h["params"]["prompt"]
            self._send(identity, {"op": "accepted", "req": req, "job": job, "queue_position": 0})
            if prompt == "hold":
                self.held[job] = identity
                return
            self._send(identity, {"op": "progress", "job": job, "stage": "encoding", "fraction": 0.1})
            if prompt == "fail":
                self._send(identity, {"op": "error", "job": job, "code": "job_failed", "message": "boom"})
                return
            self._send(identity, {"op": "progress", "job": job, "stage": "thinking", "fraction": 0.3})
            self._send(identity, {"op": "text", "job": job, "text": "Ceci", "delta": "Ceci"})
            self._send(identity, {"op": "text", "job": job, "text": "Ceci est", "delta": " est"})
            path = "" if h["kind"] == "ask" else f"/tmp/fake/{job}/result.wav"
            record = {"job": job, "kind": h["kind"], "state": "done", "text": LONG_TEXT, "audio_path": path,
                      "duration": 4.0 if path else None, "sample_rate": 32000 if path else None, "channels": 1,
                      "params": h["params"], "created": 1_800_000_000.0, "seed": 11}
            takes = h["params"].get("takes", 1)
            if takes > 1:
                record["takes"] = [{"audio_path": f"/tmp/fake/{job}/take{i + 1}.wav", "seed": 11 + i}
                                   for i in range(takes)]
            if h["params"].get("mode") == "continue":  # the next server's analysis of input and result
                record["analysis"] = dict(ANALYSIS, summary="92 BPM, F# minor, -14.0 LUFS, 8.0 s")
                record["result_analysis"] = dict(ANALYSIS, bpm=None, summary="4.0 s")
            self.records[job] = record
            self._send(identity, {"op": "done", **record})
        elif op == "cancel":
            identity_of_job = self.held.pop(h["job"], None)
            self._send(identity, {"op": "cancelling", "req": req, "job": h["job"], "state": "running"})
            if identity_of_job is not None:
                self._send(identity_of_job, {"op": "cancelled", "job": h["job"]})
        elif op == "status" and h["job"] in self.records:
            self._send(identity, {"op": "job", "req": req, **self.records[h["job"]]})
        elif op == "status":
            self._send(identity, {"op": "job", "req": req, "job": h["job"], "state": "running",
                                  "fraction": 0.25, "stage": "generating", "queue_position": 0})
        elif op == "result":
            record = self.records.get(h["job"])
            if record is None:
                self._send(identity, {"op": "error", "req": req, "code": "not_found", "message": f"no job {h['job']}"})
                return
            reply, frames = {"op": "result", "req": req, **record}, []
            take = h.get("take", 1) if self.knows_take else 1  # the protocol counts takes from 1
            if h.get("want") == "bytes" and record["audio_path"]:
                if h.get("offset") in self.refuse_offsets:
                    self._send(identity, {"op": "error", "req": req, "code": "not_found",
                                          "message": f"the result file of job {h['job']} is gone"})
                    return
                data = self.make_wav(record["job"], take - 1)
                reply["audio"] = {"frame": 1, "size": len(data)}
                if "offset" in h:  # one chunk from there (docs/protocol.md §2, `result`), the server's chunk size
                    data = data[h["offset"]:h["offset"] + protocol.RESULT_CHUNK_BYTES]
                    reply["audio"]["offset"] = h["offset"]
                frames = [data]
                if self.knows_take and "take" in h:
                    reply["take"] = take
            self.sock.send_multipart([identity, *protocol.encode({"v": 1, **reply}, frames)])
        elif op == "jobs":
            records = list(reversed(self.records.values()))[: h.get("limit", 50)]
            self._send(identity, {"op": "jobs", "req": req, "jobs": records})
        elif op == "subscribe":
            if self.forget_jobs:
                self._send(identity, {"op": "error", "req": req, "code": "not_found",
                                      "message": f"no job {h['job']}"})
            else:
                self._send(identity, {"op": "subscribed", "req": req, "job": h["job"], "state": "failed",
                                      "error": {"code": "interrupted", "message": "the server stopped"}})


class OscPeer:
    """A UDP socket that sends to the bridge and receives its replies on its own port."""

    def __init__(self, bridge_port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.bridge = ("127.0.0.1", bridge_port)

    def send(self, address, *args):
        self.sock.sendto(osc.encode(address, *args), self.bridge)

    def send_raw(self, dgram):
        self.sock.sendto(dgram, self.bridge)

    def expect(self, address, timeout=5.0):
        """Messages received until (and including) the first one at `address`."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {address} within {timeout} s; got {[(m.address, m.args) for m in got]}")
            self.sock.settimeout(left)
            try:
                dgram = self.sock.recv(65536)
            except socket.timeout:
                continue
            m = osc.decode(dgram)[0]
            got.append(m)
            if m.address == address:
                return got

    def expect_any(self, addresses, timeout=5.0):
        """The first message received at one of `addresses` (others before it are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._next(deadline)
            if got.address in addresses:
                return got

    def _next(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no message within the time left")
        self.sock.settimeout(left)
        try:
            return osc.decode(self.sock.recv(65536))[0]
        except socket.timeout:
            raise AssertionError("no message in time") from None

    def drain(self, quiet=0.05):
        """Every message received until none has come for `quiet` seconds."""
        got = []
        self.sock.settimeout(quiet)
        try:
            while True:
                got.append(osc.decode(self.sock.recv(65536))[0])
        except socket.timeout:
            return got

    def close(self):
        self.sock.close()


@pytest.fixture
def fake():
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture
def bridge(fake):
    handle = start_in_thread(fake.endpoint, port=0, ping_interval_s=0.1, ping_timeout_s=0.5)
    yield handle
    handle.stop()


@pytest.fixture
def peer(bridge):
    p = OscPeer(bridge.port)
    p.send("/m2u/hello", ("i", p.port))
    welcome = p.expect("/m2u/welcome")[-1]
    assert welcome.args[6] == p.port
    yield p
    p.close()


@pytest.fixture
def in_wav(tmp_path):
    path = tmp_path / "in.wav"
    path.write_bytes(wav_bytes("input", 0))
    return path


@pytest.mark.timeout(30)
def test_long_text_is_chunked_and_thinking_streams_as_progress(peer, fake, in_wav):
    peer.send("/m2u/ask", ("s", "what"), ("s", "is"), ("s", "this"), ("s", str(in_wav)), ("f", 1.0), ("f", 2.0))
    got = peer.expect("/m2u/done")
    addresses = [m.address for m in got]
    assert addresses[0] == "/m2u/accepted"
    thinking = [m for m in got if m.address == "/m2u/progress" and m.args[2] == "thinking"]
    # the server's progress(thinking, 0.3) then two text events at once: repeats within 0.25 s dropped
    assert [m.args[1] for m in thinking] == [pytest.approx(0.3)]
    chunks = [m for m in got if m.address == "/m2u/text"]
    assert len(chunks) == len(osc.utf8_chunks(LONG_TEXT, 1000)) >= 4
    assert [m.args[1] for m in chunks] == list(range(len(chunks)))
    assert {m.args[2] for m in chunks} == {len(chunks)}
    assert all(len(m.args[3].encode()) <= 1000 for m in chunks)
    assert "".join(m.args[3] for m in chunks) == LONG_TEXT
    done = got[-1]
    assert done.tags == "ssfi" and done.args[1:] == ["", 0.0, 0]
    submit = [h for h in fake.requests if h["op"] == "submit"][-1]
    assert submit["kind"] == "ask"
    assert submit["params"]["prompt"] == "what is this"
    assert submit["inputs"] == {"audio": uploaded(in_wav, start=1.0, end=2.0)}  # read by the bridge, sent as bytes
    assert fake.uploads[submit["inputs"]["audio"]["blob"]] == in_wav.read_bytes()


@pytest.mark.timeout(30)
def test_text_events_alone_stream_thinking_progress(fake):
    handle = start_in_thread(fake.endpoint, port=0, ping_interval_s=0.1, progress_repeat_s=0.0)
    peer = OscPeer(handle.port)
    try:
        peer.send("/m2u/generate", ("s", "lofi"), ("f", 0.0), ("i", peer.port))
        got = peer.expect("/m2u/done")
        thinking = [m for m in got if m.address == "/m2u/progress" and m.args[2] == "thinking"]
        assert len(thinking) == 3  # the stage change + one per streamed text event
    finally:
        peer.close()
        handle.stop()


@pytest.mark.timeout(30)
def test_settings_last_and_failures(peer, fake):
    peer.send("/m2u/set", ("s", "bpm"), ("f", 120.0))
    assert peer.expect("/m2u/set")[-1].args == ["bpm", 120.0]
    peer.send("/m2u/set", ("s", "seed"), ("f", 7.0))
    assert peer.expect("/m2u/set")[-1].args == ["seed", 7]
    peer.send("/m2u/edit", ("s", "more drums"), ("s", "last"))  # no job yet
    assert peer.expect("/m2u/error")[-1].args[1] == "no_job"

    peer.send("/m2u/generate", ("s", "lofi"), ("f", 4.0))
    done = peer.expect("/m2u/done")[-1]
    assert done.args[1] == "/tmp/fake/job1/result.wav" and done.args[2:] == [4.0, 32000]
    submit = [h for h in fake.requests if h["op"] == "submit"][-1]
    assert submit["params"] == {"prompt": "lofi", "duration": 4.0, "seed": 7, "context": {"bpm": 120.0}}

    peer.send("/m2u/edit", ("s", "more drums"), ("s", "last"), ("f", 3.0))
    peer.expect("/m2u/done")
    submit = [h for h in fake.requests if h["op"] == "submit"][-1]
    assert submit["inputs"] == {"audio": {"job": "job1"}}  # the server's own result, named by its job
    assert submit["params"]["duration"] == 3.0

    peer.send("/m2u/generate", ("s", "fail"))
    error = peer.expect("/m2u/error")[-1]
    assert error.args == ["job3", "job_failed", "boom"]
    peer.send("/m2u/edit", ("s", "again"), ("s", "last"))  # last = the failed job: no audio
    error = peer.expect("/m2u/error")[-1]
    assert error.args[:2] == ["", "not_ready"]


@pytest.mark.timeout(30)
def test_cancel_and_status(peer, fake):
    peer.send("/m2u/generate", ("s", "hold"))
    job = peer.expect("/m2u/accepted")[-1].args[0]
    peer.send("/m2u/status", ("s", "last"))
    status = peer.expect("/m2u/status")[-1]
    assert status.tags == "ssfsi" and status.args == [job, "running", 0.25, "generating", 0]
    peer.send("/m2u/cancel", ("s", "last"))
    assert peer.expect("/m2u/cancelled")[-1].args == [job]
    assert [h["job"] for h in fake.requests if h["op"] == "cancel"] == [job]


@pytest.mark.timeout(40)
def test_server_goes_away_and_comes_back(peer, fake, bridge):
    peer.send("/m2u/generate", ("s", "hold"))
    job = peer.expect("/m2u/accepted")[-1].args[0]
    port = fake.port
    fake.stop()
    down = peer.expect("/m2u/server", timeout=5)[-1]
    assert down.args[0] == "down"
    peer.send("/m2u/generate", ("s", "lofi"))
    error = peer.expect("/m2u/error")[-1]
    assert error.args[:2] == ["", "server_unavailable"]
    peer.send("/m2u/ping")
    assert peer.expect("/m2u/pong")[-1].args[1] == "down"

    back = FakeServer(port, forget_jobs=False)
    try:
        got = peer.expect("/m2u/server", timeout=10)
        assert got[-1].args[0] == "up"
        # the job that ran when the server died is reported as interrupted
        error = peer.expect("/m2u/error", timeout=5)[-1]
        assert error.args[:2] == [job, "interrupted"]
        peer.send("/m2u/generate", ("s", "lofi"))
        assert peer.expect("/m2u/done")[-1].args[1].endswith("result.wav")
        peer.send("/m2u/hello", ("i", peer.port))
        welcome = peer.expect("/m2u/welcome")[-1]
        assert welcome.args[1:6] == ["up", "fake-1", "fake", 1, 32000]
    finally:
        back.stop()


@pytest.mark.timeout(60)
def test_fuzzed_datagrams_never_stop_the_bridge(peer, bridge, caplog, tmp_path):
    """Random bytes and randomly mutated valid requests: every datagram is answered or ignored
    cleanly (no bridge exception), and the bridge still answers /m2u/ping afterwards."""
    import random

    rng = random.Random(1234)
    valid = [
        osc.encode("/m2u/generate", ("s", "lofi"), ("f", 2.0), ("i", peer.port)),
        osc.encode("/m2u/edit", ("s", "more"), ("s", "last"), ("f", 0.0), ("f", 1.0), ("f", 2.0), ("i", peer.port)),
        osc.encode("/m2u/set", ("s", "time_signature"), ("i", 3), ("i", 4), ("i", peer.port)),
        osc.encode("/m2u/status", ("s", "last"), ("i", peer.port)),
        osc.encode("/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "lofi"), ("s", "takes"), ("i", 2),
                   ("s", "results_dir"), ("s", str(tmp_path)), ("s", "reply_port"), ("i", peer.port)),
        osc.encode("/m2u/jobs", ("i", 5), ("i", peer.port)),
        osc.encode("/m2u/result", ("s", "job1"), ("s", str(tmp_path)), ("i", peer.port)),
    ]
    garbage = 0
    got = []
    for i in range(300):
        if i % 3 == 0:
            dgram = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            if not dgram.startswith((b"/", b"#bundle")):
                garbage += 1
        else:
            dgram = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                dgram[rng.randrange(len(dgram))] = rng.randrange(256)
            dgram = bytes(dgram[: rng.randrange(1, len(dgram) + 1)] if i % 2 else dgram)
        peer.send_raw(dgram)
        if i % 10 == 9:  # UDP has no flow control: read the answers before the buffers overflow
            got += peer.drain()
    peer.send("/m2u/ping", ("i", peer.port))  # then the bridge must still answer a ping
    got += peer.expect("/m2u/pong", timeout=10)
    bad_osc = [m for m in got if m.address == "/m2u/error" and m.args[1] == "bad_osc"]
    assert len(bad_osc) >= garbage
    assert bridge.thread.is_alive()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], \
        [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
