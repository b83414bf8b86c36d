"""The OSC bridge: one loop over the UDP socket and the server Client's DEALER socket.

    handle = start_in_thread("tcp://127.0.0.1:5557", port=0)   # handle.port = the bound UDP port
    ...
    handle.stop()

Everything runs in the thread that calls `Bridge.serve()` (the zmq socket is used by that thread
only). Requests become server requests with a `req` id; the direct replies are matched through
`self.pending`, job events through `self.jobs` (job id -> the OSC client that submitted it).
Server health: a `ping` every `ping_interval_s`; no answer within `ping_timeout_s` -> the server is
`down`: pending requests fail with `server_unavailable`, the Client is replaced (queued requests
are dropped), new requests are refused until a ping is answered again; then the bridge re-subscribes
to its unfinished jobs and tells its clients `/m2u/server up`.
"""

from __future__ import annotations

import collections
import importlib.metadata
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from bridge_osc import osc
from bridge_osc.requests import SETTINGS, ArgError, Request, parse
from server.client import Client, Message
from server.protocol import FINAL_STATES, is_loopback

log = logging.getLogger("m2ugen.bridge_osc")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9100
DEFAULT_REPLY_PORT = 9101
TEXT_CHUNK_BYTES = 1000
MAX_ERROR_BYTES = 1000
MAX_CLIENTS = 64
MAX_JOBS = 1000

Address = tuple[str, int]  # (host, port) an OSC client receives on


def bridge_version() -> str:
    try:
        return importlib.metadata.version("m2ugen")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class ClientState:
    """One OSC client = (sender host, reply port)."""

    jobs: list[str] = field(default_factory=list)  # newest last
    params: dict[str, Any] = field(default_factory=dict)  # from /m2u/set
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobState:
    target: Address
    kind: str
    state: str = "queued"
    fraction: float = 0.0
    stage: str = ""
    audio_path: str = ""
    last_progress: tuple[float, str, float] = (-1.0, "", 0.0)  # (fraction, stage, monotonic time) sent


@dataclass
class Pending:
    """A server request waiting for its direct reply."""

    what: str  # submit | status | cancel | resolve | ping | hello | subscribe
    target: Address | None
    sent: float
    request: Request | None = None
    job: str = ""


class Bridge:
    def __init__(
        self,
        server_endpoint: str | None = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        reply_port: int = DEFAULT_REPLY_PORT,
        allow_remote: bool = False,
        ping_interval_s: float = 1.0,
        ping_timeout_s: float = 5.0,
        request_timeout_s: float = 30.0,
        progress_repeat_s: float = 0.25,
        client_factory: Callable[[str | None], Client] | None = None,
    ):
        if not is_loopback(host) and not allow_remote:
            raise ValueError(
                f"refusing to bind OSC on {host!r}: OSC has no authentication; pass allow_remote=True "
                f"(--allow-remote) to listen beyond loopback"
            )
        if not 0 <= reply_port <= 65535:
            raise ValueError(f"reply_port must be 0..65535, got {reply_port}")
        self.server_endpoint = server_endpoint
        self.default_reply_port = reply_port
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.request_timeout_s = request_timeout_s
        self.progress_repeat_s = progress_repeat_s
        self._client_factory = client_factory or (lambda endpoint: Client(endpoint))
        self.version = bridge_version()
        try:  # a malformed endpoint fails here, in the caller's thread, not later in serve()
            self._client_factory(server_endpoint).close()
        except zmq.ZMQError as e:
            raise ValueError(f"bad server endpoint {server_endpoint!r}: {e}") from None

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()[:2]
        # stop() writes one byte here to wake the poll
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()

        self.client: Client | None = None
        self.server_up: bool | None = None  # None until the first ping is answered or times out
        self.welcome: dict[str, Any] = {}
        self.hello_ports: dict[str, int] = {}
        self.clients: collections.OrderedDict[Address, ClientState] = collections.OrderedDict()
        self.jobs: collections.OrderedDict[str, JobState] = collections.OrderedDict()
        self.pending: dict[str, Pending] = {}
        self._ping_req: str | None = None
        self._ping_sent = 0.0
        self._next_ping = 0.0
        self._poller: zmq.Poller | None = None

    # ------------------------------------------------------------------ loop
    def serve(self) -> None:
        """Run until stop(). Opens the server Client in this thread."""
        # Plain sockets are registered by file number: zmq.Poller reports them by number.
        self._poller = zmq.Poller()
        self._poller.register(self.sock.fileno(), zmq.POLLIN)
        self._poller.register(self._wake_r.fileno(), zmq.POLLIN)
        self._open_client()
        log.info("OSC bridge on udp %s:%d -> server %s (replies default to port %d)",
                 self.host, self.port, self.client.endpoint, self.default_reply_port)
        try:
            while not self._stop.is_set():
                timeout_ms = max(0, int((self._next_deadline() - time.monotonic()) * 1000)) + 1
                events = dict(self._poller.poll(timeout_ms))
                if self.sock.fileno() in events:
                    self._drain_udp()
                if self.client is not None and self.client.socket in events:
                    self._drain_server()
                self._tick(time.monotonic())
        finally:
            self._close_client()
            self.close()
            log.info("OSC bridge stopped")

    def close(self) -> None:
        """Release the UDP port (serve() does this when it ends)."""
        self.sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _next_deadline(self) -> float:
        if self._ping_req is not None:
            return self._ping_sent + self.ping_timeout_s
        return self._next_ping

    def _open_client(self) -> None:
        self.client = self._client_factory(self.server_endpoint)
        self._poller.register(self.client.socket, zmq.POLLIN)
        self._ping_req = None
        self._next_ping = time.monotonic()

    def _close_client(self) -> None:
        if self.client is not None:
            self._poller.unregister(self.client.socket)
            self.client.close()
            self.client = None

    # ------------------------------------------------------------------ server health
    def _tick(self, now: float) -> None:
        if self._ping_req is not None and now - self._ping_sent >= self.ping_timeout_s:
            self._server_lost(f"no answer to ping from {self.client.endpoint} within {self.ping_timeout_s:g} s")
        if self._ping_req is None and now >= self._next_ping:
            self._ping_req = self.client.send("ping")
            self._ping_sent = now
            self._next_ping = now + self.ping_interval_s
            self._expire_pending(now)

    def _expire_pending(self, now: float) -> None:
        """A server that answers pings but not a request (a bug) must not leave the client waiting."""
        for req, pending in list(self.pending.items()):
            if now - pending.sent > self.request_timeout_s:
                del self.pending[req]
                log.warning("no reply to %s (%s) within %g s", pending.what, req, self.request_timeout_s)
                if pending.target is not None:
                    self._error(pending.target, pending.job if pending.what in ("status", "cancel", "subscribe") else "",
                                "server_unavailable", f"no reply from the server within {self.request_timeout_s:g} s")

    def _server_lost(self, why: str) -> None:
        was_up = self.server_up
        self.server_up = False
        for req, pending in list(self.pending.items()):
            if pending.what == "hello" and pending.target is not None:
                self._send_welcome(pending.target)  # says "down"
            elif pending.target is not None:
                job = pending.job if pending.what in ("status", "cancel", "subscribe") else ""
                self._error(pending.target, job, "server_unavailable",
                            f"the server went away before answering: {why}")
        self.pending.clear()
        # A fresh socket: requests queued for the dead peer are dropped, not delivered later.
        self._close_client()
        self._open_client()
        self._next_ping = time.monotonic() + self.ping_interval_s
        if was_up is not False:
            log.warning("server unavailable: %s", why)
            self._broadcast("/m2u/server", ("s", "down"), ("s", why))

    def _server_back(self) -> None:
        log.info("server %s is up", self.client.endpoint)
        was_down = self.server_up is False
        self.server_up = True
        req = self.client.send("hello", client=f"bridge_osc {self.version}")
        self.pending[req] = Pending("hello", None, time.monotonic())
        if was_down:
            for job, state in self.jobs.items():
                if state.state not in FINAL_STATES:
                    req = self.client.send("subscribe", job=job)
                    self.pending[req] = Pending("subscribe", state.target, time.monotonic(), job=job)
            self._broadcast("/m2u/server", ("s", "up"), ("s", f"server {self.client.endpoint} is back"))

    # ------------------------------------------------------------------ OSC in
    def _drain_udp(self) -> None:
        while True:
            try:
                dgram, source = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionError as e:
                # Windows (and connected sockets elsewhere) report an ICMP "port unreachable" for an
                # earlier reply on the next recvfrom; the datagrams behind it are still there.
                log.debug("recvfrom: %s (an earlier reply found no listener)", e)
                continue
            except OSError as e:
                log.warning("recvfrom: %s", e)
                return
            self.handle_datagram(dgram, source[:2])

    def handle_datagram(self, dgram: bytes, source: Address) -> None:
        host = source[0]
        try:
            messages = osc.decode(dgram)
        except osc.OscDecodeError as e:
            log.warning("from %s:%d: bad_osc: %s", host, source[1], e)
            self._error(self._reply_address(source, None), "", "bad_osc", str(e))
            return
        for message in messages:
            try:
                request = parse(message)
            except ArgError as e:
                log.warning("from %s:%d: %s: %s", host, source[1], e.code, e.message)
                self._error(self._reply_address(source, None), "", e.code, e.message)
                continue
            try:
                self._handle_request(request, source)
            except Exception as e:  # a bridge bug must not stop the bridge
                log.exception("request %s from %s failed", request.op, source)
                self._error(self._reply_address(source, request.reply_port), "", "internal", f"bridge error: {e}")

    def _reply_address(self, source: Address, reply_port: int | None) -> Address:
        host = source[0]
        port = reply_port if reply_port is not None else self.hello_ports.get(host, self.default_reply_port)
        return (host, source[1]) if port == 0 else (host, port)

    def _client_state(self, target: Address) -> ClientState:
        state = self.clients.pop(target, None) or ClientState()
        self.clients[target] = state  # most recent last
        while len(self.clients) > MAX_CLIENTS:
            self.clients.popitem(last=False)
        return state

    def _handle_request(self, request: Request, source: Address) -> None:
        if request.op == "hello":
            if request.reply_port is None:
                self.hello_ports.pop(source[0], None)
            else:
                self.hello_ports[source[0]] = request.reply_port
        target = self._reply_address(source, None if request.op == "hello" else request.reply_port)
        client = self._client_state(target)
        log.log(logging.DEBUG if request.op == "ping" else logging.INFO,
                "%s:%d -> /m2u/%s %s", target[0], target[1], request.op, _describe(request))

        if request.op == "ping":
            self._send(target, "/m2u/pong", ("s", self.version), ("s", self._server_word()))
            return
        if request.op == "hello":
            if self.server_up is False:
                self._send_welcome(target)
            else:  # fresh model details from the server; /m2u/welcome goes out with its reply
                req = self.client.send("hello", client=f"bridge_osc {self.version}")
                self.pending[req] = Pending("hello", target, time.monotonic(), request)
            return
        if request.op == "set":
            self._apply_setting(client, request, target)
            return

        if self.server_up is False:
            job = request.job if request.op in ("cancel", "status") else ""
            self._error(target, job, "server_unavailable",
                        f"the server at {self.client.endpoint} is not answering; the bridge retries every "
                        f"{self.ping_interval_s:g} s and sends /m2u/server up when it is back")
            return

        if request.op in ("cancel", "status"):
            job = request.job
            if job == "last":
                if not client.jobs:
                    self._error(target, "", "no_job", f"'last': this client ({target[0]}:{target[1]}) has no job yet")
                    return
                job = client.jobs[-1]
            req = self.client.send(request.op, job=job)
            self.pending[req] = Pending(request.op, target, time.monotonic(), request, job=job)
            return

        if request.op == "generate":
            inputs: dict[str, Any] = {}
            if request.image:
                inputs["image"] = {"path": request.image}
            if request.video:
                inputs["video"] = {"path": request.video}
            self._submit(target, client, request, inputs)
            return

        # edit / ask: resolve the audio reference first
        audio = request.audio
        if audio == "last":
            if not client.jobs:
                self._error(target, "", "no_job", f"'last': this client ({target[0]}:{target[1]}) has no job yet")
                return
            audio = client.jobs[-1]
        if _looks_like_path(audio):
            self._submit(target, client, request, {"audio": self._audio_input(request, audio)})
            return
        known = self.jobs.get(audio)
        if known is not None and known.state in FINAL_STATES:
            if not known.audio_path:
                self._error(target, "", "not_ready", f"job {audio} ended {known.state} without an audio result")
                return
            self._submit(target, client, request, {"audio": self._audio_input(request, known.audio_path)})
            return
        if known is not None:
            self._error(target, "", "not_ready", f"job {audio} has not finished yet ({known.state})")
            return
        req = self.client.send("status", job=audio)  # a job id from elsewhere: ask the server for its result
        self.pending[req] = Pending("resolve", target, time.monotonic(), request, job=audio)

    @staticmethod
    def _audio_input(request: Request, path: str) -> dict[str, Any]:
        audio: dict[str, Any] = {"path": path}
        if request.start is not None:
            audio["start"] = request.start
        if request.end is not None:
            audio["end"] = request.end
        return audio

    def _submit(self, target: Address, client: ClientState, request: Request, inputs: dict[str, Any]) -> None:
        params: dict[str, Any] = {**client.params, "prompt": request.prompt}
        if request.duration is not None:
            params["duration"] = request.duration
        if client.context:
            params["context"] = dict(client.context)
        req = self.client.send("submit", kind=request.op, params=params, inputs=inputs)
        self.pending[req] = Pending("submit", target, time.monotonic(), request)

    def _apply_setting(self, client: ClientState, request: Request, target: Address) -> None:
        where = client.params if SETTINGS[request.name][0] == "params" else client.context
        if request.value is None:
            where.pop(request.name, None)
            self._send(target, "/m2u/set", ("s", request.name))
            return
        where[request.name] = request.value
        values = request.value if isinstance(request.value, list) else [request.value]
        tags = {int: "i", float: "f", str: "s"}
        self._send(target, "/m2u/set", ("s", request.name), *[(tags[type(v)], v) for v in values])

    # ------------------------------------------------------------------ server in
    def _drain_server(self) -> None:
        while self.client is not None:
            message = self.client.recv(timeout_s=0)
            if message is None:
                return
            try:
                self.handle_server_message(message)
            except Exception:
                log.exception("server message %r could not be handled", message)

    def handle_server_message(self, message: Message) -> None:
        header = message.header
        op = header.get("op")
        req = header.get("req")
        if req is not None and req == self._ping_req:
            self._ping_req = None
            if self.server_up is not True:
                self._server_back()
            return
        pending = self.pending.pop(req, None) if req is not None else None
        if pending is not None:
            self._handle_reply(pending, header)
            return
        job = header.get("job")
        state = self.jobs.get(job) if isinstance(job, str) else None
        if state is None:
            log.debug("ignored server message %s for job %s", op, job)
            return
        self._handle_event(job, state, header)

    def _handle_reply(self, pending: Pending, header: dict[str, Any]) -> None:
        op = header.get("op")
        target = pending.target
        if op == "error":
            code, text = str(header.get("code", "internal")), str(header.get("message", ""))
            if pending.what == "subscribe" and code == "not_found":
                text = f"the server no longer knows job {pending.job} (it restarted without it): {text}"
            if pending.what == "resolve":
                text = f"audio job {pending.job}: {text}"
            if target is not None:
                job = pending.job if pending.what in ("status", "cancel", "subscribe") else ""
                self._error(target, str(header.get("job") or job), code, text)
            if pending.what == "subscribe" and pending.job in self.jobs:
                self.jobs[pending.job].state = "failed"
            return
        if pending.what == "hello" and op == "welcome":
            if self.welcome.get("server_version") != header.get("server_version") or \
                    self.welcome.get("model") != header.get("model"):
                model = header.get("model") or {}
                log.info("server %s: version %s, model %s%s", self.client.endpoint, header.get("server_version"),
                         model.get("name"), " (tiny, random weights)" if model.get("tiny") else "")
            self.welcome = header
            if target is not None:
                self._send_welcome(target)
            return
        if pending.what == "submit" and op == "accepted":
            job = str(header["job"])
            kind = pending.request.op if pending.request else ""
            self._track(job, JobState(target, kind))
            self._client_state(target).jobs.append(job)
            del self._client_state(target).jobs[:-100]
            self._send(target, "/m2u/accepted", ("s", job), ("i", int(header.get("queue_position") or 0)))
            return
        if pending.what == "status" and op == "job":
            self._send_record(target, header, with_status=True)
            return
        if pending.what == "subscribe" and op == "subscribed":
            state = self.jobs.get(pending.job)
            if state is not None and header.get("state") in FINAL_STATES:
                self._send_record(state.target, header, with_status=False)
            return
        if pending.what == "cancel" and op == "cancelling":
            return  # the `cancelled` event follows
        if pending.what == "resolve" and op == "job":
            state, path = header.get("state"), header.get("audio_path")
            if state == "done" and path:
                request = pending.request
                self._submit(target, self._client_state(target), request,
                             {"audio": self._audio_input(request, str(path))})
            else:
                self._error(target, "", "not_ready", f"job {pending.job} is {state} and has no audio result yet")
            return
        log.warning("unexpected reply %s to %s", op, pending.what)

    def _track(self, job: str, state: JobState) -> None:
        self.jobs[job] = state
        while len(self.jobs) > MAX_JOBS:
            oldest = next(iter(self.jobs))
            self.jobs.pop(oldest)

    def _handle_event(self, job: str, state: JobState, header: dict[str, Any]) -> None:
        op = header.get("op")
        target = state.target
        if op == "queued":
            self._send(target, "/m2u/queued", ("s", job), ("i", int(header.get("queue_position") or 0)))
        elif op == "progress":
            state.state = "running"
            state.fraction = float(header.get("fraction") or 0.0)
            state.stage = str(header.get("stage") or "")
            self._send_progress(job, state)
        elif op == "text":  # the reply grows: a sign of life even when the fraction does not move
            state.stage = "thinking"
            self._send_progress(job, state)
        elif op in ("done", "error", "cancelled"):
            self._send_record(target, header, with_status=False)
        else:
            log.debug("ignored event %s for job %s", op, job)

    def _send_progress(self, job: str, state: JobState) -> None:
        """/m2u/progress, except a repeat of the last one sent within `progress_repeat_s` (the
        server's per-token progress and text events would otherwise double every message)."""
        now = time.monotonic()
        fraction, stage, sent = state.last_progress
        if (fraction, stage) == (state.fraction, state.stage) and now - sent < self.progress_repeat_s:
            return
        state.last_progress = (state.fraction, state.stage, now)
        self._send(state.target, "/m2u/progress", ("s", job), ("f", state.fraction), ("s", state.stage))

    def _send_record(self, target: Address, record: dict[str, Any], with_status: bool) -> None:
        """A job record or final event -> /m2u/status (if asked), then the outcome if the job ended."""
        job = str(record.get("job", ""))
        op = record.get("op")
        state = {"done": "done", "error": "failed", "cancelled": "cancelled"}.get(op, record.get("state"))
        local = self.jobs.get(job)
        if local is not None and state:
            local.state = str(state)
            if state == "done":
                local.audio_path = str(record.get("audio_path") or "")
        if with_status:
            self._send(target, "/m2u/status", ("s", job), ("s", str(state or "")),
                       ("f", float(record.get("fraction") or 0.0)), ("s", str(record.get("stage") or "")),
                       ("i", int(record.get("queue_position") or 0)))
        if state == "done":
            text = str(record.get("text") or "").replace("\x00", "")  # OSC strings cannot hold NUL
            chunks = osc.utf8_chunks(text, TEXT_CHUNK_BYTES) if text else []
            for index, chunk in enumerate(chunks):
                self._send(target, "/m2u/text", ("s", job), ("i", index), ("i", len(chunks)), ("s", chunk))
            path = str(record.get("audio_path") or "")
            self._send(target, "/m2u/done", ("s", job), ("s", path),
                       ("f", float(record.get("duration") or 0.0) if path else 0.0),
                       ("i", int(record.get("sample_rate") or 0) if path else 0))
            log.info("job %s done -> %s:%d %s", job, target[0], target[1], path or "(text only)")
        elif state == "failed":
            error = record.get("error") if op != "error" else record
            error = error if isinstance(error, dict) else {}
            self._error(target, job, str(error.get("code") or "job_failed"), str(error.get("message") or ""))
        elif state == "cancelled":
            self._send(target, "/m2u/cancelled", ("s", job))

    # ------------------------------------------------------------------ OSC out
    def _send_welcome(self, target: Address) -> None:
        up = self.server_up is not False
        model = (self.welcome.get("model") or {}) if up else {}
        self._send(
            target, "/m2u/welcome",
            ("s", self.version), ("s", self._server_word()),
            ("s", str(self.welcome.get("server_version", "")) if up else ""),
            ("s", str(model.get("name", ""))),
            ("i", 1 if model.get("tiny") else 0),
            ("i", int(model.get("sample_rate") or 0)),
            ("i", target[1]),
        )

    def _server_word(self) -> str:
        return "down" if self.server_up is False else "up"

    def _send(self, target: Address, address: str, *args: tuple[str, Any]) -> None:
        dgram = osc.encode(address, *args)
        for attempt in (1, 2):
            try:
                self.sock.sendto(dgram, target)
                return
            except ConnectionError as e:  # a pending ICMP error of an earlier datagram: send again
                if attempt == 2:
                    log.warning("could not send %s to %s:%d: %s", address, target[0], target[1], e)
            except OSError as e:
                log.warning("could not send %s to %s:%d: %s", address, target[0], target[1], e)
                return

    def _error(self, target: Address, job: str, code: str, message: str) -> None:
        data = message.encode("utf-8")
        if len(data) > MAX_ERROR_BYTES:
            message = osc.utf8_chunks(message, MAX_ERROR_BYTES - 3)[0] + "..."
        if code not in ("bad_osc", "bad_args", "unknown_address"):
            log.info("error to %s:%d: job=%s %s: %s", target[0], target[1], job or "-", code, message)
        self._send(target, "/m2u/error", ("s", job), ("s", code), ("s", message))

    def _broadcast(self, address: str, *args: tuple[str, Any]) -> None:
        for target in list(self.clients):
            self._send(target, address, *args)


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "~", ".")) or "/" in ref or "\\" in ref or (len(ref) > 2 and ref[1] == ":")


def _describe(request: Request) -> str:
    parts = []
    for name in ("prompt", "audio", "job", "name"):
        value = getattr(request, name)
        if value:
            parts.append(f"{name}={value[:60]!r}")
    for name in ("start", "end", "duration", "image", "video", "value"):
        value = getattr(request, name)
        if value is not None:
            parts.append(f"{name}={value!r}")
    return " ".join(parts)


class BridgeHandle:
    """A bridge running in a daemon thread; `port` is its bound UDP port."""

    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self.port = bridge.port
        self.host = bridge.host
        self.thread = threading.Thread(target=bridge.serve, name="m2ugen-osc-bridge", daemon=True)
        self.thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.bridge.stop()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"OSC bridge thread did not stop within {timeout_s:g} s")


def start_in_thread(server_endpoint: str | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, **kw) -> BridgeHandle:
    """Bind now (errors raise here), then serve in a thread. `port=0` picks a free port."""
    return BridgeHandle(Bridge(server_endpoint, host, port, **kw))
