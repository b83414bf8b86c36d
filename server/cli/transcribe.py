"""``m2ugen transcribe``: audio -> a ``.mid`` with a MONOPHONIC melody track and a chord track.

    m2ugen transcribe --audio take.wav [--start S --end S] [--out take.mid] [--bpm 120] [--no-chords]
    m2ugen transcribe --local --audio take.wav --out take.mid [...]

By default a client of the running server like ``ask`` / ``edit`` (a ``transcribe`` job: it waits
its turn in the queue, its events and the final ``{"op": "exit"}`` print as JSON lines, the status
file and progress bar as for every job; the ``done`` line's ``midi_path`` is the file). To a remote
server the ``.mid`` comes back as bytes into ``--out`` (default ``./m2ugen-result.mid``).

``--local`` runs it in this process instead (m2ugen.transcribe; librosa's pYIN), no server needed:
stdout ``{"op": "transcribed", "out", "bpm", "notes", "chords": [[start, end, label], ...],
"timings"}`` then ``{"op": "exit", "code": N}`` (0 ok, 2 usage, 4 failed); ``--bpm`` defaults to 120
there (the server measures the source's tempo when no ``--bpm`` is given).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 4
LOCAL_BPM = 120.0


def _finish(code: int, message: str | None = None) -> int:
    if message:
        print(f"m2ugen transcribe: {message}", file=sys.stderr)
    print(json.dumps({"op": "exit", "code": code}))
    return code


def cmd_local(args) -> int:
    from m2ugen import media

    if not args.audio or not args.out:
        return _finish(EXIT_USAGE, "--local needs --audio FILE and --out FILE.mid")
    src, out = Path(args.audio).expanduser(), Path(args.out).expanduser().absolute()
    if not src.is_file():
        return _finish(EXIT_USAGE, f"--audio {args.audio}: no such file")
    if out.suffix.lower() not in (".mid", ".midi"):
        return _finish(EXIT_USAGE, f"--out {args.out}: a MIDI file name ends in .mid")
    try:
        wave, sr = media.decode_audio(src, name=f"--audio {src.name}", start=args.start, end=args.end)
        from m2ugen.transcribe import transcribe

        result = transcribe(wave, sr, bpm=args.bpm or LOCAL_BPM, chords=args.chords is not False,
                            beats_per_window=args.beats_per_chord or 1, dereverb=args.dereverb is not False)
        result.write(out)
    except ValueError as e:  # media.MediaError is a ValueError too
        return _finish(EXIT_FAILED, str(e))
    print(json.dumps({"op": "transcribed", "out": str(out), "bpm": result.bpm, "notes": len(result.melody),
                      "chords": [[round(c.start, 3), round(c.end, 3), c.label] for c in result.chords],
                      "timings": {k: round(v, 3) for k, v in result.timings.items()}}))
    return _finish(EXIT_OK)


def cmd_transcribe(args) -> int:
    if args.local:
        return cmd_local(args)
    from server.cli import jobs

    return jobs.cmd_job(args)


def register(subparsers) -> None:
    from server.cli import jobs
    from server.cli.common import client_options

    p = subparsers.add_parser("transcribe", help="audio -> .mid (monophonic melody + chord track): a server job, "
                                                 "or --local",
                              description="Transcribe audio to a type-1 MIDI file: a monophonic melody "
                                          "(pYIN pitch tracking, onsets, RMS velocities) and a chord track "
                                          "(major/minor chroma templates per beat). A job of the running server "
                                          "(JSON lines on stdout), or in this process with --local.")
    jobs.job_options(p, "transcribe")
    p.add_argument("--local", action="store_true",
                   help="run in this process, no server (needs --out; --bpm defaults to 120)")
    client_options(p)
    p.set_defaults(func=cmd_transcribe)
