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

  it("splits command lines the way REAPER does on macOS/Linux", function()
    assert.are.same({ "/bin/sh", "/tmp/a b/x.sh" }, Fake.reaper_split("/bin/sh '/tmp/a b/x.sh'"))
    assert.are.same({ "a", 'b "c"', "d'e" }, Fake.reaper_split([[a `b "c"` "d'e"]]))
    assert.has_error(function() Fake.reaper_split("a 'b") end)
  end)

  it("splits Windows command lines with the MSVCRT rules", function()
    assert.are.same({ [[C:\a b\x.exe]], [[x"y]], [[c:\d\]] },
      Fake.windows_argv([["C:\a b\x.exe" x\"y "c:\d\\"]]))
  end)
end)
