"""Multi-Band Diffusion cost: the real 32 kHz band UNet vs MusicGen's EnCodec decoder, side by side.

Random weights of the official shapes (m2ugen.mbd preset "musicgen-32khz": 4 bands, hidden 48, growth 4,
depth 4; EnCodec 32 kHz as in facebook/musicgen-small). For ``--seconds`` of audio it prints the
parameter count and weight bytes, the multiply-accumulates of one UNet call, then times on ``--device``:
one UNet call per dtype, the EnCodec decode of the same frames, and the ratio of a whole MBD decode
(bands x steps UNet calls, per channel) to the EnCodec decode. On CUDA also the peak extra memory of a
UNet call. Nothing is downloaded.

    .venv/bin/python benchmarks/bench_mbd.py [--seconds 1 --steps 20 --device cpu|cuda --threads 2 --repeat 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from m2ugen import mbd as M

ENCODEC_32K = dict(sampling_rate=32000, audio_channels=1, num_filters=64, hidden_size=128, codebook_size=2048,
                   codebook_dim=128, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_lstm_layers=2,
                   kernel_size=7, last_kernel_size=7, residual_kernel_size=3, num_residual_layers=1,
                   use_causal_conv=False, normalize=False, pad_mode="reflect", compress=2, trim_right_ratio=1.0)


def _timed(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=M.OFFICIAL_STEPS)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = M.MBDConfig.preset("musicgen-32khz")
    band = cfg.bands[0]
    frames = max(1, round(args.seconds * 50))
    samples = frames * 640
    params = M.parameter_count(band)
    macs = M.unet_macs(band, samples)
    calls = cfg.n_bands * args.steps
    print(f"MBD 32 kHz: {cfg.n_bands} bands x {params / 1e6:.1f} M = {cfg.n_bands * params / 1e6:.0f} M parameters "
          f"({cfg.n_bands * params * 4 / 2**30:.2f} GiB fp32, {cfg.n_bands * params * 2 / 2**30:.2f} GiB bf16)")
    print(f"{args.seconds:g} s of audio ({samples} samples): {macs / 1e9:.1f} GMAC per UNet call, "
          f"{calls} calls per channel = {2 * macs * calls / 1e12:.2f} TFLOP")

    from transformers import EncodecConfig, EncodecModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = M.DiffusionUnet(band).eval().requires_grad_(False).to(device)
        codec = EncodecModel(EncodecConfig(**ENCODEC_32K)).eval().requires_grad_(False).to(device)
    codes = torch.randint(0, 2048, (1, 1, 4, frames), device=device)
    x = torch.randn(1, 1, samples, device=device)
    cond = torch.randn(1, 128, frames, device=device)

    with torch.no_grad():
        t_encodec = _timed(lambda: codec.decode(codes, [None]), args.repeat, device)
        print(f"EnCodec decode: {t_encodec * 1000:.1f} ms")
        dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
        for dtype in dtypes:
            unet.to(dtype)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t_call = _timed(lambda: unet(x.to(dtype), 500, cond.to(dtype)), args.repeat, device)
            extra = ""
            if device.type == "cuda":
                extra = f", peak activations {(torch.cuda.max_memory_allocated() - base) / 2**20:.0f} MiB"
            name = str(dtype).split(".")[-1]
            print(f"UNet call {name}: {t_call * 1000:.1f} ms ({2 * macs / t_call / 1e12:.2f} TFLOP/s){extra}; whole MBD decode ~{t_call * calls:.2f} s per channel = "
                  f"{t_call * calls / t_encodec:.0f}x the EnCodec decode")


if __name__ == "__main__":
    main()
