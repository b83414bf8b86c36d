-- @noindex
-- The actions: ask about / edit / generate into the selection, learn from selected items (a fine-tune
-- on the server), cancel, jobs, settings.
--
-- Flow of ask/edit/generate:
--   prompt dialog -> selection of the current project (kept: the job belongs to that project, even
--   when the user switches tabs) + context -> (render the selection) -> request JSON ->
--   ExecProcess(cli, -2) -> defer loop polls the status file (throttled) and draws the progress
--   window -> done: the result files are copied next to the project and recorded in its job
--   history FIRST, then previewed (Accept / Regenerate / Discard) and inserted (one undo point) /
--   the answer is shown and kept on the "M2UGen answers" track.
--   Modules: runner.lua (the job and its loop), results.lua (a finished job), preview.lua.
-- Any error: a message box, and nothing half-done (render settings restored in project.render,
-- nothing left behind by project.insert_*, temporary files removed). A finished result is never
-- deleted: when a later step fails the message says where it is, and "M2UGen - Jobs" re-inserts it.

local import = ...
local json = import("json")
local settings = import("settings")
local project = import("project")
local job = import("job")
local ui = import("ui")
local common = import("common")
local runner = import("runner")
local results = import("results")
local fail, message_of, traceback = common.fail, common.message_of, common.traceback
local trim = common.trim

local app = {}

app.TITLES = common.TITLES
app.fail = common.fail
app.message = common.message
app.IMAGE_EXT = { png = true, jpg = true, jpeg = true, bmp = true, webp = true, gif = true }
app.VIDEO_EXT = { mp4 = true, mov = true, mkv = true, avi = true, webm = true, m4v = true }

-- ---------------------------------------------------------------------------------------------
-- dialogs

-- Splits GetUserInputs' answer (separator "\n") into exactly n fields.
function app.split_fields(answer, n)
  local out = {}
  for field in (answer .. "\n"):gmatch("(.-)\n") do out[#out + 1] = field end
  while #out > n and out[#out] == "" do out[#out] = nil end
  if #out ~= n then fail("Expected " .. n .. " fields from the dialog, got " .. #out .. ".") end
  return out
end


local function parse_seed(text, fallback)
  text = trim(text)
  if text == "" then text = fallback or "" end
  if text == "" then return nil end
  if not text:match("^%d+$") then fail("Seed: expected a whole number >= 0 or empty (random), got '" .. text .. "'.") end
  return math.tointeger(tonumber(text))
end

-- Returns {prompt, duration, seed} or nil when the user pressed Cancel.
function app.ask_inputs(kind, s, sel)
  local last = reaper.GetExtState(settings.SECTION, "last_prompt_" .. kind)
  local captions, defaults
  if kind == "ask" then
    captions = { "Question about the selection" }
    defaults = { last ~= "" and last or "Describe this music: genre, instruments, mood, tempo." }
  elseif kind == "edit" then
    captions = { "Edit instruction", "Seed (empty = random)", "Stem op (auto/remove/keep/replace/add)",
                 "Stem (drums/bass/other/vocals/guitar/piano)", "Replace with / add (e.g. strings)" }
    defaults = { last, s.seed, "auto", "", "" }
  else
    local d = sel and string.format("%.3f", sel["end"] - sel.start) or s.duration
    captions = { "Describe the music", "Duration in seconds", "Seed (empty = random)" }
    defaults = { last, d, s.seed }
  end
  local ok, answer = reaper.GetUserInputs(app.TITLES[kind], #captions,
    table.concat(captions, ",") .. ",separator=\n,extrawidth=320", table.concat(defaults, "\n"))
  if not ok then return nil end
  local f = app.split_fields(answer, #captions)
  local out = { prompt = trim(f[1]) }
  if out.prompt == "" then fail("The " .. captions[1]:lower() .. " is empty.") end
  if #out.prompt > 4000 then fail("The " .. captions[1]:lower() .. " is longer than 4000 characters.") end
  if kind == "edit" then
    out.seed = parse_seed(f[2])
    out.op, out.stem, out.instrument = app.stem_choice(f[3], f[4], f[5])
  elseif kind == "generate" then
    local d = tonumber(trim(f[2]))
    if not d or d < 0.5 or d > 300 then
      fail("Duration: expected seconds between 0.5 and 300, got '" .. trim(f[2]) .. "'.")
    end
    out.duration = d
    out.seed = parse_seed(f[3])
  end
  reaper.SetExtState(settings.SECTION, "last_prompt_" .. kind, out.prompt, true)
  return out
end

-- The Edit dialog's stem fields -> the request's op / stem / instrument (docs/protocol.md §2.6), or
-- nothing for "auto": the server reads a stem edit from the instruction when it clearly names one
-- ("remove the drums", "replace the piano with strings") and else makes an ordinary edit. An explicit
-- op without a stem (or without "replace with") takes it from the instruction.
app.STEM_OPS = { remove = true, keep = true, replace = true, add = true }
app.STEMS = { drums = true, bass = true, other = true, vocals = true, guitar = true, piano = true }
function app.stem_choice(op_text, stem_text, with_text)
  local op = trim(op_text or ""):lower()
  local stem = trim(stem_text or ""):lower()
  local with = trim((with_text or ""):gsub("%c+", " "))
  if op == "" then op = "auto" end
  if op ~= "auto" and not app.STEM_OPS[op] then
    fail("Stem op: expected auto, remove, keep, replace or add, got '" .. op .. "'.")
  end
  if stem ~= "" and not app.STEMS[stem] then
    fail("Stem: expected drums, bass, other, vocals, guitar or piano (or empty), got '" .. stem .. "'.")
  end
  if #with > 200 then fail("Replace with / add: at most 200 characters.") end
  if op == "auto" then
    if stem ~= "" or with ~= "" then
      fail("Stem op: choose remove, keep, replace or add for " .. (stem ~= "" and ("the " .. stem) or ("'" .. with .. "'")) ..
        ".\n(auto reads the operation from the instruction, e.g. 'remove the drums'.)")
    end
    return nil
  end
  if op == "add" and stem ~= "" then fail("Stem: add makes a new part; it takes no stem (say what to add).") end
  if (op == "remove" or op == "keep") and with ~= "" then
    fail("Replace with / add: only for replace and add (" .. op .. " needs just the stem).")
  end
  return op, stem ~= "" and stem or nil, with ~= "" and with or nil
end

-- Optional image or video for generate. Returns "image"|"video", path; nil when none;
-- false when the user cancelled the whole action.
function app.ask_media()
  local answer = reaper.ShowMessageBox("Condition the music on an image or a video file?",
    app.TITLES.generate, 3)
  if answer == 2 then return false end
  if answer ~= 6 then return nil end
  local ok, path = reaper.GetUserFileNameForRead("", "M2UGen: image or video file", "")
  if not ok or path == "" then return false end
  local ext = (path:match("%.([^./\\]+)$") or ""):lower()
  if app.IMAGE_EXT[ext] then return "image", path end
  if app.VIDEO_EXT[ext] then return "video", path end
  fail("Not an image or video file: " .. path .. "\n(expected .png, .jpg, .bmp, .webp, .gif, .mp4, .mov, .mkv, .avi, .webm)")
end
-- The error when nothing is selected; `does`: what M2UGen does with the selection ("listens to").
function app.no_selection(does)
  fail("Select a time range or one or more media items first:\n" ..
    "M2UGen " .. does .. " the selected items, else the selected tracks in the time selection (via master),\n" ..
    "else the master mix of the time selection.")
end

-- The error when an interactive job (Ask, Edit, Generate, Transcribe, Split) is still running.
function app.require_idle()
  local active = runner.read_active(runner.SLOTS.interactive)
  if active then
    fail("An M2UGen job (" .. tostring(active.kind) .. ") is still running in this REAPER session.\n" ..
      "Wait for it or run M2UGen - Cancel. (A Learn runs in the background and does not block this.)")
  end
end

-- preset (Regenerate): {proj, inputs, media_kind, media_path} skips the dialogs.
local function start(run, preset)
  local kind = run.kind
  run.settings = settings.load()
  if preset and preset.proj then
    if not project.is_open(preset.proj) then fail("The project of the job to regenerate was closed.") end
    if kind ~= "generate" and project.current() ~= preset.proj then
      fail("Regenerate renders the selection again, and REAPER renders only the project in front.\n" ..
        "Switch back to the tab of " .. project.name(preset.proj) .. " and run " .. app.TITLES[kind] .. " again.")
    end
    run.proj = preset.proj
  else
    run.proj = project.current()
  end
  local proj = run.proj
  run.proj_file = project.file_of(proj)
  local sel = project.selection(proj)
  if not sel and kind ~= "generate" then app.no_selection("listens to") end
  run.sel = sel
  app.require_idle()

  local inputs = preset and preset.inputs or (kind == "transcribe" and {}) or app.ask_inputs(kind, run.settings, sel)
  if not inputs then run.finished = true return end
  run.inputs = inputs

  local media_kind, media_path
  if preset then
    media_kind, media_path = preset.media_kind, preset.media_path
  elseif kind == "generate" then
    media_kind, media_path = app.ask_media()
    if media_kind == false then run.finished = true return end
  end
  run.media_kind, run.media_path = media_kind, media_path

  local cli, why = settings.resolve_cli(run.settings)
  if not cli then fail(why) end
  run.cli = cli

  run.position = sel and sel.start or reaper.GetCursorPositionEx(proj)
  run.result_dir = project.result_dir(proj) -- decided now: the tab may be closed by the time it is done
  run.track = sel and sel.track or nil
  if not run.track and reaper.CountSelectedTracks(proj) > 0 then run.track = reaper.GetSelectedTrack(proj, 0) end
  local context = project.context(proj, sel, run.position)
  run.name = project.stamp()

  local req = { prompt = inputs.prompt, context = context }
  if inputs.seed then req.seed = inputs.seed end
  local extra = {}
  if kind == "transcribe" then
    run.out = settings.join(project.temp_dir("out"), run.name .. ".mid")
    req.out = run.out
    if run.settings.dereverb == "off" then req.dereverb = false end -- the protocol's default is left out
  elseif kind ~= "ask" then
    req.conditioning = run.settings.conditioning
    req.sample_rate = context.project_sample_rate
    req.channels = 2
    local duration = inputs.duration or (sel and (sel["end"] - sel.start)) or tonumber(run.settings.duration)
    req.duration = duration + 0.0 -- a JSON float, as the protocol says
    run.out = settings.join(project.temp_dir("out"), run.name .. ".wav")
    req.out = run.out
    extra = job.extra_args({ takes = tonumber(run.settings.takes), fit_tempo = run.settings.fit_tempo == "on" })
    -- the protocol's defaults are left out of the request (an older server keeps working)
    if kind == "edit" and (run.settings.mode or "text") ~= "text" then req.mode = run.settings.mode end
    if kind == "edit" and inputs.op then req.op, req.stem, req.instrument = inputs.op, inputs.stem, inputs.instrument end
    if run.settings.loop == "on" and not inputs.op then req.loop = true end -- a stem edit keeps the source's length
    if (run.settings.vocoder or "encodec") ~= "encodec" then req.vocoder = run.settings.vocoder end
  end
  if media_kind then req[media_kind] = media_path end
  if kind == "edit" or kind == "generate" then
    req.midi_notes = app.melody_choice(project.midi_notes(sel), run.settings)
    if req.midi_notes == false then run.finished = true return end
  end
  if run.settings.adapter ~= "" then req.adapter = run.settings.adapter end
  run.request = req

  if kind ~= "generate" then
    run.input = project.render(proj, sel, project.temp_dir("in"), run.name, app.hearing(kind, run.settings, sel))
    req.audio = run.input
  end

  runner.launch(run, kind, req, extra)
  runner.begin_loop(run)
end

-- A job of an earlier session (REAPER quit or the script was stopped while it ran): the project's
-- history says "running" and no script of this session follows it. Offers to fetch its result.
-- Returns the fetch run when the user chose to fetch (the action stops there), false on Cancel,
-- nil to go on with the action.
function app.pickup(proj)
  local live = {}
  for _, a in ipairs(runner.active_jobs()) do if a.job then live[a.job] = true end end
  local rec = nil
  for _, r in ipairs(project.history(proj, json.try_decode)) do
    if r.state == "running" and r.job and not live[r.job] then rec = r break end
  end
  if not rec then return nil end
  local prompt = tostring(rec.prompt or ""):gsub("%c+", " ")
  local answer = reaper.ShowMessageBox("An M2UGen " .. tostring(rec.kind) .. " job of an earlier session (job " ..
    rec.job .. (prompt ~= "" and (": " .. prompt) or "") .. ") was still running when the script stopped; " ..
    "it went on on the server.\n\nFetch its result into this project now?\n" ..
    "(No: keep going; M2UGen - Jobs can fetch it later.)", "M2UGen", 3)
  if answer == 2 then return false end
  if answer ~= 6 then
    rec.state = "lost"
    project.remember(proj, rec.job, json.encode(rec))
    return nil
  end
  return app.reinsert(proj, rec)
end

-- A selected MIDI item is the melody (the server then uses mode melody), which needs a melody decoder.
-- Decides explicitly: the discovery file says what the running decoder can do; a decoder without
-- melody -> say the MIDI items are ignored (OK) or stop (Cancel); unknown -> ask. Returns the notes,
-- nil (go on without them) or false (the user cancelled).
function app.melody_choice(notes, s)
  if notes == nil then return nil end
  local modes, decoder = settings.server_modes(s)
  if modes and modes.melody then return notes end
  if modes then
    local answer = reaper.ShowMessageBox("The selection holds MIDI item(s), but the server's decoder (" .. decoder ..
      ") cannot follow a melody.\n\nThe MIDI items will be ignored: the music follows the prompt" ..
      " (and the selected audio) only.\nOK = go on without them, Cancel = stop.", "M2UGen", 1)
    if answer == 1 then return nil end
    return false
  end
  local answer = reaper.ShowMessageBox("Use the notes of the selected MIDI item(s) as the melody?\n\n" ..
    "This needs a melody decoder on the server (e.g. the preset musicgen-melody); a server without one " ..
    "refuses the job.\nYes = the MIDI is the melody, No = ignore the MIDI items, Cancel = stop.", "M2UGen", 3)
  if answer == 6 then return notes end
  if answer == 7 then return nil end
  return false
end

-- What the model hears (project.render's `how`): an edit hears its source up to where the result
-- will sit, so every FX and fader applies once; Ask and Transcribe hear the mix as heard.
function app.hearing(kind, s, sel)
  if kind ~= "edit" then return "heard" end
  if (s.edit_result or "take") == "take" and sel.source == "items" and #sel.items == 1 then return "take" end
  return "pre_master"
end

-- An action's run: a job of an earlier session that is still running is offered first (app.pickup; not
-- for a preset, which continues this session's run), else `start_fn(run, preset)` starts one; an error
-- there aborts the run with its message.
function app.run_with(kind, start_fn, preset)
  if not preset then
    local ok, picked = pcall(app.pickup, project.current())
    if not ok then app.message(message_of(picked), app.TITLES[kind]) return { kind = kind, finished = true } end
    if picked ~= nil then return picked or { kind = kind, finished = true } end
  end
  local run = { kind = kind }
  local ok, err = xpcall(start_fn, traceback, run, preset)
  if not ok then runner.abort(run, err) end
  return run
end

-- Entry point of "M2UGen - Ask about selection", "- Edit selection" and "- Generate".
function app.run(kind, preset)
  if not app.TITLES[kind] or kind == "result" or kind == "learn" or kind == "stems" then error("unknown M2UGen action kind " .. tostring(kind)) end
  return app.run_with(kind, start, preset)
end

-- ---------------------------------------------------------------------------------------------
-- "M2UGen - Learn from selected items": the items' source files -> a finetune job (`m2ugen learn`)

app.MAX_CLIPS = 64
app.MAX_STEPS = 20000

-- Returns {name, steps, replace} or nil when the user pressed Cancel.
function app.ask_learn(count)
  local last = reaper.GetExtState(settings.SECTION, "last_adapter_name")
  local captions = { "Adapter name (letters, digits, _ -)", "Steps (1-" .. app.MAX_STEPS .. ")",
                     "Replace an existing adapter (no/yes)" }
  local defaults = { last ~= "" and last or "mine", "200", "no" }
  local ok, answer = reaper.GetUserInputs(app.TITLES.learn .. " (" .. count .. " clip" .. (count == 1 and "" or "s") ..
    ")", #captions, table.concat(captions, ",") .. ",separator=\n,extrawidth=160", table.concat(defaults, "\n"))
  if not ok then return nil end
  local f = app.split_fields(answer, #captions)
  local name = settings.adapter_name(f[1])
  if not name then
    fail("Adapter name: expected 1 to 64 letters, digits, _ or -, got '" .. trim(f[1]) .. "'.")
  end
  local steps = trim(f[2])
  local n = steps:match("^%d+$") and math.tointeger(tonumber(steps)) or nil
  if not n or n < 1 or n > app.MAX_STEPS then
    fail("Steps: expected a whole number from 1 to " .. app.MAX_STEPS .. ", got '" .. steps .. "'.")
  end
  local replace = trim(f[3]):lower()
  if replace ~= "yes" and replace ~= "no" then fail("Replace: expected no or yes, got '" .. replace .. "'.") end
  reaper.SetExtState(settings.SECTION, "last_adapter_name", name, true)
  return { name = name, steps = n, replace = replace == "yes" }
end

local function start_learn(run)
  run.settings = settings.load()
  run.proj = project.current()
  if runner.read_active(runner.SLOTS.long) then
    fail("A Learn (fine-tune) job is still running in this REAPER session.\n" ..
      "Wait for it or run M2UGen - Cancel. Ask, Edit and Generate keep working meanwhile.")
  end
  local clips, skipped = project.selected_sources(run.proj)
  if #clips == 0 then
    fail("Select one or more audio items first: M2UGen learns from the part of their source files they play" ..
      (skipped > 0 and (" (" .. skipped .. " selected item(s) are MIDI or have no file)") or "") ..
      ".\nAn item's notes, when it has any, are its caption.")
  end
  if #clips > app.MAX_CLIPS then fail("Select at most " .. app.MAX_CLIPS .. " items (" .. #clips .. " are selected).") end
  local inputs = app.ask_learn(#clips)
  if not inputs then run.finished = true return end
  local cli, why = settings.resolve_cli(run.settings)
  if not cli then fail(why) end
  run.cli = cli
  run.name = project.stamp()
  local req = { adapter_name = inputs.name, steps = inputs.steps, files = clips }
  if inputs.replace then req.replace = true end
  run.request = req
  runner.launch(run, "learn", req, {})
  runner.begin_loop(run)
end

-- Entry point of "M2UGen - Learn from selected items".
function app.learn()
  local run = { kind = "learn" }
  local ok, err = xpcall(start_learn, traceback, run)
  if not ok then runner.abort(run, err) end
  return run
end

-- ---------------------------------------------------------------------------------------------
-- "M2UGen - Cancel"

function app.cancel()
  local jobs = runner.active_jobs()
  if #jobs == 0 then
    app.message("No M2UGen job is running in this REAPER session.", "M2UGen - Cancel")
    return false
  end
  local a = jobs[1]
  if #jobs > 1 then
    -- a Learn beside an interactive job: which one?
    local labels = {}
    for i, j in ipairs(jobs) do
      labels[i] = "Cancel " .. tostring(j.kind) .. (j.job and (" job " .. j.job) or " (starting)")
    end
    gfx.init("M2UGen - Cancel", 0, 0)
    local choice = gfx.showmenu(table.concat(labels, "|"))
    gfx.quit()
    a = jobs[choice]
    if not a then return false end
  end
  reaper.SetExtState(settings.SECTION, "cancel", a.name, false)
  if a.job and type(a.cli) == "table" then
    local ok, err = pcall(job.cancel, a.cli, a.job, a.server, project.temp_dir("jobs"))
    if not ok then
      app.message("Could not send the cancel request: " .. tostring(err), "M2UGen - Cancel")
      return false
    end
  end
  return true
end

-- ---------------------------------------------------------------------------------------------
-- "M2UGen - Jobs": the project's job history (and, optionally, the server's), re-insert

local function menu_label(rec)
  if rec.server_list then return "Jobs on the server (m2ugen jobs)..." end
  local p = tostring(rec.prompt or ""):gsub("[%c|<>!#]+", " ")
  if #p > 40 then p = p:sub(1, 37):gsub("[\128-\191]*$", ""):gsub("[\192-\255]$", "") .. "..." end
  local have = ""
  if rec.kind == "ask" then have = rec.text and "answer" or ""
  elseif type(rec.files) == "table" and rec.files[1] and settings.file_exists(rec.files[1].path) then
    have = #rec.files .. " file(s) kept"
  else have = "fetch from server" end
  return string.format("%s %s: %s [%s, %s]", tostring(rec.kind), tostring(rec.job or rec.key), p,
    tostring(rec.state or "?"), have)
end

-- Asks which record (gfx.showmenu); returns it or nil.
function app.pick_job(records)
  local labels = {}
  for i, rec in ipairs(records) do labels[i] = menu_label(rec) end
  gfx.init("M2UGen - Jobs", 0, 0)
  local choice = gfx.showmenu(table.concat(labels, "|"))
  gfx.quit()
  return records[choice]
end

-- Inserts the kept files of a record again (a new track at the record's position), or starts
-- `m2ugen result JOB --wait --out FILE` and inserts what it fetches.
function app.reinsert(proj, rec)
  local run = { kind = "result", proj = proj, fetch = rec, settings = settings.load(), name = project.stamp(),
                result_dir = project.result_dir(proj), proj_file = project.file_of(proj) }
  run.position = tonumber(rec.position) or reaper.GetCursorPositionEx(proj)
  if reaper.CountSelectedTracks(proj) > 0 then run.track = reaper.GetSelectedTrack(proj, 0) end
  local ok, err = xpcall(function()
    if rec.kind == "ask" and rec.text then
      runner.show_text(app.TITLES.ask, "Q: " .. tostring(rec.prompt) .. "\n\nA: " .. tostring(rec.text or "(no answer kept)") ..
        (results.describe_analysis(rec.analysis, "\nMeasured") or ""))
      run.finished = true
      return
    end
    if rec.kind == "stems" and import("stems").reinsert(run, rec) then
      run.finished = true
      return
    end
    local takes = {}
    if type(rec.files) == "table" and rec.kind ~= "stems" then
      for i, f in ipairs(rec.files) do
        if type(f) == "table" and type(f.path) == "string" and settings.file_exists(f.path) then
          takes[#takes + 1] = { path = f.path, seed = math.tointeger(f.seed) }
        elseif i == 1 then break end
      end
    end
    if #takes > 0 and rec.kind == "transcribe" then
      run.status = { job = rec.job }
      run.out = nil
      results.finish_midi(run, { job = rec.job, midi_path = takes[1].path })
      run.finished = true
      return
    end
    if #takes > 0 then
      run.result_info = { job = rec.job, kind = rec.kind, prompt = tostring(rec.prompt or ""), takes = takes,
                          notes = "M2UGen " .. tostring(rec.kind) .. " job " .. tostring(rec.job) .. " (re-inserted)\nPrompt: " ..
                            tostring(rec.prompt or "") }
      run.status = { job = rec.job }
      results.insert_result(run)
      run.finished = true
      return
    end
    if not rec.job then fail("This entry has no job id and no kept file: nothing to fetch.") end
    if rec.kind == "ask" then -- the answer is fetched and kept on the answers track at the question's place
      run.request = { prompt = tostring(rec.prompt or "") }
      local at = tonumber(rec.position) or run.position
      run.sel = { start = at, ["end"] = at + (tonumber(rec.length) or 0) }
    end
    local cli, why = settings.resolve_cli(run.settings)
    if not cli then fail(why) end
    run.cli = cli
    run.out = settings.join(project.temp_dir("out"), run.name .. (rec.kind == "transcribe" and ".mid" or ".wav"))
    run.job = job.start_result({ cli = cli, job_id = rec.job, out = run.out, dir = project.temp_dir("jobs"),
                                 name = run.name, server = run.settings.server })
    runner.begin_loop(run)
  end, traceback)
  if not ok then runner.abort(run, err) end
  return run
end

app.SERVER_JOBS_LIMIT = 20
app.SERVER_LIST_TIMEOUT = 15 -- seconds for `m2ugen jobs` to answer

-- The server's newest jobs as history-like records.
local function server_records(list)
  local out = {}
  for _, r in ipairs(list) do
    if r.kind == "ask" or r.state == "done" then
      out[#out + 1] = { job = r.job, kind = r.kind, state = r.state, text = r.text,
                        prompt = type(r.params) == "table" and r.params.prompt or "", seed = math.tointeger(r.seed) }
    end
  end
  return out
end

-- `m2ugen jobs` runs in the background; a small window says so while the defer loop waits for its
-- list (REAPER keeps drawing), then the chosen job is fetched and inserted.
function app.server_list(proj)
  local s = settings.load()
  local cli, why = settings.resolve_cli(s)
  if not cli then fail(why) end
  local h = job.start_list(cli, s.server, project.temp_dir("jobs"), app.SERVER_JOBS_LIMIT)
  local started = reaper.time_precise()
  local window = ui.progress_window(app.TITLES.result)
  local function poll()
    local ok, err = xpcall(function()
      local list = job.read_list(h)
      if list then
        window:close()
        local records = server_records(list)
        if #records == 0 then fail("The server has no finished jobs.") end
        local rec = app.pick_job(records)
        if rec then app.reinsert(proj, rec) end
        return
      end
      if reaper.time_precise() - started > app.SERVER_LIST_TIMEOUT then
        job.cleanup_list(h)
        fail("`m2ugen jobs` did not answer within " .. app.SERVER_LIST_TIMEOUT .. " s: is the server running?")
      end
      local act = window:frame({ status_line = "Reading the server's job list...", fraction = 0, text = "" })
      if act == "cancel" or act == "closed" then
        window:close()
        return
      end
      reaper.defer(poll)
    end, traceback)
    if not ok then
      window:close()
      app.message(message_of(err), app.TITLES.result)
    end
  end
  poll()
end

-- The project's history, then one entry for the server's list; the chosen job is shown again,
-- re-inserted from its kept files, or fetched (`m2ugen result JOB --wait --out FILE`) and inserted.
function app.jobs()
  local proj = project.current()
  local ok, err = xpcall(function()
    local records = project.history(proj, json.try_decode)
    local entries = {}
    for i, r in ipairs(records) do entries[i] = r end
    entries[#entries + 1] = { server_list = true }
    local rec = app.pick_job(entries)
    if rec and rec.server_list then return app.server_list(proj) end
    if rec then app.reinsert(proj, rec) end
  end, traceback)
  if not ok then app.message(message_of(err), app.TITLES.result) end
end

-- ---------------------------------------------------------------------------------------------
-- "M2UGen - Settings"

function app.settings_dialog()
  local s = settings.load()
  local captions = { "CLI path (empty = from server)", "Server (empty = default)", "Default duration (s)",
                     "Conditioning (text/embedding)", "Seed (empty = random)", "Takes per request (1-8)",
                     "Edit result (take/mute/track)", "Preview first (on/off)", "Answer markers (off/marker/region)",
                     "Fit tempo (off/on)", "Edit mode (text/continue/melody)", "Loop (off/on)",
                     "Vocoder (encodec/mbd)", "Adapter (empty = base model)",
                     "Transcribe: subtract room reverb (on/off)" }
  local keys = settings.KEYS
  local values = {}
  for n, k in ipairs(keys) do values[n] = s[k] end
  local ok, answer = reaper.GetUserInputs("M2UGen - Settings", #captions,
    table.concat(captions, ",") .. ",separator=\n,extrawidth=320", table.concat(values, "\n"))
  if not ok then return false end
  local fields_ok, f = pcall(app.split_fields, answer, #captions)
  if not fields_ok then
    app.message(message_of(f), "M2UGen - Settings")
    return false
  end
  local raw = {}
  for n, k in ipairs(keys) do raw[k] = f[n] end
  local clean, why = settings.validate(raw)
  if not clean then
    app.message(why .. "\n\nNothing was saved.", "M2UGen - Settings")
    return false
  end
  settings.save(clean)
  return true
end

return app