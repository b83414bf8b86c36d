"""``m2ugen serve``: the job server, and the OSC bridge beside it when asked (``--osc``).

The CLI wires the two together (the server package knows nothing of OSC): the bridge gets the
server's endpoint and, under CURVE, the keys from the server's own settings, and it is supervised —
a bridge thread that dies is logged and restarted (with a growing wait after a few quick restarts), and
it never takes the job server down with it. Everything that can refuse to start (bind rule,
keys, OSC address) is checked before the model is loaded.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from server import protocol
from server.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, finite_float

log = logging.getLogger("m2ugen.server")

BRIDGE_RESTARTS = 3  # quick restarts within BRIDGE_RESTART_WINDOW_S; after them the restarts back off
BRIDGE_RESTART_WINDOW_S = 60.0
BRIDGE_BACKOFF_MAX_S = 60.0


class SupervisedBridge:
    """The OSC bridge in a thread of this process, restarted when it dies. It never stops the job server:
    after BRIDGE_RESTARTS quick restarts within the window, each next one waits twice as long (up to
    BRIDGE_BACKOFF_MAX_S); a restarted bridge keeps its clients' reply ports, settings and jobs."""

    def __init__(self, endpoint: str, host: str, port: int, *, allow_remote: bool, client_factory):
        self.endpoint, self.host, self.port = endpoint, host, port
        self.allow_remote = allow_remote
        self.client_factory = client_factory
        self.failures: list[float] = []
        self.error: BaseException | None = None
        self.bridge = None
        self.next_try = 0.0
        self._start()

    def _start(self) -> None:
        from bridge_osc.bridge import Bridge  # lazy: the bridge is optional

        previous = self.bridge
        self.bridge = Bridge(self.endpoint, self.host, self.port, allow_remote=self.allow_remote,
                             client_factory=self.client_factory)
        if previous is not None:
            self.bridge.adopt(previous)
        self.port = self.bridge.port  # the bound port, also for --osc-port 0; kept on restart
        self.error = None
        self.thread = threading.Thread(target=self._serve, name="m2ugen-osc-bridge", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.bridge.serve()
        except BaseException as e:  # reported by check(), on the main thread
            self.error = e

    def info(self) -> dict[str, Any]:
        return {"host": self.bridge.host, "port": self.port}

    def check(self, now: float | None = None) -> bool:
        """Called every second: restarts a dead bridge (at once, or after the back-off). Always True: the
        job server keeps serving its other clients whatever the bridge does."""
        if self.thread.is_alive():
            return True
        now = time.monotonic() if now is None else now
        if now < self.next_try:
            return True
        if self.next_try == 0.0:  # a new death (not a restart that waited or failed)
            why = f"{type(self.error).__name__}: {self.error}" if self.error else "its thread ended"
            self.failures = [t for t in self.failures if now - t < BRIDGE_RESTART_WINDOW_S] + [now]
            extra = len(self.failures) - BRIDGE_RESTARTS
            if extra > 0:
                wait = min(BRIDGE_BACKOFF_MAX_S, 2.0 ** (extra - 1))
                log.error("the OSC bridge failed %d times within %.0f s (last: %s); the job server keeps serving; "
                          "next restart in %.0f s", len(self.failures), BRIDGE_RESTART_WINDOW_S, why, wait)
                self.next_try = now + wait
                return True
            log.error("the OSC bridge stopped (%s); restarting it on udp %s:%d", why, self.host, self.port)
        self.next_try = 0.0
        try:
            self._start()
        except Exception as e:
            wait = BRIDGE_BACKOFF_MAX_S / 4
            log.error("cannot restart the OSC bridge: %s: %s; the job server keeps serving; next try in %.0f s",
                      type(e).__name__, e, wait)
            self.next_try = now + wait
        return True

    def stop(self) -> None:
        self.bridge.stop()
        self.thread.join(5.0)


def _bridge_client_factory(settings, app):
    """Clients of the in-process bridge: the server's endpoint, with the server's own CURVE keys and a token of
    the bridge's own (``<config dir>/osc-bridge.token``; under CURVE its jobs are the client key's)."""
    from server import owners, security
    from server.client import Client

    token = owners.user_token("osc-bridge")  # the bridge's own identity (its jobs survive its and our restarts)
    if app.server_public_key is None:
        return lambda endpoint: Client(endpoint, server_public_key=False, token=token)
    keys_dir = settings.resolved_keys_dir()
    client_keys = security.load_client_keys(keys_dir)
    server_key = app.server_public_key.encode("ascii")
    return lambda endpoint: Client(endpoint, server_public_key=server_key, client_keys=client_keys, token=token)


def _preflight(args, settings) -> str | None:
    """Everything that would refuse to start, checked before the (slow) model load; -> the reason."""
    from server import security

    if not 1 <= args.max_batch <= 64:
        return f"--max-batch must be 1..64 rows, got {args.max_batch}"
    from server.app import resolve_device

    try:
        resolve_device(args.device, args.dtype)
    except ValueError as e:
        return str(e)

    try:
        settings.check_security(osc_client=args.osc)
    except security.SecurityError as e:
        return str(e)
    if args.osc and not protocol.is_loopback(args.osc_host) and not args.allow_remote_osc:
        return (f"refusing to run the OSC bridge on {args.osc_host}: OSC has no authentication, so anyone who "
                f"can reach that address can submit jobs and read results, bypassing CURVE. Pass "
                f"--allow-remote-osc to accept that risk (a trusted network only).")
    return None


def cmd_serve(args) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from server.app import ServerApp, ServerSettings, load_model, resolve_device
    from server.handlers import Limits

    settings = ServerSettings(
        host=args.host, port=args.port, data_dir=Path(args.data_dir).expanduser() if args.data_dir else None,
        limits=Limits(queue_size=args.queue_size, max_message_mb=args.max_message_mb, max_audio_s=args.max_audio_s,
                      max_audio_mb=args.max_audio_mb, max_queued_audio_mb=args.max_queued_audio_mb,
                      max_batch=args.max_batch, max_upload_mb=args.max_upload_mb,
                      upload_store_mb=args.upload_store_mb, upload_ttl_h=args.upload_ttl_h),
        curve=True if args.curve else None, keys_dir=Path(args.keys_dir).expanduser() if args.keys_dir else None,
        keep_days=args.keep_days, stems_dir=args.stems_dir, shared_jobs=args.shared_jobs, batching=args.batching,
    )
    from server.adapters import parse_adapter_arg

    settings.adapters = [parse_adapter_arg(a) for a in args.adapter or []]
    why = _preflight(args, settings)
    if why is not None:
        log.error("%s", why)
        print(f"m2ugen serve: {why}", file=sys.stderr)
        return EXIT_USAGE
    device, dtype = resolve_device(args.device, args.dtype)
    if not args.skip_doctor and (args.weights or args.preset is None):
        from m2ugen.checkpoint import find_weights
        from server.cli.doctor import quiet_check

        weights = args.weights or find_weights()
        if weights is not None and not quiet_check(weights, device, dtype, log):
            print(f"m2ugen serve: the weights would not load (above; `m2ugen doctor --weights {weights}` lists "
                  "every check); --skip-doctor starts anyway", file=sys.stderr)
            return EXIT_FAILED
    try:
        model, info = load_model(args.preset, args.weights, device=device, dtype=dtype, compile=args.compile,
                                 int8=args.int8)
        from m2ugen.checkpoint import pretrained

        settings.adapters = pretrained.spec_adapters(info.get("weights")) + settings.adapters
        # load what nearly every request needs now, not during the first user's job;
        # the image and video encoders stay lazy (loaded by the first request that has one)
        model.preload("decoder", "music_encoder")
        from m2ugen import analysis

        analysis.preload()  # librosa's first call loads its compiled code (seconds): not in the first job
    except Exception as e:
        log.error("cannot load the model: %s: %s", type(e).__name__, e)
        return EXIT_FAILED
    bridge = None
    try:
        app = ServerApp(model, info, settings)
        if args.osc:
            bridge = SupervisedBridge(app.endpoint, args.osc_host, args.osc_port,
                                      allow_remote=not protocol.is_loopback(args.osc_host),
                                      client_factory=_bridge_client_factory(settings, app))
            if not protocol.is_loopback(args.osc_host):
                log.warning("OSC bridge listens on %s:%d: OSC has no authentication (--allow-remote-osc)",
                            args.osc_host, bridge.port)
        app.start(osc=bridge.info() if bridge else None)
    except Exception as e:
        log.error("cannot start the server: %s: %s", type(e).__name__, e)
        if bridge is not None:
            bridge.stop()
        return EXIT_FAILED

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started in the background (SIGINT ignored by default)
    code = EXIT_OK
    try:
        while not app.stopped.wait(1.0):
            if bridge is not None:
                bridge.check()
    except KeyboardInterrupt:
        log.info("stopping (signal)")
    finally:
        if bridge is not None:
            bridge.stop()
        app.stop()
    return code


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the job server (tiny preset when no weights are configured)",
                       description="Run the ZeroMQ job server. Binds loopback only unless CURVE keys exist.")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--preset", help="model preset: tiny, tiny-audioldm2, musicgen-small, musicgen-medium, audioldm2")
    m.add_argument("--weights", metavar="PATH", help="weights.json, a directory or a checkpoint (default: "
                                                     "M2UGEN_WEIGHTS or <config dir>/weights.json)")
    p.add_argument("--device", default="auto", help="where the model runs: auto (CUDA when there is one), cpu, "
                                                    "cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="parameter dtype of the LLaMA and the sub-models (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--compile", action="store_true",
                   help="compile the LLaMA's and MusicGen's decode steps (torch.compile; CUDA graphs on GPU): "
                        "slower start, faster steps")
    p.add_argument("--skip-doctor", action="store_true",
                   help="do not check the weights before loading them (`m2ugen doctor`; problems are logged)")
    p.add_argument("--int8", action="store_true",
                   help="int8 weight-only LLaMA projections (torchao): about half the LLaMA's bf16 memory")
    p.add_argument("--host", default=protocol.DEFAULT_HOST, help="bind address (default 127.0.0.1; any other "
                                                                  "needs CURVE keys from `m2ugen keys`)")
    p.add_argument("--port", type=int, default=protocol.DEFAULT_PORT, help="TCP port (default 5557; 0 = any free)")
    p.add_argument("--queue-size", type=int, default=16, help="jobs waiting at most (default 16); more -> busy")
    p.add_argument("--max-batch", type=int, default=4, metavar="ROWS",
                   help="queued ask/edit/generate jobs run together, in rows (a job counts its takes; default 4, "
                        "1 = one job at a time); see docs/protocol.md 'Batching'")
    p.add_argument("--batching", default="continuous", choices=("continuous", "static"),
                   help="continuous (default): queued jobs join the running decode at its next step and leave it "
                        "the step they finish; static: a batch is formed once and runs to its end")
    p.add_argument("--max-message-mb", type=int, default=256, help="largest accepted message (default 256 MiB)")
    p.add_argument("--max-audio-s", type=finite_float, default=600.0, help="longest input audio (default 600 s)")
    p.add_argument("--max-audio-mb", type=int, default=256, help="largest input audio file (default 256 MiB)")
    p.add_argument("--max-queued-audio-mb", type=int, default=1024,
                   help="decoded input audio all queued jobs may hold together (default 1024 MiB); more -> busy. "
                        "Input audio is kept at most stereo, 32 kHz, 16 bit: 600 s is 77 MiB at most")
    p.add_argument("--shared-jobs", action="store_true",
                   help="every client sees, fetches and cancels every job (one person's machine, several tools "
                        "with their own identities); default: a client sees only its own jobs")
    p.add_argument("--keep-days", type=finite_float, default=30.0,
                   help="at start, forget finished jobs older than this and delete their folders in the jobs dir "
                        "(default 30; 0 = keep forever; results a client saved with --out are its own and never touched)")
    p.add_argument("--max-upload-mb", type=int, default=512, help="largest uploaded input file (default 512 MiB)")
    p.add_argument("--upload-store-mb", type=int, default=4096,
                   help="uploads kept for reuse (a regenerate sends nothing again), in all (default 4096 MiB); the "
                        "least recently used go first")
    p.add_argument("--upload-ttl-h", type=finite_float, default=24.0,
                   help="uploads unused this long are deleted (default 24 h)")
    p.add_argument("--data-dir", metavar="DIR", help="jobs and journal (default: M2UGEN_DATA_DIR or the user "
                                                     "data dir)")
    p.add_argument("--stems-dir", metavar="DIR",
                   help="where the Demucs weights for stems and stem edits are (demucs' own file names, e.g. "
                        "955717e8-8726e21a.th for htdemucs; default: the torch hub cache, "
                        "$TORCH_HOME/hub/checkpoints); never downloaded")
    p.add_argument("--adapter", action="append", metavar="[NAME=]DIR",
                   help="load a LoRA adapter (`m2ugen finetune` / a fine-tune job) under NAME (default: its own); "
                        "repeatable; requests pick one with --adapter NAME. weights.json may list them "
                        "(\"adapters\": {name: dir}); the data dir's adapters/ are always loaded")
    p.add_argument("--curve", action="store_true", help="require CURVE even on loopback")
    p.add_argument("--keys-dir", metavar="DIR", help="CURVE keys (default <config dir>/keys)")
    p.add_argument("--osc", action="store_true", help="also run the OSC bridge (restarted if it fails; it never stops the server)")
    p.add_argument("--osc-host", default="127.0.0.1",
                   help="OSC bind address (default 127.0.0.1); any other needs --allow-remote-osc")
    p.add_argument("--allow-remote-osc", action="store_true",
                   help="let --osc-host be a non-loopback address. OSC has no authentication: anyone on that "
                        "network can then submit jobs and read results, even when the server uses CURVE")
    p.add_argument("--osc-port", type=int, default=9100, help="OSC UDP port (0 = pick a free one)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_serve)
