"""Issue 26 in the clients: ``m2ugen stems FILE --out DIR`` and ``m2ugen edit --op/--stem`` (the mix
uploaded, the results fetched as bytes and written by the CLI; ``--upload``, always so under protocol 2, is
still accepted from old scripts), and the OSC bridge's ``/m2u/submit stems ...`` / ``/m2u/submit edit ...
op remove stem drums``, against a real server whose separator is exact for the test's mix."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from server.cli import main
from test_max_device import ROOT, lom_names, run_node, tap_counts  # noqa: F401 (lom_names: a fixture)
from test_osc_bridge import bridge, peer  # noqa: F401 (fixtures; their `server` is this module's)
from test_stems import SR, OracleSeparator, as_written, known_stems, wav_samples, write_mix

PARTS = known_stems(1.0)


@pytest.fixture
def oracle():
    return OracleSeparator(PARTS)


@pytest.fixture
def server(make_server, oracle, monkeypatch):
    running = make_server(separators={"htdemucs": oracle})
    monkeypatch.setenv("M2UGEN_DATA_DIR", str(running.data_dir))
    return running.endpoint


def lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("upload", [False, True])
def test_m2ugen_stems_writes_one_wav_per_stem(server, tmp_path, capsys, upload):
    wav = write_mix(tmp_path / "Song Mix.wav", PARTS)
    out = tmp_path / "stems"
    code = main(["stems", str(wav), "--out", str(out), "--server", server, "--no-progress",
                 *(["--upload"] if upload else [])])
    got = lines(capsys)
    assert code == 0, got
    done = next(m for m in got if m["op"] == "done")
    assert done["stems"] == {s: str(out / f"Song Mix-{s}.wav") for s in ("drums", "bass", "other", "vocals")}
    for stem, path in done["stems"].items():
        assert np.array_equal(wav_samples(path), as_written(PARTS[stem]))
    assert got[-1] == {"op": "exit", "code": 0}
    assert main(["stems", str(wav), "--out", str(out), "--server", server, "--no-progress",
                 *(["--upload"] if upload else [])]) != 0  # the files exist: never replaced unasked
    capsys.readouterr()


@pytest.mark.timeout(120)
def test_m2ugen_edit_with_a_stem_and_an_op(server, tmp_path, capsys):
    wav = write_mix(tmp_path / "mix.wav", PARTS)
    out = tmp_path / "no-drums.wav"
    code = main(["edit", "--audio", str(wav), "--prompt", "take the kit out", "--op", "remove", "--stem", "drums",
                 "--max-new-tokens", "4", "--out", str(out), "--server", server, "--no-progress"])
    assert code == 0, lines(capsys)
    assert np.array_equal(wav_samples(out), as_written(PARTS["bass"] + PARTS["other"] + PARTS["vocals"]))
    code = main(["edit", "--audio", str(wav), "--prompt", "make it jazzier", "--op", "auto", "--server", server,
                 "--no-progress"])
    assert code == 2 and "cannot read a stem edit" in capsys.readouterr().err  # refused before anything is sent


@pytest.mark.timeout(120)
def test_stems_and_a_stem_edit_through_the_osc_bridge(peer, tmp_path):  # noqa: F811
    wav = write_mix(tmp_path / "mix.wav", PARTS)
    folder = tmp_path / "Set" / "Samples" / "M2UGen"
    folder.parent.parent.mkdir()  # a saved Set's folder (the bridge makes at most its Samples/M2UGen)
    peer.send("/m2u/submit", ("s", "stems"), ("s", "audio"), ("s", str(wav)), ("s", "results_dir"), ("s", str(folder)))
    got = peer.expect("/m2u/done", timeout=60)
    takes = [m.args for m in got if m.address == "/m2u/take"]
    assert [t[1:3] for t in takes] == [[0, 4], [1, 4], [2, 4], [3, 4]]
    for (stem, wave), take in zip(PARTS.items(), takes):
        assert f"-{stem}-" in take[3] and take[3].startswith(str(folder))
        assert np.array_equal(wav_samples(take[3]), as_written(wave))
    peer.send("/m2u/submit", ("s", "edit"), ("s", "prompt"), ("s", "only the bass"), ("s", "audio"), ("s", str(wav)),
              ("s", "results_dir"), ("s", str(folder)))
    path = peer.expect("/m2u/done", timeout=60)[-1].args[1]
    assert np.array_equal(wav_samples(path), as_written(PARTS["bass"]))
    peer.send("/m2u/submit", ("s", "edit"), ("s", "prompt"), ("s", "x"), ("s", "audio"), ("s", str(wav)),
              ("s", "op"), ("s", "remove"), ("s", "stem"), ("s", "cowbell"))
    err = peer.expect("/m2u/error")[-1]
    assert "stem" in err.args[2] and "drums" in err.args[2]


@pytest.mark.timeout(300)
def test_live_device_stems_and_stem_edit_end_to_end(bridge, server, lom_names, tmp_path):  # noqa: F811
    """The Live device's JS (tests/max/e2e_stems.js, under node with the LOM stub) over UDP to the real
    bridge and server: Stems puts the exact stems on four tracks, and Edit with op remove / stem drums
    (no prompt typed) returns the rest of the mix sample-exactly."""
    wav = write_mix(tmp_path / "mix.wav", PARTS)
    set_dir = tmp_path / "Live Set Project"
    set_dir.mkdir()
    seconds = next(iter(PARTS.values())).shape[1] / SR
    r = run_node(ROOT / "tests" / "max" / "e2e_stems.js", {
        "M2U_LOM_NAMES": str(lom_names), "M2U_BRIDGE_PORT": str(bridge.port), "M2U_MIX": str(wav),
        "M2U_MIX_SECONDS": repr(seconds), "M2U_SET_DIR": str(set_dir)}, timeout=280)
    out = r.stdout + r.stderr
    passed, failed = tap_counts(out)
    assert r.returncode == 0 and failed == 0 and passed == 2, out
    stems = dict(re.findall(r"M2U_STEM (\w+) (.+)$", out, re.M))
    assert list(stems) == list(PARTS)
    for stem, wave in PARTS.items():
        assert np.array_equal(wav_samples(stems[stem]), as_written(wave)), stem
    (edited,) = re.findall(r"M2U_EDIT (.+)$", out, re.M)
    assert np.array_equal(wav_samples(edited), as_written(PARTS["bass"] + PARTS["other"] + PARTS["vocals"]))
