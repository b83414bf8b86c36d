"""MusicGen decode speed: our batched loop (m2ugen.musicgen_loop) vs the same rows one by one, and vs
transformers' ``generate`` at batch 1, measured side by side in one run.

Random weights, nothing downloaded. ``--config tiny`` is the tiny preset's decoder; ``--config mid`` the
same with a wider, deeper decoder (hidden 512, 8 layers, 8 heads, ffn 2048: about 1/10 of musicgen-small's
per-step cost). Every row is a text row with guidance 3.5 (two slots) and its own seed.

- "batched": the rows of one batch through ``MusicGenLoop.run`` at once;
- "serial": the same rows through the loop one after another;
- "transformers" / "loop B=1": a whole ``generate`` call (T5, decode, EnCodec) with either engine;
- with ``--compile``: "batched" runs the compiled step, "batched eager" the same batch eagerly.

steps/s counts decoder steps of the loop (one per token position, all rows together); row_tokens/s counts
every row's own tokens (what batching multiplies).

    .venv/bin/python benchmarks/bench_musicgen_loop.py [--config tiny|mid --duration 1 --batches 1 2 4 8
                                                        --threads 1 --compile --repeat 3 --device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from m2ugen.config import M2UGenConfig
from m2ugen.decoders import DecodeRow, MusicGenDecoder, build_decoder
from m2ugen.musicgen_loop import MusicGenLoop

MID_DECODER = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, ffn_dim=2048)
CAPTIONS = ["a calm piano melody", "loud drums and distorted guitars", "wide synth pad", "jazz trio, brushed drums",
            "lo-fi hip hop beat", "orchestral strings", "acoustic folk guitar", "techno with a deep bass"]


def build(config: str = "tiny", compile: bool = False, device: str = "cpu") -> MusicGenDecoder:
    """The tiny preset's MusicGen, or ("mid") the same with a wider, deeper decoder."""
    cfg = M2UGenConfig.preset("tiny")
    if config == "mid":
        dec = dict(cfg.decoder_config, decoder=dict(cfg.decoder_config["decoder"], **MID_DECODER))
        cfg = cfg.replace(decoder_config=dec)
    elif config != "tiny":
        raise ValueError(f"config must be 'tiny' or 'mid', got {config!r}")
    d = build_decoder(cfg, device)
    d.compile = compile
    return d


def _timed_pair(a, b, repeat: int) -> tuple[float, float]:
    """Best-of-``repeat`` seconds of ``a`` and ``b``, timed in alternation after one warm-up each (and
    compilation): a shared machine's load spikes hit both, and the minimum drops them."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    a(), b()
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t0)
    return min(ta), min(tb)


def musicgen_step_rows(config: str = "tiny", batch_sizes=(1, 2, 4, 8), duration_s: float = 1.0,
                       compile: bool = False, repeat: int = 3, threads: int | None = None,
                       with_transformers: bool = True, device: str = "cpu") -> list[dict]:
    """One dict per measurement: {"config", "engine", "batch", "seconds", "steps", "steps_per_s",
    "row_tokens_per_s", and for "batched" "speedup_vs_serial"; with ``compile`` also "batched eager" rows
    with "compiled_speedup" (eager seconds / compiled seconds of the same batch)}."""
    if threads is not None:
        torch.set_num_threads(threads)
    d = build(config, compile, device)
    loop = d._loop()
    eager = MusicGenLoop(d.model)
    n = d.num_new_tokens(duration_s)
    out: list[dict] = []

    def rows(b: int) -> list[DecodeRow]:
        return [DecodeRow(text=CAPTIONS[i % len(CAPTIONS)], duration_s=duration_s, seed=i) for i in range(b)]

    def record(engine: str, b: int, seconds: float, steps: int, **extra) -> dict:
        row = dict(config=config, engine=engine, batch=b, seconds=seconds, steps=steps, steps_per_s=steps / seconds,
                   row_tokens_per_s=b * n / seconds, **extra)
        out.append(row)
        return row

    for b in batch_sizes:
        prepared = [d._loop_row(r)[0] for r in rows(b)]

        def batched():
            for r, p in zip(rows(b), prepared):  # fresh generators: every run samples the same codes
                p.generator = torch.Generator(d.device).manual_seed(r.seed)
            loop.run(prepared)

        def serial():
            for r, p in zip(rows(b), prepared):
                p.generator = torch.Generator(d.device).manual_seed(r.seed)
                loop.run([p])

        t_batch, t_serial = _timed_pair(batched, serial, repeat)
        record("serial", b, t_serial, b * n)
        record("batched", b, t_batch, n, speedup_vs_serial=t_serial / t_batch)
        if compile:  # the same batch through an eager loop on the same model, side by side
            def batched_eager():
                for r, p in zip(rows(b), prepared):
                    p.generator = torch.Generator(d.device).manual_seed(r.seed)
                eager.run(prepared)

            t_compiled, t_eager = _timed_pair(batched, batched_eager, repeat)
            record("batched eager", b, t_eager, n, compiled_speedup=t_eager / t_compiled)
    if with_transformers:
        row = rows(1)[0]
        kw = dict(text=row.text, duration_s=duration_s, seed=0)
        t_ours, t_hf = _timed_pair(lambda: d.generate(**kw), lambda: d.generate(**kw, engine="transformers"), repeat)
        record("transformers", 1, t_hf, n)
        record("loop B=1", 1, t_ours, n, speedup_vs_transformers=t_hf / t_ours)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="tiny", choices=("tiny", "mid"))
    ap.add_argument("--duration", type=float, default=1.0)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--threads", type=int, default=1, help="1 on a shared CPU: spinning OpenMP threads thrash")
    ap.add_argument("--compile", action="store_true", help="torch.compile the decode step (inductor)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = ap.parse_args()
    rows = musicgen_step_rows(args.config, args.batches, args.duration, args.compile, args.repeat, args.threads,
                              device=args.device)
    print(f"MusicGen decode on {args.device}, config {args.config}, {args.duration:g} s per row, {args.threads} threads"
          f"{', compiled' if args.compile else ''}")
    print(f"{'engine':<13} {'batch':>5} {'seconds':>8} {'steps/s':>8} {'row tok/s':>10}  ratio")
    for r in rows:
        ratio = ""
        if "speedup_vs_serial" in r:
            ratio = f"x{r['speedup_vs_serial']:.2f} vs serial"
        elif "compiled_speedup" in r:
            ratio = f"compiled x{r['compiled_speedup']:.2f} vs this"
        elif "speedup_vs_transformers" in r:
            ratio = f"x{r['speedup_vs_transformers']:.2f} vs transformers"
        print(f"{r['engine']:<13} {r['batch']:>5} {r['seconds']:>8.3f} {r['steps_per_s']:>8.1f} "
              f"{r['row_tokens_per_s']:>10.1f}  {ratio}")


if __name__ == "__main__":
    main()
