"""Allowed roots for client paths, CURVE keys, and the loopback-only bind rule.

Keys layout (``m2ugen keys`` creates it; default ``<config dir>/keys``)::

    server.key  server.key_secret     the server's key pair (server.key is public: give it to clients)
    client.key  client.key_secret     a client key pair (copy both to the client machine's keys dir)
    authorized/*.key                  public keys of the clients the server accepts
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import tempfile
from pathlib import Path

import zmq
import zmq.auth

from m2ugen import paths


class SecurityError(Exception):
    """The server must not start (or a key is missing); the message says why and what to do."""


class PathNotAllowed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# allowed roots


def default_roots() -> list[Path]:
    return [Path.home(), Path(tempfile.gettempdir())]


class AllowedRoots:
    """Client paths are read and written only inside these directories (symlinks resolved)."""

    def __init__(self, roots: list[str | Path]):
        if not roots:
            raise ValueError("at least one allowed root is needed")
        self.roots = [Path(os.path.realpath(Path(r).expanduser())) for r in roots]

    def _resolve(self, path: str, what: str) -> Path:
        """The real path (symlinks resolved) of an absolute client path inside the roots."""
        p = Path(path)
        if not p.is_absolute():
            raise PathNotAllowed(f"{what} path {path!r} must be absolute")
        real = Path(os.path.realpath(p))
        if not any(real == r or real.is_relative_to(r) for r in self.roots):
            raise PathNotAllowed(f"{what} path {path!r} is outside the allowed roots "
                                 f"({', '.join(map(str, self.roots))})")
        return real

    def check_read(self, path: str, what: str) -> Path:
        """Resolved path of an existing file inside the roots, else PathNotAllowed / FileNotFoundError."""
        real = self._resolve(path, what)
        if not real.is_file():
            raise FileNotFoundError(f"{what} path {path!r} does not exist or is not a file")
        return real

    def check_write(self, path: str, what: str) -> Path:
        """Resolved target path inside the roots (its directory is created if needed)."""
        real = self._resolve(path, what)
        if real.is_dir():
            raise PathNotAllowed(f"{what} path {path!r} is a directory; give a file name")
        return real


# ---------------------------------------------------------------------------------------------
# bind rule


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:  # a host name: loopback only if every address it resolves to is loopback
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_bind(host: str, keys_dir: Path, use_curve: bool) -> None:
    """Refuse a non-loopback bind without CURVE keys; raises SecurityError with the reason."""
    if is_loopback(host):
        return
    if not use_curve:
        raise SecurityError(f"refusing to bind {host}: it is not a loopback address and CURVE is off. "
                            f"Remote clients must be authenticated: run `m2ugen keys` and start the server "
                            f"with the keys (they are looked up in {keys_dir}).")
    if not (keys_dir / "server.key_secret").is_file():
        raise SecurityError(f"refusing to bind {host}: it is not a loopback address and no CURVE server key "
                            f"was found in {keys_dir}. Run `m2ugen keys` first (remote clients then need "
                            f"client.key, client.key_secret and server.key).")


# ---------------------------------------------------------------------------------------------
# CURVE keys


def default_keys_dir() -> Path:
    return paths.config_dir() / "keys"


def create_keys(keys_dir: Path, force: bool = False) -> dict[str, Path]:
    """Create the server and one client key pair, and authorize that client. Returns the file paths."""
    if not zmq.has("curve"):
        raise SecurityError("this libzmq was built without CURVE support")
    keys_dir.mkdir(parents=True, exist_ok=True)
    if (keys_dir / "server.key_secret").exists() and not force:
        raise SecurityError(f"keys already exist in {keys_dir}; pass --force to replace them")
    server_pub, server_sec = zmq.auth.create_certificates(keys_dir, "server")
    client_pub, client_sec = zmq.auth.create_certificates(keys_dir, "client")
    authorized = keys_dir / "authorized"
    authorized.mkdir(exist_ok=True)
    shutil.copy(client_pub, authorized / "client.key")
    for secret in (server_sec, client_sec):
        os.chmod(secret, 0o600)
    return {"server_public": Path(server_pub), "server_secret": Path(server_sec),
            "client_public": Path(client_pub), "client_secret": Path(client_sec), "authorized": authorized}


def load_server_keys(keys_dir: Path) -> tuple[bytes, bytes]:
    path = keys_dir / "server.key_secret"
    if not path.is_file():
        raise SecurityError(f"no CURVE server key in {keys_dir}; run `m2ugen keys`")
    public, secret = zmq.auth.load_certificate(path)
    return public, secret


def load_client_keys(keys_dir: Path) -> tuple[bytes, bytes]:
    path = keys_dir / "client.key_secret"
    if not path.is_file():
        raise SecurityError(f"no CURVE client key in {keys_dir}; copy client.key and client.key_secret "
                            f"from the server's keys dir (created by `m2ugen keys`)")
    public, secret = zmq.auth.load_certificate(path)
    return public, secret


def load_public_key(path_or_key: str | bytes | Path) -> bytes:
    """A Z85 public key given as 40 characters or as a .key certificate file."""
    if isinstance(path_or_key, bytes) and len(path_or_key) == 40:
        return path_or_key
    if isinstance(path_or_key, str) and len(path_or_key) == 40 and not os.path.exists(path_or_key):
        return path_or_key.encode("ascii")
    public, _ = zmq.auth.load_certificate(Path(path_or_key))
    return public
