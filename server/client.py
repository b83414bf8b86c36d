"""The Python client: a ZeroMQ DEALER speaking docs/protocol.md.

    c = Client()                               # endpoint from the discovery file, else tcp://127.0.0.1:5557
    c.call("ping")                             # -> Message(header={"op": "pong", ...})
    req = c.send("submit", kind="generate", params={"prompt": "lofi piano", "duration": 4})
    while (m := c.recv(timeout_s=30)) is not None: ...   # accepted, progress, text, done | error | cancelled

``socket`` is public so callers can put it in their own ``zmq.Poller``; when they do, they must read
it with ``recv(timeout_s=0)`` (messages kept aside by ``call`` are returned first).
"""

from __future__ import annotations

import collections
import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from server import discovery, owners, protocol, security


@dataclass
class Message:
    header: dict[str, Any]
    frames: list[bytes] = field(default_factory=list)

    @property
    def op(self) -> str | None:
        return self.header.get("op")

    @property
    def job(self) -> str | None:
        return self.header.get("job")

    def __repr__(self) -> str:
        sizes = [len(f) for f in self.frames]
        return f"Message({self.header!r}, frames={sizes})"


class ServerUnavailable(Exception):
    """No reply from the server within the timeout (not running, wrong endpoint, or wrong keys)."""


class ServerRefused(ServerUnavailable):
    """The server is there but refused the connection's security handshake (wrong or unknown key)."""


_HANDSHAKE_FAILED = (getattr(zmq, "EVENT_HANDSHAKE_FAILED_AUTH", 0) | getattr(zmq, "EVENT_HANDSHAKE_FAILED_PROTOCOL", 0)
                     | getattr(zmq, "EVENT_HANDSHAKE_FAILED_NO_DETAIL", 0))


def resolve_endpoint(endpoint: str | None = None) -> str:
    if endpoint:
        return endpoint
    info = discovery.read()
    if info and isinstance(info.get("endpoint"), str):
        return info["endpoint"]
    return protocol.DEFAULT_ENDPOINT


def endpoint_host(endpoint: str) -> str:
    """``tcp://HOST:PORT`` -> HOST (brackets of IPv6 removed); other transports -> ``localhost``."""
    if not endpoint.startswith("tcp://"):
        return "localhost"
    hostport = endpoint[len("tcp://"):]
    host = hostport.rsplit(":", 1)[0]
    return host.strip("[]")


class Client:
    def __init__(self, endpoint: str | None = None, *, timeout_s: float = 10.0, server_public_key=None,
                 client_keys=None, context: zmq.Context | None = None, token: str | bool | None = None):
        self.endpoint = resolve_endpoint(endpoint)
        # whose jobs these are (server/owners.py): None = this user's token from the config dir, False = none
        if token is None:
            try:
                token = owners.user_token()
            except OSError:  # no writable config dir: the connection is the identity
                token = False
        self.token = token or None
        self.timeout_s = timeout_s
        self._ctx = context or zmq.Context.instance()
        self._pending: collections.deque[Message] = collections.deque()
        self._counter = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]

        if server_public_key is None:  # None: as the discovery file says; False: plain (no CURVE)
            server_public_key = self._discovered_server_key()
        elif server_public_key is False:
            server_public_key = None
        self.curve = server_public_key is not None
        self.socket = self._ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        # a send never blocks longer than the reply timeout (e.g. with no connected peer after a refusal)
        self.socket.setsockopt(zmq.SNDTIMEO, max(1, int(timeout_s * 1000)))
        if endpoint_host(self.endpoint).count(":"):
            self.socket.setsockopt(zmq.IPV6, 1)
        if server_public_key is not None:
            public, secret = client_keys or security.load_client_keys(security.default_keys_dir())
            self.socket.curve_serverkey = security.load_public_key(server_public_key)
            self.socket.curve_publickey = public
            self.socket.curve_secretkey = secret
        # handshake failures are only visible on the monitor: they tell "refused" from "not there"
        self._monitor = self.socket.get_monitor_socket(_HANDSHAKE_FAILED) if _HANDSHAKE_FAILED else None
        self.socket.connect(self.endpoint)

    def _discovered_server_key(self) -> bytes | None:
        """The discovery file names the server's public key when it runs with CURVE on this endpoint."""
        info = discovery.read()
        if info and info.get("curve") and info.get("endpoint") == self.endpoint and info.get("server_public_key"):
            return info["server_public_key"].encode("ascii")
        env = os.environ.get("M2UGEN_SERVER_KEY")
        if env:
            return security.load_public_key(env if len(env) == 40 else Path(env))
        # a remote server always runs with CURVE: its public key as `m2ugen keys import` put it
        imported = security.default_keys_dir() / "server.key"
        if not protocol.is_loopback(endpoint_host(self.endpoint)) and imported.is_file():
            return security.load_public_key(imported)
        return None

    # -----------------------------------------------------------------------------------------
    def send(self, op: str, frames=(), **fields) -> str:
        """Send a request; adds ``v`` and a fresh ``req`` id (returned)."""
        req = f"{self._prefix}-{next(self._counter)}"
        header = {"v": protocol.PROTOCOL_VERSION, "op": op, "req": req, **fields}
        if self.token is not None:
            header.setdefault("token", self.token)
        try:
            self.socket.send_multipart(protocol.encode(header, list(frames)), copy=len(frames) == 0)
        except zmq.Again:
            self._raise_if_refused()
            raise ServerUnavailable(f"could not send '{op}' to {self.endpoint} within {self.timeout_s:g} s (no "
                                    f"connection to the server)") from None
        return req

    def _recv_socket(self, timeout_s: float | None) -> Message | None:
        timeout_ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
        if not self.socket.poll(timeout_ms, zmq.POLLIN):
            return None
        frames = self.socket.recv_multipart(copy=True)
        try:
            header, rest = protocol.decode(frames)
        except protocol.ProtocolError as e:  # a broken server message; surface it as an error
            header, rest = protocol.error_header("internal", f"unreadable server message: {e.message}"), []
        return Message(header, rest)

    def recv(self, timeout_s: float | None = None) -> Message | None:
        """Next message (events kept by ``call`` first); None after ``timeout_s`` (None: the default timeout)."""
        if self._pending:
            return self._pending.popleft()
        return self._recv_socket(self.timeout_s if timeout_s is None else timeout_s)

    def call(self, op: str, frames=(), timeout_s: float | None = None, **fields) -> Message:
        """Send and wait for the direct reply (same ``req``); other messages are kept for ``recv``."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        req = self.send(op, frames, **fields)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._raise_if_refused()
                raise ServerUnavailable(f"no reply to '{op}' from {self.endpoint} within {timeout:g} s "
                                        f"(is `m2ugen serve` running?)")
            msg = self._recv_socket(left)
            if msg is None:
                continue
            if msg.header.get("req") == req:
                return msg
            self._pending.append(msg)

    def _raise_if_refused(self) -> None:
        """ServerRefused when the monitor saw the server reject our handshake."""
        if self._monitor is None:
            return
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            if event["event"] & _HANDSHAKE_FAILED:
                how = ("with CURVE (wrong or unknown key; check server.key and that the server authorized "
                       "this client.key)" if self.curve else
                       "(it requires CURVE keys: copy server.key, client.key and client.key_secret into "
                       "the keys dir)")
                raise ServerRefused(f"the server at {self.endpoint} refused the connection {how}")

    def ping(self, timeout_s: float = 3.0) -> Message:
        return self.call("ping", timeout_s=timeout_s)

    def close(self) -> None:
        if self._monitor is not None and not self._monitor.closed:
            self.socket.disable_monitor()
            self._monitor.close(linger=0)
        if not self.socket.closed:
            self.socket.close(linger=0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
