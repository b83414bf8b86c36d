"""Local uploads by descriptor (docs/protocol.md §2.2): a client on the server's machine, running as the
server's user, hands the server its open file instead of sending the bytes through the socket.

The file still reaches the server as its bytes, and the server still opens no client path: the client
opens its file read-only and passes the descriptor over a Unix socket (SCM_RIGHTS) with the one-use
ticket its ``upload`` offer or begin got (``"local": true``). The server copies from that descriptor in
the kernel (``copy_file_range``) into the upload's partial file, hashes what it stored, and finishes the
upload exactly as a last chunk does (server/blobs.py ``BlobStore.take_fd``): the same name, grant and
store. A 200 MB take is never copied through two processes' memory and a TCP socket; a remote client,
another user's client, Windows, or any refusal here goes the byte way (§2.1).

Who may hand descriptors: the socket lives in a fresh 0700 directory of the server's user (so no other
user can connect), and on Linux the peer's uid must be the server's (``SO_PEERCRED``). The descriptor
must be a regular file at least as long as the upload; at most ``MAX_BUSY`` are copied at once. A refusal
of who or how many is ``local_refused``: the client then sends the bytes to the same upload.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import tempfile
import threading

from server.protocol import ProtocolError

log = logging.getLogger("m2ugen.server")

SUPPORTED = hasattr(socket, "AF_UNIX") and hasattr(socket, "recv_fds") and hasattr(socket, "send_fds")
MAX_BUSY = 2  # descriptors copied at once
TICKET_BYTES = 64  # a ticket is 32 hex digits; anything longer is not one
TIMEOUT_S = 30.0  # for the ticket to arrive and for each progress line to be taken


def send_line(conn: socket.socket, obj: dict) -> None:
    conn.sendall(json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n")


class LocalIntake:
    """The Unix socket where local clients hand descriptors, with one thread per connection."""

    def __init__(self, blobs):
        self.blobs = blobs
        self._busy = threading.BoundedSemaphore(MAX_BUSY)
        self._dir: str | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.path: str | None = None

    def start(self) -> str | None:
        """Open the socket; -> its path, or None where descriptors cannot be passed (uploads send bytes)."""
        if not SUPPORTED:
            return None
        self._dir = tempfile.mkdtemp(prefix="m2ugen-")  # 0700: only this user can reach the socket
        path = os.path.join(self._dir, "uploads.sock")
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(16)
        except OSError as e:
            log.info("local uploads by descriptor are off (%s): clients send bytes", e)
            shutil.rmtree(self._dir, ignore_errors=True)
            return None
        self._sock, self.path = sock, path
        self._thread = threading.Thread(target=self._accept, name="m2ugen-local-uploads", daemon=True)
        self._thread.start()
        self.blobs.local_socket = path
        return path

    def stop(self) -> None:
        if self._sock is None:
            return
        self.blobs.local_socket = None
        self._stopping = True
        try:  # wake accept(): closing a listening socket from another thread does not
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(self.path)
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5.0)
        self._sock.close()
        self._sock = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self._stopping:
                conn.close()
                return
            threading.Thread(target=self._serve, args=(conn,), name="m2ugen-local-upload", daemon=True).start()

    @staticmethod
    def _same_user(conn: socket.socket) -> bool:
        """On Linux, the peer's uid is the server's; elsewhere the 0700 directory decides who connects."""
        peercred = getattr(socket, "SO_PEERCRED", None)
        if peercred is None:
            return True
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))
        return uid == os.getuid()

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        with conn:
            conn.settimeout(TIMEOUT_S)
            try:
                if not self._same_user(conn):
                    send_line(conn, {"op": "error", "code": "local_refused",
                                     "message": "descriptors are taken only from the server's own user; send bytes"})
                    return
                msg, fds, _flags, _addr = socket.recv_fds(conn, TICKET_BYTES, 1)
                try:
                    ticket = msg.decode("ascii").strip()
                except UnicodeDecodeError:
                    ticket = ""
                if len(fds) != 1 or not ticket:
                    send_line(conn, {"op": "error", "code": "bad_request",
                                     "message": "send the upload's ticket with exactly one file descriptor"})
                    return
                if not self._busy.acquire(blocking=False):
                    send_line(conn, {"op": "error", "code": "local_refused",
                                     "message": f"{MAX_BUSY} local uploads are being copied; send bytes"})
                    return
                try:
                    state = self.blobs.take_fd(ticket, fds[0], on_progress=lambda n: send_line(conn, {"offset": n}))
                except ProtocolError as e:
                    send_line(conn, {"op": "error", "code": e.code, "message": e.message, "field": e.field})
                    return
                finally:
                    self._busy.release()
                send_line(conn, {"op": "uploaded", **state})
            except OSError as e:  # the client went away, or sent nothing in time
                log.info("a local upload by descriptor ended: %s", e)
            finally:
                for fd in fds:
                    os.close(fd)
