"""The OSC bridge's loop: one thread over the UDP socket and the server Client's DEALER socket.

    handle = start_in_thread("tcp://127.0.0.1:5557", port=0)   # handle.port = the bound UDP port
    ...
    handle.stop()

Everything runs in the thread that calls `Bridge.serve()` (the zmq socket is used by that thread
only). This module owns the sockets, the server's health and sending; what a request or a server
message means is decided by bridge_osc/router.py (tables of handlers), and what the client receives
is formatted by bridge_osc/replies.py.

Server health: a `ping` every `ping_interval_s`; no answer within `ping_timeout_s` -> the server is
`down`: pending requests fail with `server_unavailable`, the Client is replaced (queued requests
are dropped), new requests are refused until a ping is answered again; then the bridge re-subscribes
to its unfinished jobs and tells its clients `/m2u/server up`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import zmq

from bridge_osc import osc, replies
from bridge_osc.replies import Reply
from bridge_osc.requests import ArgError, parse
from bridge_osc.results import capture_folder, default_results_folder
from bridge_osc.router import Address, Router
from server.client import Client, Message, ServerUnavailable, endpoint_host
from server.protocol import SERVER_VERSION, is_loopback

log = logging.getLogger("m2ugen.bridge_osc")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9100
DEFAULT_REPLY_PORT = 9101


def bind_address(host: str, port: int) -> tuple[int, tuple]:
    """(family, sockaddr) to bind `host` on: names such as ip6-localhost are resolved (IPv4 first)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, socket.AF_UNSPEC, socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve the OSC host {host!r}: {e.strerror}") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


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
        results_dir: str | Path | None = None,
        capture_dir: str | Path | None = None,
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
        self._client_factory = client_factory or (lambda endpoint: Client(endpoint))
        self.version = SERVER_VERSION  # the bridge ships with the server package
        try:  # a malformed endpoint fails here, in the caller's thread, not later in serve()
            self._client_factory(server_endpoint).close()
        except zmq.ZMQError as e:
            raise ValueError(f"bad server endpoint {server_endpoint!r}: {e}") from None
        try:
            self.capture_dir = str(capture_folder(Path(capture_dir) if capture_dir else None))
        except OSError as e:
            log.warning("no capture folder for device recordings: %s", e)
            self.capture_dir = ""

        family, sockaddr = bind_address(host, port)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind(sockaddr)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()[:2]
        # stop() writes one byte here to wake the poll
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()

        self.client: Client | None = None
        self.server_up: bool | None = None  # None until the first ping is answered or times out
        self.welcome: dict[str, Any] = {}
        self.router = Router(self, default_reply_port=reply_port, progress_repeat_s=progress_repeat_s,
                             default_results_dir=Path(results_dir) if results_dir else default_results_folder())
        self._resubscribe = False  # set by adopt(): the jobs of a failed bridge, subscribed again when up
        self._ping_req: str | None = None
        self._ping_sent = 0.0
        self._next_ping = 0.0
        self._poller: zmq.Poller | None = None

    # the router's view of the bridge (router.Link)
    def server_send(self, op: str, frames: tuple = (), **fields: Any) -> str:
        return self.client.send(op, frames, **fields)

    def server_upload(self, path: str) -> dict[str, Any]:
        """A local file's bytes to the server (unless it holds them), in this thread; its replies and any
        event that came meanwhile are handled by the loop's next drain."""
        return self.client.upload(path, timeout_s=self.request_timeout_s)

    def server_result_chunks(self, job: str, take: int | None, first: Message | None = None) -> Iterator[bytes]:
        """A finished job's result file chunk by chunk (the client's own loop, `Client.result_chunks`), in
        this thread like server_upload; `first`: the reply at offset 0 the router already has."""
        return self.client.result_chunks(job, take, first, self.request_timeout_s)

    def server_endpoint_text(self) -> str:
        return self.client.endpoint if self.client is not None else str(self.server_endpoint)

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
                if self.client is not None and (self.client.socket in events or self.client.has_pending()):
                    self._drain_server()
                try:
                    self._tick(time.monotonic())
                except (zmq.ZMQError, ServerUnavailable) as e:  # the server socket failed: a fresh one
                    log.warning("server socket: %s", e)
                    self._server_lost(f"server socket error: {e}")
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
            self.router.expire_pending(now, self.request_timeout_s)

    def _server_lost(self, why: str) -> None:
        was_up = self.server_up
        self.server_up = False
        self.router.server_lost(why)
        # A fresh socket: requests queued for the dead peer are dropped, not delivered later.
        self._close_client()
        self._open_client()
        self._next_ping = time.monotonic() + self.ping_interval_s
        if was_up is not False:
            log.warning("server unavailable: %s", why)
            self.router.broadcast(replies.server_state(False, why))

    def adopt(self, previous: "Bridge") -> None:
        """Carry a failed bridge's clients over (reply ports, settings, followed jobs): a restart keeps them,
        and the jobs are subscribed to again once the server answers."""
        self.router.adopt(previous.router)
        self._resubscribe = bool(self.router.jobs)

    def _server_back(self) -> None:
        log.info("server %s is up", self.client.endpoint)
        was_down = self.server_up is False
        adopted, self._resubscribe = self._resubscribe, False
        self.server_up = True
        self.router.ask_server("hello", None, "hello", fields={"client": f"bridge_osc {self.version}"})
        if was_down or adopted:
            self.router.resubscribe()
        if was_down:
            self.router.broadcast(replies.server_state(True, f"server {self.client.endpoint} is back"))

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
            try:
                self.handle_datagram(dgram, source[:2])
            except Exception:  # nothing a datagram carries may stop the bridge
                log.exception("a datagram from %s:%d could not be handled", source[0], source[1])

    def is_own(self, address: Address) -> bool:
        """True for this bridge's own UDP address (it never sends to itself, nor answers itself)."""
        host, port = address[0], address[1]
        if port != self.port:
            return False
        if host == self.host or self.host in ("0.0.0.0", "::"):
            return True
        return is_loopback(host) and is_loopback(self.host)

    def handle_datagram(self, dgram: bytes, source: Address) -> None:
        host = source[0]
        if self.is_own(source):
            log.debug("ignored a datagram from the bridge's own address")
            return
        try:
            messages = osc.decode(dgram)
        except osc.OscDecodeError as e:
            log.warning("from %s:%d: bad_osc: %s", host, source[1], e)
            self.router.error(self.router.reply_address(source, None), "", "bad_osc", str(e))
            return
        for message in messages:
            try:
                request = parse(message)
            except ArgError as e:
                log.warning("from %s:%d: %s: %s", host, source[1], e.code, e.message)
                self.router.error(self.router.reply_address(source, None), "", e.code, e.message)
                continue
            except Exception as e:  # a parser bug: an answer, never a dead bridge
                log.exception("request %s from %s:%d could not be parsed", message.address, host, source[1])
                self.router.error(self.router.reply_address(source, None), "", "bad_args",
                                  f"{message.address}: the request could not be read ({type(e).__name__})")
                continue
            try:
                self.router.handle_request(request, source)
            except Exception as e:  # a bridge bug must not stop the bridge
                log.exception("request %s from %s failed", request.op, source)
                self.router.error(self.router.reply_address(source, request.reply_port), "", "internal",
                                  f"bridge error: {e}")

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
        req = message.header.get("req")
        if req is not None and req == self._ping_req:
            self._ping_req = None
            if self.server_up is not True:
                self._server_back()
            return
        pending = self.router.pending.pop(req, None) if req is not None else None
        if pending is not None:
            self.router.handle_reply(pending, message)
        else:
            self.router.handle_event(message)

    # ------------------------------------------------------------------ OSC out
    def send(self, target: Address, messages: list[Reply]) -> None:
        for address, args in messages:
            self._send(target, address, *args)

    def _send(self, target: Address, address: str, *args: tuple[str, Any]) -> None:
        if self.is_own(target):
            log.debug("not sending %s to the bridge's own address", address)
            return
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
