"""Local uploads by descriptor (issue 20, docs/protocol.md §2.2): a client of the server's own user on the
same machine hands its open file over a Unix socket; the server copies it in the kernel and names it as a
byte upload would. Everything else (another user, too many at once, a remote server, a client that will
not) sends bytes to the same upload; bad descriptors and tickets are refused and drop the upload."""

from __future__ import annotations

import json
import os
import socket

import blake3
import pytest

from server import blobs as blobs_mod
from server import localfd
from server.client import Client, RequestRefused

pytestmark = pytest.mark.skipif(not localfd.SUPPORTED, reason="no SCM_RIGHTS on this platform: bytes only")


def spy_chunks(monkeypatch) -> list[int]:
    """Counts the bytes the client sends as chunks through the ZeroMQ socket."""
    from server import client as client_mod

    sent: list[int] = []
    real = client_mod.Client._send_chunks

    def send_chunks(self, f, upload, size, offset, *a, **kw):
        sent.append(size - offset)
        return real(self, f, upload, size, offset, *a, **kw)

    monkeypatch.setattr(client_mod.Client, "_send_chunks", send_chunks)
    return sent


def test_a_local_client_hands_its_file_over_and_it_is_named_as_its_bytes(server_info, tmp_path, monkeypatch):
    monkeypatch.setattr(blobs_mod, "LOCAL_SEGMENT", 1 << 20)  # several segments: copy and hash overlap
    data = os.urandom(5 * 2**20 + 12345)
    src = tmp_path / "take.wav"
    src.write_bytes(data)
    store = server_info.app.blobs
    chunks = spy_chunks(monkeypatch)
    with Client(server_info.endpoint, timeout_s=30, hash_cache=False) as c:
        seen = []
        ref = c.upload(src, on_progress=lambda done, total: seen.append((done, total)))
    assert ref["blob"] == blake3.blake3(data).hexdigest() and chunks == []  # no byte went through ZeroMQ
    assert store.received_bytes == len(data) and (store.root / ref["blob"]).read_bytes() == data
    assert [d for d, _ in seen[:3]] == [2**20, 2 * 2**20, 3 * 2**20] and seen[-1] == (len(data), len(data))
    src.write_bytes(data[::-1])  # the same path, new bytes: a new upload, named by the new bytes
    with Client(server_info.endpoint, timeout_s=30, hash_cache=False, local_uploads=False) as c:
        ref2 = c.upload(src)  # a client that will not hand descriptors: the same store through chunks
    assert ref2["blob"] == blake3.blake3(data[::-1]).hexdigest() and chunks == [len(data)]
    assert store.received_bytes == 2 * len(data)


def test_another_users_descriptor_or_too_many_at_once_falls_back_to_bytes(server_info, tmp_path, monkeypatch):
    data = os.urandom(300_000)
    src = tmp_path / "a.wav"
    src.write_bytes(data)
    chunks = spy_chunks(monkeypatch)
    real_uid = os.getuid()
    monkeypatch.setattr(localfd.os, "getuid", lambda: real_uid + 1)  # the peer is now "another user"
    with Client(server_info.endpoint, timeout_s=30, hash_cache=False) as c:
        ref = c.upload(src)
    assert ref["blob"] == blake3.blake3(data).hexdigest() and chunks == [len(data)]
    monkeypatch.setattr(localfd.os, "getuid", lambda: real_uid)
    intake = server_info.app.local_uploads
    for _ in range(localfd.MAX_BUSY):  # every copying slot is taken
        assert intake._busy.acquire(blocking=False)
    try:
        src.write_bytes(data[::-1])
        with Client(server_info.endpoint, timeout_s=30, hash_cache=False) as c:
            ref = c.upload(src)
        assert ref["blob"] == blake3.blake3(data[::-1]).hexdigest() and chunks == [len(data), len(data)]
    finally:
        for _ in range(localfd.MAX_BUSY):
            intake._busy.release()


def hand(path: str, ticket: str, fd: int) -> list[dict]:
    """A raw client of the local socket: the ticket and one descriptor; -> the lines it answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        socket.send_fds(s, [ticket.encode()], [fd])
        return [json.loads(line) for line in s.makefile("rb")]


def test_bad_descriptors_and_tickets_are_refused_and_drop_the_upload(server_info, tmp_path):
    store = server_info.app.blobs
    data = os.urandom(100_000)
    short = tmp_path / "short.bin"
    short.write_bytes(data[:5000])
    good = tmp_path / "good.bin"
    good.write_bytes(data)
    with Client(server_info.endpoint, timeout_s=30, hash_cache=False) as c:
        def ticket() -> dict:
            state = c.call("upload", size=len(data), local=True).header
            assert state["have"] is False and len(state["ticket"]) == 32, state
            return state

        st = ticket()
        r, w = os.pipe()
        try:
            assert hand(st["local_socket"], st["ticket"], r)[-1]["message"].startswith("the descriptor handed over is not a regular file")
        finally:
            os.close(r)
            os.close(w)
        assert c.call("upload", [data[:10]], upload=st["upload"], offset=0).header["code"] == "bad_upload"  # dropped
        st = ticket()
        with open(short, "rb") as f:
            last = hand(st["local_socket"], st["ticket"], f.fileno())[-1]
        assert last["code"] == "bad_upload" and last["field"] == "size" and "5000 bytes" in last["message"]
        st = ticket()
        with open(good, "rb") as f:
            assert hand(st["local_socket"], "0" * 32, f.fileno())[-1]["field"] == "ticket"  # not this one
            assert hand(st["local_socket"], st["ticket"], f.fileno())[-1]["op"] == "uploaded"
            assert hand(st["local_socket"], st["ticket"], f.fileno())[-1]["code"] == "bad_upload"  # used once
        assert store.has(blake3.blake3(data).hexdigest())
        st = ticket()  # begun by chunks: the ticket is gone
        assert c.call("upload", [data[:10]], upload=st["upload"], offset=0).header["offset"] == 10
        with open(good, "rb") as f:
            assert hand(st["local_socket"], st["ticket"], f.fileno())[-1]["field"] == "ticket"
    assert stat_mode(server_info.app.local_uploads.path) == 0o600
    assert stat_mode(os.path.dirname(server_info.app.local_uploads.path)) == 0o700  # this user's alone


def stat_mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


def test_a_file_that_shrinks_while_it_is_copied_is_refused(server_info, tmp_path, monkeypatch):
    data = os.urandom(3 * 2**20)
    src = tmp_path / "growing.wav"
    src.write_bytes(data)
    monkeypatch.setattr(blobs_mod, "LOCAL_SEGMENT", 1 << 20)
    real = blobs_mod._copy_range
    copied = []

    def copy_then_truncate(s, d, offset, n):
        real(s, d, offset, n)
        copied.append(offset)
        if len(copied) == 1:
            os.truncate(src, 2**20 + 10)  # the DAW rewrites the file after the first segment

    monkeypatch.setattr(blobs_mod, "_copy_range", copy_then_truncate)
    with Client(server_info.endpoint, timeout_s=30, hash_cache=False) as c:
        with pytest.raises(RequestRefused) as e:
            c.upload(src)
    assert e.value.code == "bad_upload" and "ended at" in e.value.header["message"]
    assert server_info.app.blobs.received_bytes == 0 and not any((server_info.app.blobs.root / "partial").iterdir())


def test_the_socket_is_gone_after_stop_and_a_client_then_sends_bytes(make_server, tmp_path, monkeypatch):
    srv = make_server()
    path = srv.app.local_uploads.path
    assert os.path.exists(path)
    srv.app.stop()
    assert not os.path.exists(os.path.dirname(path)) and srv.app.blobs.local_socket is None
    off = make_server(local_uploads=False)
    assert off.app.local_uploads is None
    data = os.urandom(70_000)
    src = tmp_path / "x.wav"
    src.write_bytes(data)
    chunks = spy_chunks(monkeypatch)
    with Client(off.endpoint, timeout_s=30, hash_cache=False) as c:
        assert c.call("upload", size=10, local=True).header.get("ticket") is None
        assert c.upload(src)["blob"] == blake3.blake3(data).hexdigest() and chunks == [len(data)]
