"""Where a served job's time goes: the per-job cost budget of ``bench_serving.py``'s job, by part and by the
thread that pays it, for each server setting, and the throughput ceiling it implies (issue 25).

The same model, config and job as ``bench_serving.py`` (1 job = 2 s of music, 16 reply tokens); each setting
runs ``--jobs`` jobs (staggered every ``--every-ms`` by default), settings taking turns round by round. Every
part of a job is timed where it runs (a wrapper around the function that does it: wall and that thread's CPU
seconds), so the table shows, per job, what each part costs and on which thread (``worker``: the stepping /
model thread; ``finish``: the engine's finisher), and each thread's busy share of the wall time.

A wrapped part inside another is subtracted from it: in the engine's column, "LLaMA prefill + steps" and
"MusicGen prefill + steps" are what their stages do beside the decode forwards, which are listed after the
parts, per batch size (calls per job, wall | CPU ms per call).

Ceiling (Amdahl): a setting is bounded by its busiest thread's CPU seconds per job and by the CPU seconds
of all its threads per job / 2 cores; its ratio to serial by serial's bound / its bound (printed beside
the measured ratio).

    .venv/bin/python benchmarks/serving_budget.py [--jobs 4 --rounds 2 --threads 1 --arrival staggered]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_serving  # noqa: E402
from m2ugen import M2UGen  # noqa: E402


class Probe:
    """Wall and thread-CPU seconds of wrapped functions, by (part, thread); one level only (a part inside
    another wrapped part is not counted twice: the inner one is subtracted from the outer)."""

    def __init__(self):
        self.wall: dict[tuple[str, str], float] = defaultdict(float)
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self._local = threading.local()

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()
        self.calls.clear()

    def wrap(self, owner, attr: str, part) -> None:
        """``part``: its name, or a function of the call's arguments that names it."""
        fn = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        raw = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
        probe = self

        def wrapper(*args, **kwargs):
            stack = getattr(probe._local, "stack", None)
            if stack is None:
                stack = probe._local.stack = []
            stack.append([0.0, 0.0])  # time of inner parts
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return raw(*args, **kwargs)
            finally:
                dw, dc = time.perf_counter() - w0, time.thread_time() - c0
                inner = stack.pop()
                name = part(*args, **kwargs) if callable(part) else part
                key = (name, threading.current_thread().name.split("_")[0].removeprefix("m2ugen-"))
                probe.wall[key] += dw - inner[0]
                probe.cpu[key] += dc - inner[1]
                probe.calls[key] += 1
                if stack:
                    stack[-1][0] += dw
                    stack[-1][1] += dc

        new = staticmethod(wrapper) if isinstance(fn, staticmethod) else wrapper
        setattr(owner, attr, new)


def install(probe: Probe, model) -> None:
    from m2ugen import engine, model as model_mod, musicgen_loop, musicgen_stage, text_stage
    from server import audio_io, finishing, jobs, outputs, worker
    from server.kinds import chat

    dec = type(model.decoder)
    for owner, attr, part in [
        (chat, "plan", "plan (prompt, source analysis)"),
        (model_mod.M2UGen, "_plan_row", "plan (prompt, source analysis)"),
        (model_mod.M2UGen, "_encode_row", "encoders"),
        (model_mod.M2UGen, "_think", "LLaMA prefill + steps"),
        (text_stage.TextStage, "step", "LLaMA prefill + steps"),
        (model_mod.M2UGen, "_finish_reply", "reply ([AUD] states)"),
        (model_mod.M2UGen, "_decode_row", "music conditioning"),
        (dec, "_loop_row", "music conditioning"),
        (musicgen_loop.MusicGenLoop, "run", "MusicGen prefill + steps"),
        (musicgen_stage.MusicGenStage, "step", "MusicGen prefill + steps"),
        (dec, "_finish_row", "EnCodec decode"),
        (finishing, "fit_take", "fit"),
        (finishing, "analyse", "result analysis"),
        (audio_io, "wav_bytes", "writing (wav, sidecar)"),
        (audio_io, "sidecar_bytes", "writing (wav, sidecar)"),
        (outputs, "write_own", "writing (wav, sidecar)"),
        (jobs.JobStore, "persist", "journal"),
        (engine.Engine, "step", "engine bookkeeping"),
        (engine.Engine, "_wait_finishing", "waiting (finisher)"),
        (worker.Worker, "_replay", "waiting (finisher)"),
    ]:
        probe.wrap(owner, attr, part)
    # the decode steps by batch size (within the parts above: listed apart, after them)
    probe.wrap(text_stage.TextStage, "_decode", lambda self, running, join=None, n=0: (
        f"  LLaMA step, {len(running)} rows" + (f" + {n} prompt tokens" if join is not None else "")))
    probe.wrap(musicgen_stage.MusicGenStage, "_decode", lambda self, running: (
        f"  MusicGen step, {sum(sr.n for sr in running)} slots"))


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, by name (/proc)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float)
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[t.name.split("_")[0].removeprefix("m2ugen-")] += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arrival", default="staggered", choices=("staggered", "burst"))
    ap.add_argument("--every-ms", type=float, default=500.0)
    ap.add_argument("--settings", default="serial,continuous")
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = M2UGen.from_config(bench_serving.mid_config())
    model.preload("decoder")
    probe = Probe()
    settings = args.settings.split(",")
    every = args.every_ms / 1000 if args.arrival == "staggered" else 0.0
    n = args.jobs
    with tempfile.TemporaryDirectory() as tmp:
        apps = {k: bench_serving.start(model, bench_serving.SETTINGS[k][0] or n, bench_serving.SETTINGS[k][1],
                                       Path(tmp) / k) for k in settings}
        try:
            bench_serving.warm_analysis()
            for app in apps.values():
                bench_serving.run_jobs(app.endpoint, 2, args.duration, args.tokens, 99)
            install(probe, model)
            acc = {k: {"wall": [], "parts": defaultdict(float), "cpu": defaultdict(float), "calls": defaultdict(int),
                       "threads": defaultdict(float)}
                   for k in settings}
            for r in range(args.rounds):
                for k in (settings if r % 2 == 0 else settings[::-1]):
                    probe.reset()
                    t0 = thread_cpu()
                    res = bench_serving.run_jobs(apps[k].endpoint, n, args.duration, args.tokens, r, every)
                    t1 = thread_cpu()
                    a = acc[k]
                    a["wall"].append(res["wall"])
                    for key, v in probe.wall.items():
                        a["parts"][key] += v
                    for key, v in probe.cpu.items():
                        a["cpu"][key] += v
                    for key, v in probe.calls.items():
                        a["calls"][key] += v
                    for name in t1:
                        a["threads"][name] += t1[name] - t0.get(name, 0.0)
        finally:
            for app in apps.values():
                app.stop()
    jobs_run = n * args.rounds
    print(f"\n## per-job cost budget: {n} jobs {args.arrival}"
          f"{f' every {args.every_ms:g} ms' if every else ''}, {args.rounds} rounds, {args.threads} torch thread(s); "
          f"seconds per job (wall | thread CPU) by part and thread")
    parts = sorted({p for a in acc.values() for p, _ in a["parts"]}, key=lambda p: (p.startswith("  "), p))
    head = " | ".join(f"{k:>24}" for k in settings)
    print(f"{'part':>32} | {head}")
    for p in parts:
        cells = []
        for k in settings:
            a = acc[k]
            by = [(t, a["parts"][(p, t)], a["cpu"][(p, t)]) for (pp, t) in list(a["parts"]) if pp == p]
            if p.startswith("  "):  # a decode step: calls per job, ms per call
                by = [(t, a["calls"][(p, t)], w, c) for t, w, c in by]
                cells.append(", ".join(f"{t} {k_ / jobs_run:.1f}/job {1e3 * w / k_:.0f}|{1e3 * c / k_:.0f} ms"
                                       for t, k_, w, c in by) or "-")
                continue
            cells.append(", ".join(f"{t} {w / jobs_run:.3f}|{c / jobs_run:.3f}" for t, w, c in by) or "-")
        print(f"{p:>32} | " + " | ".join(f"{c:>24}" for c in cells))
    print()
    walls, bounds = {}, {}
    for k in settings:
        a = acc[k]
        wall = statistics.median(a["wall"])
        walls[k] = wall
        busy = {t: v / args.rounds for t, v in a["threads"].items() if v / args.rounds > 0.05}
        threads = ", ".join(f"{t} {v:.1f} s CPU ({v / wall:.0%} of wall)" for t, v in sorted(busy.items()))
        print(f"{k:>10}: wall {wall:.2f} s for {n} jobs ({wall / n:.2f} s/job, {n / wall:.3f} jobs/s); {threads}")
        cpu_job = sum(busy.values()) / n
        top = max(busy.values()) / n
        bounds[k] = max(top, cpu_job / 2)
        print(f"{'':>10}  CPU per job {cpu_job:.2f} s (all threads), busiest thread {top:.2f} s per job -> "
              f"bound {bounds[k]:.2f} s/job")
    if "serial" in walls:
        for k in settings:
            print(f"ratio {k} / serial: {walls['serial'] / walls[k]:.2f} measured, "
                  f"{bounds['serial'] / bounds[k]:.2f} ceiling")


if __name__ == "__main__":
    main()
