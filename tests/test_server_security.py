"""Loopback-only binding, CURVE authentication, allowed roots, the discovery file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import zmq

from server import discovery, security
from server.app import ServerApp, ServerSettings, model_info
from server.client import Client, ServerUnavailable


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.0.0.5", True), ("::1", True),
                                       ("localhost", True), ("0.0.0.0", False), ("192.168.1.20", False),
                                       ("::", False)])
def test_is_loopback(host, loop):
    assert security.is_loopback(host) is loop


def test_non_loopback_bind_without_keys_refuses_with_reason(tmp_path, tiny_model):
    s = ServerSettings(host="0.0.0.0", port=0, data_dir=tmp_path / "d", keys_dir=tmp_path / "nokeys",
                       write_discovery=False)
    with pytest.raises(security.SecurityError, match=r"refusing to bind 0\.0\.0\.0.*m2ugen keys"):
        ServerApp(tiny_model, model_info(tiny_model, "tiny"), s)
    s.curve = False
    with pytest.raises(security.SecurityError, match="CURVE is off"):
        ServerApp(tiny_model, model_info(tiny_model, "tiny"), s)


def test_cli_serve_non_loopback_without_keys_exits_with_reason(tmp_path):
    env = {**os.environ, "M2UGEN_CONFIG_DIR": str(tmp_path / "cfg"), "M2UGEN_DATA_DIR": str(tmp_path / "data")}
    p = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--host", "0.0.0.0", "--port", "0",
                        "--preset", "tiny"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "refusing to bind 0.0.0.0" in p.stderr and "m2ugen keys" in p.stderr
    assert "attention gates" not in p.stderr  # refused before the model was loaded (its load logs the gates)


def test_curve_handshake_with_keys_and_refusal_without(make_server, tmp_path):
    keys = tmp_path / "keys"
    paths = security.create_keys(keys)
    assert oct(paths["client_secret"].stat().st_mode)[-3:] == "600"
    with pytest.raises(security.SecurityError, match="already exist"):
        security.create_keys(keys)
    srv = make_server(curve=True, keys_dir=keys)  # loopback with CURVE forced on
    server_pub = security.load_public_key(paths["server_public"])
    client_keys = security.load_client_keys(keys)
    with Client(srv.endpoint, server_public_key=server_pub, client_keys=client_keys, timeout_s=5) as c:
        assert c.call("ping").op == "pong"
    stranger = zmq.curve_keypair()  # a valid key pair the server does not know
    with Client(srv.endpoint, server_public_key=server_pub, client_keys=stranger, timeout_s=1) as c:
        with pytest.raises(ServerUnavailable):
            c.call("ping")
    plain = zmq.Context.instance().socket(zmq.DEALER)  # no CURVE at all
    plain.linger = 0
    plain.connect(srv.endpoint)
    plain.send_multipart([b'{"v":1,"op":"ping"}'])
    assert plain.poll(1000) == 0
    plain.close()
    info = discovery.read()
    assert info["curve"] is True and info["server_public_key"] == server_pub.decode()


def test_allowed_roots(tmp_path):
    inside = tmp_path / "in"
    inside.mkdir()
    f = inside / "a.wav"
    f.write_bytes(b"x")
    roots = security.AllowedRoots([inside])
    assert roots.check_read(str(f), "audio") == f.resolve()
    link = inside / "escape"
    link.symlink_to("/etc")
    with pytest.raises(security.PathNotAllowed, match="outside the allowed roots"):
        roots.check_read(str(link / "hostname"), "audio")
    with pytest.raises(security.PathNotAllowed, match="outside"):
        roots.check_read(str(inside / ".." / "x.wav"), "audio")
    with pytest.raises(security.PathNotAllowed, match="absolute"):
        roots.check_write("out.wav", "output")
    with pytest.raises(FileNotFoundError):
        roots.check_read(str(inside / "missing.wav"), "audio")
    assert roots.check_write(str(inside / "new" / "o.wav"), "output") == (inside / "new" / "o.wav").resolve()


def test_discovery_file_written_and_where(server_info):
    info = discovery.read()
    assert info["endpoint"] == server_info.endpoint and info["protocol"] == 1 and info["running"] is True
    assert os.path.isabs(info["cli"]) and info["pid"] == os.getpid()
    assert info["jobs_dir"] == str(server_info.jobs_dir)
    p = subprocess.run([sys.executable, "-m", "server.cli", "where"], capture_output=True, text=True, timeout=30,
                       env={**os.environ})
    assert p.returncode == 0 and json.loads(p.stdout)["endpoint"] == server_info.endpoint
    with Client() as c:  # no endpoint: found through the discovery file
        assert c.endpoint == server_info.endpoint and c.call("ping").op == "pong"
