"""``m2ugen stems``: audio -> one WAV per stem, a ``stems`` job of the running server.

    m2ugen stems song.wav --out stems/ [--stem-model htdemucs_6s] [--start S --end S] [--overwrite]

Writes ``<out>/<file name>-<stem>.wav`` for every stem of the model (htdemucs: drums, bass, other,
vocals; htdemucs_6s adds guitar, piano), with the source's channels and length. The file is uploaded
(protocol 2) and the stems come back as bytes, one ``result`` with ``take`` per stem, written here by
the client (Client.save_result), with the sidecar as ``<out>/<file name>.json``. JSON lines on stdout as for every job (the ``done`` line's ``stems`` maps each stem to its
file), the progress bar on a terminal, ``--status-file`` for scripts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from server import protocol
from server.cli.common import (EXIT_FAILED, EXIT_INTERRUPTED, Reporter, UsageError, client_options, connect, die,
                               finite_float, run_command)

KIND = "stems"


def cmd_stems(args) -> int:
    from server import outputs
    from server.cli import jobs

    reporter = Reporter(args.status_file, progress=sys.stderr.isatty() and not args.no_progress)

    def body() -> int:
        src = Path(args.file).expanduser().absolute()
        if not src.is_file():
            raise UsageError(f"{args.file}: no such file")
        folder = Path(args.out).expanduser().absolute()
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--out {args.out} is not a folder")
        params = {"stem_model": args.stem_model} if args.stem_model else {}
        audio: dict[str, Any] = jobs.file_ref(src)
        for key in ("start", "end"):
            if getattr(args, key) is not None:
                audio[key] = getattr(args, key)
        fields = {"kind": KIND, "params": params, "inputs": {"audio": audio}}
        try:
            protocol.check_submit(fields, 0)
        except protocol.ProtocolError as e:
            raise UsageError(jobs._as_option(e)) from None
        out = folder / f"{src.stem}.wav"  # the stems land beside it as <name>-<stem>.wav, the sidecar as <name>.json
        try:
            for path in [outputs.stem_path(out, s) for s in protocol.stems_of(KIND, params)] + [outputs.sidecar_of(out)]:
                outputs.check_target(path, bool(args.overwrite))
        except outputs.OutputExists as e:
            raise UsageError(f"--out: {e}") from None
        folder.mkdir(parents=True, exist_ok=True)
        client = connect(args)
        job = None
        try:
            accepted = jobs.submit(client, reporter, fields, {"audio": src}, args.timeout)
            if accepted is None:
                return reporter.finish(EXIT_FAILED)
            job = accepted["job"]
            reporter.event(accepted)

            def on_done(h: dict[str, Any]) -> dict[str, Any]:
                return {**h, "stems": {t["stem"]: t["audio_path"] for t in h.get("takes") or [] if t.get("stem")}}

            return jobs.follow(client, reporter, job, out, overwrite=bool(args.overwrite), on_done=on_done)
        except KeyboardInterrupt:
            if job is None:
                raise
            return die(reporter, EXIT_INTERRUPTED, f"interrupted; job {job} keeps running on the server")
        finally:
            client.close()

    return run_command(reporter, body)


def register(sub) -> None:
    from server.cli.jobs import _add_param

    p = sub.add_parser(KIND, help="split audio into stems (drums, bass, other, vocals[, guitar, piano]): one WAV each",
                       description="Separate audio into stems with Demucs on the running server (weights from its "
                                   "--stems-dir or torch hub cache; never downloaded). JSON lines on stdout.")
    p.add_argument("file", help="the audio to separate (WAV, FLAC, MP3, ... any format ffmpeg reads)")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder for <file name>-<stem>.wav")
    p.add_argument("--start", type=finite_float, metavar="S", help="separate from this second")
    p.add_argument("--end", type=finite_float, metavar="S", help="separate up to this second")
    for spec in protocol.PARAMS:
        if KIND in spec.kinds:
            _add_param(p, spec)
    p.add_argument("--overwrite", action="store_true", help="replace stem files that exist")
    p.add_argument("--upload", action="store_true", help=argparse.SUPPRESS)  # protocol 1; inputs are always uploaded
    p.add_argument("--status-file", metavar="PATH", help="keep the current state in this JSON file (atomic)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    client_options(p)
    p.set_defaults(func=cmd_stems)

