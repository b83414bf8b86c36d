"""The Python client: a ZeroMQ DEALER speaking docs/protocol.md.

    c = Client()                               # endpoint from the discovery file, else tcp://127.0.0.1:5557
    c.call("ping")                             # -> Message(header={"op": "pong", ...})
    req = c.send("submit", kind="generate", params={"prompt": "lofi piano", "duration": 4})
    while (m := c.recv(timeout_s=30)) is not None: ...   # accepted, progress, text, done | error | cancelled

Files cross the wire as bytes (the server opens no client path): ``upload`` sends a file's bytes
unless the server already holds them and returns the input reference for a submit; ``save_result``
fetches a finished job's result and writes it where the caller asks (server/outputs.py ``save``):

    ref = c.upload("/Volumes/Samples/take.wav", on_progress=print)   # {"blob", "proof", "name"}
    c.call("submit", kind="ask", params={"prompt": "what key?"}, inputs={"audio": {**ref, "start": 2.0}})
    c.save_result(job, "/Volumes/Projects/out.wav", overwrite=True)

``socket`` is public so callers can put it in their own ``zmq.Poller``; when they do, they must read
it with ``recv(timeout_s=0)`` (messages kept aside by ``call`` are returned first).
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from server import discovery, hashcache, localfd, owners, protocol, security


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


class RequestRefused(Exception):
    """The server answered an upload or a result fetch with an error (``header``: its error reply)."""

    def __init__(self, header: dict[str, Any]):
        super().__init__(f"{header.get('code')}: {header.get('message')}")
        self.header = header
        self.code = header.get("code")


UPLOAD_WINDOW = 8  # chunks in flight at once (each at most the server's chunk_bytes: 32 MiB held at most)
_digest = protocol.content_digest  # this client's reads of a file to hash it (tests count them here)


def _fstat(f) -> os.stat_result | None:
    try:
        return os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):  # bytes in memory
        return None


def _open_source(source) -> tuple[Any, str]:
    """A path (str / PathLike) or bytes -> (a binary file object, a display name)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        import io

        return io.BytesIO(bytes(source)), ""
    p = Path(source).expanduser()
    return open(p, "rb"), p.name


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
                 client_keys=None, context: zmq.Context | None = None, token: str | bool | None = None,
                 hash_cache: "hashcache.HashCache | bool | None" = None, local_uploads: bool = True):
        self.endpoint = resolve_endpoint(endpoint)
        # a file for a server on this machine is handed over by its descriptor where the server takes it
        # (server/localfd.py); False: always its bytes through the socket
        self.local_uploads = local_uploads
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
        # the content hash of files uploaded before, by their stat (server/hashcache.py): None = this user's file in
        # the config dir, False = this client only
        if hash_cache is None:
            try:
                hash_cache = hashcache.HashCache(hashcache.default_path())
            except OSError:
                hash_cache = hashcache.HashCache()
        self.hashes = hash_cache or hashcache.HashCache()

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

    def has_pending(self) -> bool:
        """Messages kept aside by ``call`` (the socket's poll no longer shows them)."""
        return bool(self._pending)

    def call(self, op: str, frames=(), timeout_s: float | None = None, **fields) -> Message:
        """Send and wait for the direct reply (same ``req``); other messages are kept for ``recv``."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        req = self.send(op, frames, **fields)
        return self._wait_reply({req}, op, timeout)

    def _wait_reply(self, reqs: set[str], op: str, timeout: float) -> Message:
        """The first reply to one of ``reqs`` (removed from the set); other messages are kept for ``recv``."""
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
            if msg.header.get("req") in reqs:
                reqs.discard(msg.header["req"])
                return msg
            self._pending.append(msg)

    # -----------------------------------------------------------------------------------------
    # files as bytes

    def upload(self, source, *, name: str | None = None, on_progress=None, timeout_s: float | None = None) -> dict:
        """Send a file's bytes (a path or bytes) to the server unless it holds them already, in chunks
        (``on_progress(sent, total)`` after each); -> the input reference ``{"blob", "name"}`` for a
        submit's inputs (plus ``proof`` when this client did not upload those bytes itself). The file is
        read here, by this process, at most once (docs/protocol.md §2.1): a file sent before is offered by
        its hash (remembered, else hashed), and so is a new file that looks like one sent before (same size,
        head and tail: a selection rendered again); held bytes are not sent again; any other file is sent at
        once and the server names it (on a remote server it is hashed and offered first: there the network
        is the cost). A file for a server on this machine that takes descriptors is handed over open
        instead of sent (§2.2: the server copies it in the kernel), else its bytes go through the socket.
        Raises RequestRefused (e.g. too large) or ServerUnavailable."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        f, shown = _open_source(source)
        with f:
            before = _fstat(f)
            read_at = time.time_ns()
            size = before.st_size if before is not None else len(f.getbuffer())
            sha, sent_before = self.hashes.lookup(before) if before is not None else (None, False)
            loopback = protocol.is_loopback(endpoint_host(self.endpoint))
            hint = hashcache.hint_of(f, size) if before is not None else None
            if sha is None and (sent_before or not loopback or self.hashes.seen_like(hint)):
                sha = _digest(f)  # likely held: hash and offer rather than send
                f.seek(0)
            proof = None
            local = {"local": True} if loopback and before is not None and self.local_uploads and localfd.SUPPORTED else {}
            if sha is not None:
                state = self._upload_call(timeout, **{protocol.CONTENT_HASH: sha}, size=size, **local)
                if state.get("have") and not state.get("granted"):  # held, sent by someone else: prove it
                    proof = _digest(f, str(state.get("challenge") or "").encode("ascii"))
            else:
                state = self._upload_call(timeout, size=size, **local)
            if not state.get("have"):
                final = self._hand_over(f, state, size, on_progress, timeout) if state.get("ticket") else None
                if final is None:  # the bytes, through the socket
                    offset = int(state.get("offset") or 0)
                    f.seek(offset)
                    final = self._send_chunks(f, str(state.get("upload")), size, offset,
                                              int(state.get("chunk_bytes") or 2**20), on_progress, timeout)
                if sha is not None and final.get(protocol.CONTENT_HASH) != sha:
                    raise RequestRefused({"code": "bad_upload", "message": f"the server stored {final.get(protocol.CONTENT_HASH)}"
                                                                           f", not the offered {sha}"})
                sha = final[protocol.CONTENT_HASH]
            if before is not None:
                self.hashes.remember(before, _fstat(f), sha, read_at, hint)
        if on_progress is not None:
            on_progress(size, size)
        return {"blob": sha, **({"proof": proof} if proof is not None else {}),
                "name": name if name is not None else shown}

    def _hand_over(self, f, state: dict, size: int, on_progress, timeout: float) -> dict | None:
        """Hand the open file to the server's local intake (server/localfd.py, docs/protocol.md §2.2); -> the
        finished upload, or None where it was not taken (no such socket, another user, too many at once):
        then the caller sends the bytes to the same upload."""
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return None
        with conn:
            conn.settimeout(timeout)
            try:
                conn.connect(str(state.get("local_socket")))
                socket.send_fds(conn, [str(state["ticket"]).encode("ascii")], [f.fileno()])
            except OSError:
                return None
            lines = conn.makefile("rb")
            while True:
                try:
                    line = lines.readline(protocol.MAX_HEADER_BYTES)
                except OSError as e:  # socket.timeout included: the copy took longer than a whole upload may
                    raise RequestRefused({"code": "bad_upload", "message": f"the local upload stopped: {e}"}) from None
                if not line:
                    raise RequestRefused({"code": "bad_upload", "message": "the server closed the local upload"})
                reply = json.loads(line)
                if reply.get("op") == "error":
                    if reply.get("code") == "local_refused":
                        return None
                    raise RequestRefused(reply)
                if reply.get("op") == "uploaded":
                    return reply
                if on_progress is not None and isinstance(reply.get("offset"), int):
                    on_progress(reply["offset"], size)

    def _upload_call(self, timeout: float, **fields) -> dict:
        reply = self.call("upload", timeout_s=timeout, **fields)
        if reply.op == "error":
            raise RequestRefused(reply.header)
        return reply.header

    def _send_chunks(self, f, upload: str, size: int, offset: int, chunk: int, on_progress, timeout: float) -> dict:
        """The file's bytes from ``offset`` to ``size``, ``UPLOAD_WINDOW`` chunks in flight (sent without a
        copy); -> the last reply, which says ``have`` and names the bytes (``blake3``)."""
        in_flight: set[str] = set()
        error: Message | None = None
        last: Message | None = None
        sent = offset
        while True:
            block = f.read(min(chunk, size - sent)) if error is None and sent < size else b""
            if block:
                in_flight.add(self.send("upload", [block], upload=upload, offset=sent))
                sent += len(block)
            if in_flight and (len(in_flight) >= UPLOAD_WINDOW or not block):
                reply = self._wait_reply(in_flight, "upload", timeout)
                if reply.op == "error":
                    error = error or reply  # the chunks behind it are refused too: collect their replies
                else:
                    last = reply
                    if on_progress is not None:
                        on_progress(int(reply.header.get("offset") or 0), size)
            elif not block:
                break
        if error is not None:
            raise RequestRefused(error.header)
        if sent < size:
            raise RequestRefused({"code": "bad_upload", "message": f"the file shrank to {sent} bytes while it was "
                                                                   f"read (it was {size}); send it again"})
        if last is None or not last.header.get("have") or not isinstance(last.header.get(protocol.CONTENT_HASH), str):
            raise RequestRefused({"code": "bad_upload", "message": f"the server did not confirm upload {upload}"})
        return last.header

    def save_result(self, job: str, out, *, overwrite: bool = False, timeout_s: float | None = None) -> dict:
        """Fetch a finished job's result as bytes and write it to ``out`` (its takes beside it as
        ``<stem>-take<k>.wav``, a ``stems`` job's stems as ``<stem>-<drums|bass|...>.wav``, its sidecar as
        ``<stem>.json``), atomically, replacing files only with ``overwrite`` and only of their kind (server/outputs.py ``save``). -> the ``result`` reply's
        header with the paths written here (``audio_path`` or ``midi_path``, ``takes``, ``sidecar_path``)."""
        from server import outputs

        out = Path(out).expanduser().absolute()
        first = self.call("result", timeout_s=timeout_s, job=job, want="bytes", offset=0)
        if first.op == "error":
            raise RequestRefused(first.header)
        h = dict(first.header)
        if h.get("state") != "done" or not first.frames:
            return h
        ref = "midi" if h.get("midi") else "audio"
        wanted = (".mid", ".midi") if ref == "midi" else (".wav",)
        if out.suffix.lower() not in wanted:
            from server.security import PathNotAllowed

            raise PathNotAllowed(f"{out}: the result of job {job} is {'a MIDI file' if ref == 'midi' else 'a WAV'}; "
                                 f"name it {wanted[0]}")

        def file_of(t: dict) -> Path:  # a stems job's takes are its stems: <stem>-<name of the stem>.wav
            return outputs.stem_path(out, t["stem"]) if t.get("stem") else outputs.take_path(out, int(t.get("take", 1)))

        listed = h.get("takes") or []
        first_path = file_of(listed[0]) if listed else out
        for path in [first_path, *[file_of(t) for t in listed[1:]], outputs.sidecar_of(out)]:
            outputs.check_target(path, overwrite)
        outputs.save(first_path, self.result_chunks(job, None, first, timeout_s), overwrite=overwrite)
        takes = []
        for t in listed:
            k = int(t.get("take", 1))
            if k > 1:
                outputs.save(file_of(t), self.result_chunks(job, k, None, timeout_s), overwrite=overwrite)
            takes.append({**t, "audio_path": str(file_of(t))})
        h[f"{ref}_path"] = str(first_path)
        if takes:
            h["takes"] = takes
        if isinstance(h.get("sidecar"), dict):
            import json

            side = outputs.sidecar_of(out)
            outputs.save(side, json.dumps({**h["sidecar"], f"{ref}_path": str(first_path), **({"takes": takes} if takes else {})},
                                          indent=1).encode("utf-8"), overwrite=overwrite)
            h["sidecar_path"] = str(side)
        h.pop(ref, None)
        return h

    def result_chunks(self, job: str, take: int | None = None, first: Message | None = None,
                      timeout_s: float | None = None):
        """A finished job's result file (``take``: that take), chunk by chunk (``result`` with ``offset``,
        docs/protocol.md §2.3): neither side holds the whole file twice; ``first``: the reply at offset 0."""
        offset, msg = 0, first
        while True:
            if msg is None:
                msg = self.call("result", timeout_s=timeout_s, job=job, want="bytes", offset=offset,
                                **({"take": take} if take is not None else {}))
                if msg.op == "error":
                    raise RequestRefused(msg.header)
            where = msg.header.get("midi") or msg.header.get("audio") or {}
            size = where.get("size") if isinstance(where, dict) else None
            if not msg.frames or not isinstance(size, int) or (not msg.frames[0] and offset < size):
                raise RequestRefused({"code": "not_found", "message": f"the result of job {job}"
                                                                      f"{f' (take {take})' if take else ''} sent no "
                                                                      f"bytes at offset {offset}"})
            data = msg.frames[0]
            yield data
            offset += len(data)
            if offset >= size:
                return
            msg = None

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
