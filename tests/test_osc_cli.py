"""The bridge's command line: defaults, and the refusals that must happen before serving."""

import argparse

import pytest

from bridge_osc import cli
from bridge_osc.bridge import Bridge


def parse(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults():
    args = parse([])
    assert (args.host, args.port, args.server, args.reply_port, args.allow_remote) == (
        "127.0.0.1", 9100, None, 9101, False)


def test_non_loopback_needs_allow_remote(capsys):
    assert cli.run(parse(["--host", "0.0.0.0", "--port", "0"])) == 2
    assert "--allow-remote" in capsys.readouterr().err
    with pytest.raises(ValueError, match="allow_remote"):
        Bridge("tcp://127.0.0.1:5557", "192.168.1.10", 0)


def test_bad_endpoint_and_reply_port(capsys):
    assert cli.run(parse(["--server", "not-an-endpoint", "--port", "0"])) == 2
    assert "not-an-endpoint" in capsys.readouterr().err
    assert cli.run(parse(["--reply-port", "70000", "--port", "0"])) == 2
    assert "reply_port" in capsys.readouterr().err


def test_port_in_use(capsys):
    bridge = Bridge("tcp://127.0.0.1:5557", "127.0.0.1", 0)
    try:
        assert cli.run(parse(["--port", str(bridge.port)])) == 1
        assert f"127.0.0.1:{bridge.port}" in capsys.readouterr().err
    finally:
        bridge.close()
