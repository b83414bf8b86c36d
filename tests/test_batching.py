"""Issue 15, item 1: batched jobs. A row's result does not depend on its neighbours (batched == serial for
the same seeds, greedy and sampled, mixed lengths and modes); a cancel or a failure ends that row only; the
server runs compatible queued jobs together up to --max-batch rows."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import SlowModel, tone
from m2ugen import M2UGen, M2UGenConfig
from m2ugen.model import ChatRequest, Event
from server.client import Client
from server.handlers import Limits

SR = 22050


@pytest.fixture(scope="module")
def model():
    return M2UGen.from_config(M2UGenConfig.preset("tiny"))


def requests(**extra):
    """Four different rows: text only, music of two lengths, one greedy, one hearing a source."""
    return [
        ChatRequest("Describe this music.", audio=(tone(1.0, SR, 1)[0], SR), want_audio=False, max_new_tokens=6,
                    seed=1, **extra),
        ChatRequest("Make a calm piano piece", want_audio=True, duration_s=0.3, max_new_tokens=4, seed=2, **extra),
        ChatRequest("Fast drums please, very loud", want_audio=True, duration_s=0.5, max_new_tokens=9,
                    temperature=0.0, seed=3, **extra),
        ChatRequest("Continue it", audio=(tone(1.0, SR, 1, 330.0)[0], SR), mode="continue", duration_s=0.2,
                    max_new_tokens=3, seed=4, **extra),
    ]


def solo(model, req: ChatRequest):
    kw = {k: v for k, v in vars(req).items() if k != "prompt"}
    return model.chat(req.prompt, **kw)


def assert_same(a, b):
    assert a.raw_text == b.raw_text and a.seed == b.seed
    if a.audio is None:
        assert b.audio is None
    else:
        assert a.audio.shape == b.audio.shape
        np.testing.assert_allclose(a.audio, b.audio, atol=1e-5)


def test_a_batch_gives_each_row_what_it_gives_alone(model):
    batch = model.chat_batch(requests())
    alone = [solo(model, r) for r in requests()]
    for b, s in zip(batch, alone):
        assert not isinstance(b, BaseException), b
        assert_same(b, s)
    assert batch[0].audio is None and batch[1].audio.shape[1] != batch[2].audio.shape[1]  # mixed lengths
    # the rows really differ (so equality above is not two copies of one row)
    assert len({r.raw_text for r in batch}) == 4


def test_a_cancelled_or_failing_row_ends_alone(model):
    class Cancel(Exception):
        pass

    def cancel_when_thinking(ev: Event):
        if ev.stage == "thinking":
            raise Cancel()

    rows = requests()
    rows[1].on_event = cancel_when_thinking
    rows[2].duration_s = -1.0  # refused by the row's own checks
    out = model.chat_batch(rows)
    assert isinstance(out[1], Cancel)
    assert isinstance(out[2], ValueError) and "duration" in str(out[2])
    for i in (0, 3):
        assert_same(out[i], solo(model, requests()[i]))


class CountingModel(SlowModel):
    """The tiny model, slowed down, recording the rows of every chat_batch call; the first call waits for
    ``release`` so that the tests can queue jobs behind it."""

    def __init__(self, model):
        super().__init__(model, 0.01)
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def chat_batch(self, reqs):
        self.batches.append([r.prompt for r in reqs])
        if len(self.batches) == 1:
            self.release.wait(60)
        return super().chat_batch(reqs)


def submit(c: Client, prompt: str, seed: int, takes: int = 1) -> str:
    r = c.call("submit", kind="generate", params={"prompt": prompt, "seed": seed, "duration": 0.5,
                                                   "max_new_tokens": 4, "takes": takes, "normalize": False})
    assert r.op == "accepted", r.header
    return r.job


def wait_all(c: Client, jobs: list[str], timeout_s: float = 240) -> dict[str, dict]:
    ends: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(ends) < len(jobs) and time.monotonic() < deadline:
        m = c.recv(timeout_s=1.0)
        if m is not None and m.job in jobs and m.op in ("done", "error", "cancelled"):
            ends[m.job] = m.header
    assert len(ends) == len(jobs), f"unfinished: {set(jobs) - set(ends)}"
    return ends


def run_jobs(make_server, model, max_batch: int, cancel_second: bool = False):
    counting = CountingModel(model)
    srv = make_server(counting, limits=Limits(max_batch=max_batch))
    with Client(srv.endpoint, timeout_s=30) as c:
        first = submit(c, "warm up", 9)
        while not counting.batches:
            time.sleep(0.01)
        jobs = [submit(c, "soft strings", 5), submit(c, "loud drums", 6, takes=2), submit(c, "jazz trio", 7)]
        if cancel_second:
            counting.release.set()
            while len(counting.batches) < 2:
                time.sleep(0.01)
            assert c.call("cancel", job=jobs[0]).op == "cancelling"
        counting.release.set()
        ends = wait_all(c, [first] + jobs)
    return counting.batches, jobs, ends


def test_the_server_runs_queued_jobs_together_and_each_gets_its_own_result(make_server, model):
    batches, jobs, ends = run_jobs(make_server, model, max_batch=4)
    assert batches[0] == ["warm up"]
    assert batches[1] == ["soft strings", "loud drums", "loud drums", "jazz trio"]  # 4 rows: takes count
    serial_batches, serial_jobs, serial_ends = run_jobs(make_server, model, max_batch=1)
    assert all(len(b) <= 2 for b in serial_batches) and len(serial_batches) == 4  # one job (its takes) a call
    for a, b in zip(jobs, serial_jobs):
        x, y = ends[a], serial_ends[b]
        assert x["op"] == y["op"] == "done"
        assert x["text"] == y["text"] and len(x["takes"]) == len(y["takes"])
        for tx, ty in zip(x["takes"], y["takes"]):
            np.testing.assert_allclose(sf.read(tx["audio_path"])[0], sf.read(ty["audio_path"])[0], atol=1e-4)
    texts = {ends[j]["text"] for j in jobs}
    assert len(texts) == 3  # three different jobs, not one result copied


def test_cancelling_one_job_of_a_batch_leaves_the_others(make_server, model):
    batches, jobs, ends = run_jobs(make_server, model, max_batch=4, cancel_second=True)
    assert len(batches[1]) == 4
    assert ends[jobs[0]]["op"] == "cancelled"
    assert ends[jobs[1]]["op"] == ends[jobs[2]]["op"] == "done"
    assert len(ends[jobs[1]]["takes"]) == 2


def test_serving_device_and_dtype_reach_every_part():
    import torch

    from server.app import load_model, resolve_device

    assert resolve_device("auto", "auto") == (("cuda", "bfloat16") if torch.cuda.is_available() else ("cpu", "float32"))
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0", "auto")
    with pytest.raises(ValueError, match="--dtype"):
        resolve_device("cpu", "int8")
    bf16, info = load_model("tiny", device="cpu", dtype="bfloat16")
    assert info["dtype"] == "bfloat16" and info["device"] == "cpu"
    reply = bf16.chat("calm piano", audio=(tone(1.0, SR, 1)[0], SR), want_audio=True, duration_s=0.3, seed=1,
                      max_new_tokens=3)
    assert reply.audio.dtype == np.float32 and np.isfinite(reply.audio).all() and np.abs(reply.audio).max() > 0
    for part in (bf16.llama, bf16.decoder.model, bf16.music_encoder.model):
        assert next(part.parameters()).dtype == torch.bfloat16
    assert bf16.output_projector.fc.weight.dtype == torch.float32  # as official
    int8, info = load_model("tiny", device="cpu", int8=True)
    from m2ugen.quant import llama_is_int8

    assert info["int8"] and llama_is_int8(int8.llama)
    assert int8.chat("calm piano", want_audio=False, seed=1, max_new_tokens=3).raw_text


def test_a_job_that_cannot_be_planned_fails_alone_in_its_batch(make_server, model, monkeypatch):
    from server.kinds import chat

    original = chat.plan

    def plan(worker, job):
        if job.params["prompt"] == "loud drums":
            raise ValueError("this job's options cannot be served")
        return original(worker, job)

    monkeypatch.setattr(chat, "plan", plan)
    batches, jobs, ends = run_jobs(make_server, model, max_batch=4)
    assert batches[1] == ["soft strings", "jazz trio"]  # the failed job's rows never reached the model
    assert ends[jobs[1]]["op"] == "error" and "cannot be served" in ends[jobs[1]]["message"]
    assert ends[jobs[0]]["op"] == ends[jobs[2]]["op"] == "done"


# --- issue 25: continuous batching (the default): queued jobs join the running engine at a step boundary
class GatedEngine:
    """The real engine; its first ``gates`` steps each wait for the test (``release[i]``), after telling it
    (``entered[i]``), so the test can queue or cancel jobs at a known step boundary without timing."""

    def __init__(self, engine, gates: int):
        self._engine = engine
        self.entered = [threading.Event() for _ in range(gates)]
        self.release = [threading.Event() for _ in range(gates)]
        self.calls = 0
        self.most_rows = 0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def step(self):
        i, self.calls = self.calls, self.calls + 1
        self.most_rows = max(self.most_rows, self._engine.rows)
        if i < len(self.entered):
            self.entered[i].set()
            assert self.release[i].wait(120)
        return self._engine.step()


class Made(list):
    """The engines the worker made; ``first()`` waits for the first."""

    def __init__(self):
        super().__init__()
        self.event = threading.Event()

    def first(self) -> GatedEngine:
        assert self.event.wait(120)
        return self[0]


@pytest.fixture
def gated(monkeypatch):
    made = Made()
    original = M2UGen.engine

    def engine(self, *args, **kwargs):
        made.append(GatedEngine(original(self, *args, **kwargs), gates=2))
        made.event.set()
        return made[-1]

    monkeypatch.setattr(M2UGen, "engine", engine)
    return made


def test_continuous_jobs_join_the_running_engine_and_match_serial_jobs(make_server, model, gated):
    srv = make_server(model, limits=Limits(max_batch=4))
    with Client(srv.endpoint, timeout_s=30) as c:
        first = submit(c, "warm up", 9)
        assert gated.first().entered[0].wait(120)  # the first job is in the engine, its first step held
        jobs = [submit(c, "soft strings", 5), submit(c, "loud drums", 6, takes=2)]
        gated[0].release[0].set()
        gated[0].release[1].set()
        ends = wait_all(c, [first] + jobs)
    assert gated[0].most_rows == 4  # the queued jobs joined the running one: 1 + 1 + 2 rows at once
    serial = make_server(model, limits=Limits(max_batch=1), batching="static")
    with Client(serial.endpoint, timeout_s=30) as c:
        serial_jobs = [submit(c, "warm up", 9), submit(c, "soft strings", 5), submit(c, "loud drums", 6, takes=2)]
        serial_ends = wait_all(c, serial_jobs)
    for a, b in zip([first] + jobs, serial_jobs):
        x, y = ends[a], serial_ends[b]
        assert x["op"] == y["op"] == "done"
        assert x["text"] == y["text"] and len(x["takes"]) == len(y["takes"])
        for tx, ty in zip(x["takes"], y["takes"]):
            np.testing.assert_array_equal(sf.read(tx["audio_path"])[0], sf.read(ty["audio_path"])[0])
    timings = __import__("json").loads(open(ends[jobs[0]]["sidecar_path"]).read())["timings"]
    assert timings.keys() >= {"queue_wait", "analysis", "plan", "encoding", "thinking", "generating", "vocoder",
                              "chat", "write", "result_analysis", "total"}


def test_cancelling_one_running_job_leaves_the_others_in_the_engine(make_server, model, gated):
    srv = make_server(model, limits=Limits(max_batch=4))
    with Client(srv.endpoint, timeout_s=30) as c:
        first = submit(c, "warm up", 9)
        assert gated.first().entered[0].wait(120)
        jobs = [submit(c, "soft strings", 5), submit(c, "loud drums", 6, takes=2)]
        gated[0].release[0].set()
        assert gated[0].entered[1].wait(120)  # both joined (admitted before step 2), step 2 held
        assert c.call("cancel", job=jobs[1]).op == "cancelling"
        gated[0].release[1].set()
        ends = wait_all(c, [first] + jobs)
    assert ends[jobs[1]]["op"] == "cancelled"
    assert ends[first]["op"] == ends[jobs[0]]["op"] == "done"


def test_results_are_written_beside_the_running_decode_and_a_failing_write_ends_its_job_alone(
        make_server, model, monkeypatch):
    """Continuous: a job's last step (fit, analyse, write) runs on the finisher thread while the engine
    steps on; its events still reach the client, and a write that raises fails that job only."""
    from server.kinds import chat

    threads: dict[str, str] = {}
    original = chat.write

    def write(worker, job, plan, replies, chat_s):
        threads[job.params["prompt"]] = threading.current_thread().name
        if job.params["prompt"] == "loud drums":
            raise RuntimeError("disk on fire")
        return original(worker, job, plan, replies, chat_s)

    monkeypatch.setattr(chat, "write", write)
    srv = make_server(model, limits=Limits(max_batch=4))
    with Client(srv.endpoint, timeout_s=30) as c:
        jobs = [submit(c, "soft strings", 5), submit(c, "loud drums", 6)]
        ends = wait_all(c, jobs)
    assert all(name.startswith("m2ugen-finish") for name in threads.values()) and len(threads) == 2
    assert ends[jobs[0]]["op"] == "done" and sf.read(ends[jobs[0]]["takes"][0]["audio_path"])[0].size > 0
    assert ends[jobs[1]]["op"] == "error" and ends[jobs[1]]["code"] == "internal"
