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
