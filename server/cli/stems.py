"""``m2ugen stems``: audio -> one WAV per stem, a ``stems`` job of the running server.

    m2ugen stems song.wav --out stems/ [--stem-model htdemucs_6s] [--start S --end S] [--overwrite]

Writes ``<out>/<file name>-<stem>.wav`` for every stem of the model (htdemucs: drums, bass, other,
vocals; htdemucs_6s adds guitar, piano), with the source's rate, channels and length. A local server
writes them there itself; from a remote one they come back as bytes, one ``result`` with ``take``
per stem. JSON lines on stdout as for every job (the ``done`` line's ``stems`` maps each stem to its
file), the progress bar on a terminal, ``--status-file`` for scripts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from server import protocol
from server.cli.common import (EXIT_FAILED, EXIT_INTERRUPTED, Reporter, Unreachable, UsageError, call,
                               client_options, connect, die, finite_float, is_local, run_command)

KIND = "stems"


def _fetch(client, job: str, folder: Path, name: str, header: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """From a remote server: every stem as bytes (``result`` + ``take``) into ``folder``."""
    from server.outputs import stem_path

    paths = {}
    for t in header.get("takes") or []:
        path = stem_path(folder / f"{name}.wav", t["stem"])
        if path.exists() and not overwrite:
            raise UsageError(f"{path} exists; pass --overwrite to replace it")
        reply = call(client, "result", job=job, want="bytes", take=int(t["take"]))
        if reply.op == "error" or not reply.frames:
            raise Unreachable(f"stem {t['stem']} of job {job} could not be fetched: {reply.header.get('message')}")
        path.write_bytes(reply.frames[0])
        paths[t["stem"]] = str(path)
    return paths


def cmd_stems(args) -> int:
    from server.cli import jobs

    reporter = Reporter(args.status_file, progress=sys.stderr.isatty() and not args.no_progress)

    def body() -> int:
        from server.client import resolve_endpoint

        src = Path(args.file).expanduser()
        if not src.is_file():
            raise UsageError(f"{args.file}: no such file")
        folder = Path(args.out).expanduser().absolute()
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--out {args.out} is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        local = is_local(resolve_endpoint(args.server)) and not args.upload
        params = {"stem_model": args.stem_model} if args.stem_model else {}
        frames: list[bytes] = []
        audio: dict[str, Any] = {"path": str(src.absolute())} if local else {"frame": 1, "name": src.name}
        if not local:
            frames.append(src.read_bytes())
        for key in ("start", "end"):
            if getattr(args, key) is not None:
                audio[key] = getattr(args, key)
        output: dict[str, Any] = ({"path": str(folder / f"{src.stem}.wav"), "overwrite": bool(args.overwrite)}
                                  if local else {"want": "path"})
        fields = {"kind": KIND, "params": params, "inputs": {"audio": audio}, "output": output}
        try:
            protocol.check_submit(fields, len(frames))
        except protocol.ProtocolError as e:
            raise UsageError(jobs._as_option(e)) from None
        client = connect(args)
        job = None
        try:
            accepted = jobs.submit(client, reporter, fields, frames, args.timeout)
            if accepted is None:
                return reporter.finish(EXIT_FAILED)
            job = accepted["job"]
            reporter.event(accepted)

            def on_done(h: dict[str, Any]) -> dict[str, Any]:
                stems = ({t["stem"]: t["audio_path"] for t in h.get("takes") or []} if local
                         else _fetch(client, job, folder, src.stem, h, bool(args.overwrite)))
                return {**h, "stems": stems, "audio_path": next(iter(stems.values()), None)}

            return jobs.follow(client, reporter, job, None, on_done=on_done)
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
    p.add_argument("--upload", action="store_true", help="send the file as bytes even to a local server")
    p.add_argument("--status-file", metavar="PATH", help="keep the current state in this JSON file (atomic)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    client_options(p)
    p.set_defaults(func=cmd_stems)

