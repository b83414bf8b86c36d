"""``m2ugen learn FILE|DIR ... --adapter-name NAME``: a personal fine-tune as a job on the running server
(kind ``finetune``, docs/training.md), followed to its end like ask/edit/generate.

The clips are read here and uploaded as bytes (a clip the server already holds is not sent again); a ``.txt`` beside a clip
is its caption (else the server's model describes it). Its options come from the protocol table (the
``finetune`` rows). Ctrl-C asks the server to cancel the fine-tune and waits for it to stop (the other
client commands leave their short jobs running). ``m2ugen finetune --audio-dir`` is the same training
without a server, in this process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from server import protocol
from server.cli.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Reporter, UsageError, call, client_options,
                               connect, die, run_command)
from server.cli.jobs import _add_param, _as_option, file_ref, follow, load_request, submit

KIND = "finetune"
COMMAND = "learn"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".m4a", ".mp4")


def _expand(items: list) -> list[dict[str, Any]]:
    """FILE / DIR / {"path", "caption", "start", "end"} -> clip entries (directories: their audio files)."""
    clips = []
    for item in items:
        entry = dict(item) if isinstance(item, dict) else {"path": str(item)}
        if not str(entry.get("path") or "").strip():
            raise UsageError(f"a clip without a path: {item!r}")
        p = Path(str(entry["path"])).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise UsageError(f"{p}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
            clips += [{"path": str(f)} for f in found]
        elif p.is_file():
            clips.append({**entry, "path": str(p)})
        else:
            raise UsageError(f"{p}: no such file or directory")
    for c in clips:
        side = Path(c["path"]).with_suffix(".txt")
        if not c.get("caption") and side.is_file():
            c["caption"] = side.read_text(encoding="utf-8-sig").strip() or None
    return clips


CLIP_KEYS = ("path", "caption", "start", "end")


def build_submit(args, req: dict) -> tuple[dict[str, Any], dict[str, Path]]:
    """-> (submit fields with placeholder upload references, the clip files to upload by input)."""
    params: dict[str, Any] = {}
    for spec in protocol.PARAMS:
        if KIND in spec.kinds:
            v = getattr(args, spec.name, None)
            v = v if v is not None else req.get(spec.name)
            if v is not None:
                params[spec.name] = v
    for item in req.get("files") or []:  # a request file's clip: a typo must not pass unnoticed
        unknown = sorted(set(item) - set(CLIP_KEYS)) if isinstance(item, dict) else []
        if unknown:
            raise UsageError(f"--request: unknown key(s) in a clip: {', '.join(unknown)} (a clip takes "
                             f"{', '.join(CLIP_KEYS)})")
    clips = _expand(list(args.files or []) + list(req.get("files") or []))
    if not clips:
        raise UsageError("give the clips to learn from: FILE or DIR arguments (or 'files' in --request)")
    files: dict[str, Path] = {}
    audio_set = []
    for i, c in enumerate(clips):
        p = Path(c["path"]).absolute()
        ref: dict[str, Any] = {k: c[k] for k in ("caption", "start", "end") if c.get(k) is not None}
        ref.update(file_ref(p))
        files[f"audio_set[{i}]"] = p
        audio_set.append(ref)
    fields = {"kind": KIND, "params": params, "inputs": {"audio_set": audio_set}}
    try:
        protocol.check_submit(fields, 0)
    except protocol.ProtocolError as e:
        raise UsageError(_as_option(e)) from None
    return fields, files


def cmd_learn(args) -> int:
    try:
        req = load_request(args.request, LEARN_REQUEST_KEYS)
    except UsageError as e:
        return die(Reporter(args.status_file, progress=False), EXIT_USAGE, str(e), "usage")
    status_file = args.status_file or req.get("status_file")
    reporter = Reporter(status_file, progress=sys.stderr.isatty() and not args.no_progress)

    def body() -> int:
        if req.get("kind") not in (None, KIND, COMMAND):
            raise UsageError(f"the request file says kind {req['kind']!r}; learn sends {KIND!r}")
        if args.server is None and req.get("server"):
            args.server = req["server"]
        fields, files = build_submit(args, req)
        client = connect(args)
        job = None
        try:
            accepted = submit(client, reporter, fields, files, args.timeout)
            if accepted is None:
                return reporter.finish(EXIT_FAILED)
            job = accepted["job"]
            reporter.event(accepted)
            return follow(client, reporter, job, None)
        except KeyboardInterrupt:
            if job is None:
                raise
            print(f"m2ugen: cancelling fine-tune job {job} (it stops at its next step)", file=sys.stderr)
            try:
                call(client, "cancel", job=job)
                return follow(client, reporter, job, None)  # exit 5 once cancelled
            except KeyboardInterrupt:
                return die(reporter, EXIT_INTERRUPTED, f"interrupted; job {job} may still run (`m2ugen cancel {job}`)")
        finally:
            client.close()

    return run_command(reporter, body)


LEARN_REQUEST_KEYS = ("kind", "files", "status_file", "server",
                      *(p.name for p in protocol.PARAMS if KIND in p.kinds))


def register(sub) -> None:
    text = "learn a personal adapter from audio clips on the running server (a finetune job)"
    p = sub.add_parser(COMMAND, help=text, description=text + ". JSON lines on stdout; Ctrl-C cancels it.")
    p.add_argument("files", nargs="*", metavar="FILE|DIR", help="audio clips, or folders of them (a .txt beside a "
                                                                "clip is its caption)")
    g = p.add_argument_group("fine-tune")
    for spec in protocol.PARAMS:
        if KIND in spec.kinds:
            _add_param(g, spec)
    g.add_argument("--request", metavar="FILE", help="read these options from a JSON file (keys: "
                                                     + ", ".join(LEARN_REQUEST_KEYS) + ")")
    g.add_argument("--status-file", metavar="PATH", help="keep the current state in this JSON file (atomic)")
    g.add_argument("--upload", action="store_true", help=argparse.SUPPRESS)  # always so now (kept for old scripts)
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    client_options(p)
    p.set_defaults(func=cmd_learn)

