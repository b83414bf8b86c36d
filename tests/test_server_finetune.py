"""Fine-tune jobs on the tiny server (kind ``finetune``): the adapter changes the output only when a request
selects it, survives a server restart mid-run (and ends as an uninterrupted run), cancels, yields to
interactive jobs, and lands only in the server's own data dir; bad requests are refused at submit."""

from __future__ import annotations

import copy
import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import RunningServer, run_job
from m2ugen.train import statefile, synthetic
from server.client import Client
from train_util import one_thread  # noqa: F401 (fixture)

pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = {"duration": 0.5, "max_new_tokens": 4, "seed": 1, "temperature": 0.0}
TRAIN = {"steps": 6, "save_every": 2, "seed": 3, "learning_rate": 1e-2, "clip_s": 0.5, "batch_size": 2}


@pytest.fixture(scope="module")
def base_model():
    from m2ugen import M2UGen, M2UGenConfig

    return M2UGen.from_config(M2UGenConfig.preset("tiny"))


@pytest.fixture
def clips(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    for i in range(3):
        synthetic.write_audio(d / f"take_{i}.wav", i, seconds=0.6)
    return [{"path": str(d / f"take_{i}.wav"), "caption": f"clip {i}: {synthetic.caption(i)}"} for i in range(3)]


@pytest.fixture
def start(tmp_path, monkeypatch, base_model):
    """start(data_dir_name, model=None, **settings) -> a RunningServer with its own copy of the base model
    (a restart is a new app, and a new model, on the same data dir)."""
    from server.app import ServerApp, ServerSettings, model_info

    monkeypatch.setenv("M2UGEN_CONFIG_DIR", str(tmp_path / "config"))
    apps = []

    def make(data: str, model=None, **settings) -> RunningServer:
        model = model or copy.deepcopy(base_model)
        app = ServerApp(model, model_info(model, preset="tiny"),
                        ServerSettings(host="127.0.0.1", port=0, data_dir=tmp_path / data, **settings))
        app.start()
        apps.append(app)
        return RunningServer(app.endpoint, app, tmp_path / "config", tmp_path / data)

    yield make
    for app in apps:
        app.stop()


def uploaded_set(c: Client, clips) -> list[dict]:
    """The clips as a fine-tune's audio_set: each file uploaded (sent once), its caption kept."""
    return [{**c.upload(x["path"]), **{k: v for k, v in x.items() if k != "path"}} for x in clips]


def _learn(c: Client, clips, name="mine", **params):
    return c.call("submit", kind="finetune", params={"adapter_name": name, **TRAIN, **params},
                  inputs={"audio_set": uploaded_set(c, clips)})


def _wait(c: Client, job: str, until, timeout_s=300.0) -> list[dict]:
    """Messages of ``job`` up to and including the first for which ``until(header)`` holds."""
    seen, end = [], time.monotonic() + timeout_s
    while time.monotonic() < end:
        m = c.recv(timeout_s=1.0)
        if m is not None and m.job == job:
            seen.append(m.header)
            if until(m.header):
                return seen
    raise AssertionError(f"job {job}: condition not met; saw {[h['op'] for h in seen]}")


def _final(h):
    return h["op"] in ("done", "error", "cancelled")


def _audio(c: Client, params: dict, sidecar: dict | None = None) -> np.ndarray:
    done = run_job(c, "generate", {"prompt": "a warm piano tune", **params})
    if sidecar is not None:
        sidecar.update(json.loads(open(done["sidecar_path"]).read()))
    return sf.read(done["audio_path"])[0]


def _adapter_tensors(data_dir, name="mine") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(data_dir / "adapters" / name / "adapter_model.safetensors"))


def test_a_finetune_job_makes_an_adapter_that_changes_only_the_requests_that_select_it(start, clips):
    srv = start("data")
    with Client(srv.endpoint, timeout_s=30) as c:
        assert c.call("hello").header["model"]["adapters"] == []
        before = _audio(c, QUICK)
        r = _learn(c, clips)
        assert r.op == "accepted", r.header
        events = _wait(c, r.job, _final)
        assert events[-1]["op"] == "done", events[-1]
        steps = [e for e in events if e["op"] == "progress" and e["stage"] == "training"]
        assert [e["step"] for e in steps] == list(range(1, 7)) and all(e["steps"] == 6 for e in steps)
        assert [e["fraction"] for e in steps] == [round(i / 6, 4) for i in range(1, 7)]
        assert all(np.isfinite(e["loss"]) for e in steps)
        assert "mine" in events[-1]["text"]

        assert c.call("ping").header["model"]["adapters"] == ["mine"]
        adapter_dir = srv.data_dir / "adapters" / "mine"
        info = json.loads((adapter_dir / "m2ugen_adapter.json").read_text())
        assert info["name"] == "mine" and info["steps"] == 6 and [x["caption"] for x in info["clips"]] == [x["caption"] for x in clips]
        assert not (srv.jobs_dir / r.job / "state").exists()  # the resumable state is gone once done

        side: dict = {}
        tuned = _audio(c, {**QUICK, "adapter": "mine"}, side)
        base_again = _audio(c, QUICK)
        assert not np.allclose(tuned, before)  # the adapter changes the output ...
        np.testing.assert_array_equal(base_again, before)  # ... only when selected
        assert side["params"]["adapter"] == "mine"  # recorded
    srv.app.stop()

    # the data dir's adapters are loaded at the next start, and serve --adapter NAME=DIR adds one
    srv2 = start("data", adapters=[("alias", str(adapter_dir))])
    with Client(srv2.endpoint, timeout_s=30) as c:
        assert c.call("hello").header["model"]["adapters"] == ["alias", "mine"]
        np.testing.assert_allclose(_audio(c, {**QUICK, "adapter": "alias"}), tuned, atol=1e-6)
    srv3 = start("elsewhere", adapters=[(None, str(adapter_dir))])  # serve --adapter DIR: the adapter's own name
    with Client(srv3.endpoint, timeout_s=30) as c:
        assert c.call("hello").header["model"]["adapters"] == ["mine"]


def test_a_restart_mid_run_resumes_and_ends_as_an_uninterrupted_run(start, clips):
    whole = start("whole")
    with Client(whole.endpoint, timeout_s=30) as c:
        r = _learn(c, clips)
        assert _wait(c, r.job, _final)[-1]["op"] == "done"
    expected = _adapter_tensors(whole.data_dir)

    first = start("cut")
    with Client(first.endpoint, timeout_s=30) as c:
        job = _learn(c, clips).job
        _wait(c, job, lambda h: h["op"] == "progress" and h.get("step") == 3)
        first.app.stop()  # mid-run: the state is saved at the next step, the job stays unfinished
    state = first.jobs_dir / job / "state" / "finetune_state.safetensors"
    assert state.is_file()
    stopped_at = statefile.load(state)["step"]
    assert 3 <= stopped_at < 6

    second = start("cut")
    with Client(second.endpoint, timeout_s=30) as c:
        sub = c.call("subscribe", job=job)
        assert sub.op == "subscribed" and sub.header["state"] in ("queued", "running"), sub.header
        events = _wait(c, job, _final) if sub.header["state"] != "done" else []
        rec = c.call("status", job=job).header
        assert rec["state"] == "done", rec
        trained = [e["step"] for e in events if e["op"] == "progress" and e.get("step")]
        assert trained and trained[0] == stopped_at + 1  # it continued, it did not start over
    got = _adapter_tensors(second.data_dir)
    assert got.keys() == expected.keys()
    worst = max(float((got[k] - expected[k]).abs().max()) for k in got)
    assert worst <= 1e-6, worst  # CPU: the resumed run repeats the uninterrupted one


def test_cancel_stops_a_finetune_and_leaves_no_adapter(start, clips):
    srv = start("data")
    model = srv.app.worker.model
    with Client(srv.endpoint, timeout_s=30) as c:
        r = _learn(c, clips, steps=5000)
        _wait(c, r.job, lambda h: h["op"] == "progress" and h.get("step") == 2)
        assert c.call("cancel", job=r.job).op == "cancelling"
        assert _wait(c, r.job, _final)[-1]["op"] == "cancelled"
        assert c.call("ping").header["model"]["adapters"] == []
    assert not (srv.data_dir / "adapters" / "mine").exists()
    assert not (srv.jobs_dir / r.job).exists()  # neither the state nor the clips nor an empty folder are kept
    from m2ugen.train.finetune import _lora_layers

    assert not any(layer.lora_A for layer in _lora_layers(model.decoder.model.decoder))  # nothing left inside


def test_an_interactive_job_runs_between_the_steps_and_is_not_changed_by_them(start, clips):
    srv = start("data")
    worker = srv.app.worker
    at_step_2, go = threading.Event(), threading.Event()
    progress = worker.progress

    def held_at_step_2(job, stage, fraction, *args, **fields):  # the fine-tune waits there for the submit
        progress(job, stage, fraction, *args, **fields)
        if fields.get("step") == 2 and not at_step_2.is_set():
            at_step_2.set()
            assert go.wait(120)

    worker.progress = held_at_step_2
    with Client(srv.endpoint, timeout_s=30) as c:
        before = _audio(c, QUICK)
        ft = _learn(c, clips, steps=24).job
        try:
            assert at_step_2.wait(120)
            gen = c.call("submit", kind="generate", params={"prompt": "a warm piano tune", **QUICK}).job
        finally:
            go.set()  # queued before the fine-tune's next step: it runs between steps 2 and 3
        order, gen_done, steps_after = [], None, []
        end = time.monotonic() + 300
        while len(order) < 2 and time.monotonic() < end:
            m = c.recv(timeout_s=1.0)
            if m is None:
                continue
            if m.op in ("done", "error", "cancelled"):
                order.append((m.job, m.op))
                if m.job == gen:
                    gen_done = m.header
            elif m.job == ft and m.op == "progress" and m.header.get("step") and gen_done is not None:
                steps_after.append(m.header["step"])
        assert order == [(gen, "done"), (ft, "done")], order
        assert steps_after and steps_after[-1] == 24  # the fine-tune went on after it
        np.testing.assert_array_equal(sf.read(gen_done["audio_path"])[0], before)  # the base model, in eval mode


def test_bad_finetune_requests_are_refused_at_submit(start, clips, tmp_path):
    srv = start("data")
    outside = tmp_path.parent / "elsewhere.wav"
    with Client(srv.endpoint, timeout_s=30) as c:
        def refused(params=None, inputs=None, **fields):
            r = c.call("submit", kind="finetune", params={"adapter_name": "mine", **TRAIN, **(params or {})},
                       inputs={"audio_set": uploaded_set(c, clips)} if inputs is None else inputs, **fields)
            assert r.op == "error", r.header
            return r.header

        for bad in ("../up", "a/b", "x" * 65, "dot.name", ""):
            h = refused({"adapter_name": bad})
            assert h["code"] == "bad_request" and h["field"] == "params.adapter_name", h
        assert refused({"adapter_name": None})["field"] == "params.adapter_name"
        assert "requires 'inputs.audio_set'" in refused(inputs={})["message"]
        assert refused(inputs={"audio_set": []})["field"] == "inputs.audio_set"
        h = refused(inputs={"audio_set": [c.upload(b"not audio at all")]})
        assert h["code"] == "bad_audio" and h["field"].startswith("inputs.audio_set[0]"), h
        h = refused(inputs={"audio_set": [*uploaded_set(c, clips[:1]), {"path": str(outside)}]})
        assert h["code"] == "bad_request" and h["field"] == "inputs.audio_set[1].path", h
        h = refused(inputs={"audio_set": [{**uploaded_set(c, clips[:1])[0], "strat": 1.0}]})
        assert h["field"] == "inputs.audio_set[0].strat", h
        assert refused(output={"path": str(tmp_path / "a.wav")})["field"] == "output.path"
        assert refused({"steps": 0})["field"] == "params.steps"
        assert refused({"learning_rate": 0})["field"] == "params.learning_rate"
        decoder = srv.app.handlers.model_info["decoder"]
        decoder["kind"], kind = "AudioLDM2", decoder["kind"]
        assert "MusicGen" in refused()["message"]
        decoder["kind"] = kind
        h = c.call("submit", kind="generate", params={"prompt": "x", **QUICK, "adapter": "nope"}).header
        assert h["code"] == "bad_request" and h["field"] == "params.adapter" and "none" in h["message"], h
        assert not list(srv.jobs_dir.iterdir())  # nothing was kept of the refused jobs

        first = _learn(c, clips, steps=5000)
        assert first.op == "accepted"
        h = refused({"adapter_name": "other"})
        assert h["code"] == "busy" and first.job in h["message"], h  # one at a time
        c.call("cancel", job=first.job)
        _wait(c, first.job, _final)
        assert _wait(c, _learn(c, clips, steps=1).job, _final)[-1]["op"] == "done"
        h = refused({"steps": 1})
        assert h["field"] == "params.adapter_name" and "exists" in h["message"], h  # no silent overwrite
        again = _learn(c, clips, steps=1, replace=True)
        assert again.op == "accepted" and _wait(c, again.job, _final)[-1]["op"] == "done"
    assert sorted(p.name for p in (srv.data_dir / "adapters").iterdir()) == ["mine"]


def test_serve_adapter_option_and_weights_json(tmp_path):
    from m2ugen.checkpoint import pretrained
    from server.adapters import parse_adapter_arg

    assert parse_adapter_arg("mine=/a/b") == ("mine", "/a/b")
    assert parse_adapter_arg("/a/b=c") == (None, "/a/b=c")
    assert parse_adapter_arg("rel/dir") == (None, "rel/dir")
    spec = tmp_path / "weights.json"
    spec.write_text(json.dumps({"checkpoint": "m.safetensors", "adapters": {"mine": "ad/mine"}}))
    assert pretrained.spec_adapters(spec) == [("mine", str(tmp_path / "ad" / "mine"))]
    spec.write_text(json.dumps({"checkpoint": "m.safetensors", "adapters": ["/abs/x"]}))
    assert pretrained.spec_adapters(spec) == [(None, "/abs/x")]
    spec.write_text(json.dumps({"checkpoint": "m.safetensors", "adapters": "x"}))
    with pytest.raises(ValueError, match="adapters"):
        pretrained.spec_adapters(spec)


def test_the_learn_command_sends_a_folder_with_its_captions(start, clips, tmp_path, capsys):
    from server.cli import main

    srv = start("data")
    folder = tmp_path / "clips"
    (folder / "take_1.txt").write_text("my own words\n")
    status = tmp_path / "status.json"
    code = main(["learn", str(folder), "--adapter-name", "cli", "--steps", "2", "--clip-s", "0.5", "--seed", "1",
                 "--server", srv.endpoint, "--status-file", str(status), "--no-progress"])
    assert code == 0, capsys.readouterr()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["step"] for x in lines if x.get("op") == "progress" and x.get("step")] == [1, 2]
    assert json.loads(status.read_text())["state"] == "done"
    info = json.loads((srv.data_dir / "adapters" / "cli" / "m2ugen_adapter.json").read_text())
    assert [(c["caption"], c["caption_source"]) for c in info["clips"]][1] == ("my own words", "sidecar")
    assert main(["learn", str(tmp_path / "nothing"), "--adapter-name", "x", "--server", srv.endpoint]) == 2
    assert main(["learn", str(folder), "--adapter-name", "a/b", "--server", srv.endpoint]) == 2


@pytest.mark.timeout(120)
def test_osc_learn_and_adapter_option(start, clips):
    from bridge_osc.bridge import start_in_thread
    from test_osc_fake_server import OscPeer

    srv = start("data")
    bridge = start_in_thread(srv.endpoint, port=0, ping_interval_s=0.2, ping_timeout_s=5.0)
    p = OscPeer(bridge.port)
    try:
        p.send("/m2u/hello", ("i", p.port))
        p.expect("/m2u/welcome")
        p.send("/m2u/learn", ("s", "osc"))
        assert p.expect("/m2u/error")[-1].args[1] == "bad_args"  # no clips
        p.send("/m2u/submit", ("s", "finetune"), ("s", "adapter_name"), ("s", "osc"), ("s", "steps"), ("i", 2),
               ("s", "clip_s"), ("f", 0.5), *[x for c in clips for x in (("s", "clip"), ("s", c["path"]))])
        got = p.expect("/m2u/done", timeout=100)
        assert not [m for m in got if m.address == "/m2u/error"], got
        assert [m.args[2] for m in got if m.address == "/m2u/progress"][-1] in ("training", "writing")
        with Client(srv.endpoint) as c:
            assert c.call("ping").header["model"]["adapters"] == ["osc"]
        p.send("/m2u/learn", ("s", "osc"), ("s", clips[0]["path"]))  # the name is taken now
        assert "exists" in p.expect("/m2u/error")[-1].args[2]
        p.send("/m2u/set", ("s", "adapter"), ("s", "osc"))
        assert p.expect("/m2u/set")[-1].args == ["adapter", "osc"]
        p.send("/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "x"), ("s", "duration"), ("f", 0.5),
               ("s", "max_new_tokens"), ("i", 4))
        job = p.expect("/m2u/done", timeout=100)[-1].args[0]
        with Client(srv.endpoint) as c:
            assert c.call("status", job=job).header["params"]["adapter"] == "osc"
    finally:
        p.close()
        bridge.stop()


def test_a_broken_adapter_in_the_data_dir_is_skipped_a_named_one_stops_the_start(start, tmp_path, caplog):
    broken = tmp_path / "data" / "adapters" / "broken"
    broken.mkdir(parents=True)
    (broken / "adapter_config.json").write_text("{}")
    srv = start("data")
    with Client(srv.endpoint, timeout_s=30) as c:
        assert c.call("hello").header["model"]["adapters"] == []
    assert "broken" in caplog.text and "skipped" in caplog.text
    with pytest.raises(ValueError, match="not an m2ugen adapter"):
        start("other", adapters=[("x", str(broken))])


def _uncaptioned(tmp_path, n: int) -> list[dict]:
    d = tmp_path / "bare"
    d.mkdir()
    for i in range(n):
        synthetic.write_audio(d / f"take_{i}.wav", i, seconds=0.6)
    return [{"path": str(d / f"take_{i}.wav")} for i in range(n)]  # no captions: the model writes them


class _CaptionGate:
    """Wraps the model's chat: the first caption waits for ``release``; every caption records the states of
    the server's generate jobs when it began."""

    def __init__(self, srv):
        from m2ugen.train.finetune import DESCRIBE_PROMPT

        self.model, self.store, self.prompt = srv.app.worker.model, srv.app.store, DESCRIBE_PROMPT
        self.original = self.model.chat
        self.seen: list[list[str]] = []
        self.first, self.release = threading.Event(), threading.Event()
        self.model.chat = self

    def __call__(self, prompt, *args, **kwargs):
        if prompt == self.prompt:
            self.seen.append([j.state for j in self.store.all() if j.kind == "generate"])
            if len(self.seen) == 1:
                self.first.set()
                assert self.release.wait(120)
        return self.original(prompt, *args, **kwargs)


def _held_at_the_first_caption(start, tmp_path, n_clips: int, while_held, final: str):
    """A fine-tune of uncaptioned clips; ``while_held(client, job)`` runs while its first caption waits."""
    srv = start("data")
    gate = _CaptionGate(srv)
    try:
        with Client(srv.endpoint, timeout_s=30) as c:
            ft = _learn(c, _uncaptioned(tmp_path, n_clips)).job
            assert gate.first.wait(120)
            while_held(c, ft)
            gate.release.set()
            assert _wait(c, ft, _final)[-1]["op"] == final
    finally:
        gate.release.set()
    return srv, gate, ft


def test_an_interactive_job_runs_between_two_captions(start, tmp_path):
    def submit(c, ft):
        assert c.call("submit", kind="generate", params={"prompt": "a warm piano tune", **QUICK}).op == "accepted"

    _, gate, _ = _held_at_the_first_caption(start, tmp_path, 3, submit, "done")
    assert len(gate.seen) == 3
    assert gate.seen[0] == [] and gate.seen[1] == ["done"]  # it ran right after the first caption


def test_a_cancel_lands_before_the_next_caption(start, tmp_path):
    def cancel(c, ft):
        assert c.call("cancel", job=ft).op == "cancelling"

    srv, gate, ft = _held_at_the_first_caption(start, tmp_path, 4, cancel, "cancelled")
    assert len(gate.seen) == 1  # the caption under way finished; no other began
    assert not (srv.jobs_dir / ft).exists()
