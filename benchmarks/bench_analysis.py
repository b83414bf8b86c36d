"""Analysis speed: seconds of ``m2ugen.analysis.analyze`` per minute of stereo 44.1 kHz audio.

A synthetic minute (120 BPM clicks with 4/4 accents, a I-vi-IV-V chord loop in harmonic tones and a
little noise) is analysed: first the cold call (the first in this process, which imports librosa and
loads its numba-compiled code), then ``--repeats`` warm calls, then each step alone (the steps
``analyze`` runs, in its order). Wall-clock and CPU (process) seconds are printed side by side: on a
shared machine wall time also counts other processes, CPU time does not. Target: warm <= 2 s per minute.

    .venv/bin/python benchmarks/bench_analysis.py [--minutes 1 --repeats 3 --threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SR = 44100


def synthetic_music(minutes: float, sr: int = SR) -> np.ndarray:
    n = int(minutes * 60 * sr)
    t = np.arange(n) / sr
    y = np.zeros(n)
    click_len = int(0.03 * sr)
    click = np.exp(-np.arange(click_len) / (0.004 * sr)) * np.sin(2 * np.pi * 1000 * np.arange(click_len) / sr)
    for k, start in enumerate(np.arange(0.0, n / sr - 0.05, 0.5)):
        i = int(start * sr)
        y[i:i + click_len] += (0.5 if k % 4 == 0 else 0.25) * click[: n - i]
    chords = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]  # C, Am, F, G
    bar = int(2.0 * sr)
    for b in range(0, n, bar):
        seg = slice(b, min(b + bar, n))
        for midi in chords[(b // bar) % 4]:
            f = 440.0 * 2 ** ((midi - 69) / 12)
            y[seg] += sum(0.05 / h * np.sin(2 * np.pi * f * h * t[seg]) for h in range(1, 5))
    rng = np.random.default_rng(0)
    left = y + 0.003 * rng.standard_normal(n)
    right = 0.9 * y + 0.003 * rng.standard_normal(n)
    return np.stack([left, right]).astype(np.float32)


def timed(fn, *args):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="BLAS/FFT threads (this machine has 2 cores)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    from m2ugen import analysis as A

    wave = synthetic_music(args.minutes)
    per_min = 1.0 / args.minutes
    print(f"audio: {args.minutes:g} min, stereo, {SR} Hz ({wave.shape[1]} samples); seconds per minute of audio")

    result, wall, cpu = timed(A.analyze, wave, SR)
    print(f"cold (first call, imports librosa): wall {wall * per_min:6.2f} s   cpu {cpu * per_min:6.2f} s")
    walls, cpus = [], []
    for _ in range(args.repeats):
        _, wall, cpu = timed(A.analyze, wave, SR)
        walls.append(wall * per_min)
        cpus.append(cpu * per_min)
    print(f"warm (median of {args.repeats}):              wall {np.median(walls):6.2f} s   cpu {np.median(cpus):6.2f} s"
          f"   target <= 2 s: wall {'met' if np.median(walls) <= 2.0 else 'NOT met'}, "
          f"cpu {'met' if np.median(cpus) <= 2.0 else 'NOT met'} (load average {os.getloadavg()[0]:.1f})")
    print(f"result: {result.summary}; meter {result.meter}")

    print("steps (warm, one run each):")
    _, w, c = timed(A.measure_loudness, wave, SR)
    print(f"  loudness (pyloudnorm)          wall {w * per_min:6.3f}   cpu {c * per_min:6.3f}")
    _, w, c = timed(A.measure_true_peak, wave, SR)
    print(f"  true peak (4x soxr)            wall {w * per_min:6.3f}   cpu {c * per_min:6.3f}")
    mono, w, c = timed(A.analysis_signal, wave, SR)
    print(f"  downmix + resample to {A.ANALYSIS_SR}   wall {w * per_min:6.3f}   cpu {c * per_min:6.3f}")
    beats, w, c = timed(A.track_beats, mono)
    print(f"  beats (onsets + tracker + fit) wall {w * per_min:6.3f}   cpu {c * per_min:6.3f}")
    _, w, c = timed(A.estimate_meter, mono, beats)
    print(f"  meter (beat accents)           wall {w * per_min:6.3f}   cpu {c * per_min:6.3f}")
    _, w, c = timed(A.estimate_key, mono)
    print(f"  key (CQT chroma + profiles)    wall {w * per_min:6.3f}   cpu {c * per_min:6.3f}")


if __name__ == "__main__":
    main()
