"""Two CPU processes under ``accelerate launch`` (gloo) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from m2ugen.train import synthetic
from train_util import one_thread  # noqa: F401 (fixture)


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _run(args: list[str], env: dict) -> None:
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("one_thread")
def test_two_processes_match_one(tmp_path):
    synthetic.write_dataset(tmp_path, "muedit", n=4)
    synthetic.write_dataset(tmp_path, "alpaca", n=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    common = ["train", "--stage", "3", "--preset", "tiny", "--zero-gates", "--data", str(tmp_path),
              "--datasets", "muedit,alpaca", "--max-steps", "3", "--save-every", "100", "--seed", "3"]
    one = tmp_path / "one"  # one process, global batch 4, in this process (as `m2ugen train` would run it)
    from server.cli import main

    assert main([*common, "--batch-size", "4", "--out", str(one), "--no-progress"]) == 0
    two = tmp_path / "two"
    # --multi_gpu picks accelerate's torchrun launcher; without CUDA the trainer's Accelerator(cpu=True) uses gloo
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", _free_port(),
          "-m", "server.cli", *common, "--batch-size", "2", "--out", str(two)], env)
    a = load_file(str(one / "m2ugen.safetensors"))
    b = load_file(str(two / "m2ugen.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert a["llama.layers.3.attention.gate"].abs().min() > 0  # trained: the comparison is between moved tensors
    # both processes ran (each wrote its RNG state), and rank 0 logged the loss of the whole global batch
    assert (two / "state/step-00000003/rng-1.safetensors").is_file()
    la = [json.loads(x)["loss"] for x in (one / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(la) == len(lb) == 3
    for x, y in zip(la, lb):
        assert abs(x - y) < 1e-3 * abs(x)
