"""Command line of the OSC bridge: `m2ugen bridge ...` (wired by server/cli.py) or `python -m bridge_osc`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from bridge_osc.bridge import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REPLY_PORT, Bridge


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on for OSC/UDP (default {DEFAULT_HOST}; others need --allow-remote)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"OSC/UDP port (default {DEFAULT_PORT})")
    parser.add_argument("--server", metavar="ENDPOINT", default=None,
                        help="server endpoint, e.g. tcp://127.0.0.1:5557 (default: the discovery file, else that)")
    parser.add_argument("--reply-port", type=int, default=DEFAULT_REPLY_PORT,
                        help=f"port replies go to when a client declares none (default {DEFAULT_REPLY_PORT})")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow --host to be a non-loopback address (OSC has no authentication)")
    parser.add_argument("--ping-interval", type=float, default=1.0, metavar="S",
                        help="seconds between liveness pings to the server (default 1)")
    parser.add_argument("--ping-timeout", type=float, default=5.0, metavar="S",
                        help="seconds without a pong before the server counts as down (default 5)")
    parser.add_argument("--results-dir", metavar="DIR", default=None,
                        help="folder for results of requests with `results_dir user` (default: <Music>/M2UGen)")
    parser.add_argument("--upload", action="store_true", default=None,
                        help=argparse.SUPPRESS)  # input files are always sent as bytes now (kept for old scripts)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every event (debug level)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM. Exit codes: 0 stopped, 2 bad options, 1 cannot bind."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        bridge = Bridge(args.server, args.host, args.port, reply_port=args.reply_port,
                        allow_remote=args.allow_remote, ping_interval_s=args.ping_interval,
                        ping_timeout_s=args.ping_timeout, results_dir=getattr(args, "results_dir", None))
    except ValueError as e:
        print(f"m2ugen bridge: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"m2ugen bridge: cannot listen on udp {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    # Ready line for scripts and tests (the bound port matters with --port 0).
    print(f"m2ugen bridge listening on udp {bridge.host}:{bridge.port}", file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: bridge.stop())
    try:
        bridge.serve()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge_osc", description="OSC bridge onto the M2UGen job server")
    add_arguments(parser)
    return run(parser.parse_args(argv))
