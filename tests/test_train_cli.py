"""`m2ugen train` / `m2ugen finetune` from the command line (in process)."""

from __future__ import annotations

import json

import pytest

from m2ugen.train import synthetic
from server.cli import main
from train_util import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_help_lists_the_stages_and_layouts(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--stage {1,2,3}" in out and "MUCapsCaptions.json" in out and "--resume" in out and "--reference" in out


def test_broken_data_fails_before_training_naming_every_file(tmp_path, capsys):
    synthetic.write_dataset(tmp_path, "mucaps", n=3)
    (tmp_path / "MUCaps/audios/mucaps_0000.wav").unlink()
    (tmp_path / "MUCaps/audios/mucaps_0002.wav").write_bytes(b"")
    rc = main(["train", "--stage", "1", "--preset", "tiny", "--data", str(tmp_path), "--datasets", "mucaps",
               "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 4 and "mucaps_0000.wav: missing" in err and "mucaps_0002.wav: empty" in err
    assert not (tmp_path / "out/state").exists()


def test_train_then_serve_spec_then_finetune(tmp_path, capsys):
    synthetic.write_dataset(tmp_path, "alpaca", n=2)
    out = tmp_path / "out"
    assert main(["train", "--stage", "3", "--preset", "tiny", "--data", str(tmp_path), "--datasets", "alpaca",
                 "--max-steps", "1", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "finished" and (out / "weights.json").is_file()
    clips = tmp_path / "clips"
    synthetic.write_audio(clips / "a.wav", 1)
    (clips / "a.txt").write_text("soft piano")
    assert main(["finetune", "--weights", str(out), "--audio-dir", str(clips), "--out", str(tmp_path / "ad"),
                 "--steps", "2", "--clip-s", "0.4"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["steps"] == 2 and info["clips"] == 1 and (tmp_path / "ad/adapter_model.safetensors").is_file()
