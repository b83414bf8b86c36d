"""Request handlers: one method per op (docs/protocol.md §2). Quick ops run on the transport thread;
``submit`` (reading and decoding the inputs) and ``upload`` (writing a chunk) run on the intake pool.

``handle`` never raises: every failure becomes an ``error`` reply, and the server keeps serving.
It returns the direct reply plus events for the subscribers of a job (e.g. ``cancelled``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2ugen import media
from server import inputs as inputs_mod
from server import kinds, owners, protocol
from server.jobs import Job, JobQueue, JobStore, QueueFull, new_job_id
from server.journal import Journal
from server.blobs import BlobStore
from server.protocol import ProtocolError, req_int, req_str
from server.security import PathNotAllowed, open_inside

log = logging.getLogger("m2ugen.server")


@dataclass
class Limits:
    queue_size: int = 16
    max_message_mb: int = 256
    max_audio_s: float = media.MAX_AUDIO_S
    max_audio_mb: int = 256
    max_queued_audio_mb: int = 1024  # decoded input audio held by queued and running jobs together
    max_batch: int = 4  # rows run together by the worker (a job counts its takes); 1 = one job at a time
    max_upload_mb: int = 512  # one uploaded input file
    upload_store_mb: int = 4096  # uploads kept for reuse, in all
    upload_ttl_h: float = 24.0  # uploads unused this long are deleted

    def to_dict(self) -> dict[str, Any]:
        return {"queue_size": self.queue_size, "max_message_mb": self.max_message_mb,
                "max_audio_s": self.max_audio_s, "max_audio_mb": self.max_audio_mb,
                "max_queued_audio_mb": self.max_queued_audio_mb, "max_batch": self.max_batch,
                "max_upload_mb": self.max_upload_mb,
                "max_header_kb": protocol.MAX_HEADER_BYTES // 1024}

    def intake(self) -> inputs_mod.AudioIntake:
        return inputs_mod.AudioIntake(max_seconds=self.max_audio_s, max_bytes=self.max_audio_mb * 2**20)


@dataclass
class PendingSubmit:
    """A parsed ``submit`` whose inputs still have to be read and decoded (the slow part), or an
    ``upload`` chunk to write: work for the intake pool."""
    identity: bytes
    req: Any
    header: dict[str, Any]
    frames: list
    op: str = "submit"


@dataclass
class PreparedJob:
    """A submit with decoded inputs, ready to be queued."""
    identity: bytes
    req: Any
    job: Job


@dataclass
class Outcome:
    """What the transport sends: the direct reply, and events routed to a job's subscribers."""
    reply: dict[str, Any]
    frames: list = field(default_factory=list)
    events: list[tuple[dict[str, Any], list]] = field(default_factory=list)


class Handlers:
    def __init__(self, *, store: JobStore, queue: JobQueue, journal: Journal, jobs_dir: Path,
                 model_info: dict[str, Any], limits: Limits, adapters=None, blobs: BlobStore | None = None,
                 access: owners.Access | None = None):
        self.store = store
        self.queue = queue
        self.journal = journal
        self.blobs = blobs  # uploaded input files (None: a server that takes inputs as frames only)
        self.jobs_dir = Path(os.path.realpath(jobs_dir))
        self.model_info = model_info
        self.limits = limits
        self.adapters = adapters  # server.adapters.Adapters (None: a server without adapters)
        self.access = access or owners.Access()  # whose jobs a client sees (server/owners.py)

    # -----------------------------------------------------------------------------------------
    def handle(self, identity: bytes, frames: list, defer_submit: bool = False) -> Outcome | PendingSubmit:
        """Answer one request. With ``defer_submit`` a valid-looking submit or upload comes back as a
        PendingSubmit, for ``prepare`` on another thread (and a submit's ``commit`` back on this one)."""
        req = None
        try:
            header, rest = protocol.decode(frames)
            req = header.get("req") if isinstance(header.get("req"), (str, int)) else None
            op = protocol.check_envelope(header)
            header[owners.OWNER_FIELD] = owners.owner_of(identity, header, frames[0])
            if op in ("submit", "upload") and defer_submit:
                return PendingSubmit(identity, req, header, rest, op)
            out = getattr(self, "op_" + op)(identity, header, rest)
        except Exception as e:
            return self._error(e, req)
        return self._finish(out, req)

    def prepare(self, pending: PendingSubmit) -> PreparedJob | Outcome:
        """The slow half of submit: validate, read and decode the inputs; or an upload (any thread)."""
        try:
            if pending.op == "upload":
                return self._finish(self.op_upload(pending.identity, pending.header, pending.frames), pending.req)
            job = self._prepare_job(pending.identity, pending.header, pending.frames)
        except Exception as e:
            return self._error(e, pending.req)
        return PreparedJob(pending.identity, pending.req, job)

    def commit(self, prepared: PreparedJob) -> Outcome:
        """The quick half of submit: queue the job and answer ``accepted`` (the transport thread)."""
        try:
            out = self._queue_job(prepared.job)
        except Exception as e:
            shutil.rmtree(prepared.job.job_dir, ignore_errors=True)
            return self._error(e, prepared.req)
        return self._finish(out, prepared.req)

    def refuse_busy(self, pending: PendingSubmit, why: str) -> Outcome:
        return self._error(ProtocolError("busy", f"{why}; try again later"), pending.req)

    def _error(self, e: Exception, req: Any) -> Outcome:
        if isinstance(e, ProtocolError):
            req = req if req is not None else e.req
            log.info("request refused: %s: %s", e.code, e.message)
            return Outcome(protocol.error_header(e.code, e.message, req=req, field=e.field))
        log.error("internal error while handling a request", exc_info=e)  # a bug: report it, keep serving
        return Outcome(protocol.error_header("internal", f"internal server error ({type(e).__name__}: {e})",
                                             req=req))

    def _finish(self, out: Outcome, req: Any) -> Outcome:
        out.reply.setdefault("v", protocol.PROTOCOL_VERSION)
        if req is not None:
            out.reply["req"] = req
        return out

    def _record(self, job_id: str, header: dict[str, Any]) -> dict[str, Any]:
        """The record of one of the caller's jobs (another client's is ``not_found``)."""
        job = self.store.get(job_id)
        if job is not None:
            with self.store.lock:
                rec = job.record()
        else:
            rec = self.journal.get(job_id)
            if rec is None:
                raise ProtocolError("not_found", f"no job with id {job_id!r}", "job")
        self.access.check(header[owners.OWNER_FIELD], rec.get("owner"), job_id)
        return rec

    # -----------------------------------------------------------------------------------------
    def op_hello(self, identity, header, frames) -> Outcome:
        client = req_str(header, "client", max_len=200, default="")
        log.info("hello from %s", client or "a client")
        return Outcome({"op": "welcome", "server_version": protocol.SERVER_VERSION,
                        "protocol": protocol.PROTOCOL_VERSION, "model": self.model_info,
                        "limits": self.limits.to_dict(), "jobs_dir": str(self.jobs_dir),
                        "client": self.access.welcome(header[owners.OWNER_FIELD]),
                        "uploads": self.blobs is not None,
                        **({"upload_challenge": self.blobs.challenge(identity)} if self.blobs is not None else {})})

    def op_ping(self, identity, header, frames) -> Outcome:
        return Outcome({"op": "pong", "server_version": protocol.SERVER_VERSION, "time": time.time(),
                        "model": self.model_info})

    def op_upload(self, identity, header, frames) -> Outcome:
        """An offer (does the server hold these bytes?), a begin, or one chunk of an upload (server/blobs.py)."""
        if self.blobs is None:
            raise ProtocolError("bad_request", "this server keeps no uploads; send inputs as frames", "op")
        up = protocol.check_upload(header, len(frames))
        owner = header[owners.OWNER_FIELD]
        if up["form"] == "offer":
            state = self.blobs.offer(identity, owner, up[protocol.CONTENT_HASH], up["size"], local=up["local"])
        elif up["form"] == "begin":
            state = self.blobs.begin(identity, owner, up["size"], local=up["local"])
        else:
            data = frames[0].buffer if hasattr(frames[0], "buffer") else frames[0]
            state = self.blobs.put_chunk(identity, up["upload"], up["offset"], data)
        return Outcome({"op": "uploaded", **state})

    def op_submit(self, identity, header, frames) -> Outcome:
        job = self._prepare_job(identity, header, frames)
        try:
            return self._queue_job(job)
        except BaseException:
            shutil.rmtree(job.job_dir, ignore_errors=True)
            raise

    def _prepare_job(self, identity, header, frames) -> Job:
        spec = protocol.check_submit(header, len(frames))
        self._check_mode(spec["params"])  # before any input is read or decoded
        self._check_adapters(spec["kind"], spec["params"])
        if len(self.queue) >= self.queue.maxsize:
            raise ProtocolError("busy", f"the queue is full ({self.queue.maxsize} jobs waiting); try again later")
        output = spec["output"]
        job_id = new_job_id()
        job_dir = self.jobs_dir / job_id
        owner = header[owners.OWNER_FIELD]
        sources = inputs_mod.Sources(
            frames,
            open_blob=None if self.blobs is None else (lambda sha, proof, f: self.blobs.open(identity, owner, sha, proof, f)),
            open_result=lambda job_id, take, field: self._open_job_result(job_id, take, field, header))
        intake = inputs_mod.intake_for(spec["kind"], spec["params"], self.limits.intake())  # stems: the source's rate
        model_inputs, info = inputs_mod.resolve(spec["inputs"], sources, job_dir, intake=intake,
                                                max_file_bytes=self.limits.max_message_mb * 2**20,
                                                max_set_bytes=self.limits.max_queued_audio_mb * 2**20)
        kinds.check_inputs(spec["kind"], model_inputs)
        params = spec["params"]
        if protocol.KIND_SPECS[spec["kind"]].makes_audio and params["duration"] is None:
            audio = model_inputs["audio"]
            seconds = 10.0 if audio is None else audio[0].shape[1] / audio[1]
            if audio is None and info.get("midi"):  # a MIDI sketch: as long as its notes
                seconds = info["midi"]["seconds"]
            ref = spec["inputs"]["audio"] or {}
            selection = params["context"].get("selection")
            if ref.get("start") is not None and ref.get("end") is not None:  # a DAW selection: its exact length
                seconds = min(seconds + 1e-3, ref["end"] - ref["start"])
            elif selection is not None:  # the selection the result will be placed on
                seconds = selection["end"] - selection["start"]
            params["duration"] = min(300.0, max(0.5, seconds))
        job = Job(id=job_id, kind=spec["kind"], params=params, model=self.model_info, inputs_info=info,
                  owner=header[owners.OWNER_FIELD])
        job.inputs, job.output, job.job_dir = model_inputs, output, job_dir
        job.subscribers.add(identity)
        return job

    def _check_mode(self, params: dict[str, Any]) -> None:
        modes = (self.model_info.get("decoder") or {}).get("modes")
        if modes is not None and params.get("mode", "text") not in modes:
            decoder = self.model_info["decoder"]
            raise ProtocolError("bad_request", f"mode '{params['mode']}' is not available with the loaded decoder "
                                               f"({decoder.get('kind')}: modes {', '.join(modes)}); serve a model "
                                               f"whose decoder does it", "params.mode")

    def _check_adapters(self, kind: str, params: dict[str, Any]) -> None:
        """``params.adapter`` names a loaded adapter; a fine-tune's name is free (or ``replace``) and no
        other fine-tune is queued or running (one at a time)."""
        names = self.adapters.names() if self.adapters is not None else []
        if params.get("adapter") is not None and params["adapter"] not in names:
            raise ProtocolError("bad_request", f"unknown adapter {params['adapter']!r}; this server has "
                                               f"{', '.join(names) or 'none'}", "params.adapter")
        if kind not in protocol.LONG_KINDS:
            return
        if self.adapters is None:
            raise ProtocolError("bad_request", "this server does not fine-tune (no adapters dir)", "kind")
        decoder = (self.model_info.get("decoder") or {}).get("kind")
        if decoder is not None and not str(decoder).startswith("MusicGen"):
            raise ProtocolError("bad_request", f"personal fine-tunes train a LoRA on MusicGen; this server's decoder "
                                               f"is {decoder}", "kind")
        name = params["adapter_name"]
        if self.adapters.taken(name) and not params["replace"]:
            raise ProtocolError("bad_request", f"an adapter named {name!r} exists on this server; choose another "
                                               f"name or pass 'replace'", "params.adapter_name")
        self._check_one_long_job()

    def _check_one_long_job(self) -> None:
        with self.store.lock:
            other = next((j for j in self.store.all() if j.kind in protocol.LONG_KINDS
                          and j.state not in protocol.FINAL_STATES), None)
        if other is not None:
            raise ProtocolError("busy", f"fine-tune job {other.id} is {other.state}; the server runs one at a "
                                        f"time: wait for it or cancel it")

    def held_audio_bytes(self) -> int:
        """Decoded input audio held by this run's unfinished jobs."""
        with self.store.lock:
            return sum(j.inputs["audio"][0].nbytes for j in self.store.all()
                       if j.state not in protocol.FINAL_STATES and j.inputs.get("audio") is not None)

    def _queue_job(self, job: Job) -> Outcome:
        # Runs on the transport thread: the worker's events for this job are routed by this same
        # thread later, so 'accepted' always reaches the client before them.
        if job.kind in protocol.LONG_KINDS:
            self._check_one_long_job()  # again here, on the one thread that queues
        audio = job.inputs.get("audio")
        if audio is not None:
            held, budget = self.held_audio_bytes(), self.limits.max_queued_audio_mb * 2**20
            if held + audio[0].nbytes > budget:
                raise ProtocolError("busy", f"the queued jobs hold {held / 2**20:.0f} MiB of decoded audio; this "
                                            f"job's {audio[0].nbytes / 2**20:.0f} MiB would pass the limit of "
                                            f"{budget / 2**20:.0f} MiB; try again later")
        try:
            position = self.queue.put(job)
        except QueueFull as e:
            raise ProtocolError("busy", str(e)) from None
        self.store.add(job)
        self.store.persist(job, self.journal)  # the current state, even if the worker has already begun
        log.info("job %s queued (%s, position %d): %.60r", job.id, job.kind, position,
                 job.params["prompt"] or job.params.get("adapter_name"))
        return Outcome({"op": "accepted", "job": job.id, "queue_position": position, "model": self.model_info})

    def op_status(self, identity, header, frames) -> Outcome:
        rec = self._record(req_str(header, "job", min_len=1, max_len=64), header)
        return Outcome({"op": "job", **rec})

    def op_subscribe(self, identity, header, frames) -> Outcome:
        job_id = req_str(header, "job", min_len=1, max_len=64)
        rec = self._record(job_id, header)
        job = self.store.get(job_id)
        if job is not None:
            with self.store.lock:
                job.subscribers.add(identity)
        return Outcome({"op": "subscribed", **rec})

    def op_cancel(self, identity, header, frames) -> Outcome:
        job_id = req_str(header, "job", min_len=1, max_len=64)
        rec = self._record(job_id, header)  # an earlier run's job is already final
        job = self.store.get(job_id)
        if job is None:
            return Outcome({"op": "cancelling", "job": job_id, "state": rec["state"]})
        with self.store.lock:
            job.subscribers.add(identity)
            state = job.state
        if state in protocol.FINAL_STATES:
            return Outcome({"op": "cancelling", "job": job_id, "state": state})
        job.cancelled_by_client = True
        job.cancel_requested.set()
        if self.queue.remove(job):
            with self.store.lock:
                job.state, job.finished = "cancelled", time.time()
                job.inputs = {}
            self.store.persist(job, self.journal)
            shutil.rmtree(job.job_dir, ignore_errors=True)
            log.info("job %s cancelled while queued", job_id)
            events = [(protocol.event("cancelled", job_id, state="cancelled"), [])]
            events += [(protocol.event("queued", j.id, queue_position=j.queue_position), [])
                       for j in self.queue.snapshot()]
            return Outcome({"op": "cancelling", "job": job_id, "state": "cancelled"}, events=events)
        log.info("job %s: cancel requested while running", job_id)
        return Outcome({"op": "cancelling", "job": job_id, "state": "running"})

    def op_result(self, identity, header, frames) -> Outcome:
        job_id = req_str(header, "job", min_len=1, max_len=64)
        want = req_str(header, "want", choices=("path", "bytes"), default="path")
        take = req_int(header, "take", lo=1, hi=protocol.MAX_TAKES, default=None)
        offset = req_int(header, "offset", lo=0, hi=2**50, default=None)  # bytes: one chunk from here
        if offset is not None and want != "bytes":
            raise ProtocolError("bad_request", "field 'offset' goes with want=bytes", "offset")
        rec = self._record(job_id, header)
        if rec["state"] not in protocol.FINAL_STATES:
            raise ProtocolError("not_ready", f"job {job_id} is {rec['state']}; wait for its 'done' event")
        reply = {"op": "result", **rec}
        out_frames: list = []
        if rec["state"] == "done":
            if rec.get("sidecar_path") and not offset:
                try:
                    with self._open_own(job_id, rec["sidecar_path"], "sidecar") as f:
                        reply["sidecar"] = json.loads(f.read(16 * 2**20).decode("utf-8"))
                except (OSError, ValueError, ProtocolError):
                    reply["sidecar"] = None
            is_midi = not rec.get("audio_path") and bool(rec.get("midi_path"))  # transcribe: the .mid
            path = rec.get("midi_path") if is_midi else rec.get("audio_path")
            if take is not None:
                path = self._take_path(rec, take)
                reply["take"] = take
            if want == "bytes" and path:
                with self._open_own(job_id, path, "result file") as f:
                    size = os.fstat(f.fileno()).st_size
                    if offset is None:  # the whole file in one frame
                        out_frames = [f.read()]
                    else:
                        f.seek(min(offset, size))
                        out_frames = [f.read(protocol.RESULT_CHUNK_BYTES)]
                reply["midi" if is_midi else "audio"] = {"frame": 1, "size": size,
                                                         **({"offset": offset} if offset is not None else {})}
        return Outcome(reply, out_frames)

    def _take_path(self, rec: dict[str, Any], take: int) -> str:
        takes = rec.get("takes") or []
        if take > len(takes):
            raise ProtocolError("not_found", f"job {rec['job']} has {len(takes)} take(s), not {take}", "take")
        return takes[take - 1]["audio_path"]

    def _open_own(self, job_id: str, path: str, what: str):
        """A file of a job's own folder in the jobs dir, opened without following a link at any step:
        a result swapped for a symlink is refused, never followed (``result`` returns the job's own bytes
        or nothing)."""
        try:
            if not Path(path).parent == self.jobs_dir / job_id:  # its own folder, nobody else's
                raise PathNotAllowed(f"{path!r} is not in the job's folder")
            return open_inside(self.jobs_dir, Path(path), what)
        except (PathNotAllowed, FileNotFoundError) as e:
            raise ProtocolError("not_found", f"the {what} of job {job_id} is gone or was replaced: {e}") from None
        except OSError as e:
            raise ProtocolError("not_found", f"the {what} of job {job_id} cannot be read: {e.strerror}") from None

    def _open_job_result(self, job_id: str, take: int, field: str, header: dict[str, Any]):
        """``inputs.audio = {"job": id, "take": k}``: a finished job's audio (one of the caller's jobs), read
        from its own folder."""
        try:
            rec = self._record(job_id, header)
        except ProtocolError:
            raise ProtocolError("not_found", f"'{field}.job': no job {job_id!r} on this server", field + ".job") from None
        if rec["state"] != "done" or not rec.get("audio_path"):
            raise ProtocolError("not_ready" if rec["state"] not in protocol.FINAL_STATES else "not_found",
                                f"'{field}.job': job {job_id} is {rec['state']} and has no audio result",
                                field + ".job")
        path = self._take_path(rec, take) if take > 1 else rec["audio_path"]
        return self._open_own(job_id, path, "result audio")

    def op_jobs(self, identity, header, frames) -> Outcome:
        limit = req_int(header, "limit", lo=1, hi=1000, default=50)
        state = req_str(header, "state", choices=protocol.JOB_STATES, default=None)
        records = self.journal.list(limit, state, owner=self.access.list_owner(header[owners.OWNER_FIELD]))
        for i, rec in enumerate(records):  # fresher progress of this run's jobs
            job = self.store.get(rec["job"])
            if job is not None:
                with self.store.lock:
                    records[i] = job.record()
        return Outcome({"op": "jobs", "jobs": records})
