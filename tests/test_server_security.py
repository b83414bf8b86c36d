"""Loopback-only binding, CURVE authentication, the server's own files, the discovery file."""

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
    plain.send_multipart([b'{"v":2,"op":"ping"}'])
    assert plain.poll(1000) == 0
    plain.close()
    info = discovery.read()
    assert info["curve"] is True and info["server_public_key"] == server_pub.decode()


def test_the_server_opens_its_own_files_without_following_links(tmp_path):
    root = tmp_path / "jobs"
    (root / "j1").mkdir(parents=True)
    (root / "j1" / "result.wav").write_bytes(b"RIFF own")
    with security.open_inside(root, root / "j1" / "result.wav", "result") as f:
        assert f.read() == b"RIFF own"
    (tmp_path / "secret").write_bytes(b"key")
    (root / "j1" / "swapped.wav").symlink_to(tmp_path / "secret")
    with pytest.raises(security.PathNotAllowed, match="not a plain file"):
        security.open_inside(root, root / "j1" / "swapped.wav", "result")
    (root / "j2").symlink_to(tmp_path, target_is_directory=True)  # a job folder swapped for a link
    with pytest.raises(security.PathNotAllowed, match="not a plain folder"):
        security.open_inside(root, root / "j2" / "secret", "result")
    for outside in (tmp_path / "secret", root / ".." / "secret", "/etc/hostname"):
        with pytest.raises(security.PathNotAllowed):
            security.open_inside(root, outside, "result")


def test_serve_has_no_allowed_roots_any_more():
    from server.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--allow-root", "/srv"])
    assert not hasattr(security, "AllowedRoots")


def test_discovery_file_written_and_where(server_info):
    info = discovery.read()
    assert info["endpoint"] == server_info.endpoint and info["protocol"] == 3 and info["running"] is True
    assert os.path.isabs(info["cli"]) and info["pid"] == os.getpid()
    assert info["jobs_dir"] == str(server_info.jobs_dir)
    p = subprocess.run([sys.executable, "-m", "server.cli", "where"], capture_output=True, text=True, timeout=30,
                       env={**os.environ})
    assert p.returncode == 0 and json.loads(p.stdout)["endpoint"] == server_info.endpoint
    with Client() as c:  # no endpoint: found through the discovery file
        assert c.endpoint == server_info.endpoint and c.call("ping").op == "pong"
