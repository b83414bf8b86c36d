"""Job server overhead on loopback: ping and no-op job round trips, jobs per second, a 20 MB frame.

The "no-op job" uses InstantModel below, NOT M2UGen: its chat() returns at once, so the figures
measure the server (validation, queue, worker hand-off, journal writes, WAV writing, events) and
ZeroMQ, not the model.

    python benchmarks/bench_server.py [--pings 2000] [--jobs 300]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.app import ServerApp, ServerSettings, model_info  # noqa: E402
from server.client import Client  # noqa: E402
from server.handlers import Limits  # noqa: E402


class InstantModel:
    """A trivial stand-in with M2UGen's chat() interface that does no work (for overhead figures only)."""

    name = "instant-noop"
    sample_rate = 32000
    config = SimpleNamespace(is_tiny=True, max_new_tokens=1, name="instant-noop")

    def chat(self, prompt, *, audio=None, image=None, video=None, max_new_tokens=1, temperature=0.6, top_p=0.8,
             seed=None, conditioning="text", duration_s=10.0, want_audio=None, on_event=None):
        wave = np.zeros((1, int(self.sample_rate * duration_s)), np.float32) if want_audio else None
        return SimpleNamespace(text="ok", audio=wave, sample_rate=self.sample_rate, seed=seed or 0, raw_text="ok",
                               timings={})


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def bench_ping(endpoint: str, n: int) -> list[float]:
    with Client(endpoint) as c:
        for _ in range(50):
            c.call("ping")
        out = []
        for _ in range(n):
            t = time.perf_counter()
            c.call("ping")
            out.append(time.perf_counter() - t)
    return out


def run_job(c: Client, params: dict) -> float:
    t = time.perf_counter()
    job = c.call("submit", kind="generate", params=params).job
    while True:
        m = c.recv(timeout_s=10)
        if m is None:
            raise RuntimeError("no event within 10 s")
        if m.job == job and m.op in ("done", "error", "cancelled"):
            assert m.op == "done", m.header
            return time.perf_counter() - t


def bench_jobs(endpoint: str, n: int) -> list[float]:
    params = {"prompt": "noop", "duration": 0.5, "max_new_tokens": 1}
    with Client(endpoint) as c:
        for _ in range(10):
            run_job(c, params)
        return [run_job(c, params) for _ in range(n)]


def bench_throughput(endpoint: str, n: int, clients: int = 4) -> float:
    params = {"prompt": "noop", "duration": 0.5, "max_new_tokens": 1}
    per = n // clients

    def worker():
        with Client(endpoint, timeout_s=30) as c:
            jobs = set()
            for _ in range(per):
                jobs.add(c.call("submit", kind="generate", params=params).job)
            while jobs:
                m = c.recv(timeout_s=30)
                if m is None:
                    raise RuntimeError("stalled")
                if m.op in ("done", "error"):
                    jobs.discard(m.job)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return per * clients / (time.perf_counter() - t)


def bench_big_frame(endpoint: str, mb: int = 20) -> tuple[float, float, int]:
    sr, ch = 48000, 2
    seconds = mb * 2**20 / (sr * ch * 2)  # 16-bit PCM
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(sr * seconds), ch), np.float32), sr, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    pings: list[float] = []
    busy = threading.Event()

    def pinger():  # another client keeps pinging while the upload is decoded
        with Client(endpoint) as p:
            while busy.is_set():
                t = time.perf_counter()
                p.call("ping")
                pings.append(time.perf_counter() - t)

    with Client(endpoint, timeout_s=60) as c:
        c.call("ping")
        t = time.perf_counter()
        c.call("ping", [data])  # the server reads and ignores the extra frame: pure transfer
        transfer = time.perf_counter() - t
        busy.set()
        th = threading.Thread(target=pinger)
        th.start()
        t = time.perf_counter()
        r = c.call("submit", [data], kind="ask", params={"prompt": "noop", "max_new_tokens": 1},
                   inputs={"audio": {"frame": 1, "name": "big.wav"}})
        accepted = time.perf_counter() - t
        busy.clear()
        th.join()
        assert r.op == "accepted", r.header
    return transfer, accepted, len(data), max(pings)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["M2UGEN_CONFIG_DIR"] = os.path.join(tmp, "cfg")
        model = InstantModel()
        app = ServerApp(model, model_info(model, preset="instant-noop"),
                        ServerSettings(port=0, data_dir=Path(tmp) / "data", limits=Limits(queue_size=1000),
                                       write_discovery=False))
        endpoint = app.start()
        try:
            ping = bench_ping(endpoint, args.pings)
            jobs = bench_jobs(endpoint, args.jobs)
            rate = bench_throughput(endpoint, args.jobs)
            transfer, accepted, size, worst_ping = bench_big_frame(endpoint)
        finally:
            app.stop()
    ms = 1000.0
    print(f"server benchmark on loopback ({os.cpu_count()} CPUs), endpoint {endpoint}")
    print(f"ping round trip          n={len(ping):5d}  p50 {statistics.median(ping) * ms:.3f} ms  "
          f"p99 {pct(ping, 99) * ms:.3f} ms   (targets <= 1 ms / <= 5 ms)")
    print(f"no-op job round trip     n={len(jobs):5d}  p50 {statistics.median(jobs) * ms:.3f} ms  "
          f"p99 {pct(jobs, 99) * ms:.3f} ms   (InstantModel, not M2UGen: submit -> done, 0.5 s WAV written)")
    print(f"no-op jobs per second    {rate:.0f} jobs/s (4 clients, {args.jobs} jobs)")
    print(f"{size / 2**20:.1f} MiB audio frame   upload round trip {transfer * ms:.1f} ms "
          f"({size / 2**20 / transfer:.0f} MiB/s); submit with decode until 'accepted' {accepted * ms:.1f} ms; "
          f"another client's slowest ping meanwhile {worst_ping * ms:.1f} ms")


if __name__ == "__main__":
    main()
