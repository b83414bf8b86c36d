"""Decode-step roofline: how close a memory-bound decode step comes to reading its weights once.

A decode step at small batch reads every weight once, so its floor is ``weight bytes / memory
bandwidth``. Here the bandwidth is measured on the spot with a large GEMV (matrix bytes / time, fp32,
the fastest streaming kernel on CPU and GPU alike), and each step's time is printed beside its floor
as a fraction (floor / time: 1.0 is the roofline).

Importable pieces (the serving benchmark prints them too):
- ``gemv_bandwidth(device)`` -> bytes/s;
- ``step_fraction(step_fn, weight_bytes, bandwidth)`` -> dict: time any decoder step (LLaMA, MusicGen)
  against its floor;
- ``llama_rows(...)`` -> list of dicts: the M2UGen LLaMA ``decode_step`` at a mid-size random config
  (rank-16 LoRA, biases, prefix adapters, as the real model), fp32 and bf16, eager and compiled.

    .venv/bin/python benchmarks/roofline.py [--dim 1024 --layers 8 --batch 1 --device cpu
                                             --dtypes float32,bfloat16 --no-compile]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from m2ugen.config import M2UGenConfig
from m2ugen.llama import Transformer, build_adapters
from m2ugen.quant import decode_weight_bytes, quantize_llama_int8

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], device, *, warmup: int, iters: int) -> float:
    """Median seconds of one call of ``fn`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


@torch.no_grad()
def gemv_bandwidth(device="cpu", *, megabytes: int = 256, iters: int = 10) -> float:
    """Memory bandwidth in bytes/s: an fp32 [N, N] matrix of about ``megabytes`` times a vector."""
    n = int((megabytes * 2**20 / 4) ** 0.5)
    w = torch.randn(n, n, device=device)
    x = torch.randn(n, device=device)
    seconds = _time(lambda: torch.mv(w, x), device, warmup=2, iters=iters)
    return w.numel() * w.element_size() / seconds


def step_fraction(step_fn: Callable[[], object], weight_bytes: int, bandwidth: float, *, device="cpu",
                  warmup: int = 2, iters: int = 10) -> dict:
    """Time ``step_fn`` (one decoder step) against its floor ``weight_bytes / bandwidth``.

    Returns step_ms, floor_ms, fraction (floor / step: 1.0 = at the roofline) and steps_per_s.
    """
    seconds = _time(step_fn, device, warmup=warmup, iters=iters)
    floor = weight_bytes / bandwidth
    return {"step_ms": seconds * 1e3, "floor_ms": floor * 1e3, "fraction": floor / seconds,
            "steps_per_s": 1.0 / seconds, "weight_mb": weight_bytes / 2**20}


def roofline_config(dim: int = 1024, n_layers: int = 8, *, vocab_size: int = 32008, max_seq_len: int = 512,
                    head_dim: int = 128) -> M2UGenConfig:
    """A random M2UGen LLaMA of the given size: the official extras (LoRA 16, biases, 3 x q prefix layers)."""
    return M2UGenConfig(name="roofline", dim=dim, n_layers=n_layers, n_heads=max(1, dim // head_dim),
                        vocab_size=vocab_size, max_seq_len=max_seq_len, query_layer=max(1, min(6, n_layers // 3)))


@torch.no_grad()
def decode_step_fn(llama: Transformer, *, batch: int = 1, prompt_len: int = 64, seed: int = 0) -> Callable[[], object]:
    """Prefill ``batch`` random prompts and return a function running one ``decode_step`` (the cache stays set up).

    Every call decodes at the same position (the work of a step does not depend on it: static shapes).
    Call ``llama.clear_cache()`` when done.
    """
    cfg = llama.cfg
    device = llama.tok_embeddings.weight.device
    g = torch.Generator().manual_seed(seed)
    adapters = build_adapters(cfg, torch.randn(cfg.n_prefix, cfg.dim, generator=g).to(device),
                              audio_feats=torch.randn(batch, 1, cfg.dim, generator=g).to(device))
    tokens = torch.randint(3, cfg.vocab_size, (batch, prompt_len + 1), generator=g).to(device)
    llama.setup_cache(batch, prompt_len + 1)
    llama(tokens[:, :prompt_len], adapters=adapters, logits_for="none")
    kv = llama.adapter_kv(adapters)
    key_valid = torch.ones(batch, llama.cache_len, dtype=torch.bool, device=device)
    cache_pos = torch.tensor([prompt_len], device=device)
    rope_pos = torch.full((batch,), prompt_len, device=device)
    step_tokens = tokens[:, prompt_len:]

    @torch.no_grad()
    def step():
        return llama.decode_step(step_tokens, cache_pos, rope_pos, key_valid, kv)

    return step


def measure_decode(llama: Transformer, batch: int, compiled: bool, bandwidth: float, *, device="cpu",
                   iters: int = 10) -> dict:
    """One LLaMA decode step at ``batch`` (compiled first when asked) beside its floor: step_fraction's
    fields plus tokens_per_s and compile_s (the first call's seconds; 0 eager). Leaves the model eager."""
    wbytes = decode_weight_bytes(llama)
    try:
        if compiled:
            llama.compile_decode()
        step = decode_step_fn(llama, batch=batch)
        try:
            t0 = time.perf_counter()
            step()
            _sync(device)
            first = time.perf_counter() - t0
            out = step_fraction(step, wbytes, bandwidth, device=device, iters=iters)
        finally:
            llama.clear_cache()
    finally:
        llama.eager_decode()
    return {**out, "tokens_per_s": out["steps_per_s"] * batch, "compile_s": first if compiled else 0.0}


def llama_rows(dim: int = 1024, n_layers: int = 8, *, batch: int = 1, device="cpu",
               dtypes: tuple[str, ...] = ("float32", "bfloat16"), compile: tuple[bool, ...] = (False, True),
               int8: bool = False, bandwidth: float | None = None, iters: int = 10,
               on_progress: Callable[[str], None] | None = None) -> list[dict]:
    """The LLaMA decode step at (dim, n_layers) for each dtype x (eager, compiled) [x int8], beside its floor.

    Each row: name, dtype, compiled, int8, batch, step_ms, floor_ms, fraction, tokens_per_s, weight_mb,
    compile_s (first compiled call), or error (the row's exception, the other rows still run).
    """
    say = on_progress or (lambda msg: None)
    if bandwidth is None:
        say("measuring GEMV bandwidth")
        bandwidth = gemv_bandwidth(device)
    cfg = roofline_config(dim, n_layers)
    rows = []
    for dtype_name in dtypes:
        for quant in ((False, True) if int8 else (False,)):
            torch.manual_seed(0)
            with torch.device(device):
                llama = Transformer(cfg).eval()
            llama.to(DTYPES[dtype_name])
            if quant:
                quantize_llama_int8(llama)
            wbytes = decode_weight_bytes(llama)
            for compiled in compile:
                name = f"LLaMA dim {dim} x {n_layers} layers, {dtype_name}{' int8' if quant else ''}, " \
                       f"{'compiled' if compiled else 'eager'}, batch {batch}"
                row = {"name": name, "dtype": dtype_name, "compiled": compiled, "int8": quant, "batch": batch,
                       "bandwidth_gbs": bandwidth / 1e9}
                say(name)
                try:
                    row.update(measure_decode(llama, batch, compiled, bandwidth, device=device, iters=iters))
                except Exception as e:  # one failing configuration must not lose the others
                    row["error"] = f"{type(e).__name__}: {e}"
                rows.append(row)
            del llama
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'configuration':<62} {'step ms':>9} {'floor ms':>9} {'of floor':>9} {'tok/s':>8} {'compile s':>9}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:<62} error: {r['error'][:200]}")
        else:
            lines.append(f"{r['name']:<62} {r['step_ms']:9.2f} {r['floor_ms']:9.2f} {r['fraction']:9.2f} "
                         f"{r['tokens_per_s']:8.1f} {r.get('compile_s', 0.0):9.1f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--no-compile", action="store_true", help="eager rows only")
    ap.add_argument("--int8", action="store_true", help="also the int8 weight-only LLaMA (torchao)")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args(argv)
    bw = gemv_bandwidth(args.device)
    print(f"device {args.device}, {torch.get_num_threads()} threads; fp32 GEMV bandwidth {bw / 1e9:.1f} GB/s "
          f"(the floor of a step = its weight bytes / this)")
    rows = llama_rows(args.dim, args.layers, batch=args.batch, device=args.device,
                      dtypes=tuple(args.dtypes.split(",")), compile=(False,) if args.no_compile else (False, True),
                      int8=args.int8, bandwidth=bw, iters=args.iters,
                      on_progress=lambda msg: print(f"  ... {msg}", flush=True))
    print(format_rows(rows))
    return rows


if __name__ == "__main__":
    main()
