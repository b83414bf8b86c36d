"""Upload throughput on loopback beside a plain file copy, and the server's memory during an upload (issue 20).

The server runs in its own process (a stand-in model: the figures are the upload path's, not a
model's), so its RSS is measured apart from the client's. For each size, ``--rounds`` different 32-bit
float stereo 48 kHz WAVs are written; each round copies one with ``shutil.copyfile`` (the plain copy,
same disk, same page cache) and right after uploads it with ``Client.upload`` (a new file: handed over
by its descriptor, docs/protocol.md §2.2, the server's copy, hash and store), then uploads another new
file of the same size as bytes through the socket (``local_uploads=False``: what a remote client, another
user's or a Windows client does: chunks, the server's hash and store) into the same server, so each ratio compares runs under the same load
(the copies are kept, as the uploads are: each writes a new file into memory no deleted file just gave
back, which costs several times more on this VM); also printed: the best time of each, and the CPU
seconds each spends per GiB (the upload's: the client's and the server's), which a loaded box disturbs
least;
the median ratio is the figure (target >= 0.5). The server's peak RSS during each upload is read from
``VmHWM`` after resetting it (``/proc/PID/clear_refs``) and compared with its idle RSS (target: at most
1.5 x the file size above idle). Then the file is uploaded again (held: nothing is sent), a client of
another owner that remembers no hash sends it (on loopback: stored once) and submits it (decoded to
the intake format), with the peak printed again for the whole path.

    nice python benchmarks/bench_upload.py [--sizes 20 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.client import Client  # noqa: E402


def serve(data_dir: str) -> None:
    """The server process: a stand-in model, prints its endpoint, runs until stdin closes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_server import InstantModel

    from server.app import ServerApp, ServerSettings, model_info
    from server.handlers import Limits

    model = InstantModel()
    app = ServerApp(model, model_info(model, preset="instant-noop"),
                    ServerSettings(port=0, data_dir=Path(data_dir), write_discovery=False,
                                   limits=Limits(max_upload_mb=1024, max_audio_mb=1024)))
    print(app.start(), flush=True)
    sys.stdin.read()
    app.stop()


def rss(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def write_wav(path: Path, mb: int, seed: int = 0) -> None:
    """A 32-bit float stereo 48 kHz WAV of about ``mb`` MiB (a 10-minute take is ~230 MB; noise: nothing
    compresses or dedups it)."""
    import soundfile as sf

    frames = mb * 2**20 // 8
    rng = np.random.default_rng(seed)
    with sf.SoundFile(path, "w", samplerate=48000, channels=2, subtype="FLOAT") as f:
        for start in range(0, frames, 48000 * 10):
            n = min(48000 * 10, frames - start)
            f.write((rng.standard_normal((n, 2)) * 0.1).astype(np.float32))


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by this process (``pid`` None) or another one."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS: the peak from here on


def bench_size(tmp: Path, mb: int, rounds: int) -> None:
    srcs, byte_srcs = [], []
    for k in range(rounds):
        srcs.append(tmp / f"take{mb}-{k}.wav")
        write_wav(srcs[-1], mb, seed=k)
        byte_srcs.append(tmp / f"bytes{mb}-{k}.wav")
        write_wav(byte_srcs[-1], mb, seed=1000 + k)
    size = srcs[0].stat().st_size
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(tmp / f"data{mb}")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ratios, peaks, copy_times, up_times, copy_cpu, up_cpu = [], [], [], [], [], []
    b_ratios, b_peaks, b_times, b_cpu = [], [], [], []
    try:
        endpoint = server.stdout.readline().strip()
        with Client(endpoint, timeout_s=120, hash_cache=False) as c, \
                Client(endpoint, timeout_s=120, hash_cache=False, local_uploads=False) as cb:
            c.upload(b"warm up the path")
            cb.upload(b"warm up the byte path")
            time.sleep(0.5)
            idle = rss(server.pid)
            for src, bsrc in zip(srcs, byte_srcs):
                src.read_bytes()  # in the page cache for both, as a DAW's recent take is
                bsrc.read_bytes()
                c0, t = cpu_s(), time.perf_counter()
                shutil.copyfile(src, tmp / f"copy-{src.name}")
                copy_s = time.perf_counter() - t
                copy_cpu.append(cpu_s() - c0)
                reset_peak(server.pid)
                c0, s0, t = cpu_s(), cpu_s(server.pid), time.perf_counter()
                ref = c.upload(src)
                up_s = time.perf_counter() - t
                up_cpu.append(cpu_s() - c0 + cpu_s(server.pid) - s0)  # the client's and the server's
                copy_times.append(copy_s)
                up_times.append(up_s)
                peaks.append(rss(server.pid, "VmHWM") - idle)
                copy_rate, up_rate = size / copy_s / 2**20, size / up_s / 2**20
                ratios.append(up_rate / copy_rate)
                reset_peak(server.pid)
                c0, s0, t = cpu_s(), cpu_s(server.pid), time.perf_counter()
                cb.upload(bsrc)
                b_s = time.perf_counter() - t
                b_cpu.append(cpu_s() - c0 + cpu_s(server.pid) - s0)
                b_times.append(b_s)
                b_peaks.append(rss(server.pid, "VmHWM") - idle)
                b_rate = size / b_s / 2**20
                b_ratios.append(b_rate / copy_rate)
                print(f"{size / 2**20:6.1f} MiB  plain copy {copy_rate:7.0f} MiB/s   upload {up_rate:7.0f} MiB/s "
                      f"= {up_rate / copy_rate:.2f} of the copy (server peak +{peaks[-1] / 2**20:.1f} MiB "
                      f"= {peaks[-1] / size:.2f} x the file)   as bytes {b_rate:7.0f} MiB/s = {b_rate / copy_rate:.2f} "
                      f"(+{b_peaks[-1] / 2**20:.1f} MiB = {b_peaks[-1] / size:.2f} x)", flush=True)
            t = time.perf_counter()
            again = c.upload(src)  # a regenerate: offered by the hash this client remembers, held, not sent
            again_s = time.perf_counter() - t
        with Client(endpoint, timeout_s=120, token=False, hash_cache=False) as other:
            t = time.perf_counter()
            proved = other.upload(src)  # another owner that remembers no hash: on loopback it sends the file
            # (stored once); a client that remembers it offers it and proves it has the bytes instead
            proof_s = time.perf_counter() - t
            reset_peak(server.pid)
            t = time.perf_counter()
            r = other.call("submit", kind="ask", params={"prompt": "noop", "max_new_tokens": 1},
                           inputs={"audio": proved}, timeout_s=300)
            submit_s = time.perf_counter() - t
            peak_submit = rss(server.pid, "VmHWM") - idle
        assert ref["blob"] == again["blob"] == proved["blob"] and r.op in ("accepted", "error"), r.header
    finally:
        server.stdin.close()
        server.wait(60)
    ratios.sort()
    b_ratios.sort()
    print(f"{size / 2**20:6.1f} MiB  best of each: copy {size / min(copy_times) / 2**20:.0f} MiB/s, upload "
          f"{size / min(up_times) / 2**20:.0f} MiB/s = {min(copy_times) / min(up_times):.2f}, as bytes "
          f"{size / min(b_times) / 2**20:.0f} MiB/s = {min(copy_times) / min(b_times):.2f}; CPU seconds per GiB: "
          f"copy {sum(copy_cpu) / len(copy_cpu) * 2**30 / size:.2f}, upload (client + server) "
          f"{sum(up_cpu) / len(up_cpu) * 2**30 / size:.2f}, as bytes {sum(b_cpu) / len(b_cpu) * 2**30 / size:.2f}")
    print(f"{size / 2**20:6.1f} MiB  median upload/copy {ratios[len(ratios) // 2]:.2f} (target >= 0.5), as bytes "
          f"{b_ratios[len(b_ratios) // 2]:.2f}; server "
          f"RSS idle {idle / 2**20:.0f} MiB, peak +{max(peaks + b_peaks) / 2**20:.1f} MiB = {max(peaks + b_peaks) / size:.2f} x the "
          f"file (target <= 1.5); held again {again_s * 1000:.0f} ms; another owner without the hash "
          f"{proof_s * 1000:.0f} ms; its submit ({r.op}, decoded to 32 kHz int16 in {submit_s:.1f} s): "
          f"peak +{peak_submit / 2**20:.0f} MiB = {peak_submit / size:.2f} x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 200], metavar="MB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--serve", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    tmp = Path(tempfile.mkdtemp(prefix="m2ugen-bench-upload-"))
    os.environ["M2UGEN_CONFIG_DIR"] = str(tmp / "cfg")
    print(f"upload benchmark on loopback ({os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f})")
    try:
        for mb in args.sizes:
            bench_size(tmp, mb, max(1, args.rounds))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
