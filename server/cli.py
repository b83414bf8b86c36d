"""``m2ugen``: serve, and a client for the job server (docs/protocol.md §7).

Client commands print one JSON object per line on stdout (every event, then ``{"op": "exit",
"code": N}``), can keep a status file for scripts that poll (``--status-file``), show a progress bar
on a terminal, and exit with: 0 ok, 2 usage, 3 server not reachable, 4 job failed or rejected,
5 cancelled, 6 interrupted by the user (the job keeps running on the server).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from server import discovery, protocol

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_FAILED, EXIT_CANCELLED, EXIT_INTERRUPTED = 0, 2, 3, 4, 5, 6

REQUEST_KEYS = ("kind", "prompt", "audio", "start", "end", "image", "video", "duration", "seed", "conditioning",
                "sample_rate", "channels", "context", "out", "status_file", "bpm", "time_signature", "key",
                "temperature", "top_p", "max_new_tokens", "server")


class UsageError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# output: JSON lines, status file, progress bar


class Reporter:
    """Prints events as JSON lines, mirrors the state into the status file, drives the progress bar."""

    def __init__(self, status_file: str | None, progress: bool):
        self.status_path = Path(status_file).expanduser().absolute() if status_file else None
        self.state: dict[str, Any] = {"state": "starting", "job": None, "queue_position": None, "stage": None,
                                      "fraction": 0.0, "text": "", "audio_path": None, "duration": None,
                                      "sample_rate": None, "error": None, "exit_code": None, "updated": None}
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=100, file=sys.stderr, unit="%", desc="starting",
                            bar_format="{desc} {bar} {n:.0f}% [{elapsed}]")
        self._write_status()

    def line(self, obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def _write_status(self) -> None:
        if self.status_path is None:
            return
        self.state["updated"] = time.time()
        discovery.write_json_atomic(self.status_path, self.state)

    def event(self, header: dict[str, Any]) -> None:
        """One server message: print it and fold it into the status."""
        self.line(header)
        op, s = header.get("op"), self.state
        if header.get("job"):
            s["job"] = header["job"]
        if op in ("accepted", "queued"):
            s.update(state="queued", queue_position=header.get("queue_position"))
        elif op == "progress":
            s.update(state="running", queue_position=None, stage=header.get("stage"),
                     fraction=header.get("fraction", s["fraction"]))
        elif op == "text":
            s["text"] = header.get("text", s["text"])
        elif op in ("done", "result", "job", "subscribed"):
            for k in ("state", "queue_position", "stage", "fraction", "text", "audio_path", "duration",
                      "sample_rate", "error"):
                if k in header:
                    s[k] = header[k]
        elif op == "cancelled":
            s["state"] = "cancelled"
        elif op == "error":
            s.update(state="failed", error={"code": header.get("code"), "message": header.get("message")})
        if self.bar is not None:
            self.bar.set_description_str(f"{s['state']}" + (f" ({s['stage']})" if s["stage"] else ""))
            self.bar.n = round(100 * float(s["fraction"] or 0.0))
            self.bar.refresh()
        self._write_status()

    def finish(self, code: int) -> int:
        if self.bar is not None:
            self.bar.close()
        self.state["exit_code"] = code
        self._write_status()
        self.line({"op": "exit", "code": code})
        return code


def die(reporter: Reporter | None, code: int, message: str, error_code: str | None = None) -> int:
    print(f"m2ugen: {message}", file=sys.stderr)
    if reporter is None:
        return code
    if error_code is not None:
        reporter.state.update(state="failed", error={"code": error_code, "message": message})
    return reporter.finish(code)


# ---------------------------------------------------------------------------------------------
# client helpers


def connect(args, reporter: Reporter | None):
    """A Client that answered a ping, or None (message printed, caller exits 3)."""
    from server.client import Client, ServerUnavailable

    try:
        client = Client(args.server, timeout_s=args.timeout)
    except Exception as e:  # bad endpoint string, missing CURVE keys
        args.unreachable_message = f"cannot connect: {e}"
        return None
    try:
        client.ping(timeout_s=args.connect_timeout)
    except ServerUnavailable:
        client.close()
        args.unreachable_message = (f"no m2ugen server answers at {client.endpoint} (start one with "
                                    f"`m2ugen serve`, or pass --server tcp://HOST:PORT)")
        return None
    return client


def is_local(endpoint: str) -> bool:
    from server.client import endpoint_host
    from server.security import is_loopback

    return is_loopback(endpoint_host(endpoint))


def follow(client, reporter: Reporter, job: str, out: Path | None, *, poll_s: float = 5.0,
           exit_map: dict[int, int] | None = None) -> int:
    """Print the job's events until it ends; returns the exit code (``exit_map`` renames codes)."""
    from server.client import ServerUnavailable

    def finish(code: int) -> int:
        return reporter.finish((exit_map or {}).get(code, code))

    while True:
        msg = client.recv(timeout_s=poll_s)
        if msg is None:  # quiet for a while: is the server still there, and the job still alive?
            try:
                rec = client.call("status", timeout_s=client.timeout_s, job=job)
            except ServerUnavailable:
                return die(reporter, EXIT_UNREACHABLE, f"lost the server at {client.endpoint} while job {job} ran; "
                                                       f"fetch it later with `m2ugen result {job}`", "unreachable")
            if rec.op == "job" and rec.header.get("state") in protocol.FINAL_STATES:
                msg = rec  # the final event was missed (e.g. subscribed late): use the record
            else:
                continue
        h = msg.header
        if h.get("job") not in (None, job):
            continue
        op = h.get("op")
        if op == "done" or (op in ("job", "result") and h.get("state") == "done"):
            if msg.frames and out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(msg.frames[0])
                h = {**h, "audio_path": str(out)}
            reporter.event({**h, "op": "done"} if op != "done" else h)
            return finish(EXIT_OK)
        if op == "cancelled" or h.get("state") == "cancelled":
            reporter.event(h)
            reporter.state["state"] = "cancelled"
            return finish(EXIT_CANCELLED)
        if op == "error" or h.get("state") == "failed":
            reporter.event(h)
            if h.get("state") == "failed":
                reporter.state["state"] = "failed"
            return finish(EXIT_FAILED)
        reporter.event(h)


def _load_request(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"--request {path}: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--request {path}: must hold a JSON object")
    unknown = sorted(set(data) - set(REQUEST_KEYS))
    if unknown:
        raise UsageError(f"--request {path}: unknown key(s) {', '.join(unknown)}")
    return data


def _opt(args, req: dict, name: str):
    v = getattr(args, name, None)
    return v if v is not None else req.get(name)


def build_submit(args, kind: str, req: dict, local: bool) -> tuple[dict[str, Any], list[bytes], Path | None]:
    """-> (submit fields, frames, local output path)."""
    prompt = _opt(args, req, "prompt")
    if not prompt:
        raise UsageError("--prompt is required")
    params: dict[str, Any] = {"prompt": prompt}
    for name in ("duration", "seed", "conditioning", "sample_rate", "channels", "temperature", "top_p",
                 "max_new_tokens"):
        v = _opt(args, req, name)
        if v is not None:
            params[name] = v
    context = dict(req.get("context") or {})
    if _opt(args, req, "bpm") is not None:
        context["bpm"] = _opt(args, req, "bpm")
    ts = _opt(args, req, "time_signature")
    if ts is not None:
        if isinstance(ts, str):
            try:
                n, d = ts.split("/")
                ts = [int(n), int(d)]
            except ValueError:
                raise UsageError(f"--time-signature must look like 4/4, got {ts!r}") from None
        context["time_signature"] = ts
    if _opt(args, req, "key") is not None:
        context["key"] = _opt(args, req, "key")
    if context:
        params["context"] = context

    frames: list[bytes] = []
    inputs: dict[str, Any] = {}
    for name in ("audio", "image", "video"):
        v = _opt(args, req, name)
        if v is None:
            continue
        p = Path(v).expanduser()
        if not p.is_file():
            raise UsageError(f"--{name} {v}: no such file")
        if local:
            inputs[name] = {"path": str(p.absolute())}
        else:
            frames.append(p.read_bytes())
            inputs[name] = {"frame": len(frames), "name": p.name}
    if kind in ("ask", "edit") and "audio" not in inputs:
        raise UsageError(f"{kind} needs --audio FILE")
    for name in ("start", "end"):
        v = _opt(args, req, name)
        if v is not None:
            if "audio" not in inputs:
                raise UsageError(f"--{name} needs --audio")
            inputs["audio"][name] = v

    out = _opt(args, req, "out")
    out_path = Path(out).expanduser().absolute() if out else None
    output: dict[str, Any] = {}
    if kind != "ask":
        if local and out_path is not None:
            output["path"] = str(out_path)
        elif not local:
            output["want"] = "bytes"
            if out_path is None:
                out_path = Path.cwd() / "m2ugen-result.wav"
    fields = {"kind": kind, "params": params, "inputs": inputs}
    if output:
        fields["output"] = output
    return fields, frames, (None if local else out_path)


# ---------------------------------------------------------------------------------------------
# commands


def cmd_job(args) -> int:
    # usage errors found before the job starts still reach the status file, so a polling DAW script
    # sees them at once instead of waiting for a file that never comes
    try:
        req = _load_request(args.request)
    except UsageError as e:
        return die(Reporter(args.status_file, progress=False), EXIT_USAGE, str(e), "usage")
    kind = args.command if args.command != "submit" else req.get("kind")
    if kind not in protocol.KINDS:
        return die(Reporter(_opt(args, req, "status_file"), progress=False), EXIT_USAGE,
                   f"the request needs 'kind' = ask, edit or generate (got {kind!r})", "usage")
    if req.get("kind") not in (None, kind):
        return die(Reporter(_opt(args, req, "status_file"), progress=False), EXIT_USAGE,
                   f"the request file says kind {req['kind']!r} but the command is {kind!r}", "usage")
    if args.server is None and req.get("server"):
        args.server = req["server"]
    reporter = Reporter(_opt(args, req, "status_file"), progress=sys.stderr.isatty() and not args.no_progress)
    client = connect(args, reporter)
    if client is None:
        return die(reporter, EXIT_UNREACHABLE, args.unreachable_message, "unreachable")
    job = None
    try:
        local = is_local(client.endpoint) and not args.upload
        try:
            fields, frames, out_path = build_submit(args, kind, req, local)
        except UsageError as e:
            return die(reporter, EXIT_USAGE, str(e), "usage")
        from server.client import ServerUnavailable

        upload_s = sum(len(f) for f in frames) / 5e6  # generous: 5 MB/s
        try:
            reply = client.call("submit", frames, timeout_s=args.timeout + upload_s, **fields)
        except ServerUnavailable as e:
            return die(reporter, EXIT_UNREACHABLE, str(e), "unreachable")
        if reply.op == "error":
            reporter.event(reply.header)
            print(f"m2ugen: refused: {reply.header.get('code')}: {reply.header.get('message')}", file=sys.stderr)
            return reporter.finish(EXIT_FAILED)
        job = reply.header["job"]
        reporter.event(reply.header)
        return follow(client, reporter, job, out_path)
    except KeyboardInterrupt:
        msg = "interrupted" + (f"; job {job} keeps running on the server (`m2ugen result {job}`)" if job else "")
        return die(reporter, EXIT_INTERRUPTED, msg)
    finally:
        client.close()


def _one_call(args, op: str, **fields):
    """Connect and make one request. -> (reporter, client, reply); the caller closes the client.
    When the server cannot be reached: the exit code (3), message printed and status file written."""
    from server.client import ServerUnavailable

    reporter = Reporter(getattr(args, "status_file", None), progress=False)
    client = connect(args, reporter)
    if client is None:
        return die(reporter, EXIT_UNREACHABLE, args.unreachable_message, "unreachable")
    try:
        return reporter, client, client.call(op, **fields)
    except ServerUnavailable as e:
        client.close()
        return die(reporter, EXIT_UNREACHABLE, str(e), "unreachable")


def cmd_status(args) -> int:
    got = _one_call(args, "status", job=args.job)
    if isinstance(got, int):
        return got
    reporter, client, reply = got
    with client:
        reporter.event(reply.header)
        return reporter.finish(EXIT_FAILED if reply.op == "error" else EXIT_OK)


def cmd_jobs(args) -> int:
    fields: dict[str, Any] = {"limit": args.limit}
    if args.state:
        fields["state"] = args.state
    got = _one_call(args, "jobs", **fields)
    if isinstance(got, int):
        return got
    reporter, client, reply = got
    with client:
        if reply.op == "error":
            reporter.line(reply.header)
            return reporter.finish(EXIT_FAILED)
        for rec in reply.header["jobs"]:
            reporter.line({"op": "job", **rec})
        return reporter.finish(EXIT_OK)


def cmd_cancel(args) -> int:
    got = _one_call(args, "cancel", job=args.job)
    if isinstance(got, int):
        return got
    reporter, client, reply = got
    with client:
        reporter.event(reply.header)
        if reply.op == "error":
            return reporter.finish(EXIT_FAILED)
        if reply.header.get("state") != "running" or args.no_wait:
            return reporter.finish(EXIT_OK)
        # wait for the final event: cancelled (exit 0), or the job ended some other way first (exit 4)
        return follow(client, reporter, args.job, None, exit_map={EXIT_CANCELLED: EXIT_OK, EXIT_OK: EXIT_FAILED})


def cmd_result(args) -> int:
    reporter = Reporter(args.status_file, progress=sys.stderr.isatty() and not args.no_progress)
    client = connect(args, reporter)
    if client is None:
        return die(reporter, EXIT_UNREACHABLE, args.unreachable_message, "unreachable")
    out = Path(args.out).expanduser().absolute() if args.out else None
    with client:
        from server.client import ServerUnavailable

        try:
            if args.wait:
                sub = client.call("subscribe", job=args.job)
                if sub.op == "error":
                    reporter.event(sub.header)
                    return reporter.finish(EXIT_FAILED)
                reporter.event(sub.header)
                if sub.header.get("state") not in protocol.FINAL_STATES:
                    code = follow(client, reporter, args.job, None)
                    if code != EXIT_OK or out is None:
                        return code
                    reporter.state["exit_code"] = None
            reply = client.call("result", job=args.job, want="bytes" if out else "path")
        except ServerUnavailable as e:
            return die(reporter, EXIT_UNREACHABLE, str(e), "unreachable")
        except KeyboardInterrupt:
            return die(reporter, EXIT_INTERRUPTED, "interrupted")
        h = reply.header
        if reply.op == "error":
            reporter.event(h)
            return reporter.finish(EXIT_FAILED)
        if reply.frames and out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(reply.frames[0])
            h = {**h, "audio_path": str(out)}
        reporter.event(h)
        state = h.get("state")
        return reporter.finish({"done": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(state, EXIT_FAILED))


def cmd_where(args) -> int:
    info = discovery.read()
    if info is None:
        print(f"m2ugen: no discovery file at {discovery.discovery_path()} (the server writes it when it starts)",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(info, indent=2))
    return EXIT_OK


def cmd_keys(args) -> int:
    from server import security

    keys_dir = Path(args.dir).expanduser() if args.dir else security.default_keys_dir()
    try:
        paths = security.create_keys(keys_dir, force=args.force)
    except security.SecurityError as e:
        print(f"m2ugen: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    print(f"Keys written to {keys_dir}. Start the server on a network address with `m2ugen serve --host 0.0.0.0`; "
          f"copy server.key, client.key and client.key_secret into the client machine's keys dir "
          f"({security.default_keys_dir()} there).", file=sys.stderr)
    return EXIT_OK


def cmd_serve(args) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("m2ugen.server")
    from server import security
    from server.app import ServerApp, ServerSettings, load_model
    from server.handlers import Limits

    settings = ServerSettings(
        host=args.host, port=args.port, data_dir=Path(args.data_dir).expanduser() if args.data_dir else None,
        allowed_roots=args.allow_root or [],
        limits=Limits(queue_size=args.queue_size, max_message_mb=args.max_message_mb, max_audio_s=args.max_audio_s,
                      max_audio_mb=args.max_audio_mb),
        curve=True if args.curve else None, keys_dir=Path(args.keys_dir).expanduser() if args.keys_dir else None,
        osc=(args.osc_host, args.osc_port) if args.osc else None, keep_days=args.keep_days,
    )
    keys_dir = settings.keys_dir or security.default_keys_dir()
    use_curve = settings.curve if settings.curve is not None else not security.is_loopback(settings.host)
    try:
        security.check_bind(settings.host, keys_dir, use_curve)  # before the (slow) model load
    except security.SecurityError as e:
        log.error("%s", e)
        print(f"m2ugen serve: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        model, info = load_model(args.preset, args.weights)
        # load what nearly every request needs now, not during the first user's job;
        # the image and video encoders stay lazy (loaded by the first request that has one)
        model.preload("decoder", "music_encoder")
    except Exception as e:
        log.error("cannot load the model: %s: %s", type(e).__name__, e)
        return EXIT_FAILED
    try:
        app = ServerApp(model, info, settings)
        app.start()
    except Exception as e:
        log.error("cannot start the server: %s: %s", type(e).__name__, e)
        return EXIT_FAILED

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started in the background (SIGINT ignored by default)
    try:
        while not app.stopped.wait(1.0):
            pass
    except KeyboardInterrupt:
        log.info("stopping (signal)")
    finally:
        app.stop()
    return EXIT_OK


def cmd_chat(args) -> int:
    """The model in this process, no server: prints the reply, writes audio with --out."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from server.app import load_model

    try:
        model, info = load_model(args.preset, args.weights)
        want = {"auto": None, "yes": True, "no": False}[args.want_audio]
        reply = model.chat(args.prompt, audio=args.audio, image=args.image, video=args.video,
                           max_new_tokens=args.max_new_tokens or model.config.max_new_tokens, seed=args.seed,
                           conditioning=args.conditioning, duration_s=args.duration, want_audio=want)
    except (ValueError, OSError, ImportError) as e:
        return die(None, EXIT_FAILED, f"chat failed: {type(e).__name__}: {e}")
    result: dict[str, Any] = {"op": "reply", "text": reply.text, "seed": reply.seed, "model": info,
                              "timings": reply.timings, "audio_path": None}
    if reply.audio is not None and args.out:
        from server import audio_io

        out = Path(args.out).expanduser().absolute()
        audio_io.write_wav(out, audio_io.prepare_output(reply.audio, reply.sample_rate, reply.sample_rate,
                                                         reply.audio.shape[0], None), reply.sample_rate)
        result["audio_path"] = str(out)
    print(json.dumps(result, default=str))
    return EXIT_OK


def cmd_convert(args) -> int:
    try:
        from m2ugen import checkpoint

        out = checkpoint.convert_checkpoint(args.src, args.dst)
    except (ValueError, OSError, ImportError, KeyError) as e:
        return die(None, EXIT_FAILED, f"convert failed: {type(e).__name__}: {e}")
    print(json.dumps({"op": "converted", "src": args.src, "dst": args.dst, **(out or {})}, default=str))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# parser


def _client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--server", metavar="tcp://HOST:PORT", help="server endpoint (default: the discovery file's, "
                                                               "else tcp://127.0.0.1:5557)")
    g.add_argument("--timeout", type=float, default=10.0, metavar="S", help="reply timeout (default 10 s)")
    g.add_argument("--connect-timeout", type=float, default=3.0, metavar="S",
                   help="how long to wait for the first ping (default 3 s)")


def _job_options(p: argparse.ArgumentParser, kind: str | None) -> None:
    g = p.add_argument_group("job")
    g.add_argument("--prompt", help="the question / instruction / description")
    if kind != "generate":
        g.add_argument("--audio", metavar="FILE", help="input audio (WAV, FLAC, OGG, MP3, AIFF)")
        g.add_argument("--start", type=float, metavar="S", help="crop the audio from this second")
        g.add_argument("--end", type=float, metavar="S", help="crop the audio up to this second")
    if kind in ("generate", None):
        g.add_argument("--image", metavar="FILE", help="condition generation on an image")
        g.add_argument("--video", metavar="FILE", help="condition generation on a video")
    g.add_argument("--duration", type=float, metavar="S", help="output length (default: the input's, else 10 s)")
    g.add_argument("--seed", type=int, help="random seed (default: random; the one used is recorded in the result sidecar)")
    g.add_argument("--conditioning", choices=protocol.CONDITIONING,
                   help="text: the official behaviour (the decoder is prompted with the reply text); embedding: the decoder is conditioned on the LLM's projected [AUD] states, as the paper trains")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--sample-rate", type=int, metavar="HZ", help="output sample rate (default: the model's)")
    g.add_argument("--channels", type=int, help="output channels (default 1)")
    g.add_argument("--bpm", type=float, help="tempo, recorded and added to the prompt")
    g.add_argument("--time-signature", metavar="N/D", help="e.g. 4/4")
    g.add_argument("--key", help="musical key, e.g. 'A minor'")
    g.add_argument("--out", metavar="FILE", help="where the WAV goes (default: the server's jobs dir)")
    g.add_argument("--request", metavar="FILE", help="read these options from a JSON file (keys: "
                                                     + ", ".join(REQUEST_KEYS) + ")")
    g.add_argument("--status-file", metavar="PATH", help="keep the current state in this JSON file (atomic)")
    g.add_argument("--upload", action="store_true", help="send input files as bytes even to a local server")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2ugen", description="M2UGen music assistant: run the job server, or talk to it.",
        epilog="Exit codes: 0 ok, 2 usage, 3 server not reachable, 4 job failed/rejected, 5 cancelled, "
               "6 interrupted (the job keeps running). See docs/protocol.md.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the job server (tiny preset when no weights are configured)",
                       description="Run the ZeroMQ job server. Binds loopback only unless CURVE keys exist.")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--preset", help="model preset: tiny, tiny-audioldm2, musicgen-small, musicgen-medium, audioldm2")
    m.add_argument("--weights", metavar="PATH", help="weights.json, a directory or a checkpoint (default: "
                                                     "M2UGEN_WEIGHTS or <config dir>/weights.json)")
    p.add_argument("--host", default=protocol.DEFAULT_HOST, help="bind address (default 127.0.0.1; any other "
                                                                  "needs CURVE keys from `m2ugen keys`)")
    p.add_argument("--port", type=int, default=protocol.DEFAULT_PORT, help="TCP port (default 5557; 0 = any free)")
    p.add_argument("--queue-size", type=int, default=16, help="jobs waiting at most (default 16); more -> busy")
    p.add_argument("--max-message-mb", type=int, default=256, help="largest accepted message (default 256 MiB)")
    p.add_argument("--max-audio-s", type=float, default=600.0, help="longest input audio (default 600 s)")
    p.add_argument("--max-audio-mb", type=int, default=256, help="largest input audio file (default 256 MiB)")
    p.add_argument("--keep-days", type=float, default=30.0,
                   help="at start, forget finished jobs older than this and delete their folders in the jobs dir "
                        "(default 30; 0 = keep forever; results written to a client's --out are never deleted)")
    p.add_argument("--allow-root", action="append", metavar="DIR",
                   help="directory clients may read from / write to (repeatable; default: home and temp dir)")
    p.add_argument("--data-dir", metavar="DIR", help="jobs and journal (default: M2UGEN_DATA_DIR or the user "
                                                     "data dir)")
    p.add_argument("--curve", action="store_true", help="require CURVE even on loopback")
    p.add_argument("--keys-dir", metavar="DIR", help="CURVE keys (default <config dir>/keys)")
    p.add_argument("--osc", action="store_true", help="also run the OSC bridge")
    p.add_argument("--osc-host", default="127.0.0.1",
                   help="OSC bind address; anything but loopback is an explicit opt-in (OSC has no authentication)")
    p.add_argument("--osc-port", type=int, default=9100, help="OSC UDP port (0 = pick a free one)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("keys", help="create CURVE keys for non-loopback serving")
    p.add_argument("--dir", metavar="DIR", help="keys dir (default <config dir>/keys)")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("where", help="print the discovery file (endpoint, CLI path, version)")
    p.set_defaults(func=cmd_where)

    for kind, text in (("ask", "ask a question about audio"), ("edit", "edit audio with an instruction"),
                       ("generate", "generate music from text, an image or a video"),
                       ("submit", "submit a job described by --request FILE (its 'kind' says which)")):
        p = sub.add_parser(kind, help=text, description=text + ". JSON lines on stdout.")
        _job_options(p, None if kind == "submit" else kind)
        _client_options(p)
        p.set_defaults(func=cmd_job)

    p = sub.add_parser("status", help="a job's record")
    p.add_argument("job")
    _client_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the final 'cancelled' event")
    _client_options(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("result", help="a finished job's result (--out FILE downloads the WAV)")
    p.add_argument("job")
    p.add_argument("--out", metavar="FILE", help="write the WAV here (downloaded as bytes)")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish first")
    p.add_argument("--status-file", metavar="PATH")
    p.add_argument("--no-progress", action="store_true")
    _client_options(p)
    p.set_defaults(func=cmd_result)

    p = sub.add_parser("jobs", help="list jobs, newest first (one JSON line each)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--state", choices=protocol.JOB_STATES)
    _client_options(p)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("chat", help="run the model in this process (no server) and print its reply")
    p.add_argument("prompt")
    p.add_argument("--audio", metavar="FILE")
    p.add_argument("--image", metavar="FILE")
    p.add_argument("--video", metavar="FILE")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--preset")
    m.add_argument("--weights", metavar="PATH")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--seed", type=int, help="random seed (default: random; the one used is recorded in the result sidecar)")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--conditioning", choices=protocol.CONDITIONING, default="text",
                   help="text: the official behaviour (the decoder is prompted with the reply text); embedding: the decoder is conditioned on the LLM's projected [AUD] states, as the paper trains")
    p.add_argument("--want-audio", choices=("auto", "yes", "no"), default="auto")
    p.add_argument("--out", metavar="FILE", help="write the reply's audio here")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("convert", help="keep only the trained tensors of an official checkpoint.pth",
                       description="Write the tensors M2UGen trained (adapters, LoRA, biases, norms, embeddings, "
                                   "bridges, projector, gates) to a .safetensors file that loads memory-mapped; "
                                   "frozen base weights come from their own sources at load (see README).")
    p.add_argument("src", help="official checkpoint.pth")
    p.add_argument("dst", help="output .safetensors")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("bridge", help="run the OSC bridge (bridge_osc)")
    try:
        from bridge_osc import cli as bridge_cli

        bridge_cli.add_arguments(p)
        p.set_defaults(func=lambda a: bridge_cli.run(a))
    except Exception as e:  # the bridge is optional; every other command still works
        err = f"{type(e).__name__}: {e}"
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda a: die(None, EXIT_FAILED, f"the OSC bridge is not available ({err})"))
    from server import cmd_train

    cmd_train.register(sub)  # train, finetune
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("m2ugen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
