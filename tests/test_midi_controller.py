"""``m2ugen midi`` against real peers: a JACK server (dummy driver), a test client that plays notes /
CC / program changes into it through python-rtmidi's JACK API, and the tiny job server."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
import rtmidi
from jack_peer import jack  # noqa: F401  (fixture)

from server.cli import midi as cmd_midi
from server.client import Client


class Controller:
    """``m2ugen midi ...`` in a subprocess; its stdout JSON lines in a queue."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "server", "midi", "--api", "jack", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def wait_for(self, pred, timeout=120.0, seen_too=False) -> dict:
        """The next line for which ``pred`` holds (``seen_too``: or one already read)."""
        if seen_too:
            for obj in self.seen:
                if pred(obj):
                    return obj
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                obj = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if obj is None:
                pytest.fail(f"m2ugen midi exited ({self.proc.wait()}): {self.proc.stderr.read()[-1500:]}; "
                            f"lines: {self.seen}")
            self.seen.append(obj)
            if pred(obj):
                return obj
        pytest.fail(f"timed out; lines so far: {self.seen}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=10)


class Keyboard:
    """The test's MIDI source: a JACK MIDI output connected to the controller's virtual input."""

    def __init__(self, port_part: str):
        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="test-keyboard")
        ports = self.out.get_ports()
        matches = [i for i, p in enumerate(ports) if port_part in p]
        assert matches, f"no JACK MIDI port like {port_part!r}: {ports}"
        self.out.open_port(matches[0])
        time.sleep(0.2)  # the JACK connection is made in the next cycle

    def send(self, *data: int):
        self.out.send_message(list(data))
        time.sleep(0.05)

    def close(self):
        self.out.close_port()
        del self.out


PARAMS = {"prompt": "test groove", "duration": 0.5, "max_new_tokens": 4}


def _mapping(tmp_path, bindings):
    path = tmp_path / "midi.json"
    path.write_text(json.dumps({"version": 1, "port": None, "bindings": bindings}))
    return path


def test_notes_cc_and_program_changes_reach_the_server(jack, server, tmp_path):
    mapping = _mapping(tmp_path, [
        {"action": "generate", "message": {"type": "note_on", "channel": 0, "note": 60}, "params": PARAMS},
        {"action": "regenerate", "message": {"type": "control_change", "channel": 2, "control": 21}},
        {"action": "accept", "message": {"type": "program_change", "channel": 0, "program": 5}},
        {"action": "next_take", "message": {"type": "note_on", "channel": 9, "note": 36}},
    ])
    ctl = Controller("--virtual", "m2u-in", "--mapping", str(mapping), "--server", server)
    try:
        ctl.wait_for(lambda o: o["op"] == "listening")
        kb = Keyboard("m2u-in")
        kb.send(0x90, 60, 100)  # note on C4, channel 1 -> generate
        act = ctl.wait_for(lambda o: o["op"] == "action")
        assert act["action"] == "generate" and act["message"] == {"type": "note_on", "channel": 0, "note": 60}
        first = act["job"]
        done = ctl.wait_for(lambda o: o["op"] == "done" and o["job"] == first)
        assert done["audio_path"]
        kb.send(0x80, 60, 0)
        kb.send(0xB2, 21, 127)  # CC 21 pressed on channel 3 -> regenerate
        kb.send(0xB2, 21, 127)  # still held (no release in between): must not trigger again
        kb.send(0xB2, 21, 0)
        kb.send(0x90, 61, 90)   # unmapped: reported, nothing sent
        unmapped = ctl.wait_for(lambda o: o["op"] == "unmapped")
        assert unmapped["message"] == {"type": "note_on", "channel": 0, "note": 61}
        regen = [o for o in ctl.seen if o["op"] == "action" and o["action"] == "regenerate"]
        assert len(regen) == 1 and regen[0]["job"] != first
        kb.send(0xC0, 5)        # program change 6 -> accept: nothing to send yet, and it says so
        acc = ctl.wait_for(lambda o: o["op"] == "action")
        assert acc["action"] == "accept" and acc["sent"] is None and "no previews" in acc["missing"]
        ctl.wait_for(lambda o: o["op"] == "done" and o["job"] == regen[0]["job"], seen_too=True)  # a state, no race
        kb.send(0x99, 36, 100)  # drum pad (channel 10) -> next_take: the newest finished take
        take = ctl.wait_for(lambda o: o["op"] == "action")
        assert take["action"] == "next_take" and take["job"] == regen[0]["job"] and take["takes"] == 2  # newest first
        kb.close()
    finally:
        code = ctl.stop()
    assert code == 0 and ctl.wait_for(lambda o: o["op"] == "exit")["code"] == 0
    with Client(server) as c:
        jobs = c.call("jobs").header["jobs"]
    assert len(jobs) == 2 and all(j["kind"] == "generate" and j["params"]["prompt"] == "test groove" for j in jobs)
    assert [j["job"] for j in jobs] == [regen[0]["job"], first]


def test_cancel_a_running_job(jack, make_server, tiny_model, tmp_path, monkeypatch):
    from conftest import SlowModel

    running = make_server(SlowModel(tiny_model, step_s=0.3))
    mapping = _mapping(tmp_path, [
        {"action": "generate", "message": {"type": "note_on", "channel": 0, "note": 48}, "params": PARAMS},
        {"action": "cancel", "message": {"type": "control_change", "channel": 0, "control": 1}},
    ])
    ctl = Controller("--virtual", "m2u-cancel", "--mapping", str(mapping), "--server", running.endpoint)
    try:
        ctl.wait_for(lambda o: o["op"] == "listening")
        kb = Keyboard("m2u-cancel")
        kb.send(0x90, 48, 100)
        job = ctl.wait_for(lambda o: o["op"] == "action")["job"]
        ctl.wait_for(lambda o: o["op"] == "progress" and o["job"] == job)
        kb.send(0xB0, 1, 127)
        act = ctl.wait_for(lambda o: o["op"] == "action" and o["action"] == "cancel")
        assert act["sent"] == "cancel" and act["job"] == job
        ctl.wait_for(lambda o: o["op"] == "cancelled" and o["job"] == job)
        kb.close()
    finally:
        ctl.stop()
    with Client(running.endpoint) as c:
        assert c.call("status", job=job).header["state"] == "cancelled"


def test_learn_mode_stores_the_next_message(jack, tmp_path):
    path = tmp_path / "cfg" / "midi.json"
    ctl = Controller("--virtual", "m2u-learn", "--mapping", str(path), "--learn", "generate",
                     "--prompt", "lofi keys", "--duration", "6", "--learn-timeout", "20")
    ctl.wait_for(lambda o: o["op"] == "learning")
    kb = Keyboard("m2u-learn")
    kb.send(0x80, 40, 0)     # a note off cannot trigger: ignored while learning
    kb.send(0xF8)            # clock: ignored
    kb.send(0xC3, 7)         # program change 8 on channel 4: learned
    learned = ctl.wait_for(lambda o: o["op"] == "learned")
    assert ctl.proc.wait(timeout=10) == 0
    want = {"type": "program_change", "channel": 3, "program": 7}
    assert learned["message"] == want and learned["replaced"] == []
    stored = json.loads(path.read_text())
    assert stored["bindings"] == [{"action": "generate", "params": {"prompt": "lofi keys", "duration": 6.0},
                                   "message": want}]
    kb.close()

    # learning another action on the same message replaces the binding
    ctl = Controller("--virtual", "m2u-learn2", "--mapping", str(path), "--learn", "cancel", "--learn-timeout", "20")
    ctl.wait_for(lambda o: o["op"] == "learning")
    kb = Keyboard("m2u-learn2")
    kb.send(0xC3, 7)
    assert ctl.wait_for(lambda o: o["op"] == "learned")["replaced"] == ["generate"]
    assert ctl.proc.wait(timeout=10) == 0
    assert [b["action"] for b in json.loads(path.read_text())["bindings"]] == ["cancel"]
    kb.close()


def test_mapping_errors_are_named(tmp_path):
    bad = _mapping(tmp_path, [{"action": "explode", "message": {"type": "note_on", "channel": 0, "note": 1}}])
    with pytest.raises(cmd_midi.MidiError, match=r"bindings\[0\]\.action.*explode"):
        cmd_midi.load_mapping(bad)
    bad = _mapping(tmp_path, [{"action": "generate", "message": {"type": "note_on", "channel": 0, "note": 1}}])
    with pytest.raises(cmd_midi.MidiError, match="needs params with a prompt"):
        cmd_midi.load_mapping(bad)
    bad = _mapping(tmp_path, [{"action": "cancel", "message": {"type": "note_on", "channel": 16, "note": 1}}])
    with pytest.raises(cmd_midi.MidiError, match="channel"):
        cmd_midi.load_mapping(bad)
    # the CLI: a usage error (exit 2) naming the problem, before any port is opened
    out = subprocess.run([sys.executable, "-m", "server", "midi", "--mapping", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "channel" in out.stderr
    # every action in the help comes from the one table
    help_text = subprocess.run([sys.executable, "-m", "server", "midi", "--help"], capture_output=True, text=True).stdout
    assert all(name in help_text for name in cmd_midi.ACTIONS)


def test_cli_start_stays_light():
    """The new commands are registered without importing torch, librosa, sounddevice or rtmidi."""
    code = ("import sys, server.cli; server.cli.build_parser(); "
            "print([m for m in ('torch', 'librosa', 'sounddevice', 'rtmidi', 'mido') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
