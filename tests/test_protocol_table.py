"""One home for each protocol fact: the parameter table drives the validator and the CLI, the bridge's
settings use its names, and every Python client folds events with the one JobView."""

from __future__ import annotations

import pytest

from server import protocol
from server.cli import build_parser
from server.jobview import JobView


def _options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {o for a in sub.choices[command]._actions for o in a.option_strings}


@pytest.mark.parametrize("kind", protocol.KINDS)
def test_cli_options_come_from_the_parameter_table(kind):
    from server.cli import learn

    opts = _options(learn.COMMAND if kind == learn.KIND else kind)
    for spec in protocol.PARAMS + protocol.CONTEXT:
        assert (spec.option in opts) == (kind in spec.kinds), (kind, spec.name)


def test_the_validator_follows_the_table():
    p = protocol.check_params("generate", {"prompt": "x"})
    assert set(protocol.PARAM_NAMES) <= set(p)
    for spec in protocol.PARAMS:
        if spec.default is not ... and spec.name != "sample_rate":
            assert p[spec.name] == spec.default, spec.name
        if spec.hi is not None:
            bad = spec.hi + abs(spec.hi) + 1
            with pytest.raises(protocol.ProtocolError, match=spec.name):
                protocol.check_params("generate", {"prompt": "x", spec.name: int(bad) if spec.type == "int" else bad})
    # a field for other kinds only is validated, then recorded as its default
    assert protocol.check_params("ask", {"prompt": "x", "duration": 3.0})["duration"] is None
    with pytest.raises(protocol.ProtocolError, match="duration"):
        protocol.check_params("ask", {"prompt": "x", "duration": "long"})
    with pytest.raises(protocol.ProtocolError, match="params.context: tempo"):
        protocol.check_params("ask", {"prompt": "x", "context": {"tempo": 120}})


def test_project_rate_and_selection_are_used():
    p = protocol.check_params("generate", {"prompt": "x", "context": {"project_sample_rate": 48000}})
    assert p["sample_rate"] == 48000
    assert protocol.check_params("generate", {"prompt": "x", "sample_rate": 44100,
                                              "context": {"project_sample_rate": 48000}})["sample_rate"] == 44100


def test_bridge_settings_are_protocol_names():
    from bridge_osc import requests

    names = set(protocol.PARAM_NAMES) | set(protocol.CONTEXT_NAMES)
    assert set(requests.SETTINGS) <= names


def test_one_is_loopback_everywhere():
    from server import security
    import bridge_osc.bridge as bridge

    assert security.is_loopback is protocol.is_loopback
    assert protocol.is_loopback("ip6-localhost") and not protocol.is_loopback("0.0.0.0")
    assert getattr(bridge, "is_loopback", protocol.is_loopback)("ip6-localhost")


SEQUENCES = [
    ([{"op": "accepted", "job": "j", "queue_position": 2}, {"op": "queued", "job": "j", "queue_position": 0},
      {"op": "progress", "job": "j", "stage": "thinking", "fraction": 0.3},
      {"op": "text", "job": "j", "text": "A calm", "delta": "A calm"},
      {"op": "progress", "job": "j", "stage": "thinking", "fraction": 0.2},
      {"op": "done", "job": "j", "state": "done", "audio_path": "/r.wav", "duration": 2.0, "sample_rate": 32000,
       "seed": 5, "text": "A calm tune"}],
     {"state": "done", "stage": "thinking", "fraction": 1.0, "text": "A calm tune", "audio_path": "/r.wav",
      "error": None, "seed": 5}),
    ([{"op": "accepted", "job": "j", "queue_position": 0}, {"op": "cancelled", "job": "j", "state": "cancelled"},
      {"op": "progress", "job": "j", "stage": "generating", "fraction": 0.9}],
     {"state": "cancelled", "audio_path": "", "fraction": 0.0}),
    ([{"op": "accepted", "job": "j", "queue_position": 0},
      {"op": "error", "job": "j", "code": "job_failed", "message": "boom"}],
     {"state": "failed", "error": {"code": "job_failed", "message": "boom"}}),
    ([{"op": "subscribed", "job": "j", "state": "running", "stage": "generating", "fraction": 0.5}],
     {"state": "running", "stage": "generating", "fraction": 0.5}),
]


@pytest.mark.parametrize("events,expected", SEQUENCES)
def test_jobview_folds_events_as_documented(events, expected):
    view = JobView()
    for e in events:
        view.apply(e)
    assert {k: getattr(view, k) for k in expected} == expected
    assert view.job == "j"


@pytest.mark.parametrize("events,expected", SEQUENCES)
def test_the_cli_status_file_is_the_same_view(events, expected, tmp_path):
    from server.cli.common import Reporter

    r = Reporter(str(tmp_path / "s.json"), progress=False)
    import contextlib
    import io as io_

    with contextlib.redirect_stdout(io_.StringIO()):
        for e in events:
            r.event(e)
    import json

    status = json.loads((tmp_path / "s.json").read_text())
    for k, v in expected.items():  # the status file writes JobView's empty strings as null
        assert status[k] == (None if v == "" else v), k


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_reaper_names_are_the_clis():
    """The REAPER scripts write the CLI's --request keys and pass its options: both must exist."""
    import re

    from server.cli.jobs import REQUEST_KEYS
    from server.cli.learn import LEARN_REQUEST_KEYS

    app = (ROOT / "reaper_scripts/m2ugen/app.lua").read_text()
    job = (ROOT / "reaper_scripts/m2ugen/job.lua").read_text()
    keys = set(re.findall(r"\breq\.(\w+)\s*=", app + job))
    keys |= {k for block in re.findall(r"local req = \{([^}]*)\}", app) for k in re.findall(r"(\w+)\s*=", block)}
    known = set(REQUEST_KEYS) | set(LEARN_REQUEST_KEYS)  # `learn` (M2UGen - Learn from selected items)
    assert keys and keys <= known, keys - known
    extra = job[job.index("function job.extra_args"):]
    options = set(re.findall(r'"(--[a-z-]+)", "option"', extra[:extra.index("\nend\n")]))
    assert {"--takes", "--fit-tempo"} <= options
    for kind in ("edit", "generate"):
        assert options <= _options(kind), options - _options(kind)


def test_live_device_names_are_the_bridges():
    """The Max device's /m2u/submit option names are the bridge's (which come from the protocol table)."""
    import re

    from bridge_osc.requests import OPTIONS

    js = (ROOT / "max_device/m2ugen_requests.js").read_text()  # the device's requests (split from m2ugen_device.js)
    body = js[js.index("function submitArgs"):]
    body = body[:body.index("\n}\n")]
    names = set(re.findall(r'"([a-z_]+)", (?:request|state|mediaKind)', body)) | set(re.findall(r'push\("([a-z_]+)"', body))
    assert {"prompt", "seed", "takes", "mode", "bpm", "results_dir"} <= names
    assert names <= set(OPTIONS), names - set(OPTIONS)


def test_every_kind_has_one_runner_and_its_stages():
    from server import kinds
    assert set(kinds.RUNNERS) == set(protocol.KINDS)
    for kind in protocol.KINDS:
        spans = kinds.stage_spans(kind)
        assert spans and all(0.0 <= lo <= hi <= 1.0 for lo, hi in spans.values()), kind


@pytest.mark.parametrize("kind", protocol.KINDS)
def test_the_kind_table_decides_the_inputs_a_submit_takes(kind):
    spec = protocol.KIND_SPECS[kind]
    required = {p.name: "x" for p in protocol.PARAMS if p.default is ... and kind in p.kinds}  # prompt, adapter_name
    base = {"op": "submit", "kind": kind, "params": {"prompt": "x", **required}}
    ref = {"blob": "a" * 64, "proof": "b" * 64}
    present = {name: [ref] if name == "audio_set" else ref for name in spec.requires}
    protocol.check_submit({**base, "inputs": present}, 0)  # what it requires is enough
    for name in spec.requires:
        with pytest.raises(protocol.ProtocolError, match=f"requires 'inputs.{name}'"):
            protocol.check_submit({**base, "inputs": {k: v for k, v in present.items() if k != name}}, 0)
    for name in set(protocol.INPUTS) - set(spec.accepts):
        with pytest.raises(protocol.ProtocolError, match=f"takes no 'inputs.{name}'"):
            protocol.check_submit({**base, "inputs": {**present, name: ref}}, 0)
