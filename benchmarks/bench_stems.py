"""Separation speed and memory of the real-size ``htdemucs`` architecture (random weights: no download).

    nice python benchmarks/bench_stems.py [--seconds 24 --short 8] [--device cpu|cuda] [--dtype float32|bfloat16|float16]

Builds demucs' own ``HTDemucs`` with the published htdemucs hyper-parameters (48 channels, depth 4,
nfft 4096, a 5-layer cross transformer over 512 bottom channels, 7.8 s segments; the parameter count
is printed) and runs ``m2ugen.stems.DemucsSeparator`` (the server's path: 25 % overlap, no shifts) on
random stereo audio at 44.1 kHz, each length in its own process so that its peak memory is its own:

- seconds of separation per minute of stereo audio (measured on ``--seconds``, extrapolated
  linearly: the work is one model call per segment);
- peak memory: the process's peak RSS (CPU) or torch's peak allocated memory (CUDA), for ``--short``
  and ``--seconds`` side by side: chunked separation keeps the model's memory flat, so the longer
  region costs only its audio (input + 4 stems at 44.1 kHz, float32, about 85 MB per minute).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from fractions import Fraction

HTDEMUCS = dict(channels=48, depth=4, nfft=4096, bottom_channels=512, t_layers=5, t_heads=8, t_hidden_scale=4.0,
                segment=Fraction(39, 5))


def one(seconds: float, device: str, dtype: str) -> dict:
    import resource

    import numpy as np
    import torch

    from demucs.htdemucs import HTDemucs
    from m2ugen.stems import DemucsSeparator
    from m2ugen.stem_ops import STEMS_4

    torch.manual_seed(0)
    model = HTDemucs(list(STEMS_4), **HTDEMUCS)
    params = sum(p.numel() for p in model.parameters())
    sep = DemucsSeparator(model, device=device, dtype=getattr(torch, dtype))
    wave = (np.random.default_rng(0).standard_normal((2, int(seconds * 44100))) * 0.1).astype(np.float32)
    if device == "cuda":
        sep.separate(wave[:, :44100], 44100)  # warm-up (kernels, cuDNN plans)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    stems = sep.separate(wave, 44100)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    assert set(stems) == set(STEMS_4) and all(v.shape == wave.shape for v in stems.values())
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"seconds": seconds, "elapsed_s": elapsed, "peak_mb": peak, "rss_before_mb": base, "params": params,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=24.0)
    ap.add_argument("--short", type=float, default=8.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.device, args.dtype)))
        return
    rows = []
    for seconds in (args.short, args.seconds):
        out = subprocess.run([sys.executable, __file__, "--one", str(seconds), "--device", args.device,
                              "--dtype", args.dtype], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    short, long_ = rows
    what = "peak allocated (CUDA)" if args.device == "cuda" else "peak RSS"
    print(f"htdemucs architecture, random weights: {long_['params'] / 1e6:.1f} M parameters; {args.device} "
          f"{args.dtype}, {long_['threads']} threads; 25 % overlap, no shifts")
    for r in rows:
        print(f"  {r['seconds']:5.1f} s of stereo 44.1 kHz: {r['elapsed_s']:7.2f} s "
              f"({r['elapsed_s'] / r['seconds'] * 60:6.1f} s per minute of audio), {what} {r['peak_mb']:7.0f} MB")
    print(f"separation: {long_['elapsed_s'] / long_['seconds'] * 60:.1f} s per minute of stereo audio "
          f"(measured on {long_['seconds']:g} s, extrapolated linearly)")
    print(f"memory: {what} {short['peak_mb']:.0f} MB for {short['seconds']:g} s, {long_['peak_mb']:.0f} MB for "
          f"{long_['seconds']:g} s: {(long_['peak_mb'] - short['peak_mb']) / (long_['seconds'] - short['seconds']) * 60:+.0f}"
          f" MB per extra minute (the audio itself: ~85 MB per minute for the input and 4 stems)")


if __name__ == "__main__":
    main()
