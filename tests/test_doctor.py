"""``m2ugen doctor`` finds each broken weights spec, reading headers only (issue 24)."""

import json

import pytest
import torch

from m2ugen.doctor import FAIL, OK, WARN, blockers, diagnose, read_header
from test_checkpoint import official_state_dict, save_official, tiny_model

BIG = 10**12  # "free memory" large enough for anything


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("doctor")
    sd = official_state_dict(tiny_model())
    save_official(sd, d / "checkpoint.pth")
    return sd, d


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_good_checkpoint_has_no_blocker(good):
    sd, d = good
    checks = diagnose(str(d / "checkpoint.pth"), free_bytes=BIG)
    names = _by_name(checks)
    assert not blockers(checks), [c.line() for c in checks]
    assert names["checkpoint layout"].status == OK
    assert names["attention gates"].status == OK
    assert names["memory"].status == OK


def test_header_reading_makes_no_tensor_data(good, tmp_path):
    from safetensors.torch import save_file

    sd, d = good
    h = read_header(d / "checkpoint.pth")
    assert all(t.is_meta for t in h.tensors.values()) and set(h.tensors) == set(sd)
    save_file({"a": torch.ones(2, 3, dtype=torch.bfloat16)}, str(tmp_path / "x.safetensors"))
    h = read_header(tmp_path / "x.safetensors")
    assert h.tensors["a"].is_meta and h.tensors["a"].shape == (2, 3) and h.tensors["a"].dtype == torch.bfloat16


def test_missing_file(good, tmp_path):
    (tmp_path / "weights.json").write_text(json.dumps({"preset": "tiny", "checkpoint": "gone.pth"}))
    checks = diagnose(str(tmp_path / "weights.json"), free_bytes=BIG)
    c = _by_name(checks)["file checkpoint"]
    assert c.status == FAIL and "gone.pth" in c.found and c.fix
    assert blockers(checks)


def test_wrong_layout(good, tmp_path):
    sd, _ = good
    bad = dict(sd)
    del bad["llama.layers.1.attention.wq.weight"]
    bad["llama.layers.0.attention.gate"] = torch.zeros(1, 3, 1, 1, dtype=torch.float16)  # 4 heads in tiny
    bad["llama.extra.weight"] = torch.zeros(2)
    save_official(bad, tmp_path / "checkpoint.pth")
    checks = diagnose(str(tmp_path / "checkpoint.pth"), free_bytes=BIG, preset="tiny")
    c = _by_name(checks)["checkpoint layout"]
    assert c.status == FAIL
    for what in ("llama.layers.1.attention.wq.weight", "llama.layers.0.attention.gate", "llama.extra.weight"):
        assert what in c.found


def test_tokenizer_absent(tmp_path):
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "params.json").write_text("{}")
    (llama / "consolidated.00.pth").write_bytes(b"")
    (tmp_path / "weights.json").write_text(json.dumps({"preset": "musicgen-small", "llama_dir": "llama"}))
    checks = diagnose(str(tmp_path / "weights.json"), free_bytes=BIG)
    names = _by_name(checks)
    assert names["file llama_dir"].status == OK  # relative to the spec file
    assert names["tokenizer"].status == FAIL and "tokenizer.model" in names["tokenizer"].fix
    (tmp_path / "tokenizer.model").write_bytes(b"x")  # next to llama_dir: found
    assert _by_name(diagnose(str(tmp_path / "weights.json"), free_bytes=BIG))["tokenizer"].status == OK


def test_deaf_gates(good, tmp_path):
    sd, _ = good
    deaf = {k: (torch.zeros_like(v) if k.endswith(".attention.gate") else v) for k, v in sd.items()}
    save_official(deaf, tmp_path / "checkpoint.pth")
    c = _by_name(diagnose(str(tmp_path / "checkpoint.pth"), free_bytes=BIG))["attention gates"]
    assert c.status == WARN and "deaf" in c.found and "train" in c.fix


def test_too_little_memory(good):
    _, d = good
    checks = diagnose(str(d / "checkpoint.pth"), free_bytes=1000)
    c = _by_name(checks)["memory"]
    assert c.status == FAIL and "GB free" in c.found and "--int8" in c.fix
    assert blockers(checks) == [c]


def test_cli_exit_codes_and_one_line_per_check(good, tmp_path, capsys):
    from server.cli import main

    _, d = good
    assert main(["doctor", "--weights", str(d / "checkpoint.pth")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("ok   checkpoint layout") for line in out)
    assert main(["doctor", "--weights", str(tmp_path / "nothing.pth")]) == 4
    assert "FAIL" in capsys.readouterr().out


def test_serve_refuses_weights_that_would_not_load(tmp_path, capsys):
    from server.cli import main

    (tmp_path / "weights.json").write_text(json.dumps({"preset": "tiny", "checkpoint": "gone.pth"}))
    code = main(["serve", "--weights", str(tmp_path / "weights.json"), "--port", "0",
                 "--data-dir", str(tmp_path / "data")])
    assert code == 4
    assert "m2ugen doctor" in capsys.readouterr().err
