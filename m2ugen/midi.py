"""MIDI as a melody/harmony condition: notes -> the chroma sequence MusicGen-Melody is conditioned on.

    notes = read_notes("sketch.mid")                  # [Note(start, end, pitch, velocity, channel)] in seconds
    chroma = midi_to_chroma("sketch.mid", frame_rate=MELODY_FRAME_RATE)   # float32 [T, 12]
    chroma = notes_to_chroma(parse_notes([[0.0, 0.5, 60, 100], ...]), MELODY_FRAME_RATE)   # notes sent by a DAW

The notes become pitch classes directly (no audio rendering in between). The file's tempo map is
followed exactly: every ``set_tempo`` splits the timeline and ticks are turned into seconds with
integer arithmetic (no accumulated rounding).

Frames follow transformers' ``MusicgenMelodyFeatureExtractor`` (audiocraft's chroma extractor):
32 kHz audio, hop 4096 samples, a centred STFT, so frame ``t`` is centred on ``t / frame_rate``
seconds (7.8125 frames/s) and ``duration_s`` gives ``floor(duration_s * frame_rate) + 1`` frames.
Here frame ``t`` covers ``[(t - 1/2) / frame_rate, (t + 1/2) / frame_rate)``. Each note adds
``velocity / 127 * (overlap with the frame / frame length)`` to its pitch class.

Per frame, like the extractor, the chroma is made one-hot at its strongest pitch class
(``polyphony="argmax"``, the representation the model was trained on). Polyphony: in a chord the
pitch class with the largest summed weight wins; exact ties (a block chord of equal velocities) go
to the pitch class of the lowest sounding note, i.e. the bass, not to the lowest index.
``polyphony="weights"`` keeps every pitch class instead, scaled so the strongest is 1 (the
extractor's max-normalisation before its argmax) - whole chords, outside the trained distribution.

Silence (no note sounding in the frame, drums excluded): an all-zero frame by default. The
extractor turns silence into a one-hot C (argmax of zeros is index 0); ``reference=True``
reproduces that.
"""

from __future__ import annotations

import bisect
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

# transformers' MusicgenMelodyFeatureExtractor: 32 kHz, hop_length 4096 (audiocraft: same numbers)
MELODY_SAMPLE_RATE = 32000
MELODY_HOP_LENGTH = 4096
MELODY_FRAME_RATE = MELODY_SAMPLE_RATE / MELODY_HOP_LENGTH  # 7.8125 frames per second

DEFAULT_TEMPO = 500_000  # microseconds per quarter note (120 bpm), the MIDI default
DRUM_CHANNEL = 9  # General MIDI channel 10 (0-based 9): percussion, no pitch class
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
POLYPHONY = ("argmax", "weights")


@dataclass(frozen=True)
class Note:
    """One note in seconds. ``pitch`` 0..127 (60 = middle C), ``velocity`` 1..127, ``channel`` 0..15."""

    start: float
    end: float
    pitch: int
    velocity: int = 100
    channel: int = 0

    @property
    def pitch_class(self) -> int:
        return self.pitch % 12

    def as_list(self) -> list:
        return [self.start, self.end, self.pitch, self.velocity, self.channel]


# ---------------------------------------------------------------------------------------------
# reading: file / bytes / mido.MidiFile -> tempo map -> notes


def load_midi(midi: Any):
    """A ``mido.MidiFile`` from a path, raw ``.mid`` bytes or a MidiFile (returned as is)."""
    import mido

    if isinstance(midi, mido.MidiFile):
        return midi
    try:
        if isinstance(midi, (bytes, bytearray, memoryview)):
            if not bytes(midi[:4]) == b"MThd":
                raise ValueError("midi: the bytes are not a Standard MIDI File (no 'MThd' header)")
            return mido.MidiFile(file=io.BytesIO(bytes(midi)))
        if isinstance(midi, (str, os.PathLike)):
            p = Path(midi).expanduser()
            if not p.is_file():
                raise ValueError(f"midi: no such file: {p}")
            return mido.MidiFile(str(p))
    except (OSError, EOFError, KeyError, IndexError) as e:
        raise ValueError(f"midi: cannot read {_describe(midi)}: {type(e).__name__}: {e}") from None
    raise ValueError(f"midi: expected a path, .mid bytes or a mido.MidiFile, got {type(midi).__name__}")


def _describe(midi: Any) -> str:
    return f"{len(midi)} bytes" if isinstance(midi, (bytes, bytearray, memoryview)) else str(midi)


class TempoMap:
    """Ticks <-> seconds for one file, following every ``set_tempo`` (exact: integer microseconds)."""

    def __init__(self, ticks_per_beat: int, changes: Iterable[tuple[int, int]] = ()):
        if ticks_per_beat <= 0:
            raise ValueError(f"midi: ticks_per_beat must be > 0, got {ticks_per_beat}")
        self.ticks_per_beat = ticks_per_beat
        # (tick, tempo); the last change at a tick wins; tempo before the first change: 120 bpm
        by_tick: dict[int, int] = {0: DEFAULT_TEMPO}
        for tick, tempo in sorted(changes, key=lambda c: c[0]):
            by_tick[tick] = tempo
        self.ticks = sorted(by_tick)
        self.tempos = [by_tick[t] for t in self.ticks]
        # microseconds * ticks_per_beat at each change (integers: no rounding accumulates)
        self._us_tpb = [0]
        for i in range(1, len(self.ticks)):
            self._us_tpb.append(self._us_tpb[-1] + (self.ticks[i] - self.ticks[i - 1]) * self.tempos[i - 1])

    @classmethod
    def from_midi(cls, mid) -> "TempoMap":
        changes = []
        for track in mid.tracks:
            tick = 0
            for msg in track:
                tick += msg.time
                if msg.type == "set_tempo":
                    changes.append((tick, msg.tempo))
        return cls(mid.ticks_per_beat, changes)

    def seconds(self, tick: int) -> float:
        i = bisect.bisect_right(self.ticks, tick) - 1
        us_tpb = self._us_tpb[i] + (tick - self.ticks[i]) * self.tempos[i]
        return us_tpb / (self.ticks_per_beat * 1_000_000)

    def bpm_at(self, tick: int) -> float:
        return 60_000_000 / self.tempos[bisect.bisect_right(self.ticks, tick) - 1]


def read_notes(midi: Any, *, include_drums: bool = False, max_notes: int | None = None) -> list[Note]:
    """Every note of a type 0 or 1 file, in seconds on the file's tempo map, sorted by start then pitch.

    A note starts at ``note_on`` with velocity > 0 and ends at the matching ``note_off`` (or
    ``note_on`` with velocity 0) on the same track, channel and pitch; overlapping notes of the same
    pitch end first-in first-out. A note still held at the end of its track ends there. Notes on
    the General MIDI drum channel (10) are left out unless ``include_drums``. ``max_notes``: a budget;
    a file with more notes (drums included) raises ValueError as soon as it is passed.
    """
    mid = load_midi(midi)
    if mid.type == 2:
        raise ValueError("midi: type 2 files (independent sequences) are not supported; export type 0 or 1")
    tempo = TempoMap.from_midi(mid)
    notes: list[Note] = []
    for track in mid.tracks:
        tick = 0
        held: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                held.setdefault((msg.channel, msg.note), []).append((tick, msg.velocity))
            elif msg.type in ("note_off", "note_on"):
                started = held.get((msg.channel, msg.note))
                if started:
                    t0, vel = started.pop(0)
                    notes.append(_note(tempo, t0, tick, msg.note, vel, msg.channel))
                    if max_notes is not None and len(notes) > max_notes:
                        raise ValueError(f"more than {max_notes} notes (the limit)")
        for (channel, pitch), started in held.items():
            for t0, vel in started:
                notes.append(_note(tempo, t0, tick, pitch, vel, channel))
    if not include_drums:
        notes = [n for n in notes if n.channel != DRUM_CHANNEL]
    notes = [n for n in notes if n.end > n.start]
    return sorted(notes, key=lambda n: (n.start, n.pitch, n.end))


def _note(tempo: TempoMap, t0: int, t1: int, pitch: int, velocity: int, channel: int) -> Note:
    return Note(tempo.seconds(t0), tempo.seconds(t1), pitch, velocity, channel)


def parse_notes(items: Iterable[Any]) -> list[Note]:
    """Notes sent by a client: ``[start, end, pitch, velocity?, channel?]`` lists or dicts with those
    keys (seconds). Raises ValueError naming the first bad note."""
    notes = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, Note):
                n = item
            elif isinstance(item, dict):
                unknown = set(item) - {"start", "end", "pitch", "velocity", "channel"}
                if unknown:
                    raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
                n = Note(float(item["start"]), float(item["end"]), int(item["pitch"]),
                         int(item.get("velocity", 100)), int(item.get("channel", 0)))
            elif isinstance(item, (list, tuple)) and 3 <= len(item) <= 5:
                n = Note(float(item[0]), float(item[1]), int(item[2]), *(int(v) for v in item[3:]))
            else:
                raise ValueError("expected [start, end, pitch, velocity?, channel?] or a dict")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"notes[{i}]: {e if not isinstance(e, KeyError) else f'missing {e}'} "
                             f"(got {item!r})") from None
        if not (math.isfinite(n.start) and math.isfinite(n.end)) or n.start < 0 or n.end <= n.start:
            raise ValueError(f"notes[{i}]: needs 0 <= start < end, got start={n.start} end={n.end}")
        if not 0 <= n.pitch <= 127 or not 1 <= n.velocity <= 127 or not 0 <= n.channel <= 15:
            raise ValueError(f"notes[{i}]: pitch 0..127, velocity 1..127 and channel 0..15 (got {item!r})")
        notes.append(n)
    return notes


# ---------------------------------------------------------------------------------------------
# notes -> chroma


def frame_count(duration_s: float, frame_rate: float) -> int:
    """Frames the melody extractor gives for ``duration_s`` of audio (centred STFT: 1 + samples // hop)."""
    return int(math.floor(duration_s * frame_rate + 1e-9)) + 1


CHROMA_CHUNK = 512  # notes between two calls of a chroma's ``check`` (a caller's cancel point)
_SCALAR_FRAMES = 16  # notes spanning fewer frames are added frame by frame, longer ones as arrays (same floats)


def chroma_work(notes: Iterable[Note], frame_rate: float = MELODY_FRAME_RATE, max_s: float | None = None) -> int:
    """How many (note, frame) pairs ``pitch_class_weights`` visits for ``notes`` covering up to ``max_s``
    seconds: the cost of a chroma, for a budget checked before any of it is computed."""
    total = 0
    for n in notes:
        end = n.end if max_s is None else min(n.end, max_s)
        if end > n.start:
            total += max(0, math.ceil(end * frame_rate + 0.5) - max(0, math.floor(n.start * frame_rate + 0.5)))
    return total


def pitch_class_weights(notes: Iterable[Note], frame_rate: float, n_frames: int,
                        check: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (weights float64 [T, 12], lowest sounding pitch per frame/class int [T, 12], 128 where none).

    ``weights[t, pc]`` = sum over notes of ``velocity / 127 * overlap(note, frame t) / frame length``.
    ``check(notes_done)`` is called before every ``CHROMA_CHUNK`` notes (it may raise to stop the work)."""
    weights = np.zeros((n_frames, 12), dtype=np.float64)
    lowest = np.full((n_frames, 12), 128, dtype=np.int64)
    hop = 1.0 / frame_rate
    for i, n in enumerate(notes):
        if check is not None and i % CHROMA_CHUNK == 0:
            check(i)
        # frames whose window [(t - 1/2) hop, (t + 1/2) hop) meets [start, end)
        t0 = max(0, math.floor(n.start * frame_rate + 0.5))
        t1 = min(n_frames - 1, math.ceil(n.end * frame_rate + 0.5) - 1)
        if t1 - t0 < _SCALAR_FRAMES:  # a short note: a plain loop costs less than setting up arrays
            for t in range(t0, t1 + 1):
                overlap = min(n.end, (t + 0.5) * hop) - max(n.start, (t - 0.5) * hop)
                if overlap <= 1e-12:
                    continue
                weights[t, n.pitch_class] += n.velocity / 127.0 * overlap / hop
                lowest[t, n.pitch_class] = min(lowest[t, n.pitch_class], n.pitch)
            continue
        frames = np.arange(t0, t1 + 1)
        t = frames.astype(np.float64)  # the same float operations per frame as a scalar loop, in one pass
        overlap = np.minimum(n.end, (t + 0.5) * hop) - np.maximum(n.start, (t - 0.5) * hop)
        keep = overlap > 1e-12
        rows = frames[keep]
        weights[rows, n.pitch_class] += n.velocity / 127.0 * overlap[keep] / hop
        lowest[rows, n.pitch_class] = np.minimum(lowest[rows, n.pitch_class], n.pitch)
    return weights, lowest


def notes_to_chroma(notes: Iterable[Note], frame_rate: float = MELODY_FRAME_RATE, duration_s: float | None = None,
                    *, polyphony: str = "argmax", reference: bool = False,
                    check: Callable[[int], None] | None = None) -> np.ndarray:
    """Notes (seconds) -> float32 chroma ``[T, 12]`` at ``frame_rate`` (see the module docstring).

    ``duration_s``: the length to cover (default: up to the last note's end); T =
    ``floor(duration_s * frame_rate) + 1``. ``polyphony``: ``argmax`` (one-hot, as the extractor)
    or ``weights`` (max-normalised). ``reference``: silent frames become a one-hot C, as the
    extractor makes them; else they stay all zero. ``check``: see ``pitch_class_weights``."""
    notes = list(notes)
    if not (isinstance(frame_rate, (int, float)) and math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be a positive number, got {frame_rate!r}")
    if polyphony not in POLYPHONY:
        raise ValueError(f"polyphony must be one of {', '.join(POLYPHONY)}, got {polyphony!r}")
    if duration_s is None:
        duration_s = max((n.end for n in notes), default=0.0)
    if not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s!r}")
    weights, lowest = pitch_class_weights(notes, frame_rate, frame_count(duration_s, frame_rate), check)
    peak = weights.max(axis=1, keepdims=True)
    sounding = peak[:, 0] > 0
    if polyphony == "weights":
        chroma = np.where(sounding[:, None], weights / np.maximum(peak, 1e-12), 0.0)
    else:
        # strongest pitch class; among (near-)exact ties the one holding the lowest note (the bass)
        tied = weights >= peak * (1 - 1e-9)
        bass = np.where(tied, lowest, 129).argmin(axis=1)
        chroma = np.zeros_like(weights)
        chroma[np.flatnonzero(sounding), bass[sounding]] = 1.0
    if reference:
        chroma[~sounding, 0] = 1.0
    return chroma.astype(np.float32)


def midi_to_chroma(midi: Any, frame_rate: float = MELODY_FRAME_RATE, duration_s: float | None = None, *,
                   polyphony: str = "argmax", reference: bool = False, include_drums: bool = False,
                   check: Callable[[int], None] | None = None) -> np.ndarray:
    """A ``.mid`` (path, bytes or mido.MidiFile) or a note list (``Note``s or the lists/dicts
    ``parse_notes`` takes: notes a DAW read from its MIDI item) -> float32 chroma ``[T, 12]``; see
    ``notes_to_chroma`` (``check``: a cancel point every ``CHROMA_CHUNK`` notes)."""
    if isinstance(midi, (list, tuple)):
        notes = parse_notes(midi)
        if not include_drums:
            notes = [n for n in notes if n.channel != DRUM_CHANNEL]
    else:
        notes = read_notes(midi, include_drums=include_drums)
    return notes_to_chroma(notes, frame_rate, duration_s, polyphony=polyphony, reference=reference, check=check)


def chroma_labels(chroma: np.ndarray) -> list[str | None]:
    """The strongest pitch class name per frame (None for an all-zero frame), e.g. for logs and tests."""
    return [PITCH_CLASSES[int(row.argmax())] if row.max() > 0 else None for row in np.asarray(chroma)]


# ---------------------------------------------------------------------------------------------
# writing


def write_midi(tracks: dict[str, list[Note]], path: str | os.PathLike | None = None, *, bpm: float = 120.0,
               time_signature: tuple[int, int] = (4, 4), ticks_per_beat: int = 480):
    """Type-1 file: a conductor track (tempo, time signature) then one track per name. Note times
    in seconds are placed on the constant ``bpm`` grid. Returns the mido.MidiFile (and saves it to
    ``path`` when given)."""
    import mido

    if not (math.isfinite(bpm) and 1 <= bpm <= 1000):
        raise ValueError(f"bpm must be within 1..1000, got {bpm!r}")
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    conductor = mido.MidiTrack()
    conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    conductor.append(mido.MetaMessage("time_signature", numerator=time_signature[0],
                                      denominator=time_signature[1], time=0))
    mid.tracks.append(conductor)
    ticks_per_s = ticks_per_beat * bpm / 60.0
    for name, notes in tracks.items():
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        events = []  # (tick, order, message): note-offs before note-ons at the same tick
        for n in notes:
            on, off = round(n.start * ticks_per_s), round(n.end * ticks_per_s)
            off = max(off, on + 1)
            events.append((on, 1, mido.Message("note_on", channel=n.channel, note=n.pitch, velocity=n.velocity)))
            events.append((off, 0, mido.Message("note_off", channel=n.channel, note=n.pitch, velocity=0)))
        now = 0
        for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    if path is not None:
        mid.save(str(Path(path).expanduser()))
    return mid
