"""The ZeroMQ side: one ROUTER socket for all clients, and an inproc PULL socket through which other
threads hand messages to this thread, which alone touches the ROUTER:

    transport thread   requests -> handlers (quick ops answered at once)
    intake thread      submit: read + decode the inputs (slow), then wake the transport thread,
                       which queues the job and answers 'accepted' (so it precedes the job's events)
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
import queue
import threading
from pathlib import Path
from typing import Any

import zmq

from server import protocol
from server.handlers import Handlers, Outcome, PendingSubmit
from server.jobs import JobStore

log = logging.getLogger("m2ugen.transport")
_ids = itertools.count()


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

        # submits are read and decoded on the intake thread, so a big upload never stalls the others
        self._intake_in: queue.Queue[PendingSubmit | None] = queue.Queue()
        self._intake_out: collections.deque = collections.deque()
        self._intake = threading.Thread(target=self._intake_loop, name="m2ugen-intake", daemon=True)

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
            if self._intake_in.qsize() >= self.handlers.queue.maxsize:  # uploads waiting to be decoded hold memory
                self._reply(identity, self.handlers.refuse_busy(out, "too many submits are being read"))
                return
            self._intake_in.put(out)
        else:
            self._reply(identity, out)

    def _intake_loop(self) -> None:
        emit = self.emitter()
        while True:
            pending = self._intake_in.get()
            if pending is None:
                return
            self._intake_out.append((pending.identity, self.handlers.prepare(pending)))
            emit({"op": "_intake"})  # wake the transport thread, which queues the job and answers

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
        self._intake.start()
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
        self._intake_in.put(None)

    def _close(self) -> None:
        if self._intake.is_alive():
            self._intake.join(10)
        self.router.close(0)
        self.events.close(0)
        with self._push_lock:
            for s in self._push_sockets:
                s.close(0)
        if self.auth is not None:
            self.auth.stop()
        if self._own_ctx:
            self.ctx.term()
