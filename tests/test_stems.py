"""Issue 26: stems and stem-aware edits. The separation library (demucs' HTDemucs from local files,
read without unpickling anything but tensors), the edit grammar, and, through the server, the ``stems``
job kind and ``edit`` with ``op`` / ``stem``: on a mix the test builds from known stems (a drum loop, a
bass line, a chord pad) with an exact separator the test injects, and end to end with a tiny random
HTDemucs built through demucs' own classes."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import run_job
from m2ugen import stem_ops, stems
from server import audio_io, protocol
from server.client import Client
from server.security import OutputExists

SR = 48000  # a producer's mix: above the 32 kHz intake of other jobs; stems come back at this rate
BPM = 120.0


# ---------------------------------------------------------------------------------------------
# a mix of known stems


def drum_loop(seconds: float, sr: int = SR, seed: int = 1) -> np.ndarray:
    """Kick on every beat (a falling sine), a noise hat on the off-beats."""
    n, beat = int(seconds * sr), int(60.0 / BPM * sr)
    out = np.zeros(n, np.float32)
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.15 * sr)) / sr
    kick = (np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 20)).astype(np.float32)
    hat = (rng.standard_normal(int(0.04 * sr)) * np.exp(-np.arange(int(0.04 * sr)) / (0.008 * sr))).astype(np.float32)
    for start in range(0, n, beat):
        out[start:start + kick.size] += 0.5 * kick[:n - start]
        off = start + beat // 2
        if off < n:
            out[off:off + hat.size] += 0.15 * hat[:n - off]
    return out


def tone_line(pitches: list[int], seconds: float, sr: int = SR, harmonics=(1.0, 0.5, 0.25), level=0.2) -> np.ndarray:
    """One note per beat, cycling through ``pitches`` (MIDI numbers), with harmonics and a short fade."""
    n, beat = int(seconds * sr), int(60.0 / BPM * sr)
    out = np.zeros(n, np.float32)
    t = np.arange(beat) / sr
    env = np.minimum(1.0, np.minimum(t / 0.01, (beat / sr - t) / 0.02)).astype(np.float32)
    for i, start in enumerate(range(0, n, beat)):
        f = 440.0 * 2 ** ((pitches[i % len(pitches)] - 69) / 12)
        note = sum(a * np.sin(2 * np.pi * f * (k + 1) * t) for k, a in enumerate(harmonics)).astype(np.float32)
        out[start:start + beat] += (level * env * note)[:n - start]
    return out


def chord_pad(chords: list[list[int]], seconds: float, sr: int = SR) -> np.ndarray:
    """Sustained triads, one per two beats."""
    n, span = int(seconds * sr), int(2 * 60.0 / BPM * sr)
    t = np.arange(n) / sr
    out = np.zeros(n, np.float32)
    for i, start in enumerate(range(0, n, span)):
        seg = slice(start, min(n, start + span))
        for p in chords[i % len(chords)]:
            out[seg] += 0.06 * np.sin(2 * np.pi * 440.0 * 2 ** ((p - 69) / 12) * t[seg]).astype(np.float32)
    return out


def stereo(x: np.ndarray, pan: float = 0.0) -> np.ndarray:
    return np.stack([x * (1 - pan) / 1.0, x * (1 + pan) / 1.0]).astype(np.float32) * 0.5


def known_stems(seconds: float = 2.0, piano: list[int] | None = None) -> dict[str, np.ndarray]:
    out = {"drums": stereo(drum_loop(seconds)), "bass": stereo(tone_line([36, 36, 43, 41], seconds), -0.2),
           "other": stereo(chord_pad([[60, 64, 67], [57, 60, 64]], seconds), 0.3),
           "vocals": np.zeros((2, int(seconds * SR)), np.float32)}
    if piano is not None:
        out["guitar"] = np.zeros_like(out["vocals"])
        out["piano"] = stereo(tone_line(piano, seconds, harmonics=(1.0, 0.3), level=0.25), 0.1)
    return out


class OracleSeparator:
    """Exact for the test's mix: returns the stems the mix was built from (after checking that what it
    was given is that mix, as the server read it from the WAV)."""

    def __init__(self, parts: dict[str, np.ndarray]):
        self.parts = parts
        self.sources = tuple(parts)
        self.calls = 0

    def separate(self, wave, sr, on_progress=None):
        mix = sum(self.parts.values())
        assert sr == SR and wave.shape == mix.shape, (sr, wave.shape)
        assert np.max(np.abs(wave - mix)) < 1e-4  # the mix, as written to 24-bit and read back
        self.calls += 1
        if on_progress is not None:
            on_progress(1.0)
        return {k: v.copy() for k, v in self.parts.items()}


def write_mix(path: Path, parts: dict[str, np.ndarray]) -> Path:
    sf.write(path, sum(parts.values()).T, SR, subtype="PCM_24")
    return path


def wav_samples(data_or_path) -> np.ndarray:
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    data, _ = sf.read(src, dtype="int32", always_2d=True)
    return data.T


def as_written(wave: np.ndarray) -> np.ndarray:
    """What the server's 24-bit WAV of ``wave`` holds."""
    return wav_samples(audio_io.wav_bytes(wave, SR))


# ---------------------------------------------------------------------------------------------
# the grammar


@pytest.mark.parametrize("text,expected", [
    ("remove the drums", ("remove", "drums", None)),
    ("Mute the vocals, please.", None),  # a comma is not in the grammar: not read as a stem edit
    ("mute the vocals please", ("remove", "vocals", None)),
    ("play it without the bass line", ("remove", "bass", None)),
    ("only the drums", ("keep", "drums", None)),
    ("isolate the vox", ("keep", "vocals", None)),
    ("keep only the keys", ("keep", "piano", None)),
    ("replace the piano with strings", ("replace", "piano", "strings")),
    ("Swap the guitar for a warm synth pad.", ("replace", "guitar", "warm synth pad")),
    ("add a shaker loop", ("add", None, "shaker loop")),
    ("make it jazzier", None),
])
def test_the_grammar(text, expected):
    op = stem_ops.parse(text)
    assert (None if op is None else (op.op, op.stem, op.instrument)) == expected


def test_what_the_grammar_refuses_and_what_an_ordinary_edit_stays():
    with pytest.raises(stem_ops.StemOpError, match="cannot separate 'cowbell'.*drums, bass"):
        stem_ops.parse("remove the cowbell")
    assert stem_ops.detect("remove the cowbell") is None  # an ordinary edit, not a refusal
    assert stem_ops.detect("add some reverb") is None  # 'add' only when asked (op add / auto)
    assert stem_ops.resolve("add some reverb", None, None, None) is None
    with pytest.raises(stem_ops.StemOpError, match="cannot read a stem edit"):
        stem_ops.resolve("make it jazzier", "auto", None, None)
    assert stem_ops.resolve("make the kit lighter", "remove", "drums", None) == stem_ops.StemOp("remove", "drums")
    assert stem_ops.resolve("warm strings", "replace", "piano", None).instrument == "warm strings"
    assert stem_ops.resolve("x", "add", None, "congas") == stem_ops.StemOp("add", None, "congas")
    with pytest.raises(stem_ops.StemOpError, match="needs a stem"):
        stem_ops.resolve("do it", "remove", None, None)


def test_submit_resolves_the_operation_or_refuses_with_the_reason():
    def submit(**params):
        return protocol.check_submit({"kind": "edit", "params": params, "inputs": {"audio": {"job": "earlier"}}}, 0)

    p = submit(prompt="Remove the drums")["params"]
    assert (p["op"], p["stem"], p["stem_model"], p["takes"]) == ("remove", "drums", "htdemucs", 1)
    p = submit(prompt="replace the piano with strings", takes=2)["params"]
    assert (p["op"], p["stem"], p["instrument"], p["stem_model"], p["takes"]) == \
        ("replace", "piano", "strings", "htdemucs_6s", 2)
    assert submit(prompt="make it jazzier")["params"]["op"] is None  # an ordinary edit
    for params, field, words in [
        ({"prompt": "make it jazzier", "op": "auto"}, "params.prompt", "cannot read a stem edit"),
        ({"prompt": "remove the cowbell", "op": "auto"}, "params.prompt", "cannot separate 'cowbell'"),
        ({"prompt": "x", "op": "replace", "stem": "guitar", "stem_model": "htdemucs"}, "params.stem_model",
         "htdemucs_6s"),
        ({"prompt": "remove the drums", "loop": True, "context": {"bpm": 120}}, "params.loop", "source's length"),
    ]:
        with pytest.raises(protocol.ProtocolError, match=words) as e:
            submit(**params)
        assert e.value.field == field


def test_stems_and_stem_edits_read_the_source_at_its_own_rate_other_jobs_at_the_intake_rate(tmp_path):
    from server import inputs

    wav = write_mix(tmp_path / "mix.wav", known_stems(0.5))
    data = wav.read_bytes()
    rates = {}
    for name, kind, params in [("stems", "stems", {}), ("remove", "edit", {"prompt": "remove the drums"}),
                               ("ordinary edit", "edit", {"prompt": "make it jazzier"}),
                               ("ask", "ask", {"prompt": "what is this?"})]:
        spec = protocol.check_submit({"kind": kind, "params": params, "inputs": {"audio": {"frame": 1}}}, 1)
        intake = inputs.intake_for(kind, spec["params"], inputs.AudioIntake())
        audio, info = inputs.resolve(spec["inputs"], inputs.Sources([data]), tmp_path / name, intake=intake,
                                     max_file_bytes=2**20)
        rates[name] = (audio["audio"][1], audio["audio"][0].shape[1])
    assert rates["stems"] == rates["remove"] == (SR, SR // 2)  # the source's rate and every sample
    assert rates["ordinary edit"] == rates["ask"] == (32000, 16000)  # what the model hears


# ---------------------------------------------------------------------------------------------
# demucs from local files, never unpickled


@pytest.fixture(scope="module")
def tiny_demucs():
    return stems.tiny_htdemucs()


def test_a_demucs_package_loads_through_the_restricted_reader(tmp_path, tiny_demucs):
    path = tmp_path / "tiny.th"
    torch.save(stems.package_of(tiny_demucs), path)
    sep = stems.load_separator("htdemucs", path)
    assert sep.sources == stem_ops.STEMS_4
    for name, t in tiny_demucs.state_dict().items():  # demucs stores half precision
        assert torch.equal(sep.model.state_dict()[name], t.half().float()), name
    x = stereo(tone_line([48, 55], 1.5))[:1] * 2  # mono, another rate than the model's
    out = sep.separate(x[0], SR)
    assert set(out) == set(stem_ops.STEMS_4) and all(v.shape == x[0].shape for v in out.values())
    assert all(np.isfinite(v).all() and np.any(v) for v in out.values())
    again = sep.separate(x[0].copy(), SR)  # the same region: served from the cache
    assert sep.separations == 1 and all(np.array_equal(again[k], out[k]) for k in out)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/m2ugen-stems-pwned",))


def test_a_weights_file_with_any_other_class_is_refused_unrun(tmp_path, tiny_demucs):
    target = Path("/tmp/m2ugen-stems-pwned")
    target.unlink(missing_ok=True)
    bad = tmp_path / "evil.th"
    torch.save({**stems.package_of(tiny_demucs), "training_args": Boom()}, bad)
    with pytest.raises(ValueError, match="not a demucs HTDemucs weights file"):
        stems.read_package(bad)
    assert not target.exists()
    other = tmp_path / "other.th"
    torch.save({**stems.package_of(tiny_demucs), "klass": torch.nn.Linear}, other)
    with pytest.raises(ValueError):
        stems.read_package(other)


def test_weights_are_found_in_the_hub_cache_by_demucs_names_or_named_when_missing(tmp_path, monkeypatch,
                                                                                   tiny_demucs):
    import hashlib

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as e:
        stems.load_separator("htdemucs")
    assert str(tmp_path / "torch/hub/checkpoints/955717e8-8726e21a.th") in str(e.value)
    assert "never" in str(e.value) and "955717e8.safetensors" in str(e.value)
    buf = io.BytesIO()
    torch.save(stems.package_of(tiny_demucs), buf)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    folder = tmp_path / "torch/hub/checkpoints"
    folder.mkdir(parents=True)
    (folder / f"955717e8-{digest}.th").write_bytes(buf.getvalue())
    monkeypatch.setitem(stems.MODELS, "htdemucs", stems.StemModel("htdemucs", "955717e8", f"955717e8-{digest}.th",
                                                                  stem_ops.STEMS_4))
    assert stems.load_separator("htdemucs").sources == stem_ops.STEMS_4
    damaged = bytearray(buf.getvalue())
    damaged[len(damaged) // 2] ^= 1
    (folder / f"955717e8-{digest}.th").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="sha256"):
        stems.load_separator("htdemucs")


def test_the_safetensors_export_loads_too(tmp_path, tiny_demucs):
    from safetensors.torch import save_file

    args, kwargs = tiny_demucs._init_args_kwargs
    seg = kwargs["segment"]
    meta = {"klass": "demucs.htdemucs.HTDemucs", "args": json.dumps(list(args)),
            "kwargs": json.dumps({**kwargs, "segment": {"_type": "fraction", "numerator": seg.numerator,
                                                        "denominator": seg.denominator}})}
    save_file({k: v.contiguous() for k, v in tiny_demucs.state_dict().items()}, tmp_path / "955717e8.safetensors",
              metadata=meta)
    assert stems.load_separator("htdemucs", tmp_path).sources == stem_ops.STEMS_4
    save_file({"x": torch.zeros(1)}, tmp_path / "bad.safetensors", metadata={**meta, "klass": "os.system"})
    with pytest.raises(ValueError, match="not one this loader builds"):
        stems.read_package(tmp_path / "bad.safetensors")


# ---------------------------------------------------------------------------------------------
# through the server


def edit(c: Client, wav: Path, prompt: str, **params) -> dict:
    return run_job(c, "edit", {"prompt": prompt, "max_new_tokens": 4, "seed": 3, **params}, {"audio": c.upload(wav)})


@contextlib.contextmanager
def music_rows(decoder, silent: bool = False):
    """The rows the server's worker asks MusicGen to decode (their fields, as conftest.decoder_calls gives
    them), in either batching mode: continuous batching (the default) hands each row to the step loop through
    ``_loop_row`` (m2ugen/engine.py), static batching's ``generate_batch`` calls it too. ``silent``: every
    row's audio is zeros (1 s), whatever its tokens."""
    calls: list[dict] = []
    loop_row = decoder._loop_row

    def spy(row):
        calls.append(vars(row).copy())
        return loop_row(row)

    decoder._loop_row = spy
    if silent:
        decoder._finish_row = lambda row, tokens, info: np.zeros((1, 32000), np.float32)
    try:
        yield calls
    finally:
        del decoder._loop_row
        if silent:
            del decoder._finish_row


def fetched(c: Client, done: dict, take: int = 1) -> np.ndarray:
    """The samples of a finished job's take as the client receives them (protocol 2: bytes, not a path)."""
    r = c.call("result", job=done["job"], want="bytes", take=take)
    assert r.op == "result" and r.frames, r.header
    return wav_samples(bytes(r.frames[0]))


def test_remove_and_keep_return_the_kept_stems_sample_exactly(make_server, tmp_path):
    parts = known_stems()
    oracle = OracleSeparator(parts)
    running = make_server(separators={"htdemucs": oracle})
    wav = write_mix(tmp_path / "mix.wav", parts)
    with Client(running.endpoint, timeout_s=30) as c:
        done = edit(c, wav, "remove the drums")
        result = fetched(c, done)
        assert np.array_equal(result, as_written(parts["bass"] + parts["other"]))  # sample-exact, same length
        assert done["sample_rate"] == SR and result.shape == (2, parts["drums"].shape[1])  # the source's rate, length
        assert done["takes"][0]["stem_edit"]["kept"] == ["bass", "other", "vocals"]
        assert done["text"] is not None and done["result_analysis"]["duration_s"] == pytest.approx(2.0, abs=1e-3)
        done = edit(c, wav, "the pad, please", op="keep", stem="other")
        assert np.array_equal(fetched(c, done), as_written(parts["other"]))
    assert oracle.calls == 2


def test_replace_generates_only_the_replaced_stem_from_its_melody(make_server, tmp_path):
    from m2ugen import M2UGen, M2UGenConfig
    from m2ugen import chroma as C
    from m2ugen import media

    model = M2UGen.from_config(M2UGenConfig.preset("tiny-melody"))
    a = known_stems(piano=[72, 76, 79, 76])
    b = {**a, "piano": known_stems(piano=[65, 69, 62, 70])["piano"]}  # only the piano part differs
    oracle_a, oracle_b = OracleSeparator(a), OracleSeparator(b)
    running = make_server(model, preset="tiny-melody", separators={"htdemucs_6s": oracle_a})
    results = {}
    with Client(running.endpoint, timeout_s=30) as c:
        for name, parts, oracle in (("a", a, oracle_a), ("b", b, oracle_b)):
            running.app.worker.stems._loaded["htdemucs_6s"] = oracle
            wav = write_mix(tmp_path / f"{name}.wav", parts)
            with music_rows(model.decoder) as calls:
                done = edit(c, wav, "replace the piano with strings")
            assert len(calls) == 1  # one decode: the replaced stem, nothing else
            melody = C.chroma_from_audio(media.load_audio((parts["piano"], SR), C.SAMPLE_RATE), C.SAMPLE_RATE)
            np.testing.assert_allclose(calls[0]["chroma"], C.check_chroma(melody), atol=1e-5)
            assert "strings only" in calls[0]["text"]
            assert done["takes"][0]["stem_edit"]["mode"] == "melody"
            results[name] = fetched(c, done)
        assert not np.array_equal(results["a"], results["b"])  # the piano's melody changed what was generated
        # a decoder that makes silence: the result is exactly the kept stems (bit-identical in the mix)
        running.app.worker.stems._loaded["htdemucs_6s"] = oracle_a
        with music_rows(model.decoder, silent=True):
            done = edit(c, tmp_path / "a.wav", "replace the piano with strings")
        kept = stem_ops.remix(a, ["drums", "bass", "other", "vocals", "guitar"])
        assert np.array_equal(fetched(c, done), as_written(kept))


def test_the_tiny_demucs_runs_end_to_end_stems_then_a_stem_edit(make_server, tmp_path, monkeypatch, tiny_demucs):
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(stems.package_of(tiny_demucs), weights / "tiny-htdemucs.th")
    monkeypatch.setitem(stems.MODELS, "htdemucs", stems.StemModel("htdemucs", "955717e8", "tiny-htdemucs.th",
                                                                  stem_ops.STEMS_4))
    running = make_server(stems_dir=str(weights))
    n = SR + 7  # an odd length: 48 kHz in, the model's 44.1 kHz inside, 48 kHz out, not one sample lost or added
    wav = write_mix(tmp_path / "mix.wav", {k: v[:, :n] for k, v in known_stems(1.1).items()})
    out = tmp_path / "out" / "song.wav"
    out.parent.mkdir()
    with Client(running.endpoint, timeout_s=30) as c:
        done = run_job(c, "stems", {}, {"audio": c.upload(wav)})
        assert [t["stem"] for t in done["takes"]] == list(stem_ops.STEMS_4)
        saved = c.save_result(done["job"], out)  # the client writes <out stem>-<stem>.wav and the sidecar
        files = {t["stem"]: Path(t["audio_path"]) for t in saved["takes"]}
        assert files == {k: out.parent / f"song-{k}.wav" for k in stem_ops.STEMS_4}
        assert saved["sidecar_path"] == str(out.parent / "song.json") and (out.parent / "song.json").is_file()
        written = {k: wav_samples(p) for k, p in files.items()}
        assert all(w.shape == (2, n) for w in written.values())
        assert {sf.info(str(p)).samplerate for p in files.values()} == {SR}  # the source's rate, not the intake's
        assert done["sample_rate"] == SR and done["duration"] == n / SR
        r = c.call("result", job=done["job"], want="bytes", take=2)
        assert r.frames[0] == files["bass"].read_bytes()
        with pytest.raises(OutputExists, match="song-drums.wav"):  # saved stems are never replaced unasked
            c.save_result(done["job"], out)
        done = edit(c, wav, "x", op="remove", stem="drums")
        separator = running.app.worker.stems.get("htdemucs")
        assert separator.separations == 1  # the edit of the same region reused the separation
        expected = sum(written[k].astype(np.int64) for k in ("bass", "other", "vocals"))
        result = fetched(c, done)
        assert done["sample_rate"] == SR and result.shape == (2, n)
        assert np.abs(result - expected).max() <= 3 * 256  # 24-bit rounding of 3 stems (int32 units)


def test_without_weights_the_job_fails_naming_the_file(make_server, tmp_path):
    running = make_server(stems_dir=str(tmp_path / "nothing"))
    wav = write_mix(tmp_path / "mix.wav", known_stems(0.5))
    with Client(running.endpoint, timeout_s=30) as c:
        r = c.call("submit", kind="stems", params={}, inputs={"audio": c.upload(wav)})
        assert r.op == "accepted"
        while True:
            m = c.recv(timeout_s=30)
            assert m is not None
            if m.op in ("done", "error") and m.job == r.job:
                break
        assert m.op == "error" and "955717e8-8726e21a.th" in m.header["message"]
        assert "nothing" in m.header["message"]


def test_add_generates_the_new_part_in_the_region_over_the_unchanged_source(make_server, tmp_path, tiny_model):
    parts = known_stems()
    running = make_server(separators={"htdemucs": OracleSeparator(parts)})
    wav = write_mix(tmp_path / "mix.wav", parts)
    source = sum(parts.values())
    with Client(running.endpoint, timeout_s=30) as c:
        with music_rows(tiny_model.decoder) as calls:
            done = edit(c, wav, "add a shaker loop", op="add", context={"bpm": 120})
        assert len(calls) == 1 and "shaker loop only, 120 bpm" in calls[0]["text"]  # the project's tempo
        result = fetched(c, done) / 2.0**31
        assert result.shape == source.shape and not np.allclose(result, source, atol=1e-3)  # something was added
        assert done["takes"][0]["stem_edit"]["op"] == "add" and done["result_analysis"] is not None
        with music_rows(tiny_model.decoder, silent=True):
            done = edit(c, wav, "add a shaker loop", op="add")
        # a silent addition: the source itself (as the intake read it, 16-bit), untouched
        assert np.abs(fetched(c, done) / 2.0**31 - source).max() <= 1.0 / 32768


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_replace_with_a_plain_musicgen_continues_the_kept_stems(make_server, tmp_path, tiny_model, batching):
    from m2ugen import media

    parts = known_stems(piano=[72, 76, 79, 76])
    running = make_server(separators={"htdemucs_6s": OracleSeparator(parts)}, batching=batching)
    wav = write_mix(tmp_path / "mix.wav", parts)
    kept = stem_ops.remix(parts, ["drums", "bass", "other", "vocals", "guitar"])
    with Client(running.endpoint, timeout_s=30) as c:
        with music_rows(tiny_model.decoder) as calls:
            done = edit(c, wav, "replace the piano with strings")
        assert fetched(c, done).shape == kept.shape
    assert done["takes"][0]["stem_edit"]["mode"] == "continue" and len(calls) == 1
    heard = media.load_audio((kept, SR), tiny_model.sample_rate, channels=tiny_model.decoder.channels)
    np.testing.assert_allclose(np.asarray(calls[0]["prompt"]), heard, atol=1e-6)  # the rest, not the mix
