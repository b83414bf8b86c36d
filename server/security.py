"""The server's own files (opened and written without following links), CURVE keys, and the
loopback-only bind rule. No client path is ever opened by the server (docs/protocol.md: inputs are
uploaded bytes, results go back as bytes); what is left here protects the server's own data dir.

Keys layout (``m2ugen keys`` creates it; default ``<config dir>/keys``)::

    server.key  server.key_secret     the server's key pair (server.key is public: give it to clients)
    client.key  client.key_secret     a client key pair (copy both to the client machine's keys dir)
    authorized/*.key                  public keys of the clients the server accepts
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

import zmq
import zmq.auth

from m2ugen import paths
from server.protocol import is_loopback  # noqa: F401  (the bind rule below; re-exported)


class SecurityError(Exception):
    """The server must not start (or a key is missing); the message says why and what to do."""


class PathNotAllowed(Exception):
    """A file that must not be opened or written (it is a link, not a regular file, or outside its folder)."""


class OutputExists(PathNotAllowed):
    """The output file exists and may not be replaced."""


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FD = os.open in os.supports_dir_fd and bool(_NOFOLLOW)  # POSIX: walk with dir fds; else plain paths


def open_inside(root: Path, path: str | Path, what: str):
    """A binary file object of the regular file ``path`` inside the directory ``root`` (the server's
    own, resolved once at start), opened one component at a time from ``root`` without following a
    link: a file swapped for a symlink is refused, never followed (PathNotAllowed / FileNotFoundError)."""
    root = Path(root)
    try:
        rel = Path(os.path.normpath(path)).relative_to(root)
    except ValueError:
        raise PathNotAllowed(f"{what} {str(path)!r} is not inside {root}") from None
    if not rel.parts or ".." in rel.parts:
        raise PathNotAllowed(f"{what} {str(path)!r} is not a file inside {root}")
    if not _DIR_FD:
        real = Path(os.path.realpath(root / rel))
        if real != root / rel or not real.is_file():
            raise PathNotAllowed(f"{what} {str(path)!r} is a link or not a regular file")
        return open(real, "rb")
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for part in rel.parts[:-1]:
            try:
                nfd = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except OSError as e:
                raise PathNotAllowed(f"{what} {str(path)!r}: {part!r} is not a plain folder ({e.strerror})") from None
            os.close(fd)
            fd = nfd
        try:
            ffd = os.open(rel.parts[-1], os.O_RDONLY | _NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise PathNotAllowed(f"{what} {str(path)!r} is not a plain file ({e.strerror})") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(ffd).st_mode):
        os.close(ffd)
        raise PathNotAllowed(f"{what} {str(path)!r} is not a regular file")
    return os.fdopen(ffd, "rb")


def _walk(real_dir: Path, *, create: bool, what: str) -> int:
    """An fd of ``real_dir`` (absolute, symlinks resolved), opened one component at a time with
    O_NOFOLLOW from /; missing components are created with ``create``. A component that is (now) a
    symlink or a file fails with PathNotAllowed."""
    fd = os.open("/", os.O_RDONLY | _DIRECTORY)
    try:
        for part in real_dir.parts[1:]:
            try:
                nfd = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except OSError as e:
                raise PathNotAllowed(f"{what} directory {str(real_dir)!r} changed while in use: {part!r} "
                                     f"is not a plain directory ({e.strerror})") from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(f, data) -> None:
    """``data``: bytes, or an iterable of chunks written as they come (a result fetched in chunks)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        f.write(data)
        return
    for chunk in data:
        f.write(chunk)


def write_atomic_confined(real: Path, data, what: str,
                          may_replace: Callable[[bytes], bool] | None = None) -> Path:
    """Atomic write of ``data`` (bytes, or an iterable of chunks) to the resolved path ``real``, through
    a directory fd (see _walk).
    ``real`` must already be resolved (it is not resolved again: that is the point). Temp files are
    named ``.<name>.<random>.tmp`` (``clean_temp_files`` removes leftovers)."""
    if not _DIR_FD:
        real.parent.mkdir(parents=True, exist_ok=True)
        _check_existing(real, None, what, may_replace)
        fd, tmp = tempfile.mkstemp(prefix="." + real.name + ".", suffix=".tmp", dir=real.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                _write_all(f, data)
            os.replace(tmp, real)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return real
    dir_fd = _walk(real.parent, create=True, what=what)
    try:
        _check_existing(real, dir_fd, what, may_replace)
        tmp = f".{real.name}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as f:
                _write_all(f, data)
            _check_existing(real, dir_fd, what, may_replace)  # again, just before the rename
            os.replace(tmp, real.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(dir_fd)
    return real


def _check_existing(real: Path, dir_fd: int | None, what: str, may_replace) -> None:
    try:
        st = os.stat(real.name if dir_fd is not None else real, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise PathNotAllowed(f"{what} path {str(real)!r} exists and is not a regular file; it is not replaced")
    head = b""
    if may_replace is not None:
        try:
            fd = os.open(real.name if dir_fd is not None else real, os.O_RDONLY | _NOFOLLOW, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as f:
                head = f.read(65536)
        except OSError:
            head = b""
    if may_replace is None or not may_replace(head):
        raise OutputExists(f"{what} path {str(real)!r} exists; it is not replaced")


def _temp_pattern(name: str | None) -> re.Pattern:
    stem = re.escape(name) if name else ".+"
    return re.compile(rf"^\.{stem}\.[A-Za-z0-9_]{{8,16}}\.tmp$")


def clean_temp_files(directory: Path, name: str | None = None, recursive: bool = False) -> int:
    """Remove the ``.<name>.<random>.tmp`` files an interrupted atomic write left (kill -9 mid-write):
    of one target ``name`` or of any; in ``directory`` only or below it. Returns how many."""
    pattern, removed = _temp_pattern(name), 0
    if not os.path.isdir(directory):
        return 0
    walk = os.walk(directory) if recursive else [(str(directory), [], os.listdir(directory))]
    for root, _dirs, files in walk:
        for file in files:
            if pattern.match(file):
                try:
                    os.unlink(os.path.join(root, file))
                    removed += 1
                except OSError:
                    pass
    return removed


# ---------------------------------------------------------------------------------------------
# bind rule


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


CLIENT_KEY_FILES = ("server.key", "client.key", "client.key_secret")


def import_client_keys(source: Path, keys_dir: Path, force: bool = False) -> dict[str, Path]:
    """Copy a client machine's keys (``server.key``, ``client.key``, ``client.key_secret``, as ``m2ugen keys``
    wrote them on the server) from ``source`` into ``keys_dir``. Each file must be a valid certificate (the
    secret one holding the secret half of ``client.key``); the server's secret key is never copied. The
    folder is created owner-only (0700) and the secret written 0600 before any byte lands in it; on Windows
    both modes are no-ops and the per-user config dir's inherited ACL (the user, SYSTEM, Administrators)
    protects them. An existing different key is replaced only with ``force``. Returns the written paths."""
    source = Path(source)
    loaded: dict[str, tuple[bytes, bytes | None]] = {}
    for name in CLIENT_KEY_FILES:
        path = source / name
        if not path.is_file():
            raise SecurityError(f"no {name} in {source}: copy server.key, client.key and client.key_secret from "
                                f"the server's keys dir (`m2ugen keys` prints where it wrote them)")
        try:
            loaded[name] = zmq.auth.load_certificate(path)
        except (OSError, ValueError, zmq.ZMQError) as e:
            raise SecurityError(f"{path} is not a CURVE certificate written by `m2ugen keys` ({e})") from None
    if loaded["client.key_secret"][1] is None:
        raise SecurityError(f"{source / 'client.key_secret'} holds no secret key")
    if loaded["client.key"][0] != loaded["client.key_secret"][0]:
        raise SecurityError(f"{source}: client.key and client.key_secret are not one key pair")
    data = {name: (source / name).read_bytes() for name in CLIENT_KEY_FILES}
    clashes = [name for name in CLIENT_KEY_FILES if (keys_dir / name).exists()
               and (keys_dir / name).read_bytes() != data[name]]
    if clashes and not force:
        raise SecurityError(f"{keys_dir} already holds other keys ({', '.join(clashes)}); pass --force to replace them")
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = {}
    for name in CLIENT_KEY_FILES:
        target = keys_dir / name
        fd, tmp = tempfile.mkstemp(dir=keys_dir, prefix=f".{name}.", suffix=".tmp")  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data[name])  # bytes as written by zmq: no line-ending translation on any platform
            if not name.endswith("_secret"):
                os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        out[name] = target
    return out


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
