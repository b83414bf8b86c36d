"""The REAPER scripts under the real Lua 5.4 toolchain: ``luac5.4 -p`` on every script, then the busted specs
in tests/lua (json, quoting, settings/discovery, every action against the recording fake ``reaper``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "reaper_scripts"
LUA_TESTS = ROOT / "tests" / "lua"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (Debian: apt-get install lua5.4 lua-busted)"
    return path


def lua_files() -> list[Path]:
    return sorted(SCRIPTS.rglob("*.lua")) + sorted(LUA_TESTS.rglob("*.lua"))


@pytest.mark.parametrize("path", lua_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_luac_parses(path):
    proc = subprocess.run([_tool("luac5.4"), "-p", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_luac_rejects_a_broken_script(tmp_path):
    bad = tmp_path / "bad.lua"
    bad.write_text("reaper.ShowConsoleMsg(\"unterminated)\n")
    proc = subprocess.run([_tool("luac5.4"), "-p", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "unfinished string" in proc.stderr


@pytest.mark.timeout(120)
def test_busted_specs_pass():
    proc = subprocess.run([_tool("busted"), "--lua=lua5.4", "-o", "TAP", str(LUA_TESTS)], cwd=ROOT,
                          capture_output=True, text=True, timeout=110)
    out = proc.stdout + proc.stderr
    failed = [line for line in out.splitlines() if line.startswith("not ok")]
    assert proc.returncode == 0 and not failed, out[-6000:]
    plan = re.search(r"^1\.\.(\d+)$", out, re.M)
    assert plan, out[-2000:]
    assert int(plan.group(1)) >= 100  # every spec file was found and ran
    for spec in ("json_spec.lua", "shell_spec.lua", "settings_spec.lua", "actions_spec.lua", "fake_spec.lua",
                 "producer_spec.lua"):
        assert (LUA_TESTS / spec).exists()
