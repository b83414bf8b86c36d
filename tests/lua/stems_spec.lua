-- "M2UGen - Split into stems" and the Edit action's stem fields against the fake reaper: the stems job
-- through the CLI (`m2ugen stems IN --out DIR`), each stem on its own track under a folder track
-- (I_FOLDERDEPTH as REAPER documents it, Fake.folder_tree), aligned to the source item, one undo point;
-- the awkward cases: a take offset and a playrate, the last track closing a folder, nested folders, a
-- failed or cancelled job and a failed insert (no empty folder left).
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local env = dofile(HERE .. "helpers/env.lua")
local Fake = env.Fake
local wav = Fake.wav

local STEMS4 = { "drums", "bass", "other", "vocals" }

local check_invariants = env.check_invariants

local function track_named(p, name)
  for i, t in ipairs(p.tracks) do if t.name == name then return t, i - 1 end end
end

-- {name = {level, parent name}} of every track: what the folder tree looks like
local function tree_of(p)
  local out = {}
  for _, row in ipairs(Fake.folder_tree(p)) do
    out[row.track.name] = { row.level, row.parent and row.parent.name or false }
  end
  return out
end

local function source_item(fake, track, path_dir)
  local path = path_dir .. "/source.wav"
  wav.write(path, 8.0, 48000, 2)
  local item = fake:add_item(track, 3.3, 2.5)
  local take = fake:add_take(item, path, "Keys take")
  take.startoffs, take.playrate = 1.25, 1.5 -- the item plays 1.25 s into its file, 1.5x fast
  item.selected = true
  return item, take
end

describe("M2UGen - Split into stems", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    fake:add_track("Drums")
    fake:add_track("Keys")
    fake:add_track("Bass")
  end)
  after_each(function() env.teardown(ctx) end)

  it("puts each stem on its own track under a folder named after the item, aligned to it, in one undo point", function()
    local keys = fake.tracks[2]
    local item = source_item(fake, keys, ctx.project_dir)
    fake.inputs_answers = { "4" }
    env.run_action(ctx, "Split into stems")
    check_invariants(fake)
    assert.are.same({}, fake.messages)
    -- the item rendered as an edit for a new track hears it: selected items via master, one file, no master FX
    assert.are.equal(1, #fake.renders)
    local r = fake.renders[1]
    assert.are.equal(64 | (4 << 16), r.numbers.RENDER_SETTINGS)
    assert.are.equal(4, r.numbers.RENDER_BOUNDSFLAG)
    local argv = fake.sims[1].argv
    assert.are.same({ ctx.cli, "stems", r.path, "--out", ctx.tmp_dir .. "/m2ugen-reaper/out", "--status-file" },
      { table.unpack(argv, 1, 6) })
    assert.is_nil(Fake.index_of(argv, "--stem-model")) -- 4 stems: the server's default model
    -- the folder right below Keys (a top-level track), the stems inside it, Bass after it at the top level
    local folder, index = track_named(fake.main, "Keys take stems")
    assert.are.equal(2, index)
    assert.are.equal(1, folder.depth)
    local tree = tree_of(fake.main)
    assert.are.same({ 0, false }, tree["Keys take stems"])
    for i, stem in ipairs(STEMS4) do
      local t, at = track_named(fake.main, stem)
      assert.are.equal(2 + i, at)
      assert.are.same({ 1, "Keys take stems" }, tree[stem])
      assert.are.equal(i == #STEMS4 and -1 or 0, t.depth)
      -- aligned: the item's position, as long as the rendered selection, its file from the start at rate 1
      local it = t.items[1]
      assert.are.equal(1, #t.items)
      assert.are.equal(item.position, it.position)
      local info = wav.info(it.active.source.path)
      assert.are.equal(math.floor(2.5 * info.rate + 0.5), info.frames) -- every sample of the selection
      assert.are.equal(info.frames / info.rate, it.length)
      assert.are.equal(0, reaper.GetMediaItemTakeInfo_Value(it.active, "D_STARTOFFS"))
      assert.are.equal(1, reaper.GetMediaItemTakeInfo_Value(it.active, "D_PLAYRATE"))
      -- the right file on the right track (the simulated separator's stem i is at level STEM_GAINS[i])
      assert.is_true(math.abs(wav.gain(it.active.source.path) - Fake.STEM_GAINS[i]) < 1e-3, stem)
      assert.are.equal(ctx.project_dir .. "/M2UGen/" .. fake.sims[1].request.audio:match("([^/]+)%.wav$") ..
        "-" .. stem .. ".wav", it.active.source.path)
      assert.are.equal(stem, it.active.name)
      assert.are.equal(stem, Fake.json.decode(it.active.ext.m2ugen).stem)
    end
    assert.are.same({ 0, false }, tree_of(fake.main).Bass)
    assert.are.equal(0, Fake.folder_tree(fake.main).open)
    -- the source is muted (the project sounds as before), the source's take untouched
    assert.are.equal(1, item.mute)
    assert.are.equal(1.25, item.active.startoffs)
    assert.are.same({ "M2UGen: split into stems" }, fake.undo.names)
    -- kept with the project and in its history; no temporary file left
    local hist = fake.proj_ext.M2UGen
    local rec = Fake.json.decode(hist["job:job-1"])
    assert.are.equal("stems", rec.kind)
    assert.are.equal(4, #rec.files)
    assert.are.equal("Keys take stems", rec.folder)
    assert.are.same({}, env.list_files(ctx.tmp_dir .. "/m2ugen-reaper/out"))
    assert.are.same({}, env.list_files(ctx.tmp_dir .. "/m2ugen-reaper/in"))
  end)

  it("closes the folder correctly after an item on the last track, itself the last in a folder (6 stems)", function()
    fake.tracks[1].depth = 1  -- Drums: a folder parent
    fake.tracks[3].depth = -1 -- Bass: the last track, the last in that folder
    local item = source_item(fake, fake.tracks[3], ctx.project_dir)
    fake.inputs_answers = { "6" }
    env.run_action(ctx, "Split into stems")
    check_invariants(fake)
    local argv = fake.sims[1].argv
    assert.are.equal("htdemucs_6s", argv[Fake.index_of(argv, "--stem-model") + 1])
    local tree = tree_of(fake.main)
    -- the old folder is as it was; the new one after it, at the top level, closed by its last stem
    assert.are.same({ 0, false }, tree.Drums)
    assert.are.same({ 1, "Drums" }, tree.Keys)
    assert.are.same({ 1, "Drums" }, tree.Bass)
    assert.are.equal(-1, fake.tracks[3].depth)
    local _, index = track_named(fake.main, "Keys take stems")
    assert.are.equal(3, index)
    assert.are.same({ 0, false }, tree["Keys take stems"])
    for _, stem in ipairs(Fake.STEMS.htdemucs_6s) do assert.are.same({ 1, "Keys take stems" }, tree[stem]) end
    assert.are.equal(-1, fake.main.tracks[#fake.main.tracks].depth)
    assert.are.equal("piano", fake.main.tracks[#fake.main.tracks].name)
    assert.are.equal(0, Fake.folder_tree(fake.main).open)
    assert.are.equal(10, #fake.main.tracks)
    assert.are.equal(1, item.mute)
  end)

  it("in nested folders goes below the outermost folder, every old track keeping its parent", function()
    -- Bus (folder) > Drum bus (folder) > Kick, Snare (closes both); then Bass at the top level
    for _, t in ipairs(fake.tracks) do t.name = "x" end
    fake.main.tracks = {}
    local bus = fake:add_track("Bus")
    local dbus = fake:add_track("Drum bus")
    local kick = fake:add_track("Kick")
    local snare = fake:add_track("Snare")
    fake:add_track("Bass")
    bus.depth, dbus.depth, snare.depth = 1, 1, -2
    local before = tree_of(fake.main)
    source_item(fake, kick, ctx.project_dir)
    fake.inputs_answers = { "4" }
    env.run_action(ctx, "Split into stems")
    check_invariants(fake)
    local tree = tree_of(fake.main)
    for name, where in pairs(before) do assert.are.same(where, tree[name], name) end
    local _, index = track_named(fake.main, "Keys take stems")
    assert.are.equal(4, index) -- after Snare, which closes both folders
    assert.are.same({ 0, false }, tree["Keys take stems"])
    for _, stem in ipairs(STEMS4) do assert.are.same({ 1, "Keys take stems" }, tree[stem]) end
    assert.are.equal("Bass", fake.main.tracks[#fake.main.tracks].name)
    assert.are.equal(0, Fake.folder_tree(fake.main).open)
  end)

  it("place.top_level_index: below a top-level track, after a folder's last track, at the end when open", function()
    local import = dofile(env.SCRIPTS .. "m2ugen/lib.lua")
    local place = import("place")
    fake.main.tracks = {}
    local a = fake:add_track("A")        -- 0: top level
    local f = fake:add_track("F")        -- 1: folder
    local g = fake:add_track("G")        -- 2: folder in F
    local h = fake:add_track("H")        -- 3: in G, closes G
    local i = fake:add_track("I")        -- 4: in F, closes F
    local open = fake:add_track("Open")  -- 5: a folder left open at the end
    local last = fake:add_track("Last")  -- 6: in Open, closes nothing
    f.depth, g.depth, h.depth, i.depth, open.depth = 1, 1, -1, -1, 1
    assert.are.same({ 1 }, { place.top_level_index(fake.main, a) })
    for _, t in ipairs({ f, g, h, i }) do assert.are.same({ 5 }, { place.top_level_index(fake.main, t) }) end
    assert.are.same({ 7 }, { place.top_level_index(fake.main, last) })
    assert.are.same({ 7 }, { place.top_level_index(fake.main, nil) })
    assert.are.same({}, fake.violations)
  end)

  it("a time selection: the master mix, a 'Master mix stems' folder at the end, nothing muted", function()
    fake.ts, fake.te = 2.0, 6.0
    local it = fake:add_item(fake.tracks[1], 0, 10)
    fake:add_take(it, ctx.project_dir .. "/d.wav", "d")
    wav.write(ctx.project_dir .. "/d.wav", 10, 8000, 1)
    fake.inputs_answers = { "4" }
    env.run_action(ctx, "Split into stems")
    check_invariants(fake)
    assert.are.equal(0, fake.renders[1].numbers.RENDER_SETTINGS) -- the master mix
    local _, index = track_named(fake.main, "Master mix stems")
    assert.are.equal(3, index)
    assert.are.equal(2.0, track_named(fake.main, "drums").items[1].position)
    assert.are.equal(0, it.mute)
  end)

  for _, case in ipairs({ { "failed", "job_failed", "CUDA out of memory" }, { "cancelled", "long", "cancelled" } }) do
    it("a " .. case[1] .. " job leaves no folder, no track, nothing muted", function()
      local item = source_item(fake, fake.tracks[2], ctx.project_dir)
      fake.scenario = case[2]
      if case[1] == "cancelled" then fake.gfx_state.clicks = { 8 } end
      fake.inputs_answers = { "4" }
      env.run_action(ctx, "Split into stems")
      check_invariants(fake)
      assert.truthy(env.last_message(fake):find(case[3], 1, true), env.last_message(fake))
      assert.are.equal(3, #fake.main.tracks)
      assert.are.same({}, env.created(fake.main))
      assert.are.equal(0, item.mute)
      assert.are.same({}, env.list_files(ctx.tmp_dir .. "/m2ugen-reaper/in"))
    end)
  end

  it("an insert that fails half-way takes everything back (no empty folder) and says where the stems are", function()
    local item = source_item(fake, fake.tracks[2], ctx.project_dir)
    fake.refuse_source_after = 2 -- REAPER accepts two stems' files, then refuses one
    fake.inputs_answers = { "4" }
    env.run_action(ctx, "Split into stems")
    check_invariants(fake)
    assert.are.equal(3, #fake.main.tracks)
    assert.are.same({}, env.created(fake.main))
    assert.are.equal(0, item.mute)
    assert.are.equal(0, Fake.folder_tree(fake.main).open)
    local msg = env.last_message(fake)
    assert.truthy(msg:find("Could not insert the stems", 1, true), msg)
    assert.truthy(msg:find(ctx.project_dir .. "/M2UGen/", 1, true), msg)
    -- the kept stems go back in with M2UGen - Jobs (the source is not muted again)
    fake.refuse_source_after = nil
    fake.menu_answers = { 1 }
    env.run_action(ctx, "Jobs")
    check_invariants(fake)
    local folder = track_named(fake.main, "Keys take stems")
    assert.is_not_nil(folder)
    assert.are.equal(4 + 1 + 3, #fake.main.tracks)
    assert.are.equal(item.position, track_named(fake.main, "vocals").items[1].position)
    assert.are.equal(0, item.mute)
  end)

  it("REAPER quits mid-split: the next Split into stems fetches the stems and puts them under the folder", function()
    local item = source_item(fake, fake.tracks[2], ctx.project_dir)
    fake.scenario = "long"
    fake.inputs_answers = { "4" }
    fake:run_script(env.SCRIPTS .. "M2UGen - Split into stems.lua")
    fake:run_defer({ on_tick = function(_, tick) if tick == 20 then return "stop" end end })
    local rec = Fake.json.decode(fake.proj_ext.M2UGen["job:job-1"])
    assert.are.same({ "running", "stems", "Keys take stems", 3.3 }, { rec.state, rec.kind, rec.folder, rec.position })
    assert.are.same({}, env.created(fake.main))
    -- REAPER starts again: the action offers the job of the earlier session first
    item.selected = false
    fake.result_scenario = function(req)
      return { { state = "running", job = req.job }, { state = "done", job = req.job, stems = true, exit_code = 0 } }
    end
    fake.mb_answers = { 6 } -- yes, fetch it
    env.run_action(ctx, "Split into stems")
    check_invariants(fake)
    local last = fake.exec_log[#fake.exec_log].argv
    assert.are.same({ ctx.cli, "result", "job-1", "--wait", "--out" }, { table.unpack(last, 1, 5) })
    local _, index = track_named(fake.main, "Keys take stems")
    assert.are.equal(3, index) -- no track is selected now: at the end, at the top level
    for _, stem in ipairs(STEMS4) do
      local t = track_named(fake.main, stem)
      assert.are.equal(3.3, t.items[1].position)
      assert.are.equal(2.0, t.items[1].length) -- the fetched files' length
      assert.are.equal(ctx.project_dir .. "/M2UGen", t.items[1].active.source.path:match("^(.*)/[^/]+$"))
    end
    rec = Fake.json.decode(fake.proj_ext.M2UGen["job:job-1"])
    assert.are.same({ "done", 4 }, { rec.state, #rec.files })
    assert.are.same({}, env.list_files(ctx.tmp_dir .. "/m2ugen-reaper/out"))
    assert.are.equal(1, #fake.inputs_asked, "the fetch asks for nothing")
  end)

  it("Cancel in the stems dialog starts nothing; a bad choice is named", function()
    source_item(fake, fake.tracks[2], ctx.project_dir)
    fake.inputs_answers = { false }
    env.run_action(ctx, "Split into stems")
    assert.are.equal(0, #fake.exec_log)
    fake.inputs_answers = { "5" }
    env.run_action(ctx, "Split into stems")
    assert.are.equal(0, #fake.exec_log)
    assert.truthy(env.last_message(fake):find("expected 4 or 6, got '5'", 1, true))
    check_invariants(fake)
  end)
end)

describe("M2UGen - Edit selection: the stem fields", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  local function request_of(answer)
    fake.inputs_answers = { answer }
    env.run_action(ctx, "Edit selection")
    return fake.sims[#fake.sims] and fake.sims[#fake.sims].request
  end

  it("auto (the default) sends no op: the server reads a stem edit from the instruction, else edits", function()
    local req = request_of("remove the drums\n3")
    assert.are.equal("remove the drums", req.prompt)
    assert.is_nil(req.op)
    assert.is_nil(req.stem)
    local asked = fake.inputs_asked[1]
    assert.are.equal(5, asked.n)
    assert.truthy(asked.defaults:find("\nauto\n", 1, true))
  end)

  it("an explicit op, stem and 'replace with' go into the request", function()
    local req = request_of("swap it\n3\nreplace\nPiano\nwarm strings")
    assert.are.same({ "replace", "piano", "warm strings" }, { req.op, req.stem, req.instrument })
    req = request_of("take the kit out\n\nremove\ndrums\n")
    assert.are.same({ "remove", "drums" }, { req.op, req.stem })
    assert.is_nil(req.instrument)
    req = request_of("a shaker on the off-beats\n\nadd\n\nshaker")
    assert.are.same({ "add", "shaker" }, { req.op, req.instrument })
    assert.is_nil(req.stem)
  end)

  it("names what does not fit and starts nothing", function()
    for _, case in ipairs({
      { "x\n\nmute\ndrums\n", "expected auto, remove, keep, replace or add, got 'mute'" },
      { "x\n\nremove\ncowbell\n", "got 'cowbell'" },
      { "x\n\nauto\ndrums\n", "choose remove, keep, replace or add for the drums" },
      { "x\n\nadd\nbass\nstrings", "add makes a new part" },
      { "x\n\nkeep\nbass\nstrings", "only for replace and add" },
    }) do
      assert.is_nil(request_of(case[1]))
      assert.truthy(env.last_message(fake):find(case[2], 1, true), env.last_message(fake))
    end
    assert.are.equal(0, #fake.exec_log)
  end)
end)
