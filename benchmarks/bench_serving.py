"""Serving throughput: N concurrent generate jobs through the real job server, batched vs serial, side by
side in one run; then each decode loop's step time as a fraction of its memory-bandwidth floor.

Part 1 (issues 15 and 25): one in-process server per setting on a mid-size random model (LLaMA 8 x 1024,
MusicGen 12 x 512 with the real 32 kHz EnCodec): ``continuous`` (jobs join the running decode at its next
step, ``--max-batch N``), ``static`` (a batch is formed once and runs to its end, ``--batching static``),
``serial`` (``--max-batch 1 --batching static``) and ``serial-engine`` (``--max-batch 1`` through the
engine: one row per stage, EnCodec and the result writing on the same finisher thread as continuous's, so
both use the second core alike: the fair baseline for what batching itself gains). For N in 1, 2, 4, 8 the
same N jobs (different prompts and seeds, 2 s of music, 16 reply tokens) arrive at once (``burst``) or one
every ``--every-ms`` (``staggered``, like producers clicking); the servers take turns round by round so
they see the same machine load. Printed per N and setting: jobs/s, its ratio to serial (target >= 2.5 at
N = 4 staggered, continuous), time to first progress (p50) and job latency p50 / p99 (submit -> done;
target: continuous p99 <= serial's).

The config is chosen so that decoding is the main share of a job, as it is at real size (where a reply is
tens of tokens and the music 10-30 s, i.e. hundreds of MusicGen steps, while the encoders, the codec and
the writing stay a fixed cost): a 77-token prompt, 16 reply tokens (16 LLaMA steps) and 2 s of music (103
MusicGen steps of a guided row) per job; alone, 1 CPU thread, the MusicGen steps are ~3/4 of the job, the
LLaMA prefill and steps ~1/6, EnCodec ~1/10, fitting, analysing and writing the rest. With 1 s of music the
fixed costs are twice the share and no scheduler can batch them: ``--duration 1`` shows it.

Measured (issue 25, a 2-core box loaded by other work, 1 thread, N = 4, ratio to serial in the same run;
four runs): continuous burst 1.96 / 2.97 / 2.41 / 2.05, staggered (500 ms) 1.61 / 2.12 / 1.97 / 1.88; static
burst 1.19 / 2.00 / 1.48 / 1.67, staggered 1.29 / 1.81 / 1.60 / 1.38; continuous p99 latency 0.34-0.62 of
serial's. Before the folded prefill and the finisher thread, run beside the last: continuous burst 1.52,
staggered 1.09 (static 1.49 / 1.30). At the end of issue 25's third pass, on an idle box (load under 1),
``--jobs 4 --threads 1 --no-steps --rounds 3``: continuous burst 2.28 (0.476 jobs/s), staggered 2.04
(0.374); static 1.46 / 1.52; p99 latency continuous 8.5 / 10.4 s against serial's 22.0 / 21.0 s. With
``--packed-linears`` (an experiment: the linears on prepacked oneDNN weights, 3.8x cheaper at 4 rows),
2 rounds, continuous and serial only: burst 2.29 (0.532 jobs/s, serial 0.232), staggered 2.18 (0.489,
serial 0.224): every setting gains about 12 %, the ratio barely moves.

The third pass made the scheduler's own part of a step small (``benchmarks/bench_step_rows.py``, profiles):
the LLaMA step reads only the cache columns written (``bind_cache(upto=...)``) and the MusicGen step
masks additively: attention at 4 rows 31-38 -> 9-12 ms (LLaMA) and 18-20 -> 9 ms (MusicGen).

Where the time goes (issue 25, fourth pass; ``benchmarks/serving_budget.py``: every part of a job timed where
it runs, thread CPU seconds per job; N = 4 staggered every 500 ms, 1 thread, 2 rounds, load ~1). Serial,
one thread, 4.52 s/job: MusicGen prefill + 103 steps 3.37 (75 %), LLaMA prefill + 16 steps 0.74 (16 %),
EnCodec 0.35 (8 %), result analysis 0.045, music conditioning 0.010, fit 0.007; writing, journal,
planning, encoders (none here) under 0.002 each; queue waits are not work. Continuous, stepping thread
2.17 s/job: MusicGen 1.44 (steps at 2 / 4 / 6 / 8 slots 38 / 40 / 45 / 43 ms: a step batches well; but
30.2 step calls per job, 9.4 of them with fewer than 8 slots, 121 for the 4 jobs where 103 would do were
the rows aligned: the staggered arrivals; sampling 0.16), LLaMA 0.62 (a step of 1 row 34 ms, of 2-3 rows
59 ms, with 32 prompt tokens folded in 131-135 ms; the 77-token prompts ~0.15 s/job of it, unbatchable),
EnCodec 0.10 (when nothing is left to step), conditioning 0.01; the finisher thread takes the rest of
EnCodec, fit, analysis and writing (0.33 s/job). The stepping thread was busy 97 % of the wall, so it is
the bound: 98 % of it is decode steps, the non-decode costs are already off it. Amdahl ceiling = serial's
CPU per job / the stepping thread's = 4.52 / 2.17 = 2.08; measured in the same run 2.03.

Side by side, ratio to serial's jobs/s (``--jobs 4 --threads 1 --no-steps --settings
continuous,serial,serial-engine``): ``--rounds 3``, load 0.7-1.1: continuous burst 2.22 (0.470 jobs/s),
staggered 2.06 (0.449), p99 latency 9.5 / 8.5 s vs serial's 20.9 / 17.2 s; serial-engine 0.91 / 1.07.
``--rounds 2``, load 1.5-1.9: continuous 1.79 / 1.94, serial-engine 1.00 / 0.97 (the second core for
serial's EnCodec and writing gains nothing measurable).

Tried in this pass and not kept: the LLaMA step's model work on a second thread beside the MusicGen step
(results unchanged, tested). It cut the stepping thread's CPU from 2.01 to 1.82 s/job (one run, load 2-3;
ceiling 2.47), but the LLaMA step costs more CPU beside the MusicGen one (a 1-row step 55 ms vs 32: both
read weights through the shared caches and memory), and on this box the second core is taken by other
work: continuous vs the same without it, same runs, staggered 2.07 / 1.95, 1.83 / 1.87, 1.71 / 1.77, and
2.05 / 1.98 at load ~1;
stepping MusicGen again while the LLaMA work lasts made more partial MusicGen steps (36.6 per job instead
of 30.2; 2.09 / 2.03, 1.52 / 1.77). Batching the EnCodec decode of rows that end together: 4 rows at
once cost 1.48-1.56 s CPU against 1.26-1.42 for one by one, and are not bit-identical; staggered rows end
apart anyway.

What 2.5x at 4 staggered jobs would take on this CPU at 1 thread: the stepping thread at most 4.52 / 2.5
= 1.81 s/job (now 2.17) with nothing else on its core. Its MusicGen share alone is 1.44 s/job with 121
steps; aligned rows (103 steps at 8 slots, 43 ms) would be 1.11 + 0.16 sampling, leaving ~0.5 s for the
LLaMA's 0.62 and EnCodec; i.e. a MusicGen step that costs less per row (a GPU: flat in the rows; or
weights prepacked for 4-8 rows, ``--packed-linears``, which gains every setting ~12 % alike) plus the
LLaMA on a core of its own with no other load. The staggered arrivals alone (the last job arrives 1.5 s
after the first, a third of one job's time) cost 18 unaligned MusicGen steps. ``--duration 1`` or fewer
steps per job lower every ceiling (the fixed per-job costs grow in share).

Part 2: the LLaMA decode step (``benchmarks/roofline.py``, dim 1024 x 8 layers) and the MusicGen guided step
(``benchmarks/bench_musicgen_loop.py``'s mid decoder, through our loop), fp32 and bf16, each beside its floor
(weight bytes read per step / a GEMV's bandwidth measured in the same run; target >= 0.8).

    .venv/bin/python benchmarks/bench_serving.py [--jobs 1,2,4,8 --rounds 2 --threads 2 --no-steps]
        [--arrival burst,staggered --every-ms 500 --settings continuous,static,serial,serial-engine,...]
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


SETTINGS = {  # name -> (max_batch, batching); max_batch None: the run's largest N
    "continuous": (None, "continuous"),
    "static": (None, "static"),
    "serial": (1, "static"),
    "serial-engine": (1, "continuous"),  # one row per stage through the engine, with its finisher thread
}


def start(model, max_batch: int, batching: str, data: Path) -> ServerApp:
    s = ServerSettings(host="127.0.0.1", port=0, data_dir=data, write_discovery=False,
                       limits=Limits(queue_size=64, max_batch=max_batch), batching=batching)
    app = ServerApp(model, model_info(model, preset="mid-serving"), s)
    app.start()
    return app


def run_jobs(endpoint: str, n: int, duration: float, tokens: int, round_: int, every_s: float = 0.0) -> dict:
    """Submit n jobs, all at once (``every_s`` 0) or one every ``every_s`` seconds (producers clicking);
    -> wall seconds from the first submit to the last done, each job's latency (submit -> done) and its
    time to first progress (submit -> its first progress event)."""
    with Client(endpoint, timeout_s=60) as c:
        t0 = time.perf_counter()
        submitted: dict[str, float] = {}
        first: dict[str, float] = {}
        latency: dict[str, float] = {}

        def take(m) -> None:
            if m.job not in submitted:
                return
            if m.op == "progress" and m.job not in first:
                first[m.job] = time.perf_counter() - submitted[m.job]
            if m.op in ("done", "error", "cancelled"):
                if m.op != "done":
                    raise RuntimeError(f"job {m.job} ended {m.op}: {m.header}")
                latency[m.job] = time.perf_counter() - submitted[m.job]

        for i in range(n):
            due = t0 + i * every_s
            while time.perf_counter() < due:  # events of the jobs already in, until the next one is due
                m = c.recv(timeout_s=max(0.001, due - time.perf_counter()))
                if m is not None:
                    take(m)
            params = {"prompt": PROMPTS[i % len(PROMPTS)], "seed": 100 * round_ + i, "duration": duration,
                      "max_new_tokens": tokens, "temperature": 0.6}
            at = time.perf_counter()
            r = c.call("submit", kind="generate", params=params)
            if r.op != "accepted":
                raise RuntimeError(f"refused: {r.header}")
            submitted[r.job] = at
        while len(latency) < n:
            m = c.recv(timeout_s=600)
            if m is None:
                raise RuntimeError("no event within 600 s")
            take(m)
        return {"wall": time.perf_counter() - t0, "latency": list(latency.values()),
                "first": [first.get(j, latency[j]) for j in latency]}


def warm_analysis() -> None:
    """The result analysis once on a click track long enough to be beat-tracked (numba compiles its
    kernels at the first call: seconds, which would land on whichever setting meets them first)."""
    import numpy as np

    from server import finishing

    sr = 32000
    wave = np.zeros((1, 6 * sr), dtype=np.float32)
    for i in range(12):
        wave[0, i * sr // 2: i * sr // 2 + 400] = 0.5
    finishing.analyse(wave, sr)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def pack_linears(model, rows: int = 8) -> int:
    """EXPERIMENT (``--packed-linears``, this benchmark only): every fp32 ``nn.Linear`` computed by oneDNN
    from weights reordered once (``torch.ops.mkldnn._reorder_linear_weight`` with a batch hint of ``rows``),
    instead of ``F.linear``, which packs the weights again at every call: at 1 thread a [4, 1024] x
    [1024, 4096] product costs 411 us against F.linear's 1552 (one row: 358 vs 449). With a hint of 4 or 8
    a row's result is bit-identical at any batch size (1-100 rows checked), but not to ``F.linear``'s, so
    the model's agreement with transformers no longer holds, and the packed copy is not trained; that is
    why this is not a serving option yet. -> the number of layers packed."""
    import types

    import torch.nn as nn

    def forward(self, x):
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self._packed, self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], y.shape[-1])

    n = 0
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu":
            m._packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), rows)
            m.forward = types.MethodType(forward, m)
            n += 1
    return n


def bench_jobs(ns: list[int], rounds: int, duration: float, tokens: int, arrivals: list[str], every_ms: float,
               settings: list[str], packed: bool = False) -> None:
    model = M2UGen.from_config(mid_config())
    model.preload("decoder")
    if packed:
        with torch.no_grad():
            print(f"EXPERIMENT: {pack_linears(model)} linear layers on prepacked oneDNN weights (--packed-linears)")
    with tempfile.TemporaryDirectory() as tmp:
        apps = {name: start(model, SETTINGS[name][0] or max(ns), SETTINGS[name][1], Path(tmp) / name)
                for name in settings}
        try:
            warm_analysis()
            for name, app in apps.items():  # warm-up: first-call costs (allocations, librosa) out of the figures
                run_jobs(app.endpoint, 2, duration, tokens, 99)
            print(f"\n## {rounds} round(s) per N, settings taking turns; 1 job = {duration:g} s of music, "
                  f"{tokens} reply tokens ({torch.get_num_threads()} threads); ratio = jobs/s / serial's")
            print(f"{'arrival':>16} | {'jobs':>4} | {'setting':>10} | {'jobs/s':>6} | {'ratio':>5} | "
                  f"{'first progress p50 s':>20} | {'latency p50 / p99 s':>19}")
            for arrival in arrivals:
                every = every_ms / 1000 if arrival == "staggered" else 0.0
                label = f"every {every_ms:g} ms" if every else "burst"
                for n in ns:
                    runs = {k: [] for k in apps}
                    for r in range(rounds):
                        order = list(apps) if r % 2 == 0 else list(apps)[::-1]
                        for k in order:
                            runs[k].append(run_jobs(apps[k].endpoint, n, duration, tokens, r, every))
                    thr = {k: n / statistics.median(x["wall"] for x in runs[k]) for k in apps}
                    for k in apps:
                        lat = [v for x in runs[k] for v in x["latency"]]
                        first = [v for x in runs[k] for v in x["first"]]
                        ratio = f"{thr[k] / thr['serial']:>5.2f}" if "serial" in thr else "  -  "
                        print(f"{label:>16} | {n:>4} | {k:>10} | {thr[k]:>6.3f} | {ratio} | {pct(first, 50):>20.2f} | "
                              f"{pct(lat, 50):>8.2f} / {pct(lat, 99):>8.2f}", flush=True)
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
    ap.add_argument("--duration", type=float, default=2.0, help="seconds of music per job")
    ap.add_argument("--tokens", type=int, default=16, help="reply tokens per job")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--arrival", default="burst,staggered",
                    help="burst (all N jobs at once) and/or staggered (one every --every-ms), comma-separated")
    ap.add_argument("--every-ms", type=float, default=500.0, help="staggered arrivals: ms between two jobs")
    ap.add_argument("--settings", default="continuous,static,serial",
                    help="servers compared (continuous: jobs join the running decode; static: batches formed "
                         "once, today's; serial: --max-batch 1)")
    ap.add_argument("--no-steps", action="store_true", help="skip part 2 (the per-step roofline tables)")
    ap.add_argument("--no-jobs", action="store_true", help="skip part 1 (the job throughput table)")
    ap.add_argument("--compile", action="store_true", help="part 2 also compiled LLaMA steps (minutes on a CPU)")
    ap.add_argument("--packed-linears", action="store_true",
                    help="experiment: every setting's model computes its linears from prepacked oneDNN weights")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_jobs:
        bench_jobs([int(x) for x in args.jobs.split(",")], args.rounds, args.duration, args.tokens,
                   args.arrival.split(","), args.every_ms, args.settings.split(","), args.packed_linears)
    if not args.no_steps:
        bench_steps(args.compile)


if __name__ == "__main__":
    main()
