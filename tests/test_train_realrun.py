"""Training as a person runs it (issue 24): the documented chain with relative paths, Ctrl-C saves
first, and validation names cut or broken audio files."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import soundfile as sf

from m2ugen.train import synthetic
from m2ugen.train.data import DatasetError, read_datasets
from server.cli import main
from train_util import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_documented_chain_works_with_relative_paths(tmp_path, monkeypatch, capsys):
    synthetic.write_dataset(tmp_path / "data", "alpaca", n=2)
    monkeypatch.chdir(tmp_path)
    common = ["--data", "data", "--datasets", "alpaca", "--max-steps", "1", "--no-progress"]
    assert main(["train", "--stage", "3", "--preset", "tiny", "--out", "runs/s1", *common]) == 0
    spec = json.loads((tmp_path / "runs/s1/weights.json").read_text())
    from m2ugen.checkpoint import resolve_source

    assert (tmp_path / "runs/s1/base").is_dir() and resolve_source("runs/s1")["llama_dir"] == str(tmp_path / "runs/s1/base")
    # the next stage from another working directory, and from this one, with the relative spec path
    assert main(["train", "--stage", "3", "--weights", "runs/s1", "--out", "runs/s2", *common]) == 0, spec
    monkeypatch.chdir(tmp_path / "runs")
    assert main(["doctor", "--weights", "s2"]) == 0
    capsys.readouterr()


def test_ctrl_c_saves_the_state_then_exits(tmp_path, monkeypatch, capsys):
    from m2ugen.train import trainer

    synthetic.write_dataset(tmp_path, "alpaca", n=2)
    real = trainer.train

    def train_with_ctrl_c(*args, **kwargs):
        def on_event(e):
            if e.get("kind") == "step" and e["step"] == 2:
                signal.raise_signal(signal.SIGINT)  # what Ctrl-C on the terminal sends
        return real(*args, on_event=on_event, **kwargs)

    monkeypatch.setattr(trainer, "train", train_with_ctrl_c)
    out = tmp_path / "out"
    args = ["train", "--stage", "3", "--preset", "tiny", "--data", str(tmp_path), "--datasets", "alpaca",
            "--max-steps", "8", "--save-every", "1000", "--out", str(out), "--no-progress"]
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under a shell without job control
    rc = main(args)
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert rc == 6 and summary["status"] == "stopped" and summary["step"] == 2
    assert "--resume" in captured.err
    assert (out / "state").is_dir() and (out / "weights.json").is_file()  # saved although save_every is 1000
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    monkeypatch.setattr(trainer, "train", real)
    assert main(args + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 8


def test_validation_names_cut_and_broken_audio(tmp_path):
    synthetic.write_dataset(tmp_path, "mucaps", n=4)
    audios = tmp_path / "MUCaps/audios"
    whole = (audios / "mucaps_0000.wav").read_bytes()
    (audios / "mucaps_0000.wav").write_bytes(whole[:44 + 150])  # a WAV cut to 75 samples
    sf.write(str(audios / "mucaps_0001.mp3"), np.zeros(26, np.float32), 16000)  # decodes to 26 samples
    captions = json.loads((tmp_path / "MUCaps/MUCapsCaptions.json").read_text())
    captions["mucaps_0001.mp3"] = captions.pop("mucaps_0001.wav")
    (tmp_path / "MUCaps/MUCapsCaptions.json").write_text(json.dumps(captions))
    for mode in ("header", "decode"):
        with pytest.raises(DatasetError) as e:
            read_datasets(["mucaps"], tmp_path, validate=mode)
        text = str(e.value)
        assert "mucaps_0000.wav: too short: 75 samples" in text, text
        assert "mucaps_0001.mp3: too short: 26 samples" in text, text
        assert "mucaps_0002.wav" not in text and "mucaps_0003.wav" not in text
    # existence only: the same files pass (what header/decode add)
    assert len(read_datasets(["mucaps"], tmp_path, validate="exists")) == 4
