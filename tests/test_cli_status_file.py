"""The CLI's status file while a DAW script reads it (issue 22 #16): on Windows ``os.replace`` fails with
PermissionError while the reader holds the file open. The writer retries, skips an intermediate update it
cannot make, and always delivers the final status (in place on Windows). Platform simulated."""

from __future__ import annotations

import json
import os
import sys

import pytest

from server.cli.common import Reporter


class LockedReplace:
    """os.replace that fails like Windows while a reader has the target open (`fails` times, -1 = always)."""

    def __init__(self, fails: int):
        self.fails, self.calls = fails, 0
        self.real = os.replace

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fails < 0 or self.calls <= self.fails:
            raise PermissionError(13, "The process cannot access the file because it is being used by another process")
        return self.real(*args, **kwargs)


@pytest.fixture
def no_sleep(monkeypatch):
    pauses = []
    monkeypatch.setattr("server.cli.common.time.sleep", pauses.append)
    return pauses


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_locked_status_file_is_replaced_once_the_reader_lets_go(tmp_path, monkeypatch, no_sleep):
    path = tmp_path / "job.status.json"
    rep = Reporter(str(path), progress=False)
    locked = LockedReplace(3)
    monkeypatch.setattr(os, "replace", locked)
    rep.state["state"] = "running"
    rep.heartbeat()
    assert read(path)["state"] == "running"
    assert locked.calls == 4 and len(no_sleep) == 3
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]  # no temp file left behind


def test_an_update_that_never_gets_through_is_skipped_not_raised(tmp_path, monkeypatch, no_sleep, capsys):
    path = tmp_path / "job.status.json"
    rep = Reporter(str(path), progress=False)
    monkeypatch.setattr(os, "replace", LockedReplace(-1))
    rep.state["state"] = "running"
    rep.heartbeat()  # must not raise (it did: an uncaught PermissionError ended the CLI)
    assert read(path)["state"] == "starting"  # the older, whole state is still there
    assert "locked by a reader" in capsys.readouterr().err


@pytest.mark.parametrize("platform, final_written", [("win32", True), ("linux", False)])
def test_the_final_status_arrives_in_place_on_windows(tmp_path, monkeypatch, no_sleep, platform, final_written):
    path = tmp_path / "job.status.json"
    rep = Reporter(str(path), progress=False)
    monkeypatch.setattr(os, "replace", LockedReplace(-1))
    monkeypatch.setattr(sys, "platform", platform)
    rep.state.update(state="done", job="j1")
    assert rep.finish(0) == 0
    st = read(path)
    assert (st["exit_code"] == 0 and st["state"] == "done") is final_written
