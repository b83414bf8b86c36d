"""The bridge's per-request options (`/m2u/submit`), results written from fetched bytes into the
client's results folder (never the server's jobs folder), takes, analyses, the job listing, and the
loopback rule it shares with the server; against the scripted fake server of test_osc_fake_server."""

import os
import socket

import pytest

from bridge_osc import osc
from bridge_osc.bridge import Bridge, start_in_thread
from server import protocol
from bridge_osc.results import CAPTURE_PREFIX, capture_folder, purge_captures
from test_osc_fake_server import FakeServer, OscPeer, in_wav, uploaded, wav_bytes  # noqa: F401 (a fixture)


@pytest.fixture
def fake():
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture
def bridge(fake, tmp_path):
    handle = start_in_thread(fake.endpoint, port=0, ping_interval_s=0.1, ping_timeout_s=0.5,
                             results_dir=tmp_path / "user-results", capture_dir=tmp_path / "captures")
    yield handle
    handle.stop()


@pytest.fixture
def peer(bridge):
    p = OscPeer(bridge.port)
    p.send("/m2u/hello", ("i", p.port))
    p.expect("/m2u/welcome")
    yield p
    p.close()


def submit(peer, kind, **options):
    args = [("s", kind)]
    for name, value in options.items():
        values = value if isinstance(value, tuple) else (value,)
        args.append(("s", name))
        for v in values:
            args.append(("s", v) if isinstance(v, str) else ("i", v) if isinstance(v, int) else ("f", v))
    peer.send("/m2u/submit", *args)


def last_submit(fake):
    return [h for h in fake.requests if h["op"] == "submit"][-1]


@pytest.mark.timeout(30)
def test_submit_carries_its_own_options(peer, fake):
    peer.send("/m2u/set", ("s", "seed"), ("i", 5))  # a sticky setting of an old client...
    peer.expect("/m2u/set")
    submit(peer, "generate", prompt="lofi piano with vinyl", duration=8.0, seed=42, takes=2, mode="continue",
           fit_tempo=1, bars=4, loop=1, sample_rate=48000, bpm=92.5, time_signature=(3, 4), key="F# minor",
           project_sample_rate=48000, conditioning="embedding")
    peer.expect("/m2u/done")
    sent = last_submit(fake)
    assert sent["kind"] == "generate"
    assert sent["params"] == {  # ...is overridden by the request's own seed
        "prompt": "lofi piano with vinyl", "duration": 8.0, "seed": 42, "takes": 2, "mode": "continue",
        "fit_tempo": True, "bars": 4, "loop": True, "sample_rate": 48000, "conditioning": "embedding",
        "context": {"bpm": 92.5, "time_signature": [3, 4], "key": "F# minor", "project_sample_rate": 48000}}

    # values equal to the protocol's defaults are not sent; seed -1 = random; "" = unset
    submit(peer, "generate", prompt="pad", takes=1, mode="text", fit_tempo=0, bars=0, loop=0, seed=-1, key="",
           image="")
    peer.expect("/m2u/done")
    assert last_submit(fake)["params"] == {"prompt": "pad", "seed": 5}  # only the sticky /m2u/set seed
    assert last_submit(fake)["inputs"] == {}


@pytest.mark.timeout(30)
def test_submit_edit_with_audio_region_and_generate_with_image(peer, fake, in_wav, tmp_path):
    submit(peer, "edit", audio=str(in_wav), prompt="more drums", start=1.0, end=3.5)
    peer.expect("/m2u/done")
    assert last_submit(fake)["inputs"] == {"audio": uploaded(in_wav, start=1.0, end=3.5)}
    cat = tmp_path / "cat.png"
    cat.write_bytes(b"PNG-cat")
    submit(peer, "generate", prompt="a cat", image=str(cat))
    peer.expect("/m2u/done")
    assert last_submit(fake)["inputs"] == {"image": uploaded(cat)}


@pytest.mark.parametrize("options, message", [
    ({"prompt": "x", "takes": 9}, "'params.takes' must be in 1..8"),  # the server's own rule (protocol.PARAMS)
    ({"prompt": "x", "mode": "remix"}, "'params.mode' must be one of text, continue, melody"),
    ({"prompt": "x", "colour": "red"}, "not an option name"),
    ({"prompt": "x", "seed": "seven"}, "seed takes a number"),
    ({"prompt": "x", "fit_tempo": 2}, "fit_tempo is 0 or 1"),
    ({"duration": 4.0}, "option prompt is required"),
    ({"prompt": "x", "image": "/tmp/cat.txt"}, "image '/tmp/cat.txt' has extension '.txt'"),
])
@pytest.mark.timeout(30)
def test_submit_refuses_bad_options(peer, fake, options, message):
    submit(peer, "generate", **options)
    error = peer.expect("/m2u/error")[-1]
    assert error.args[:2] == ["", "bad_args"] and message in error.args[2]
    assert not [h for h in fake.requests if h["op"] == "submit"]


@pytest.mark.timeout(30)
def test_edit_needs_audio_and_kind_must_be_known(peer):
    submit(peer, "edit", prompt="x")
    assert "needs the option audio" in peer.expect("/m2u/error")[-1].args[2]
    submit(peer, "remix", prompt="x")
    assert "unknown kind 'remix'" in peer.expect("/m2u/error")[-1].args[2]


@pytest.mark.timeout(30)
def test_result_is_written_into_the_results_folder_from_fetched_bytes(peer, fake, tmp_path):
    folder = tmp_path / "My Set Project" / "Samples" / "M2UGen"
    folder.parent.parent.mkdir()  # a saved Set's folder: the bridge makes Samples/M2UGen in it
    submit(peer, "generate", prompt="lofi piano", results_dir=str(folder))
    got = peer.expect("/m2u/done")
    job, path, seconds, rate = got[-1].args
    assert os.path.dirname(path) == str(folder) and path.endswith(f"-{job}.wav")
    assert open(path, "rb").read() == wav_bytes(job, 0)  # the server's bytes, not its path
    assert (seconds, rate) == (4.0, 32000)
    assert not any("/tmp/fake" in str(a) for m in got for a in m.args)  # the jobs folder is never named
    fetches = [{k: v for k, v in h.items() if k != "token"} for h in fake.requests if h["op"] == "result"]
    assert fetches == [{"v": 3, "op": "result", "req": fetches[0]["req"], "job": job, "want": "bytes",
                        "offset": 0}]

    # a lost /m2u/done: status re-sends the local file (no second download)
    peer.send("/m2u/status", ("s", job))
    assert peer.expect("/m2u/done")[-1].args[1] == path
    assert len([h for h in fake.requests if h["op"] == "result"]) == 1

    # "user": the bridge's own folder (--results-dir) for a client that knows no Set folder
    submit(peer, "generate", prompt="pad", results_dir="user")
    path = peer.expect("/m2u/done")[-1].args[1]
    assert os.path.dirname(path) == str(tmp_path / "user-results")


CHUNK = 64 * 1024


def big_wav(job: str, take: int) -> bytes:
    """A take's WAV of 2.5 chunks whose every chunk differs (a chunk written twice or skipped shows)."""
    head = wav_bytes(job, take)
    body = b"".join(f"{job}:{take}:{i:08d};".encode() for i in range(int(2.5 * CHUNK) // 16))
    return head + body


def result_fetches(fake, job):
    return [(h.get("take"), h.get("offset")) for h in fake.requests if h["op"] == "result" and h["job"] == job]


@pytest.mark.timeout(30)
def test_a_result_larger_than_a_chunk_is_fetched_in_chunks(peer, fake, tmp_path, monkeypatch):
    """Neither side holds a whole result: the bridge asks for it chunk by chunk (`offset`), every take."""
    monkeypatch.setattr(protocol, "RESULT_CHUNK_BYTES", CHUNK)
    fake.make_wav = big_wav
    folder = tmp_path / "r"
    submit(peer, "generate", prompt="long pad", takes=2, results_dir=str(folder))
    got = peer.expect("/m2u/done")
    job = got[-1].args[0]
    takes = [m.args[3] for m in got if m.address == "/m2u/take"]
    assert [open(p, "rb").read() == big_wav(job, i) for i, p in enumerate(takes)] == [True, True]
    assert len(big_wav(job, 0)) > 2 * CHUNK
    offsets = [0, CHUNK, 2 * CHUNK]
    assert result_fetches(fake, job) == [(None, o) for o in offsets] + [(2, o) for o in offsets]
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(p) for p in takes)  # no temp file left



def test_write_result_from_chunks_compares_a_file_there_chunk_by_chunk(tmp_path):
    """A re-fetch into a folder holding the same bytes keeps that file; a file of the same size with other
    bytes is kept too and the result gets the next name (the chunks fetched again for it)."""
    from bridge_osc.results import ResultsRefused, write_result

    data = big_wav("job7", 0)
    calls = []

    def chunks():
        calls.append(1)
        return (data[i:i + CHUNK] for i in range(0, len(data), CHUNK))

    first = write_result(tmp_path, "a.wav", chunks, len(data))
    assert first.read_bytes() == data and len(calls) == 1
    assert write_result(tmp_path, "a.wav", chunks, len(data)) == first and len(calls) == 2  # compared, kept
    edited = bytearray(data)
    edited[-5] ^= 0xFF  # the user's edit, in the last chunk
    first.write_bytes(edited)
    second = write_result(tmp_path, "a.wav", chunks, len(data))
    assert second.name == "a (2).wav" and second.read_bytes() == data and first.read_bytes() == edited
    assert len(calls) == 4  # compared (until the last chunk differed), then fetched again to write
    with pytest.raises(ResultsRefused, match="not a MIDI file"):
        write_result(tmp_path, "b.mid", chunks, len(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a (2).wav", "a.wav"]  # no temp file left


@pytest.mark.timeout(30)
def test_a_result_that_fails_midway_writes_nothing(peer, fake, tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "RESULT_CHUNK_BYTES", CHUNK)
    fake.make_wav = big_wav
    fake.refuse_offsets = {2 * CHUNK}
    folder = tmp_path / "r"
    submit(peer, "generate", prompt="gone", results_dir=str(folder))
    error = peer.expect("/m2u/error")[-1]
    assert error.args[1] == "not_found" and "is gone" in error.args[2] and "/m2u/result" in error.args[2]
    assert os.listdir(folder) == []  # neither the file nor its temp file
    fake.refuse_offsets = set()
    peer.send("/m2u/result", ("s", error.args[0]), ("s", str(folder)))
    path = peer.expect("/m2u/done")[-1].args[1]
    assert open(path, "rb").read() == big_wav(error.args[0], 0)


@pytest.mark.timeout(30)
def test_takes_are_fetched_one_by_one_with_their_seeds(peer, fake, tmp_path):
    submit(peer, "generate", prompt="drums", takes=3, results_dir=str(tmp_path / "r"))
    got = peer.expect("/m2u/done")
    job = got[-1].args[0]
    takes = [m.args for m in got if m.address == "/m2u/take"]
    assert [(t[1], t[2], t[4]) for t in takes] == [(0, 3, 11), (1, 3, 12), (2, 3, 13)]
    for index, take in enumerate(takes):
        assert open(take[3], "rb").read() == wav_bytes(job, index)
    assert got[-1].args[1] == takes[0][3]
    assert [h.get("take") for h in fake.requests if h["op"] == "result"] == [None, 2, 3]  # takes count from 1


@pytest.mark.timeout(30)
def test_a_server_without_take_support_never_gets_take_one_filed_as_take_two(tmp_path):
    fake = FakeServer(knows_take=False)
    handle = start_in_thread(fake.endpoint, port=0, ping_interval_s=0.1)
    peer = OscPeer(handle.port)
    try:
        submit(peer, "generate", prompt="drums", takes=2, results_dir=str(tmp_path / "r"), reply_port=peer.port)
        got = peer.expect("/m2u/done")
        takes = [m.args for m in got if m.address == "/m2u/take"]
        assert takes[0][3].endswith(".wav") and takes[1][3] == ""  # not fetched: said so, not faked
        assert sorted(os.listdir(tmp_path / "r")) == [os.path.basename(takes[0][3])]
    finally:
        peer.close()
        handle.stop()
        fake.stop()


@pytest.mark.timeout(30)
def test_analysis_of_input_and_result_reach_the_client(peer, in_wav):
    submit(peer, "edit", prompt="continue it", audio=str(in_wav), mode="continue")
    got = peer.expect("/m2u/done")
    analyses = {m.args[1]: m.args for m in got if m.address == "/m2u/analysis"}
    assert set(analyses) == {"input", "result"}
    inp = analyses["input"]
    assert inp[2] == "92 BPM, F# minor, -14.0 LUFS, 8.0 s"
    pairs = dict(zip(inp[3::2], inp[4::2]))
    assert pairs["bpm"] == 92.0 and pairs["key_name"] == "F# minor" and pairs["meter"] == 4
    assert pairs["lufs"] == -14.0 and "beats" not in pairs  # lists stay on the server
    assert pairs["bpm_confidence"] == pytest.approx(0.97) and "bpm_alternative" not in pairs  # sure: no other level
    assert "bpm" not in dict(zip(analyses["result"][3::2], analyses["result"][4::2]))  # null left out
    order = [m.address for m in got]
    assert order.index("/m2u/analysis") < order.index("/m2u/done")


@pytest.mark.parametrize("folder, message", [
    ("relative/folder", "must be an absolute path"),
    ("/tmp/a/../../etc", "contains '..'"),
])
@pytest.mark.timeout(30)
def test_results_folder_refusals(peer, fake, folder, message):
    submit(peer, "generate", prompt="x", results_dir=folder)
    error = peer.expect("/m2u/error")[-1]
    assert error.args[:2] == ["", "bad_results_dir"] and message in error.args[2]
    assert not [h for h in fake.requests if h["op"] == "submit"]  # refused before the server sees it


@pytest.mark.timeout(30)
def test_a_symlink_or_another_file_in_the_results_folder_is_never_written_through_or_over(peer, fake, tmp_path):
    folder, outside = tmp_path / "r", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("keep me")
    submit(peer, "generate", prompt="hold")  # learn the next job id: job1 is held
    held = peer.expect("/m2u/accepted")[-1].args[0]
    evil, mine = f"job{int(held[3:]) + 1}", f"job{int(held[3:]) + 2}"
    os.symlink(outside, folder / f"M2UGen-evil-{evil}.wav")
    (folder / f"M2UGen-mine-{mine}.wav").write_bytes(b"RIFF\0\0\0\0WAVE the user's own edit")
    submit(peer, "generate", prompt="evil", results_dir=str(folder))
    path = peer.expect("/m2u/done")[-1].args[1]
    assert path == str(folder / f"M2UGen-evil-{evil} (2).wav") and open(path, "rb").read() == wav_bytes(evil, 0)
    assert outside.read_text() == "keep me" and (folder / f"M2UGen-evil-{evil}.wav").is_symlink()
    submit(peer, "generate", prompt="mine", results_dir=str(folder))
    path = peer.expect("/m2u/done")[-1].args[1]
    assert path.endswith(f"M2UGen-mine-{mine} (2).wav")
    assert (folder / f"M2UGen-mine-{mine}.wav").read_bytes().endswith(b"the user's own edit")
    submit(peer, "generate", prompt="far", results_dir=str(tmp_path / "a" / "b" / "c"))  # 3 missing folders
    error = peer.expect("/m2u/error")[-1]
    assert error.args[1] == "bad_results_dir" and "at most the last 2 folders" in error.args[2]
    assert not (tmp_path / "a").exists()


def test_write_result_writes_only_wav_and_midi_of_their_kind(tmp_path):
    from bridge_osc.results import ResultsRefused, results_folder, write_result

    (tmp_path / "Set").mkdir()
    folder = results_folder(str(tmp_path / "Set" / "Samples" / "M2UGen"))  # two new folders at most
    wav = b"RIFF\0\0\0\0WAVE" + b"\0" * 32

    def whole(data: bytes):  # a result fetched in one chunk, as the router passes it
        return (lambda: (data,)), len(data)

    assert write_result(folder, "a.wav", *whole(wav)).read_bytes() == wav
    assert write_result(folder, "a.wav", *whole(wav)) == folder / "a.wav"  # the same bytes again: kept
    for name, data, why in (("a.txt", wav, "only .wav and .mid"), ("b.wav", b"#!/bin/sh\n", "not a WAV"),
                            ("c.mid", wav, "not a MIDI file"), ("../d.wav", wav, "plain file name")):
        with pytest.raises(ResultsRefused, match=why):
            write_result(folder, name, *whole(data))
    assert sorted(p.name for p in folder.iterdir()) == ["a.wav"]
    assert write_result(folder, "s.mid", *whole(b"MThd\0\0\0\x06\0\x01\0\x01\x01\xe0")).name == "s.mid"


@pytest.mark.timeout(30)
def test_job_list_and_reinsert_into_another_folder(peer, fake, tmp_path):
    submit(peer, "generate", prompt="first")
    first = peer.expect("/m2u/done")[-1].args[0]
    submit(peer, "generate", prompt="second one")
    second = peer.expect("/m2u/done")[-1].args[0]
    peer.send("/m2u/jobs", ("i", 10))
    got = peer.expect("/m2u/jobs")
    lines = [m for m in got if m.address == "/m2u/job"]
    assert [m.tags for m in lines] == ["iissssfs"] * 2
    assert [(m.args[0], m.args[1], m.args[2], m.args[5]) for m in lines] == [(0, 2, second, "second one"),
                                                                            (1, 2, first, "first")]
    assert lines[0].args[3:5] == ["generate", "done"] and lines[0].args[7].startswith("2027-")
    assert got[-1].args == [2]
    assert [h["limit"] for h in fake.requests if h["op"] == "jobs"] == [10]

    # re-insert: the result of an earlier job, written into this Set's folder
    peer.send("/m2u/result", ("s", first), ("s", str(tmp_path / "set2")))
    done = peer.expect("/m2u/done")[-1]
    assert done.args[0] == first and os.path.dirname(done.args[1]) == str(tmp_path / "set2")
    assert open(done.args[1], "rb").read() == wav_bytes(first, 0)
    assert "first" in os.path.basename(done.args[1])  # the file is named after the job's prompt
    peer.send("/m2u/result", ("s", "nope"))
    assert peer.expect("/m2u/error")[-1].args[:2] == ["nope", "not_found"]


def test_bind_names_the_server_calls_loopback(monkeypatch):
    """`--osc-host ip6-localhost` is loopback for the server, so the bridge must accept it too."""
    real = socket.getaddrinfo

    def resolve(host, *args, **kw):
        if host == "ip6-localhost":  # not every machine's hosts file names it
            return [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("::1", args[0] if args else 0, 0, 0))]
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    bridge = Bridge("tcp://127.0.0.1:5557", "ip6-localhost", 0)
    try:
        assert bridge.host == "::1"
    finally:
        bridge.close()
    with pytest.raises(ValueError, match="allow_remote"):
        Bridge("tcp://127.0.0.1:5557", "10.1.2.3", 0)


def test_capture_folder_is_cleaned(tmp_path):
    folder = capture_folder(tmp_path / "c")
    old, new, other = folder / f"{CAPTURE_PREFIX}a.wav", folder / f"{CAPTURE_PREFIX}b.wav", folder / "mine.wav"
    for f in (old, new, other):
        f.write_bytes(b"RIFF")
    os.utime(old, (1000.0, 1000.0))
    assert purge_captures(folder, max_age_s=3600) == [old]
    assert sorted(p.name for p in folder.iterdir()) == [f"{CAPTURE_PREFIX}b.wav", "mine.wav"]


@pytest.mark.timeout(30)
def test_bad_requests_still_answered_after_new_addresses(peer):
    for dgram in (osc.encode("/m2u/jobs", ("s", "x")), osc.encode("/m2u/result"),
                  osc.encode("/m2u/submit", ("i", 1))):
        peer.send_raw(dgram)
        assert peer.expect("/m2u/error")[-1].args[1] == "bad_args"


@pytest.mark.timeout(30)
def test_inputs_are_read_by_the_bridge_and_uploaded_once(fake, tmp_path):
    """The server opens no client path: the bridge reads the files (it runs as the user) and sends their
    bytes, offered by hash first, so the same clip again is not sent twice."""
    clip, image = tmp_path / "clip.wav", tmp_path / "cat.png"
    clip.write_bytes(wav_bytes("clip", 0))
    image.write_bytes(b"PNG-cat")
    handle = start_in_thread(fake.endpoint, port=0, ping_interval_s=0.1)
    peer = OscPeer(handle.port)

    def chunks():
        return [h for h in fake.requests if h["op"] == "upload" and "offset" in h]

    try:
        submit(peer, "edit", prompt="x", audio=str(clip), start=0.5, end=1.0, reply_port=peer.port)
        peer.expect("/m2u/done")
        assert last_submit(fake)["inputs"] == {"audio": uploaded(clip, start=0.5, end=1.0)}
        assert len(chunks()) == 1 and fake.uploads[uploaded(clip)["blob"]] == clip.read_bytes()
        submit(peer, "edit", prompt="again", audio=str(clip), reply_port=peer.port)  # a regenerate
        peer.expect("/m2u/done")
        assert last_submit(fake)["inputs"] == {"audio": uploaded(clip)} and len(chunks()) == 1  # not sent again
        submit(peer, "generate", prompt="x", image=str(image), reply_port=peer.port)
        peer.expect("/m2u/done")
        assert last_submit(fake)["inputs"] == {"image": uploaded(image)}
        submit(peer, "edit", prompt="x", audio=str(tmp_path / "gone.wav"), reply_port=peer.port)
        error = peer.expect("/m2u/error")[-1]
        assert error.args[1] == "bad_audio" and "cannot read the audio file" in error.args[2]
        peer.send("/m2u/learn", ("s", "mine"), ("s", str(clip)), ("s", "relative.wav"), ("i", peer.port))
        error = peer.expect("/m2u/error")[-1]
        assert error.args[1] == "bad_audio" and "must be absolute" in error.args[2]
        assert all(f == [] for h, f in zip(fake.requests, fake.frames) if h["op"] == "submit")  # no bytes in submits
    finally:
        peer.close()
        handle.stop()
