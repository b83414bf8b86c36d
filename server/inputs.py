"""Turn a validated submit's ``inputs`` into what the model takes, at submit time (so bad inputs are
answered right away, and a file is read once, where it was checked).

- audio: decoded by ``m2ugen.media.decode_audio`` (the project's one decoder) straight into the
  intake format (``AudioIntake``: at most 2 channels, at most the model's rate, 16-bit), so what a
  queued job holds is bounded by that format and not by what the file declares; stems and a stem
  edit keep the source's own rate (``intake_for``: up to ``SOURCE_RATE_MAX``), since their results are
  the source's samples remixed and must line up with it sample for sample;
- a fine-tune's ``audio_set``: each clip decoded as audio is, then written into the job's directory;
- MIDI: read and parsed, or notes sent inline (``{"notes": [...]}``) taken as they are (the notes
  become the melody decoder's chroma in the worker);
- images and videos: copied into the job's directory and checked there; the model reads that copy.

Every input is bytes the client sent: an upload (``{"blob", "proof"}``, server/blobs.py: opened in the
store, never through a link, once the proof shows the client holds those bytes), a frame of the submit,
or (audio) a finished job's own result on this server (``{"job", "take"}``). No client path is opened.

Media errors become protocol errors (``bad_audio`` / ``bad_image`` / ``bad_video``).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Callable

from m2ugen import media
from server import protocol
from server.protocol import MAX_NOTES, ProtocolError

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_CODES = {"audio": "bad_audio", "image": "bad_image", "video": "bad_video", "midi": "bad_midi"}
MAX_MIDI_BYTES = 4 * 2**20  # a sketch; parsing is CPU work at submit
MAX_MIDI_NOTES = MAX_NOTES  # notes in one MIDI file (drums included)
MAX_CHROMA_S = 330.0  # the longest decode (300 s and a loop's tail): notes beyond it cost nothing
MAX_CHROMA_WORK = 2_000_000  # (note, frame) pairs of the melody chroma (~0.3 s); 300 s x 10 voices is 23k


@dataclass(frozen=True)
class AudioIntake:
    """Limits and format of decoded input audio (``serve --max-audio-s`` / ``--max-audio-mb``)."""
    max_seconds: float = media.MAX_AUDIO_S
    max_bytes: int = 256 * 2**20
    sample_rate: int = 32000  # at most this rate (MERT needs 24 kHz, MusicGen's EnCodec 32 kHz); never up
    max_channels: int = 2  # more channels are averaged to mono
    dtype: str = "int16"

    def worst_case_bytes(self) -> int:
        """What one queued job's audio can hold at most."""
        return int(self.max_seconds * self.sample_rate) * self.max_channels * 2


SOURCE_RATE_MAX = 192_000  # stems and stem edits: the source's own rate, up to this


def keeps_source_rate(kind: str, params: dict[str, Any]) -> bool:
    """A ``stems`` job, or an edit whose stem operation was resolved at submit (``params.op``): results
    made of the source's own samples (separated, remixed), at the source's rate and length."""
    return kind == "stems" or (kind == "edit" and bool(params.get("op")))


def intake_for(kind: str, params: dict[str, Any], intake: AudioIntake) -> AudioIntake:
    """The intake of one submit: ``intake``, or for stems / a stem edit the same limits at the source's
    rate (Demucs resamples to its 44.1 kHz and back itself, m2ugen/stems.py)."""
    if not keeps_source_rate(kind, params):
        return intake
    return replace(intake, sample_rate=max(intake.sample_rate, SOURCE_RATE_MAX))


def _bytes_of(frame) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


@dataclass
class Sources:
    """Where a submit's input bytes come from: its frames, the upload store, this server's results."""
    frames: list
    open_blob: Callable[[str, str, str], BinaryIO] | None = None  # (blake3, proof, field) -> file
    open_result: Callable[[str, int, str], BinaryIO] | None = None  # (job, take, field) -> file

    def open(self, ref: dict, field: str) -> tuple[bytes | BinaryIO, dict[str, Any]]:
        """-> (the bytes or an open file, what is recorded of the source)."""
        if "blob" in ref:
            if self.open_blob is None:
                raise ProtocolError("blob_unknown", f"'{field}.blob': this server keeps no uploads", field + ".blob")
            return self.open_blob(ref["blob"], ref["proof"], field), {"name": ref.get("name") or "",
                                                                       protocol.CONTENT_HASH: ref["blob"]}
        if "job" in ref:
            if self.open_result is None:
                raise ProtocolError("not_found", f"'{field}.job': no job results here", field + ".job")
            return self.open_result(ref["job"], ref.get("take") or 1, field), {"job": ref["job"],
                                                                               "take": ref.get("take") or 1}
        data = _bytes_of(self.frames[ref["frame"] - 1])
        return data, {"name": ref.get("name") or "", "bytes": len(data)}


def _close(source) -> None:
    if hasattr(source, "close"):
        source.close()


def _copy_limited(src, dst: Path, limit: int, what: str) -> int:
    n = 0
    with open(dst, "wb") as out:
        while chunk := src.read(1 << 20):
            n += len(chunk)
            if n > limit:
                raise ProtocolError(_CODES[what], f"{what} is larger than {limit / 2**20:.0f} MiB", f"inputs.{what}")
            out.write(chunk)
    return n


def _decode_audio(ref: dict, sources: Sources, intake: AudioIntake, field: str = "inputs.audio") -> tuple[tuple, dict]:
    source, info = sources.open(ref, field)
    label = "audio " + (info.get("name") or (f"of job {info['job']}" if "job" in info else field))
    try:
        wave, sr = media.decode_audio(source, name=label, start=ref.get("start"), end=ref.get("end"),
                                      max_seconds=intake.max_seconds, max_bytes=intake.max_bytes,
                                      sample_rate=intake.sample_rate, max_channels=intake.max_channels,
                                      dtype=intake.dtype)
    except ValueError as e:
        raise ProtocolError("bad_audio", str(e), field) from None
    finally:
        _close(source)
    info.update(start=ref.get("start"), end=ref.get("end"), seconds=wave.shape[1] / sr, sample_rate=sr,
                channels=wave.shape[0])
    return (wave, sr), info


def _copy_into_job(what: str, ref: dict, sources: Sources, job_dir: Path, limit: int) -> tuple[Path, dict]:
    job_dir.mkdir(parents=True, exist_ok=True)
    suffix = Path(_SAFE_NAME.sub("_", ref.get("name") or "")).suffix[:16] or (".png" if what == "image" else ".mp4")
    path = job_dir / f"input_{what}{suffix}"
    source, info = sources.open(ref, f"inputs.{what}")
    try:
        if isinstance(source, bytes):
            if len(source) > limit:
                raise ProtocolError(_CODES[what], f"{what} is larger than {limit / 2**20:.0f} MiB", f"inputs.{what}")
            path.write_bytes(source)
            info["bytes"] = len(source)
        else:
            info["bytes"] = _copy_limited(source, path, limit, what)
    finally:
        _close(source)
    try:
        if what == "image":
            info["width"], info["height"] = media.check_image(path)
        else:
            media.check_video(path)
    except ValueError as e:
        raise ProtocolError(_CODES[what], str(e), f"inputs.{what}") from None
    return path, info


def _read_midi(ref: dict, sources: Sources) -> tuple[list, dict]:
    """A MIDI sketch -> its ``m2ugen.midi.Note`` list and what it holds: parsed once, here (a bad file, or one
    past the notes or chroma budget, is answered at submit; the worker never parses it again). Notes sent
    inline (``{"notes": [...]}``, checked by the protocol) get the same budget."""
    from m2ugen import midi

    if "notes" in ref:
        notes = midi.parse_notes(ref["notes"])
        _check_chroma_budget(notes)
        return notes, {"notes": len(notes), "seconds": round(max(n.end for n in notes), 3), "inline": True}
    source, info = sources.open(ref, "inputs.midi")
    try:
        data = source if isinstance(source, bytes) else source.read(MAX_MIDI_BYTES + 1)
    finally:
        _close(source)
    if len(data) > MAX_MIDI_BYTES:
        raise ProtocolError("bad_midi", f"MIDI input is larger than {MAX_MIDI_BYTES // 2**20} MiB", "inputs.midi")
    try:
        notes = midi.read_notes(data, max_notes=MAX_MIDI_NOTES)
    except (ValueError, OSError, EOFError, KeyError, IndexError) as e:
        raise ProtocolError("bad_midi", f"MIDI input cannot be read: {e}", "inputs.midi") from None
    if not notes:
        raise ProtocolError("bad_midi", "MIDI input has no notes (drums on channel 10 do not count)", "inputs.midi")
    _check_chroma_budget(notes)
    info.update(bytes=len(data), notes=len(notes), seconds=round(max(n.end for n in notes), 3))
    return notes, info  # parsed once, here: the worker uses these notes


def _check_chroma_budget(notes: list) -> None:
    from m2ugen import midi

    work = midi.chroma_work(notes, max_s=MAX_CHROMA_S)
    if work > MAX_CHROMA_WORK:
        raise ProtocolError("bad_midi", f"the MIDI notes cover {work} note-frames of melody chroma; the limit is "
                                        f"{MAX_CHROMA_WORK} (fewer or shorter notes: a sketch, not a whole score)",
                            "inputs.midi")


AUDIO_SET_DIR = "audio_set"  # in the job's directory: NN.wav (+ NN.txt, the caption)


def _decode_audio_set(refs: list[dict], sources: Sources, job_dir: Path, intake: AudioIntake,
                      max_bytes: int) -> tuple[str, list[dict]]:
    """A fine-tune's clips, each decoded as ``inputs.audio`` is and written as a 16-bit WAV (with its
    caption beside it) into the job's directory: the job holds no audio in memory and finds its clips
    again after a restart."""
    import soundfile as sf

    d = job_dir / AUDIO_SET_DIR
    d.mkdir(parents=True, exist_ok=True)
    infos, total = [], 0
    for i, ref in enumerate(refs):
        field = f"inputs.audio_set[{i}]"
        try:
            (wave, sr), info = _decode_audio(ref, sources, intake, field)
        except ProtocolError as e:
            message = e.message if e.message.startswith(("'" + field, field)) else f"{field}: {e.message}"
            raise ProtocolError(e.code, message, e.field) from None
        total += wave.nbytes
        if total > max_bytes:
            raise ProtocolError("bad_audio", f"inputs.audio_set holds more than {max_bytes / 2**20:.0f} MiB of "
                                             f"decoded audio (clip {i}); send fewer or shorter clips",
                                "inputs.audio_set")
        sf.write(str(d / f"{i:02d}.wav"), wave.T, sr, subtype="PCM_16")
        if ref.get("caption"):
            (d / f"{i:02d}.txt").write_text(ref["caption"] + "\n", encoding="utf-8")
            info["caption"] = ref["caption"]
        infos.append(info)
    return str(d), infos


def resolve(spec: dict[str, Any], sources: Sources, job_dir: Path, *, intake: AudioIntake,
            max_file_bytes: int, max_set_bytes: int = 1024 * 2**20) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (model inputs {"audio": (wave int16 [C, S], sr) | None, "image": str | None, "video": str | None,
    "midi": [Note] (parsed once, at submit) | None, "audio_set": the clips' directory | None},
    recorded info {name: {"name", "blake3"|"bytes"|"job", ...}}). On error the job directory is removed."""
    out: dict[str, Any] = {"audio": None, "image": None, "video": None, "midi": None, "audio_set": None}
    info: dict[str, Any] = {}
    try:
        if spec.get("audio") is not None:
            out["audio"], info["audio"] = _decode_audio(spec["audio"], sources, intake)
        if spec.get("midi") is not None:
            out["midi"], info["midi"] = _read_midi(spec["midi"], sources)
        if spec.get("audio_set") is not None:
            out["audio_set"], info["audio_set"] = _decode_audio_set(spec["audio_set"], sources, job_dir, intake,
                                                                    max_set_bytes)
        for what in ("image", "video"):
            if spec.get(what) is not None:
                path, info[what] = _copy_into_job(what, spec[what], sources, job_dir, max_file_bytes)
                out[what] = str(path)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return out, info
