"""Static check of the ReaScripts: every ``reaper.*`` call exists in REAPER's API with an argument count in
[min_args, max_args]; extension APIs (ReaImGui, SWS, js_ReaScriptAPI, ...) only inside an
``if reaper.APIExists("...") then`` block; ``gfx.*`` calls are known gfx functions; ``reaper`` is never
aliased or assigned to.

The checker tokenizes Lua 5.4 (strings with escapes, long brackets ``[==[ ]==]``, comments) so text inside
strings and comments is never mistaken for a call, and counts only top-level arguments.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "reaper_scripts"
SIGNATURES = Path(os.environ.get("M2UGEN_REAPER_SIGNATURES", "/work/shared/reference/reaper-api.signatures.json"))
if not SIGNATURES.exists():  # a checkout with its own copy of the shared reference
    SIGNATURES = ROOT / "shared" / "reference" / "reaper-api.signatures.json"

EXTENSION_PREFIXES = ("ImGui_", "CF_", "JS_", "BR_", "NF_", "SNM_", "SN_", "ReaPack_", "Xen_", "ULT_", "FNG_")
# gfx functions REAPER has that the luadoc source lists incompletely (see shared/reference/README.md)
GFX_EXTRA = {"drawstr"}

KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
            "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}


# ---------------------------------------------------------------------------------------------
# tokenizer


@dataclass
class Tok:
    kind: str  # "name" | "keyword" | "string" | "number" | "op"
    value: str
    line: int


class LuaSyntaxError(ValueError):
    pass


_LONG_OPEN = re.compile(r"\[(=*)\[")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*(?:\.[0-9a-fA-F]*)?(?:[pP][+-]?\d+)?|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = ("...", "..", "==", "~=", "<=", ">=", "//", "::", "<<", ">>")


def tokenize(src: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n, line = 0, len(src), 1
    if src.startswith("#!"):
        i = src.find("\n") if "\n" in src else n
    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r\f\v":
            i += 1
        elif src.startswith("--", i):
            m = _LONG_OPEN.match(src, i + 2)
            if m:
                close = "]" + m.group(1) + "]"
                j = src.find(close, m.end())
                if j < 0:
                    raise LuaSyntaxError(f"line {line}: unterminated long comment")
                line += src.count("\n", i, j)
                i = j + len(close)
            else:
                j = src.find("\n", i)
                i = n if j < 0 else j
        elif c in "\"'":
            j, start_line = i + 1, line
            while True:
                if j >= n or src[j] == "\n":
                    raise LuaSyntaxError(f"line {start_line}: unterminated string")
                if src[j] == "\\":
                    if j + 1 < n and src[j + 1] == "\n":
                        line += 1
                    if src.startswith("z", j + 1):  # \z skips following whitespace, newlines included
                        k = j + 2
                        while k < n and src[k] in " \t\r\n\f\v":
                            line += src[k] == "\n"
                            k += 1
                        j = k
                        continue
                    j += 2
                    continue
                if src[j] == c:
                    break
                j += 1
            toks.append(Tok("string", src[i + 1:j], start_line))
            i = j + 1
        elif c == "[" and _LONG_OPEN.match(src, i):
            m = _LONG_OPEN.match(src, i)
            close = "]" + m.group(1) + "]"
            j = src.find(close, m.end())
            if j < 0:
                raise LuaSyntaxError(f"line {line}: unterminated long string")
            toks.append(Tok("string", src[m.end():j], line))
            line += src.count("\n", i, j)
            i = j + len(close)
        elif c.isdigit() or (c == "." and i + 1 < n and src[i + 1].isdigit()):
            m = _NUMBER.match(src, i)
            toks.append(Tok("number", m.group(0), line))
            i = m.end()
        elif c.isalpha() or c == "_":
            m = _NAME.match(src, i)
            word = m.group(0)
            toks.append(Tok("keyword" if word in KEYWORDS else "name", word, line))
            i = m.end()
        else:
            for op in _OPS:
                if src.startswith(op, i):
                    toks.append(Tok("op", op, line))
                    i += len(op)
                    break
            else:
                toks.append(Tok("op", c, line))
                i += 1
    return toks


# ---------------------------------------------------------------------------------------------
# checker


# Corrections to the generated list (tests/lua/helpers/fake_reaper.lua applies the same ones): the luadoc
# source declares ``set_action_options()`` without its parameter, while its own text describes ``flag``
# (&1 auto-terminate on relaunch, &2 relaunch, &4 toggle on, &8 toggle off); REAPER 7.03+ takes one integer.
SIGNATURE_PATCHES = {"reaper.set_action_options": {"min_args": 1, "max_args": 1}}


def load_signatures() -> dict:
    sigs = json.loads(SIGNATURES.read_text(encoding="utf-8"))["functions"]
    for name, patch in SIGNATURE_PATCHES.items():
        sigs[name] = {**sigs[name], **patch}
    return sigs


def _closing(toks: list[Tok], open_idx: int) -> int:
    """Index of the bracket closing toks[open_idx] ((, {, [)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    depth = 0
    for k in range(open_idx, len(toks)):
        t = toks[k]
        if t.kind == "op" and t.value in pairs:
            depth += 1
        elif t.kind == "op" and t.value in pairs.values():
            depth -= 1
            if depth == 0:
                return k
    raise LuaSyntaxError(f"line {toks[open_idx].line}: unbalanced '{toks[open_idx].value}'")


def _count_args(toks: list[Tok], open_idx: int) -> int:
    close = _closing(toks, open_idx)
    if close == open_idx + 1:
        return 0
    depth, commas = 0, 0
    for t in toks[open_idx + 1:close]:
        if t.kind == "op" and t.value in "({[":
            depth += 1
        elif t.kind == "op" and t.value in ")}]":
            depth -= 1
        elif t.kind == "op" and t.value == "," and depth == 0:
            commas += 1
    return commas + 1


@dataclass
class Report:
    problems: list[str]
    calls: list[tuple[str, int, int]]  # (name, arg count, line)


def check_source(src: str, sigs: dict, where: str = "<src>") -> Report:
    toks = tokenize(src)
    problems: list[str] = []
    calls: list[tuple[str, int, int]] = []
    gfx_known = {k.split(".", 1)[1] for k in sigs if k.startswith("gfx.")} | GFX_EXTRA

    # block stack for APIExists guards: each frame is [kind, guarded]
    stack: list[list] = []

    def guarded() -> bool:
        return any(frame[1] for frame in stack)

    def condition(start: int, stop_word: str) -> tuple[bool, int]:
        k = start
        while k < len(toks) and not (toks[k].kind == "keyword" and toks[k].value == stop_word):
            k += 1
        cond = toks[start:k]
        has_guard = any(t.value == "APIExists" for t in cond) and not any(t.value == "not" for t in cond)
        return has_guard, k

    def check_arity(name: str, nargs: int, line: int) -> None:
        calls.append((name, nargs, line))
        sig = sigs.get("reaper." + name)
        if sig is None:
            if name.startswith(EXTENSION_PREFIXES):
                if not guarded():
                    problems.append(f"{where}:{line}: extension API reaper.{name} outside an "
                                    f"`if reaper.APIExists(...) then` block")
            else:
                problems.append(f"{where}:{line}: unknown REAPER API reaper.{name}")
            return
        lo, hi = sig["min_args"], sig["max_args"]
        if lo is not None and not lo <= nargs <= hi:
            problems.append(f"{where}:{line}: reaper.{name} called with {nargs} argument(s), expected {lo}..{hi}")

    i = 0
    while i < len(toks):
        t = toks[i]
        if t.kind == "keyword":
            if t.value == "function":
                stack.append(["function", False])
            elif t.value == "if":
                g, j = condition(i + 1, "then")
                stack.append(["if", g])
            elif t.value == "elseif":
                g, j = condition(i + 1, "then")
                if stack:
                    stack[-1][1] = g
            elif t.value == "else":
                if stack:
                    stack[-1][1] = False
            elif t.value in ("while", "for"):
                _, j = condition(i + 1, "do")
                stack.append(["loop", False])
                i = j + 1  # the loop's own `do`
                continue
            elif t.value == "do":
                stack.append(["do", False])
            elif t.value == "repeat":
                stack.append(["repeat", False])
            elif t.value in ("end", "until"):
                if not stack:
                    problems.append(f"{where}:{t.line}: unbalanced '{t.value}'")
                else:
                    stack.pop()
        elif t.kind == "name" and t.value == "reaper":
            prev = toks[i - 1] if i > 0 else None
            if prev is not None and prev.kind == "op" and prev.value in (".", ":"):
                i += 1
                continue
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if nxt is None or not (nxt.kind == "op" and nxt.value in (".", ":")):
                if prev is not None and prev.kind == "op" and prev.value == "=" or (
                        nxt is not None and nxt.kind == "op" and nxt.value == "="):
                    problems.append(f"{where}:{t.line}: `reaper` is aliased or assigned; call reaper.* directly")
                i += 1
                continue
            if nxt.value == ":" or i + 2 >= len(toks) or toks[i + 2].kind != "name":
                problems.append(f"{where}:{t.line}: unexpected use of reaper{nxt.value}")
                i += 1
                continue
            name = toks[i + 2].value
            after = toks[i + 3] if i + 3 < len(toks) else None
            if after is not None and after.kind == "op" and after.value == "(":
                check_arity(name, _count_args(toks, i + 3), t.line)
            elif after is not None and after.kind == "string":
                check_arity(name, 1, t.line)
            elif after is not None and after.kind == "op" and after.value == "{":
                check_arity(name, 1, t.line)
            elif after is not None and after.kind == "op" and after.value == "=" and not (
                    i + 4 < len(toks) and toks[i + 4].value == "="):
                problems.append(f"{where}:{t.line}: assigns reaper.{name}")
            elif (prev is not None and prev.kind == "op" and prev.value == "(" and i >= 2
                  and toks[i - 2].value in ("pcall",) and after is not None and after.value == ","):
                # pcall(reaper.Name, a, b): the remaining pcall arguments are the call's arguments
                check_arity(name, _count_args(toks, i - 1) - 1, t.line)
            else:
                # a reference (e.g. passed as a value): it must still exist
                if "reaper." + name not in sigs and not name.startswith(EXTENSION_PREFIXES):
                    problems.append(f"{where}:{t.line}: unknown REAPER API reaper.{name}")
                elif name.startswith(EXTENSION_PREFIXES) and not guarded():
                    problems.append(f"{where}:{t.line}: extension API reaper.{name} outside an APIExists block")
            i += 3
            continue
        elif t.kind == "name" and t.value == "gfx":
            prev = toks[i - 1] if i > 0 else None
            if not (prev is not None and prev.kind == "op" and prev.value in (".", ":")) and i + 3 < len(toks):
                if toks[i + 1].value == "." and toks[i + 2].kind == "name" and toks[i + 3].value == "(":
                    if toks[i + 2].value not in gfx_known:
                        problems.append(f"{where}:{t.line}: unknown gfx function gfx.{toks[i + 2].value}")
        i += 1
    if stack:
        problems.append(f"{where}: {len(stack)} block(s) not closed")
    return Report(problems, calls)


def script_files() -> list[Path]:
    return sorted(SCRIPTS.rglob("*.lua"))


# ---------------------------------------------------------------------------------------------
# tests


@pytest.fixture(scope="module")
def sigs():
    return load_signatures()


def test_every_reaper_call_exists_with_a_valid_argument_count(sigs):
    files = script_files()
    assert len(files) >= 11, files
    problems, n_calls, names = [], 0, set()
    for f in files:
        rep = check_source(f.read_text(encoding="utf-8"), sigs, str(f.relative_to(ROOT)))
        problems += rep.problems
        n_calls += len(rep.calls)
        names |= {c[0] for c in rep.calls}
    assert problems == []
    # the checker really saw the scripts' calls (render, insert, undo, ExecProcess, defer, ...)
    assert n_calls > 100
    for must in ("ExecProcess", "defer", "Main_OnCommandEx", "GetSetProjectInfo", "GetSetProjectInfo_String",
                 "Undo_BeginBlock2", "Undo_EndBlock2", "InsertTrackInProject", "TimeMap_GetTimeSigAtTime",
                 "SetExtState", "SetProjExtState", "APIExists", "ImGui_Begin", "GetUserFileNameForRead",
                 "EnumProjects", "ValidatePtr2", "set_action_options", "AddProjectMarker2", "SetActiveTake",
                 "CF_CreatePreview", "EnumProjExtState"):
        assert must in names, must
    # every project-aware call gets the job's project, never the literal 0 (the current tab)
    for f in files:
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r"reaper\.(\w+)\(0\s*,", text):
            assert m.group(1) == "ValidatePtr2", f"{f.name}: reaper.{m.group(1)}(0, ...) uses the current tab"


def test_the_signature_patch_matches_the_documented_parameter(sigs):
    doc = (SIGNATURES.parent / "reaper-api.lua").read_text(encoding="utf-8")
    before = doc[:doc.index("function reaper.set_action_options")].rstrip("\n").splitlines()[-1]
    assert "flag&1: script will auto-terminate if re-launched" in before  # the doc text names the parameter
    assert sigs["reaper.set_action_options"]["max_args"] == 1


def test_no_time_signature_trap_and_render_action_is_42230():
    text = "\n".join(f.read_text(encoding="utf-8") for f in script_files())
    assert "GetProjectTimeSignature2" not in text
    assert "42230" in text


def test_every_action_has_reapack_headers():
    actions = sorted(SCRIPTS.glob("M2UGen - *.lua"))
    assert [a.name for a in actions] == ["M2UGen - Ask about selection.lua", "M2UGen - Cancel.lua",
                                         "M2UGen - Edit selection.lua", "M2UGen - Generate.lua",
                                         "M2UGen - Jobs.lua", "M2UGen - Learn from selected items.lua",
                                         "M2UGen - Settings.lua", "M2UGen - Split into stems.lua",
                                         "M2UGen - Transcribe selection.lua"]
    for a in actions:
        head = a.read_text(encoding="utf-8")[:2000]
        assert re.search(r"^-- @description \S", head, re.M), a.name
        assert re.search(r"^-- @version \d+\.\d+\.\d+", head, re.M), a.name
    main = (SCRIPTS / "M2UGen - Generate.lua").read_text(encoding="utf-8")
    for other in actions:
        if other.name != "M2UGen - Generate.lua":
            assert f"[main] {other.name}" in main
    assert "[nomain] m2ugen/*.lua" in main
    for lib in (SCRIPTS / "m2ugen").glob("*.lua"):
        assert lib.read_text(encoding="utf-8").startswith("-- @noindex"), lib.name


def test_index_xml_lists_every_file_of_the_package():
    import xml.etree.ElementTree as ET

    root = ET.parse(SCRIPTS / "index.xml").getroot()
    assert root.tag == "index" and root.get("version") == "1"
    pkgs = root.findall("./category/reapack")
    assert len(pkgs) == 1
    pkg = pkgs[0]
    assert pkg.get("type") == "script" and pkg.get("name") == "M2UGen - Generate.lua"
    version = pkg.find("version")
    head = (SCRIPTS / "M2UGen - Generate.lua").read_text(encoding="utf-8")
    assert f"-- @version {version.get('name')}" in head
    sources = version.findall("source")
    files = {s.get("file") for s in sources}
    expected = {p.relative_to(SCRIPTS).as_posix() for p in script_files()}
    assert files == expected
    mains = {s.get("file") for s in sources if s.get("main") == "main"}
    assert mains == {p.name for p in SCRIPTS.glob("M2UGen - *.lua")}
    for s in sources:
        assert s.text and s.text.startswith("https://"), s.get("file")


# --- the checker itself must catch what it claims to catch -----------------------------------


@pytest.mark.parametrize("src, expect", [
    ('reaper.NoSuchFunction(1)', "unknown REAPER API reaper.NoSuchFunction"),
    ('reaper.GetTrack(0)', "reaper.GetTrack called with 1 argument(s), expected 2..2"),
    ('reaper.ShowMessageBox("a", "b", 0, 1)', "expected 3..3"),
    ('reaper.ImGui_Begin(ctx, "x", true)', "outside an `if reaper.APIExists"),
    ('if reaper.APIExists("ImGui_Begin") then x() else reaper.ImGui_Begin(c, "x", true) end', "outside"),
    ('if not reaper.APIExists("ImGui_Begin") then reaper.ImGui_Begin(c, "x", true) end', "outside"),
    ('local r = reaper\nr.Foo()', "aliased"),
    ('reaper.GetTrack = nil', "assigns reaper.GetTrack"),
    ('pcall(reaper.DeleteTrack, a, b)', "reaper.DeleteTrack called with 2 argument(s)"),
    ('gfx.nosuch(1)', "unknown gfx function gfx.nosuch"),
    ('local f = reaper.Nope', "unknown REAPER API reaper.Nope"),
    ('if x then', "not closed"),
])
def test_checker_flags(sigs, src, expect):
    rep = check_source(src, sigs)
    assert any(expect in p for p in rep.problems), rep.problems


@pytest.mark.parametrize("src, calls", [
    # commas, parens and calls inside strings, long strings and comments do not count
    ('reaper.ShowConsoleMsg("a, b, (c)")', [("ShowConsoleMsg", 1)]),
    ("reaper.ShowConsoleMsg('it\\'s, \"x\", reaper.Nope(1,2)')", [("ShowConsoleMsg", 1)]),
    ('reaper.ShowConsoleMsg([==[ a ]] , reaper.Nope(1) ]==])', [("ShowConsoleMsg", 1)]),
    ('--[[ reaper.Nope(1, 2) ]] reaper.UpdateArrange()\n-- reaper.Nope()', [("UpdateArrange", 0)]),
    ('reaper.ShowConsoleMsg "direct string"', [("ShowConsoleMsg", 1)]),
    # nested calls and tables count as one argument each
    ('reaper.GetTrack(0, math.max(1, f(2, 3)))', [("GetTrack", 2)]),
    ('reaper.SetExtState("s", "k", json.encode({1, 2, {a = 3}}), true)', [("SetExtState", 4)]),
    ('reaper.GetSet_LoopTimeRange2(0, false, false, 0, 0, false)', [("GetSet_LoopTimeRange2", 6)]),
    ('if reaper.APIExists("ImGui_CreateContext") then\n function f() reaper.ImGui_End(c) end\nend',
     [("APIExists", 1), ("ImGui_End", 1)]),
    ('pcall(reaper.GetSetProjectInfo, 0, "RENDER_SETTINGS", 1, true)', [("GetSetProjectInfo", 4)]),
    ('local s = "x" .. reaper.GetResourcePath() .. [[y]]', [("GetResourcePath", 0)]),
])
def test_checker_counts_top_level_arguments(sigs, src, calls):
    rep = check_source(src, sigs)
    assert rep.problems == []
    assert [(c[0], c[1]) for c in rep.calls] == calls


def test_tokenizer_skips_strings_and_comments_and_keeps_lines():
    toks = tokenize('local a = "x\\"y" -- c\n--[==[\nlong\n]==] b = [[s\n]] .. 0x1F')
    assert [(t.kind, t.value) for t in toks] == [
        ("keyword", "local"), ("name", "a"), ("op", "="), ("string", 'x\\"y'),
        ("name", "b"), ("op", "="), ("string", "s\n"), ("op", ".."), ("number", "0x1F")]
    assert toks[4].line == 4
    with pytest.raises(LuaSyntaxError):
        tokenize('x = "unterminated')
