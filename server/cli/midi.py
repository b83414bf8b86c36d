"""``m2ugen midi``: a hardware MIDI controller drives the job server (notes / CC / program changes -> actions).

    m2ugen midi --list-ports                                  # MIDI inputs (JSON lines)
    m2ugen midi --learn generate --prompt "lofi drums" --duration 8   # press a pad: bound and stored
    m2ugen midi --learn cancel                                # next message -> cancel
    m2ugen midi [--port NAME | --virtual NAME] [--api jack]   # run: every mapped message -> its action

It is a client of the job server like any other (server/client.py). Messages are read with mido
through the python-rtmidi backend (ALSA, JACK, CoreMIDI or Windows MM). The mapping lives in a JSON
file, by default ``<config dir>/midi.json``:

    {"version": 1, "port": null,
     "bindings": [{"action": "generate", "message": {"type": "note_on", "channel": 0, "note": 36},
                   "params": {"prompt": "lofi drums", "duration": 8}},
                  {"action": "cancel", "message": {"type": "control_change", "channel": 0, "control": 21}}]}

A note triggers on ``note_on`` with velocity > 0; a CC when its value rises to >= 64 (a button's
press, not its release); a program change on its program number. ``params`` are the submit params
of docs/protocol.md (checked by the server). stdout: one JSON line per action and per server event,
then ``{"op": "exit", "code": N}``.

ACTIONS below is the one table of what a controller can do.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from server import protocol

from server.cli.common import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
MAPPING_VERSION = 1
APIS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}
MESSAGE_KEY = {"note_on": "note", "control_change": "control", "program_change": "program"}
CC_PRESSED = 64


class MidiError(Exception):
    """A usage problem (bad mapping, no such port, missing backend): exit 2 with the message."""


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# the session: one client, the jobs it started, the takes it steps through


class Session:
    def __init__(self, client):
        self.client = client
        self.last_params: dict[str, Any] | None = None
        self.last_job: str | None = None
        self.job_state: dict[str, str] = {}  # job -> latest state seen
        self.take_index: int | None = None

    def submit(self, params: dict[str, Any]) -> dict[str, Any]:
        reply = self.client.call("submit", kind="generate", params=params, inputs={})
        if reply.op == "error":
            return {"sent": "submit", "error": {"code": reply.header.get("code"), "message": reply.header.get("message")}}
        job = reply.header["job"]
        self.last_params, self.last_job = dict(params), job
        self.job_state[job] = "queued"
        emit(reply.header)
        return {"sent": "submit", "job": job}

    def running_job(self) -> str | None:
        job = self.last_job
        return job if job and self.job_state.get(job) not in protocol.FINAL_STATES else None

    def on_event(self, header: dict[str, Any]) -> None:
        job, op = header.get("job"), header.get("op")
        if job:
            if op in ("done", "cancelled") or (op == "error" and job in self.job_state):
                self.job_state[job] = {"done": "done", "cancelled": "cancelled"}.get(op, "failed")
            elif op == "progress":
                self.job_state[job] = "running"
        emit(header)


# ---------------------------------------------------------------------------------------------
# actions: the one table


@dataclass(frozen=True)
class Action:
    name: str
    help: str
    run: Callable[[Session, dict[str, Any]], dict[str, Any]]
    needs_params: bool = False
    missing: str | None = None  # what the server lacks for the full action (said in every result)


def _generate(s: Session, binding: dict[str, Any]) -> dict[str, Any]:
    return s.submit(binding["params"])


def _regenerate(s: Session, binding: dict[str, Any]) -> dict[str, Any]:
    if s.last_params is None:
        return {"sent": None, "note": "nothing to regenerate yet: no generate in this session"}
    return s.submit({k: v for k, v in s.last_params.items() if k != "seed"})  # a fresh random seed


def _cancel(s: Session, binding: dict[str, Any]) -> dict[str, Any]:
    job = s.running_job()
    if job is None:
        return {"sent": None, "note": "no job of this session is queued or running"}
    reply = s.client.call("cancel", job=job)
    emit(reply.header)
    return {"sent": "cancel", "job": job}


def _accept(s: Session, binding: dict[str, Any]) -> dict[str, Any]:
    return {"sent": None, "job": s.last_job}


def _discard(s: Session, binding: dict[str, Any]) -> dict[str, Any]:
    if s.running_job() is not None:
        return _cancel(s, binding)
    return {"sent": None, "job": s.last_job}


def _step_take(step: int) -> Callable[[Session, dict[str, Any]], dict[str, Any]]:
    def run(s: Session, binding: dict[str, Any]) -> dict[str, Any]:
        reply = s.client.call("jobs", limit=100, state="done")
        takes = [r["job"] for r in reply.header.get("jobs", []) if r.get("kind") in ("generate", "edit")]
        if not takes:
            return {"sent": "jobs", "note": "no finished take yet"}
        i = 0 if s.take_index is None else s.take_index + step  # newest first: "next" goes older
        s.take_index = i = max(0, min(len(takes) - 1, i))
        result = s.client.call("result", job=takes[i])
        emit(result.header)
        return {"sent": "result", "job": takes[i], "take": i, "takes": len(takes)}
    return run


_NO_PREVIEW = "the server has no previews yet: nothing is accepted or discarded there; the result stays where the job wrote it"
_NO_TAKES = "the server has no takes yet: the take is chosen among finished jobs and printed, not swapped in the DAW"

ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("generate", "submit a generate job with the binding's stored params (prompt, duration, ...)",
           _generate, needs_params=True),
    Action("regenerate", "submit the last generate of this session again, with a new seed", _regenerate),
    Action("cancel", "cancel this session's last job while it is queued or running", _cancel),
    Action("accept", "accept the current preview", _accept, missing=_NO_PREVIEW),
    Action("discard", "discard the current preview (cancels the last job if it still runs)", _discard,
           missing=_NO_PREVIEW),
    Action("next_take", "step to the next (older) take", _step_take(+1), missing=_NO_TAKES),
    Action("previous_take", "step to the previous (newer) take", _step_take(-1), missing=_NO_TAKES),
)}


# ---------------------------------------------------------------------------------------------
# messages and the mapping file


def message_key(msg) -> dict[str, Any] | None:
    """The binding key of a mido message (type, channel, number), or None if it cannot trigger."""
    if msg.type not in MESSAGE_KEY or (msg.type == "note_on" and msg.velocity == 0):
        return None
    return {"type": msg.type, "channel": msg.channel, MESSAGE_KEY[msg.type]: getattr(msg, MESSAGE_KEY[msg.type])}


def default_mapping_path() -> Path:
    from m2ugen import paths

    return paths.config_dir() / "midi.json"


def _check_binding(i: int, b: Any) -> dict[str, Any]:
    where = f"bindings[{i}]"
    if not isinstance(b, dict):
        raise MidiError(f"{where}: must be an object")
    action = ACTIONS.get(b.get("action"))
    if action is None:
        raise MidiError(f"{where}.action: {b.get('action')!r} is not one of {', '.join(ACTIONS)}")
    m = b.get("message")
    if not isinstance(m, dict) or m.get("type") not in MESSAGE_KEY:
        raise MidiError(f"{where}.message: needs type = {', '.join(MESSAGE_KEY)}")
    number = MESSAGE_KEY[m["type"]]
    for k in ("channel", number):
        if not isinstance(m.get(k), int) or not 0 <= m[k] <= (15 if k == "channel" else 127):
            raise MidiError(f"{where}.message.{k}: must be an int (channel 0..15, {number} 0..127)")
    if action.needs_params and not (isinstance(b.get("params"), dict) and b["params"].get("prompt")):
        raise MidiError(f"{where}: action {action.name} needs params with a prompt")
    return b


def load_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"version": MAPPING_VERSION, "port": None, "bindings": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise MidiError(f"mapping {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("bindings", []), list):
        raise MidiError(f"mapping {path}: must be an object with a 'bindings' list")
    data.setdefault("version", MAPPING_VERSION)
    data.setdefault("port", None)
    data["bindings"] = [_check_binding(i, b) for i, b in enumerate(data.get("bindings", []))]
    return data


def save_mapping(path: Path, data: dict[str, Any]) -> None:
    from server import discovery

    discovery.write_json_atomic(path, data)


def find_binding(mapping: dict[str, Any], key: dict[str, Any]) -> dict[str, Any] | None:
    return next((b for b in mapping["bindings"] if b["message"] == key), None)


# ---------------------------------------------------------------------------------------------
# ports (mido + python-rtmidi)


def backend(api: str | None):
    try:
        import mido
        import rtmidi  # noqa: F401  (mido's backend needs it; say so plainly when missing)
    except ImportError as e:
        raise MidiError(f"MIDI ports need mido and python-rtmidi ({e}); reinstall m2ugen (pip install -e .)") from None
    name = "mido.backends.rtmidi" + (f"/{APIS[api]}" if api else "")
    return mido.Backend(name, load=True)


def open_input(be, port: str | None, virtual: str | None, client_name: str = "m2ugen"):
    try:
        if virtual:
            return be.open_input(virtual, virtual=True, client_name=client_name)
        names = be.get_input_names()
        if port is None:
            if not names:
                raise MidiError("no MIDI inputs found; connect a controller, or create one with --virtual NAME")
            port = names[0]
        elif port not in names:
            matches = [n for n in names if port.lower() in n.lower()]
            if len(matches) != 1:
                raise MidiError(f"MIDI input {port!r}: {'ambiguous' if matches else 'not found'}; "
                                f"inputs: {', '.join(names) or 'none'}")
            port = matches[0]
        return be.open_input(port, client_name=client_name)
    except MidiError:
        raise
    except Exception as e:  # rtmidi raises its own errors (no ALSA sequencer, no JACK server, ...)
        raise MidiError(f"cannot open the MIDI input ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# commands


def _params_from_args(args) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in ("prompt", "duration", "seed"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    context = {k: getattr(args, k) for k in ("bpm", "key") if getattr(args, k) is not None}
    if context:
        params["context"] = context
    return params


def _next_trigger(port, timeout_s: float | None):
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        for msg in port.iter_pending():
            key = message_key(msg)
            if key is not None:
                return msg, key
        time.sleep(0.005)
    return None, None


def cmd_learn(args, be, mapping: dict[str, Any], path: Path) -> int:
    action = ACTIONS[args.learn]
    binding: dict[str, Any] = {"action": action.name}
    if action.needs_params:
        params = _params_from_args(args)
        if not params.get("prompt"):
            raise MidiError(f"--learn {action.name} needs --prompt (stored with the binding)")
        binding["params"] = params
    with open_input(be, args.port, args.virtual) as port:
        emit({"op": "learning", "action": action.name, "port": port.name})
        msg, key = _next_trigger(port, args.learn_timeout)
    if key is None:
        emit({"op": "error", "code": "timeout", "message": f"no MIDI message within {args.learn_timeout:g} s"})
        return EXIT_FAILED
    binding["message"] = key
    replaced = [b for b in mapping["bindings"] if b["message"] == key]
    mapping["bindings"] = [b for b in mapping["bindings"] if b["message"] != key] + [binding]
    save_mapping(path, mapping)
    emit({"op": "learned", "action": action.name, "message": key, "replaced": [b["action"] for b in replaced],
          "mapping": str(path)})
    return EXIT_OK


def dispatch(session: Session, mapping: dict[str, Any], msg, cc_values: dict) -> None:
    key = message_key(msg)
    if key is None:
        return
    if msg.type == "control_change":
        previous = cc_values.get((msg.channel, msg.control), 0)
        cc_values[(msg.channel, msg.control)] = msg.value
        if not (msg.value >= CC_PRESSED > previous):
            return
    binding = find_binding(mapping, key)
    if binding is None:
        emit({"op": "unmapped", "message": key})
        return
    action = ACTIONS[binding["action"]]
    from server.client import ServerUnavailable

    try:
        outcome = action.run(session, binding)
    except ServerUnavailable as e:
        outcome = {"sent": None, "error": {"code": "unreachable", "message": str(e)}}
    line = {"op": "action", "action": action.name, "message": key, **outcome}
    if action.missing:
        line["missing"] = action.missing
    emit(line)


def _stop(signum, frame):
    raise KeyboardInterrupt


def cmd_run(args, be, mapping: dict[str, Any], path: Path) -> int:
    if not mapping["bindings"]:
        raise MidiError(f"no bindings in {path}; add some with `m2ugen midi --learn ACTION`")
    from server.client import Client, ServerUnavailable

    try:
        client = Client(args.server, timeout_s=args.timeout)
        client.ping(timeout_s=args.connect_timeout)
    except ServerUnavailable:
        print(f"m2ugen midi: no m2ugen server answers (start one with `m2ugen serve`, or pass --server)",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    except Exception as e:
        print(f"m2ugen midi: cannot connect: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    session, cc_values = Session(client), {}
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)  # also when started in the background (SIGINT ignored by default)
    with client, open_input(be, args.port or mapping.get("port"), args.virtual) as port:
        emit({"op": "listening", "port": port.name, "mapping": str(path), "server": client.endpoint,
              "bindings": len(mapping["bindings"])})
        try:
            while True:
                for msg in port.iter_pending():
                    dispatch(session, mapping, msg, cc_values)
                while (m := client.recv(timeout_s=0)) is not None:
                    session.on_event(m.header)
                client.socket.poll(10)  # wait a little for the server (and, between polls, MIDI)
        except KeyboardInterrupt:
            return EXIT_OK


def cmd_midi(args) -> int:
    try:
        if args.list_ports:
            be = backend(args.api)
            for name in be.get_input_names():
                emit({"op": "port", "direction": "input", "name": name})
            code = EXIT_OK
        else:
            path = Path(args.mapping).expanduser() if args.mapping else default_mapping_path()
            mapping = load_mapping(path)
            if args.show:
                emit({"op": "mapping", "path": str(path), **mapping})
                code = EXIT_OK
            else:
                be = backend(args.api)
                code = (cmd_learn if args.learn else cmd_run)(args, be, mapping, path)
    except MidiError as e:
        print(f"m2ugen midi: {e}", file=sys.stderr)
        code = EXIT_USAGE
    emit({"op": "exit", "code": code})
    return code


def register(subparsers) -> None:
    table = "\n".join(f"  {a.name:<14} {a.help}" + (" [partial: server feature missing]" if a.missing else "")
                      for a in ACTIONS.values())
    p = subparsers.add_parser(
        "midi", help="drive the server from a MIDI controller (notes / CC / program changes -> actions)",
        description="Map a MIDI controller's notes, CCs and program changes to job-server actions.",
        epilog="actions:\n" + table, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mapping", metavar="FILE", help="the mapping JSON (default <config dir>/midi.json)")
    p.add_argument("--port", metavar="NAME", help="MIDI input: its name or a unique part of it (default: the "
                                                  "mapping's 'port', else the first input)")
    p.add_argument("--virtual", metavar="NAME", help="create a virtual input port NAME instead (ALSA, JACK, CoreMIDI)")
    p.add_argument("--api", choices=sorted(APIS), help="rtmidi API (default: the platform's first)")
    p.add_argument("--list-ports", action="store_true", help="list MIDI inputs and exit")
    p.add_argument("--show", action="store_true", help="print the mapping and exit")
    p.add_argument("--learn", metavar="ACTION", choices=list(ACTIONS),
                   help="wait for the next note/CC/program change and bind it to ACTION")
    p.add_argument("--learn-timeout", type=float, metavar="S", help="give up learning after S seconds")
    g = p.add_argument_group("stored with --learn generate")
    g.add_argument("--prompt")
    g.add_argument("--duration", type=float, metavar="S")
    g.add_argument("--seed", type=int)
    g.add_argument("--bpm", type=float)
    g.add_argument("--key")
    g = p.add_argument_group("connection")
    g.add_argument("--server", metavar="tcp://HOST:PORT")
    g.add_argument("--timeout", type=float, default=10.0, metavar="S")
    g.add_argument("--connect-timeout", type=float, default=3.0, metavar="S")
    p.set_defaults(func=cmd_midi)
