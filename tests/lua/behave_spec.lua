-- Issue 22: REAPER as it really behaves, against the honest fake (one file per track for "selected
-- tracks via master", an FX/volume model, split items, looped MIDI, a full disk, File > Open in the same
-- tab, one gfx window per script). One describe per numbered item of the issue.
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local env = dofile(HERE .. "helpers/env.lua")
local Fake = env.Fake
local json = Fake.json
local wav = Fake.wav

local set, last_message = env.set, env.last_message

local function all_messages(fake)
  local out = {}
  for i, m in ipairs(fake.messages) do out[i] = m.msg end
  return table.concat(out, "\n----\n")
end

local created = env.created

local function balanced(fake)
  assert.are.same({}, fake.violations)
  assert.are.equal(fake.undo.begin, fake.undo["end"])
  assert.are.equal(0, fake.refresh)
  assert.are.same(Fake.DEFAULT_RENDER.numbers, fake.render.numbers, "render settings not restored")
  assert.is_nil(fake.ext.M2UGen and fake.ext.M2UGen.active, "active-job ExtState left behind")
end

local function near(a, b, tol) return math.abs(a - b) < (tol or 0.01) end

-- an audio item playing a fresh WAV (gain 1)
local function audio_item(ctx, track, pos, len, name)
  local item = ctx.fake:add_item(track, pos, len)
  local path = ctx.root .. "/" .. (name or ("src-" .. tostring(track.name) .. "-" .. pos)) .. ".wav"
  wav.write(path, len, 8000, 1)
  ctx.fake:add_take(item, path, "original")
  return item
end

-- ---------------------------------------------------------------------------------------------
describe("#1 a running Learn does not lock Ask/Edit/Generate", function()
  local ctx, fake, keys
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    keys = env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  -- learn runs long (steps until cancelled or 300 polls); ask answers at once
  local function scenario(req)
    if req.kind == "learn" then
      local steps = { { state = "starting" }, { state = "queued", job = "ft-1", queue_position = 0 } }
      for i = 1, 300 do steps[#steps + 1] = { state = "running", job = "ft-1", stage = "training", fraction = i / 400 } end
      steps[#steps + 1] = { state = "done", job = "ft-1", text = "adapter 'mine' learnt from 1 clip(s)", exit_code = 0 }
      return steps
    end
    local steps = Fake.SCENARIOS.done(req)
    for _, st in ipairs(steps) do if st.job then st.job = "job-ask" end end
    return steps
  end

  it("an Ask started while a Learn trains completes; the Learn goes on in its own window and finishes", function()
    local clip = audio_item(ctx, keys, 0.0, 2.0, "clip")
    clip.selected = true
    fake.scenario = scenario
    fake.inputs_answers = { "mine\n50\nno", "What key?" }
    fake.mb_answers = { 7 } -- after the Learn: do not switch the adapter
    local ask_done_at, learn_running_then = nil, nil
    fake:run_script(env.SCRIPTS .. "M2UGen - Learn from selected items.lua")
    fake:run_defer({ on_tick = function(f, tick)
      if tick == 10 then
        clip.selected = false -- the Ask listens to the time selection
        f:run_script(env.SCRIPTS .. "M2UGen - Ask about selection.lua", { instance = "ask" })
      end
      if not ask_done_at and f.main.proj_ext.M2UGen and f.main.proj_ext.M2UGen["job:job-ask"]
        and json.decode(f.main.proj_ext.M2UGen["job:job-ask"]).state == "done" then
        ask_done_at = tick
        learn_running_then = not f.sims[1].finished
      end
    end })
    balanced(fake)
    assert.is_nil(all_messages(fake):find("still running", 1, true), all_messages(fake))
    assert.are.equal(2, #fake.sims)
    assert.are.equal("learn", fake.sims[1].kind)
    assert.are.equal("ask", fake.sims[2].kind)
    assert.truthy(ask_done_at, "the Ask never completed")
    assert.is_true(learn_running_then, "the Ask completed only after the Learn")
    local answers = created(fake.main)
    assert.are.equal(1, #answers)
    assert.truthy(answers[1].track.items[1].notes:find("A calm piano piece", 1, true))
    -- each run drew its own window; the Learn's finished last with its own message
    assert.are.equal("M2UGen - Learn from selected items", fake.gfx_states.main.title)
    assert.are.equal("M2UGen - Ask about selection", fake.gfx_states.ask.title)
    assert.truthy(last_message(fake):find("adapter 'mine' learnt", 1, true))
  end)

  it("a second Learn is still refused while one trains; Cancel asks which job to cancel", function()
    local clip = audio_item(ctx, keys, 0.0, 2.0, "clip")
    clip.selected = true
    fake.scenario = scenario
    fake.inputs_answers = { "mine\n50\nno", "What key?" }
    fake.menu_answers = { 2 } -- Cancel: the second entry (the Learn; the interactive job comes first)
    fake:run_script(env.SCRIPTS .. "M2UGen - Learn from selected items.lua")
    fake:run_defer({ on_tick = function(f, tick)
      if tick == 8 then f:run_script(env.SCRIPTS .. "M2UGen - Learn from selected items.lua", { instance = "learn2" }) end
      if tick == 12 then
        clip.selected = false
        f:run_script(env.SCRIPTS .. "M2UGen - Ask about selection.lua", { instance = "ask" })
      end
      if tick == 14 then f:run_script(env.SCRIPTS .. "M2UGen - Cancel.lua", { instance = "cancel" }) end
    end })
    assert.are.same({}, fake.violations)
    assert.truthy(all_messages(fake):find("A Learn (fine-tune) job is still running", 1, true), all_messages(fake))
    assert.truthy(fake.menus[1]:find("learn", 1, true) and fake.menus[1]:find("ask", 1, true), fake.menus[1])
    local cancel = nil
    for _, e in ipairs(fake.exec_log) do if e.argv[2] == "cancel" then cancel = e.argv[3] end end
    assert.are.equal("ft-1", cancel)
    assert.is_true(fake.sims[1].cancel_requested)
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#2 several selected tracks", function()
  local ctx, fake, keys, bass
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    keys = env.standard_project(fake)
    bass = fake.tracks[3]
    bass.selected = true
    bass.vol = 0.5
  end)
  after_each(function() env.teardown(ctx) end)

  it("Ask hears all of them together (the per-track files of 'selected tracks via master' mixed)", function()
    audio_item(ctx, keys, 2.0, 4.0)
    audio_item(ctx, bass, 2.0, 4.0)
    audio_item(ctx, fake.tracks[1], 2.0, 4.0) -- drums: not selected, not heard
    fake.inputs_answers = { "What do you hear?" }
    env.run_action(ctx, "Ask about selection")
    balanced(fake)
    assert.are.equal(2, #fake.renders[1].files) -- REAPER wrote one file per track
    assert.is_true(near(fake.sims[1].input_gain, 1.5), tostring(fake.sims[1].input_gain))
    assert.is_true(near(fake.sims[1].input_seconds, 4.0))
    assert.are.same({}, env.list_files(ctx.tmp_dir .. "/m2ugen-reaper/in")) -- every per-track file removed
  end)

  it("Edit hears all of them and mutes what it replaces on every selected track", function()
    set(fake, "edit_result", "mute")
    local k = audio_item(ctx, keys, 2.0, 4.0)
    local b = audio_item(ctx, bass, 2.0, 4.0)
    fake.inputs_answers = { "brighter\n5" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    assert.is_true(near(fake.sims[1].input_gain, 1.5), tostring(fake.sims[1].input_gain))
    assert.are.equal(1, k.mute)
    assert.are.equal(1, b.mute)
    assert.are.equal(1, #created(fake.main))
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#4 a full disk never keeps a truncated copy", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  local project
  before_each(function()
    local import = dofile(env.SCRIPTS .. "m2ugen/lib.lua")
    project = import("project")
  end)

  for _, buffered in ipairs({ false, true }) do
    it("project.copy_file raises and removes the partial copy (error at " .. (buffered and "close" or "write") .. ")", function()
      local from = ctx.root .. "/big.wav"
      wav.write(from, 1.0, 8000, 1)
      fake:fill_disk(ctx.project_dir, 1000, { buffered = buffered })
      local ok, err = pcall(project.copy_file, from, ctx.project_dir .. "/copy.wav")
      assert.is_false(ok)
      assert.truthy(tostring(err):find("No space left on device", 1, true), tostring(err))
      assert.is_false(Fake.file_exists(ctx.project_dir .. "/copy.wav"))
      assert.is_true(Fake.file_exists(from))
    end)
  end

  it("Generate on a full project disk inserts the CLI's complete file and says so", function()
    fake:fill_disk(ctx.project_dir, 5000)
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.are.same({}, env.list_files(ctx.project_dir .. "/M2UGen"), "a truncated copy was kept")
    local path = created(fake.main)[1].track.items[1].takes[1].source.path
    assert.truthy(path:find(ctx.tmp_dir, 1, true))
    assert.is_true(near(wav.info(path).seconds, 4.0), "the original is complete")
    assert.truthy(all_messages(fake):find(path, 1, true))
    assert.truthy(fake.disk.failures > 0)
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#5 File > Open in the same tab", function()
  local ctx, fake, keys
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    keys = env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("the result does not go into the project opened in the job's tab", function()
    fake.inputs_answers = { "calm piano\n4\n1" }
    fake.mb_answers = { 7 }
    local old_dir = fake.main.project_dir
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    fake:run_defer({ on_tick = function(f, tick) if tick == 5 then f:open_in_tab(f.main, "song2.rpp") end end })
    assert.are.same({}, fake.violations)
    assert.are.equal(0, #fake.main.tracks, "inserted into the other project")
    assert.is_nil(fake.main.proj_ext.M2UGen)
    assert.truthy(last_message(fake):find("replaced", 1, true), last_message(fake))
    assert.are.equal(1, #env.list_files(old_dir .. "/M2UGen")) -- kept with the project it belongs to
  end)

  it("an edit whose item was deleted meanwhile goes on a new track instead (ValidatePtr2)", function()
    local item = audio_item(ctx, keys, 3.0, 2.0)
    item.selected = true
    fake.inputs_answers = { "brighter\n5" }
    fake:run_script(env.SCRIPTS .. "M2UGen - Edit selection.lua")
    fake:run_defer({ on_tick = function(_, tick) if tick == 5 then table.remove(keys.items, 1) end end })
    balanced(fake)
    local new = created(fake.main)
    assert.are.equal(1, #new)
    assert.are.equal(3.0, new[1].track.items[1].position)
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#6 a job outlives the script", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("REAPER quits mid-job: no cancel; the next run fetches the result and inserts it", function()
    fake.scenario = "long"
    fake.inputs_answers = { "calm piano\n4\n1" }
    fake.mb_answers = { 7 }
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    fake:run_defer({ on_tick = function(_, tick) if tick == 20 then return "stop" end end })
    for _, e in ipairs(fake.exec_log) do assert.are_not.equal("cancel", e.argv[2]) end
    assert.is_nil(fake.sims[1].cancel_requested)
    local rec = json.decode(fake.proj_ext.M2UGen["job:job-1"])
    assert.are.equal("running", rec.state)
    assert.is_nil(fake.ext.M2UGen.active)
    -- REAPER starts again: any M2UGen action first offers the job of the earlier session
    fake.scenario = "done"
    fake.mb_answers = { 6 } -- yes, fetch it
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.truthy(fake.messages[#fake.messages].msg:find("job-1", 1, true))
    local last = fake.exec_log[#fake.exec_log].argv
    assert.are.same({ ctx.cli, "result", "job-1", "--wait", "--out" }, { table.unpack(last, 1, 5) })
    local new = created(fake.main)
    assert.are.equal(1, #new)
    assert.are.equal("M2UGen generate: calm piano", new[1].track.name)
    assert.are.equal("done", json.decode(fake.proj_ext.M2UGen["job:job-1"]).state)
    assert.are.equal(1, #fake.inputs_asked, "the new Generate asked for a prompt too")
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#7 Edit over a time selection mutes only the range", function()
  it("an item 0-60 s edited at 10-18 s: split at the edges, only the middle muted, one undo point", function()
    local ctx = env.setup()
    local fake = ctx.fake
    local keys = env.standard_project(fake)
    set(fake, "edit_result", "mute")
    fake.ts, fake.te = 10.0, 18.0
    local long = audio_item(ctx, keys, 0.0, 60.0)
    fake.inputs_answers = { "brighter\n5" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    assert.are.equal(3, #keys.items)
    local a, b, c = keys.items[1], keys.items[2], keys.items[3]
    assert.are.equal(long, a)
    assert.are.same({ 0.0, 10.0, 0 }, { a.position, a.length, a.mute })
    assert.are.same({ 10.0, 8.0, 1 }, { b.position, b.length, b.mute })
    assert.are.same({ 18.0, 42.0, 0 }, { c.position, c.length, c.mute })
    assert.are.equal(18.0, c.active.startoffs) -- it still plays the same audio
    assert.are.equal(1, fake.undo.begin)
    env.teardown(ctx)
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#8 every FX and fader applies once", function()
  local ctx, fake, keys
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    keys = env.standard_project(fake)
    keys.fx_gain = 1.5
    fake.main.master.fx_gain = 2.0
    fake.scenario = "identity"
  end)
  after_each(function() env.teardown(ctx) end)

  it("edit one item (new take): the model hears the take and its item, the track and master FX come after", function()
    local item = audio_item(ctx, keys, 3.0, 2.0)
    item.active.fx_gain = 2.0
    item.vol = 0.5
    item.selected = true
    local before = fake:heard(item)
    fake.inputs_answers = { "nothing\n5" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    assert.are.equal(2, #item.takes)
    assert.is_true(near(fake:heard(item), before), ("heard %.3f, was %.3f"):format(fake:heard(item), before))
    assert.are.equal(0.5, item.vol) -- put back after the render
  end)

  it("edit on a new track (selected tracks, mute): the model hears the tracks before the master", function()
    set(fake, "edit_result", "mute")
    local item = audio_item(ctx, keys, 2.0, 4.0)
    local before = fake:heard(item)
    fake.inputs_answers = { "nothing\n5" }
    env.run_action(ctx, "Edit selection")
    balanced(fake)
    local result = created(fake.main)[1].track.items[1]
    assert.is_true(near(fake:heard(result), before), ("heard %.3f, was %.3f"):format(fake:heard(result), before))
    assert.are.equal(1, fake.main.master.fxen)
    assert.are.equal(1, fake.main.master.vol)
  end)

  it("ask: the model hears the mix as heard (all FX)", function()
    local item = audio_item(ctx, keys, 2.0, 4.0)
    fake.inputs_answers = { "What key?" }
    env.run_action(ctx, "Ask about selection")
    balanced(fake)
    assert.is_true(near(fake.sims[1].input_gain, fake:heard(item)))
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#12 a selected MIDI item and the server's decoder", function()
  local ctx, fake, keys
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    keys = env.standard_project(fake) -- 96 bpm: a QN is 0.625 s
  end)
  after_each(function() env.teardown(ctx) end)

  local function midi_item(pos, len, notes, length_qn)
    local item = fake:add_item(keys, pos, len)
    fake:add_midi_take(item, notes, "sketch", length_qn)
    item.selected = true
    return item
  end
  local function decoder(modes)
    Fake.write_discovery(ctx.config_dir, ctx.cli, { model = { name = "m", decoder = { kind = "musicgen", modes = modes } } })
  end

  it("a decoder without melody: says the MIDI item is ignored, Generate goes on without it", function()
    decoder({ "text", "continue" })
    midi_item(2.0, 2.5, { { 0, 960, 60, 100 } })
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7, 1 } -- no image; OK: go on without the MIDI item
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.is_nil(fake.sims[1].request.midi_notes)
    local msg = all_messages(fake)
    assert.truthy(msg:find("ignored", 1, true) and msg:find("melody", 1, true), msg)
  end)

  it("... and Cancel there starts nothing", function()
    decoder({ "text", "continue" })
    midi_item(2.0, 2.5, { { 0, 960, 60, 100 } })
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7, 2 }
    env.run_action(ctx, "Generate")
    assert.are.equal(0, #fake.sims)
  end)

  it("a melody decoder: the notes go as the melody without a question", function()
    decoder({ "text", "continue", "melody" })
    midi_item(2.0, 2.5, { { 0, 960, 60, 100 } })
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.are.equal(1, #fake.sims[1].request.midi_notes)
    assert.are.equal(1, #fake.messages) -- only the image question
  end)

  it("a looped MIDI item contributes every loop over its length", function()
    decoder({ "text", "continue", "melody" })
    -- a 2-QN source (1.25 s) looped over a 3.75 s item: 3 loops
    local item = midi_item(2.0, 3.75, { { 0, 480, 60, 100 }, { 960, 1440, 64, 100 } }, 2)
    item.loop = 1
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    balanced(fake)
    local notes = fake.sims[1].request.midi_notes
    assert.are.equal(6, #notes)
    assert.is_true(near(notes[3][1], 1.25, 1e-6) and notes[3][3] == 60)
    assert.is_true(near(notes[6][1], 3.125, 1e-6) and notes[6][3] == 64)
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#15 the job's project, not the tab in front", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("a transcription without notes (the .mid itself) lands in the job's project after a tab switch", function()
    fake.scenario = function(req)
      local f = assert(io.open(req.out, "wb"))
      f:write("MThd\0\0\0\6\0\1\0\2\1\224")
      f:close()
      return { { state = "starting" }, { state = "queued", job = "job-7", queue_position = 0 },
               { state = "done", job = "job-7", midi_path = req.out, exit_code = 0 } }
    end
    local other = fake:add_project("other.rpp")
    local o1 = fake:add_track("Other 1", other)
    o1.selected = true
    other.cursor = 30.0
    fake:run_script(env.SCRIPTS .. "M2UGen - Transcribe selection.lua")
    fake:run_defer({ on_tick = function(f, tick) if tick == 2 then f:switch_project(other) end end })
    assert.are.same({}, fake.violations)
    assert.are.equal(0, #o1.items)
    assert.are.equal(1, #other.tracks)
    assert.are.equal(30.0, other.cursor)
    local track = created(fake.main)[1].track
    assert.are.equal(2.0, track.items[1].position)
    assert.truthy(track.items[1].active.source.path:match("%.mid$"))
  end)

  it("Regenerate of an edit after a tab switch says to switch back (no render of a background tab)", function()
    env.teardown(ctx)
    ctx = env.setup({ preview = "on" })
    fake = ctx.fake
    env.standard_project(fake)
    local other = fake:add_project("other.rpp")
    fake.inputs_answers = { "brighter\n5" }
    fake.gfx_state.keys = { [4] = "r" }
    fake:run_script(env.SCRIPTS .. "M2UGen - Edit selection.lua")
    fake:run_defer({ on_tick = function(f)
      if f.gfx_state.title == "M2UGen - Edit selection - preview" and f.current ~= other then f:switch_project(other) end
    end })
    assert.are.same({}, fake.violations)
    assert.are.equal(1, #fake.renders)
    local msg = last_message(fake)
    assert.truthy(msg:find("project.rpp", 1, true) and msg:find("Switch", 1, true), msg)
    assert.is_nil(msg:find("script error", 1, true))
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#16 Windows", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup({ os_name = "Win64" })
    fake = ctx.fake
    env.standard_project(fake)
    set(fake, "cli_path", ctx.cli)
  end)
  after_each(function() env.teardown(ctx) end)

  it("the CLI starts hidden through wscript (no console window) and still gets its exact argv", function()
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    balanced(fake)
    local e = fake.exec_log[1]
    assert.truthy(e.cmd:match('^wscript%.exe //B //Nologo "'), e.cmd)
    assert.are.equal(ctx.cli, e.argv[1])
    assert.are.equal("generate", e.argv[2])
    assert.are.equal(0, e.window_style)
    assert.are.equal(1, #created(fake.main))
  end)

  it("a half-written status file is skipped, the next read gets the whole one", function()
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    fake.partial_status_writes = 3 -- the first 3 status reads see a half-written file
    env.run_action(ctx, "Generate")
    balanced(fake)
    assert.are.equal(1, #created(fake.main))
  end)
end)

-- ---------------------------------------------------------------------------------------------
describe("#17 no freezes; the preview asks before it keeps anything", function()
  local ctx, fake
  after_each(function() env.teardown(ctx) end)

  it("the server's job list is read in the background: REAPER is never blocked waiting for it", function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
    fake.server_jobs = { { op = "job", job = "job-a", kind = "generate", state = "done", params = { prompt = "old" } } }
    fake.menu_answers = { 1, 1 }
    env.run_action(ctx, "Jobs")
    balanced(fake)
    local jobs = fake.exec_log[1]
    assert.are.equal("jobs", jobs.argv[2])
    assert.is_true(jobs.timeout < 0, "ExecProcess waited " .. tostring(jobs.timeout) .. " ms")
    assert.truthy(fake.menus[2]:find("generate job-a: old", 1, true))
    assert.are.equal(1, #created(fake.main))
  end)

  it("a long result is copied next to the project a few MiB per defer tick (REAPER keeps drawing)", function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
    fake.inputs_answers = { "x\n60\n1" } -- 60 s at 48 kHz: 5.8 MB
    fake.mb_answers = { 7 }
    local partial_seen = false
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    fake:run_defer({ on_tick = function()
      for _, f in ipairs(env.list_files(ctx.project_dir .. "/M2UGen")) do
        if f:match("%.part$") then partial_seen = true end
      end
    end })
    balanced(fake)
    assert.is_true(partial_seen, "the whole file was copied within one tick")
    local kept = env.list_files(ctx.project_dir .. "/M2UGen")
    assert.are.equal(1, #kept)
    assert.is_true(near(wav.info(ctx.project_dir .. "/M2UGen/" .. kept[1]).seconds, 60.0))
    assert.are.equal(1, #created(fake.main))
  end)

  it("with SWS any take can be auditioned", function()
    ctx = env.setup({ preview = "on" })
    fake = ctx.fake
    env.standard_project(fake)
    fake:enable_sws()
    set(fake, "takes", "3")
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    fake.gfx_state.keys = { [4] = "2", [6] = "3", [8] = "a" }
    env.run_action(ctx, "Generate")
    balanced(fake)
    local played = {}
    for i, pv in ipairs(fake.sws.previews) do played[i] = pv.src.path:match("(%-take%d)%.wav$") or "take1" end
    assert.are.same({ "take1", "-take2", "-take3" }, played)
  end)

  for _, case in ipairs({ { "closing the window", "close" }, { "Esc", "esc" } }) do
    it(case[1] .. " is not Accept: it asks, and No discards", function()
      ctx = env.setup({ preview = "on" })
      fake = ctx.fake
      env.standard_project(fake)
      fake.inputs_answers = { "x\n4\n1" }
      fake.mb_answers = { 7, 7 } -- no image; keep the result? no
      if case[2] == "esc" then fake.gfx_state.keys = { [4] = "\27" } else fake.gfx_state.close_preview_at = 4 end
      env.run_action(ctx, "Generate")
      balanced(fake)
      assert.truthy(fake.messages[2].msg:find("Keep", 1, true), fake.messages[2].msg)
      assert.are.equal(0, #created(fake.main))
      assert.are.equal("discarded", json.decode(fake.proj_ext.M2UGen["job:job-1"]).state)
    end)
  end
end)

-- ---------------------------------------------------------------------------------------------
describe("#18 captions", function()
  it("an item's notes are cut at 2,000 bytes on a UTF-8 character boundary", function()
    local ctx = env.setup()
    local fake = ctx.fake
    local keys = env.standard_project(fake)
    local item = audio_item(ctx, keys, 0.0, 2.0)
    item.notes = string.rep("a", 1999) .. "é and more"
    item.selected = true
    local import = dofile(env.SCRIPTS .. "m2ugen/lib.lua")
    local clips = import("project").selected_sources(fake.main)
    assert.are.equal(1999, #clips[1].caption)
    assert.truthy(utf8.len(clips[1].caption))
    env.teardown(ctx)
  end)
end)
