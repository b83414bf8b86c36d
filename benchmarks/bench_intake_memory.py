"""Memory held by queued jobs whose input audio is a decompression bomb (issue 9).

The worst case a client can send under the default limits: a FLAC of a few hundred KB that declares
600 s of 8-channel 48 kHz audio. Decoded as declared (float32) that is 922 MB a job, 14.7 GB for a
full queue of 16. The server decodes it block by block into the intake format (at most stereo,
32 kHz, 16 bit; 8 channels are averaged to mono): 38 MB a job. This script fills a queue of 16 behind
a worker that is held, and prints the RSS growth and the bytes the jobs hold, beside the naive figure.
(The model is a stand-in that waits: the figure is the server's, not a model's.)

    python benchmarks/bench_intake_memory.py [--seconds 600] [--jobs 16]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.app import ServerApp, ServerSettings, model_info  # noqa: E402
from server.client import Client  # noqa: E402
from server.handlers import Limits  # noqa: E402


class HeldModel:
    """Stand-in with M2UGen's chat() interface that waits until released (keeps every job queued)."""

    name = "held"
    sample_rate = 32000
    config = SimpleNamespace(is_tiny=True, max_new_tokens=1, name="held")

    def __init__(self):
        self.release = threading.Event()

    def chat(self, prompt, **kw):
        self.release.wait()
        return SimpleNamespace(text="", audio=None, sample_rate=32000, seed=0, raw_text="", timings={})


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--jobs", type=int, default=16)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="m2ugen-bench-intake-"))
    bomb = tmp / "bomb.flac"
    t0 = time.perf_counter()
    with sf.SoundFile(bomb, "w", samplerate=48000, channels=8, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((48000, 8), np.float32)
        for i in range(int(args.seconds)):
            block[0] = 0.5 if i % 2 else 0.0
            f.write(block)
    print(f"bomb: {bomb.stat().st_size / 1024:.0f} KiB on disk, declares {args.seconds:g} s x 8 ch x 48 kHz "
          f"(written in {time.perf_counter() - t0:.1f} s)")
    model = HeldModel()
    app = ServerApp(model, model_info(model, preset="held"),
                    ServerSettings(port=0, data_dir=tmp / "data", write_discovery=False,
                                   limits=Limits(queue_size=args.jobs + 1)))
    app.start()
    naive = args.seconds * 48000 * 8 * 4 / 2**20
    rss0 = rss_mb()
    t0 = time.perf_counter()
    with Client(app.endpoint, timeout_s=600) as c:
        ref = c.upload(bomb)  # sent once; every job names the same upload
        replies = [c.call("submit", kind="ask", params={"prompt": "x"}, inputs={"audio": ref})
                   for _ in range(args.jobs)]
        took = time.perf_counter() - t0
        held = app.handlers.held_audio_bytes() / 2**20
        rss1 = rss_mb()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        accepted = sum(r.op == "accepted" for r in replies)
        model.release.set()
    app.stop()
    print(f"{accepted}/{args.jobs} accepted in {took:.1f} s ({took / args.jobs:.2f} s each to read and decode)")
    print(f"{'':34} {'per job':>10} {'all jobs':>10}")
    print(f"{'decoded as declared (float32)':34} {naive:>8.1f} MB {naive * args.jobs:>8.0f} MB")
    print(f"{'held by the queued jobs':34} {held / max(accepted, 1):>8.1f} MB {held:>8.0f} MB")
    print(f"{'RSS growth of the server process':34} {(rss1 - rss0) / max(accepted, 1):>8.1f} MB {rss1 - rss0:>8.0f} MB")
    print(f"peak RSS of the process: {peak:.0f} MB; ratio naive / held = {naive * accepted / max(held, 1e-9):.1f}x")


if __name__ == "__main__":
    main()
