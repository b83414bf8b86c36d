"""transcribe: the source audio -> a ``.mid`` (m2ugen.transcribe: a monophonic melody and a chord track).

No model: the job runs on the worker thread like every other (one job at a time, in queue order),
in three named steps: ``measure`` (the source's analysis, only when the project sent no tempo),
``transcribe`` (pYIN melody, chord templates on the beat grid), ``write`` (the ``.mid``, its sidecar).

Results: ``<output.path>`` (a ``.mid``) or ``<jobs dir>/<job>/result.mid``, the sidecar beside it
(``result.json`` in the job's folder), the record's ``midi_path``; ``want=bytes`` sends the MIDI
file as frame 1 of ``done``. The sidecar lists the notes (``notes``: ``[start, end, pitch,
velocity, channel]`` in seconds, melody on channel 0, chords on channel 1) so a client that cannot
read a MIDI file (a Live device) can place them as they are.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

from server import audio_io, finishing, outputs, protocol
from server.jobs import Job, JobCancelled
from server.protocol import ProtocolError
from server.kinds.chat import analyse_source

log = logging.getLogger("m2ugen.worker")

STAGES = {"transcribe": {"transcribing": (0.0, 0.95), "writing": (0.95, 1.0)}}
DEFAULT_BPM = 120.0


def tempo(job: Job, analysis: dict[str, Any] | None) -> tuple[float, str]:
    """The file's tempo and where it came from: the project's (context.bpm), else the measured
    source's, else 120."""
    bpm = job.params["context"].get("bpm")
    if bpm:
        return float(bpm), "context"
    measured = (analysis or {}).get("bpm")
    if measured and 1.0 <= float(measured) <= 1000.0:
        return float(measured), "measured"
    return DEFAULT_BPM, "default"


def measure(worker, job: Job) -> tuple[tuple, dict | None]:
    """The source as float, and its analysis when the tempo has to be measured (no context.bpm: the
    analysis, beat tracking included, costs more than the transcription of a short take)."""
    if job.params["context"].get("bpm"):
        source, analysis = finishing.as_float(job.inputs["audio"]), None
    else:
        source, analysis = analyse_source(job)
    worker.update(job, analysis=analysis, duration=source[0].shape[-1] / source[1])
    return source, analysis


def check_inputs(model_inputs: dict) -> None:
    """Submit time: audio the transcriber cannot use is refused with the reason (not accepted, then failed)."""
    from m2ugen.transcribe import MIN_SECONDS

    audio = model_inputs.get("audio")
    if audio is not None and audio[0].shape[-1] / audio[1] < MIN_SECONDS:
        seconds = audio[0].shape[-1] / audio[1]
        raise ProtocolError("bad_audio", f"the audio is {seconds * 1000:.1f} ms long ({audio[0].shape[-1]} "
                                         f"sample(s)); transcription needs at least {MIN_SECONDS * 1000:.0f} ms",
                            "inputs.audio")


def transcribe(worker, job: Job, source: tuple, bpm: float):
    from m2ugen.transcribe import transcribe as run_transcription

    def on_progress(stage: str, fraction: float) -> None:
        if job.cancel_requested.is_set():
            raise JobCancelled()
        worker.progress(job, "transcribing", 0.1 + 0.9 * fraction)

    result = run_transcription(*source, bpm=bpm, chords=job.params["chords"],
                               beats_per_window=job.params["beats_per_chord"], dereverb=job.params["dereverb"],
                               on_progress=on_progress)
    result.time_signature = finishing.time_signature(job.params)
    return result


def midi_bytes(result) -> bytes:
    buf = io.BytesIO()
    result.to_midi().save(file=buf)
    return buf.getvalue()


def write(worker, job: Job, result, bpm: float, bpm_source: str, transcribe_s: float) -> None:
    t0 = time.perf_counter()
    path = job.job_dir / "result.mid"
    data = midi_bytes(result)
    outputs.write_own(path, data)
    sidecar = job.job_dir / "result.json"
    chord_notes = [n for c in result.chords for n in c.notes()]
    notes = sorted(result.melody + chord_notes, key=lambda n: (n.start, n.channel, n.pitch))
    outputs.write_own(sidecar, audio_io.sidecar_bytes({
        "job": job.id, "kind": job.kind, "params": job.params, "inputs": job.inputs_info,
        "midi_path": str(path), "bpm": bpm, "bpm_source": bpm_source,
        "time_signature": list(result.time_signature), "duration": job.duration,
        "melody_notes": len(result.melody),
        "chords": [[round(c.start, 6), round(c.end, 6), c.label] for c in result.chords],
        "notes": [[round(n.start, 6), round(n.end, 6), n.pitch, n.velocity, n.channel] for n in notes],
        "analysis": job.analysis, "seed": job.seed,
        "timings": {**{k: float(v) for k, v in result.timings.items()}, "transcribe": transcribe_s,
                    "queue_wait": (job.started or 0) - job.created, "write": time.perf_counter() - t0},
        "created": job.created, "started": job.started, "server_version": protocol.SERVER_VERSION,
    }))
    worker.update(job, midi_path=str(path), sidecar_path=str(sidecar),
                  text=f"{len(result.melody)} melody notes, {len(result.chords)} chords at {bpm:g} bpm")
    worker.finish(job, "done", frames=[data] if job.output.get("want") == "bytes" else [])


def run(worker, job: Job) -> None:
    worker.progress(job, "transcribing", 0.0)
    source, analysis = measure(worker, job)
    bpm, bpm_source = tempo(job, analysis)
    t0 = time.perf_counter()
    try:
        result = transcribe(worker, job, source, bpm)
    except ValueError as e:  # audio the transcriber cannot use (too short, silent...): named
        worker.finish(job, "failed", error={"code": "job_failed", "message": str(e)})
        return
    finishing.write_when_not_cancelled(worker, job, lambda: write(worker, job, result, bpm, bpm_source, time.perf_counter() - t0))
