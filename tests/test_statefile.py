"""Resumable state without pickle (m2ugen.train.statefile): the exact round trip a bit-identical resume
needs, and a pickle planted where an older version kept its state never runs."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from m2ugen.train import checkpoints, statefile
from m2ugen.train import finetune as ft


class _Payload:
    """A pickle that creates ``marker`` when it is unpickled (what a planted file would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _adamw_after_two_steps():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        sum((p ** 2).sum() for p in params).backward()
        opt.step()
    return params, opt


def test_a_state_round_trips_exactly(tmp_path):
    _, opt = _adamw_after_two_steps()
    state = {"optimizer": opt.state_dict(), "python": random.getstate(), "numpy": np.random.get_state(),
             "numpy_rng": np.random.default_rng(5).bit_generator.state, "torch": torch.get_rng_state(),
             "nan": float("nan"), "inf": float("-inf"), "none": None, "text": "é", "big": 2 ** 100}
    back = statefile.load(statefile.save(tmp_path / "s.safetensors", state))
    assert back["python"] == state["python"]  # tuples and 625 ints
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["numpy"][1].dtype == state["numpy"][1].dtype and back["numpy"][2:] == state["numpy"][2:]
    assert back["numpy_rng"] == state["numpy_rng"] and back["big"] == 2 ** 100
    assert torch.equal(back["torch"], state["torch"])
    assert np.isnan(back["nan"]) and back["inf"] == float("-inf") and back["none"] is None and back["text"] == "é"
    assert sorted(back["optimizer"]["state"]) == [0, 1]  # integer keys stay integers (JSON alone makes them str)
    # the restored optimizer continues exactly as the original
    params, opt = _adamw_after_two_steps()
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = torch.optim.AdamW(params2, lr=1e-2)
    opt2.load_state_dict(back["optimizer"])
    for ps, o in ((params, opt), (params2, opt2)):
        o.zero_grad()
        sum((p ** 3).sum() for p in ps).backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(params, params2))


def test_a_planted_pickle_never_runs_at_a_finetune_resume(tmp_path, caplog):
    marker = tmp_path / "pwned"
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    torch.save({"step": 3, "evil": _Payload(marker)}, state_dir / ft.LEGACY_STATE_FILE)
    torch.save({"step": 3, "evil": _Payload(marker)}, state_dir / ft.STATE_FILE)  # a pickle under the new name
    with caplog.at_level(logging.WARNING, logger="m2ugen.train.finetune"):
        assert ft.load_state(state_dir) is None  # the run starts over
    assert not marker.exists()  # nothing ran
    assert "never loaded" in caplog.text and "not a state file" in caplog.text


def test_a_planted_pickle_never_runs_at_a_training_resume(tmp_path, caplog):
    marker = tmp_path / "pwned"
    trained = {"w": torch.nn.Parameter(torch.zeros(2))}
    opt = torch.optim.AdamW(trained.values())
    d = checkpoints.save_state(tmp_path / "out", trained, opt, {"step": 1, "micro": 2})
    assert sorted(p.name for p in d.iterdir()) == ["optimizer.safetensors", "progress.json", "rng-0.safetensors",
                                                   "trainable.safetensors"]
    assert checkpoints.load_state(d, trained, opt)["step"] == 1  # a clean state resumes
    for name in ("optimizer.pt", "rng-0.pt"):  # an older version's files, planted
        torch.save({"evil": _Payload(marker)}, d / name)
    (d / checkpoints.OPTIMIZER_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="m2ugen.train"):
        with pytest.raises(ValueError, match="not loaded"):
            checkpoints.load_state(d, trained, opt)
    assert not marker.exists()
    assert "never loaded" in caplog.text
    torch.save({"evil": _Payload(marker)}, d / checkpoints.OPTIMIZER_FILE)  # a pickle under the new name
    with pytest.raises(statefile.StateFileError):
        checkpoints.load_state(d, trained, opt)
    assert not marker.exists()
