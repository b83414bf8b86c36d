"""Shared pytest fixtures.

Stable fixtures for every engineer (names and signatures will not change):

``server`` -> str
    Endpoint (``tcp://127.0.0.1:PORT``) of a real job server running in this process on a free
    loopback port, serving the real tiny preset, with its own temporary config and data dirs
    (``M2UGEN_CONFIG_DIR`` / ``M2UGEN_DATA_DIR`` point there for the test, so ``Client()`` with no
    endpoint finds it through the discovery file). Function-scoped; stopped after the test.

``server_info`` -> RunningServer
    The same server with details: ``.endpoint``, ``.app`` (server.app.ServerApp), ``.config_dir``,
    ``.data_dir``, ``.jobs_dir``. Requesting both ``server`` and ``server_info`` gives one server.

``tiny_model`` -> the real tiny M2UGen (session-scoped, built once).

``make_server(model=None, **settings)`` -> factory for extra servers (e.g. a slow model or a small
    queue); each returns a RunningServer and is stopped after the test.

``wav_file(seconds=1.0, sr=22050, channels=2, name="in.wav")`` -> factory writing a test tone
    under tmp_path; returns its Path.

Helpers (import them: ``from conftest import SlowModel, run_job, tone``): ``run_job(client, kind,
params, inputs=None, **fields)`` submits and returns the ``done`` header; ``SlowModel(model, step_s)`` wraps
the real tiny model and sleeps in every progress callback (to cancel a running job or fill the
queue); ``.started`` is set once it runs. ``tone(seconds, sr, channels)`` -> float32 [C, S] sine.

Keep jobs fast on CPU: ``params={"duration": 0.5, "max_new_tokens": 4}`` runs in about a second.
"""

from __future__ import annotations

import contextlib

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _own_config_dir(tmp_path, monkeypatch):
    """Every test gets its own client config dir (the token, remembered upload hashes): nothing a test
    does writes into the user's real ``~/.config/m2ugen``. ``make_server`` points at the same folder."""
    monkeypatch.setenv("M2UGEN_CONFIG_DIR", str(tmp_path / "config"))


@dataclass
class RunningServer:
    endpoint: str
    app: object
    config_dir: Path
    data_dir: Path

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"


@pytest.fixture(scope="session")
def tiny_model():
    from m2ugen import M2UGen, M2UGenConfig

    return M2UGen.from_config(M2UGenConfig.preset("tiny"))


@contextlib.contextmanager
def decoder_calls(decoder):
    """Record what the model asks of its music decoder: one dict per row given to ``generate_batch``,
    with the fields that are set (not None, not the plain defaults) — ``generate``'s keyword arguments."""
    calls: list[dict] = []
    original = decoder.generate_batch
    plain = {"with_prompt": False, "vocoder": "encodec"}

    def spy(rows):
        for row in rows:
            calls.append({k: v for k, v in vars(row).items() if v is not None and not (k in plain and plain[k] == v)})
        return original(rows)

    decoder.generate_batch = spy
    try:
        yield calls
    finally:
        del decoder.generate_batch


class SlowModel:
    """The real tiny model, slowed down: sleeps ``step_s`` in every ``on_event`` call so that tests
    can cancel a running job or fill the queue while one runs."""

    def __init__(self, model, step_s: float = 0.05):
        self._model = model
        self.step_s = step_s
        self.started = __import__("threading").Event()

    def __getattr__(self, name):
        return getattr(self._model, name)

    def chat(self, *args, on_event=None, **kwargs):
        def slow(ev):
            self.started.set()
            time.sleep(self.step_s)
            if on_event is not None:
                on_event(ev)

        return self._model.chat(*args, on_event=slow, **kwargs)

    def chat_batch(self, requests):
        import dataclasses

        def slowed(on_event):
            def slow(ev):
                self.started.set()
                time.sleep(self.step_s)
                if on_event is not None:
                    on_event(ev)
            return slow

        return self._model.chat_batch([dataclasses.replace(r, on_event=slowed(r.on_event)) for r in requests])


@pytest.fixture
def make_server(tmp_path, monkeypatch, request):
    from server.app import ServerApp, ServerSettings, model_info
    from server.handlers import Limits

    apps = []
    cfg = tmp_path / "config"
    monkeypatch.setenv("M2UGEN_CONFIG_DIR", str(cfg))

    def make(model=None, *, preset: str = "tiny", **settings) -> RunningServer:
        if model is None:
            model = request.getfixturevalue("tiny_model")
        data = tmp_path / f"data{len(apps)}"
        limits = settings.pop("limits", Limits())
        s = ServerSettings(host="127.0.0.1", port=0, data_dir=data, limits=limits, **settings)
        app = ServerApp(model, model_info(model, preset=preset), s)
        app.start()
        apps.append(app)
        return RunningServer(app.endpoint, app, cfg, data)

    yield make
    for app in apps:
        app.stop()


@pytest.fixture
def server_info(make_server, monkeypatch, tmp_path) -> RunningServer:
    running = make_server()
    monkeypatch.setenv("M2UGEN_DATA_DIR", str(running.data_dir))
    return running


@pytest.fixture
def server(server_info) -> str:
    return server_info.endpoint


def run_job(client, kind: str, params: dict, inputs: dict | None = None, timeout_s: float = 300, **fields) -> dict:
    """Submit, wait for the job's end, return the ``done`` header (fails on a refusal or an error)."""
    r = client.call("submit", kind=kind, params=params, inputs=inputs or {}, **fields)
    assert r.op == "accepted", r.header
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        m = client.recv(timeout_s=1.0)
        if m is not None and m.job == r.job and m.op in ("done", "error", "cancelled"):
            assert m.op == "done", m.header
            return m.header
    raise AssertionError(f"job {r.job} did not finish in {timeout_s} s")


def tone(seconds: float, sr: int, channels: int, freq: float = 440.0) -> np.ndarray:
    """[channels, samples] float32 sine."""
    t = np.arange(int(round(seconds * sr)), dtype=np.float32) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x * (1.0 - 0.1 * c) for c in range(channels)])


@pytest.fixture
def wav_file(tmp_path):
    import soundfile as sf

    def make(seconds: float = 1.0, sr: int = 22050, channels: int = 2, name: str = "in.wav", **kw) -> Path:
        path = tmp_path / name
        sf.write(path, tone(seconds, sr, channels).T, sr, **kw)
        return path

    return make


def load_benchmark(name: str, module_name: str | None = None):
    """A script of benchmarks/ loaded as a module (benchmarks/ is not a package; its scripts import each
    other by name), registered in sys.modules (dataclasses look their module up)."""
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    spec = importlib.util.spec_from_file_location(module_name or name, bench / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
