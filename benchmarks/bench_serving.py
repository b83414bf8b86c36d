"""Serving throughput: N concurrent generate jobs through the real job server, batched vs serial, side by
side in one run; then each decode loop's step time as a fraction of its memory-bandwidth floor.

Part 1 (issue 15 item 3): one in-process server per setting (``--max-batch N`` and ``--max-batch 1``) on a
mid-size random model (LLaMA 8 x 1024, MusicGen 12 x 512 with the real 32 kHz EnCodec). For N in 1, 2, 4,
8 the same N jobs (different prompts and seeds, 1 s of music, 16 reply tokens) are submitted at once; the
two servers take turns round by round so they see the same machine load. Printed per N: jobs/s of each,
the ratio (target >= 2.5 at N = 4), p50/p99 job latency (submit -> done).

Part 2: the LLaMA decode step (``benchmarks/roofline.py``, dim 1024 x 8 layers) and the MusicGen guided step
(``benchmarks/bench_musicgen_loop.py``'s mid decoder, through our loop), fp32 and bf16, each beside its floor
(weight bytes read per step / a GEMV's bandwidth measured in the same run; target >= 0.8).

    .venv/bin/python benchmarks/bench_serving.py [--jobs 1,2,4,8 --rounds 2 --threads 2 --no-steps]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_modes import mid_config as mid_musicgen_config  # noqa: E402
from m2ugen import M2UGen  # noqa: E402
from m2ugen.config import M2UGenConfig  # noqa: E402
from server.app import ServerApp, ServerSettings, model_info  # noqa: E402
from server.client import Client  # noqa: E402
from server.handlers import Limits  # noqa: E402

PROMPTS = ["soft strings", "loud drums", "a jazz trio", "ambient pads", "funky bass", "a folk guitar",
           "an organ chorale", "synth arpeggios"]


def mid_config() -> M2UGenConfig:
    """The tiny preset (its tokenizer and encoders) with a mid-size LLaMA and MusicGen."""
    cfg = mid_musicgen_config()
    return cfg.replace(name="mid-serving", dim=1024, n_layers=8, n_heads=8, multiple_of=256)


def start(model, max_batch: int, data: Path) -> ServerApp:
    s = ServerSettings(host="127.0.0.1", port=0, data_dir=data, write_discovery=False,
                       limits=Limits(queue_size=64, max_batch=max_batch))
    app = ServerApp(model, model_info(model, preset="mid-serving"), s)
    app.start()
    return app


def run_concurrent(endpoint: str, n: int, duration: float, tokens: int, round_: int) -> tuple[float, list[float]]:
    """Submit n jobs at once; -> (wall seconds until all are done, each job's latency)."""
    with Client(endpoint, timeout_s=60) as c:
        t0 = time.perf_counter()
        submitted: dict[str, float] = {}
        for i in range(n):
            params = {"prompt": PROMPTS[i % len(PROMPTS)], "seed": 100 * round_ + i, "duration": duration,
                      "max_new_tokens": tokens, "temperature": 0.6}
            r = c.call("submit", kind="generate", params=params)
            if r.op != "accepted":
                raise RuntimeError(f"refused: {r.header}")
            submitted[r.job] = time.perf_counter()
        latency: dict[str, float] = {}
        while len(latency) < n:
            m = c.recv(timeout_s=600)
            if m is None:
                raise RuntimeError("no event within 600 s")
            if m.job in submitted and m.op in ("done", "error", "cancelled"):
                if m.op != "done":
                    raise RuntimeError(f"job {m.job} ended {m.op}: {m.header}")
                latency[m.job] = time.perf_counter() - submitted[m.job]
        return time.perf_counter() - t0, list(latency.values())


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def bench_jobs(ns: list[int], rounds: int, duration: float, tokens: int) -> None:
    model = M2UGen.from_config(mid_config())
    model.preload("decoder")
    with tempfile.TemporaryDirectory() as tmp:
        apps = {"batched": start(model, max(ns), Path(tmp) / "b"), "serial": start(model, 1, Path(tmp) / "s")}
        try:
            for name, app in apps.items():  # warm-up: first-call costs (allocations, librosa) out of the figures
                run_concurrent(app.endpoint, 2, duration, tokens, 99)
            print(f"\n## {rounds} round(s) per N; 1 job = {duration:g} s of music, {tokens} reply tokens "
                  f"({torch.get_num_threads()} threads)")
            print(f"{'jobs':>4} | {'batched jobs/s':>14} | {'serial jobs/s':>13} | {'ratio':>5} | "
                  f"{'batched p50/p99 s':>17} | {'serial p50/p99 s':>16}")
            for n in ns:
                walls = {k: [] for k in apps}
                lats = {k: [] for k in apps}
                for r in range(rounds):
                    order = list(apps) if r % 2 == 0 else list(apps)[::-1]
                    for k in order:
                        wall, lat = run_concurrent(apps[k].endpoint, n, duration, tokens, r)
                        walls[k].append(wall)
                        lats[k] += lat
                thr = {k: n / statistics.median(walls[k]) for k in apps}
                print(f"{n:>4} | {thr['batched']:>14.3f} | {thr['serial']:>13.3f} | "
                      f"{thr['batched'] / thr['serial']:>5.2f} | "
                      f"{pct(lats['batched'], 50):>7.2f} / {pct(lats['batched'], 99):>7.2f} | "
                      f"{pct(lats['serial'], 50):>6.2f} / {pct(lats['serial'], 99):>7.2f}", flush=True)
        finally:
            for app in apps.values():
                app.stop()


def musicgen_rows(dtypes: tuple[str, ...], bandwidth: float, steps_s: float = 1.0) -> list[dict]:
    """The mid MusicGen's guided decode step (one row = 2 slots) per dtype, beside its floor: the decoder's
    weight bytes read once per step / the GEMV bandwidth. Step time = one row's loop run / its steps."""
    import bench_musicgen_loop
    import roofline

    from m2ugen.decoders import DecodeRow
    from m2ugen.quant import weight_bytes

    out = []
    for dtype in dtypes:
        name = f"MusicGen mid (8 x 512), {dtype}, guided, 1 row"
        try:
            d = bench_musicgen_loop.build("mid")
            d.dtype = getattr(torch, dtype)
            d.model.to(d.dtype)
            loop = d._loop()
            prepared = d._loop_row(DecodeRow(text="a calm piano melody", duration_s=steps_s, seed=0))[0]
            n = d.num_new_tokens(steps_s)

            def run_one():
                prepared.generator = torch.Generator(d.device).manual_seed(0)
                loop.run([prepared])

            read = weight_bytes(d.model.decoder, skip=("model.decoder.embed_tokens.",))  # per step: one row each
            row = roofline.step_fraction(run_one, read * n, bandwidth, warmup=1, iters=3)
            per_step = {k: row[k] / n for k in ("step_ms", "floor_ms")}
            out.append({"name": name, **row, **per_step, "tokens_per_s": n / (row["step_ms"] / 1000)})
        except Exception as e:  # one failing row must not lose the table
            out.append({"name": name, "error": f"{type(e).__name__}: {e}"})
    return out


def bench_steps(compile: bool) -> None:
    import roofline

    bandwidth = roofline.gemv_bandwidth("cpu")
    print(f"\n## decode steps vs their memory-bandwidth floor (weight bytes / GEMV bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s, measured now)")
    rows = roofline.llama_rows(dtypes=("float32", "bfloat16"), compile=(False, True) if compile else (False,),
                               bandwidth=bandwidth)
    rows += musicgen_rows(("float32", "bfloat16"), bandwidth)
    print(roofline.format_rows(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", default="1,2,4,8", help="concurrent job counts (comma-separated)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=1.0, help="seconds of music per job")
    ap.add_argument("--tokens", type=int, default=16, help="reply tokens per job")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-steps", action="store_true", help="skip part 2 (the per-step roofline tables)")
    ap.add_argument("--no-jobs", action="store_true", help="skip part 1 (the job throughput table)")
    ap.add_argument("--compile", action="store_true", help="part 2 also compiled LLaMA steps (minutes on a CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_jobs:
        bench_jobs([int(x) for x in args.jobs.split(",")], args.rounds, args.duration, args.tokens)
    if not args.no_steps:
        bench_steps(args.compile)


if __name__ == "__main__":
    main()
