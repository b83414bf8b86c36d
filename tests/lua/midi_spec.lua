-- Issue 14 in REAPER, against the recording fake: a selected MIDI item is the melody of Generate /
-- Edit (its notes read with the MIDI API on the project's tempo map, sent as `midi_notes`), and
-- "M2UGen - Transcribe selection" puts a transcription on a new MIDI track (from the sidecar's
-- notes at their project time; without a sidecar the .mid itself through InsertMedia).
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local env = dofile(HERE .. "helpers/env.lua")
local Fake = env.Fake
local json = Fake.json

local function check_invariants(fake)
  assert.are.same({}, fake.violations)
  assert.are.equal(fake.undo.begin, fake.undo["end"], "Undo_BeginBlock2/EndBlock2 unbalanced")
  assert.are.equal(0, fake.refresh, "PreventUIRefresh unbalanced")
  assert.are.same(Fake.DEFAULT_RENDER.numbers, fake.render.numbers, "render settings not restored")
  assert.is_nil(fake.ext.M2UGen and fake.ext.M2UGen.active, "the active-job ExtState was left behind")
end

local function near(a, b) return math.abs(a - b) < 1e-6 end

local function created_tracks(fake)
  local out = {}
  for i, t in ipairs(fake.tracks) do if t.created then out[#out + 1] = { index = i - 1, track = t } end end
  return out
end

describe("a selected MIDI item is the melody", function()
  local ctx, fake, keys
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    keys = env.standard_project(fake)
    fake.tempo = { num = 4, den = 4, bpm = 120 }
    -- 120 bpm for the first 4 quarter notes (2 s), then 60 bpm: a quarter note lasts 1 s there
    fake.main.tempo_map = { { qn = 0, bpm = 120 }, { qn = 4, bpm = 60 } }
    -- the running server's decoder follows melodies (discovery file model.decoder.modes)
    Fake.write_discovery(ctx.config_dir, ctx.cli, { model = { decoder = { kind = "musicgen-melody",
                                                                          modes = { "text", "continue", "melody" } } } })
  end)
  after_each(function() env.teardown(ctx) end)

  local function midi_item()
    local item = fake:add_item(keys, 1.0, 4.0) -- 1 s .. 5 s
    local P = Fake.PPQ
    fake:add_midi_take(item, {
      { 0, P, 60, 100 },                -- QN 2..3: 1.0 .. 1.5 s
      { P, 2 * P, 64, 90 },             -- QN 3..4: 1.5 .. 2.0 s
      { 2 * P, 3 * P, 67, 80 },         -- QN 4..5: 2.0 .. 3.0 s (60 bpm from QN 4)
      { 3 * P, 4 * P, 36, 100, 9 },     -- a drum hit: no pitch class, left out
      { 3 * P, 4 * P, 70, 100, 0, true }, -- muted: left out
      { 3 * P, 9 * P, 72, 110 },        -- QN 5..11: 3.0 .. 9.0 s, cut at the item's end (5 s)
    })
    item.selected = true
    return item
  end

  it("Generate sends its notes in seconds from the selection start, on the tempo map", function()
    midi_item()
    fake.inputs_answers = { "strings\n4.000\n" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    local req = fake.sims[1].request
    local notes = req.midi_notes
    assert.are.equal(4, #notes)
    local want = { { 0.0, 0.5, 60, 100 }, { 0.5, 1.0, 64, 90 }, { 1.0, 2.0, 67, 80 }, { 2.0, 4.0, 72, 110 } }
    for i, w in ipairs(want) do
      assert.is_true(near(notes[i][1], w[1]) and near(notes[i][2], w[2]), "note " .. i .. " timing")
      assert.are.equal(w[3], notes[i][3])
      assert.are.equal(w[4], notes[i][4])
    end
    assert.is_true(#fake:calls_of("MIDI_GetProjTimeFromPPQPos") >= 8)
    assert.are.equal(0, #fake.renders, "generate must not render")
  end)

  it("a constant tempo gives other times: the tempo map is what is followed", function()
    fake.main.tempo_map = nil
    midi_item()
    fake.inputs_answers = { "strings\n4.000\n" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    local notes = fake.sims[1].request.midi_notes
    assert.is_true(near(notes[3][1], 1.0) and near(notes[3][2], 1.5)) -- QN 4..5 at 120 bpm
  end)

  it("an audio item sends no notes", function()
    local item = fake:add_item(keys, 1.0, 4.0)
    local wav = ctx.root .. "/in.wav"
    Fake.wav.write(wav, 4.0, 8000, 1)
    fake:add_take(item, wav)
    item.selected = true
    fake.inputs_answers = { "strings\n4.000\n" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.is_nil(fake.sims[1].request.midi_notes)
  end)

  it("Edit sends the notes with the rendered item", function()
    midi_item()
    fake.inputs_answers = { "make it brass\n7" }
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    local req = fake.sims[1].request
    assert.are.equal("edit", req.kind)
    assert.truthy(req.audio)
    assert.are.equal(4, #req.midi_notes)
  end)
end)

-- A transcribe scenario: the CLI writes the .mid (bytes only need to exist) and the server's
-- sidecar beside it, then reports done with midi_path.
local NOTES = { { 0.0, 0.5, 60, 100, 0 }, { 0.5, 1.5, 64, 90, 0 }, { 0.0, 2.0, 48, 80, 1 } }
local function transcribed(with_sidecar)
  return function(req)
    local f = assert(io.open(req.out, "wb"))
    f:write("MThd\0\0\0\6\0\1\0\2\1\224")
    f:close()
    if with_sidecar then
      local s = assert(io.open((req.out:gsub("%.mid$", "")) .. ".json", "wb"))
      s:write(json.encode({ job = "job-7", kind = "transcribe", bpm = 96, bpm_source = "context",
                            notes = NOTES, chords = { { 0, 2, "C" } }, server_version = "test" }))
      s:close()
    end
    return { { state = "starting" }, { state = "queued", job = "job-7", queue_position = 0 },
             { state = "running", job = "job-7", stage = "transcribing", fraction = 0.5 },
             { state = "done", job = "job-7", midi_path = req.out, text = "2 melody notes", exit_code = 0 } }
  end
end

describe("M2UGen - Transcribe selection", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake) -- Keys selected, time selection 2..6 s, 96 bpm
  end)
  after_each(function() env.teardown(ctx) end)

  it("renders the selection, asks for a .mid and puts its notes on a new MIDI track at the start", function()
    fake.scenario = transcribed(true)
    env.run_action(ctx, "Transcribe selection")
    check_invariants(fake)
    assert.are.equal(0, #fake.inputs_asked, "no dialog")
    local argv = fake.exec_log[1].argv
    assert.are.equal("transcribe", argv[2])
    local req = fake.sims[1].request
    assert.are.equal("transcribe", req.kind)
    assert.truthy(req.audio)
    assert.truthy(req.out:match("%.mid$"))
    assert.is_nil(req.prompt)
    assert.are.equal(96, req.context.bpm)
    assert.is_nil(req.dereverb) -- the protocol's default (on) is left out
    assert.are.equal(1, #fake.renders)

    local new = created_tracks(fake)
    assert.are.equal(1, #new)
    assert.are.equal(2, new[1].index) -- right below the selected "Keys"
    local track = new[1].track
    assert.are.equal("M2UGen transcribe: job job-7", track.name)
    local item = track.items[1]
    assert.are.equal(2.0, item.position)
    local take = item.takes[1]
    assert.are.equal("job-7", take.name)
    assert.is_true(take.sorted)
    assert.are.equal(3, #take.midi)
    -- notes at their project time: ppq from the item start at 96 bpm (a QN lasts 0.625 s)
    local by_pitch = {}
    for _, n in ipairs(take.midi) do by_pitch[n.pitch] = n end
    assert.is_true(near(by_pitch[64].s, 0.5 / 0.625 * Fake.PPQ) and near(by_pitch[64].e, 1.5 / 0.625 * Fake.PPQ))
    assert.are.equal(1, by_pitch[48].chan)
    assert.are.equal(90, by_pitch[64].vel)
    assert.truthy(item.notes:find("Tempo: 96 bpm (context)", 1, true))
    -- kept next to the project, named after the run; the temp files are gone
    local kept = env.list_files(ctx.project_dir .. "/M2UGen")
    assert.are.equal(2, #kept)
    assert.truthy(kept[1]:match("%.json$") and kept[2]:match("%.mid$"))
    assert.are.same({}, env.list_files(ctx.tmp_dir .. "/m2ugen-reaper/out"))
    local rec = json.decode(fake.proj_ext.M2UGen["job:job-7"])
    assert.are.equal("transcribe", rec.kind)
    assert.are.equal(ctx.project_dir .. "/M2UGen/" .. kept[2], rec.files[1].path)
    assert.are.same({ "M2UGen: M2UGen transcribe: job job-7" }, fake.undo.names)
  end)

  it("Settings' 'Transcribe: subtract room reverb' off sends dereverb false (a dry DI piano)", function()
    fake.ext.M2UGen = { dereverb = { value = "off", persist = true } }
    fake.scenario = transcribed(true)
    env.run_action(ctx, "Transcribe selection")
    check_invariants(fake)
    assert.are.equal(false, fake.sims[1].request.dereverb)
  end)

  it("without the sidecar's notes the .mid itself is the item's source on the new track", function()
    fake.scenario = transcribed(false)
    fake.cursor = 11.0
    fake.mid_length_qn = 8
    env.run_action(ctx, "Transcribe selection")
    check_invariants(fake)
    assert.is_nil(fake.inserted_media) -- not InsertMedia: it acts on the tab in front
    local track = created_tracks(fake)[1].track
    assert.are.equal(1, #track.items)
    assert.are.equal(2.0, track.items[1].position)
    assert.is_true(near(track.items[1].length, 8 * 0.625)) -- 8 QN at 96 bpm
    assert.truthy(track.items[1].takes[1].source.path:match("/M2UGen/.*%.mid$"))
    assert.are.equal("job-7", track.items[1].takes[1].name)
    assert.are.equal(11.0, fake.cursor, "the edit cursor is untouched")
    assert.is_true(fake.tracks[2].selected and not track.selected, "the track selection is untouched")
  end)

  it("a failed insert keeps the file and says where it is", function()
    fake.scenario = transcribed(false)
    fake.refuse_source = true
    env.run_action(ctx, "Transcribe selection")
    assert.are.same({}, fake.violations)
    local msg = fake.messages[#fake.messages].msg
    assert.truthy(msg:find("Could not insert the transcription", 1, true))
    assert.are.equal(0, #created_tracks(fake), "no empty track left")
    assert.are.equal(1, #env.list_files(ctx.project_dir .. "/M2UGen"))
  end)

  it("needs a selection", function()
    fake.ts, fake.te = 0, 0
    env.run_action(ctx, "Transcribe selection")
    assert.are.equal(0, #fake.exec_log)
    assert.truthy(fake.messages[1].msg:find("Select a time range", 1, true))
  end)
end)
