-- The recording fake itself: it must catch what the action specs rely on it to catch.
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local Fake = dofile(HERE .. "helpers/fake_reaper.lua")

describe("fake reaper", function()
  local fake
  before_each(function()
    fake = Fake.new({ project_dir = "/nonexistent" })
    fake:install()
  end)
  after_each(function()
    _G.reaper = nil
    _G.gfx = nil
  end)

  it("records calls with their arguments", function()
    reaper.ShowConsoleMsg("hello")
    reaper.GetSet_LoopTimeRange2(0, true, false, 1.5, 2.5, false)
    assert.are.equal(2, #fake.calls)
    assert.are.equal("GetSet_LoopTimeRange2", fake.calls[2].name)
    assert.are.equal(6, fake.calls[2].args.n)
    assert.are.equal(1.5, fake.ts)
  end)

  it("fails a call with a wrong argument count, even when the script swallows the error", function()
    local ok, err = pcall(function() return reaper.GetTrack(0) end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("reaper.GetTrack called with 1 argument(s), expected 2..2", 1, true))
    pcall(reaper.ShowMessageBox, "a", "b") -- 2 of 3
    assert.are.equal(2, #fake.violations)
  end)

  it("fails unknown functions and functions it does not implement", function()
    assert.has_error(function() reaper.NoSuchThing() end)
    assert.has_error(function() reaper.AddProjectMarker(0, false, 1, 0, "x", -1) end)
    assert.truthy(fake.violations[1]:find("unknown REAPER API reaper.NoSuchThing", 1, true))
    assert.truthy(fake.violations[2]:find("no fake implementation of reaper.AddProjectMarker", 1, true))
  end)

  it("allows extension APIs only after APIExists said yes", function()
    fake:enable_imgui()
    assert.has_error(function() reaper.ImGui_CreateContext("x") end)
    assert.is_true(reaper.APIExists("ImGui_CreateContext"))
    assert.is_table(reaper.ImGui_CreateContext("x"))
    assert.are.equal(1, #fake.violations)
    assert.is_false(reaper.APIExists("JS_Window_Find"))
    assert.has_error(function() reaper.JS_Window_Find("x", true) end)
  end)

  it("refuses newlines in ExtState and unknown gfx functions", function()
    assert.has_error(function() reaper.SetExtState("s", "k", "a\nb", true) end)
    assert.has_error(function() gfx.nosuch() end)
    assert.are.equal(2, #fake.violations)
  end)

  it("refuses a GetUserInputs dialog of more than 16 fields, as REAPER does", function()
    local caps = string.rep("x,", 16) .. "separator=\n"
    fake.inputs_answers = { "a" }
    assert.is_true((reaper.GetUserInputs("t", 16, caps, "")))
    assert.has_error(function() reaper.GetUserInputs("t", 17, caps .. "x,", "") end)
    assert.truthy(fake.violations[1]:find("17 fields", 1, true))
  end)

  it("splits command lines the way REAPER does on macOS/Linux", function()
    assert.are.same({ "/bin/sh", "/tmp/a b/x.sh" }, Fake.reaper_split("/bin/sh '/tmp/a b/x.sh'"))
    assert.are.same({ "a", 'b "c"', "d'e" }, Fake.reaper_split([[a `b "c"` "d'e"]]))
    assert.has_error(function() Fake.reaper_split("a 'b") end)
  end)

  it("splits Windows command lines with the MSVCRT rules", function()
    assert.are.same({ [[C:\a b\x.exe]], [[x"y]], [[c:\d\]] },
      Fake.windows_argv([["C:\a b\x.exe" x\"y "c:\d\\"]]))
  end)

  it("holds several projects: 0 is the current tab, a project pointer is that project, a closed one is refused", function()
    local other = fake:add_project("b.rpp", "/nonexistent/b")
    fake:add_track("A1")
    fake:add_track("B1", other)
    fake:add_track("B2", other)
    assert.are.equal(1, reaper.CountTracks(0))
    assert.are.equal(2, reaper.CountTracks(other))
    fake:switch_project(other)
    assert.are.equal(2, reaper.CountTracks(0))
    assert.are.equal(other, (reaper.EnumProjects(-1)))
    reaper.InsertTrackInProject(fake.main, 0, 1)
    assert.are.equal(2, #fake.main.tracks)
    assert.is_true(reaper.ValidatePtr2(0, fake.main, "ReaProject*"))
    assert.is_false(reaper.ValidatePtr2(0, fake.main.tracks[2], "MediaTrack*")) -- not in the current tab
    fake:close_project(fake.main)
    assert.is_false(reaper.ValidatePtr2(0, fake.main, "ReaProject*"))
    assert.has_error(function() reaper.CountTracks(fake.main) end)
    assert.truthy(fake.violations[1]:find("closed project", 1, true))
  end)

  it("checks set_action_options against the patched signature (one flag)", function()
    reaper.set_action_options(2 | 4)
    assert.are.equal(1, fake.toggle)
    assert.has_error(function() reaper.set_action_options() end)
    assert.truthy(fake.violations[1]:find("set_action_options called with 0 argument(s), expected 1..1", 1, true))
  end)

  it("returns ProjExtState keys upper-cased from EnumProjExtState, as REAPER does", function()
    reaper.SetProjExtState(0, "M2UGen", "job:abc", "{}")
    local ok, key, value = reaper.EnumProjExtState(0, "M2UGen", 0)
    assert.is_true(ok)
    assert.are.equal("JOB:ABC", key)
    assert.are.equal("{}", value)
    assert.is_false((reaper.EnumProjExtState(0, "M2UGen", 1)))
  end)

  it("Undo blocks must end in the project they began in", function()
    local other = fake:add_project("b.rpp", "/nonexistent/b")
    reaper.Undo_BeginBlock2(fake.main)
    assert.has_error(function() reaper.Undo_EndBlock2(other, "x", -1) end)
  end)
end)
