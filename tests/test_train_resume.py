"""An interrupted run resumed with --resume ends bitwise where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch

from m2ugen.train import synthetic
from m2ugen.train.checkpoints import latest_state
from m2ugen.train.stages import is_trainable
from m2ugen.train.trainer import train
from train_util import quick, tiny, trained_tensors, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resume_is_bitwise_identical(tmp_path):
    synthetic.write_dataset(tmp_path, "muedit", n=3)
    synthetic.write_dataset(tmp_path, "musicqa", n=3)
    # 6 entries, batch 2, accumulation 2: 1.5 optimizer steps per epoch, so the interruption (after
    # step 2) falls mid-epoch and the run crosses epoch boundaries
    cfg = quick(3, datasets=("muedit", "musicqa"), max_steps=5, accum_steps=2, save_every=100, warmup_steps=2)

    whole = tiny()
    train(whole, cfg, tmp_path, tmp_path / "whole")

    part = tiny()
    calls = []
    s1 = train(part, cfg, tmp_path, tmp_path / "part", should_stop=lambda: calls.append(1) or len(calls) >= 2)
    assert s1["status"] == "stopped" and s1["step"] == 2
    assert latest_state(tmp_path / "part").name == "step-00000002"
    resumed = tiny()
    with torch.no_grad():  # scramble what is trained: it must all come back from the state
        for n, p in resumed.named_parameters():
            if is_trainable(n, 3, True):
                p.add_(torch.randn_like(p))
    s2 = train(resumed, cfg, tmp_path, tmp_path / "part", resume=True)
    assert s2["status"] == "finished" and s2["step"] == 5

    a, b = trained_tensors(whole), trained_tensors(resumed)
    assert a.keys() == b.keys()
    diff = [n for n in a if not torch.equal(a[n], b[n])]
    assert diff == []
    # and training really moved them (the comparison is not between untouched tensors)
    fresh = trained_tensors(tiny())
    assert not torch.equal(a["llama.layers.0.attention.lora_wq_l1.weight"],
                           fresh["llama.layers.0.attention.lora_wq_l1.weight"])
