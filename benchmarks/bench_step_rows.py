"""Where a continuous batch's step time goes: the MusicGen stage's and the LLaMA stage's step at 1 row and at
N rows, measured side by side in one run, split into matmul / attention / other ops / Python.

The mid-serving config of ``bench_serving.py`` (LLaMA 8 x 1024, MusicGen 12 x 512; guided MusicGen rows take
two cache slots). Each stage runs the real ``step()`` (sampling, per-row bookkeeping and the decode forward) in
steady state: N rows admitted and prefilled, then ``--steps`` steps timed, the row counts taking turns
(ABAB) and the fastest round kept (a loaded box only adds time). The split comes from ``torch.profiler``
over as many steps, profiled in every round, the round with the least wall time kept: self CPU time of
the matmul kernels (addmm, mm, bmm, ...), of the attention (scaled_dot_product_attention and what it calls,
the cache writes), of every other op, and the rest of the wall time (Python: the interpreter between ops);
the profiler's own overhead lands in that last column, so read it as an upper bound.

    .venv/bin/python benchmarks/bench_step_rows.py [--rows 1,4 --steps 20 --rounds 3 --threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_serving import PROMPTS, mid_config  # noqa: E402
from m2ugen import M2UGen  # noqa: E402
from m2ugen.decoders import DecodeRow  # noqa: E402
from m2ugen.musicgen_stage import MusicGenStage  # noqa: E402
from m2ugen.text_stage import TextRow, TextStage  # noqa: E402

MATMUL = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
ATTENTION = ("scaled_dot_product", "aten::_softmax", "aten::index_put", "aten::_index_put_impl",
             "aten::masked_fill", "aten::index_copy")


def music_stage(model, rows: int, seconds: float = 30.0) -> MusicGenStage:
    """A MusicGen stage with ``rows`` guided rows prefilled and decoding (long enough not to finish)."""
    dec = model.decoder
    stage = MusicGenStage(dec._loop(), 2 * max(rows, 1), prefill_chunk=10_000)
    for i in range(rows):
        loop_row, _ = dec._loop_row(DecodeRow(text=PROMPTS[i % len(PROMPTS)], duration_s=seconds, seed=i))
        stage.admit(loop_row)
    for _ in range(3):
        stage.step()
    return stage


def text_stage(model, rows: int, prompt_tokens: int = 77) -> TextStage:
    """A LLaMA stage with ``rows`` rows of ``prompt_tokens`` prompts prefilled and decoding (no stop)."""
    stage = TextStage(model.llama, model.tokenizer, max(rows, 1), stop_text="\x00never")
    vocab = model.llama.cfg.vocab_size
    for i in range(rows):
        ids = [(7 * i + 3 * j) % (vocab - 10) + 5 for j in range(prompt_tokens)]
        stage.admit(TextRow(ids=ids, max_new_tokens=10_000, temperature=0.6, top_p=0.95,
                            generator=torch.Generator().manual_seed(i)))
    for _ in range(2):
        stage.step()
    return stage


def timed(stage, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        stage.step()
    return (time.perf_counter() - t0) / steps * 1000


def split(stage, steps: int) -> dict[str, float]:
    """ms per step: matmul / attention / other ops / Python (wall minus every op's self time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            stage.step()
        wall = (time.perf_counter() - t0) * 1000
    out = {"matmul": 0.0, "attention": 0.0, "other ops": 0.0}
    for ev in prof.key_averages():
        ms = ev.self_cpu_time_total / 1000
        if any(ev.key.startswith(m) for m in MATMUL):
            out["matmul"] += ms
        elif any(a in ev.key for a in ATTENTION):
            out["attention"] += ms
        elif ev.key.startswith("aten::") or ev.key.startswith("prim::"):
            out["other ops"] += ms
    out["python"] = max(0.0, wall - sum(out.values()))
    return {k: v / steps for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1,4", help="row counts compared (comma-separated)")
    ap.add_argument("--steps", type=int, default=20, help="steps timed per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stages", default="music,text")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = M2UGen.from_config(mid_config())
    model.preload("decoder")
    counts = [int(x) for x in args.rows.split(",")]
    build = {"music": music_stage, "text": text_stage}
    print(f"## step time per row count ({args.threads} thread(s), {args.steps} steps x {args.rounds} rounds, "
          f"fastest round; split: torch.profiler, the fastest profiled round)")
    print(f"{'stage':>6} | {'rows':>4} | {'step ms':>7} | {'x 1 row':>7} | {'matmul':>6} | {'attention':>9} | "
          f"{'other ops':>9} | {'python':>6}")
    for name in args.stages.split(","):
        times: dict[int, list[float]] = {n: [] for n in counts}
        parts: dict[int, list[dict]] = {n: [] for n in counts}
        for r in range(args.rounds):
            for n in (counts if r % 2 == 0 else counts[::-1]):
                stage = build[name](model, n)
                times[n].append(timed(stage, args.steps))
                parts[n].append(split(stage, args.steps))
                if name == "text":
                    stage.release()
        base = min(times[counts[0]])
        for n in counts:
            ms = min(times[n])
            p = min(parts[n], key=lambda d: sum(d.values()))
            print(f"{name:>6} | {n:>4} | {ms:>7.1f} | {ms / base:>7.2f} | {p['matmul']:>6.1f} | "
                  f"{p['attention']:>9.1f} | {p['other ops']:>9.1f} | {p['python']:>6.1f}", flush=True)

if __name__ == "__main__":
    main()
