"""The SQLite job journal: every state change of every job, so nothing is lost across a crash.

One row per job (``id``, ``created``, ``state``, ``record`` = the job record as JSON). Each write is
its own committed transaction (WAL mode), which survives ``kill -9`` of the server process. On open,
jobs left ``queued`` or ``running`` by a previous process are marked ``failed`` / ``interrupted``
(except fine-tunes, which the app queues again: they resume from their saved state).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from server.protocol import FINAL_STATES, JOB_STATES

_FINAL = ", ".join(f"'{s}'" for s in FINAL_STATES)  # the states come from the protocol, not from here
_UNFINISHED = ", ".join(f"'{s}'" for s in JOB_STATES if s not in FINAL_STATES)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created);
"""


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def recover(self, resume_kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Mark jobs a previous process left queued/running as failed/interrupted; returns their records.
        Jobs of ``resume_kinds`` (a fine-tune: it continues from its saved state) are left as they are;
        ``resumable()`` lists them."""
        now = time.time()
        ids = []
        with self._lock:
            rows = self._db.execute(f"SELECT id, record FROM jobs WHERE state IN ({_UNFINISHED})").fetchall()
            for job_id, raw in rows:
                rec = json.loads(raw)
                was = rec.get("state")
                if rec.get("kind") in resume_kinds:
                    continue
                rec.update(state="failed", finished=now, queue_position=None, error={
                    "code": "interrupted",
                    "message": f"the server stopped while the job was {was}; submit it again",
                })
                self._db.execute("UPDATE jobs SET state = ?, record = ? WHERE id = ?",
                                 ("failed", json.dumps(rec), job_id))
                ids.append(rec)
        return ids

    def resumable(self, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
        """Unfinished jobs of ``kinds`` a previous process left, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT record FROM jobs WHERE state IN ({_UNFINISHED}) ORDER BY created"
                                    ).fetchall()
        return [rec for rec in map(json.loads, (r[0] for r in rows)) if rec.get("kind") in kinds]

    def save(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, created, state, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state, record = excluded.record",
                (record["job"], record["created"], record["state"], json.dumps(record)),
            )

    def prune(self, before: float) -> list[str]:
        """Forget finished jobs (done, failed, cancelled) created before ``before`` (unix time);
        returns their ids. Queued and running jobs are never pruned."""
        final = f"state IN ({_FINAL})"
        with self._lock:
            rows = self._db.execute(f"SELECT id FROM jobs WHERE created < ? AND {final}", (before,)).fetchall()
            self._db.execute(f"DELETE FROM jobs WHERE created < ? AND {final}", (before,))
        return [r[0] for r in rows]

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, limit: int = 50, state: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
        """Newest first; ``owner``: only that client's jobs (None: everyone's)."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if owner is not None:
            where.append("json_extract(record, '$.owner') = ?")
            args.append(owner)
        sql = "SELECT record FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created DESC LIMIT ?", (*args, limit)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
