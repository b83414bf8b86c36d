"""Real OSC implementations against the bridge (`python -m bridge_osc`, a separate process) and the
real server with the tiny preset: liblo's `oscsend`/`oscdump`, and headless Pure Data running
tests/pd/generate.pd (vanilla [oscformat]/[netsend -u -b] out, [netreceive -u -b]/[oscparse] in).

Needs the Debian packages liblo-tools and puredata-core (the CI setup installs them).
"""

import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from server.client import Client

PD_PATCH = Path(__file__).parent / "pd" / "generate.pd"
REPO = Path(__file__).resolve().parents[1]


def require(tool):
    path = shutil.which(tool)
    if path is None:  # a hard failure: the test setup must install the tool
        pytest.fail(f"`{tool}` is not installed (apt-get install -y liblo-tools puredata-core)")
    return path


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LineReader:
    """Collects a process's stdout lines in a thread."""

    def __init__(self, proc):
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern, timeout=10.0):
        """The first new line matching `pattern` (regex); AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; saw {self.seen[-20:]}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line


def oscdump_args(line):
    """'<timetag> /addr tags arg…' -> (address, tags, [args as str])."""
    parts = shlex.split(line)
    return parts[1], parts[2] if len(parts) > 2 else "", parts[3:]


@pytest.fixture
def bridge_process(server, tmp_path):
    """`python -m bridge_osc` on a free port; yields (port, default_reply_port, log_path)."""
    reply_port = free_udp_port()
    log_path = tmp_path / "bridge.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge_osc", "--port", "0", "--server", server, "--reply-port", str(reply_port),
             "--ping-interval", "0.2"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log,
        )
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            match = re.search(r"listening on udp 127\.0\.0\.1:(\d+)", log_path.read_text())
            if match:
                port = int(match.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"bridge did not start (rc={proc.poll()}):\n{log_path.read_text()}")
            else:
                time.sleep(0.05)
        yield port, reply_port, log_path
    finally:
        proc.terminate()
        try:
            assert proc.wait(10) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()


def oscsend(port, address, types="", *args):
    cmd = [require("oscsend"), "127.0.0.1", str(port), address]
    if types:
        cmd += [types, *map(str, args)]
    subprocess.run(cmd, check=True, timeout=10)


@pytest.mark.timeout(150)
def test_oscsend_generate_and_oscdump_receives_every_event(server, bridge_process):
    port, reply_port, log_path = bridge_process
    dump = subprocess.Popen([require("oscdump"), "-L", str(reply_port)], stdout=subprocess.PIPE, text=True)
    try:
        out = LineReader(dump)
        deadline = time.monotonic() + 15
        while True:  # oscdump prints nothing when ready: ping until its pong shows up
            oscsend(port, "/m2u/ping")
            try:
                pong = out.wait_for(r" /m2u/pong ", timeout=0.5)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        assert oscdump_args(pong)[1:] == ("ss", [oscdump_args(pong)[2][0], "up"])

        oscsend(port, "/m2u/set", "si", "max_new_tokens", 8)  # the tiny model's text is noise: keep it short
        assert oscdump_args(out.wait_for(r" /m2u/set "))[2] == ["max_new_tokens", "8"]
        oscsend(port, "/m2u/generate", "sfi", "lofi piano with vinyl crackle", 1.0, reply_port)
        accepted = oscdump_args(out.wait_for(r" /m2u/accepted "))
        assert accepted[1] == "si"
        job = accepted[2][0]
        done_line = out.wait_for(r" /m2u/(done|error) ", timeout=120)
        address, tags, args = oscdump_args(done_line)
        assert (address, tags) == ("/m2u/done", "ssfi"), done_line
        assert args[0] == job
        progress = [oscdump_args(line) for line in out.seen if " /m2u/progress " in line]
        assert progress and all(p[1] == "sfs" and p[2][0] == job for p in progress)
        info = sf.info(args[1])
        assert info.samplerate == int(args[3])
        assert info.frames / info.samplerate == pytest.approx(float(args[2]), abs=1e-3) == pytest.approx(1.0, abs=0.02)
        with Client(server) as c:
            assert c.call("status", job=job).header["params"]["prompt"] == "lofi piano with vinyl crackle"

        # robustness with liblo's own encodings: wrong types, unknown address, float for an int
        oscsend(port, "/m2u/cancel", "i", 5)
        assert oscdump_args(out.wait_for(r" /m2u/error "))[2][:2] == ["", "bad_args"]
        oscsend(port, "/m2u/generate", "sT", "x")
        assert oscdump_args(out.wait_for(r" /m2u/error "))[2][:2] == ["", "bad_args"]
        oscsend(port, "/m2u/nope", "s", "x")
        error = oscdump_args(out.wait_for(r" /m2u/error "))[2]
        assert error[:2] == ["", "unknown_address"] and "/m2u/nope" in error[2]
        oscsend(port, "/m2u/status", "sd", job, float(reply_port))  # float64 reply port
        status = oscdump_args(out.wait_for(r" /m2u/status "))
        assert status[1] == "ssfsi" and status[2][:2] == [job, "done"]
        assert oscdump_args(out.wait_for(r" /m2u/done "))[2] == args
        oscsend(port, "/m2u/ping", "f", float(reply_port))
        out.wait_for(r" /m2u/pong ")
    finally:
        dump.terminate()
        dump.wait(5)
    assert "bad_args" in log_path.read_text()  # bad input is logged by the bridge


@pytest.mark.timeout(150)
def test_pure_data_patch_generates_and_receives_done(server, bridge_process):
    port, _, _ = bridge_process
    pd_reply_port = free_udp_port()
    proc = subprocess.run(
        [require("pd"), "-nogui", "-nosound", "-noprefs", "-stderr",
         "-send", f"config {port} {pd_reply_port}", "-open", str(PD_PATCH)],
        capture_output=True, text=True, timeout=140,
    )
    output = proc.stdout + proc.stderr
    assert re.search(r"^WELCOME: \S+ up ", output, re.M), output
    accepted = re.search(r"^ACCEPTED: (\S+) 0$", output, re.M)
    done = re.search(r"^DONE: (\S+) (\S+) (\S+) (\S+)$", output, re.M)
    assert accepted and done, output
    assert "ERROR:" not in output, output
    job, path, seconds, rate = done.groups()
    assert job == accepted.group(1)
    info = sf.info(path)
    assert info.samplerate == int(rate)
    assert float(seconds) == pytest.approx(2.0, abs=0.02)
    with Client(server) as c:
        record = c.call("status", job=job).header
    assert record["params"]["prompt"] == "dark ambient drone at 90 bpm"  # Pd atoms (90 a float) joined again
    assert record["params"]["duration"] == 2.0
    assert record["params"]["max_new_tokens"] == 8  # the patch's /m2u/set max_new_tokens 8
