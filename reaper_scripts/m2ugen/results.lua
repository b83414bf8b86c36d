-- @noindex
-- A finished job: the result files copied next to the project (and recorded in its job history
-- FIRST), then inserted into the project the job started in (one undo point) or previewed; a text
-- answer kept on the "M2UGen answers" track; a transcription on a new MIDI track; a learnt adapter.
-- A finished result is never deleted: when a later step fails the message says where it is, and
-- "M2UGen - Jobs" re-inserts it.

local import = ...
local json = import("json")
local settings = import("settings")
local project = import("project")
local place = import("place")
local job = import("job")
local common = import("common")
local runner = import("runner")
local fail, message_of, user_error = common.fail, common.message_of, common.user_error

local results = {}

-- ---------------------------------------------------------------------------------------------
-- results

-- "92 BPM, F# minor, -14.0 LUFS, 8.0 s" and the details, from an analysis record (any value may
-- be missing). Returns nil when there is no analysis.
function results.describe_analysis(a, label)
  if type(a) ~= "table" then return nil end
  local function num(v, fmt) return type(v) == "number" and string.format(fmt, v) or nil end
  local parts = {}
  local function add(v) if v then parts[#parts + 1] = v end end
  local bpm = num(a.bpm, "%.1f BPM")
  if bpm and type(a.bpm_alternative) == "number" then bpm = bpm .. string.format(" (or %.1f)", a.bpm_alternative) end
  add(bpm)
  if type(a.meter) == "string" or type(a.meter) == "number" then add("meter " .. tostring(a.meter)) end
  if type(a.key_name) == "string" then
    add(a.key_name .. (type(a.key_confidence) == "number" and string.format(" (confidence %.2f)", a.key_confidence) or ""))
  end
  add(num(a.lufs, "%.1f LUFS"))
  add(num(a.true_peak_dbtp, "true peak %.1f dBTP"))
  add(num(a.peak_dbfs, "peak %.1f dBFS"))
  add(num(a.duration_s, "%.2f s"))
  add(num(a.sample_rate, "%d Hz"))
  add(num(a.channels, "%d ch"))
  local summary = type(a.summary) == "string" and a.summary ~= "" and a.summary or nil
  if not summary and #parts == 0 then return nil end
  local text = (label or "Measured") .. ": " .. (summary or table.concat(parts, ", "))
  if summary and #parts > 0 then text = text .. "\n  (" .. table.concat(parts, ", ") .. ")" end
  return text
end

-- The result files of a done status: take 1 (our `out`, else the server's audio_path), then the
-- other takes. Returns a list of {from, seed}.
local function produced_takes(run, st)
  local first = run.out
  if not (first and settings.file_exists(first)) then first = st.audio_path end
  local list = { { from = first, seed = math.tointeger(st.seed) } }
  if type(st.takes) == "table" then
    for i = 2, #st.takes do
      local t = st.takes[i]
      if type(t) == "table" then list[#list + 1] = { from = t.audio_path, seed = math.tointeger(t.seed) } end
    end
    if type(st.takes[1]) == "table" and list[1].seed == nil then list[1].seed = math.tointeger(st.takes[1].seed) end
  end
  return list
end

local function read_json_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local v = json.try_decode(f:read("a"))
  f:close()
  return type(v) == "table" and v or nil
end

results.COPY_PER_TICK = 4 << 20 -- bytes copied per defer tick: REAPER keeps drawing during a long copy

-- Copies every take next to the project (<project>/M2UGen/<name>[-takeN].wav, or <name><t.suffix>.wav,
-- plus the server's sidecar), a few MiB per defer tick, then calls done(takes) with .path (the kept file) set. A file
-- that cannot be copied (full disk...) stays where it is and is used from there; nothing is deleted
-- before its complete copy exists (project.copier). Errors end the run (runner.abort; the job is
-- completed, so no result file is removed).
function results.keep_files(run, takes, done)
  local dir = run.result_dir
  local out_dir = project.temp_dir("out")
  out_dir = out_dir:sub(-1):match("[/\\]") and out_dir or (out_dir .. settings.path_sep())
  for i, t in ipairs(takes) do
    if not t.from or not settings.file_exists(t.from) then
      fail("The M2UGen job finished but its audio file is missing: " .. tostring(t.from) ..
        (i > 1 and (" (take " .. i .. ")") or "") .. runner.fetch_hint(run))
    end
  end
  local i, copier = 1, nil
  local function copied(t, suffix)
    t.path = t.to
    -- files in our temp folder (take 1 is our `out`; a local server may put the others next to it)
    -- are removed once copied; a server's own files are left to the server
    local ours = t.from == run.out or t.from:sub(1, #out_dir) == out_dir
    local sidecar = t.from:gsub("%.[wW][aA][vV]$", "") .. ".json"
    if settings.file_exists(sidecar) then
      local meta = read_json_file(sidecar)
      if meta and t.seed == nil then t.seed = math.tointeger(meta.seed) end
      pcall(project.copy_file, sidecar, settings.join(dir, run.name .. suffix .. ".json"))
      if ours then os.remove(sidecar) end
    end
    if ours then os.remove(t.from) end
  end
  local function failed(t)
    t.path = t.from -- kept where the CLI put it
    run.copy_failed = (run.copy_failed or "") .. "\n" .. t.from
  end
  local resume
  local function step()
    local budget = results.COPY_PER_TICK
    while i <= #takes do
      local t = takes[i]
      local suffix = t.suffix or (i == 1 and "" or ("-take" .. i))
      if not copier then
        t.to = dir and settings.join(dir, run.name .. suffix .. ".wav") or nil
        local ok, c = false, nil
        if t.to then ok, c = pcall(project.copier, t.from, t.to) end
        if ok then copier = c else failed(t) i = i + 1 end
      end
      if copier then
        local ok, finished = pcall(copier.step, budget)
        if not ok then
          copier = nil
          failed(t)
          i = i + 1
        elseif finished then
          copier = nil
          copied(t, suffix)
          i = i + 1
        else
          return reaper.defer(resume)
        end
      end
    end
    done(takes)
  end
  resume = function()
    local ran, err = xpcall(step, common.traceback)
    if not ran then runner.abort(run, err) end
  end
  step()
end

local function provenance(run, st, takes)
  local r = run.result_info
  local lines = {
    "M2UGen " .. r.kind .. (st.job and (" job " .. st.job) or "") .. (run.fetch and " (fetched again)" or ""),
    "Prompt: " .. r.prompt,
  }
  local seed = takes[1].seed or (run.request and run.request.seed)
  if seed then lines[#lines + 1] = "Seed: " .. seed end
  if #takes > 1 then
    for i, t in ipairs(takes) do
      lines[#lines + 1] = "Take " .. i .. (t.seed and (": seed " .. t.seed) or "") .. ": " .. t.path
    end
  end
  if st.duration then lines[#lines + 1] = string.format("Duration: %.3f s", st.duration) end
  if st.sample_rate then lines[#lines + 1] = "Sample rate: " .. math.floor(st.sample_rate) end
  if run.sel then lines[#lines + 1] = "Source: " .. project.describe_selection(run.sel) end
  lines[#lines + 1] = results.describe_analysis(st.analysis, "Source measured")
  lines[#lines + 1] = results.describe_analysis(st.result_analysis, "Result measured")
  return table.concat(lines, "\n")
end

results.project_state = runner.project_state

function results.tab_note(run)
  if results.project_state(run) == "other" then
    return "\n\nThe result went into the project where the job started (" .. project.name(run.proj) ..
      "), not the tab that is open now."
  end
  return ""
end

function results.kept_list(takes)
  local out = {}
  for i, t in ipairs(takes) do out[i] = "  " .. t.path end
  return table.concat(out, "\n")
end

-- The items to mute / the item to take over for an edit (place.insert_audio's mode).
local function edit_target(run)
  local sel = run.sel
  if sel.source == "items" then
    -- item pointers kept from the job's start: only those still in the project (ValidatePtr2)
    local alive = {}
    for _, item in ipairs(sel.items) do
      if reaper.ValidatePtr2(run.proj, item, "MediaItem*") then alive[#alive + 1] = item end
    end
    return alive, alive
  end
  if sel.source == "tracks" then return {}, place.items_in_range(run.proj, sel.tracks, sel.start, sel["end"]) end
  return {}, place.items_in_range(run.proj, nil, sel.start, sel["end"])
end

-- Inserts the kept takes into the job's project (one undo point). Raises a user error that says
-- where the files are when it cannot.
function results.insert_result(run)
  local r = run.result_info
  local gone = runner.project_gone(run)
  if gone then
    fail("The project this job started in " .. gone .. ", so the result was not inserted.\nIt is kept at:\n" ..
      results.kept_list(r.takes) .. "\nOpen that project and re-insert it with M2UGen - Jobs.")
  end
  local opts = { takes = {}, position = run.position, name = place.track_name(r.kind, r.prompt), notes = r.notes,
                 track = run.track, mode = "track", active = r.active_take }
  for i, t in ipairs(r.takes) do
    local rec = { job = r.job, kind = r.kind, prompt = r.prompt, seed = t.seed, take = i, path = t.path }
    opts.takes[i] = { path = t.path, ext = json.encode(rec),
                      name = (r.job or run.name) .. (#r.takes > 1 and (" take " .. i) or "") ..
                        (t.seed and (" seed " .. t.seed) or "") }
  end
  if r.kind == "edit" and run.sel and not run.fetch then
    opts.mode = run.settings.edit_result
    opts.source_items, opts.mute_items = edit_target(run)
    if run.sel.source ~= "items" then opts.mute_range = { run.sel.start, run.sel["end"] } end
  end
  local ok, inserted = pcall(place.insert_audio, run.proj, opts)
  if not ok then
    fail("Could not insert the result into the project: " .. message_of(inserted) .. "\nThe result is kept at:\n" ..
      results.kept_list(r.takes) .. "\nRe-insert it with M2UGen - Jobs.")
  end
  return inserted
end

local function finish_text(run, st)
  local answer = st.text or ""
  if answer == "" then fail("The M2UGen server returned an empty answer.") end
  local lines = { "Q: " .. run.request.prompt, "", "A: " .. answer }
  local measured = results.describe_analysis(st.analysis, "Measured")
  if measured then
    lines[#lines + 1] = ""
    lines[#lines + 1] = measured
  end
  local notes = table.concat(lines, "\n")
  local rec = runner.record_of(run, { state = "done", text = answer, analysis = st.analysis })
  local kept = runner.remember(run, rec) -- the answer is in the project's history before anything else
  local label = answer:gsub("[%c]+", " ")
  if #label > 60 then label = label:sub(1, 57):gsub("[\128-\191]*$", ""):gsub("[\192-\255]$", "") .. "..." end
  local extra = ""
  local gone = runner.project_gone(run)
  if gone then
    extra = "\n\n(The project this question was asked in " .. gone .. ": the answer is shown here only.)"
  else
    local ok, err = pcall(place.insert_note, run.proj, {
      position = run.sel.start, length = run.sel["end"] - run.sel.start, notes = notes, ext = json.encode(rec),
      label = "M2UGen: " .. label, marker = run.settings.answer_markers,
      name = place.track_name("ask", run.request.prompt) })
    if not ok then
      extra = "\n\n(The answer could not be added to the \"" .. place.ANSWERS_TRACK .. "\" track: " ..
        message_of(err) .. (kept and ". It is kept in the project's M2UGen job history (M2UGen - Jobs).)" or ".)")
    else
      extra = results.tab_note(run)
    end
  end
  runner.remove_temp(run)
  runner.clear_active(run)
  common.action_options(common.OPTIONS_IDLE)
  runner.show_text(common.TITLES.ask, notes .. extra)
end

-- A finished transcription: the .mid (and its sidecar, whose notes are placed) copied next to the
-- project, recorded in its history, then inserted on a new MIDI track at the selection's start.
function results.finish_midi(run, st)
  local from = run.out and settings.file_exists(run.out) and run.out or st.midi_path
  if not from or not settings.file_exists(from) then
    fail("The M2UGen transcription finished but its MIDI file is missing: " .. tostring(from) .. runner.fetch_hint(run))
  end
  local sidecar_from = from:gsub("%.[mM][iI][dD]$", "") .. ".json"
  local meta = settings.file_exists(sidecar_from) and read_json_file(sidecar_from) or nil
  local kept = settings.join(run.result_dir, run.name .. ".mid")
  if run.fetch and not run.out then
    kept = from -- re-inserting a file kept with the project: used where it is
  elseif pcall(project.copy_file, from, kept) then
    if meta then pcall(project.copy_file, sidecar_from, settings.join(run.result_dir, run.name .. ".json")) end
    if from == run.out then
      os.remove(from)
      os.remove(sidecar_from)
    end
  else
    kept = from
  end
  local id = st.job or run.name
  local rec = runner.record_of(run, { state = "done", files = { { path = kept } } })
  if run.fetch then rec.kind, rec.position, rec.stamp = "transcribe", run.fetch.position, run.fetch.stamp or run.name end
  runner.remember(run, rec)
  runner.remove_temp(run)
  runner.clear_active(run)
  common.action_options(common.OPTIONS_IDLE)
  local gone = runner.project_gone(run)
  if gone then
    fail("The project this job started in " .. gone .. ", so the transcription was not inserted.\nIt is kept at:\n  " ..
      kept .. "\nOpen that project and re-insert it with M2UGen - Jobs.")
  end
  local notes = meta and type(meta.notes) == "table" and meta.notes or nil
  local lines = { "M2UGen transcribe job " .. id .. (run.fetch and " (fetched again)" or ""), "MIDI file: " .. kept }
  if meta and meta.bpm then lines[#lines + 1] = string.format("Tempo: %g bpm (%s)", meta.bpm, tostring(meta.bpm_source)) end
  if meta and type(meta.chords) == "table" then lines[#lines + 1] = "Chords: " .. #meta.chords end
  if run.sel then lines[#lines + 1] = "Source: " .. project.describe_selection(run.sel) end
  local ok, err = pcall(place.insert_midi, run.proj, {
    path = kept, notes = notes, position = run.position, track = run.track,
    length = run.sel and (run.sel["end"] - run.sel.start) or nil,
    name = place.track_name("transcribe", "job " .. id), take_name = id,
    item_notes = table.concat(lines, "\n"), ext = json.encode(rec) })
  if not ok then
    fail("Could not insert the transcription into the project: " .. message_of(err) .. "\nIt is kept at:\n  " ..
      kept .. "\nRe-insert it with M2UGen - Jobs.")
  end
  local note = results.tab_note(run)
  if note ~= "" then common.message(note:sub(3), common.TITLES[run.kind]) end
end


function results.finish(run, st)
  run.finished = true
  if run.window then run.window:close() end
  local msg = job.failure_message(st, run.settings.server ~= "" and run.settings.server or nil)
  if msg and run.cancel_wanted then msg = job.failure_message({ exit_code = job.EXIT.cancelled }) end
  if msg then
    runner.abort(run, user_error(msg))
    return
  end
  run.completed = true
  if (run.fetch and run.fetch.kind or run.kind) == "ask" then return finish_text(run, st) end
  if run.kind == "learn" then return results.finish_learn(run, st) end
  if (run.fetch and run.fetch.kind or run.kind) == "transcribe" then return results.finish_midi(run, st) end
  if (run.fetch and run.fetch.kind or run.kind) == "stems" then return import("stems").finish(run, st) end
  results.keep_files(run, produced_takes(run, st), function(takes) results.finish_audio(run, st, takes) end)
end

-- A finished audio job whose files are kept: recorded in the history, then previewed or inserted.
function results.finish_audio(run, st, takes)
  local kind = run.fetch and run.fetch.kind or run.kind
  local prompt = run.request and run.request.prompt or (run.fetch and run.fetch.prompt) or ""
  run.result_info = { job = st.job, kind = kind, prompt = prompt, takes = takes }
  local files = {}
  for i, t in ipairs(takes) do files[i] = { path = t.path, seed = t.seed } end
  local rec = runner.record_of(run, { state = "done", files = files, seed = takes[1].seed or (run.request and run.request.seed),
                               analysis = st.analysis, result_analysis = st.result_analysis })
  if run.fetch then
    rec.prompt, rec.kind, rec.position = run.fetch.prompt, run.fetch.kind, run.fetch.position
    rec.stamp = run.fetch.stamp or run.name
  end
  runner.remember(run, rec) -- recorded before the insert: a failed insert loses nothing
  run.result_info.notes = provenance(run, st, takes)
  runner.remove_temp(run)
  runner.clear_active(run)
  if run.copy_failed then
    common.message("The result could not be copied next to the project; it is used from where the CLI wrote it:" ..
      run.copy_failed, common.TITLES[run.kind])
  end
  if run.settings.preview == "on" and not run.fetch then
    import("preview").start(run, st)
    return
  end
  results.insert_result(run)
  common.action_options(common.OPTIONS_IDLE)
  local note = results.tab_note(run)
  if note ~= "" then common.message(note:sub(3), common.TITLES[run.kind]) end
end
-- The adapter is on the server: say so, and offer to use it for the next requests (Settings: Adapter).
function results.finish_learn(run, st)
  runner.remove_temp(run)
  runner.clear_active(run)
  common.action_options(common.OPTIONS_IDLE)
  local name = run.request.adapter_name
  local text = (st.text and st.text ~= "") and st.text or ("adapter '" .. name .. "' learnt")
  local answer = reaper.ShowMessageBox(text .. "\n\nUse adapter '" .. name .. "' for the next Ask / Edit / " ..
    "Generate? (M2UGen - Settings: Adapter; empty = the base model)", common.TITLES.learn, 4)
  if answer == 6 then reaper.SetExtState(settings.SECTION, "adapter", name, true) end
end

return results
