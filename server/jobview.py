"""JobView: what a client knows about one job, folded from the server's events and job records.

    view = JobView("f7c22b835872")
    for header in events:            # the headers the server pushes (docs/protocol.md §3)
        view.apply(header)
    view.state, view.fraction, view.audio_path, view.final

One table says which message moves the job to which state (`TRANSITIONS`); records (`job`,
`result`, `subscribed`) carry the state themselves. A final state (`done`, `failed`, `cancelled`)
is never left again: a `progress` that arrives after `cancelled` changes nothing, and a record only
fills in the details of a job that has ended. No sockets, no bridge imports: this is the client-side
half of the protocol, shared by every Python client (the CLI's status file, the OSC bridge); the
REAPER (Lua) and Live (JS) clients follow the same table (docs/protocol.md §3, "Job view").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.protocol import FINAL_STATES

# event op -> the job state after it (None: the state does not change)
TRANSITIONS: dict[str, str | None] = {
    "accepted": "queued",
    "queued": "queued",
    "progress": "running",
    "text": "running",
    "done": "done",
    "error": "failed",
    "cancelled": "cancelled",
    "cancelling": None,  # the reply to `cancel`: the `cancelled` event (or `done`) follows
}
# replies that carry a whole job record, `state` included
RECORD_OPS = ("job", "result", "subscribed")
# record fields copied as they are
RECORD_FIELDS = ("kind", "text", "audio_path", "midi_path", "duration", "sample_rate", "channels", "seed", "analysis",
                 "result_analysis", "takes")


@dataclass
class JobView:
    job: str = ""
    kind: str = ""
    state: str = "queued"
    queue_position: int = 0
    fraction: float = 0.0
    stage: str = ""
    text: str = ""
    audio_path: str = ""
    midi_path: str = ""  # transcribe: the .mid
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    seed: int | None = None
    error: dict[str, str] | None = None
    analysis: dict[str, Any] | None = None
    result_analysis: dict[str, Any] | None = None
    takes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def apply(self, message: dict[str, Any]) -> bool:
        """Fold one server header in; True when it belonged to this job and was used."""
        op = message.get("op")
        job = message.get("job")
        if job is not None and self.job and job != self.job:
            return False
        if job is not None and not self.job:
            self.job = str(job)
        if op in RECORD_OPS:
            if self.final and message.get("state") != self.state:
                return False  # the job has ended; a stale record cannot reopen it
            self._copy_record(message)
            if message.get("state") in ("queued", "running", *FINAL_STATES):
                self.state = str(message["state"])
            return True
        if op not in TRANSITIONS:
            return False
        if self.final:  # a final state is kept: late progress/text of a cancelled job change nothing
            return False
        new_state = TRANSITIONS[op]
        if new_state is not None:
            self.state = new_state
        if op in ("accepted", "queued"):
            self.queue_position = _int(message.get("queue_position"))
        elif op == "progress":
            self.queue_position = 0
            self.fraction = max(self.fraction, _float(message.get("fraction")))
            self.stage = str(message.get("stage") or self.stage)
        elif op == "text":
            self.stage = "thinking"
            self.text = str(message.get("text") or self.text)
        elif op == "done":
            self.fraction = 1.0
            self._copy_record(message)
        elif op == "error":
            self.error = {"code": str(message.get("code") or "job_failed"), "message": str(message.get("message") or "")}
        return True

    def _copy_record(self, record: dict[str, Any]) -> None:
        for name in RECORD_FIELDS:
            if name in record and record[name] is not None:
                setattr(self, name, record[name])
        if record.get("fraction") is not None:
            self.fraction = _float(record["fraction"])
        if record.get("stage") is not None:
            self.stage = str(record["stage"])
        if record.get("queue_position") is not None:
            self.queue_position = _int(record["queue_position"])
        if isinstance(record.get("error"), dict):
            error = record["error"]
            self.error = {"code": str(error.get("code") or "job_failed"), "message": str(error.get("message") or "")}
        if not isinstance(self.takes, list):
            self.takes = []


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
