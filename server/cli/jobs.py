"""The client commands of ``m2ugen``: ask / edit / generate / submit (a job, followed to its end), and
status, jobs, cancel, result (docs/protocol.md §7).

A request is checked here with the server's own validator (``protocol.check_submit``) before it is
sent, so a bad value is a usage error at once rather than a refusal (or a timeout) later.

Files cross the wire as bytes, to a local server as to a remote one: this process reads the input
files and uploads them (``Client.upload``: offered by its BLAKE3 hash first, so a regenerate or the same clip
again sends nothing), and writes the result it fetches to ``--out`` (``Client.save_result``: atomic,
takes beside it, the sidecar as FILE.json, replacing only a file of its kind and only with
``--overwrite``). Without ``--out`` the result stays on the server (``m2ugen result JOB --out FILE``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from server import protocol
from server.cli import devices
from server.cli.common import (EXIT_CANCELLED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Reporter,
                               Unreachable,
                               UsageError, call, client_options, connect, die, finite_float, run_command)
from server.cli.human import wants_json

REQUEST_KEYS = ("kind", *protocol.PARAM_NAMES, "audio", "start", "end", "image", "video", "midi", "midi_notes",
                "context", "out",
                "overwrite", "status_file", *(p.name for p in protocol.CONTEXT), "time_signature", "server")


# ---------------------------------------------------------------------------------------------
# following a job


def follow(client, reporter: Reporter, job: str, out: Path | None, *, poll_s: float = 5.0,
           exit_map: dict[int, int] | None = None, overwrite: bool = False, on_done=None) -> int:
    """Print the job's events until it ends; returns the exit code (``exit_map`` renames codes). With
    ``out`` a finished job's result is fetched and written there (``save_output``); ``on_done(header) ->
    header``: what the caller does with the result before ``done`` is printed."""
    from server.client import ServerUnavailable

    def finish(code: int) -> int:
        return reporter.finish((exit_map or {}).get(code, code))

    while True:
        msg = client.recv(timeout_s=poll_s)
        if msg is None:  # quiet for a while: is the server still there, and the job still alive?
            reporter.heartbeat()
            try:
                rec = client.call("status", timeout_s=client.timeout_s, job=job)
            except ServerUnavailable:
                raise Unreachable(f"lost the server at {client.endpoint} while job {job} ran; fetch it later "
                                  f"with `m2ugen result {job}`") from None
            if rec.op == "job" and rec.header.get("state") in protocol.FINAL_STATES:
                msg = rec  # the final event was missed (e.g. subscribed late): use the record
            else:
                continue
        h = msg.header
        if h.get("job") not in (None, job):
            continue
        op = h.get("op")
        if op == "done" or (op in ("job", "result") and h.get("state") == "done"):
            if out is not None:
                saved = save_output(client, reporter, job, out, overwrite)
                if saved is None:
                    return finish(EXIT_FAILED)
                h = {**h, **{k: saved[k] for k in ("audio_path", "midi_path", "takes", "sidecar_path") if k in saved}}
            h = on_done(h) if on_done is not None else h
            reporter.event({**h, "op": "done"} if op != "done" else h)
            return finish(EXIT_OK)
        if op == "cancelled" or h.get("state") == "cancelled":
            reporter.event(h)
            return finish(EXIT_CANCELLED)
        if op == "error" or h.get("state") == "failed":
            reporter.event(h)
            return finish(EXIT_FAILED)
        reporter.event(h)


def save_output(client, reporter: Reporter, job: str, out: Path, overwrite: bool) -> dict | None:
    """Fetch the result of ``job`` as bytes and write it to ``out`` here (Client.save_result); None when
    it could not be fetched or written (the reason is reported)."""
    from server.client import RequestRefused, ServerUnavailable
    from server.security import PathNotAllowed

    try:
        return client.save_result(job, out, overwrite=overwrite)
    except ServerUnavailable as e:
        raise Unreachable(f"{e}; fetch the result later with `m2ugen result {job} --out FILE`") from None
    except RequestRefused as e:
        reporter.event({**e.header, "job": job})
    except (PathNotAllowed, OSError) as e:
        message = f"the result of job {job} could not be written to {out}: {e}; it stays on the server " \
                  f"(`m2ugen result {job} --out FILE`)"
        print(f"m2ugen: {message}", file=sys.stderr)
        reporter.event(protocol.error_header("output_not_written", message, job=job))
    return None


def upload_inputs(client, reporter: Reporter, fields: dict[str, Any], files: dict[str, Path]) -> None:
    """Upload each input file (``files``: a key of ``fields["inputs"]``, or ``audio_set[i]``, -> its
    path) and put its reference into the submit; one JSON line per file (``op`` upload), a progress
    bar on a terminal."""
    from server.client import RequestRefused, ServerUnavailable

    for key, path in files.items():
        state = {"last": -1.0}

        def progress(sent: int, total: int, path=path, state=state) -> None:
            fraction = sent / total if total else 1.0
            if reporter.bar is not None:
                reporter.bar.set_description_str(f"uploading {path.name}")
                reporter.bar.n = round(100 * fraction)
                reporter.bar.refresh()
            if fraction >= state["last"] + 0.25 or (sent == total and state["last"] < 1.0):  # a few lines, not one per chunk
                state["last"] = fraction
                reporter.line({"op": "upload", "name": path.name, "sent": sent, "size": total})

        try:
            ref = client.upload(path, on_progress=progress, timeout_s=client.timeout_s + 60)
        except OSError as e:
            raise UsageError(f"{path}: cannot be read: {e.strerror or e}") from None
        except ServerUnavailable as e:
            raise Unreachable(str(e)) from None
        except RequestRefused as e:
            raise UsageError(f"{path}: the server refused the upload: {e}") from None
        if key.startswith("audio_set["):
            target = fields["inputs"]["audio_set"][int(key[len("audio_set["):-1])]
        else:
            target = fields["inputs"][key]
        target.update(ref)


# ---------------------------------------------------------------------------------------------
# building a submit


def load_request(path: str | None, keys: tuple[str, ...] = REQUEST_KEYS) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise UsageError(f"--request {path}: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--request {path}: must hold a JSON object")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise UsageError(f"--request {path}: unknown key(s) {', '.join(unknown)}")
    return data


def _opt(args, req: dict, name: str):
    v = getattr(args, name, None)
    return v if v is not None else req.get(name)


def _context(args, req: dict) -> dict[str, Any]:
    context = dict(req.get("context") or {})
    for spec in protocol.CONTEXT:
        if _opt(args, req, spec.name) is not None:
            context[spec.name] = _opt(args, req, spec.name)
    ts = _opt(args, req, "time_signature")
    if ts is not None:
        if isinstance(ts, str):
            try:
                n, d = ts.split("/")
                ts = [int(n), int(d)]
            except ValueError:
                raise UsageError(f"--time-signature must look like 4/4, got {ts!r}") from None
        context["time_signature"] = ts
    return context


PLACEHOLDER = "0" * 64  # a blob reference's shape, for checking a submit before its files are uploaded


def file_ref(path: Path) -> dict[str, Any]:
    """A placeholder upload reference for ``path`` (``upload_inputs`` fills it in once connected)."""
    return {"blob": PLACEHOLDER, "proof": PLACEHOLDER, "name": path.name}


def build_submit(args, kind: str, req: dict) -> tuple[dict[str, Any], dict[str, Path], Path | None, bool]:
    """-> (submit fields, the files to upload by input, the local output path, overwrite), already checked
    by the server's validator; nothing is read or sent yet."""
    spec = protocol.KIND_SPECS[kind]
    prompt = _opt(args, req, "prompt")
    if not prompt and spec.needs_prompt:
        raise UsageError("--prompt is required")
    params: dict[str, Any] = {}
    for name in protocol.PARAM_NAMES:
        v = _opt(args, req, name)
        if v is not None:
            params[name] = v
    context = _context(args, req)
    if context:
        params["context"] = context

    files: dict[str, Path] = {}
    inputs: dict[str, Any] = {}
    for name in ("audio", "image", "video", "midi"):
        v = _opt(args, req, name)
        if v is None:
            continue
        p = Path(v).expanduser().absolute()
        if not p.is_file():
            raise UsageError(f"--{name} {v}: no such file")
        files[name] = p
        inputs[name] = file_ref(p)
    notes = req.get("midi_notes")  # a request file only: notes a DAW read from its MIDI item
    if notes is not None:
        if "midi" in inputs:
            raise UsageError("give 'midi' (a .mid file) or 'midi_notes', not both")
        inputs["midi"] = {"notes": notes}
    if "audio" in spec.requires and "audio" not in inputs:
        raise UsageError(f"{kind} needs --audio FILE")
    for name in ("start", "end"):
        v = _opt(args, req, name)
        if v is not None:
            if "audio" not in inputs:
                raise UsageError(f"--{name} needs --audio")
            inputs["audio"][name] = v

    out = _opt(args, req, "out")
    out_path = Path(out).expanduser().absolute() if out else None
    overwrite = bool(_opt(args, req, "overwrite"))
    if out_path is not None and spec.output_ext is None:
        raise UsageError(f"{kind} writes no result file; leave out --out")
    if out_path is not None and out_path.suffix.lower() != spec.output_ext:
        raise UsageError(f"--out must name a {spec.output_ext} file (its sidecar is the same name with .json), "
                         f"got {str(out_path)!r}")
    fields = {"kind": kind, "params": params, "inputs": inputs}
    try:  # the server's own checks, before anything is sent
        protocol.check_submit({**fields}, 0)
    except protocol.ProtocolError as e:
        raise UsageError(_as_option(e)) from None
    if out_path is not None:
        check_outputs(out_path, int(params.get("takes") or 1), overwrite)
    return fields, files, out_path, overwrite


def check_outputs(out: Path, takes: int, overwrite: bool) -> None:
    """--out, its takes and its sidecar can be written (before the job is submitted)."""
    from server import outputs

    try:
        for path in [outputs.take_path(out, k) for k in range(1, takes + 1)] + [outputs.sidecar_of(out)]:
            outputs.check_target(path, overwrite)
    except outputs.OutputExists as e:
        raise UsageError(f"--out: {e}") from None


def _as_option(e: protocol.ProtocolError) -> str:
    """A validator message in the CLI's words: 'params.prompt' -> --prompt."""
    field = (e.field or "").rsplit(".", 1)[-1]
    return f"--{field.replace('_', '-')}: {e.message}" if field else e.message


# ---------------------------------------------------------------------------------------------
# commands


def cmd_job(args) -> int:
    # usage errors found before the job starts still reach the status file, so a polling DAW script
    # sees them at once instead of waiting for a file that never comes
    try:
        req = load_request(args.request)
    except UsageError as e:
        return die(Reporter(args.status_file, progress=False), EXIT_USAGE, str(e), "usage")
    kind = args.command if args.command != "submit" else req.get("kind")
    reporter = Reporter(_opt(args, req, "status_file"),
                        progress=sys.stderr.isatty() and not args.no_progress and kind in protocol.KINDS,
                        human=not wants_json(args))

    def body() -> int:
        if kind not in protocol.KINDS:
            raise UsageError(f"the request needs 'kind' = {', '.join(protocol.KINDS)} (got {kind!r})")
        if req.get("kind") not in (None, kind):
            raise UsageError(f"the request file says kind {req['kind']!r} but the command is {kind!r}")
        if args.server is None and req.get("server"):
            args.server = req["server"]
        try:
            devices.record_audio(args)  # --record S: a temporary WAV becomes --audio
        except devices.DeviceError as e:
            raise UsageError(str(e)) from None
        fields, files, out_path, overwrite = build_submit(args, kind, req)  # usage errors before connecting
        client = connect(args)
        job = None
        try:
            accepted = submit(client, reporter, fields, files, args.timeout)
            if accepted is None:
                return reporter.finish(EXIT_FAILED)
            job = accepted["job"]
            reporter.event(accepted)
            return devices.play_result(args, reporter.state, follow(client, reporter, job, out_path,
                                                                    overwrite=overwrite))
        except KeyboardInterrupt:
            if job is None:
                raise
            return die(reporter, EXIT_INTERRUPTED, f"interrupted; job {job} keeps running on the server (`m2ugen result {job}`)")
        finally:
            client.close()

    try:
        return run_command(reporter, body)
    finally:
        devices.cleanup(args)


def submit(client, reporter: Reporter, fields: dict, files: dict[str, Path], timeout_s: float) -> dict | None:
    """Upload ``files`` (upload_inputs) and send the built submit; -> the ``accepted`` header, or None when
    refused (reported, the reason printed). The caller keeps the job id *before* it reports ``accepted``
    (a DAW may interrupt as soon as it reads that line, and the interrupt must then name the job)."""
    upload_inputs(client, reporter, fields, files)
    upload_s = sum(p.stat().st_size for p in files.values()) / 5e6  # the server reads/decodes the inputs: generous, 5 MB/s
    reply = call(client, "submit", [], timeout_s=timeout_s + upload_s, **fields)
    if reply.op == "error":
        reporter.event(reply.header)
        print(f"m2ugen: refused: {reply.header.get('code')}: {reply.header.get('message')}", file=sys.stderr)
        return None
    return reply.header


def _simple(args, op: str, **fields) -> int:
    """Connect, make one request, print the reply; exit 4 when the server answers with an error."""
    reporter = Reporter(getattr(args, "status_file", None), progress=False)

    def body() -> int:
        with connect(args) as client:
            reply = call(client, op, **fields)
            reporter.event(reply.header)
            return reporter.finish(EXIT_FAILED if reply.op == "error" else EXIT_OK)

    return run_command(reporter, body)


def cmd_status(args) -> int:
    return _simple(args, "status", job=args.job)


def cmd_jobs(args) -> int:
    reporter = Reporter(None, progress=False)
    fields: dict[str, Any] = {"limit": args.limit}
    if args.state:
        fields["state"] = args.state

    def body() -> int:
        with connect(args) as client:
            reply = call(client, "jobs", **fields)
            if reply.op == "error":
                reporter.line(reply.header)
                return reporter.finish(EXIT_FAILED)
            for rec in reply.header["jobs"]:
                reporter.line({"op": "job", **rec})
            return reporter.finish(EXIT_OK)

    return run_command(reporter, body)


def cmd_cancel(args) -> int:
    reporter = Reporter(None, progress=False)

    def body() -> int:
        with connect(args) as client:
            reply = call(client, "cancel", job=args.job)
            reporter.event(reply.header)
            if reply.op == "error":
                return reporter.finish(EXIT_FAILED)
            if reply.header.get("state") != "running" or args.no_wait:
                return reporter.finish(EXIT_OK)
            # wait for the final event: cancelled (exit 0), or the job ended some other way first (exit 4)
            return follow(client, reporter, args.job, None,
                          exit_map={EXIT_CANCELLED: EXIT_OK, EXIT_OK: EXIT_FAILED})

    return run_command(reporter, body)


def cmd_result(args) -> int:
    reporter = Reporter(args.status_file, progress=sys.stderr.isatty() and not args.no_progress,
                        human=not wants_json(args))
    out = Path(args.out).expanduser().absolute() if args.out else None

    def body() -> int:
        with connect(args) as client:
            if args.wait:
                sub = call(client, "subscribe", job=args.job)
                reporter.event(sub.header)
                if sub.op == "error":
                    return reporter.finish(EXIT_FAILED)
                if sub.header.get("state") not in protocol.FINAL_STATES:
                    code = follow(client, reporter, args.job, None)
                    if code != EXIT_OK or out is None:
                        return code
                    reporter.state["exit_code"] = None
            if out is not None:
                saved = save_output(client, reporter, args.job, out, args.overwrite)
                if saved is None:
                    return reporter.finish(EXIT_FAILED)
                h = saved
            else:
                reply = call(client, "result", job=args.job)
                h = reply.header
                if reply.op == "error":
                    reporter.event(h)
                    return reporter.finish(EXIT_FAILED)
            reporter.event(h)
            return reporter.finish({"done": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(h.get("state"), EXIT_FAILED))

    return run_command(reporter, body)


# ---------------------------------------------------------------------------------------------
# parser


def _add_param(g, spec: protocol.Param) -> None:
    """One protocol parameter as a CLI option (type, range and help from the protocol table)."""
    kw: dict[str, Any] = {"help": spec.help, "default": None, "dest": spec.name}
    if spec.type == "bool":
        kw["action"] = "store_false" if spec.default is True else "store_true"
    else:
        kw["type"] = {"int": int, "float": finite_float, "str": str}[spec.type]
        if spec.choices:
            kw["choices"] = spec.choices
        if spec.lo is not None and spec.hi is not None:
            kw["help"] += f" ({spec.lo:g}..{spec.hi:g})"
    g.add_argument(spec.option, **kw)


def job_options(p: argparse.ArgumentParser, kind: str | None) -> None:
    g = p.add_argument_group("job")
    if kind != "generate":
        g.add_argument("--audio", metavar="FILE", help="input audio (WAV, FLAC, OGG, MP3, AIFF, or any format "
                                                       "ffmpeg reads: m4a, mp4...)")
        g.add_argument("--start", type=finite_float, metavar="S", help="crop the audio from this second")
        g.add_argument("--end", type=finite_float, metavar="S", help="crop the audio up to this second")
    if kind in ("generate", None):
        g.add_argument("--image", metavar="FILE", help="condition generation on an image")
        g.add_argument("--video", metavar="FILE", help="condition generation on a video")
    if kind in ("generate", "edit", None):
        g.add_argument("--midi", metavar="FILE.mid", help="a MIDI sketch whose notes the music follows (mode "
                                                          "melody; needs a melody decoder)")
    for spec in protocol.PARAMS:
        if kind is None or kind in spec.kinds:
            _add_param(g, spec)
    c = p.add_argument_group("musical context (from the DAW project; added to the prompt)")
    for spec in protocol.CONTEXT:
        if kind is None or kind in spec.kinds:
            _add_param(c, spec)
    c.add_argument("--time-signature", metavar="N/D", help="e.g. 4/4")
    ext = protocol.KIND_SPECS[kind].output_ext if kind in protocol.KIND_SPECS else ".wav"
    what = "MIDI file" if ext == ".mid" else "WAV"
    g.add_argument("--out", metavar=f"FILE{ext}", help=f"where the {what} is written, here (fetched as bytes; "
                                                      f"default: it stays on the server); its sidecar is FILE.json")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help=f"replace --out (and its sidecar) if it exists; only a {what} (and a sidecar) is ever replaced")
    g.add_argument("--request", metavar="FILE", help="read these options from a JSON file (keys: "
                                                     + ", ".join(REQUEST_KEYS) + ")")
    g.add_argument("--status-file", metavar="PATH", help="keep the current state in this JSON file (atomic)")
    g.add_argument("--upload", action="store_true", help=argparse.SUPPRESS)  # always so now (kept for old scripts)
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g.add_argument("--json", action="store_true", help="JSON lines on stdout even on a terminal (the default "
                                                       "when stdout is not one)")
    devices.add_job_options(g, kind)


def register(sub) -> None:
    for kind, text in (("ask", "ask a question about audio"), ("edit", "edit audio with an instruction"),
                       ("generate", "generate music from text, an image or a video"),
                       ("submit", "submit a job described by --request FILE (its 'kind' says which)")):
        p = sub.add_parser(kind, help=text, description=text + ". JSON lines on stdout.")
        job_options(p, None if kind == "submit" else kind)
        client_options(p)
        p.set_defaults(func=cmd_job)

    p = sub.add_parser("status", help="a job's record")
    p.add_argument("job")
    client_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the final 'cancelled' event")
    client_options(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("result", help="a finished job's result (--out FILE downloads the WAV)")
    p.add_argument("job")
    p.add_argument("--out", metavar="FILE", help="write the result here (fetched as bytes; a transcription: a .mid; "
                                                 "takes beside it, the sidecar as FILE.json)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a file of its kind")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish first")
    p.add_argument("--status-file", metavar="PATH")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout even on a terminal")
    client_options(p)
    p.set_defaults(func=cmd_result)

    p = sub.add_parser("jobs", help="list jobs, newest first (one JSON line each)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--state", choices=protocol.JOB_STATES)
    client_options(p)
    p.set_defaults(func=cmd_jobs)
