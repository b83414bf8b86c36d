"""Job records, the bounded queue, and the in-memory store of this run's jobs.

States: queued -> running -> done | failed | cancelled (queued -> cancelled directly).
The transport thread creates and cancels jobs; the worker thread runs them; both go through
the store's lock.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from server import protocol


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    model: dict[str, Any]
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    queue_position: int | None = None
    stage: str | None = None
    fraction: float = 0.0
    text: str = ""
    audio_path: str | None = None
    sidecar_path: str | None = None
    midi_path: str | None = None  # transcribe: the written .mid
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    error: dict[str, str] | None = None
    seed: int | None = None
    inputs_info: dict[str, Any] = field(default_factory=dict)  # what the client sent (paths / names), recorded
    analysis: dict[str, Any] | None = None  # the measured source (m2ugen.analysis), for ask/edit
    result_analysis: dict[str, Any] | None = None  # the measured result (take 1)
    takes: list[dict[str, Any]] = field(default_factory=list)  # [{take, audio_path, seed, text, ...}]
    owner: str | None = None  # the client it belongs to (server/owners.py); None: a job from before owners

    # --- runtime only (never serialised) ---
    inputs: dict[str, Any] = field(default_factory=dict, repr=False)  # decoded audio, image/video paths
    output: dict[str, Any] = field(default_factory=dict, repr=False)  # {"want": "path" | "bytes"}
    job_dir: Any = None
    subscribers: set[bytes] = field(default_factory=set, repr=False)  # ROUTER identities
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    cancelled_by_client: bool = False

    def record(self) -> dict[str, Any]:
        """The public job record (docs/protocol.md §4)."""
        return {
            "job": self.id, "kind": self.kind, "state": self.state, "created": self.created,
            "started": self.started, "finished": self.finished, "queue_position": self.queue_position,
            "stage": self.stage, "fraction": self.fraction, "text": self.text, "audio_path": self.audio_path,
            "sidecar_path": self.sidecar_path, "midi_path": self.midi_path, "duration": self.duration,
            "sample_rate": self.sample_rate, "channels": self.channels, "error": self.error,
            "params": protocol.params_of_kind(self.kind, self.params), "model": self.model,
            "seed": self.seed, "inputs": self.inputs_info, "analysis": self.analysis,
            "result_analysis": self.result_analysis, "takes": self.takes,
            "owner": self.owner,
        }


class QueueFull(Exception):
    pass


class JobCancelled(Exception):
    """Raised from a job's progress callback to stop it at the next step (cancel, or shutdown)."""


class JobQueue:
    """FIFO of queued jobs with a hard bound; ``get`` blocks the worker until a job or ``close``."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, job: Job) -> int:
        """Append; returns the queue position (0 = next). Raises QueueFull."""
        with self._cond:
            if len(self._items) >= self.maxsize:
                raise QueueFull(f"the queue is full ({self.maxsize} jobs waiting); try again later")
            self._items.append(job)
            job.queue_position = len(self._items) - 1
            self._cond.notify()
            return job.queue_position

    def get(self, timeout: float | None = None) -> Job | None:
        """Pop the next job (None on timeout, and once closed: jobs still waiting then are left queued,
        so the journal reports them interrupted at the next start)."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._items and not self._closed:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if self._closed or not self._items:
                return None
            job = self._items.popleft()
            job.queue_position = None
            self._renumber()
            return job

    def take_if(self, accept) -> list[Job]:
        """Pop, in queue order, every job for which ``accept(job)`` is true (it may keep count)."""
        with self._cond:
            taken = [j for j in self._items if accept(j)]
            for j in taken:
                self._items.remove(j)
                j.queue_position = None
            if taken:
                self._renumber()
            return taken

    def remove(self, job: Job) -> bool:
        with self._cond:
            try:
                self._items.remove(job)
            except ValueError:
                return False
            job.queue_position = None
            self._renumber()
            return True

    def snapshot(self) -> list[Job]:
        with self._cond:
            return list(self._items)

    def _renumber(self) -> None:
        for i, j in enumerate(self._items):
            j.queue_position = i

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class JobStore:
    """This run's jobs by id (the journal holds earlier runs)."""

    def __init__(self):
        self.lock = threading.RLock()
        self._jobs: dict[str, Job] = {}

    def add(self, job: Job) -> None:
        with self.lock:
            self._jobs[job.id] = job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self.lock:
            return list(self._jobs.values())

    def persist(self, job: Job, journal) -> dict[str, Any]:
        """Snapshot and journal the job under the lock, so that two threads never write an older
        snapshot over a newer one. Returns the snapshot."""
        with self.lock:
            record = job.record()
            journal.save(record)
            return record
