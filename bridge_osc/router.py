"""Request routing: parsed OSC requests -> server requests, server replies and events -> OSC replies.

Two tables say who handles what: `REQUESTS` (OSC request op -> handler) and `REPLIES` (what a
pending server request was for -> handler of its direct reply). Job events (progress, text, done...)
go through the job's `JobView` (bridge_osc/jobview.py); what the client then receives is formatted
by bridge_osc/replies.py. The UDP/ZeroMQ loop, server health and sending live in bridge_osc/bridge.py;
the router reaches them only through the `Link` it is given.

Results for DAWs: a request with `results_dir` has its result fetched as bytes (`result`, `want:
bytes`, one file per take, in chunks from `offset` 0: the first chunk comes to the loop, the rest are
fetched by the client's own chunk loop as they are written, so the bridge never holds a whole file)
and written into that folder on this machine (bridge_osc/results.py); the
client's `/m2u/done` and `/m2u/take` then name the local files, never the server's jobs folder.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from bridge_osc import replies
from server.jobview import JobView
from bridge_osc.replies import Reply
from bridge_osc.requests import SETTINGS, ArgError, InputUnreadable, Request, apply_upload, server_params, upload_inputs
from bridge_osc.uploads import UploadError, Uploads
from bridge_osc.results import ResultsRefused, file_name, results_folder, write_result
from server.client import Message, RequestRefused, ServerUnavailable

log = logging.getLogger("m2ugen.bridge_osc")

MAX_CLIENTS = 64
MAX_JOBS = 1000
MAX_JOBS_PER_CLIENT = 100

Address = tuple[str, int]  # (host, port) an OSC client receives on


class Link(Protocol):
    """What the router needs from the loop (bridge_osc.bridge.Bridge)."""

    version: str
    server_up: bool | None
    ping_interval_s: float
    capture_dir: str
    welcome: dict[str, Any]

    def send(self, target: Address, messages: list[Reply]) -> None: ...

    def is_own(self, address: Address) -> bool: ...

    def server_send(self, op: str, frames: tuple = (), **fields: Any) -> str: ...

    def server_upload(self, path: str) -> dict[str, Any]: ...

    def server_result_chunks(self, job: str, take: int | None, first: Message | None = None) -> Iterator[bytes]: ...

    def server_endpoint_text(self) -> str: ...


@dataclass
class ClientState:
    """One OSC client = (sender host, reply port)."""

    jobs: list[str] = field(default_factory=list)  # newest last
    params: dict[str, Any] = field(default_factory=dict)  # from /m2u/set
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tracked:
    """A job this bridge follows for a client."""

    target: Address
    view: JobView
    prompt: str = ""
    results_dir: Path | None = None
    local_paths: list[str] | None = None  # where its takes were written here (None: not fetched yet)
    fetching: bool = False
    last_progress: tuple[float, str, float] = (-1.0, "", 0.0)  # (fraction, stage, monotonic time) sent


@dataclass
class Pending:
    """A server request waiting for its direct reply."""

    what: str  # a key of REPLIES
    target: Address | None
    sent: float
    request: Request | None = None
    job: str = ""
    take: int = 0
    results_dir: Path | None = None  # submit: the checked results folder of the request

    @property
    def job_bound(self) -> bool:
        """Errors for this request name its job (else the request had no job yet)."""
        return self.what in ("status", "cancel", "subscribe", "fetch", "record", "midi")


class Router:
    def __init__(self, link: Link, *, default_reply_port: int, progress_repeat_s: float,
                 default_results_dir: Path | None = None):
        self.link = link
        self.default_reply_port = default_reply_port
        self.progress_repeat_s = progress_repeat_s
        self.default_results_dir = default_results_dir
        self.hello_ports: collections.OrderedDict[Address, int] = collections.OrderedDict()  # sender -> its port
        self.clients: collections.OrderedDict[Address, ClientState] = collections.OrderedDict()
        self.jobs: collections.OrderedDict[str, Tracked] = collections.OrderedDict()
        self.pending: dict[str, Pending] = {}
        self.uploads = Uploads()  # /m2u/upload pieces (options too big for one datagram)

    # ------------------------------------------------------------------ helpers
    def reply_address(self, source: Address, reply_port: int | None) -> Address:
        """Where a request from ``source`` is answered: its own reply_port, else the port that sender
        declared with /m2u/hello (a sender's hello never moves another sender's replies), else the default."""
        host = source[0]
        port = reply_port if reply_port is not None else self.hello_ports.get(source, self.default_reply_port)
        return (host, source[1]) if port == 0 else (host, port)

    def adopt(self, previous: "Router") -> None:
        """A restarted bridge keeps what its clients declared: reply ports, settings, followed jobs."""
        self.hello_ports.update(previous.hello_ports)
        self.clients.update(previous.clients)
        self.jobs.update(previous.jobs)

    def _declare_port(self, request: Request, source: Address) -> bool:
        """/m2u/hello: remember the sender's reply port (False and an error when it names the bridge itself)."""
        if request.reply_port is None:
            self.hello_ports.pop(source, None)
            return True
        if self.link.is_own((source[0], request.reply_port)):
            self.error((source[0], source[1]), "", "bad_args", f"/m2u/hello: reply_port {request.reply_port} is "
                                                               f"this bridge's own port; name the port you receive on")
            return False
        self.hello_ports.pop(source, None)
        self.hello_ports[source] = request.reply_port
        while len(self.hello_ports) > MAX_CLIENTS:
            self.hello_ports.popitem(last=False)
        return True

    def client_state(self, target: Address) -> ClientState:
        state = self.clients.pop(target, None) or ClientState()
        self.clients[target] = state  # most recent last
        while len(self.clients) > MAX_CLIENTS:
            self.clients.popitem(last=False)
        return state

    def send(self, target: Address | None, *messages: Reply) -> None:
        if target is not None:
            self.link.send(target, list(messages))

    def error(self, target: Address | None, job: str, code: str, message: str) -> None:
        if target is None:
            return
        if code not in ("bad_osc", "bad_args", "unknown_address"):
            log.info("error to %s:%d: job=%s %s: %s", target[0], target[1], job or "-", code, message)
        self.send(target, replies.error(job, code, message))

    def ask_server(self, what: str, target: Address | None, op: str, *, request: Request | None = None,
                   job: str = "", take: int = 0, results_dir: Path | None = None,
                   fields: dict[str, Any] | None = None) -> None:
        """Send `op` to the server; its direct reply goes to REPLIES[what] with this Pending."""
        req = self.link.server_send(op, **(fields or {}))
        self.pending[req] = Pending(what, target, time.monotonic(), request, job, take, results_dir)

    def _last_job(self, target: Address, client: ClientState) -> str | None:
        if client.jobs:
            return client.jobs[-1]
        self.error(target, "", "no_job", f"'last': this client ({target[0]}:{target[1]}) has no job yet")
        return None

    def _results_dir(self, target: Address, value: str | None) -> Path | None | bool:
        """The checked results folder of a request (None: none asked for); False after an error."""
        if value is None:
            return None
        try:
            if value == "user":
                if self.default_results_dir is None:
                    raise ResultsRefused("this bridge has no default results folder (--results-dir)")
                return results_folder(str(self.default_results_dir))
            return results_folder(value)
        except ResultsRefused as e:
            self.error(target, "", "bad_results_dir", str(e))
            return False

    # ------------------------------------------------------------------ OSC requests
    def handle_request(self, request: Request, source: Address) -> None:
        if request.op == "hello" and not self._declare_port(request, source):
            return
        target = self.reply_address(source, None if request.op == "hello" else request.reply_port)
        client = self.client_state(target)
        log.log(logging.DEBUG if request.op == "ping" else logging.INFO,
                "%s:%d -> /m2u/%s %s", target[0], target[1], request.op, describe(request))
        handler = REQUESTS[request.op]
        if request.op not in ("ping", "hello", "set", "upload") and self.link.server_up is False:
            job = request.job if request.op in ("cancel", "status", "result") else ""
            self.error(target, job, "server_unavailable",
                       f"the server at {self.link.server_endpoint_text()} is not answering; the bridge retries every "
                       f"{self.link.ping_interval_s:g} s and sends /m2u/server up when it is back")
            return
        handler(self, request, target, client)

    def _on_ping(self, request: Request, target: Address, client: ClientState) -> None:
        self.send(target, replies.pong(self.link.version, self.link.server_up is not False))

    def _on_hello(self, request: Request, target: Address, client: ClientState) -> None:
        if self.link.server_up is False:
            self.send_welcome(target)
        else:  # fresh model details from the server; /m2u/welcome goes out with its reply
            self.ask_server("hello", target, "hello", request=request, fields={"client": f"bridge_osc {self.link.version}"})

    def send_welcome(self, target: Address) -> None:
        self.send(target, replies.welcome(self.link.version, self.link.server_up is not False, self.link.welcome,
                                          target[1], self.link.capture_dir))

    def _on_set(self, request: Request, target: Address, client: ClientState) -> None:
        where = client.params if SETTINGS[request.name][0] == "params" else client.context
        if request.value is None:
            where.pop(request.name, None)
        else:
            where[request.name] = request.value
        self.send(target, replies.set_echo(request.name, request.value))

    def _on_job_op(self, request: Request, target: Address, client: ClientState) -> None:
        """cancel / status of a job id or 'last'."""
        job = request.job if request.job != "last" else self._last_job(target, client)
        if job is not None:
            self.ask_server(request.op, target, request.op, request=request, job=job, fields={"job": job})

    def _on_result(self, request: Request, target: Address, client: ClientState) -> None:
        """/m2u/result: the outcome of a finished job again, fetched into a results folder if named."""
        job = request.job if request.job != "last" else self._last_job(target, client)
        if job is None:
            return
        folder = self._results_dir(target, request.results_dir)
        if folder is False:
            return
        tracked = self.jobs.get(job)
        if tracked is None or tracked.target != target:
            tracked = Tracked(target, JobView(job), results_dir=folder)
            self._track(job, tracked)
        elif folder is not None and folder != tracked.results_dir:
            tracked.results_dir, tracked.local_paths = folder, None
        self.ask_server("record", target, "result", request=request, job=job, fields={"job": job})

    def _on_jobs(self, request: Request, target: Address, client: ClientState) -> None:
        self.ask_server("jobs", target, "jobs", request=request, fields={"limit": request.limit})

    def _on_upload(self, request: Request, target: Address, client: ClientState) -> None:
        index, count, text = request.chunk
        try:
            size = self.uploads.add(target, request.upload, index, count, text)
        except UploadError as e:
            self.error(target, "", e.code, e.message)
            return
        if size is not None:
            self.send(target, replies.uploaded(request.upload, size))

    def _on_submit(self, request: Request, target: Address, client: ClientState) -> None:
        """generate / edit / ask / submit: resolve the audio reference, then submit."""
        if request.upload:  # options sent before in pieces (/m2u/upload)
            try:
                apply_upload(request, self.uploads.take(target, request.upload))
            except (UploadError, ArgError) as e:
                self.error(target, request.tag, e.code, e.message)
                return
        folder = self._results_dir(target, request.results_dir)
        if folder is False:
            return
        if request.kind == "finetune":  # /m2u/learn, or /m2u/submit finetune … clip PATH …
            self._submit(target, client, request, {"audio_set": [{"path": p} for p in request.clips]}, folder)
            return
        if request.kind == "generate":
            inputs: dict[str, Any] = {}
            if request.image:
                inputs["image"] = {"path": request.image}
            if request.video:
                inputs["video"] = {"path": request.video}
            self._submit(target, client, request, inputs, folder)
            return
        audio = request.audio
        if audio == "last":
            audio = self._last_job(target, client)
            if audio is None:
                return
        if looks_like_path(audio):
            self._submit(target, client, request, {"audio": audio_input(request, audio)}, folder)
            return
        known = self.jobs.get(audio)
        if known is not None and known.view.final:
            if not known.view.audio_path:
                self.error(target, "", "not_ready", f"job {audio} ended {known.view.state} without an audio result")
                return
            # the server's own result: named by its job, the server reads it itself (also when elsewhere)
            self._submit(target, client, request, {"audio": audio_input(request, job=audio)}, folder)
            return
        if known is not None:
            self.error(target, "", "not_ready", f"job {audio} has not finished yet ({known.view.state})")
            return
        # a job id from elsewhere: ask the server for its result
        self.ask_server("resolve", target, "status", request=request, job=audio, results_dir=folder,
                        fields={"job": audio})

    def _submit(self, target: Address, client: ClientState, request: Request, inputs: dict[str, Any],
                folder: Path | None) -> None:
        """Submit; local input files are read here and uploaded (requests.upload_inputs)."""
        if request.midi:  # a MIDI sketch: the melody/harmony the generation follows (mode melody)
            inputs = {**inputs, "midi": {"path": request.midi}}
        elif request.midi_notes:  # the notes of a MIDI clip, read by the device
            inputs = {**inputs, "midi": {"notes": request.midi_notes}}
        params = server_params(request, client.params, client.context)
        try:
            inputs = upload_inputs(inputs, self.link.server_upload)
        except InputUnreadable as e:
            self.error(target, "", e.code, str(e))
            return
        req = self.link.server_send("submit", kind=request.kind, params=params, inputs=inputs)
        self.pending[req] = Pending("submit", target, time.monotonic(), request, results_dir=folder)

    # ------------------------------------------------------------------ server replies
    def handle_reply(self, pending: Pending, message: Message) -> None:
        header = message.header
        if header.get("op") == "error":
            self._reply_error(pending, header)
            return
        handler = REPLIES.get(pending.what)
        expected = EXPECTED_REPLY.get(pending.what)
        if handler is None or header.get("op") != expected:
            log.warning("unexpected reply %s to %s", header.get("op"), pending.what)
            return
        handler(self, pending, message)

    def _reply_error(self, pending: Pending, header: dict[str, Any]) -> None:
        code, text = str(header.get("code", "internal")), str(header.get("message", ""))
        if pending.what == "subscribe" and code == "not_found":
            text = f"the server no longer knows job {pending.job} (it restarted without it): {text}"
        if pending.what == "resolve":
            text = f"audio job {pending.job}: {text}"
        if pending.what in ("fetch", "midi"):
            text = f"could not fetch the result of job {pending.job}: {text}"
            tracked = self.jobs.get(pending.job)
            if tracked is not None:
                tracked.fetching, tracked.local_paths = False, None  # fetched again from the first file
        job = str(header.get("job") or (pending.job if pending.job_bound else ""))
        if not job and pending.what == "submit" and pending.request is not None:
            job = pending.request.tag  # a refused request is named by its tag, when it has one
        self.error(pending.target, job, code, text)
        if pending.what == "subscribe" and pending.job in self.jobs:
            view = self.jobs[pending.job].view
            view.state, view.error = "failed", {"code": code, "message": text}

    def _reply_welcome(self, pending: Pending, message: Message) -> None:
        header = message.header
        old = self.link.welcome
        if old.get("server_version") != header.get("server_version") or old.get("model") != header.get("model"):
            model = header.get("model") or {}
            log.info("server %s: version %s, model %s%s", self.link.server_endpoint_text(), header.get("server_version"),
                     model.get("name"), " (tiny, random weights)" if model.get("tiny") else "")
        self.link.welcome = header
        if pending.target is not None:
            self.send_welcome(pending.target)

    def _reply_accepted(self, pending: Pending, message: Message) -> None:
        header = message.header
        job = str(header["job"])
        request = pending.request
        target = pending.target
        view = JobView(job, kind=request.kind if request else "")
        view.apply(header)
        self._track(job, Tracked(target, view, prompt=request.prompt if request else "",
                                 results_dir=pending.results_dir))
        client = self.client_state(target)
        client.jobs.append(job)
        del client.jobs[:-MAX_JOBS_PER_CLIENT]
        self.send(target, replies.accepted(job, view.queue_position, request.tag if request else ""))

    def _reply_status(self, pending: Pending, message: Message) -> None:
        self._outcome_from_record(pending.target, pending.job, message.header, with_status=True)

    def _reply_record(self, pending: Pending, message: Message) -> None:
        """`result` (want path) for /m2u/result: the record, then the outcome (fetched if asked)."""
        self._outcome_from_record(pending.target, pending.job, message.header, with_status=False)

    def _reply_subscribed(self, pending: Pending, message: Message) -> None:
        tracked = self.jobs.get(pending.job)
        if tracked is not None:
            tracked.view.apply(message.header)
            if tracked.view.final:
                self._finish(tracked)

    def _reply_cancelling(self, pending: Pending, message: Message) -> None:
        return  # the `cancelled` event follows

    def _reply_resolve(self, pending: Pending, message: Message) -> None:
        state, path = message.header.get("state"), message.header.get("audio_path")
        if state == "done" and path:
            request = pending.request
            self._submit(pending.target, self.client_state(pending.target), request,
                         {"audio": audio_input(request, job=pending.job)}, pending.results_dir)
        else:
            self.error(pending.target, "", "not_ready", f"job {pending.job} is {state} and has no audio result yet")

    def _reply_jobs(self, pending: Pending, message: Message) -> None:
        records = [r for r in message.header.get("jobs") or [] if isinstance(r, dict)]
        lines = [replies.job_entry(r, i, len(records)) for i, r in enumerate(records)]
        self.send(pending.target, *lines, replies.jobs_end(len(records)))

    def _reply_fetched(self, pending: Pending, message: Message) -> None:
        """Bytes of one take: write them into the results folder, then the next take or the outcome."""
        tracked = self.jobs.get(pending.job)
        if tracked is None or tracked.results_dir is None:
            return
        header, take = message.header, pending.take
        takes = replies.take_list(tracked.view)
        paths = tracked.local_paths if tracked.local_paths is not None else []
        data = self._result_file(pending.job, take + 1 if take else None, message)
        if take > 0 and header.get("take") != take + 1:  # the protocol counts takes from 1
            data = None  # a server that does not know `take` sends take 0 again: never file it as another take
        if data is None:
            if take == 0:
                self._fetch_error(tracked, "not_found", f"the server sent no audio for job {pending.job}")
                return
            paths.append("")
            log.warning("job %s: take %d could not be fetched (the server sent no bytes for it)", pending.job, take)
        else:
            try:
                words = (takes[take].get("stem") if take < len(takes) else None) or tracked.prompt  # a stems job
                written = write_result(tracked.results_dir, file_name(str(words), pending.job, take), *data)
            except ResultsRefused as e:
                self._fetch_error(tracked, "bad_results_dir", str(e))
                return
            except OSError as e:
                self._fetch_error(tracked, "write_failed",
                                  f"could not write the result of job {pending.job} into {tracked.results_dir}: "
                                  f"{e.strerror or e}; fetch it again with /m2u/result {pending.job}")
                return
            except (RequestRefused, ServerUnavailable) as e:
                self._fetch_error(tracked, *_fetch_failed(pending.job, e))
                return
            paths.append(str(written))
        tracked.local_paths = paths
        if len(paths) < max(1, len(takes)):
            self._fetch_take(tracked, len(paths))
            return
        tracked.fetching = False
        log.info("job %s: %d file(s) written to %s", pending.job, len(paths), tracked.results_dir)
        self.send(tracked.target, *replies.outcome(tracked.view, tracked.local_paths))

    def _fetch_error(self, tracked: Tracked, code: str, text: str) -> None:
        """A result fetch failed: said to the client; the next /m2u/result fetches every file again."""
        tracked.fetching, tracked.local_paths = False, None
        self.error(tracked.target, tracked.view.job, code, text)

    # ------------------------------------------------------------------ job events
    def handle_event(self, message: Message) -> None:
        header = message.header
        job = header.get("job")
        tracked = self.jobs.get(job) if isinstance(job, str) else None
        if tracked is None:
            log.debug("ignored server message %s for job %s", header.get("op"), job)
            return
        op = header.get("op")
        was_final = tracked.view.final
        if not tracked.view.apply(header):
            return
        if op == "queued":
            self.send(tracked.target, replies.queued(job, tracked.view.queue_position))
        elif op in ("progress", "text"):
            self._send_progress(tracked)
        elif tracked.view.final and not was_final:
            self._finish(tracked)

    def _send_progress(self, tracked: Tracked) -> None:
        """/m2u/progress, except a repeat of the last one sent within `progress_repeat_s` (the
        server's per-token progress and text events would otherwise double every message)."""
        view = tracked.view
        now = time.monotonic()
        fraction, stage, sent = tracked.last_progress
        if (fraction, stage) == (view.fraction, view.stage) and now - sent < self.progress_repeat_s:
            return
        tracked.last_progress = (view.fraction, view.stage, now)
        self.send(tracked.target, replies.progress(view.job, view.fraction, view.stage))

    def _finish(self, tracked: Tracked, target: Address | None = None) -> None:
        """A job ended: its outcome to the client, after fetching the files when it has a results folder."""
        target = target or tracked.target
        view = tracked.view
        if view.state == "done" and view.midi_path:  # a transcription: its notes (and its .mid) first
            if not tracked.fetching:
                tracked.fetching = True
                fetch = {"want": "bytes", "offset": 0} if tracked.results_dir is not None else {"want": "path"}
                self.ask_server("midi", target, "result", job=view.job, fields={"job": view.job, **fetch})
            return
        if view.state == "done" and tracked.results_dir is not None and replies.take_list(view):
            if tracked.local_paths is not None:
                self.send(target, *replies.outcome(view, tracked.local_paths))
            elif not tracked.fetching:
                tracked.fetching = True
                self._fetch_take(tracked, 0)
            return
        if view.state == "done":
            log.info("job %s done -> %s:%d %s", view.job, target[0], target[1], view.audio_path or "(text only)")
        self.send(target, *replies.outcome(view))

    def _reply_midi(self, pending: Pending, message: Message) -> None:
        """`result` of a transcription: the notes from its sidecar to the client, the .mid written into
        the results folder when there is one (else the server's path)."""
        tracked = self.jobs.get(pending.job)
        if tracked is None:
            return
        tracked.fetching = False
        header = message.header
        sidecar = header.get("sidecar") if isinstance(header.get("sidecar"), dict) else {}
        notes = [n for n in sidecar.get("notes") or [] if isinstance(n, list)]
        path = str(header.get("midi_path") or "")
        data = self._result_file(pending.job, None, message, "midi")
        if tracked.results_dir is not None and data is not None:
            try:
                path = str(write_result(tracked.results_dir,
                                        file_name(tracked.prompt or "transcription", pending.job, ext=".mid"), *data))
            except (ResultsRefused, OSError) as e:
                self.error(tracked.target, pending.job, "bad_results_dir" if isinstance(e, ResultsRefused)
                           else "write_failed", f"could not write the MIDI file of job {pending.job}: {e}")
                return
            except (RequestRefused, ServerUnavailable) as e:
                self.error(tracked.target, pending.job, *_fetch_failed(pending.job, e))
                return
        log.info("job %s: %d transcribed notes -> %s", pending.job, len(notes), path)
        self.send(pending.target or tracked.target, *replies.midi_outcome(tracked.view, path, notes))

    def _result_file(self, job: str, take: int | None, message: Message, what: str = "audio"):
        """(chunks, size) of a result file whose first chunk is in `message` (the reply to `result` with
        `offset` 0): `chunks()` yields that chunk, then fetches the rest one by one as they are written
        (`Client.result_chunks`); called again, it fetches from offset 0. None: the server sent no bytes."""
        ref = message.header.get(what)
        if not (isinstance(ref, dict) and ref.get("frame") == 1 and message.frames and isinstance(ref.get("size"), int)):
            return None
        first = [message]
        return (lambda: self.link.server_result_chunks(job, take, first.pop() if first else None)), ref["size"]

    def _fetch_take(self, tracked: Tracked, take: int) -> None:
        if take == 0:
            tracked.local_paths = []
            fields: dict[str, Any] = {}
        else:
            fields = {"take": take + 1}  # index 0.. here, take 1.. in the protocol (docs/protocol.md §2)
        self.ask_server("fetch", tracked.target, "result", job=tracked.view.job, take=take,
                        fields={"job": tracked.view.job, "want": "bytes", "offset": 0, **fields})

    def _outcome_from_record(self, target: Address, job: str, record: dict[str, Any], with_status: bool) -> None:
        tracked = self.jobs.get(job)
        if tracked is not None and tracked.target == target:
            tracked.view.apply(record)
            view = tracked.view
        else:
            tracked = None
            view = JobView(job)
            view.apply(record)
        if with_status:
            self.send(target, replies.status(view))
        if not view.final:
            return
        if tracked is not None:
            if not tracked.prompt:
                params = record.get("params") if isinstance(record.get("params"), dict) else {}
                tracked.prompt = str(params.get("prompt") or "")
            self._finish(tracked, target)
        else:
            self.send(target, *replies.outcome(view))

    def _track(self, job: str, tracked: Tracked) -> None:
        self.jobs[job] = tracked
        while len(self.jobs) > MAX_JOBS:
            self.jobs.pop(next(iter(self.jobs)))

    # ------------------------------------------------------------------ server health
    def expire_pending(self, now: float, timeout_s: float) -> None:
        """A server that answers pings but not a request (a bug) must not leave the client waiting."""
        for req, pending in list(self.pending.items()):
            if now - pending.sent > timeout_s:
                del self.pending[req]
                log.warning("no reply to %s (%s) within %g s", pending.what, req, timeout_s)
                self._forget_fetch(pending)
                self.error(pending.target, pending.job if pending.job_bound else "", "server_unavailable",
                           f"no reply from the server within {timeout_s:g} s")

    def server_lost(self, why: str) -> None:
        for pending in list(self.pending.values()):
            self._forget_fetch(pending)
            if pending.what == "hello" and pending.target is not None:
                self.send_welcome(pending.target)  # says "down"
            else:
                self.error(pending.target, pending.job if pending.job_bound else "", "server_unavailable",
                           f"the server went away before answering: {why}")
        self.pending.clear()

    def _forget_fetch(self, pending: Pending) -> None:
        if pending.what in ("fetch", "midi") and pending.job in self.jobs:
            self.jobs[pending.job].fetching = False
            self.jobs[pending.job].local_paths = None

    def resubscribe(self) -> None:
        for job, tracked in self.jobs.items():
            if not tracked.view.final:
                self.ask_server("subscribe", tracked.target, "subscribe", job=job, fields={"job": job})

    def broadcast(self, *messages: Reply) -> None:
        for target in list(self.clients):
            self.send(target, *messages)


Handler = Callable[[Router, Request, Address, ClientState], None]
REQUESTS: dict[str, Handler] = {
    "ping": Router._on_ping,
    "hello": Router._on_hello,
    "set": Router._on_set,
    "generate": Router._on_submit,
    "edit": Router._on_submit,
    "ask": Router._on_submit,
    "submit": Router._on_submit,
    "learn": Router._on_submit,
    "upload": Router._on_upload,
    "cancel": Router._on_job_op,
    "status": Router._on_job_op,
    "result": Router._on_result,
    "jobs": Router._on_jobs,
}
# pending.what -> (the server's reply op, its handler)
_REPLY_TABLE: dict[str, tuple[str, Callable[[Router, Pending, Message], None]]] = {
    "hello": ("welcome", Router._reply_welcome),
    "submit": ("accepted", Router._reply_accepted),
    "status": ("job", Router._reply_status),
    "cancel": ("cancelling", Router._reply_cancelling),
    "subscribe": ("subscribed", Router._reply_subscribed),
    "resolve": ("job", Router._reply_resolve),
    "record": ("result", Router._reply_record),
    "fetch": ("result", Router._reply_fetched),
    "midi": ("result", Router._reply_midi),
    "jobs": ("jobs", Router._reply_jobs),
}
REPLIES = {what: handler for what, (_, handler) in _REPLY_TABLE.items()}
EXPECTED_REPLY = {what: op for what, (op, _) in _REPLY_TABLE.items()}


def audio_input(request: Request, path: str | None = None, job: str | None = None) -> dict[str, Any]:
    """``inputs.audio``: a local file (uploaded by `_submit`) or a finished job's result on the server."""
    audio: dict[str, Any] = {"path": path} if job is None else {"job": job}
    if request.start is not None:
        audio["start"] = request.start
    if request.end is not None:
        audio["end"] = request.end
    return audio


def looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "~", ".")) or "/" in ref or "\\" in ref or (len(ref) > 2 and ref[1] == ":")


def describe(request: Request) -> str:
    parts = [f"kind={request.kind}"] if request.op == "submit" else []
    for name in ("prompt", "audio", "job", "name", "results_dir"):
        value = getattr(request, name)
        if value:
            parts.append(f"{name}={value[:60]!r}")
    for name in ("start", "end", "duration", "image", "video", "value"):
        value = getattr(request, name)
        if value is not None:
            parts.append(f"{name}={value!r}")
    if request.params or request.context:
        parts.append(f"options={ {**request.params, **request.context} !r}")
    return " ".join(parts)


def _fetch_failed(job: str, e: RequestRefused | ServerUnavailable) -> tuple[str, str]:
    """(code, text) when fetching the rest of a result failed midway (nothing was written)."""
    if isinstance(e, RequestRefused):
        code, why = str(e.header.get("code") or "internal"), str(e.header.get("message") or "")
    else:
        code, why = "server_unavailable", str(e)
    return code, f"could not fetch the result of job {job}: {why}; fetch it again with /m2u/result {job}"
