"""A client's view of one job, folded from the server's messages (docs/protocol.md §3, "Job view").

Every Python client (the CLI's status file, the OSC bridge) folds events with ``JobView.apply``, so
the op -> state table below is written once; the REAPER (Lua) and Live (JS) clients follow the same
documented table.

| message | state | also taken |
|---|---|---|
| `accepted`, `queued` | queued | queue_position |
| `progress` | running | stage, fraction (never decreasing); queue_position cleared |
| `text` | (unchanged) | text |
| `done`, and `job` / `result` / `subscribed` records | the record's `state` | every record field |
| `cancelled` | cancelled | |
| `error` | failed | error {code, message} |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from server.protocol import FINAL_STATES

RECORD_OPS = ("done", "job", "result", "subscribed")
RECORD_FIELDS = ("state", "queue_position", "stage", "fraction", "text", "audio_path", "duration", "sample_rate",
                 "error")


@dataclass
class JobView:
    job: str | None = None
    state: str = "starting"
    queue_position: int | None = None
    stage: str | None = None
    fraction: float = 0.0
    text: str = ""
    audio_path: str | None = None
    duration: float | None = None
    sample_rate: int | None = None
    error: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other record fields (seed, sidecar_path, analysis...)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def apply(self, header: dict[str, Any]) -> None:
        """Fold one server message into the view."""
        op = header.get("op")
        if header.get("job"):
            self.job = header["job"]
        if op in ("accepted", "queued"):
            self.state, self.queue_position = "queued", header.get("queue_position")
        elif op == "progress":
            self.state, self.queue_position, self.stage = "running", None, header.get("stage")
            self.fraction = max(self.fraction, float(header.get("fraction") or 0.0))
        elif op == "text":
            self.text = header.get("text", self.text)
        elif op in RECORD_OPS:
            for k in RECORD_FIELDS:
                if k in header:
                    setattr(self, k, header[k])
            self.extra.update({k: v for k, v in header.items() if k not in RECORD_FIELDS and k not in ("op", "v", "req")})
            if op == "done":
                self.state = "done"
        elif op == "cancelled":
            self.state = "cancelled"
        elif op == "error":
            self.state, self.error = "failed", {"code": header.get("code"), "message": header.get("message")}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d
