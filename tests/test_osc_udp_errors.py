"""UDP error paths of the bridge's socket, with a scripted socket in place of the real one: an ICMP
"port unreachable" of an earlier reply surfaces as ConnectionError on the next recvfrom/sendto
(Windows; connected sockets elsewhere) and must neither lose a datagram nor stop the bridge."""

import pytest

from bridge_osc import osc
from bridge_osc.bridge import Bridge


class ScriptedSocket:
    def __init__(self, incoming, send_errors=()):
        self.incoming = list(incoming)  # items: (dgram, addr) or an exception to raise
        self.send_errors = list(send_errors)
        self.sent = []

    def recvfrom(self, size):
        if not self.incoming:
            raise BlockingIOError()
        item = self.incoming.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def sendto(self, dgram, addr):
        if self.send_errors:
            raise self.send_errors.pop(0)
        self.sent.append((osc.decode(dgram)[0], addr))


@pytest.fixture
def bridge():
    b = Bridge("tcp://127.0.0.1:5557", "127.0.0.1", 0)
    real = b.sock
    yield b
    b.sock = real
    b.close()


def test_connection_error_on_recv_does_not_lose_the_datagrams_behind_it(bridge):
    ping = osc.encode("/m2u/ping", ("i", 9300))
    bridge.sock = ScriptedSocket([ConnectionResetError(10054, "reset"), (ping, ("127.0.0.1", 5000)),
                                  ConnectionRefusedError(111, "refused"), (ping, ("127.0.0.1", 5001))])
    bridge._drain_udp()
    assert [(m.address, addr) for m, addr in bridge.sock.sent] == [("/m2u/pong", ("127.0.0.1", 9300))] * 2


def test_a_pending_error_on_send_is_retried_once(bridge):
    bridge.sock = ScriptedSocket([], send_errors=[ConnectionRefusedError(111, "refused")])
    bridge._send(("127.0.0.1", 9300), "/m2u/pong", ("s", "v"), ("s", "up"))
    assert [m.args for m, _ in bridge.sock.sent] == [["v", "up"]]
    bridge.sock = ScriptedSocket([], send_errors=[ConnectionRefusedError(111, "x"), ConnectionRefusedError(111, "y")])
    bridge._send(("127.0.0.1", 9300), "/m2u/pong", ("s", "v"), ("s", "up"))  # gives up, no exception
    assert bridge.sock.sent == []


def _deep_notes(depth=1100):
    """A ~2.2 KB datagram whose midi_notes JSON is nested ``depth`` deep (the parser's recursion limit)."""
    return osc.encode("/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "x"),
                      ("s", "midi_notes"), ("s", "[" * depth + "]" * depth), ("s", "reply_port"), ("i", 9300))


def test_json_nested_past_the_parser_limit_is_refused_not_fatal(bridge):
    dgram = _deep_notes()
    assert len(dgram) < 2400
    ping = osc.encode("/m2u/ping", ("i", 9300))
    bridge.sock = ScriptedSocket([(dgram, ("127.0.0.1", 5000))] * 4 + [(ping, ("127.0.0.1", 5000))])
    bridge._drain_udp()  # raises nothing
    sent = [(m.address, m.args) for m, _ in bridge.sock.sent]
    assert [a for a, _ in sent] == ["/m2u/error"] * 4 + ["/m2u/pong"]
    assert all(args[1] == "bad_args" and "nested deeper" in args[2] for _, args in sent[:4]), sent


def test_a_request_that_breaks_the_parser_is_answered_and_the_bridge_goes_on(bridge, monkeypatch):
    from bridge_osc import bridge as bridge_mod

    def broken(message):
        raise KeyError("a parser bug")

    monkeypatch.setattr(bridge_mod, "parse", broken)
    bridge.sock = ScriptedSocket([(osc.encode("/m2u/ping", ("i", 9300)), ("127.0.0.1", 5000))])
    bridge._drain_udp()
    assert [(m.address, m.args[1]) for m, _ in bridge.sock.sent] == [("/m2u/error", "bad_args")]


def test_the_bridge_never_answers_itself(bridge):
    own = ("127.0.0.1", bridge.port)
    hello = osc.encode("/m2u/hello", ("i", bridge.port))
    bridge.sock = ScriptedSocket([(hello, ("127.0.0.1", 5000)), (osc.encode("/m2u/ping"), ("127.0.0.1", 5000)),
                                  (osc.encode("/m2u/welcome"), own),  # a datagram claiming to be the bridge
                                  (osc.encode("/m2u/ping", ("i", bridge.port)), ("127.0.0.1", 5001))])
    bridge._drain_udp()
    sent = [(m.address, addr) for m, addr in bridge.sock.sent]
    assert own not in [addr for _, addr in sent]
    # the hello naming the bridge's own port is refused (to its source), the next ping goes to the default
    assert sent == [("/m2u/error", ("127.0.0.1", 5000)), ("/m2u/pong", ("127.0.0.1", bridge.default_reply_port))]
    assert "own port" in bridge.sock.sent[0][0].args[2]


def test_a_hello_moves_only_its_own_senders_replies(bridge):
    a, b = ("127.0.0.1", 5000), ("127.0.0.1", 5001)  # two clients on one host
    bridge.sock = ScriptedSocket([(osc.encode("/m2u/hello", ("i", 9400)), a), (osc.encode("/m2u/ping"), b),
                                  (osc.encode("/m2u/ping"), a)])
    bridge.server_up = False  # the welcome goes out at once (no server in this test)
    bridge._drain_udp()
    assert [(m.address, addr) for m, addr in bridge.sock.sent] == [
        ("/m2u/welcome", ("127.0.0.1", 9400)), ("/m2u/pong", ("127.0.0.1", bridge.default_reply_port)),
        ("/m2u/pong", ("127.0.0.1", 9400))]


def test_a_restarted_bridge_keeps_its_clients_reply_ports(bridge):
    bridge.sock = ScriptedSocket([(osc.encode("/m2u/hello", ("i", 9400)), ("127.0.0.1", 5000))])
    bridge.server_up = False
    bridge._drain_udp()
    fresh = Bridge("tcp://127.0.0.1:5557", "127.0.0.1", 0)
    try:
        fresh.adopt(bridge)
        real, fresh.sock = fresh.sock, ScriptedSocket([(osc.encode("/m2u/ping"), ("127.0.0.1", 5000))])
        fresh._drain_udp()
        assert [addr for _, addr in fresh.sock.sent] == [("127.0.0.1", 9400)]
    finally:
        fresh.sock = real
        fresh.close()
