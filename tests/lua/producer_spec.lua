-- Issue 13 from a producer's chair, against the fake reaper with several project tabs: results land in
-- the project the job started in, a finished result is never deleted, the loop always ends (dead,
-- hung, never-started or deaf CLI; Cancel), edit listens to items > tracks > time and replaces or
-- mutes its source in one undo point, relaunch options, preview, takes, the answers track, markers,
-- measured analysis and the job list.
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local env = dofile(HERE .. "helpers/env.lua")
local Fake = env.Fake
local json = Fake.json
local wav = Fake.wav

local function set(fake, key, value)
  fake.ext.M2UGen = fake.ext.M2UGen or {}
  fake.ext.M2UGen[key] = { value = value, persist = true }
end

local function last_message(fake)
  local m = fake.messages[#fake.messages]
  return m and m.msg or ""
end

local function created(p)
  local out = {}
  for i, t in ipairs(p.tracks) do if t.created then out[#out + 1] = { index = i - 1, track = t } end end
  return out
end

local function kept_files(dir) return env.list_files(dir .. "/M2UGen") end

local function balanced(fake)
  assert.are.same({}, fake.violations)
  assert.are.equal(fake.undo.begin, fake.undo["end"])
  assert.are.equal(0, fake.refresh)
  assert.is_nil(fake.ext.M2UGen and fake.ext.M2UGen.active, "active-job ExtState left behind")
end

local function argv_of(fake, n) return fake.exec_log[n].argv end

describe("results go into the project the job started in", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("the user switched tabs: inserted into the original project, and the message says so", function()
    local other = fake:add_project("other.rpp")
    fake:add_track("Other 1", other)
    fake.inputs_answers = { "calm piano\n4\n1" }
    fake.mb_answers = { 7 }
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    fake:run_defer({ on_tick = function(f, tick) if tick == 3 then f:switch_project(other) end end })
    balanced(fake)
    assert.are.equal(1, #created(fake.main))
    assert.are.equal(2, created(fake.main)[1].index) -- below Keys, in the first project
    assert.are.equal(1, #other.tracks)                -- the open tab is untouched
    assert.are.equal(fake.main, fake.undo.last_project)
    assert.truthy(last_message(fake):find("project where the job started (project.rpp)", 1, true))
    assert.truthy(fake.main.proj_ext.M2UGen["job:job-1"])
    assert.is_nil(other.proj_ext.M2UGen)
    -- the result file sits next to the original project
    assert.are.equal(1, #kept_files(fake.main.project_dir))
  end)

  it("the project was closed: nothing inserted anywhere, the file is kept and its path shown", function()
    local other = fake:add_project("other.rpp")
    fake.inputs_answers = { "calm piano\n4\n1" }
    fake.mb_answers = { 7 }
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    local main = fake.main
    fake:run_defer({ on_tick = function(f, tick)
      if tick == 12 then f:switch_project(other) f:close_project(main) end
    end })
    assert.are.same({}, fake.violations)
    assert.are.equal(0, #other.tracks)
    local kept = kept_files(main.project_dir)
    assert.are.equal(1, #kept)
    assert.truthy(last_message(fake):find("was closed", 1, true))
    assert.truthy(last_message(fake):find(main.project_dir .. "/M2UGen/" .. kept[1], 1, true))
  end)

  it("reads the selection, tempo and render settings of its own project", function()
    local other = fake:add_project("other.rpp")
    other.tempo = { num = 7, den = 8, bpm = 140 }
    fake:switch_project(other)
    fake:add_track("Solo", other).selected = true
    other.ts, other.te = 1.0, 3.0
    fake.inputs_answers = { "tighter\n3" }
    env.run_action(ctx, "Edit selection")
    assert.are.same({}, fake.violations)
    assert.are.equal(1, #other.renders)
    assert.are.equal(0, #fake.main.renders)
    assert.are.same(Fake.DEFAULT_RENDER.numbers, other.render.numbers)
    local req = fake.sims[1].request
    assert.are.equal(140, req.context.bpm)
    assert.are.same({ 7, 8 }, req.context.time_signature)
    assert.are.equal(2.0, req.duration)
    assert.are.equal(1, #created(other))
    assert.are.equal(0, #created(fake.main))
  end)
end)

describe("a finished result is never deleted", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("a copy that fails keeps the CLI's file and inserts it from there", function()
    -- <project>/M2UGen is a file, so nothing can be copied into it
    local f = assert(io.open(ctx.project_dir .. "/M2UGen", "w"))
    f:close()
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    balanced(fake)
    local new = created(fake.main)
    assert.are.equal(1, #new)
    local path = new[1].track.items[1].takes[1].source.path
    assert.truthy(path:find(ctx.tmp_dir .. "/m2ugen-reaper/out/", 1, true))
    assert.is_true(Fake.file_exists(path))
    assert.truthy(last_message(fake):find(path, 1, true))
  end)

  it("a take insert failing half-way rolls back without destroying a source a take owns", function()
    set(fake, "takes", "2")
    fake.refuse_source_after = 1
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    balanced(fake) -- no double-free violation
    assert.are.equal(0, #created(fake.main))
    assert.truthy(last_message(fake):find("refused the result", 1, true))
    assert.are.equal(2, #kept_files(fake.main.project_dir))
  end)

  it("an Ask answer whose note cannot be added is kept in ProjExtState and shown", function()
    set(fake, "answer_markers", "marker")
    fake.refuse_markers = true
    fake.inputs_answers = { "What key?" }
    env.run_action(ctx, "Ask about selection")
    balanced(fake)
    assert.are.equal(0, #created(fake.main)) -- rolled back: no answers track, no item
    local rec = json.decode(fake.proj_ext.M2UGen["job:job-1"])
    assert.are.equal("A calm piano piece in 3/4.", rec.text)
    local drawn = table.concat(fake.gfx_state.drawn, " ")
    assert.truthy(drawn:find("calm piano piece", 1, true))
    assert.truthy(drawn:find("could not be added", 1, true))
  end)
end)

describe("the loop never waits forever", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
  end)
  after_each(function() env.teardown(ctx) end)

  it("a CLI that dies mid-job: its exit is seen, the message names the job and the fetch command", function()
    fake.scenario = "dies"
    env.run_action(ctx, "Generate")
    balanced(fake)
    local msg = last_message(fake)
    assert.truthy(msg:find("ended (exit status 137) without reporting a result", 1, true), msg)
    assert.truthy(msg:find("job-1", 1, true))
    assert.truthy(msg:find(Fake.sh_quote(ctx.cli) .. " 'result' 'job-1' '--wait' '--out' '" ..
      ctx.project_dir .. "/M2UGen/", 1, true), msg)
    assert.are.equal("lost", json.decode(fake.proj_ext.M2UGen["job:job-1"]).state)
    assert.are.equal(3, #fake.tracks)
    assert.is_true(fake.ticks < 100) -- seen at once, not after a timeout
  end)

  it("a CLI whose status stops changing is given up: 120 s when its liveness is unknown (Windows)", function()
    env.teardown(ctx)
    ctx = env.setup({ os_name = "Win64" })
    fake = ctx.fake
    env.standard_project(fake)
    set(fake, "cli_path", ctx.cli)
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    fake.scenario = "hangs"
    fake.tick_dt = 1.0
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.truthy(last_message(fake):find("has not updated its status file for 12", 1, true), last_message(fake))
    assert.truthy(last_message(fake):find('"result" "job-1" "--wait" "--out"', 1, true), last_message(fake))
    assert.is_true(fake.ticks >= 120 and fake.ticks < 130, fake.ticks)
  end)

  it("... and 600 s while the launcher says the process is alive (a long queue is not a death)", function()
    fake.scenario = "hangs"
    fake.tick_dt = 1.0
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.truthy(last_message(fake):find("has not updated its status file for 60", 1, true), last_message(fake))
    assert.truthy(last_message(fake):find("'result' 'job-1'", 1, true))
    assert.is_true(fake.ticks >= 600 and fake.ticks < 610, fake.ticks)
    assert.are.same({ fake.sims[1].pid }, fake.kills) -- and the hung process is stopped
  end)

  it("the start timeout stops a CLI that never reached the server", function()
    fake.scenario = "stuck_starting"
    fake.tick_dt = 1.0
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.truthy(last_message(fake):find("has not reached the server after 60 s; it was stopped", 1, true))
    assert.are.same({ fake.sims[1].pid }, fake.kills)
    assert.is_true(fake.sims[1].killed)
  end)

  it("without a known pid the request is withdrawn: a CLI that starts late can never submit", function()
    env.teardown(ctx)
    ctx = env.setup({ os_name = "Win64" })
    fake = ctx.fake
    env.standard_project(fake)
    set(fake, "cli_path", ctx.cli)
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    fake.start_delay = 70 -- python takes 70 s to start
    fake.tick_dt = 1.0
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.truthy(last_message(fake):find("did not start: no status file after 60 s", 1, true))
    assert.truthy(last_message(fake):find("request was withdrawn", 1, true))
    for _ = 1, 20 do fake.clock = fake.clock + 1 fake:sim_advance() end
    assert.is_true(fake.sims[1].read)
    assert.is_true(fake.sims[1].usage_error)
    assert.is_nil(fake.sims[1].submitted)
  end)

  it("Cancel ends the loop even when the CLI never confirms", function()
    fake.scenario = "deaf"
    fake.gfx_state.clicks = { 8 }
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.truthy(last_message(fake):find("was cancelled", 1, true))
    assert.truthy(last_message(fake):find("did not confirm", 1, true))
    assert.are.equal("cancel", argv_of(fake, 2)[2])
    assert.are.same({ fake.sims[1].pid }, fake.kills)
    assert.is_true(fake.ticks < 10 / fake.tick_dt + 40)
  end)

  it("Cancel before the job id withdraws the request; the CLI never submits", function()
    fake.start_delay = 1.0
    fake.gfx_state.clicks = { 2 }
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.truthy(last_message(fake):find("was cancelled", 1, true))
    assert.is_true(fake.sims[1].usage_error)
    assert.is_nil(fake.sims[1].submitted)
    assert.are.equal(3, #fake.tracks)
  end)
end)

describe("edit listens to items, then tracks, then the time selection", function()
  local ctx, fake, keys
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    keys = env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  local function source_item(track, pos, len)
    local item = fake:add_item(track, pos, len)
    local src = ctx.root .. "/source-" .. pos .. ".wav"
    wav.write(src, len, 8000, 1)
    local take = fake:add_take(item, src, "original")
    return item, take
  end

  it("one selected item (even with a time selection): the result becomes its new active take", function()
    local item, original = source_item(keys, 3.0, 2.0)
    item.selected = true
    fake.inputs_answers = { "brighter\n5" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    local r = fake.renders[1]
    assert.are.equal(32 | (4 << 16), r.numbers.RENDER_SETTINGS) -- the item alone (its new take plays through track and master)
    assert.are.equal(0, #created(fake.main))                     -- no doubled track
    assert.are.equal(2, #item.takes)
    assert.are.equal(original, item.takes[1])
    assert.are.equal(item.takes[2], item.active)
    assert.truthy(item.active.source.path:find(ctx.project_dir .. "/M2UGen/", 1, true))
    assert.are.equal(0, item.mute)
    assert.are.equal(1, fake.undo.begin)
    assert.are.equal("job-1", json.decode(item.active.ext.m2ugen).job)
  end)

  it("Settings 'mute': the source items are muted and the edit goes on a new track, one undo point", function()
    set(fake, "edit_result", "mute")
    local a = source_item(keys, 3.0, 1.0)
    local b = source_item(keys, 4.0, 1.0)
    a.selected, b.selected = true, true
    fake.inputs_answers = { "brighter\n5" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    assert.are.equal(1, a.mute)
    assert.are.equal(1, b.mute)
    assert.are.equal(1, #a.takes)
    local new = created(fake.main)
    assert.are.equal(1, #new)
    assert.are.equal(3.0, new[1].track.items[1].position)
    assert.are.equal(1, fake.undo.begin)
  end)

  it("selected tracks + time selection: rendered via master, their items in range muted", function()
    local inside = fake:add_item(keys, 2.5, 1.0)
    local outside = fake:add_item(keys, 8.0, 1.0)
    local drums_item = fake:add_item(fake.tracks[1], 2.5, 1.0)
    fake.inputs_answers = { "brighter\n5" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    local r = fake.renders[1]
    assert.are.equal(128, r.numbers.RENDER_SETTINGS)
    assert.are.equal(0, r.numbers.RENDER_BOUNDSFLAG)
    assert.are.equal(2.0, r.numbers.RENDER_STARTPOS)
    assert.are.equal(1, inside.mute)
    assert.are.equal(0, outside.mute)
    assert.are.equal(0, drums_item.mute) -- not a selected track
  end)

  it("only a time selection: the master mix, and every item in range is muted", function()
    keys.selected = false
    local d = fake:add_item(fake.tracks[1], 2.5, 1.0)
    local k = fake:add_item(keys, 5.5, 1.0)
    fake.inputs_answers = { "brighter\n5" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    assert.are.equal(0, fake.renders[1].numbers.RENDER_SETTINGS)
    assert.are.equal(1, d.mute)
    assert.are.equal(1, k.mute)
    assert.are.equal(3, created(fake.main)[1].index) -- appended (no source track)
  end)

  it("Settings 'track': nothing of the source is touched", function()
    set(fake, "edit_result", "track")
    local item = source_item(keys, 3.0, 2.0)
    item.selected = true
    fake.inputs_answers = { "brighter\n5" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    assert.are.equal(1, #item.takes)
    assert.are.equal(0, item.mute)
    assert.are.equal(1, #created(fake.main))
  end)
end)

describe("relaunching a running action", function()
  it("is ignored while the job runs (toggle on), replaces the window afterwards (toggle off)", function()
    local ctx = env.setup()
    local fake = ctx.fake
    env.standard_project(fake)
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    local during
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    fake:run_defer({ on_tick = function(f, tick) if tick == 5 then during = f.toggle end end })
    assert.are.equal(1, during)
    assert.are.equal(2 | 4, fake.action_options[1])
    assert.are.equal(1 | 2 | 8, fake.action_options[2])
    assert.are.equal(0, fake.toggle)
    env.teardown(ctx)
  end)
end)

describe("preview before insert", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup({ preview = "on" })
    fake = ctx.fake
    env.standard_project(fake)
    fake.inputs_answers = { "calm piano\n4\n42" }
    fake.mb_answers = { 7 }
  end)
  after_each(function() env.teardown(ctx) end)

  it("without SWS the result is in the project while previewing; Accept keeps it", function()
    local in_project_during = nil
    fake.gfx_state.keys = { [4] = "a" }
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    fake:run_defer({ on_tick = function(f)
      if f.gfx_state.title == "M2UGen - Generate - preview" and in_project_during == nil then
        in_project_during = #created(f.main)
      end
    end })
    balanced(fake)
    assert.are.equal(1, in_project_during)
    assert.are.equal(1, #created(fake.main))
    assert.are.equal("accepted", json.decode(fake.proj_ext.M2UGen["job:job-1"]).state)
    assert.are.equal(1, fake.undo.begin)
  end)

  it("Discard takes it out again (its own undo point); the file stays in the job list", function()
    fake.gfx_state.keys = { [4] = "d" }
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.are.equal(0, #created(fake.main))
    local rec = json.decode(fake.proj_ext.M2UGen["job:job-1"])
    assert.are.equal("discarded", rec.state)
    assert.is_true(Fake.file_exists(rec.files[1].path))
    assert.are.same({ "M2UGen: M2UGen generate: calm piano", "M2UGen: discard preview" }, fake.undo.names)
  end)

  it("Discard of an edit take puts the original take back", function()
    local keys = fake.tracks[2]
    local item = fake:add_item(keys, 3.0, 2.0)
    local src = ctx.root .. "/src.wav"
    wav.write(src, 2.0, 8000, 1)
    local original = fake:add_take(item, src, "original")
    item.selected = true
    fake.inputs_answers = { "brighter\n5" }
    fake.gfx_state.keys = { [4] = "d" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    assert.are.equal(1, #item.takes)
    assert.are.equal(original, item.active)
    assert.is_true(item.selected)
  end)

  it("Regenerate discards and runs the same prompt again with a new seed", function()
    fake.gfx_state.keys = { [4] = "r", [10] = "a" }
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.are.equal(2, #fake.sims)
    assert.are.equal("calm piano", fake.sims[2].request.prompt)
    assert.are.equal(4.0, fake.sims[2].request.duration)
    assert.are.equal(42, fake.sims[1].request.seed)
    assert.is_nil(fake.sims[2].request.seed)
    assert.are.equal(1, #created(fake.main))
  end)

  it("with SWS it plays through CF_Preview and inserts nothing before Accept", function()
    fake:enable_sws()
    local during = nil
    fake.gfx_state.keys = { [6] = "a" }
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    fake:run_defer({ on_tick = function(f)
      if f.sws.playing > 0 and during == nil then during = #created(f.main) end
    end })
    balanced(fake)
    assert.are.equal(0, during)
    assert.are.equal(1, #fake.sws.previews)
    assert.is_true(fake.sws.previews[1].stopped)
    assert.truthy(fake.sws.previews[1].src.path:find(ctx.project_dir .. "/M2UGen/", 1, true))
    assert.are.equal(1, #created(fake.main))
  end)

  it("ReaImGui buttons: Accept", function()
    fake:enable_imgui({ press = { Accept = 3 } })
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.are.equal(3, fake.imgui.buttons.Regenerate)
    assert.are.equal(3, fake.imgui.buttons.Discard)
    assert.are.equal(1, #created(fake.main))
  end)
end)

describe("takes, seeds, analysis", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("takes = 1 sends no --takes (today's CLI); takes = 3 sends --takes 3 and makes one item with 3 takes", function()
    fake.inputs_answers = { "x\n4\n1", "y\n4\n" }
    fake.mb_answers = { 7, 7 }
    env.run_action(ctx, "Generate")
    assert.is_nil(Fake.index_of(argv_of(fake, 1), "--takes"))
    assert.is_nil(Fake.index_of(argv_of(fake, 1), "--fit-tempo"))
    set(fake, "takes", "3")
    set(fake, "fit_tempo", "on")
    env.run_action(ctx, "Generate")
    balanced(fake)
    local argv = argv_of(fake, 2)
    local i = Fake.index_of(argv, "--takes")
    assert.are.equal("3", argv[i + 1])
    assert.truthy(Fake.index_of(argv, "--fit-tempo"))
    local tr = created(fake.main)[1].track -- the newest is right below Keys
    assert.are.equal("M2UGen generate: y", tr.name)
    local item = tr.items[1]
    assert.are.equal(3, #item.takes)
    assert.are.equal(item.takes[1], item.active)
    assert.are.equal("job-1 take 2 seed 102", item.takes[2].name)
    assert.are.equal(103, json.decode(item.takes[3].ext.m2ugen).seed)
    assert.are.equal(3, #kept_files(ctx.project_dir) - 1) -- 3 takes + the first job's file
    assert.are.same({}, env.list_files(ctx.tmp_dir .. "/m2ugen-reaper/out")) -- copied, then removed
    local rec = json.decode(fake.proj_ext.M2UGen["job:job-1"])
    assert.are.equal(3, #rec.files)
    assert.are.equal(101, rec.seed)
  end)

  it("the seed and prompt are kept for 'regenerate like this'; the measured analysis goes into the notes", function()
    fake.scenario = "analysed"
    fake.inputs_answers = { "lofi\n4\n" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    balanced(fake)
    local item = created(fake.main)[1].track.items[1]
    assert.truthy(item.notes:find("Seed: 101", 1, true))
    assert.truthy(item.notes:find("Result measured: 120 BPM, A minor, -12.0 LUFS, 4.0 s", 1, true))
    local ext = json.decode(item.takes[1].ext.m2ugen)
    assert.are.equal("lofi", ext.prompt)
    assert.are.equal(101, ext.seed)
    assert.are.equal(48000, fake.sims[1].request.sample_rate) -- the project sample rate
    assert.are.equal(2.0, item.position)                     -- the selection start
  end)

  it("Ask: one answers track for every answer, the analysis shown, optional regions", function()
    fake.scenario = "analysed"
    set(fake, "answer_markers", "region")
    fake.inputs_answers = { "What key?", "And the tempo?" }
    env.run_action(ctx, "Ask about selection")
    env.run_action(ctx, "Ask about selection")
    balanced(fake)
    local new = created(fake.main)
    assert.are.equal(1, #new)
    assert.are.equal(2, #new[1].track.items)
    local notes = new[1].track.items[1].notes
    assert.truthy(notes:find("Measured: 92 BPM, F# minor, -14.0 LUFS, 4.0 s", 1, true))
    assert.truthy(notes:find("F# minor (confidence 0.81)", 1, true))
    assert.are.equal(2, #fake.markers)
    assert.is_true(fake.markers[1].region)
    assert.are.equal(2.0, fake.markers[1].pos)
    assert.are.equal(6.0, fake.markers[1].rgnend)
    assert.are.equal("M2UGen: A calm piano piece in 3/4.", fake.markers[1].name)
    local drawn = table.concat(fake.gfx_state.drawn, " ")
    assert.truthy(drawn:find("92 BPM", 1, true))
  end)

  it("Ask: an unsure tempo level is shown with the other level", function()
    fake.scenario = "unsure_tempo"
    fake.inputs_answers = { "What tempo?" }
    env.run_action(ctx, "Ask about selection")
    balanced(fake)
    local notes = created(fake.main)[1].track.items[1].notes
    assert.truthy(notes:find("Measured: 146 BPM (or 73), F# minor", 1, true))
    assert.truthy(notes:find("146.0 BPM (or 73.0)", 1, true))
  end)

  it("no analysis, no takes in the record (today's CLI): nothing about them is shown", function()
    fake.inputs_answers = { "What key?" }
    env.run_action(ctx, "Ask about selection")
    local notes = created(fake.main)[1].track.items[1].notes
    assert.is_nil(notes:find("Measured", 1, true))
  end)
end)

describe("M2UGen - Jobs", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("re-inserts a kept result", function()
    fake.inputs_answers = { "calm piano\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    fake.menu_answers = { 1 }
    env.run_action(ctx, "Jobs")
    balanced(fake)
    assert.truthy(fake.menus[1]:find("generate job-1: calm piano [done, 1 file(s) kept]", 1, true))
    local new = created(fake.main)
    assert.are.equal(2, #new)
    assert.are.equal(new[1].track.items[1].takes[1].source.path, new[2].track.items[1].takes[1].source.path)
    assert.are.equal(2, fake.undo.begin)
  end)

  it("fetches a lost job's result with `m2ugen result JOB --wait --out FILE` and inserts it", function()
    fake.scenario = "dies"
    fake.inputs_answers = { "calm piano\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    fake.menu_answers = { 1 }
    env.run_action(ctx, "Jobs")
    balanced(fake)
    assert.truthy(fake.menus[1]:find("[lost, fetch from server]", 1, true))
    local argv = fake.exec_log[#fake.exec_log].argv
    assert.are.same({ ctx.cli, "result", "job-1", "--wait", "--out" }, { table.unpack(argv, 1, 5) })
    local new = created(fake.main)
    assert.are.equal(1, #new)
    assert.are.equal("M2UGen generate: calm piano", new[1].track.name)
    local rec = json.decode(fake.proj_ext.M2UGen["job:job-1"])
    assert.are.equal("done", rec.state)
    assert.are.equal(1, #kept_files(ctx.project_dir))
  end)

  it("lists the server's jobs (`m2ugen jobs`), fetches the chosen one and inserts it", function()
    fake.server_jobs = {
      { op = "job", job = "job-a", kind = "generate", state = "done", params = { prompt = "old idea" }, seed = 5 },
      { op = "job", job = "job-b", kind = "edit", state = "failed", params = { prompt = "broken" } },
      { op = "job", job = "job-c", kind = "ask", state = "done", text = "It is in D.", params = { prompt = "Key?" } },
    }
    fake.menu_answers = { 1, 1 } -- the project has no history: entry 1 is the server's list
    env.run_action(ctx, "Jobs")
    balanced(fake)
    assert.are.equal("Jobs on the server (m2ugen jobs)...", fake.menus[1])
    local jobs_call = fake.exec_log[1]
    assert.are.same({ ctx.cli, "jobs", "--limit", "20" }, jobs_call.argv)
    assert.are.equal(-2, jobs_call.timeout) -- not waited for (issue 22 #17): its list is read from a file
    assert.truthy(fake.menus[2]:find("generate job-a: old idea", 1, true))
    assert.is_nil(fake.menus[2]:find("job-b", 1, true)) -- a failed audio job has nothing to insert
    assert.truthy(fake.menus[2]:find("ask job-c: Key?", 1, true))
    assert.are.same({ ctx.cli, "result", "job-a", "--wait", "--out" }, { table.unpack(fake.exec_log[2].argv, 1, 5) })
    local new = created(fake.main)
    assert.are.equal(1, #new)
    assert.are.equal("M2UGen generate: old idea", new[1].track.name)
  end)

  it("a server that does not answer `m2ugen jobs` is named in a message", function()
    fake.jobs_exit = 3
    fake.menu_answers = { 1 }
    env.run_action(ctx, "Jobs")
    assert.truthy(last_message(fake):find("did not answer (exit code 3): is the server running?", 1, true))
  end)
end)
