"""Training throughput and peak memory of stage-1 steps at a mid-size config, four variants side by side:
feature cache off/on x gradient checkpointing off/on.

Each variant runs in its own process (so peaks do not mix): it builds the same seeded model, writes
nothing but its run folder, and reports training tokens/s over the timed steps (after one warm-up
step) and the peak RSS during those steps (Linux VmHWM, reset before the loop; on CUDA also the
peak allocated memory). Ratios are printed against the first variant.

    .venv/bin/python benchmarks/bench_train.py [--steps 3] [--clip-s 4] [--words 150]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = [("no cache, no ckpt", False, False), ("no cache, ckpt", False, True),
            ("cache, no ckpt", True, False), ("cache, ckpt", True, True)]


def mid_config():
    from m2ugen.config import M2UGenConfig

    mert = dict(M2UGenConfig.preset("tiny").mert_config)
    mert.update(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, conv_dim=[128] * 7)
    return M2UGenConfig.preset("tiny").replace(
        name="tiny", dim=384, n_layers=6, n_heads=6, multiple_of=128, lora_rank=16, query_layer=2,
        mert_config=mert, mert_layers=5, mert_dim=256, max_seq_len=1024)


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_data(root: Path, n: int, clip_s: float, words: int) -> None:
    from m2ugen.train import synthetic

    jpath = synthetic.write_dataset(root, "mucaps", n=n)
    for i in range(n):
        synthetic.write_audio(root / "MUCaps/audios" / f"mucaps_{i:04d}.wav", i, seconds=clip_s)
    caps = json.loads(jpath.read_text())
    long = {k: " ".join([v] * max(1, words // len(v.split()))) for k, v in caps.items()}
    jpath.write_text(json.dumps(long))


def child(args) -> None:
    import torch

    from m2ugen.model import M2UGen
    from m2ugen.train.config import TrainConfig
    from m2ugen.train.features import FeatureCache, precompute
    from m2ugen.train.data import read_datasets
    from m2ugen.train import trainer

    torch.manual_seed(0)
    model = M2UGen.from_config(mid_config())
    tcfg = TrainConfig.preset("tiny-stage1").replace(
        datasets=("mucaps",), batch_size=args.batch, max_steps=args.steps + 1, save_every=10_000, save_at_end=False,
        grad_checkpointing=args.ckpt, max_words=1024, log_with="none", progress_bar=False,
        feature_cache=str(Path(args.data) / "cache") if args.cache else None)
    if args.cache:  # filled once before timing (what the first epoch of a cached run pays)
        precompute(model, read_datasets(["mucaps"], args.data), FeatureCache(tcfg.feature_cache, model.cfg))
    marks: dict[str, float] = {}

    def on_event(e):
        if e["kind"] == "step" and e["step"] == 1:  # warm-up step done: start timing
            _reset_peak()
            marks["t"] = time.perf_counter()
            marks["tokens"] = e.get("tokens", 0)

    tokens = {"n": 0}
    real = trainer._forward_backward

    def counting(acc, model_, sm, batch, *rest):
        if "t" in marks:
            tokens["n"] += int(batch.input_ids.numel())
        return real(acc, model_, sm, batch, *rest)

    trainer._forward_backward = counting
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train(model, tcfg, args.data, Path(args.data) / f"run-{args.cache}-{args.ckpt}", on_event=on_event)
    seconds = time.perf_counter() - marks["t"]
    out = {"tokens_per_s": tokens["n"] / seconds, "peak_rss_mb": _peak_rss_mb(), "tokens": tokens["n"],
           "seconds": seconds}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps per variant")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--clip-s", type=float, default=4.0, help="seconds of audio per sample (MERT input)")
    ap.add_argument("--words", type=int, default=150, help="caption length in words (sequence length)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write_data(Path(tmp), n=args.batch * (args.steps + 1), clip_s=args.clip_s, words=args.words)
        print(f"mid-size config: LLaMA dim 384 x 6 layers, MERT 256 x 4 layers; batch {args.batch}, {args.clip_s:g} s clips, "
              f"~{args.words}-word captions, {args.steps} timed steps")
        rows = []
        for name, cache, ckpt in VARIANTS:
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            r = subprocess.run([sys.executable, __file__, "--child", "--data", tmp, "--cache", str(int(cache)),
                                "--ckpt", str(int(ckpt)), "--steps", str(args.steps), "--batch", str(args.batch)],
                               capture_output=True, text=True, env=env)
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            if r.returncode != 0 or not line:
                print(r.stdout[-2000:], r.stderr[-4000:], file=sys.stderr)
                return 1
            rows.append((name, json.loads(line[0][7:])))
        base = rows[0][1]
        print(f"{'variant':20s} {'tokens/s':>10s} {'x':>6s} {'peak RSS MB':>12s} {'x':>6s}"
              + ("  peak CUDA MB" if "peak_cuda_mb" in base else ""))
        for name, r in rows:
            extra = f"  {r['peak_cuda_mb']:.0f}" if "peak_cuda_mb" in r else ""
            print(f"{name:20s} {r['tokens_per_s']:10.1f} {r['tokens_per_s'] / base['tokens_per_s']:6.2f} "
                  f"{r['peak_rss_mb']:12.0f} {r['peak_rss_mb'] / base['peak_rss_mb']:6.2f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
