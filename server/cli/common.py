"""What every ``m2ugen`` command shares: exit codes, the JSON-lines/status-file/progress Reporter, argument
types, and connecting to the server.

Errors travel as exceptions (``UsageError`` exit 2, ``Unreachable`` exit 3); ``run_command`` turns them
into the printed message, the status file and the exit code, so no command passes errors around in
return values or attributes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from server import discovery
from server.jobview import JobView

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_FAILED, EXIT_CANCELLED, EXIT_INTERRUPTED = 0, 2, 3, 4, 5, 6


class UsageError(Exception):
    """Bad options or request: exit 2, error code ``usage``."""


class Unreachable(Exception):
    """No server answers (or it refuses our key): exit 3, error code ``unreachable``."""


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan``/``inf`` are refused with a usage error, not a traceback)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


# ---------------------------------------------------------------------------------------------
# output: JSON lines, status file, progress bar


def print_line(obj: dict[str, Any], stream=None) -> None:
    """One JSON line, printable on any terminal: non-ASCII text as is where the stream can encode it,
    else escaped (a record from an older server may even hold a lone surrogate)."""
    stream = stream or sys.stdout
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(obj, ensure_ascii=True)
    stream.write(text + "\n")
    stream.flush()


class Reporter:
    """Prints events as JSON lines, mirrors the state into the status file, drives the progress bar."""

    def __init__(self, status_file: str | None, progress: bool, human: bool = False):
        """``human``: lines and a summary for a person (``server.cli.human``) instead of JSON lines."""
        self.human = None
        if human:
            from server.cli.human import HumanOutput

            self.human = HumanOutput()
        self.status_path = Path(status_file).expanduser().absolute() if status_file else None
        self.view = JobView()
        self.state: dict[str, Any] = {"state": "starting", "job": None, "queue_position": None, "stage": None,
                                      "fraction": 0.0, "text": "", "audio_path": None, "duration": None,
                                      "sample_rate": None, "error": None, "exit_code": None, "updated": None,
                                      "pid": os.getpid()}
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=100, file=sys.stderr, unit="%", desc="starting",
                            bar_format="{desc} {bar} {n:.0f}% [{elapsed}]")
        self._write_status()

    def line(self, obj: dict[str, Any]) -> None:
        if self.human is None:
            print_line(obj)

    # Windows refuses to replace a file another process holds open (REAPER reads the status file 4x/s):
    # os.replace raises PermissionError. Try again after these pauses (seconds); then skip this update
    # (the next event or heartbeat rewrites the whole state), except the final one, which is written in
    # place on Windows (the DAW script skips a half-written file and reads it whole on its next poll).
    STATUS_RETRY_PAUSES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)

    def _write_status(self, final: bool = False) -> None:
        if self.status_path is None:
            return
        self.state["updated"] = time.time()
        for pause in (*self.STATUS_RETRY_PAUSES, None):
            try:
                discovery.write_json_atomic(self.status_path, self.state)
                return
            except PermissionError:
                if pause is None:
                    break
                time.sleep(pause)
        if final and sys.platform == "win32":
            try:
                with open(self.status_path, "w", encoding="utf-8") as f:
                    f.write(json.dumps(self.state, indent=2) + "\n")
                return
            except OSError as e:
                print(f"m2ugen: cannot write the status file {self.status_path}: {e}", file=sys.stderr)
                return
        print(f"m2ugen: the status file {self.status_path} is locked by a reader; this update was skipped",
              file=sys.stderr)

    def event(self, header: dict[str, Any]) -> None:
        """One server message: print it and fold it into the status."""
        self.line(header)
        if self.human is not None:
            self.human.event(header)
        if self.view.apply(header):
            self._fold_view()
        s = self.state
        if self.bar is not None:
            self.bar.set_description_str(f"{s['state']}" + (f" ({s['stage']})" if s["stage"] else ""))
            self.bar.n = round(100 * float(s["fraction"] or 0.0))
            self.bar.refresh()
        self._write_status()

    def heartbeat(self) -> None:
        """Rewrite the status file unchanged but for ``updated``: a DAW script that polls it can tell a
        CLI that waits (a long queue) from one that died."""
        self._write_status()

    def _fold_view(self) -> None:
        """The status file's fields from the shared JobView (empty values as null, as always)."""
        v, s = self.view, self.state
        s.update(state=v.state, job=v.job or None, stage=v.stage or None, fraction=v.fraction, text=v.text,
                 audio_path=v.audio_path or None, duration=v.duration, sample_rate=v.sample_rate, error=v.error,
                 queue_position=v.queue_position if v.state == "queued" else None)
        for name in ("seed", "analysis", "result_analysis", "takes", "midi_path"):
            value = getattr(v, name)
            if value:
                s[name] = value

    def finish(self, code: int) -> int:
        if self.bar is not None:
            self.bar.close()
        self.state["exit_code"] = code
        self._write_status(final=True)
        if self.human is not None:
            self.human.summary(self.state, code)
        self.line({"op": "exit", "code": code})
        return code


# ---------------------------------------------------------------------------------------------
# the client install (no extras) and the server side

# The top-level modules the extras of pyproject.toml bring, and the extras to install for each: the base
# install is the DAW machine's client; the model, `serve`, `chat`, `convert`, `train`, `finetune` and
# `transcribe --local` need `m2ugen[server]`.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "transformers", "accelerate", "safetensors", "sentencepiece", "PIL", "av", "librosa",
                     "pyloudnorm", "pedalboard", "scipy", "julius"), "server"),
    "peft": "server,train", "tensorboard": "server,train", "diffusers": "server,audioldm2", "torchao": "server,speed",
}


def missing_extra(error: BaseException) -> str | None:
    """What to install when ``error`` is a missing module that an extra brings (None for any other error)."""
    if not isinstance(error, ModuleNotFoundError):
        return None
    module = (error.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return (f"this command runs the model, and this install of m2ugen is the client only (no module named "
            f"{module!r}). Install the server side on this machine: pip install \"m2ugen[{extra}]\" (with pipx: "
            f"pipx install --force \"m2ugen[{extra}]\"), or run it on the GPU machine and use this one as its client")


def check_server_side() -> None:
    """Raise ModuleNotFoundError (named as ``missing_extra`` reads it) when a module of the ``server`` extra
    is not installed: a command that runs the model then says what to install before it starts."""
    import importlib.util

    for module, extra in EXTRA_OF_MODULE.items():
        if extra == "server" and importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def die(reporter: Reporter | None, code: int, message: str, error_code: str | None = None) -> int:
    print(f"m2ugen: {message}", file=sys.stderr)
    if reporter is None:
        return code
    if error_code is not None:
        reporter.state.update(state="failed", error={"code": error_code, "message": message})
    return reporter.finish(code)


def run_command(reporter: Reporter, body) -> int:
    """``body()`` -> exit code, with UsageError / Unreachable / Ctrl-C turned into their exit codes and
    reported (stderr, status file, the final JSON line)."""
    try:
        return body()
    except UsageError as e:
        return die(reporter, EXIT_USAGE, str(e), "usage")
    except Unreachable as e:
        return die(reporter, EXIT_UNREACHABLE, str(e), "unreachable")
    except KeyboardInterrupt:
        return die(reporter, EXIT_INTERRUPTED, "interrupted")


# ---------------------------------------------------------------------------------------------
# connecting


def connect(args):
    """A Client that answered a ping; raises Unreachable with what to do."""
    from server.client import Client, ServerRefused, ServerUnavailable

    try:
        client = Client(args.server, timeout_s=args.timeout)
    except Exception as e:  # bad endpoint string, missing CURVE keys
        raise Unreachable(f"cannot connect: {e}") from None
    try:
        client.ping(timeout_s=args.connect_timeout)
    except ServerRefused as e:
        client.close()
        raise Unreachable(str(e)) from None
    except ServerUnavailable:
        client.close()
        raise Unreachable(f"no m2ugen server answers at {client.endpoint} (start one with `m2ugen serve`, or "
                          f"pass --server tcp://HOST:PORT)") from None
    return client


def call(client, op: str, frames=(), timeout_s: float | None = None, **fields):
    """One request; a lost server raises Unreachable."""
    from server.client import ServerUnavailable

    try:
        return client.call(op, frames, timeout_s=timeout_s, **fields)
    except ServerUnavailable as e:
        raise Unreachable(str(e)) from None


def client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--server", metavar="tcp://HOST:PORT", help="server endpoint (default: the discovery file's, "
                                                               "else tcp://127.0.0.1:5557)")
    g.add_argument("--timeout", type=finite_float, default=10.0, metavar="S", help="reply timeout (default 10 s)")
    g.add_argument("--connect-timeout", type=finite_float, default=3.0, metavar="S",
                   help="how long to wait for the first ping (default 3 s)")
