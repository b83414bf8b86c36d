"""``m2ugen``: serve, and a client for the job server (docs/protocol.md §7).

Client commands print one JSON object per line on stdout (every event, then ``{"op": "exit",
"code": N}``), can keep a status file for scripts that poll (``--status-file``), show a progress bar
on a terminal, and exit with: 0 ok, 2 usage, 3 server not reachable, 4 job failed or rejected,
5 cancelled, 6 interrupted by the user (the job keeps running on the server).

The commands live by what they need: ``jobs`` (client commands), ``serve`` (the server and its OSC
bridge), ``local`` (no server: where, keys, chat, convert), ``midi`` (a MIDI controller as a client),
``devices`` (audio devices; ``--record`` / ``--play``), ``transcribe`` (audio to MIDI, locally), ``stems``
(audio to one WAV per stem),
``train`` (the paper's three stages, personal fine-tunes), ``doctor`` (checks weights before a load);
``common`` holds what they share.
"""

from __future__ import annotations

import argparse
import sys

from server.cli import devices, doctor, jobs, learn, local, midi, serve, stems, train, transcribe
from server.cli.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, check_server_side, die,
                               missing_extra)

# The commands that run the model in this process: on a client-only install (no `server` extra) they say
# what to install instead of failing on an import (common.missing_extra). `transcribe --local` too.
SERVER_SIDE = {"serve", "chat", "convert", "train", "finetune", "doctor"}


def _register_bridge(sub) -> None:
    p = sub.add_parser("bridge", help="run the OSC bridge (bridge_osc)")
    try:
        from bridge_osc import cli as bridge_cli

        bridge_cli.add_arguments(p)
        p.set_defaults(func=lambda a: bridge_cli.run(a))
    except Exception as e:  # the bridge is optional; every other command still works
        err = f"{type(e).__name__}: {e}"
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda a: die(None, EXIT_FAILED, f"the OSC bridge is not available ({err})"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2ugen", description="M2UGen music assistant: run the job server, or talk to it.",
        epilog="Exit codes: 0 ok, 2 usage, 3 server not reachable, 4 job failed/rejected, 5 cancelled, "
               "6 interrupted (the job keeps running). See docs/protocol.md.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.register(sub)
    jobs.register(sub)
    local.register(sub)
    _register_bridge(sub)
    for extra in (midi, devices, transcribe, stems, train, learn, doctor):
        extra.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command in SERVER_SIDE or getattr(args, "local", False):
            check_server_side()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("m2ugen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except ModuleNotFoundError as e:  # a server-side command on a client-only install: say what to install
        message = missing_extra(e)
        if message is None:
            raise
        return die(None, EXIT_FAILED, message)
