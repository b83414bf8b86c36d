"""Chunked uploads (/m2u/upload + submit option `upload`): options too big for one UDP datagram.

macOS drops UDP datagrams over 9,216 bytes by default (net.inet.udp.maxdgram; ExistentialAudio/SwiftOSC#16,
shared/docs/daw-bridges.md §4.3), so a 600-note clip melody can never go in one `/m2u/submit`. Every
datagram these tests send stays under that limit; the bridge runs against the scripted fake server.
"""

import json

import pytest

from bridge_osc import osc, uploads
from bridge_osc.osc import Message
from bridge_osc.requests import ArgError, apply_upload, parse
from bridge_osc.uploads import UploadError, Uploads
from tests.test_osc_fake_server import bridge, fake, peer  # noqa: F401 (fixtures)

MACOS_MAX_DGRAM = 9216


def melody(n: int) -> list:
    return [[round(i * 0.125, 4), round(i * 0.125 + 0.1, 4), 60 + i % 24, 90] for i in range(n)]


def pieces(text: str, size: int = 4000) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def send(peer, address, *args):
    dgram = osc.encode(address, *args)
    assert len(dgram) < MACOS_MAX_DGRAM, f"{address}: {len(dgram)} bytes would be dropped on macOS"
    peer.sock.sendto(dgram, peer.bridge)


@pytest.mark.timeout(30)
def test_a_600_note_melody_goes_in_pieces_and_the_submit_names_it(peer, fake):
    notes = melody(600)
    text = json.dumps({"midi_notes": notes}, separators=(",", ":"))
    one_submit = osc.encode("/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "lofi"), ("s", "midi_notes"),
                            ("s", json.dumps(notes, separators=(",", ":"))))
    assert len(one_submit) > MACOS_MAX_DGRAM  # what the device used to send: dropped on a Mac
    parts = pieces(text)
    for index in reversed(range(len(parts))):  # order does not matter
        send(peer, "/m2u/upload", ("s", "u1"), ("i", index), ("i", len(parts)), ("s", parts[index]), ("i", peer.port))
    assert peer.expect("/m2u/uploaded")[-1].args == ["u1", len(text)]
    send(peer, "/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "lofi"), ("s", "upload"), ("s", "u1"),
         ("s", "tag"), ("s", "t-1"), ("s", "reply_port"), ("i", peer.port))
    accepted = peer.expect("/m2u/accepted")[-1]
    assert accepted.args[2] == "t-1", "the request's tag comes back with its job"
    submit = [h for h in fake.requests if h["op"] == "submit"][-1]
    assert len(submit["inputs"]["midi"]["notes"]) == 600
    assert submit["inputs"]["midi"]["notes"][599][:3] == notes[599][:3]
    # an upload is used once
    send(peer, "/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "lofi"), ("s", "upload"), ("s", "u1"),
         ("s", "tag"), ("s", "t-2"), ("s", "reply_port"), ("i", peer.port))
    error = peer.expect("/m2u/error")[-1]
    assert error.args[:2] == ["t-2", "bad_upload"] and "no upload 'u1'" in error.args[2]


@pytest.mark.timeout(30)
def test_a_missing_piece_is_named_and_the_request_is_refused(peer, fake):
    parts = pieces(json.dumps({"midi_notes": melody(300)}), 2000)
    for index in range(len(parts) - 1):  # the last piece is lost
        send(peer, "/m2u/upload", ("s", "u2"), ("i", index), ("i", len(parts)), ("s", parts[index]), ("i", peer.port))
    send(peer, "/m2u/submit", ("s", "generate"), ("s", "prompt"), ("s", "x"), ("s", "upload"), ("s", "u2"),
         ("s", "tag"), ("s", "t-3"), ("s", "reply_port"), ("i", peer.port))
    error = peer.expect("/m2u/error")[-1]
    assert error.args[:2] == ["t-3", "upload_incomplete"]
    assert f"[{len(parts) - 1}]" in error.args[2]
    assert not [h for h in fake.requests if h["op"] == "submit"]


def test_uploads_expire_and_have_limits():
    now = [0.0]
    store = Uploads(clock=lambda: now[0])
    a, b = ("127.0.0.1", 9101), ("127.0.0.1", 9102)
    assert store.add(a, "x", 0, 2, '{"midi_notes": ') is None
    assert store.add(a, "x", 1, 2, "[[0, 1, 60]]}") == len('{"midi_notes": [[0, 1, 60]]}')
    with pytest.raises(UploadError, match="no upload 'x'"):
        store.take(b, "x")  # another client never sees it
    now[0] += uploads.EXPIRY_S + 1
    with pytest.raises(UploadError, match="expired"):
        store.take(a, "x")
    for i in range(uploads.MAX_UPLOADS_PER_CLIENT):
        store.add(a, f"u{i}", 0, 2, "{")
    with pytest.raises(UploadError) as e:
        store.add(a, "one-more", 0, 2, "{")
    assert e.value.code == "too_many_uploads"
    store.add(b, "other", 0, 1, "{}")  # the limit is per client
    with pytest.raises(UploadError) as e:
        store.add(b, "big", 0, 1, "x" * (uploads.MAX_UPLOAD_BYTES + 1))
    assert e.value.code == "upload_too_large"
    with pytest.raises(UploadError, match="count must be"):
        store.add(b, "c", 3, 2, "")
    with pytest.raises(UploadError, match="begun with 2 pieces"):
        store.add(a, "u0", 1, 3, "")
    store.add(b, "keys", 0, 1, '{"seed": 3}')
    with pytest.raises(UploadError, match="options midi_notes, clip"):
        store.take(b, "keys")


def test_a_learn_file_list_goes_as_an_upload():
    request = parse(Message("/m2u/submit", "sssss", ["finetune", "adapter_name", "mine", "upload", "u9"]))
    assert request.upload == "u9" and not request.clips  # the clips come with the upload
    apply_upload(request, {"clip": ["/a.wav", "/b.wav"]})
    assert request.clips == ["/a.wav", "/b.wav"] and request.upload == ""
    ask = parse(Message("/m2u/submit", "sssssss", ["ask", "prompt", "what", "audio", "/a.wav", "upload", "u1"]))
    with pytest.raises(ArgError, match="takes no midi"):
        apply_upload(ask, {"midi_notes": "[[0, 1, 60]]"})
    with pytest.raises(ArgError, match="upload"):
        parse(Message("/m2u/submit", "sssss", ["generate", "prompt", "x", "upload", "../etc"]))
