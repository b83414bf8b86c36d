"""stems: the source audio -> one WAV per stem (m2ugen/stems.py: Demucs, from local weights only).

Two named steps: ``separating`` (the server's separator for ``params.stem_model``, default htdemucs:
drums, bass, other, vocals; htdemucs_6s adds guitar and piano; chunked, on the server's device) and
``writing``. The stems keep the source's sample rate, channels and length.

Results: ``<output.path stem>-<stem>.wav`` for each stem (``song.wav`` -> ``song-drums.wav``, ...)
or ``<jobs dir>/<job>/result-<stem>.wav``; the sidecar (``song.json`` / ``result.json``) beside them.
The record's ``takes`` lists the stems in the model's order, one ``{take, stem, audio_path}`` each
(``audio_path`` is the first stem's), so a remote client fetches each with ``result`` + ``take`` and
``want=bytes`` exactly as it fetches takes; ``want=bytes`` sends the first stem as frame 1 of ``done``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from server import audio_io, finishing, outputs, protocol
from server.jobs import Job, JobCancelled

log = logging.getLogger("m2ugen.worker")

STAGES = {"stems": {"separating": (0.0, 0.95), "writing": (0.95, 1.0)}}


class SeparationUnavailable(Exception):
    """The separation model cannot be loaded (no local weights, a file it cannot read): the job fails
    with the reason."""


def separate(worker, job: Job, source: tuple[np.ndarray, int], model: str, stage: str = "separating",
             lo: float = 0.0, hi: float = 1.0) -> dict[str, np.ndarray]:
    """{stem: [C, N] float32} of the source with the server's separator ``model`` (progress reported
    as ``stage`` between ``lo`` and ``hi``; a cancel raises JobCancelled between chunks)."""
    separators = getattr(worker, "stems", None)
    if separators is None:
        raise SeparationUnavailable("this server has no separation models")
    try:
        separator = separators.get(model)
    except (FileNotFoundError, ValueError) as e:
        raise SeparationUnavailable(str(e)) from None

    def on_progress(fraction: float) -> None:
        if job.cancel_requested.is_set():
            raise JobCancelled()
        worker.progress(job, stage, lo + (hi - lo) * float(fraction))

    if job.cancel_requested.is_set():
        raise JobCancelled()
    wave, sr = source
    stems = separator.separate(wave, sr, on_progress=on_progress)
    return {name: stems[name] for name in separator.sources}


def write(worker, job: Job, stems: dict[str, np.ndarray], sr: int, model: str, separate_s: float) -> None:
    t0 = time.perf_counter()
    first = job.job_dir / "result.wav"
    takes, frames = [], []
    for i, (name, wave) in enumerate(stems.items()):
        path = outputs.stem_path(first, name)
        data = audio_io.wav_bytes(np.clip(wave, -1.0, 1.0), sr)
        outputs.write_own(path, data)
        takes.append({"take": i + 1, "stem": name, "audio_path": str(path)})
        if i == 0 and job.output.get("want") == "bytes":
            frames = [data]
    some = next(iter(stems.values()))
    sidecar = job.job_dir / "result.json"
    worker.update(job, audio_path=takes[0]["audio_path"], sample_rate=sr, channels=some.shape[0],
                  duration=some.shape[-1] / sr, takes=takes, text=f"{len(stems)} stems: {', '.join(stems)}")
    outputs.write_own(sidecar, audio_io.sidecar_bytes({
        "job": job.id, "kind": job.kind, "params": job.params, "inputs": job.inputs_info, "model": model,
        "stems": {t["stem"]: t["audio_path"] for t in takes}, "takes": takes, "sample_rate": sr,
        "channels": job.channels, "duration": job.duration,
        "timings": {"separate": separate_s, "queue_wait": (job.started or 0) - job.created,
                    "write": time.perf_counter() - t0},
        "created": job.created, "started": job.started, "server_version": protocol.SERVER_VERSION,
    }))
    worker.update(job, sidecar_path=str(sidecar))
    worker.finish(job, "done", frames=frames)


def run(worker, job: Job) -> None:
    worker.progress(job, "separating", 0.0)
    wave, sr = finishing.as_float(job.inputs["audio"])
    model = job.params.get("stem_model") or "htdemucs"
    t0 = time.perf_counter()
    try:
        stems = separate(worker, job, (wave, sr), model)
    except JobCancelled:
        worker.finish(job, "cancelled")
        return
    except SeparationUnavailable as e:
        worker.finish(job, "failed", error={"code": "job_failed", "message": str(e)})
        return
    finishing.write_when_not_cancelled(worker, job, lambda: write(worker, job, stems, sr, model, time.perf_counter() - t0))
