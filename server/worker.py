"""The single model worker thread (the model is not thread-safe).

Takes jobs from the queue, starts them (state, seed) and hands each to its kind's module in
``server/kinds/`` (``chat`` for ask/edit/generate). Chat jobs run continuously batched (the default,
docs/protocol.md §6): the worker steps an ``m2ugen.engine.Engine`` and, at every step boundary, admits the
queued jobs that may join it (``_serve``); ``--batching static`` runs them in static batches instead.
The kind module does the work through this class's
``finish`` / ``progress`` / ``update`` / ``emit`` and ``model_events`` (the model's ``on_event``
callbacks turned into ``progress`` / ``text`` events). The worker owns job states and events; a
running job is cancelled by raising ``JobCancelled`` from that callback at the model's next step.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable

from server import kinds, protocol
from server.jobs import Job, JobCancelled, JobQueue, JobStore
from server.journal import Journal

log = logging.getLogger("m2ugen.worker")

Emit = Callable[..., None]  # emit(header: dict, frames: list[bytes] = ()) -> None, thread-safe
DEFAULT_MAX_BATCH = 4  # rows (a job counts its takes) run together; 1 = one job at a time
BATCHING = ("continuous", "static")  # docs/protocol.md §6


class Worker(threading.Thread):
    def __init__(self, model, model_info: dict[str, Any], queue: JobQueue, store: JobStore, journal: Journal,
                 emit_factory: Callable[[], Emit], max_batch: int = DEFAULT_MAX_BATCH,
                 batching: str = "continuous"):
        super().__init__(name="m2ugen-worker", daemon=True)
        self.model = model
        self.model_info = model_info
        self.queue = queue
        self.store = store
        self.journal = journal
        self._emit_factory = emit_factory
        self.emit: Emit = lambda header, frames=(): None
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, got {batching!r}")
        self.batching = batching
        self._engine = None  # m2ugen.engine.Engine, made at the first continuous job
        self._finisher = None  # its executor: finished rows' codes -> audio, jobs' results written (``later``)
        self._pending: list[tuple[Job, Any, "_Deferred"]] = []  # (job, future, its deferred worker)
        self.running: list[Job] = []  # the job(s) of the batch being run
        self.stopping = False  # set by the app on shutdown: a job cancelled then is 'interrupted'
        self.adapters = None  # server.adapters.Adapters, set by the app (fine-tunes, params.adapter)

    def stop(self, timeout_s: float) -> None:
        """Shutdown: the running jobs end as 'interrupted', the queue closes, the thread ends."""
        self.stopping = True
        for job in list(self.running):
            job.cancel_requested.set()
        self.queue.close()
        if self.is_alive():
            self.join(timeout_s)

    def run(self) -> None:
        self.emit = self._emit_factory()  # the event socket belongs to this thread
        self.warm_up()
        try:
            while True:
                job = self.queue.get()
                if job is None:
                    return
                self.run_job(job)
        finally:
            if self._finisher is not None:
                self._finisher.shutdown(wait=False)

    def run_job(self, job: Job) -> None:
        """Run ``job`` with the queued jobs that may share its batch (continuous: that join it as it runs)."""
        engine = self._engine_for(job)
        if engine is not None:
            self._serve(engine, job)
            return
        batch = [job] + self._batch_mates(job)
        self._announce_positions()
        parked, self.running = self.running, batch  # parked: a long job that lent the model (run_waiting)
        try:
            self._run(batch)
        finally:
            self.running = parked

    def _batch_mates(self, head: Job) -> list[Job]:
        """Queued jobs that may run with ``head`` (its kind module's ``batch_key``), up to max_batch rows."""
        runner = kinds.runner(head.kind)
        if self.max_batch == 1 or not hasattr(runner, "run_batch"):
            return []
        key, room = runner.batch_key(head), self.max_batch - runner.rows(head)

        def fits(job: Job) -> bool:
            nonlocal room
            other = kinds.runner(job.kind)
            if other is not runner or other.batch_key(job) != key or other.rows(job) > room:
                return False
            room -= other.rows(job)
            return True

        return self.queue.take_if(fits) if room > 0 else []

    def _run(self, batch: list[Job]) -> None:
        started = [job for job in batch if self.begin(job)]
        if not started:
            return
        runner = kinds.runner(started[0].kind)
        try:
            if len(started) > 1:
                log.info("batch of %d jobs: %s", len(started), ", ".join(j.id for j in started))
                runner.run_batch(self, started)
            else:
                runner.run(self, started[0])
        except JobCancelled:
            for job in started:
                self.finish(job, "cancelled")
        except Exception:  # never let one job kill the worker
            log.exception("jobs %s: unexpected worker error", ", ".join(j.id for j in started))
            for job in started:  # finish() leaves a job that already ended as it is
                self.finish(job, "failed", error={"code": "internal", "message": "internal error in the worker"})

    # --- continuous batching: an m2ugen.engine.Engine, stepped here; jobs join at its step boundaries
    def _engine_for(self, job: Job):
        """The engine for ``job``, or None: static batching, a kind without rows (transcribe, finetune), or a
        model class without ``engine`` (a test double wrapping the model runs static)."""
        runner = kinds.runner(job.kind)
        if self.batching != "continuous" or not hasattr(runner, "start_rows") \
                or not callable(getattr(type(self.model), "engine", None)):
            return None
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def _make_engine(self):
        from concurrent.futures import ThreadPoolExecutor

        if self._finisher is None:
            self._finisher = ThreadPoolExecutor(1, thread_name_prefix="m2ugen-finish")
        return self.model.engine(max_rows=self.max_batch, finisher=self._finisher)

    def warm_up(self) -> None:
        """With compiled decode steps (serve --compile), compile the engine's fixed batch sizes now, before
        the first job, once each."""
        llama = getattr(self.model, "llama", None)
        if self.batching == "continuous" and getattr(llama, "decode_compiled", False) \
                and callable(getattr(type(self.model), "engine", None)):
            t0 = time.perf_counter()
            try:
                self._engine = self._make_engine()
                self._engine.warm_up()
                log.info("compiled the decode steps for batches of up to %d rows in %.1f s", self.max_batch,
                         time.perf_counter() - t0)
            except Exception:  # the first jobs compile instead
                log.exception("warming up the compiled decode steps failed")

    def _serve(self, engine, head: Job) -> None:
        """Run ``head`` on the engine, and every queued job that may join it (same kind module and
        ``batch_key``, in queue order) at each step boundary while it has room, until the engine is empty."""
        runner = kinds.runner(head.kind)
        key = runner.batch_key(head)
        parked, self.running = self.running, []
        live: dict[int, Any] = {}  # engine handle -> the job's kind state (runner.Running)
        try:
            self._admit(engine, runner, [head], live)
            while live or self._pending:
                for r in {id(r): r for r in live.values()}.values():
                    if r.job.cancel_requested.is_set():  # rows waiting in a stage end now, not when they run
                        for h in r.handles:
                            engine.cancel(h, JobCancelled())
                if not self.stopping:
                    self._admit(engine, runner, self._joiners(engine, runner, key), live)
                if not live:  # only results being written: wait for one (a little: new jobs join meanwhile)
                    self._replay(wait_s=0.05)
                    continue
                try:
                    ended = engine.step()
                except Exception:  # an error of the engine itself: every job in it fails, the worker goes on
                    log.exception("jobs %s: unexpected engine error", ", ".join(self._ids(live)))
                    ended = engine.abort(RuntimeError("internal error in the worker"))
                    for r in {id(r): r for r in live.values()}.values():
                        self.finish(r.job, "failed", error={"code": "internal",
                                                            "message": "internal error in the worker"})
                for handle, out in ended.items():
                    r = live.pop(handle, None)
                    if r is None:
                        continue
                    try:
                        over = runner.row_ended(self, engine, r, handle, out)
                    except Exception:
                        log.exception("job %s: unexpected worker error", r.job.id)
                        self.finish(r.job, "failed", error={"code": "internal",
                                                            "message": "internal error in the worker"})
                        over = True
                    if over:
                        for h in r.handles:
                            live.pop(h, None)
                            engine.cancel(h)  # takes still running after a failure: not worth their steps
                        if r.job in self.running:
                            self.running.remove(r.job)
                self._replay()
        finally:
            if not engine.idle:
                engine.abort(RuntimeError("the worker stopped"))
            while self._pending:
                self._replay(wait_s=1.0)
            self.running = parked

    # --- a job's last step beside the running decode (continuous batching)
    def later(self, job: Job, fn: Callable[[Any], None]) -> None:
        """Run ``fn(worker)`` (a job's last step: its results written) on the finisher thread while the
        engine steps on; the events and the job's end it makes reach clients from this thread, at the next
        step boundary (``_replay``). Without a finisher (static batching), now."""
        if self._finisher is None:
            fn(self)
            return
        deferred = _Deferred(self)
        self._pending.append((job, self._finisher.submit(fn, deferred), deferred))

    def _replay(self, wait_s: float = 0.0) -> None:
        """Send what the finished ``later`` steps emitted (waiting up to ``wait_s`` for the first)."""
        if wait_s and self._pending:
            from concurrent.futures import FIRST_COMPLETED, wait

            wait([f for _, f, _ in self._pending], timeout=wait_s, return_when=FIRST_COMPLETED)
        for item in [x for x in self._pending if x[1].done()]:
            self._pending.remove(item)
            job, fut, deferred = item
            deferred.replay()
            if fut.exception() is not None:
                log.error("job %s: unexpected worker error", job.id, exc_info=fut.exception())
                self.finish(job, "failed", error={"code": "internal", "message": "internal error in the worker"})

    @staticmethod
    def _ids(live: dict) -> list[str]:
        return list(dict.fromkeys(r.job.id for r in live.values()))

    def _admit(self, engine, runner, jobs: list[Job], live: dict) -> None:
        for job in jobs:
            if not self.begin(job):
                continue
            self.running.append(job)
            try:
                r = runner.start_rows(self, engine, job)
            except Exception:
                log.exception("job %s: unexpected worker error", job.id)
                self.finish(job, "failed", error={"code": "internal", "message": "internal error in the worker"})
                r = None
            if r is None:
                self.running.remove(job)
                continue
            for h in r.handles:
                live[h] = r
        if jobs:
            self._announce_positions()

    def _joiners(self, engine, runner, key) -> list[Job]:
        """Queued jobs from the head of the queue, in order, that may join now: the same kind module and
        batch key, rows within the engine's room. The first that may not ends the run (first come, first
        served: a fine-tune or a job for other weights at the head waits for the engine to drain)."""
        room = engine.room()
        if room <= 0:
            return []
        stop = False

        def fits(job: Job) -> bool:
            nonlocal room, stop
            if stop:
                return False
            other = kinds.runner(job.kind)
            if other is not runner or other.batch_key(job) != key or other.rows(job) > room:
                stop = True
                return False
            room -= other.rows(job)
            return True

        return self.queue.take_if(fits)

    # --- park / resume: a long job (protocol.LONG_KINDS: finetune) lends the model between its steps
    def interactive_waiting(self) -> bool:
        return any(j.kind not in protocol.LONG_KINDS for j in self.queue.snapshot())

    def run_waiting(self) -> int:
        """Run the queued jobs of the other kinds now, in queue order (batched as usual), while the current
        (long) job waits with its state in memory; returns how many batches ran. The long job calls this
        between its steps."""
        n = 0
        while not self.stopping:
            nxt = next((j for j in self.queue.snapshot() if j.kind not in protocol.LONG_KINDS), None)
            if nxt is None:
                return n
            if self.queue.remove(nxt):  # False: cancelled meanwhile
                self.run_job(nxt)
                n += 1
        return n

    # -----------------------------------------------------------------------------------------
    def _announce_positions(self) -> None:
        for j in self.queue.snapshot():
            self.emit(protocol.event("queued", j.id, queue_position=j.queue_position))

    def begin(self, job: Job) -> bool:
        """queued -> running, with the seed it runs under; False when it was cancelled meanwhile."""
        if job.cancel_requested.is_set():
            self.finish(job, "cancelled")
            return False
        p = job.params
        seed = p["seed"] if p.get("seed") is not None else random.randrange(2**31)
        with self.store.lock:
            if job.state != "queued":  # cancelled between the queue and here
                return False
            self.update(job, state="running", started=time.time(), stage=next(iter(kinds.stage_spans(job.kind))),
                        seed=seed)
            self.store.persist(job, self.journal)
        log.info("job %s running (%s, seed %d)", job.id, job.kind, seed)
        return True

    def update(self, job: Job, **changes: Any) -> None:
        with self.store.lock:
            for k, v in changes.items():
                setattr(job, k, v)

    def finish(self, job: Job, state: str, error: dict | None = None, frames=()) -> None:
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

    def progress(self, job: Job, stage: str, stage_fraction: float, take: int = 0, **fields: Any) -> None:
        """Overall fraction: the stage's span of the kind, shared out over the takes (after the first stage);
        ``fields``: more of the event (a fine-tune's step, steps, loss)."""
        spans = kinds.stage_spans(job.kind)
        lo, hi = spans[stage]
        takes = max(1, int(job.params.get("takes") or 1))
        f = lo + (hi - lo) * max(0.0, min(1.0, stage_fraction))
        first, after = list(spans)[0], list(spans.values())[1][0] if len(spans) > 1 else 0.0
        if stage != first and takes > 1:
            f = after + (take + f) / takes * (1 - after)
        frac = max(job.fraction, min(1.0, f))
        self.update(job, stage=stage, fraction=frac)
        self.emit(protocol.event("progress", job.id, stage=stage, fraction=round(frac, 4), **fields))

    def model_events(self, job: Job, take: int = 0):
        """The model's on_event callback for one take: cancellation, text streaming (take 1), progress."""
        spans = kinds.stage_spans(job.kind)
        last = {"stage": next(iter(spans)), "fraction": -1.0, "t": 0.0}

        def on_event(ev) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled()
            stage = ev.stage if ev.stage in spans else last["stage"]
            if take == 0 and stage == "thinking" and ev.text is not None and ev.text != job.text:
                old = job.text
                delta = ev.text[len(old):] if ev.text.startswith(old) else ev.text
                self.update(job, text=ev.text)
                self.emit(protocol.event("text", job.id, text=ev.text, delta=delta))
            frac = float(ev.fraction or 0.0)
            now = time.monotonic()
            if stage != last["stage"] or frac - last["fraction"] >= 0.02 or now - last["t"] >= 0.25 or frac >= 1.0:
                last.update(stage=stage, fraction=frac, t=now)
                self.progress(job, stage, frac, take)

        return on_event



class _Deferred:
    """The worker as a job's ``later`` step sees it on the finisher thread: job state changes apply at
    once (``update``: under the store's lock); events, progress and the job's end are kept and replayed on
    the worker thread, whose event socket they need."""

    def __init__(self, worker: Worker):
        self._worker = worker
        self._calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        return getattr(self._worker, name)

    def emit(self, header: dict, frames=()) -> None:
        self._calls.append(("emit", (header, frames), {}))

    def progress(self, *args: Any, **kwargs: Any) -> None:
        self._calls.append(("progress", args, kwargs))

    def finish(self, *args: Any, **kwargs: Any) -> None:
        self._calls.append(("finish", args, kwargs))

    def replay(self) -> None:
        for name, args, kwargs in self._calls:
            getattr(self._worker, name)(*args, **kwargs)
        self._calls = []
