"""What a person sees at the terminal: a few plain lines and a short summary instead of JSON.

The client commands print JSON lines when stdout is not a terminal (a script, a DAW, a pipe) or with
``--json``; on a terminal they print this instead (the progress bar is on stderr either way). The
summary says where the file is, how long it is, what was measured of it (tempo, key, loudness) and
the answer text; a failure says what went wrong.
"""

from __future__ import annotations

import sys
from typing import Any


def wants_json(args) -> bool:
    """JSON lines for programs: with ``--json`` or when stdout is not a terminal."""
    return bool(getattr(args, "json", False)) or not _isatty(sys.stdout)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def measured(a: dict[str, Any] | None) -> str:
    """"92 BPM, F# minor, -14.2 LUFS, peak -1.0 dBTP" from an analysis dict (what was measured only)."""
    if not a:
        return ""
    parts = []
    if a.get("bpm"):
        other = f" (or {a['bpm_alternative']:.0f})" if a.get("bpm_alternative") else ""  # the tempo level unsure
        parts.append(f"{a['bpm']:.0f} BPM{other}")
    if a.get("key_name"):
        parts.append(str(a["key_name"]))
    if a.get("lufs") is not None:
        parts.append(f"{a['lufs']:.1f} LUFS")
    if a.get("true_peak_dbtp") is not None:
        parts.append(f"true peak {a['true_peak_dbtp']:.1f} dBTP")
    return ", ".join(parts)


def _length(duration: float | None, sr: int | None, channels: int | None) -> str:
    bits = []
    if duration:
        bits.append(f"{duration:.1f} s")
    if sr:
        bits.append(f"{sr} Hz")
    if channels:
        bits.append({1: "mono", 2: "stereo"}.get(int(channels), f"{channels} channels"))
    return ", ".join(bits)


class HumanOutput:
    """Turns the events of one job into lines for a person (``event``) and a closing summary (``summary``)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.last_header: dict[str, Any] = {}

    def write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def event(self, header: dict[str, Any]) -> None:
        op = header.get("op")
        if header.get("job") is not None:
            self.last_header = header
        if op == "accepted":
            pos = header.get("queue_position")
            self.write(f"job {header.get('job')} accepted" + (f", {pos} job(s) ahead" if pos else ""))

    def summary(self, state: dict[str, Any], code: int) -> list[str]:
        """The closing lines (also returned, for tests)."""
        lines: list[str] = []
        s = state
        if s.get("state") == "done":
            if s.get("audio_path"):
                length = _length(s.get("duration"), s.get("sample_rate"), self.last_header.get("channels"))
                lines.append(f"audio: {s['audio_path']}" + (f" ({length})" if length else ""))
            if s.get("midi_path"):
                lines.append(f"MIDI: {s['midi_path']}")
            m = measured(s.get("result_analysis")) or measured(s.get("analysis"))
            if m:
                lines.append(f"measured: {m}")
            takes = s.get("takes") or []
            for t in takes if len(takes) > 1 else []:
                lines.append(f"take {t.get('take')}: {t.get('audio_path')} (seed {t.get('seed')})")
            loudness = (takes[0].get("loudness") if takes else None)
            if loudness:
                lines.append(f"loudness: {loudness}")
            if s.get("text"):
                lines.append(f"answer: {s['text']}")
            if not lines:
                lines.append("done")
        elif s.get("state") == "failed":
            err = s.get("error") or {}
            lines.append(f"failed: {err.get('message') or err.get('code') or 'the job failed'}")
        elif s.get("state") == "cancelled":
            lines.append("cancelled")
        for line in lines:
            self.write(line)
        return lines
