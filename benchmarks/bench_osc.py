"""OSC round trip through the bridge: /m2u/ping -> /m2u/pong on loopback, p50/p99 (target p99 <= 2 ms).

By default it starts a real job server with the tiny preset in this process (temporary config/data
dirs) and the bridge as a separate process (`python -m bridge_osc`), so the measured path is the one
a Max/Pd/TouchOSC client sees: UDP in, decode, parse, encode, UDP out, across processes.

    .venv/bin/python benchmarks/bench_osc.py [--n 2000] [--server tcp://127.0.0.1:5557] [--bridge 127.0.0.1:9100]

--server uses a running server instead of starting one; --bridge measures a running bridge.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge_osc import osc  # noqa: E402


def start_server(tmp: Path):
    os.environ["M2UGEN_CONFIG_DIR"] = str(tmp / "config")
    os.environ["M2UGEN_DATA_DIR"] = str(tmp / "data")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from server.app import ServerApp, ServerSettings, load_model

    model, info = load_model(preset="tiny")
    app = ServerApp(model, info, ServerSettings(host="127.0.0.1", port=0, data_dir=tmp / "data"))
    app.start()
    return app


def start_bridge(endpoint: str, log_path: Path) -> tuple[subprocess.Popen, int]:
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "bridge_osc", "--port", "0", "--server", endpoint],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"listening on udp 127\.0\.0\.1:(\d+)", log_path.read_text())
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the bridge did not start:\n{log_path.read_text()}")


def measure(host: str, port: int, n: int, warmup: int) -> list[float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10.0)  # /m2u/welcome waits for the server's answer (or the ping timeout)
    bridge = (host, port)
    sock.sendto(osc.encode("/m2u/hello", ("i", sock.getsockname()[1])), bridge)
    while osc.decode(sock.recv(65536))[0].address != "/m2u/welcome":
        pass
    sock.settimeout(2.0)
    ping = osc.encode("/m2u/ping")
    times_ms = []
    for i in range(warmup + n):
        t0 = time.perf_counter_ns()
        sock.sendto(ping, bridge)
        while True:  # skip anything else (e.g. a /m2u/server notice)
            message = osc.decode(sock.recv(65536))[0]
            if message.address == "/m2u/pong":
                break
        if i >= warmup:
            times_ms.append((time.perf_counter_ns() - t0) / 1e6)
    sock.close()
    return times_ms


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="measured round trips")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--server", default=None, help="use this running server instead of starting a tiny one")
    ap.add_argument("--bridge", default=None, metavar="HOST:PORT", help="measure this running bridge")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_osc_") as tmp_name:
        tmp = Path(tmp_name)
        app = proc = None
        try:
            if args.bridge:
                host, port = args.bridge.rsplit(":", 1)
                port = int(port)
                where = f"running bridge {args.bridge}"
            else:
                endpoint = args.server
                if endpoint is None:
                    app = start_server(tmp)
                    endpoint = app.endpoint
                proc, port = start_bridge(endpoint, tmp / "bridge.log")
                host = "127.0.0.1"
                where = f"python -m bridge_osc (separate process) -> server {endpoint}"
            times = sorted(measure(host, port, args.n, args.warmup))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
            if app is not None:
                app.stop()

    p50, p90, p99 = (percentile(times, q) for q in (50, 90, 99))
    print(f"OSC /m2u/ping -> /m2u/pong round trip, {args.n} samples after {args.warmup} warm-up, loopback UDP")
    print(f"  {where}")
    print(f"  p50 {p50:.3f} ms   p90 {p90:.3f} ms   p99 {p99:.3f} ms   max {times[-1]:.3f} ms   "
          f"mean {statistics.fmean(times):.3f} ms")
    print(f"  target p99 <= 2 ms: {'PASS' if p99 <= 2.0 else 'FAIL'}")


if __name__ == "__main__":
    main()
