"""Who a job belongs to (docs/protocol.md §1, "Clients and their jobs").

A request's owner is, in this order:
- ``key:<z85 public key>`` — the CURVE key the connection authenticated with (CURVE on);
- ``token:<sha256 of the token, 24 hex>`` — the request's ``token`` field: a secret the client keeps
  (the ``m2ugen`` CLI and the Python ``Client`` keep one per user in ``<config dir>/client.token``;
  the server hands a fresh one out in ``welcome.client.token`` to a client that has none);
- ``conn:<hex>`` — neither: the connection itself (its jobs are lost to it when it reconnects).

The owner is recorded with the job (and so in the journal, across restarts); ``status``, ``subscribe``,
``result``, ``cancel`` and ``jobs`` see only the caller's own jobs (another's job is ``not_found``),
unless the server runs with ``--shared-jobs`` (one person's machine: every client sees every job).
Only the hash of a token is ever stored or sent, never the token.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Any

from server.protocol import ProtocolError

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{22,128}")
OWNER_FIELD = "\x00owner"  # set by the server on each parsed request header (a client's value is replaced)


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_path(name: str = "client") -> Path:
    from m2ugen import paths

    return paths.config_dir() / f"{name}.token"


def user_token(name: str = "client") -> str:
    """This user's token, created on first use (mode 0600: other accounts cannot read it)."""
    path = token_path(name)
    try:
        token = path.read_text(encoding="ascii").strip()
        if TOKEN_RE.fullmatch(token):
            return token
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    try:
        os.link(tmp, path)  # the first writer wins; a concurrent one reads the winner's token
    except FileExistsError:
        os.unlink(tmp)
        return user_token(name)
    except OSError:  # no hard links here: replace atomically
        os.replace(tmp, path)
        return token
    os.unlink(tmp)
    return token


def _curve_user(frame: Any) -> str | None:
    try:
        user = frame.get("User-Id")
    except Exception:  # a plain bytes frame, or no ZAP on this socket
        return None
    return user or None


def owner_of(identity: bytes, header: dict[str, Any], frame0: Any = None) -> str:
    """The owner of a request (see the module's doc); raises ProtocolError for a malformed token."""
    user = _curve_user(frame0)
    if user:
        return f"key:{user}"
    token = header.get("token")
    if token is not None:
        if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
            raise ProtocolError("bad_request", "field 'token' must be 22 to 128 letters, digits, '_' or '-' (the "
                                               "token the welcome gave, or one the client made with as much "
                                               "randomness)", "token")
        return "token:" + hashlib.sha256(token.encode("ascii")).hexdigest()[:24]
    return "conn:" + bytes(identity).hex()


class Access:
    """Which jobs a caller may see: its own, or all with ``shared`` (serve --shared-jobs)."""

    def __init__(self, shared: bool = False):
        self.shared = shared

    def allows(self, caller: str, job_owner: str | None) -> bool:
        return self.shared or (job_owner is not None and job_owner == caller)

    def check(self, caller: str, job_owner: str | None, job_id: str) -> None:
        if not self.allows(caller, job_owner):  # the same answer as for an unknown id: nothing leaks
            raise ProtocolError("not_found", f"no job with id {job_id!r}", "job")

    def list_owner(self, caller: str) -> str | None:
        """The owner ``jobs`` lists for the caller (None: everyone's)."""
        return None if self.shared else caller

    def welcome(self, caller: str) -> dict[str, Any]:
        """``welcome.client``: who the server takes the caller to be, and a token for one that has none."""
        issued = new_token() if caller.startswith("conn:") else None
        return {"owner": caller, "token": issued, "shared_jobs": self.shared}
