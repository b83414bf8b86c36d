"""A real JACK server (dummy driver) for the MIDI-controller and audio-device tests.

``start_jack(name)`` runs ``jackd --no-realtime -n NAME -t 20000 -d dummy -r 48000 -p 2048`` (Debian ``jackd2``; as
root, no realtime scheduling needed) and waits until it answers; the caller sets
``JACK_DEFAULT_SERVER=NAME`` so python-rtmidi's JACK API and PortAudio's JACK host API (in this
process and in subprocesses) reach it. If it cannot start, the test fails with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

RATE = 48000
PERIOD = 2048  # 43 ms cycles and a 20 s client timeout: busy CI machines must not get clients kicked out


class Jack:
    def __init__(self, name: str):
        self.name = name
        self.procs: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        return {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}

    def client(self, *argv: str, port: str) -> subprocess.Popen:
        """Start a JACK example client (e.g. jack_thru) and wait for its port to appear."""
        if shutil.which(argv[0]) is None:
            pytest.fail(f"{argv[0]} not found: it comes with Debian jackd2 (./dev setup installs it)")
        p = subprocess.Popen(argv, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if port in self.ports():
                return p
            if p.poll() is not None:
                pytest.fail(f"{argv[0]} exited ({p.returncode}): {p.stderr.read().decode(errors='replace')[-500:]}")
            time.sleep(0.05)
        pytest.fail(f"{argv[0]} did not create {port} within 10 s; ports: {self.ports()}")

    def ports(self) -> list[str]:
        out = subprocess.run(["jack_lsp", "-s", self.name], env=self.env(), capture_output=True, text=True)
        return out.stdout.split()

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def start_jack(name: str) -> Jack:
    for tool in ("jackd", "jack_wait", "jack_lsp"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install Debian jackd2 (./dev setup does)")
    jack = Jack(name)
    p = subprocess.Popen(["jackd", "--no-realtime", "-n", name, "-t", "20000", "-d", "dummy", "-r", str(RATE),
                          "-p", str(PERIOD)],
                         env=jack.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    jack.procs.append(p)
    ready = subprocess.run(["jack_wait", "-s", name, "-w", "-t", "15"], env=jack.env(), capture_output=True, text=True)
    if p.poll() is not None or "server is available" not in ready.stdout:
        jack.stop()
        log = p.stdout.read().decode(errors="replace") if p.stdout else ""
        pytest.fail(f"jackd -d dummy did not start (exit {p.returncode}): {ready.stdout} {ready.stderr} {log[-800:]}")
    return jack


@pytest.fixture
def jack(monkeypatch):
    server = start_jack(f"m2u{os.getpid()}x{time.monotonic_ns() % 100000}")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    try:
        yield server
    finally:
        server.stop()
