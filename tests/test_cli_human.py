"""The CLI for people: on a terminal (a pty) lines and a summary, no JSON; JSON for programs (issue 24)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from server.cli.human import HumanOutput, measured

CLI = [sys.executable, "-m", "server.cli"]


def run_on_terminal(args: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal (stderr piped); -> (exit code, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*CLI, *args], stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env={**os.environ})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=timeout)
    proc.stderr.close()
    return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_a_terminal_shows_a_summary_and_no_json(server, tmp_path):
    out = tmp_path / "gen.wav"
    code, shown = run_on_terminal(["generate", "--server", server, "--prompt", "lofi piano", "--duration", "0.5",
                                   "--sample-rate", "48000", "--channels", "2", "--seed", "3",
                                   "--max-new-tokens", "4", "--out", str(out)])
    assert code == 0, shown
    lines = [line for line in shown.splitlines() if line.strip()]
    assert lines and not any(_is_json(line) for line in lines), shown
    assert any(line.startswith("job ") and "accepted" in line for line in lines)
    assert f"audio: {out} (0.5 s, 48000 Hz, stereo)" in lines
    assert any(line.startswith("loudness: ") and "LUFS" in line for line in lines), shown
    assert any(line.startswith("measured: ") for line in lines), shown


def test_json_on_a_terminal_when_asked_and_events_carry_their_own_params(server, tmp_path):
    code, shown = run_on_terminal(["generate", "--server", server, "--prompt", "lofi piano", "--duration", "0.5",
                                   "--max-new-tokens", "4", "--out", str(tmp_path / "g.wav"), "--json"])
    assert code == 0, shown
    events = [json.loads(line) for line in shown.splitlines() if line.strip()]
    done = [e for e in events if e["op"] == "done"][0]
    assert done["params"]["prompt"] == "lofi piano"
    assert not {"steps", "rank", "learning_rate", "adapter_name"} & set(done["params"]), done["params"]


def test_summary_of_an_answer_and_of_a_failure():
    class Sink:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    h = HumanOutput(Sink())
    lines = h.summary({"state": "done", "text": "A calm piano piece.", "analysis": {"bpm": 92.0, "key_name": "F# minor",
                                                                                   "lufs": -14.24}}, 0)
    assert lines == ["measured: 92 BPM, F# minor, -14.2 LUFS", "answer: A calm piano piece."]
    assert h.summary({"state": "failed", "error": {"code": "bad_input", "message": "no audio"}}, 4) == ["failed: no audio"]
    assert measured(None) == ""
    assert measured({"bpm": 146.2, "bpm_alternative": 73.1, "key_name": "D major"}) == "146 BPM (or 73), D major"
