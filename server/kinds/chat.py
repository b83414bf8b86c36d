"""ask / edit / generate: the model's ``chat`` around the musical context of the request.

Three named steps per job: ``plan`` (measure the source, decide the prompt, the length and the model's
options: server/finishing.py), ``infer`` (every take of every job in the batch as one row of
``model.chat_batch``), ``write`` (fit each take to the project, write the WAVs and the sidecar). The
worker owns the job's states and events.

Batching (docs/protocol.md §6): continuous (the default) — the worker drives an ``m2ugen.engine.Engine``:
``start_rows`` admits a job's takes as rows that join the running decode at the next step, ``row_ended``
collects them as they leave and ``conclude``s the job when its last take is back. Static
(``--batching static``) — the worker hands ``run_batch`` the job at the head of the queue plus the queued
chat jobs behind it with the same ``batch_key``, up to ``--max-batch`` rows (a job counts its takes), as
one ``model.chat_batch``. Either way each row gets its own seed, sampling settings, length and mode, so a
job's result does not depend on its neighbours; a cancel or a failure ends that job's rows only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server import adapters, audio_io, finishing, outputs, protocol
from server.jobs import Job, JobCancelled
from server.kinds import stem_edit
from server.security import PathNotAllowed

log = logging.getLogger("m2ugen.worker")

# overall fraction = lo + (hi - lo) * stage fraction
STAGES = {
    "ask": {"encoding": (0.0, 0.1), "thinking": (0.1, 1.0), "generating": (0.9, 1.0), "writing": (0.95, 1.0)},
    "edit": {"encoding": (0.0, 0.1), "thinking": (0.1, 0.4), "generating": (0.4, 0.95), "writing": (0.95, 1.0),
             "separating": (0.0, 0.1)},  # a stem edit's (server/kinds/stem_edit.py), before encoding; listed last
    # so that the take arithmetic of worker.progress (first stage, then the second's start) stays the same
    "generate": {"encoding": (0.0, 0.05), "thinking": (0.05, 0.4), "generating": (0.4, 0.95), "writing": (0.95, 1.0)},
}


@dataclass
class Plan:
    """What one job asks of the model, decided before it runs."""
    prompt: str  # as sent to the model (the measured line appended unless reference_prompt)
    want_audio: bool
    duration: float  # seconds of result (after fitting)
    decode_s: float  # seconds the decoder makes (a loop's crossfade tail, a stretch's margin)
    takes: int
    tempo: float | None
    source: tuple | None  # (float audio, sample rate) of the edit's source
    options: dict[str, Any] = field(default_factory=dict)  # model.chat's mode / chroma / vocoder / music_hint
    stem: Any = None  # a stem edit's stem_edit.StemPlan (params.op), else None
    timings: dict[str, float] = field(default_factory=dict)  # seconds: the source's analysis, the rest of planning


def analyse_source(job: Job) -> tuple[tuple | None, dict | None]:
    """The source as float, and its measured analysis (None when it cannot be measured: logged)."""
    audio = job.inputs.get("audio")
    if audio is None:
        return None, None
    source = finishing.as_float(audio)
    try:
        return source, finishing.analyse(*source, project_bpm=job.params["context"].get("bpm"))
    except Exception as e:  # the analysis informs; it never fails a job
        log.warning("job %s: the source could not be analysed: %s: %s", job.id, type(e).__name__, e)
        return source, None


def cancel_point(job: Job):
    """A check for long steps outside the model (the MIDI chroma): a cancel stops the job there."""
    def check(_done: int = 0) -> None:
        if job.cancel_requested.is_set():
            raise JobCancelled()
    return check


def plan(worker, job: Job) -> Plan:
    p = job.params
    t0 = time.perf_counter()
    source, analysis = analyse_source(job)
    t1 = time.perf_counter()
    worker.update(job, analysis=analysis)
    tempo = finishing.target_tempo(p, analysis)
    want_audio = protocol.KIND_SPECS[job.kind].makes_audio
    duration = (finishing.length_s(p, tempo) or 10.0) if want_audio else 10.0
    decode_s = finishing.decode_length(p, duration)
    options = finishing.model_options(p, job.inputs.get("midi"), tempo, decode_s,
                                      check=cancel_point(job)) if want_audio else {}
    takes = max(1, int(p.get("takes") or 1)) if want_audio else 1
    the_plan = Plan(prompt=finishing.prompt_for_model(p, analysis), want_audio=want_audio, duration=duration,
                    decode_s=decode_s, takes=takes, tempo=tempo, source=source, options=options,
                    timings={"analysis": t1 - t0})
    if job.kind == "edit" and p.get("op"):
        stem_edit.plan(worker, job, the_plan, analysis)
    the_plan.timings["plan"] = time.perf_counter() - t1
    return the_plan


def chat_kwargs(worker, job: Job, plan: Plan, take: int) -> dict[str, Any]:
    """``model.chat``'s arguments for one take (seeds seed, seed+1, ...)."""
    p = job.params
    kwargs = dict(
        audio=job.inputs.get("audio"), image=job.inputs.get("image"), video=job.inputs.get("video"),
        max_new_tokens=p["max_new_tokens"] or getattr(worker.model.config, "max_new_tokens", 512),
        temperature=p["temperature"], top_p=p["top_p"], seed=job.seed + take, conditioning=p["conditioning"],
        duration_s=plan.decode_s, want_audio=plan.want_audio if plan.stem is None else plan.stem.generates,
        on_event=worker.model_events(job, take),
    )
    kwargs.update(plan.options)  # a stem edit's continuation hears the kept stems, not the source
    return kwargs


def rows(job: Job) -> int:
    """The rows this job takes in a batch: one per take."""
    return max(1, int(job.params.get("takes") or 1)) if protocol.KIND_SPECS[job.kind].makes_audio else 1


def batch_key(job: Job) -> tuple:
    """Jobs with equal keys may share a batch: any chat kind, mode or length; the same model weights."""
    return ("chat", job.params.get("adapter"))


def infer(worker, batch: list[tuple[Job, Plan]]) -> dict[str, list]:
    """Every take of every job as one row of ``model.chat_batch`` -> {job id: [reply or exception per take]}.
    A model without ``chat_batch`` (a test double) runs the rows one by one with ``chat``."""
    adapters.select_for(worker, batch[0][0])  # params.adapter (one per batch: batch_key): a fine-tune, or the base
    owners, requests = [], []
    for job, plan in batch:
        for take in range(plan.takes):
            owners.append(job.id)
            requests.append((plan.prompt, chat_kwargs(worker, job, plan, take)))
    chat_batch = getattr(worker.model, "chat_batch", None)
    if chat_batch is not None:
        from m2ugen.model import ChatRequest

        outs = chat_batch([ChatRequest(prompt, **kw) for prompt, kw in requests])
    else:
        outs = []
        for prompt, kw in requests:
            try:
                outs.append(worker.model.chat(prompt, **kw))
            except Exception as e:
                outs.append(e)
    by_job: dict[str, list] = {}
    for owner, out in zip(owners, outs):
        by_job.setdefault(owner, []).append(out)
    return by_job


def run(worker, job: Job) -> None:
    run_batch(worker, [job])


def run_batch(worker, jobs: list[Job]) -> None:
    planned: list[tuple[Job, Plan]] = []
    for job in jobs:
        worker.progress(job, "encoding", 0.0)
        try:
            planned.append((job, plan(worker, job)))
        except JobCancelled:  # cancelled while its stems were separated
            worker.finish(job, "cancelled")
        except Exception as e:  # this job's options cannot be served: it fails alone
            log.warning("job %s: %s: %s", job.id, type(e).__name__, e)
            worker.finish(job, "failed", error={"code": "job_failed", "message": f"{type(e).__name__}: {e}"})
    if not planned:
        return
    t0 = time.perf_counter()
    results = infer(worker, planned)
    chat_s = time.perf_counter() - t0
    for job, the_plan in planned:
        conclude(worker, job, the_plan, results[job.id], chat_s)


def conclude(worker, job: Job, plan: Plan, replies: list, chat_s: float) -> None:
    """The job's end once the model returned every take: cancelled, failed (the first error), or its
    results written."""
    error = next((r for r in replies if isinstance(r, BaseException)), None)
    if isinstance(error, JobCancelled) or job.cancel_requested.is_set():
        worker.finish(job, "cancelled")
    elif error is not None:
        log.warning("job %s: model raised %s: %s", job.id, type(error).__name__, error)
        worker.finish(job, "failed", error={"code": "job_failed", "message": f"{type(error).__name__}: {error}"})
    else:
        finish(worker, job, plan, replies, chat_s)


# --- continuous batching (docs/protocol.md §6): the worker drives an m2ugen.engine.Engine ---------------
@dataclass
class Running:
    """A job whose takes are rows of the running engine."""
    job: Job
    plan: Plan
    handles: list[int]
    replies: dict[int, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)


def start_rows(worker, engine, job: Job) -> Running | None:
    """Plan the job and admit one engine row per take (they join the running batch at the next step);
    None when the job cannot be planned (it failed alone)."""
    worker.progress(job, "encoding", 0.0)
    try:
        the_plan = plan(worker, job)
    except JobCancelled:  # cancelled while it was planned (the MIDI chroma, a stem separation)
        worker.finish(job, "cancelled")
        return None
    except Exception as e:  # this job's options cannot be served: it fails alone
        log.warning("job %s: %s: %s", job.id, type(e).__name__, e)
        worker.finish(job, "failed", error={"code": "job_failed", "message": f"{type(e).__name__}: {e}"})
        return None
    from m2ugen.model import ChatRequest

    adapters.select_for(worker, job)  # params.adapter: every job of one engine run has the same (batch_key)
    t0 = time.perf_counter()
    handles = [engine.admit(ChatRequest(the_plan.prompt, **chat_kwargs(worker, job, the_plan, take)))
               for take in range(the_plan.takes)]
    return Running(job=job, plan=the_plan, handles=handles, t0=t0)


def row_ended(worker, engine, running: Running, handle: int, out) -> bool:
    """One of the job's rows left the engine (a reply or an exception); a failed or cancelled take ends
    the job's other takes at once. -> True when the job is over (concluded)."""
    running.replies[handle] = out
    if isinstance(out, BaseException):
        for h in running.handles:
            if h not in running.replies:
                engine.cancel(h, out)
    if len(running.replies) < len(running.handles):
        return False
    replies = [running.replies[h] for h in running.handles]
    chat_s = time.perf_counter() - running.t0
    # its results are fitted, analysed and written beside the running decode (worker.later)
    worker.later(running.job, lambda w: conclude(w, running.job, running.plan, replies, chat_s))
    return True


def finish(worker, job: Job, plan: Plan, replies: list, chat_s: float) -> None:
    """After the model: the final text, then the results written (or the job cancelled / failed)."""
    if job.cancel_requested.is_set():
        worker.finish(job, "cancelled")
        return
    final_text = replies[0].text or ""
    if final_text.strip() != job.text.strip():  # the streamed text missed something: send the whole
        worker.emit(protocol.event("text", job.id, text=final_text, delta=final_text))
    worker.update(job, text=final_text)
    worker.progress(job, "writing", 0.0, plan.takes - 1)
    try:
        write(worker, job, plan, replies, chat_s)
    except PathNotAllowed as e:  # the job's own folder changed under it (a link or a file planted there)
        worker.finish(job, "failed", error=outputs.write_error(e))


def write(worker, job: Job, plan: Plan, replies: list, chat_s: float) -> None:
    p = job.params
    t1 = time.perf_counter()
    result_analysis_s = 0.0
    frames: list[bytes] = []
    takes: list[dict[str, Any]] = []
    out_path: Path | None = None
    if plan.want_audio:
        if any(r.audio is None for r in replies) and (plan.stem is None or plan.stem.generates):
            worker.finish(job, "failed", error={"code": "job_failed", "message": "the model returned no audio"})
            return
        sr = plan.stem.sr if plan.stem is not None else p["sample_rate"] or int(replies[0].sample_rate)
        first = job.job_dir / "result.wav"
        with_source = p.get("continuation") == "with_source"  # the source's tail + the new part: all of it
        for i, reply in enumerate(replies):
            if plan.stem is not None:  # remix / the new part over the kept stems, at the source's rate
                wave, notes = stem_edit.take(plan, reply, p)
            else:
                wave, notes = finishing.fit_take(reply.audio, int(reply.sample_rate), p, out_sr=sr,
                                                 duration_s=None if with_source else plan.duration, tempo=plan.tempo,
                                                 source=plan.source if job.kind == "edit" else None)
            path = outputs.take_path(first, i + 1)
            data = audio_io.wav_bytes(wave, sr)
            outputs.write_own(path, data)
            if i == 0:
                out_path, first_wave = path, wave
                if job.output.get("want") == "bytes":
                    frames = [data]
            takes.append({"take": i + 1, "audio_path": str(path), "seed": int(reply.seed), "text": reply.text,
                          **notes})
        t2 = time.perf_counter()
        try:
            result_analysis = finishing.analyse(first_wave, sr, project_bpm=job.params["context"].get("bpm"))
        except Exception as e:
            log.warning("job %s: the result could not be analysed: %s: %s", job.id, type(e).__name__, e)
            result_analysis = None
        result_analysis_s = time.perf_counter() - t2
        worker.update(job, audio_path=str(out_path), sample_rate=sr, channels=first_wave.shape[0],
                      duration=first_wave.shape[1] / sr, takes=takes, result_analysis=result_analysis)
    sidecar = job.job_dir / "result.json"
    timings = {"queue_wait": (job.started or 0) - job.created, **plan.timings}
    timings.update({k: float(v) for k, v in (getattr(replies[0], "timings", None) or {}).items()})
    timings.update(chat=chat_s, write=time.perf_counter() - t1 - result_analysis_s,
                   result_analysis=result_analysis_s)
    timings["total"] = time.time() - job.created  # to the sidecar's write; docs/protocol.md §6 names each
    seed = int(replies[0].seed if replies[0].seed is not None else job.seed)
    outputs.write_own(sidecar, audio_io.sidecar_bytes({
        "job": job.id, "kind": job.kind, "prompt": p["prompt"],
        "prompt_sent": plan.prompt, "seed": seed,
        "model": worker.model_info, "conditioning": p["conditioning"], "params": p, "inputs": job.inputs_info,
        "text": replies[0].text, "raw_text": getattr(replies[0], "raw_text", replies[0].text),
        "audio_path": str(out_path) if out_path else None, "sample_rate": job.sample_rate,
        "channels": job.channels, "duration": job.duration, "analysis": job.analysis,
        "result_analysis": job.result_analysis, "takes": job.takes, "timings": timings,
        "created": job.created, "started": job.started, "server_version": protocol.SERVER_VERSION,
    }))
    worker.update(job, sidecar_path=str(sidecar), seed=seed)
    worker.finish(job, "done", frames=frames)
