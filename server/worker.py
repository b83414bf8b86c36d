"""The single model worker thread (the model is not thread-safe).

Takes jobs from the queue one at a time, calls ``model.chat`` and turns the model's ``on_event``
callbacks into ``progress`` / ``text`` events. A running job is cancelled by raising ``JobCancelled``
from that callback at the model's next step.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable

from server import audio_io, finishing, outputs, protocol
from server.jobs import Job, JobQueue, JobStore
from server.journal import Journal
from server.security import AllowedRoots, OutputExists, PathNotAllowed

log = logging.getLogger("m2ugen.worker")

Emit = Callable[..., None]  # emit(header: dict, frames: list[bytes] = ()) -> None, thread-safe

# overall fraction = lo + (hi - lo) * stage fraction
STAGE_SPANS = {
    "ask": {"encoding": (0.0, 0.1), "thinking": (0.1, 1.0), "generating": (0.9, 1.0), "writing": (0.95, 1.0)},
    "edit": {"encoding": (0.0, 0.1), "thinking": (0.1, 0.4), "generating": (0.4, 0.95), "writing": (0.95, 1.0)},
    "generate": {"encoding": (0.0, 0.05), "thinking": (0.05, 0.4), "generating": (0.4, 0.95), "writing": (0.95, 1.0)},
}


class JobCancelled(Exception):
    pass


class Worker(threading.Thread):
    def __init__(self, model, model_info: dict[str, Any], queue: JobQueue, store: JobStore, journal: Journal,
                 emit_factory: Callable[[], Emit], roots: AllowedRoots):
        super().__init__(name="m2ugen-worker", daemon=True)
        self.model = model
        self.roots = roots
        self.model_info = model_info
        self.queue = queue
        self.store = store
        self.journal = journal
        self._emit_factory = emit_factory
        self.emit: Emit = lambda header, frames=(): None
        self.current: Job | None = None
        self.stopping = False  # set by the app on shutdown: a job cancelled then is 'interrupted'

    def stop(self, timeout_s: float) -> None:
        """Shutdown: the running job ends as 'interrupted', the queue closes, the thread ends."""
        self.stopping = True
        current = self.current
        if current is not None:
            current.cancel_requested.set()
        self.queue.close()
        if self.is_alive():
            self.join(timeout_s)

    def run(self) -> None:
        self.emit = self._emit_factory()  # the event socket belongs to this thread
        while True:
            job = self.queue.get()
            if job is None:
                return
            self._announce_positions()
            self.current = job
            try:
                self._run(job)
            except Exception:  # never let one job kill the worker
                log.exception("job %s: unexpected worker error", job.id)
                self._finish(job, "failed", error={"code": "internal", "message": "internal error in the worker"})
            finally:
                self.current = None

    # -----------------------------------------------------------------------------------------
    def _announce_positions(self) -> None:
        for j in self.queue.snapshot():
            self.emit(protocol.event("queued", j.id, queue_position=j.queue_position))

    def _set(self, job: Job, **changes: Any) -> None:
        with self.store.lock:
            for k, v in changes.items():
                setattr(job, k, v)

    def _finish(self, job: Job, state: str, error: dict | None = None, frames=()) -> None:
        if state == "cancelled" and self.stopping and not job.cancelled_by_client:
            state, error = "failed", {"code": "interrupted", "message": "the server stopped while the job ran"}
        with self.store.lock:
            if job.state in protocol.FINAL_STATES:
                return
            job.state = state
            job.finished = time.time()
            job.error = error
            job.inputs = {}  # free the decoded audio
            if state == "done":
                job.fraction = 1.0
            record = self.store.persist(job, self.journal)
        if state == "done":
            log.info("job %s done in %.2f s -> %s", job.id, job.finished - (job.started or job.created),
                     job.audio_path or "(text only)")
            self.emit({**protocol.event("done", job.id), **record}, frames)
        elif state == "cancelled":
            log.info("job %s cancelled while running", job.id)
            self.emit(protocol.event("cancelled", job.id, state="cancelled"))
        else:
            log.info("job %s failed: %s: %s", job.id, error["code"], error["message"])
            self.emit(protocol.error_header(error["code"], error["message"], job=job.id))

    def _progress(self, job: Job, stage: str, stage_fraction: float, take: int = 0) -> None:
        """Overall fraction: the stage's span of the kind, shared out over the takes."""
        lo, hi = STAGE_SPANS[job.kind][stage]
        takes = max(1, int(job.params.get("takes") or 1))
        f = lo + (hi - lo) * max(0.0, min(1.0, stage_fraction))
        if stage != "encoding" and takes > 1:
            f = STAGE_SPANS[job.kind]["thinking"][0] + (take + f) / takes * (1 - STAGE_SPANS[job.kind]["thinking"][0])
        frac = max(job.fraction, min(1.0, f))
        self._set(job, stage=stage, fraction=frac)
        self.emit(protocol.event("progress", job.id, stage=stage, fraction=round(frac, 4)))

    def _on_event(self, job: Job, take: int):
        """The model's on_event callback for one take: cancellation, text streaming (take 1), progress."""
        last = {"stage": "encoding", "fraction": -1.0, "t": 0.0}

        def on_event(ev) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled()
            stage = ev.stage if ev.stage in STAGE_SPANS[job.kind] else last["stage"]
            if take == 0 and stage == "thinking" and ev.text is not None and ev.text != job.text:
                old = job.text
                delta = ev.text[len(old):] if ev.text.startswith(old) else ev.text
                self._set(job, text=ev.text)
                self.emit(protocol.event("text", job.id, text=ev.text, delta=delta))
            frac = float(ev.fraction or 0.0)
            now = time.monotonic()
            if stage != last["stage"] or frac - last["fraction"] >= 0.02 or now - last["t"] >= 0.25 or frac >= 1.0:
                last.update(stage=stage, fraction=frac, t=now)
                self._progress(job, stage, frac, take)

        return on_event

    def _analyse_source(self, job: Job) -> tuple[tuple | None, dict | None]:
        """The source as float, and its measured analysis (None when it cannot be measured: logged)."""
        audio = job.inputs.get("audio")
        if audio is None:
            return None, None
        source = finishing.as_float(audio)
        try:
            return source, finishing.analyse(*source)
        except Exception as e:  # the analysis informs; it never fails a job
            log.warning("job %s: the source could not be analysed: %s: %s", job.id, type(e).__name__, e)
            return source, None

    def _run(self, job: Job) -> None:
        if job.cancel_requested.is_set():
            self._finish(job, "cancelled")
            return
        p = job.params
        seed = p["seed"] if p["seed"] is not None else random.randrange(2**31)
        with self.store.lock:
            if job.state != "queued":  # cancelled between the queue and here
                return
            self._set(job, state="running", started=time.time(), stage="encoding", seed=seed)
            self.store.persist(job, self.journal)
        log.info("job %s running (%s, seed %d)", job.id, job.kind, seed)
        self._progress(job, "encoding", 0.0)

        source, analysis = self._analyse_source(job)
        self._set(job, analysis=analysis)
        prompt = finishing.prompt_for_model(p, analysis)
        tempo = finishing.target_tempo(p, analysis)
        want_audio = job.kind != "ask"
        duration = (finishing.length_s(p, tempo) or 10.0) if want_audio else 10.0
        decode_s = finishing.decode_length(p, duration)
        extra = finishing.model_options(p, job.inputs.get("midi"), tempo, decode_s) if want_audio else {}
        takes = max(1, int(p.get("takes") or 1)) if want_audio else 1
        replies, t0 = [], time.perf_counter()
        try:
            for take in range(takes):
                replies.append(self.model.chat(
                    prompt,
                    audio=job.inputs.get("audio"), image=job.inputs.get("image"), video=job.inputs.get("video"),
                    max_new_tokens=p["max_new_tokens"] or getattr(self.model.config, "max_new_tokens", 512),
                    temperature=p["temperature"], top_p=p["top_p"], seed=seed + take, conditioning=p["conditioning"],
                    duration_s=decode_s, want_audio=want_audio, on_event=self._on_event(job, take), **extra,
                ))
        except JobCancelled:
            self._finish(job, "cancelled")
            return
        except Exception as e:
            log.warning("job %s: model raised %s: %s", job.id, type(e).__name__, e)
            self._finish(job, "failed", error={"code": "job_failed", "message": f"{type(e).__name__}: {e}"})
            return
        chat_s = time.perf_counter() - t0
        if job.cancel_requested.is_set():
            self._finish(job, "cancelled")
            return
        final_text = replies[0].text or ""
        if final_text.strip() != job.text.strip():  # the streamed text missed something: send the whole
            self.emit(protocol.event("text", job.id, text=final_text, delta=final_text))
        self._set(job, text=final_text)

        self._progress(job, "writing", 0.0, takes - 1)
        try:
            self._write_results(job, replies, prompt, chat_s, source=source, tempo=tempo, duration=duration)
        except PathNotAllowed as e:  # the output changed since submit (a symlink swapped in, a file created)
            code = "output_exists" if isinstance(e, OutputExists) else "path_not_allowed"
            self._finish(job, "failed", error={"code": code, "message": str(e)})

    def _write_results(self, job: Job, replies: list, prompt: str, chat_s: float, *, source, tempo,
                       duration) -> None:
        p = job.params
        t1 = time.perf_counter()
        frames: list[bytes] = []
        takes: list[dict[str, Any]] = []
        out_path: Path | None = None
        if job.kind != "ask":
            if any(r.audio is None for r in replies):
                self._finish(job, "failed", error={"code": "job_failed", "message": "the model returned no audio"})
                return
            sr = p["sample_rate"] or int(replies[0].sample_rate)
            first = job.output.get("path") or (job.job_dir / "result.wav")
            with_source = p.get("continuation") == "with_source"  # the source's tail + the new part: all of it
            for i, reply in enumerate(replies):
                wave, notes = finishing.fit_take(reply.audio, int(reply.sample_rate), p, out_sr=sr,
                                                 duration_s=None if with_source else duration, tempo=tempo,
                                                 source=source if job.kind == "edit" else None)
                path = outputs.take_path(first, i + 1)
                data = audio_io.wav_bytes(wave, sr)
                outputs.write(self.roots, job.output, path, data, outputs.is_wav)
                if i == 0:
                    out_path, first_wave = path, wave
                    if job.output.get("want") == "bytes":
                        frames = [data]
                takes.append({"take": i + 1, "audio_path": str(path), "seed": int(reply.seed), "text": reply.text,
                              **notes})
            try:
                result_analysis = finishing.analyse(first_wave, sr)
            except Exception as e:
                log.warning("job %s: the result could not be analysed: %s: %s", job.id, type(e).__name__, e)
                result_analysis = None
            self._set(job, audio_path=str(out_path), sample_rate=sr, channels=first_wave.shape[0],
                      duration=first_wave.shape[1] / sr, takes=takes, result_analysis=result_analysis)
        sidecar = (outputs.sidecar_of(out_path) if out_path is not None and job.output.get("path")
                   else job.job_dir / "result.json")
        timings = {k: float(v) for k, v in (getattr(replies[0], "timings", None) or {}).items()}
        timings.update(queue_wait=(job.started or 0) - job.created, chat=chat_s, write=time.perf_counter() - t1)
        seed = int(replies[0].seed if replies[0].seed is not None else job.seed)
        outputs.write(self.roots, job.output, sidecar, audio_io.sidecar_bytes({
            "job": job.id, "kind": job.kind, "prompt": p["prompt"],
            "prompt_sent": prompt, "seed": seed,
            "model": self.model_info, "conditioning": p["conditioning"], "params": p, "inputs": job.inputs_info,
            "text": replies[0].text, "raw_text": getattr(replies[0], "raw_text", replies[0].text),
            "audio_path": str(out_path) if out_path else None, "sample_rate": job.sample_rate,
            "channels": job.channels, "duration": job.duration, "analysis": job.analysis,
            "result_analysis": job.result_analysis, "takes": job.takes, "timings": timings,
            "created": job.created, "started": job.started, "server_version": protocol.SERVER_VERSION,
        }), outputs.is_sidecar)
        self._set(job, sidecar_path=str(sidecar), seed=seed)
        self._finish(job, "done", frames=frames)
