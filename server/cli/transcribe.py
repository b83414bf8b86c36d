"""``m2ugen transcribe``: audio -> a ``.mid`` with a MONOPHONIC melody track and a chord track.

    m2ugen transcribe --audio take.wav --out take.mid [--start S --end S] [--bpm 120] [--no-chords]

Runs in this process with the library (m2ugen.transcribe; librosa's pYIN); the melody follows one
pitch at a time. stdout: ``{"op": "transcribed", "out", "bpm", "notes", "chords": [[start, end,
label], ...], "timings"}`` then ``{"op": "exit", "code": N}`` (0 ok, 2 usage, 4 failed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 4


def _finish(code: int, message: str | None = None) -> int:
    if message:
        print(f"m2ugen transcribe: {message}", file=sys.stderr)
    print(json.dumps({"op": "exit", "code": code}))
    return code


def cmd_transcribe(args) -> int:
    from m2ugen import media

    src, out = Path(args.audio).expanduser(), Path(args.out).expanduser().absolute()
    if not src.is_file():
        return _finish(EXIT_USAGE, f"--audio {args.audio}: no such file")
    if out.suffix.lower() not in (".mid", ".midi"):
        return _finish(EXIT_USAGE, f"--out {args.out}: a MIDI file name ends in .mid")
    try:
        wave, sr = media.decode_audio(src, name=f"--audio {src.name}", start=args.start, end=args.end)
        from m2ugen.transcribe import transcribe

        result = transcribe(wave, sr, bpm=args.bpm, chords=not args.no_chords)
        result.write(out)
    except ValueError as e:  # media.MediaError is a ValueError too
        return _finish(EXIT_FAILED, str(e))
    print(json.dumps({"op": "transcribed", "out": str(out), "bpm": result.bpm, "notes": len(result.melody),
                      "chords": [[round(c.start, 3), round(c.end, 3), c.label] for c in result.chords],
                      "timings": {k: round(v, 3) for k, v in result.timings.items()}}))
    return _finish(EXIT_OK)


def register(subparsers) -> None:
    p = subparsers.add_parser("transcribe", help="audio -> .mid (monophonic melody + chord track), locally",
                              description="Transcribe audio to a type-1 MIDI file: a monophonic melody "
                                          "(pYIN pitch tracking, onsets, RMS velocities) and a chord track "
                                          "(major/minor chroma templates per beat).")
    p.add_argument("--audio", required=True, metavar="FILE", help="input audio (WAV, FLAC, OGG, MP3, AIFF)")
    p.add_argument("--out", required=True, metavar="FILE.mid", help="the MIDI file to write")
    p.add_argument("--start", type=float, metavar="S", help="crop the audio from this second")
    p.add_argument("--end", type=float, metavar="S", help="crop the audio up to this second")
    p.add_argument("--bpm", type=float, default=120.0,
                   help="tempo of the written file and of the chord grid, one chord per beat at most (default 120)")
    p.add_argument("--no-chords", action="store_true", help="melody track only")
    p.set_defaults(func=cmd_transcribe)
