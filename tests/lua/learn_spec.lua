-- "M2UGen - Learn from selected items" against the recording fake reaper: the selected audio items'
-- source files (the part each item plays, its notes as caption) become one `m2ugen learn` request,
-- the progress loop runs as for the other actions, the new adapter can be made the Settings' adapter
-- and is then in every Generate request; bad input and Cancel leave nothing behind.
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local env = dofile(HERE .. "helpers/env.lua")
local Fake = env.Fake
local wav = Fake.wav

local function last_message(fake)
  local m = fake.messages[#fake.messages]
  return m and m.msg or ""
end

local function balanced(fake)
  assert.are.same({}, fake.violations)
  assert.are.equal(fake.undo.begin, fake.undo["end"])
  assert.are.equal(0, fake.refresh)
  assert.is_nil(fake.ext.M2UGen and fake.ext.M2UGen.active, "the active-job ExtState was left behind")
end

-- a training run as the real CLI reports it: queued, training steps, done with the summary text
local function learnt(req)
  return {
    { state = "starting" },
    { state = "queued", job = "ft-1", queue_position = 0 },
    { state = "running", job = "ft-1", stage = "training", fraction = 0.5 },
    { state = "done", job = "ft-1", text = "adapter '" .. req.adapter_name .. "' learnt from 2 clip(s)", exit_code = 0 },
  }
end

describe("M2UGen - Learn from selected items", function()
  local ctx, fake, keys
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    keys = env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  local function audio_item(track, position, length, seconds, name)
    local path = ctx.root .. "/" .. name
    wav.write(path, seconds, 8000, 1)
    local item = fake:add_item(track, position, length)
    fake:add_take(item, path, name)
    item.selected = true
    return item, path
  end

  it("sends the selected items' files as one learn job and offers the adapter for the next requests", function()
    local a, a_path = audio_item(keys, 1.0, 2.0, 4.0, "riff one.wav")
    a.takes[1].startoffs = 0.5
    a.notes = "  warm rhodes chords \n"
    local _, b_path = audio_item(fake.tracks[3], 3.0, 3.0, 3.0, "bass.wav")
    local midi = fake:add_item(keys, 8.0, 1.0)
    fake:add_midi_take(midi, { { 0, 960, 60, 100 } }, "midi")
    midi.selected = true
    fake.scenario = learnt
    fake.inputs_answers = { "my_style\n50\nno" }
    fake.mb_answers = { 6 } -- yes: use it from now on
    env.run_action(ctx, "Learn from selected items")
    balanced(fake)

    local argv = fake.exec_log[1].argv
    assert.are.equal("learn", argv[2])
    assert.are.equal("--request", argv[3])
    assert.is_nil(fake.exec_log[1].cmd:find("rhodes", 1, true)) -- no user text on the command line
    local req = fake.sims[1].request
    assert.are.equal("my_style", req.adapter_name)
    assert.are.equal(50, req.steps)
    assert.is_nil(req.replace)
    assert.are.equal(2, #req.files) -- the MIDI item is skipped
    assert.are.same({ path = a_path, start = 0.5, ["end"] = 2.5, caption = "warm rhodes chords" }, req.files[1])
    assert.are.same({ path = b_path }, req.files[2]) -- the whole file, no notes: the server's model captions it
    assert.truthy(fake.inputs_asked[1].title:find("(2 clips)", 1, true))

    assert.truthy(last_message(fake):find("adapter 'my_style' learnt", 1, true))
    assert.are.equal("my_style", fake.ext.M2UGen.adapter.value)
    assert.are.equal("my_style", fake.ext.M2UGen.last_adapter_name.value)
    assert.is_nil(fake.proj_ext.M2UGen, "a fine-tune is not a result of the project's job history")
    assert.are.same({}, env.list_files(ctx.tmp_dir .. "/m2ugen-reaper/jobs"))

    -- the next Generate uses it
    fake.scenario = "done"
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7, 7 } -- no image; the selected MIDI item: no, not as the melody
    env.run_action(ctx, "Generate")
    assert.are.equal("my_style", fake.sims[2].request.adapter)
  end)

  it("no adapter in the settings: the request names none", function()
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    assert.is_nil(fake.sims[1].request.adapter)
  end)

  it("refuses no audio items, a bad name and bad steps before anything starts", function()
    env.run_action(ctx, "Learn from selected items")
    assert.truthy(last_message(fake):find("Select one or more audio items", 1, true))
    audio_item(keys, 1.0, 1.0, 1.0, "a.wav")
    for answer, words in pairs({ ["my style\n10\nno"] = "Adapter name", ["ok\n0\nno"] = "Steps",
                                 ["ok\n10\nmaybe"] = "Replace", [("x"):rep(65) .. "\n10\nno"] = "Adapter name" }) do
      fake.inputs_answers = { answer }
      env.run_action(ctx, "Learn from selected items")
      assert.truthy(last_message(fake):find(words, 1, true), answer)
    end
    assert.are.equal(0, #fake.exec_log)
    balanced(fake)
  end)

  it("asks to replace, and Cancel in the progress window cancels the job", function()
    audio_item(keys, 1.0, 1.0, 1.0, "a.wav")
    fake.scenario = "long"
    fake.gfx_state.clicks = { 8 }
    fake.inputs_answers = { "mine\n100\nyes" }
    env.run_action(ctx, "Learn from selected items")
    balanced(fake)
    assert.is_true(fake.sims[1].request.replace)
    assert.truthy(last_message(fake):find("was cancelled", 1, true))
    assert.are.equal("cancel", fake.exec_log[2].argv[2])
    assert.is_nil(fake.ext.M2UGen.adapter)
  end)
end)
