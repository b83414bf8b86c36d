"""Two CPU processes under ``accelerate launch`` (gloo) train like one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from m2ugen.train import synthetic


def _run(args: list[str], env: dict) -> None:
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]


@pytest.mark.timeout(300)
def test_two_processes_match_one(tmp_path):
    synthetic.write_dataset(tmp_path, "muedit", n=4)
    synthetic.write_dataset(tmp_path, "alpaca", n=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    common = ["train", "--stage", "3", "--preset", "tiny", "--zero-gates", "--data", str(tmp_path),
              "--datasets", "muedit,alpaca", "--max-steps", "3", "--save-every", "100", "--seed", "3"]
    one = tmp_path / "one"
    _run([sys.executable, "-m", "server.cli", *common, "--batch-size", "4", "--out", str(one)], env)
    two = tmp_path / "two"
    _run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
          "-m", "server.cli", *common, "--batch-size", "2", "--out", str(two)], env)
    a = load_file(str(one / "m2ugen.safetensors"))
    b = load_file(str(two / "m2ugen.safetensors"))
    assert a.keys() == b.keys()
    moved = 0
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    base = load_file(str(one / "state/step-00000003/trainable.safetensors"))
    assert base  # the state was written at the end
    ga = a["llama.layers.3.attention.gate"]
    assert ga.abs().min() > 0  # trained: the comparison is between moved tensors
