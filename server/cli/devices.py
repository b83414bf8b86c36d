"""``m2ugen devices``: the audio inputs and outputs PortAudio sees (one JSON line each); and the
``--record S [--input DEV]`` / ``--play [DEV]`` options of ask, edit and generate.

    m2ugen devices [--inputs | --outputs]
    m2ugen ask --record 8 --input "USB" --prompt "What key is this?"   # 8 s recorded, sent as --audio
    m2ugen edit --record 4 --prompt "add strings" --play               # the result played when done

Each line: ``{"op": "device", "index", "name", "hostapi", "inputs", "outputs", "default_samplerate",
"default_input", "default_output"}``, then ``{"op": "exit", "code": N}``. ``index`` or a unique part
of ``name`` is what ``--input`` / ``--output`` take. Needs PortAudio (Debian/Ubuntu: libportaudio2);
without it: exit 4 and a message naming the missing library.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from server.cli.common import EXIT_FAILED, EXIT_OK


class DeviceError(Exception):
    """--record / --play could not use the audio device (the message says why)."""


def cmd_devices(args) -> int:
    from m2ugen.audio_devices import AudioDeviceError, list_devices

    try:
        devices = list_devices()
    except AudioDeviceError as e:
        print(f"m2ugen devices: {e}", file=sys.stderr)
        print(json.dumps({"op": "exit", "code": EXIT_FAILED}))
        return EXIT_FAILED
    for d in devices:
        if (args.inputs and d["inputs"] == 0) or (args.outputs and d["outputs"] == 0):
            continue
        print(json.dumps({"op": "device", **d}))
    if not devices:
        print("m2ugen devices: PortAudio sees no audio device", file=sys.stderr)
    print(json.dumps({"op": "exit", "code": EXIT_OK}))
    return EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("devices", help="list audio inputs and outputs (PortAudio)")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--inputs", action="store_true", help="only devices with input channels")
    m.add_argument("--outputs", action="store_true", help="only devices with output channels")
    p.set_defaults(func=cmd_devices)


# ---------------------------------------------------------------------------------------------
# --record / --play for the job commands (server/cli/jobs.py calls these)


def add_job_options(g, kind: str | None) -> None:
    if kind in ("ask", "edit", "transcribe"):
        g.add_argument("--record", type=float, metavar="S",
                       help="record S seconds from an audio input and send that as --audio")
        g.add_argument("--input", metavar="DEV", help="audio input for --record: index or part of its name "
                                                      "(`m2ugen devices`; default: the system's)")
    if kind in ("edit", "generate"):
        g.add_argument("--play", nargs="?", const="", metavar="DEV",
                       help="play the result when done, on DEV (index or name part) or the default output")


def _device(spec: str | None) -> int | str | None:
    """A --input / --play value: an index, part of a name, or empty/None for the default."""
    return None if not spec else int(spec) if spec.isdigit() else spec


def record_audio(args) -> None:
    """``--record S``: record, write a temporary WAV (in the temp dir, which the server may read) and
    make it the job's ``--audio``."""
    seconds = getattr(args, "record", None)
    if seconds is None:
        return
    if getattr(args, "audio", None):
        raise DeviceError("--record and --audio are exclusive")
    from m2ugen.audio_devices import AudioDeviceError, record
    from server import audio_io

    print(f"m2ugen: recording {seconds:g} s ...", file=sys.stderr)
    try:
        wave, sr = record(seconds, _device(args.input))
    except AudioDeviceError as e:
        raise DeviceError(f"--record: {e}") from None
    fd, name = tempfile.mkstemp(prefix="m2ugen-record-", suffix=".wav")
    os.close(fd)
    audio_io.write_wav(Path(name), wave, sr)
    args.audio, args.recorded_path = name, name


def play_result(args, state: dict[str, Any], code: int) -> int:
    """``--play``: after a job that ended well, play its WAV (a failure is reported, the code kept)."""
    device = getattr(args, "play", None)
    if device is None or code != EXIT_OK or not state.get("audio_path"):
        return code
    from m2ugen.audio_devices import AudioDeviceError, play_file

    try:
        play_file(state["audio_path"], _device(device))
    except (AudioDeviceError, OSError, RuntimeError) as e:
        print(f"m2ugen: --play: {e}", file=sys.stderr)
    return code


def cleanup(args) -> None:
    path = getattr(args, "recorded_path", None)
    if path:
        Path(path).unlink(missing_ok=True)
