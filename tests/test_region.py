"""Issue 11 through the server: the selected region reaches the job (measured analysis in the record,
the sidecar and the prompt), and results fit the project (bars, loop, loudness, tempo, takes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import conftest
from server import finishing
from server.client import Client

QUICK = {"max_new_tokens": 4}


def click_track(path: Path, bpm: float, seconds: float = 6.0, sr: int = 32000) -> Path:
    x = np.zeros(int(seconds * sr), np.float32)
    period = 60.0 / bpm
    t = 0.0
    while t < seconds - 0.05:
        i = int(t * sr)
        n = np.arange(int(0.03 * sr))
        x[i:i + n.size] += 0.8 * np.sin(2 * np.pi * 1000 * n / sr) * np.exp(-n / (0.005 * sr))
        t += period
    sf.write(path, x, sr)
    return path


def run_job(c: Client, kind: str, params: dict, inputs: dict | None = None, **fields):
    return conftest.run_job(c, kind, {**QUICK, **params}, inputs, **fields)


@pytest.fixture(scope="module")
def clicks(tmp_path_factory):
    d = tmp_path_factory.mktemp("clicks")
    return click_track(d / "c90.wav", 90), click_track(d / "c140.wav", 140)


def test_two_regions_give_two_analyses_and_two_results(server, clicks):
    with Client(server, timeout_s=30) as c:
        a = run_job(c, "edit", {"prompt": "same groove, brighter", "seed": 3, "duration": 1.0},
                    {"audio": c.upload(clicks[0])})
        b = run_job(c, "edit", {"prompt": "same groove, brighter", "seed": 3, "duration": 1.0},
                    {"audio": c.upload(clicks[1])})
    assert abs(a["analysis"]["bpm"] - 90) <= 2 and abs(b["analysis"]["bpm"] - 140) <= 2
    side = json.loads(Path(a["sidecar_path"]).read_text())
    assert side["analysis"]["bpm"] == a["analysis"]["bpm"] and "BPM" in a["analysis"]["summary"]
    measured = side["prompt_sent"].removeprefix("same groove, brighter Measured: ")
    assert measured != side["prompt_sent"] and abs(float(measured.split(" BPM")[0]) - 90) <= 2
    assert a["result_analysis"]["duration_s"] == pytest.approx(1.0, abs=1e-3)
    wav_a, wav_b = sf.read(a["audio_path"])[0], sf.read(b["audio_path"])[0]
    assert not np.array_equal(wav_a, wav_b)  # the region reached the music (same seed, same prompt)


def test_the_model_itself_hears_the_region(server, clicks):
    """No measured line in the prompt and no loudness matching: only the music decoder hearing the
    source (mode continue: EnCodec codes of the region as its audio prompt) can make the results differ."""
    params = {"prompt": "same groove, brighter", "seed": 3, "duration": 1.0, "reference_prompt": True,
              "normalize": False, "temperature": 0.0, "mode": "continue"}
    with Client(server, timeout_s=30) as c:
        a, b = (run_job(c, "edit", params, {"audio": c.upload(p)}) for p in clicks)
    assert json.loads(Path(a["sidecar_path"]).read_text())["prompt_sent"] == params["prompt"]
    assert a["params"]["mode"] == "continue"
    assert not np.array_equal(sf.read(a["audio_path"])[0], sf.read(b["audio_path"])[0])


def test_reference_prompt_is_the_official_prompt(server, clicks):
    with Client(server, timeout_s=30) as c:
        rec = run_job(c, "ask", {"prompt": "what tempo is this?", "reference_prompt": True, "seed": 1,
                                 "context": {"bpm": 120}}, {"audio": c.upload(clicks[0])})
    side = json.loads(Path(rec["sidecar_path"]).read_text())
    assert side["prompt_sent"] == "what tempo is this?"
    assert abs(rec["analysis"]["bpm"] - 90) <= 2  # still measured and returned, only not told to the LLM


def test_bars_loop_loudness_and_takes(server, tmp_path):
    out = tmp_path / "loop.wav"
    with Client(server, timeout_s=30) as c:
        rec = run_job(c, "generate", {"prompt": "a drum loop", "seed": 9, "bars": 2, "loop": True, "takes": 2,
                                      "context": {"bpm": 120, "time_signature": [4, 4]}})
        take2 = c.call("result", job=rec["job"], want="bytes", take=2)
        saved = c.save_result(rec["job"], out)
    wave, sr = sf.read(out, always_2d=True)
    assert wave.shape[0] == 4 * sr  # 2 bars of 4/4 at 120 BPM: exactly 4.0 s
    assert [t["seed"] for t in rec["takes"]] == [9, 10]
    assert Path(saved["takes"][1]["audio_path"]) == tmp_path / "loop-take2.wav"
    assert (tmp_path / "loop-take2.wav").read_bytes() == take2.frames[0]
    assert take2.op == "result" and take2.header["take"] == 2 and take2.frames[0][:4] == b"RIFF"
    assert rec["takes"][0]["loop"] == {"bars": 2, "bpm": 120.0}
    step = np.abs(np.diff(wave[:, 0]))
    assert abs(wave[0, 0] - wave[-1, 0]) <= 4 * np.percentile(step, 99) + 1e-4  # no click at the wrap
    # what was achieved, as measured on the result (the ceiling may stop it short of -14)
    stated = float(rec["takes"][0]["loudness"].split(" LUFS")[0])
    assert stated == pytest.approx(rec["result_analysis"]["lufs"], abs=0.2)
    assert ("ceiling stopped" in rec["takes"][0]["loudness"]) == (stated < -14.5)
    assert rec["result_analysis"]["true_peak_dbtp"] <= -0.9


def test_submit_refuses_what_needs_a_tempo_or_a_source(server):
    with Client(server) as c:
        for params, field in (({"bars": 4}, "params.bars"), ({"loop": True}, "params.loop"),
                              ({"mode": "continue"}, "params.mode"), ({"bars": 2, "duration": 3.0,
                                                                        "context": {"bpm": 100}}, "params.bars")):
            r = c.call("submit", kind="generate", params={"prompt": "x", **params})
            assert r.op == "error" and r.header["field"] == field, r.header


def test_fit_tempo_stretches_a_take_to_the_project_tempo(tmp_path):
    wave, sr = sf.read(click_track(tmp_path / "c100.wav", 100, seconds=8.0), always_2d=True)
    params = {"fit_tempo": True, "channels": 1, "loop": False, "normalize": False, "bars": None,
              "context": {"bpm": 120}}
    out, notes = finishing.fit_take(wave.T, sr, params, out_sr=sr, duration_s=None, tempo=120.0, source=None)
    assert notes["stretched"]["to_bpm"] == 120.0 and abs(notes["stretched"]["from_bpm"] - 100) <= 2
    assert abs(finishing.analyse(out, sr)["bpm"] - 120) <= 2


def test_edit_loudness_is_matched_to_the_source(tmp_path):
    sr = 32000
    rng = np.random.default_rng(0)
    source = (0.02 * rng.standard_normal((1, sr * 3))).astype(np.float32)
    loud = (0.5 * rng.standard_normal((1, sr * 3))).astype(np.float32)
    params = {"fit_tempo": False, "channels": 1, "loop": False, "normalize": True, "target_lufs": -14.0,
              "bars": None, "context": {}}
    out, notes = finishing.fit_take(loud, sr, params, out_sr=sr, duration_s=None, tempo=None, source=(source, sr))
    assert notes["loudness"].endswith("LUFS (the source's)")
    assert float(notes["loudness"].split(" LUFS")[0]) == pytest.approx(finishing.analyse(out, sr)["lufs"], abs=0.1)
    assert finishing.analyse(out, sr)["lufs"] == pytest.approx(finishing.analyse(source, sr)["lufs"], abs=0.5)


def test_generated_loudness_reaches_the_target_under_the_ceiling():
    sr = 32000
    quiet = (0.01 * np.random.default_rng(1).standard_normal((2, sr * 3))).astype(np.float32)
    params = {"fit_tempo": False, "channels": 2, "loop": False, "normalize": True, "target_lufs": -14.0,
              "bars": None, "context": {}}
    before = finishing.analyse(quiet, sr)["lufs"]
    out, _ = finishing.fit_take(quiet, sr, params, out_sr=sr, duration_s=None, tempo=None, source=None)
    after = finishing.analyse(out, sr)
    assert before < -30 and after["lufs"] == pytest.approx(-14.0, abs=0.5) and after["true_peak_dbtp"] <= -0.9
    params["normalize"] = False
    raw, _ = finishing.fit_take(quiet, sr, params, out_sr=sr, duration_s=None, tempo=None, source=None)
    assert finishing.analyse(raw, sr)["lufs"] == pytest.approx(before, abs=0.1)


def test_a_peaky_take_says_the_ceiling_stopped_it():
    """Sparse clicks cannot reach -14 LUFS under a -1 dBTP ceiling: the note says what was reached and why."""
    sr = 32000
    clicks = np.zeros((1, sr * 3), np.float32)
    clicks[0, ::sr // 2] = 0.5
    params = {"fit_tempo": False, "channels": 1, "loop": False, "normalize": True, "target_lufs": -14.0,
              "bars": None, "context": {}}
    out, notes = finishing.fit_take(clicks, sr, params, out_sr=sr, duration_s=None, tempo=None, source=None)
    measured = finishing.analyse(out, sr)["lufs"]
    assert measured < -15
    assert notes["loudness"] == (f"{float(notes['loudness'].split(' LUFS')[0]):.1f} LUFS: the -1 dBTP ceiling "
                                 "stopped at that (the target: -14.0 LUFS)")
    assert float(notes["loudness"].split(" LUFS")[0]) == pytest.approx(measured, abs=0.1)


def test_the_project_tempo_reaches_the_measured_level(server, tmp_path):
    """An even stream of notes 160 a minute (nothing tells a beat of 80 from 160: two levels named) is
    measured at the level of the project's tempo (context.bpm) in the job's analysis and prompt line."""
    from test_tempo_meter import SR, even_stream

    path = tmp_path / "stream.wav"
    sf.write(path, even_stream()[0], SR)
    with Client(server, timeout_s=60) as c:
        recs = {bpm: run_job(c, "ask", {"prompt": "what tempo is this?", "seed": 1, "context": {"bpm": bpm}},
                             {"audio": c.upload(path)}) for bpm in (80.0, 160.0)}
    for bpm, rec in recs.items():
        assert rec["analysis"]["bpm"] == pytest.approx(bpm, rel=0.04)
        assert rec["analysis"]["bpm_alternative"] == pytest.approx(240.0 - bpm, rel=0.04)  # the other level
        sent = json.loads(Path(rec["sidecar_path"]).read_text())["prompt_sent"]
        assert f"Measured: {round(rec['analysis']['bpm'])} BPM (or " in sent
