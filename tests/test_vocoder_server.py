"""Issue 16 through every client: ``vocoder: mbd`` reaches the music decoder from the protocol, the CLI
and OSC, and is recorded with the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import run_job
from server.client import Client


def run(c: Client, **params):
    return run_job(c, "generate", {"prompt": "warm pad", "duration": 0.5, "max_new_tokens": 4, "seed": 4, **params})


def test_mbd_reaches_the_decoder_and_is_recorded(server):
    with Client(server, timeout_s=30) as c:
        plain = run(c)
        mbd = run(c, vocoder="mbd")
    assert json.loads(Path(mbd["sidecar_path"]).read_text())["params"]["vocoder"] == "mbd"
    a, b = sf.read(plain["audio_path"])[0], sf.read(mbd["audio_path"])[0]
    assert a.shape == b.shape and not np.allclose(a, b)  # same seed and codes, another vocoder


def test_vocoder_from_the_cli_and_osc_names():
    from bridge_osc.requests import OPTIONS
    from server.cli import build_parser
    from server.cli.jobs import build_submit

    args = build_parser().parse_args(["generate", "--prompt", "x", "--vocoder", "mbd"])
    fields, _, _, _ = build_submit(args, "generate", {})
    assert fields["params"]["vocoder"] == "mbd"
    assert OPTIONS["vocoder"] == ("params", "s")
