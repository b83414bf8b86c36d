"""Files cross the wire as bytes (issue 20): uploads offered by blake3 then sent in chunks, proofs of
possession, results fetched as bytes and written by the client, strict input schemas, and the intake
pool that keeps one client's heavy submit from holding up another's (issue 21.5)."""

from __future__ import annotations

import json
import blake3
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import run_job, tone
from server import blobs, outputs, protocol
from server.client import Client, RequestRefused
from server.security import OutputExists, PathNotAllowed

FAST = {"duration": 0.5, "max_new_tokens": 4}


@pytest.fixture
def outside_dir():
    """A fresh folder outside home and the temp dir (tests run as root here and in CI)."""
    for base in ("/srv", "/opt"):
        if os.access(base, os.W_OK):
            d = Path(tempfile.mkdtemp(prefix="m2ugen-test-", dir=base))
            break
    else:
        pytest.fail("no writable folder outside home and temp (/srv or /opt): run the tests as root, as CI does")
    home, tmp = Path.home().resolve(), Path(tempfile.gettempdir()).resolve()
    assert not d.resolve().is_relative_to(home) and not d.resolve().is_relative_to(tmp)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_wav(path: Path, seconds: float = 1.0, sr: int = 22050, freq: float = 440.0) -> Path:
    sf.write(path, tone(seconds, sr, 2, freq).T, sr)
    return path


def blob_count(srv) -> int:
    return len(srv.app.blobs.stored())


# ---------------------------------------------------------------------------------------------
# uploads


def test_identical_file_is_uploaded_once_and_reused_by_later_jobs(server_info, outside_dir, monkeypatch):
    from server import client as client_mod, hashcache

    src = write_wav(outside_dir / "loop.wav", seconds=2.0)
    size = src.stat().st_size
    store = server_info.app.blobs
    monkeypatch.setattr(hashcache, "RACY_S", 1e9)  # every read is as if the file had just been written
    hashed = []  # the client's own reads of the file to hash it
    real_digest = client_mod._digest
    monkeypatch.setattr(client_mod, "_digest", lambda f, prefix=b"": hashed.append(prefix) or real_digest(f, prefix))
    with Client(server_info.endpoint, timeout_s=30) as c:
        seen = []
        ref = c.upload(src, on_progress=lambda sent, total: seen.append((sent, total)))
        assert store.received_bytes == size and seen[-1] == (size, size)
        assert ref["blob"] == blake3.blake3(src.read_bytes()).hexdigest() and ref["name"] == "loop.wav"
        assert hashed == [] and "proof" not in ref  # a new file on loopback: sent at once, named by the server
        first = run_job(c, "ask", {"prompt": "what is it?", "max_new_tokens": 4}, {"audio": ref})
        again = c.upload(src)  # a regenerate: offered, held, nothing sent
        assert store.received_bytes == size and again == ref
        assert hashed == [b""]  # just written (racy): hashed once to offer it, the remembered hash not trusted
        run_job(c, "edit", {"prompt": "more", **FAST}, {"audio": {**again, "start": 0.5}})
    monkeypatch.setattr(hashcache, "RACY_S", 0.0)  # as if the file had been still for a while when read
    with Client(server_info.endpoint, timeout_s=30) as other:  # another connection of this user (a CLI run)
        assert other.upload(src) == ref and hashed == [b"", b""]  # hashed, and now remembered as settled
        third = other.upload(src)
        assert third == ref and hashed == [b"", b""]  # the remembered hash: the file is not read at all
        assert store.received_bytes == size  # still not sent again
        run_job(other, "ask", {"prompt": "again?", "max_new_tokens": 4}, {"audio": third})
    with Client(server_info.endpoint, timeout_s=30, token=False) as stranger:  # another owner, same machine
        theirs = stranger.upload(src)  # held, not sent by it: it proves it has the bytes (one read)
        assert store.received_bytes == size and len(hashed) == 3 and hashed[-1] != b""
        assert theirs["blob"] == ref["blob"] and len(theirs["proof"]) == 64
        run_job(stranger, "ask", {"prompt": "mine too?", "max_new_tokens": 4}, {"audio": theirs})
    assert first["inputs"]["audio"]["blake3"] == ref["blob"]


def test_a_changed_file_is_sent_again_and_a_remote_server_gets_an_offer_first(server_info, outside_dir, monkeypatch):
    from server import client as client_mod, hashcache

    monkeypatch.setattr(hashcache, "RACY_S", 0.0)
    src = write_wav(outside_dir / "take.wav", seconds=1.0)
    store = server_info.app.blobs
    with Client(server_info.endpoint, timeout_s=30, hash_cache=hashcache.HashCache(outside_dir / "h.json")) as c:
        first = c.upload(src)
        sent = store.received_bytes
        write_wav(src, seconds=1.0, freq=220.0)  # the same size, other bytes: its stat changed
        second = c.upload(src)
        assert second["blob"] == blake3.blake3(src.read_bytes()).hexdigest() != first["blob"]
        assert store.received_bytes == 2 * sent
    remembered = hashcache.HashCache(outside_dir / "h.json")  # the next CLI run reads what this one learnt
    assert remembered.lookup(src.stat()) == (second["blob"], True)
    monkeypatch.setattr(client_mod.protocol, "is_loopback", lambda host: False)  # as over the network
    data = os.urandom(100_000)
    with Client(server_info.endpoint, timeout_s=30) as c:
        ref = c.upload(data)
        assert store.received_bytes == 2 * sent + len(data) and ref["blob"] == blake3.blake3(data).hexdigest()
        calls = []
        real = c.call
        monkeypatch.setattr(c, "call", lambda op, *a, **kw: calls.append((op, kw.get("blake3"))) or real(op, *a, **kw))
        assert c.upload(data) == ref and calls == [("upload", ref["blob"])]  # offered first: nothing sent again
        assert store.received_bytes == 2 * sent + len(data)


def test_a_selection_rendered_again_into_a_new_file_is_offered_not_sent(server_info, outside_dir, monkeypatch):
    from server import client as client_mod

    store = server_info.app.blobs
    hashed = []
    real_digest = client_mod._digest
    monkeypatch.setattr(client_mod, "_digest", lambda f, prefix=b"": hashed.append(prefix) or real_digest(f, prefix))
    first = write_wav(outside_dir / "render-1.wav", seconds=3.0)
    with Client(server_info.endpoint, timeout_s=30, hash_cache=False) as c:
        ref = c.upload(first)
        sent = store.received_bytes
        assert hashed == []  # new: sent at once
        again = outside_dir / "render-2.wav"
        shutil.copyfile(first, again)  # the same selection rendered again: a new file, the same bytes
        assert c.upload(again)["blob"] == ref["blob"] and store.received_bytes == sent and hashed == [b""]
        other = write_wav(outside_dir / "render-3.wav", seconds=3.0, freq=330.0)  # same size, other sound
        assert other.stat().st_size == first.stat().st_size
        assert c.upload(other)["blob"] != ref["blob"] and store.received_bytes == 2 * sent
        assert hashed == [b""]  # not like anything sent before: sent at once, not hashed here


def test_remembered_hashes_are_trusted_only_for_a_file_that_had_settled(tmp_path, monkeypatch):
    from server import hashcache

    f = tmp_path / "a.wav"
    f.write_bytes(b"one")
    st = f.stat()
    cache = hashcache.HashCache(tmp_path / "h.json")
    settled_at = max(st.st_mtime_ns, st.st_ctime_ns) + int(hashcache.RACY_S * 1e9)
    cache.remember(st, st, "a" * 64, settled_at - 1)  # read just before the file had been still for RACY_S
    assert cache.lookup(st) == (None, True)  # sent before, but its hash is not taken as it is
    cache.remember(st, st, "a" * 64, settled_at)
    assert cache.lookup(st) == ("a" * 64, True)
    f.write_bytes(b"two")  # same size, other bytes: another key
    assert cache.lookup(f.stat()) == (None, False)
    cache.remember(f.stat(), st, "b" * 64, settled_at)  # changed while it was read: nothing remembered
    assert cache.lookup(f.stat()) == (None, False)
    monkeypatch.setattr(hashcache, "MAX_ENTRIES", 1)
    g = tmp_path / "b.wav"
    g.write_bytes(b"other")
    cache.remember(g.stat(), g.stat(), "c" * 64, settled_at + 10**10)
    assert cache.lookup(st) == (None, False) and cache.lookup(g.stat()) == ("c" * 64, True)  # the oldest went
    (tmp_path / "h.json").write_text("[not a cache")
    assert hashcache.HashCache(tmp_path / "h.json").lookup(g.stat()) == (None, False)  # unreadable: empty


@pytest.mark.parametrize("splice", [True, False])
def test_chunks_are_written_where_they_belong_with_or_without_splice(tmp_path, monkeypatch, splice):
    if splice and not blobs._SPLICE:
        pytest.skip("no splice(2) on this system")  # the pwrite case runs everywhere
    monkeypatch.setattr(blobs, "_SPLICE", splice)
    data = os.urandom(3 * 2**20 + 5)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        blobs.write_at(fd, data[2**20:], 2**20)
        blobs.write_at(fd, memoryview(data)[:2**20], 0)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data


def test_chunks_go_in_order_and_bytes_must_match_their_hash(server_info):
    data = os.urandom(3 * 2**20 + 17)
    sha = blake3.blake3(data).hexdigest()
    with Client(server_info.endpoint, timeout_s=30) as c:
        offer = c.call("upload", blake3=sha, size=len(data)).header
        assert offer["op"] == "uploaded" and offer["have"] is False and offer["offset"] == 0
        up = offer["upload"]
        r = c.call("upload", [data[:100]], upload=up, offset=5).header  # not where it stands
        assert r["op"] == "error" and r["code"] == "bad_upload" and "stands at 0" in r["message"]
        r = c.call("upload", [data[:2**20]], upload=up, offset=0).header
        assert r["op"] == "uploaded" and r["offset"] == 2**20 and r["have"] is False
        again = c.call("upload", blake3=sha, size=len(data)).header  # resumes where it stood
        assert again["upload"] == up and again["offset"] == 2**20
        with Client(server_info.endpoint, timeout_s=30) as other:  # an upload belongs to its connection
            r = other.call("upload", [data[2**20:2**21]], upload=up, offset=2**20).header
            assert r["code"] == "bad_upload" and r["field"] == "upload"
        r = c.call("upload", [b"x" * (len(data) - 2**20)], upload=up, offset=2**20).header
        assert r["op"] == "error" and r["code"] == "bad_upload" and "do not have blake3" in r["message"]
        assert not server_info.app.blobs.has(sha)  # wrong bytes are never stored
        big = c.call("upload", blake3=sha, size=10 * 2**30).header
        assert big["code"] == "bad_upload" and "at most" in big["message"]
        assert c.call("upload", [data[:10]], upload=up).header["field"] == "offset"  # a frame needs it
        assert c.call("upload", [data[:10]], blake3=sha, size=len(data), offset=0).header["field"] == "offset"
        begun = c.call("upload", size=len(data)).header  # no hash: the server names the bytes
        assert begun["have"] is False and begun["offset"] == 0 and "blake3" not in begun
        for k in range(0, len(data), 2**20):
            r = c.call("upload", [data[k:k + 2**20]], upload=begun["upload"], offset=k).header
        assert r["have"] is True and r["granted"] is True and r["blake3"] == sha and server_info.app.blobs.has(sha)
        assert c.upload(data)["blob"] == sha


def test_a_hash_alone_gives_no_access_to_someone_elses_upload(server_info, outside_dir):
    secret = write_wav(outside_dir / "private.wav", seconds=1.0, freq=660.0)
    with Client(server_info.endpoint, timeout_s=30) as owner:
        ref = owner.upload(secret)
        mine = owner.call("upload", blake3=ref["blob"], size=secret.stat().st_size).header
        assert mine["have"] is True and mine["granted"] is True  # it sent the bytes: it may use them
    sha = ref["blob"]
    with Client(server_info.endpoint, timeout_s=30, token=False) as thief:  # another client (its own owner)
        offer = thief.call("upload", blake3=sha, size=secret.stat().st_size).header
        assert offer["have"] is True and offer["granted"] is False  # it learns the server holds it, nothing more
        with Client(server_info.endpoint, timeout_s=30, token=False) as friend:  # the proof of another connection
            friend_proof = friend.upload(secret)["proof"]
        for proof, why in ((friend_proof, "another connection's proof"), ("0" * 64, "a made-up proof"),
                           (blake3.blake3(offer["challenge"].encode() + sha.encode()).hexdigest(), "the hash"),
                           (None, "no proof")):
            r = thief.call("submit", kind="ask", params={"prompt": "what?"},
                           inputs={"audio": {"blob": sha, **({"proof": proof} if proof else {})}}).header
            assert r["op"] == "error" and r["field"] == "inputs.audio.proof", why
        r = thief.call("submit", kind="ask", params={"prompt": "what?"},
                       inputs={"audio": {"blob": "f" * 64, "proof": "0" * 64}}).header
        assert r["code"] == "blob_unknown" and "upload the file again" in r["message"]


def test_deleting_or_replacing_the_clients_file_after_accepted_changes_nothing(server_info, outside_dir):
    src = write_wav(outside_dir / "take.wav", seconds=1.0)
    with Client(server_info.endpoint, timeout_s=30) as c:
        ref = c.upload(src)
        r = c.call("submit", kind="ask", params={"prompt": "what?", "max_new_tokens": 4}, inputs={"audio": ref})
        assert r.op == "accepted"
        write_wav(src, seconds=3.0, freq=110.0)  # replaced right after accepted
        os.unlink(src)  # then deleted
        while (m := c.recv(timeout_s=60)) is not None and m.op not in ("done", "error"):
            pass
    assert m is not None and m.op == "done" and m.header["inputs"]["audio"]["seconds"] == pytest.approx(1.0, abs=1e-3)


def test_store_expires_unused_uploads_and_evicts_the_least_recently_used(tmp_path):
    store = blobs.BlobStore(tmp_path / "up", max_blob_bytes=2**20, max_total_bytes=3000, ttl_s=100.0,
                            partial_ttl_s=10.0)
    owner = b"client-a"

    def put(data: bytes) -> str:
        sha = blake3.blake3(data).hexdigest()
        up = store.offer(owner, "token:a", sha, len(data))["upload"]
        assert store.put_chunk(owner, up, 0, data)["have"] is True
        return sha

    a, b = put(b"a" * 1000), put(b"b" * 1000)
    os.utime(store.root / a, (1, 1))  # a: used long ago
    c = put(b"c" * 1500)  # does not fit with both: the least recently used goes
    assert not store.has(a) and store.has(b) and store.has(c)
    assert store.granted("token:a", b) and not store.granted("token:a", a)  # a blob's grants go with it
    assert not store.granted("token:b", b)
    half = blake3.blake3(b"d" * 100).hexdigest()
    up = store.offer(owner, "token:a", half, 100)["upload"]
    store.put_chunk(owner, up, 0, b"d" * 50)
    import time

    assert store.sweep(now=time.time() + 50) == 1  # the idle unfinished upload
    assert not list((store.root / "partial").iterdir())
    assert store.sweep(now=time.time() + 1000) == 2 and store.stored() == []


# ---------------------------------------------------------------------------------------------
# strict schemas, old clients


def test_paths_old_clients_and_unknown_fields_are_refused_naming_the_field(server_info, outside_dir):
    src = write_wav(outside_dir / "a.wav")
    with Client(server_info.endpoint, timeout_s=30) as c:
        ref = c.upload(src)

        def refused(**fields):
            h = c.call("submit", **{"kind": "ask", "params": {"prompt": "x"}, **fields}).header
            assert h["op"] == "error", h
            return h

        h = refused(inputs={"audio": {"path": str(src)}})
        assert h["field"] == "inputs.audio.path" and "upload its bytes" in h["message"]
        h = refused(inputs={"audio": {**ref, "strat": 1.0}})  # a typo must not use the whole file
        assert h["code"] == "bad_request" and h["field"] == "inputs.audio.strat" and "strat" in h["message"]
        h = refused(kind="generate", inputs={"image": {**ref, "start": 1.0}})
        assert h["field"] == "inputs.image.start"
        h = refused(kind="finetune", params={"adapter_name": "x"},
                    inputs={"audio_set": [{**ref, "caption": "ok"}, {**ref, "strat": 2.0}]})
        assert h["field"] == "inputs.audio_set[1].strat"
        h = refused(kind="generate", inputs={}, output={"path": str(outside_dir / "o.wav")})
        assert h["field"] == "output.path" and "write them where the user asked" in h["message"]
        h = refused(inputs={"audio": {**ref, "take": 2}})
        assert h["field"] == "inputs.audio.take"
        old = c.socket  # a protocol 1 client
        old.send_multipart([json.dumps({"v": 1, "op": "ping", "req": "old"}).encode()])
        m = c.recv(timeout_s=10)
        assert m.header["code"] == "bad_version" and "uploads their bytes" in m.header["message"]
        assert "update the m2ugen package" in m.header["message"]
        old.send_multipart([json.dumps({"v": 2, "op": "ping", "req": "old2"}).encode()])  # sha256 uploads
        m = c.recv(timeout_s=10)
        assert m.header["code"] == "bad_version" and "named by BLAKE3" in m.header["message"]


def test_an_earlier_result_is_an_input_by_job_id(server_info):
    with Client(server_info.endpoint, timeout_s=30) as c:
        gen = run_job(c, "generate", {"prompt": "drums", **FAST, "takes": 2})
        edit = run_job(c, "edit", {"prompt": "more", **FAST}, {"audio": {"job": gen["job"], "take": 2}})
        assert edit["inputs"]["audio"]["job"] == gen["job"] and edit["inputs"]["audio"]["take"] == 2
        r = c.call("submit", kind="edit", params={"prompt": "x"}, inputs={"audio": {"job": "nope"}}).header
        assert r["code"] == "not_found" and r["field"] == "inputs.audio.job"


# ---------------------------------------------------------------------------------------------
# results: the job's own bytes, written by the client


def test_result_returns_the_jobs_own_bytes_and_never_follows_a_swapped_symlink(server_info, tmp_path):
    secret = server_info.data_dir / "secret.key_secret"
    secret.write_bytes(b"CURVE SECRET " * 10)
    with Client(server_info.endpoint, timeout_s=30) as c:
        done = run_job(c, "generate", {"prompt": "pads", **FAST})
        path = Path(done["audio_path"])
        assert path.parent == server_info.jobs_dir / done["job"]
        own = c.call("result", job=done["job"], want="bytes")
        assert own.frames[0] == path.read_bytes() and own.header["sidecar"]["job"] == done["job"]
        path.unlink()
        path.symlink_to(secret)  # the finished result swapped for a link to the server's key
        r = c.call("result", job=done["job"], want="bytes")
        assert r.op == "error" and r.header["code"] == "not_found" and not r.frames
        assert b"CURVE SECRET" not in b"".join(bytes(f) for f in r.frames)
        sidecar = path.parent / "result.json"
        sidecar.unlink()
        sidecar.symlink_to(secret)
        r = c.call("result", job=done["job"])
        assert r.header.get("sidecar") is None and "CURVE" not in json.dumps(r.header)


def test_results_come_back_in_chunks_written_as_they_come(server_info, outside_dir, monkeypatch):
    monkeypatch.setattr(protocol, "RESULT_CHUNK_BYTES", 4096)
    with Client(server_info.endpoint, timeout_s=30) as c:
        done = run_job(c, "generate", {"prompt": "pads", **FAST, "takes": 2})
        chunks = []
        real_save = outputs.save

        def spy(path, data, **kw):  # what the client hands the writer: chunks as they come, never the file
            if isinstance(data, bytes):  # the sidecar
                return real_save(path, data, **kw)

            def counted():
                for chunk in data:
                    chunks.append(len(chunk))
                    yield chunk
            return real_save(path, counted(), **kw)

        monkeypatch.setattr(outputs, "save", spy)
        saved = c.save_result(done["job"], outside_dir / "pads.wav")
        take1, take2 = (Path(t["audio_path"]).read_bytes() for t in done["takes"])
        assert (outside_dir / "pads.wav").read_bytes() == take1 and saved["audio_path"] == str(outside_dir / "pads.wav")
        assert (outside_dir / "pads-take2.wav").read_bytes() == take2
        assert max(chunks) == 4096 and sum(chunks) == len(take1) + len(take2) and len(chunks) > 4
        whole = c.call("result", job=done["job"], want="bytes")  # one frame, as before
        assert whole.frames[0] == take1 and whole.header["audio"] == {"frame": 1, "size": len(take1)}
        part = c.call("result", job=done["job"], want="bytes", offset=100, take=2)
        assert part.frames[0] == take2[100:4196] and part.header["audio"]["offset"] == 100
        assert "sidecar" not in part.header  # sent with the first chunk only
        end = c.call("result", job=done["job"], want="bytes", offset=len(take1) + 5)
        assert end.frames[0] == b"" and end.header["audio"]["size"] == len(take1)
        bad = c.call("result", job=done["job"], offset=0).header
        assert bad["code"] == "bad_request" and bad["field"] == "offset"
    assert not [p for p in outside_dir.iterdir() if p.name.endswith(".tmp")]


def test_client_writes_results_atomically_only_over_files_of_their_kind(tmp_path, outside_dir):
    wav = outside_dir / "out.wav"
    data = (tmp_path / "x.wav")
    write_wav(data)
    payload = data.read_bytes()
    assert outputs.save(wav, payload) == wav and wav.read_bytes() == payload
    with pytest.raises(OutputExists, match="--overwrite"):
        outputs.save(wav, payload)
    outputs.save(wav, payload[:100] + payload[100:], overwrite=True)  # a WAV over a WAV
    notes = outside_dir / "notes.wav"
    notes.write_text("my notes")
    with pytest.raises(OutputExists, match="not a WAV"):
        outputs.save(notes, payload, overwrite=True)
    assert notes.read_text() == "my notes"
    mid = outside_dir / "song.mid"
    mid.write_bytes(payload)  # a WAV where a .mid goes is not a MIDI file: kept
    with pytest.raises(OutputExists, match="not a MIDI file"):
        outputs.save(mid, b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0", overwrite=True)
    victim = outside_dir / "victim.wav"
    victim.write_bytes(payload)
    link = outside_dir / "link.wav"
    link.symlink_to(victim)
    with pytest.raises(PathNotAllowed, match="not a regular file"):
        outputs.save(link, b"RIFF....WAVEjunk", overwrite=True)
    assert victim.read_bytes() == payload and link.is_symlink()
    assert not [p for p in outside_dir.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# the intake pool: one client's heavy submit never holds up another's


def test_a_heavy_submit_never_delays_another_clients_submit(server_info, monkeypatch, outside_dir):
    from server import inputs as inputs_mod

    inside, release = threading.Event(), threading.Event()
    entered = []
    real = inputs_mod.resolve

    def slow_resolve(spec, sources, job_dir, **kw):
        if (spec.get("audio") or {}).get("name") == "heavy.wav":  # this client's decode is stuck
            entered.append(1)
            inside.set()
            assert release.wait(120)
        return real(spec, sources, job_dir, **kw)

    monkeypatch.setattr(inputs_mod, "resolve", slow_resolve)
    heavy = write_wav(outside_dir / "heavy.wav")
    try:
        with Client(server_info.endpoint, timeout_s=60) as a, Client(server_info.endpoint, timeout_s=60) as b:
            ref = a.upload(heavy)
            reqs = [a.send("submit", kind="ask", params={"prompt": f"q{i}"}, inputs={"audio": ref}) for i in range(3)]
            assert inside.wait(60)
            # client a has three submits stuck or waiting; b's submits and uploads still go through
            light = b.upload(write_wav(outside_dir / "light.wav"))
            for _ in range(3):
                r = b.call("submit", kind="ask", params={"prompt": "quick", "max_new_tokens": 4},
                           inputs={"audio": light})
                assert r.op == "accepted", r.header
            assert not release.is_set() and len(entered) == 1  # a's work runs one item at a time
            assert a.recv(timeout_s=0) is None  # and none of a's submits was answered yet
            release.set()
            answered = set()
            while len(answered) < 3:
                m = a.recv(timeout_s=60)
                assert m is not None
                if m.header.get("req") in reqs:
                    assert m.op == "accepted", m.header
                    answered.add(m.header["req"])
    finally:
        release.set()


def test_pool_takes_clients_in_turn():
    from server.transport import IntakePool

    order, gate, done = [], threading.Event(), threading.Event()

    def run(item):
        if item == "a0":
            assert gate.wait(30)
        return item

    def finished(identity, item):
        order.append(item)
        if len(order) == 6:
            done.set()

    pool = IntakePool(run, finished, threads=1)
    for item in ("a0", "a1", "a2"):
        assert pool.put(b"a", item)
    for item in ("b0", "b1", "c0"):
        assert pool.put(b"b" if item[0] == "b" else b"c", item)
    pool.start()
    gate.set()
    assert done.wait(30)
    pool.stop()
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2"]
    small = IntakePool(run, finished, threads=1, max_waiting_per_client=2, max_waiting_bytes=100)
    assert small.put(b"x", 1) and small.put(b"x", 2) and not small.put(b"x", 3) and small.put(b"y", 1)
    assert small.put(b"z", 1, size=101) is False and small.put(b"z", 1, size=100)  # the frames waiting, in bytes
    assert small.put(b"w", 1, size=1) is False


def test_protocol_table_has_the_upload_op():
    assert "upload" in protocol.REQUEST_OPS and protocol.PROTOCOL_VERSION == 3
    with pytest.raises(protocol.ProtocolError, match="exactly one frame"):
        protocol.check_upload({"blake3": "a" * 64, "size": 3, "offset": 0}, 0)


# ---------------------------------------------------------------------------------------------
# every client, with files outside home and temp (issue 20's everyday case: a sample drive)


def write_mid(path: Path, pitches) -> Path:
    import mido

    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for p in pitches:
        track.append(mido.Message("note_on", note=p, velocity=90, time=0))
        track.append(mido.Message("note_off", note=p, velocity=0, time=mid.ticks_per_beat // 2))
    mid.save(path)
    return path


def cli_lines(capsys) -> list[dict]:
    return [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]


@pytest.mark.timeout(600)
def test_the_cli_reads_and_writes_outside_home_and_temp_for_every_kind(server_info, outside_dir, capsys):
    from PIL import Image

    from server.cli import main

    srv = server_info.endpoint
    src = write_wav(outside_dir / "sample drive take.wav", seconds=1.5)
    pic = outside_dir / "cover.png"
    Image.new("RGB", (16, 16), "blue").save(pic)
    clips = outside_dir / "clips"
    clips.mkdir()
    for i in range(2):
        write_wav(clips / f"c{i}.wav", seconds=0.8, freq=220.0 * (i + 1))
    res = outside_dir / "results"
    common = ["--server", srv, "--max-new-tokens", "4", "--no-progress"]

    assert main(["ask", "--audio", str(src), "--prompt", "what key?", *common]) == 0
    ask = cli_lines(capsys)
    assert ask[0] == {"op": "upload", "name": src.name, "sent": src.stat().st_size, "size": src.stat().st_size}
    assert ask[-2]["op"] == "done" and ask[-2]["inputs"]["audio"]["name"] == src.name
    assert main(["edit", "--audio", str(src), "--prompt", "more", "--duration", "0.5", "--out",
                 str(res / "edit.wav"), *common]) == 0
    done = next(x for x in cli_lines(capsys) if x["op"] == "done")
    assert done["audio_path"] == str(res / "edit.wav") and sf.info(res / "edit.wav").frames > 0
    assert json.loads((res / "edit.json").read_text())["job"] == done["job"]  # the sidecar beside it
    assert main(["generate", "--image", str(pic), "--prompt", "like this", "--duration", "0.5", "--takes", "2",
                 "--out", str(res / "gen.wav"), *common]) == 0
    done = next(x for x in cli_lines(capsys) if x["op"] == "done")
    assert [t["audio_path"] for t in done["takes"]] == [str(res / "gen.wav"), str(res / "gen-take2.wav")]
    assert (res / "gen-take2.wav").is_file()
    assert main(["transcribe", "--audio", str(src), "--bpm", "100", "--out", str(res / "notes.mid"),
                 "--server", srv, "--no-progress"]) == 0
    assert (res / "notes.mid").read_bytes()[:4] == b"MThd"
    capsys.readouterr()
    assert main(["learn", str(clips), "--adapter-name", "drive", "--steps", "1", "--clip-s", "0.5",
                 "--server", srv, "--no-progress"]) == 0
    learnt = cli_lines(capsys)
    assert sum(1 for x in learnt if x["op"] == "upload" and x["sent"] == x["size"]) == 2
    assert learnt[-2]["op"] == "done"
    # an --out that exists is refused before anything is sent; --overwrite replaces a WAV with a WAV
    sent = server_info.app.blobs.received_bytes
    assert main(["edit", "--audio", str(src), "--prompt", "x", "--out", str(res / "edit.wav"), *common]) == 2
    assert main(["edit", "--audio", str(src), "--prompt", "x", "--duration", "0.5", "--out", str(res / "edit.wav"),
                 "--overwrite", *common]) == 0
    assert server_info.app.blobs.received_bytes == sent  # the same take: not uploaded again


@pytest.fixture(scope="module")
def melody_model():
    from m2ugen import M2UGen, M2UGenConfig

    return M2UGen.from_config(M2UGenConfig.preset("tiny-melody"))


@pytest.mark.timeout(300)
def test_a_midi_sketch_outside_home_and_temp_from_the_cli_and_the_api(make_server, melody_model, outside_dir,
                                                                      capsys):
    from server.cli import main

    srv = make_server(melody_model, preset="tiny-melody")
    sketch = write_mid(outside_dir / "sketch.mid", [60, 64, 67, 72])
    out = outside_dir / "melody.wav"
    assert main(["generate", "--midi", str(sketch), "--prompt", "strings", "--max-new-tokens", "4", "--out", str(out),
                 "--server", srv.endpoint, "--no-progress"]) == 0
    done = next(x for x in cli_lines(capsys) if x["op"] == "done")
    assert done["inputs"]["midi"]["notes"] == 4 and done["params"]["mode"] == "melody" and out.is_file()
    with Client(srv.endpoint, timeout_s=30) as c:
        rec = run_job(c, "generate", {"prompt": "strings", "max_new_tokens": 4}, {"midi": c.upload(sketch)})
        saved = c.save_result(rec["job"], outside_dir / "api.wav")
    assert Path(saved["audio_path"]).parent == outside_dir and (outside_dir / "api.json").is_file()


@pytest.mark.timeout(300)
def test_the_osc_bridge_reads_and_writes_outside_home_and_temp(server_info, outside_dir):
    from bridge_osc.bridge import start_in_thread
    from test_osc_fake_server import OscPeer

    src = write_wav(outside_dir / "clip.wav", seconds=1.0)
    res = outside_dir / "Set" / "Samples" / "M2UGen"
    (outside_dir / "Set").mkdir()
    bridge = start_in_thread(server_info.endpoint, port=0, ping_interval_s=0.2, ping_timeout_s=5.0)
    p = OscPeer(bridge.port)
    try:
        p.send("/m2u/hello", ("i", p.port))
        p.expect("/m2u/welcome")
        p.send("/m2u/submit", ("s", "edit"), ("s", "prompt"), ("s", "brighter"), ("s", "audio"), ("s", str(src)),
               ("s", "duration"), ("f", 0.5), ("s", "max_new_tokens"), ("i", 4), ("s", "results_dir"), ("s", str(res)))
        done = p.expect("/m2u/done", timeout=120)[-1]
        assert Path(done.args[1]).parent == res and Path(done.args[1]).read_bytes()[:4] == b"RIFF"
        p.send("/m2u/submit", ("s", "transcribe"), ("s", "audio"), ("s", str(src)), ("s", "bpm"), ("f", 100.0),
               ("s", "results_dir"), ("s", str(res)))
        midi = p.expect("/m2u/done", timeout=120)[-1]
        assert midi.args[1].endswith(".mid") and Path(midi.args[1]).parent == res
        assert Path(midi.args[1]).read_bytes()[:4] == b"MThd"
        p.send("/m2u/ask", ("s", "what"), ("s", "key?"), ("s", str(src)))
        assert p.expect("/m2u/done", timeout=120)[-1].args[0]
        p.send("/m2u/submit", ("s", "finetune"), ("s", "adapter_name"), ("s", "osc_drive"), ("s", "steps"), ("i", 1),
               ("s", "clip_s"), ("f", 0.5), ("s", "clip"), ("s", str(src)))
        assert not [m for m in p.expect("/m2u/done", timeout=200) if m.address == "/m2u/error"]
    finally:
        p.close()
        bridge.stop()
    assert server_info.app.blobs.received_bytes == src.stat().st_size  # one upload, four jobs
