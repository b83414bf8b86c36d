"""The ZeroMQ side: one ROUTER socket for all clients, and an inproc PULL socket through which other
threads hand messages to this thread, which alone touches the ROUTER:

    transport thread   requests -> handlers (quick ops answered at once)
    intake pool        submit: read + decode the inputs (slow), then wake the transport thread,
                       which queues the job and answers 'accepted' (so it precedes the job's events);
                       upload: write one chunk. Work is queued per client, a client has at most one
                       item running, and clients take turns (IntakePool): one client's big upload or
                       slow decode never holds up another client's submit.
    worker thread      progress / text / done events -> routed to the job's subscribers

Socket options: ROUTER_MANDATORY (a send to a vanished client errors instead of vanishing silently;
we drop that client from the job's subscribers), LINGER 0, MAXMSGSIZE (oversized messages make
libzmq drop the connection before they reach us), optional CURVE with a ZAP authenticator.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import threading
from pathlib import Path
from typing import Any

import zmq

from server import protocol
from server.handlers import Handlers, Outcome, PendingSubmit
from server.jobs import JobStore

log = logging.getLogger("m2ugen.transport")
_ids = itertools.count()
INTAKE_THREADS = 2
MAX_WAITING_PER_CLIENT = 16  # a client's submits and upload chunks waiting for the pool (Client: 8 chunks in flight)
MAX_WAITING = 256


class IntakePool:
    """``threads`` threads run ``run(item)`` and hand the result to ``done(identity, result)``. Items
    wait in one queue per client; a thread takes the next item of the first client in turn that has
    none running, and that client goes to the back of the turn. So a client's items run one at a
    time, in the order sent (an upload's chunks stay in order), and no client waits behind another's."""

    def __init__(self, run, done, threads: int = INTAKE_THREADS, max_waiting: int = MAX_WAITING,
                 max_waiting_per_client: int = MAX_WAITING_PER_CLIENT, max_waiting_bytes: int | None = None):
        self._run, self._done = run, done
        self.max_waiting_bytes = max_waiting_bytes  # the frames waiting hold memory: bounded in bytes too
        self._bytes = 0
        self._cv = threading.Condition()
        self._waiting: collections.OrderedDict[bytes, collections.deque] = collections.OrderedDict()
        self._busy: set[bytes] = set()
        self._count = 0
        self._stopping = False
        self.max_waiting, self.max_waiting_per_client = max_waiting, max_waiting_per_client
        self._threads = [threading.Thread(target=self._loop, name=f"m2ugen-intake-{i}", daemon=True)
                         for i in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def put(self, identity: bytes, item, size: int = 0) -> bool:
        """Queue ``item`` (holding ``size`` bytes) for ``identity``; False when too much waits already
        (the caller answers busy)."""
        with self._cv:
            mine = self._waiting.get(identity)
            if self._count >= self.max_waiting or (mine is not None and len(mine) >= self.max_waiting_per_client):
                return False
            if self.max_waiting_bytes is not None and self._bytes + size > self.max_waiting_bytes:
                return False
            if mine is None:
                mine = self._waiting[identity] = collections.deque()
            mine.append((item, size))
            self._count += 1
            self._bytes += size
            self._cv.notify()
        return True

    def _next(self):
        for identity, items in self._waiting.items():
            if identity not in self._busy:
                item, size = items.popleft()
                self._bytes -= size
                del self._waiting[identity]
                if items:  # to the back of the turn
                    self._waiting[identity] = items
                self._busy.add(identity)
                self._count -= 1
                return identity, item
        return None

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and (picked := self._next()) is None:
                    self._cv.wait()
                if self._stopping:
                    return
            identity, item = picked
            try:
                self._done(identity, self._run(item))  # before the client's next item may start: in order
            except Exception:
                log.exception("intake work failed")
            finally:
                with self._cv:
                    self._busy.discard(identity)
                    self._cv.notify_all()

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout_s)


class Transport:
    def __init__(self, handlers: Handlers, store: JobStore, *, host: str, port: int, max_message_bytes: int,
                 curve_keys: tuple[bytes, bytes] | None = None, authorized_dir: Path | None = None,
                 context: zmq.Context | None = None):
        self.handlers = handlers
        self.store = store
        self.ctx = context or zmq.Context()
        self._own_ctx = context is None
        self._events_addr = f"inproc://m2ugen-events-{id(self)}-{next(_ids)}"
        self._stop = threading.Event()
        self._local = threading.local()
        self._push_sockets: list[zmq.Socket] = []
        self._push_lock = threading.Lock()
        self.auth = None

        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.router.setsockopt(zmq.SNDHWM, 1000)
        self.router.setsockopt(zmq.RCVHWM, 1000)
        self.router.setsockopt(zmq.HEARTBEAT_IVL, 2000)  # ZMTP pings: dead peers are noticed within ~6 s
        self.router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        if ":" in host:
            self.router.setsockopt(zmq.IPV6, 1)
        if curve_keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(authorized_dir))
            public, secret = curve_keys
            self.router.curve_publickey = public
            self.router.curve_secretkey = secret
            self.router.curve_server = True
        bind_host = f"[{host}]" if ":" in host else host
        if port == 0:
            self.router.bind(f"tcp://{bind_host}:*")
        else:
            self.router.bind(f"tcp://{bind_host}:{port}")
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)

        self.events = self.ctx.socket(zmq.PULL)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.bind(self._events_addr)

        # submits are read and decoded, and uploads written, on the intake pool (fair between clients)
        self._intake_out: collections.deque = collections.deque()
        self._wake_local = threading.local()
        self.intake = IntakePool(self.handlers.prepare, self._intake_done, max_waiting_bytes=2 * max_message_bytes)

    # -----------------------------------------------------------------------------------------
    def emitter(self):
        """An ``emit(header, frames=())`` function for the calling thread (one PUSH socket per thread)."""
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self._events_addr)
        with self._push_lock:
            self._push_sockets.append(sock)

        def emit(header: dict[str, Any], frames=()) -> None:
            if self._stop.is_set():
                return
            sock.send_multipart(protocol.encode(header, list(frames)))

        return emit

    def _send(self, identity: bytes, parts: list) -> bool:
        try:
            self.router.send_multipart([identity, *parts], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError as e:  # EHOSTUNREACH: client gone; EAGAIN: its queue is full
            log.debug("dropping a message for a client: %s", e)
            return False

    def _route_event(self, header: dict[str, Any], frames: list) -> None:
        job = self.store.get(header.get("job", ""))
        if job is None:
            return
        with self.store.lock:
            targets = list(job.subscribers)
        parts = protocol.encode(header, frames)
        for identity in targets:
            if not self._send(identity, parts):
                with self.store.lock:
                    job.subscribers.discard(identity)

    def _reply(self, identity: bytes, out: Outcome) -> None:
        self._send(identity, protocol.encode(out.reply, out.frames))
        for header, frames in out.events:
            self._route_event(header, frames)

    def _on_request(self, msg: list) -> None:
        if len(msg) < 2:  # identity only: nothing to answer
            return
        identity = msg[0].bytes
        out = self.handlers.handle(identity, msg[1:], defer_submit=True)
        if isinstance(out, PendingSubmit):
            size = sum(len(f.buffer) if hasattr(f, "buffer") else len(f) for f in out.frames)
            if not self.intake.put(identity, out, size):  # what waits for the pool holds memory: bounded
                self._reply(identity, self.handlers.refuse_busy(out, "too many submits and uploads are waiting "
                                                                     "to be read"))
        else:
            self._reply(identity, out)

    def _intake_done(self, identity: bytes, result) -> None:
        """On a pool thread: hand the result to the transport thread, which queues the job and answers."""
        emit = getattr(self._wake_local, "emit", None)
        if emit is None:
            emit = self._wake_local.emit = self.emitter()
        self._intake_out.append((identity, result))
        emit({"op": "_intake"})

    def _on_intake_done(self) -> None:
        while self._intake_out:
            identity, result = self._intake_out.popleft()
            out = result if isinstance(result, Outcome) else self.handlers.commit(result)
            self._reply(identity, out)

    def _on_event(self, msg: list) -> None:
        try:
            header = json.loads(msg[0].bytes)
        except ValueError:
            log.error("unreadable internal event")
            return
        if header.get("op") == "_intake":
            self._on_intake_done()
            return
        self._route_event(header, [f.buffer for f in msg[1:]])

    # -----------------------------------------------------------------------------------------
    def run(self) -> None:
        """The loop: requests and events until ``stop``."""
        self.intake.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.events, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(100))
            if self.events in ready:
                for _ in range(1000):
                    try:
                        self._on_event(self.events.recv_multipart(zmq.NOBLOCK, copy=False))
                    except zmq.Again:
                        break
            if self.router in ready:
                for _ in range(100):
                    try:
                        msg = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        self._on_request(msg)
                    except Exception:
                        log.exception("error while answering a request")
        self._close()

    def stop(self) -> None:
        self._stop.set()

    def _close(self) -> None:
        self.intake.stop()
        self.router.close(0)
        self.events.close(0)
        with self._push_lock:
            for s in self._push_sockets:
                s.close(0)
        if self.auth is not None:
            self.auth.stop()
        if self._own_ctx:
            self.ctx.term()
