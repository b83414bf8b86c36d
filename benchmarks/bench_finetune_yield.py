"""What a fine-tune job costs the interactive jobs beside it (docs/protocol.md §2.5), on the tiny server.

One in-process server (tiny preset, its own data dir). Measured in one run, side by side:

1. an interactive ``generate`` on the idle server (``--jobs`` times: latency from submit to ``done``);
2. the same ``generate`` submitted while a fine-tune trains (the fine-tune lends the model between two
   optimizer steps, so the extra wait is at most about one step);
3. the fine-tune's seconds per step alone and with those interleaved jobs.

Prints the seconds and the ratios (2 / 1: the cost of the fine-tune to an interactive job, in latency).

    .venv/bin/python benchmarks/bench_finetune_yield.py [--jobs 3 --steps 40 --clip-s 1 --threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--clip-s", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from m2ugen import M2UGen, M2UGenConfig
    from m2ugen.train import synthetic
    from server.app import ServerApp, ServerSettings, model_info
    from server.client import Client

    tmp = Path(tempfile.mkdtemp(prefix="m2u-bench-ft-"))
    os.environ["M2UGEN_CONFIG_DIR"] = str(tmp / "config")
    clips = []
    for i in range(3):
        synthetic.write_audio(tmp / f"c{i}.wav", i, seconds=args.clip_s + 0.5)
        clips.append({"path": str(tmp / f"c{i}.wav"), "caption": synthetic.caption(i)})
    model = M2UGen.from_config(M2UGenConfig.preset("tiny"))
    app = ServerApp(model, model_info(model, preset="tiny"),
                    ServerSettings(port=0, data_dir=tmp / "data", write_discovery=False))
    app.start()
    quick = {"prompt": "a warm piano tune", "duration": 0.5, "max_new_tokens": 4, "seed": 1}
    train = {"adapter_name": "bench", "steps": args.steps, "clip_s": args.clip_s, "save_every": 10 ** 4, "seed": 0}

    def wait(c, job):
        while True:
            m = c.recv(timeout_s=600)
            if m is not None and m.job == job and m.op in ("done", "error", "cancelled"):
                assert m.op == "done", m.header
                return m

    def generate(c) -> float:
        t0 = time.perf_counter()
        wait(c, c.call("submit", kind="generate", params=quick).job)
        return time.perf_counter() - t0

    def finetune(c, name, during: bool) -> tuple[float, list[float]]:
        job = c.call("submit", kind="finetune", params={**train, "adapter_name": name},
                     inputs={"audio_set": [{**c.upload(x["path"]), "caption": x["caption"]} for x in clips]}).job
        t0, first, latencies, pending = time.perf_counter(), None, [], None
        while True:
            m = c.recv(timeout_s=600)
            if m is None:
                continue
            if m.job == job and m.op == "progress" and m.header.get("step") == 1:
                first = time.perf_counter()
            if during and first is not None and pending is None and len(latencies) < args.jobs:
                pending = (c.call("submit", kind="generate", params=quick).job, time.perf_counter())
            if pending is not None and m.job == pending[0] and m.op == "done":
                latencies.append(time.perf_counter() - pending[1])
                pending = None
            if m.job == job and m.op in ("done", "error", "cancelled"):
                assert m.op == "done", m.header
                return (time.perf_counter() - (first or t0)) / max(1, args.steps - 1), latencies

    try:
        with Client(app.endpoint, timeout_s=60) as c:
            generate(c)  # warm-up (first-call imports, analysis)
            idle = [generate(c) for _ in range(args.jobs)]
            step_alone, _ = finetune(c, "alone", during=False)
            step_shared, busy = finetune(c, "shared", during=True)
    finally:
        app.stop()
    mi, mb = statistics.median(idle), statistics.median(busy) if busy else float("nan")
    print(f"generate latency, idle server:          {mi:.3f} s (median of {len(idle)})")
    print(f"generate latency, during a fine-tune:   {mb:.3f} s (median of {len(busy)})   ratio {mb / mi:.2f}")
    print(f"fine-tune step, alone:                  {step_alone:.3f} s")
    print(f"fine-tune step, with {len(busy)} jobs between: {step_shared:.3f} s   ratio {step_shared / step_alone:.2f}")


if __name__ == "__main__":
    main()
