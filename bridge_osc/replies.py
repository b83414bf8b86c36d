"""Reply formatting: server answers and job views -> the OSC messages a client receives.

Every function returns a list of `Reply` = (address, ((tag, value), ...)); the UDP loop sends them.
Nothing here touches a socket or the bridge's tables, so the address list in bridge_osc/README.md can
be checked against this one file.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bridge_osc import osc
from server.jobview import JobView

TEXT_CHUNK_BYTES = 1000
MAX_ERROR_BYTES = 1000
MAX_PROMPT_BYTES = 200  # in /m2u/job lines of a job listing
# scalar analysis keys sent by /m2u/analysis, in this order (lists such as beats stay on the server)
ANALYSIS_KEYS = ("duration_s", "channels", "sample_rate", "bpm", "meter", "key", "mode", "key_name",
                 "key_confidence", "lufs", "true_peak_dbtp", "peak_dbfs", "bpm_confidence", "bpm_alternative")

Arg = tuple[str, Any]
Reply = tuple[str, tuple[Arg, ...]]


def reply(address: str, *args: Arg) -> Reply:
    return address, args


def error(job: str, code: str, message: str) -> Reply:
    if len(message.encode("utf-8")) > MAX_ERROR_BYTES:
        message = osc.utf8_chunks(message, MAX_ERROR_BYTES - 3)[0] + "..."
    return reply("/m2u/error", ("s", job), ("s", code), ("s", message))


def welcome(version: str, up: bool, server: dict[str, Any], reply_port: int, capture_dir: str) -> Reply:
    model = (server.get("model") or {}) if up else {}
    return reply(
        "/m2u/welcome",
        ("s", version), ("s", "up" if up else "down"),
        ("s", str(server.get("server_version", "")) if up else ""),
        ("s", str(model.get("name", ""))),
        ("i", 1 if model.get("tiny") else 0),
        ("i", int(model.get("sample_rate") or 0)),
        ("i", reply_port),
        ("s", capture_dir),
    )


def pong(version: str, up: bool) -> Reply:
    return reply("/m2u/pong", ("s", version), ("s", "up" if up else "down"))


def accepted(job: str, queue_position: int, tag: str = "") -> Reply:
    """The server took the job; a request sent with a `tag` has it echoed last."""
    if tag:
        return reply("/m2u/accepted", ("s", job), ("i", queue_position), ("s", tag))
    return reply("/m2u/accepted", ("s", job), ("i", queue_position))


def uploaded(upload_id: str, size: int) -> Reply:
    return reply("/m2u/uploaded", ("s", upload_id), ("i", size))


def queued(job: str, queue_position: int) -> Reply:
    return reply("/m2u/queued", ("s", job), ("i", queue_position))


def progress(job: str, fraction: float, stage: str) -> Reply:
    return reply("/m2u/progress", ("s", job), ("f", fraction), ("s", stage))


def server_state(up: bool, message: str) -> Reply:
    return reply("/m2u/server", ("s", "up" if up else "down"), ("s", message))


def set_echo(name: str, value: Any) -> Reply:
    if value is None:
        return reply("/m2u/set", ("s", name))
    values = value if isinstance(value, list) else [value]
    return reply("/m2u/set", ("s", name), *[_typed(v) for v in values])


def status(view: JobView) -> Reply:
    return reply("/m2u/status", ("s", view.job), ("s", view.state), ("f", view.fraction), ("s", view.stage),
                 ("i", view.queue_position))


def analysis(job: str, which: str, values: dict[str, Any]) -> Reply:
    """`/m2u/analysis job which summary (name value)…`, null values left out."""
    args: list[Arg] = [("s", job), ("s", which), ("s", str(values.get("summary") or ""))]
    for name in ANALYSIS_KEYS:
        value = values.get(name)
        if value is not None and not isinstance(value, (list, dict)):
            args += [("s", name), _typed(value)]
    return reply("/m2u/analysis", *args)


def outcome(view: JobView, paths: list[str] | None = None) -> list[Reply]:
    """What a client gets when a job has ended: for `done` the analyses, the takes, the text chunks
    and `/m2u/done`; `/m2u/error` for `failed`; `/m2u/cancelled`. `paths` = where the takes were
    written on this machine (index-aligned with the takes; "" = not fetched), else the server's."""
    job = view.job
    if view.state == "failed":
        error_ = view.error or {}
        return [error(job, str(error_.get("code") or "job_failed"), str(error_.get("message") or ""))]
    if view.state == "cancelled":
        return [reply("/m2u/cancelled", ("s", job))]
    if view.state != "done":
        return []
    out: list[Reply] = []
    for which, values in (("input", view.analysis), ("result", view.result_analysis)):
        if isinstance(values, dict):
            out.append(analysis(job, which, values))
    takes = take_list(view)
    if paths is None:
        paths = [str(t.get("audio_path") or "") for t in takes]
    if len(takes) > 1:
        for index, take in enumerate(takes):
            seed = take.get("seed")
            out.append(reply("/m2u/take", ("s", job), ("i", index), ("i", len(takes)),
                             ("s", paths[index] if index < len(paths) else ""),
                             ("i", int(seed) if isinstance(seed, int) and 0 <= seed < 2**31 else -1)))
    text = str(view.text or "").replace("\x00", "")  # OSC strings cannot hold NUL
    chunks = osc.utf8_chunks(text, TEXT_CHUNK_BYTES) if text else []
    for index, chunk in enumerate(chunks):
        out.append(reply("/m2u/text", ("s", job), ("i", index), ("i", len(chunks)), ("s", chunk)))
    path = paths[0] if paths else ""
    out.append(reply("/m2u/done", ("s", job), ("s", path),
                     ("f", float(view.duration or 0.0) if path else 0.0),
                     ("i", int(view.sample_rate or 0) if path else 0)))
    return out


def midi_outcome(view: JobView, path: str, notes: list) -> list[Reply]:
    """A finished transcription: its notes as JSON text in chunks, `/m2u/notes s:job i:index i:count
    s:chunk` (the chunks joined are ``[[start_s, end_s, pitch, velocity, channel], ...]``; melody on
    channel 0, chords on 1), then `/m2u/done s:job s:path.mid f:seconds i:0`."""
    text = json.dumps(notes, separators=(",", ":"))
    chunks = osc.utf8_chunks(text, TEXT_CHUNK_BYTES)
    out = [reply("/m2u/notes", ("s", view.job), ("i", i), ("i", len(chunks)), ("s", chunk))
           for i, chunk in enumerate(chunks)]
    out.append(reply("/m2u/done", ("s", view.job), ("s", path), ("f", float(view.duration or 0.0)), ("i", 0)))
    return out


def take_list(view: JobView) -> list[dict[str, Any]]:
    """The job's takes; a job without a `takes` list has one take, its audio_path (if any)."""
    takes = [t for t in view.takes if isinstance(t, dict)] if view.takes else []
    if not takes and view.audio_path:
        takes = [{"audio_path": view.audio_path, "seed": view.seed}]
    return takes


def job_entry(record: dict[str, Any], index: int, count: int) -> Reply:
    """One line of a job listing: `/m2u/job index count job kind state prompt seconds created`
    (`created` as local "YYYY-MM-DD HH:MM": a float32 cannot hold Unix seconds to the minute)."""
    params = record.get("params") if isinstance(record.get("params"), dict) else {}
    prompt = str(params.get("prompt") or "").replace("\x00", "")
    if len(prompt.encode("utf-8")) > MAX_PROMPT_BYTES:
        prompt = osc.utf8_chunks(prompt, MAX_PROMPT_BYTES - 3)[0] + "..."
    return reply("/m2u/job", ("i", index), ("i", count), ("s", str(record.get("job", ""))),
                 ("s", str(record.get("kind", ""))), ("s", str(record.get("state", ""))), ("s", prompt),
                 ("f", float(record.get("duration") or 0.0)), ("s", _local_time(record.get("created"))))


def jobs_end(count: int) -> Reply:
    return reply("/m2u/jobs", ("i", count))


def _local_time(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _typed(value: Any) -> Arg:
    if isinstance(value, bool):
        return ("i", int(value))
    if isinstance(value, int):
        return ("i", value) if -2**31 <= value < 2**31 else ("f", float(value))
    if isinstance(value, float):
        return ("f", value)
    return ("s", str(value))
