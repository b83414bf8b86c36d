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
-- Any error: a message box, and nothing half-done (render settings restored in project.render,
-- nothing left behind by project.insert_*, temporary files removed). A finished result is never
-- deleted: when a later step fails the message says where it is, and "M2UGen - Jobs" re-inserts it.
--
-- The loop always ends: a final status, the CLI's exit (launcher exit file), a status file that
-- stopped changing (app.CLI_STALE_AFTER), the start timeout, or Cancel (app.CANCEL_GRACE).

local import = ...
local json = import("json")
local settings = import("settings")
local project = import("project")
local job = import("job")
local ui = import("ui")

local app = {}

app.TITLES = {
  ask = "M2UGen - Ask about selection",
  edit = "M2UGen - Edit selection",
  generate = "M2UGen - Generate",
  transcribe = "M2UGen - Transcribe selection",
  result = "M2UGen - Jobs",
  learn = "M2UGen - Learn from selected items",
}
app.POLL_INTERVAL = 0.25   -- seconds between status-file reads
app.START_TIMEOUT = 60     -- seconds for the CLI to write its status file and reach the server
app.CLI_STALE_AFTER = 120  -- a status file unchanged this long (no event, no exit) = the CLI is gone
app.CLI_HUNG_AFTER = 600   -- the same when the launcher says the process is still alive (it may just be
                           -- waiting in the queue: today's CLI writes the status only on events)
app.EXIT_GRACE = 1.0       -- after the launcher's exit file: time for the final status to be read
app.CANCEL_GRACE = 10      -- after Cancel: at most this long waiting for the CLI to confirm
app.STALE_AFTER = 10       -- an "active job" heartbeat older than this belongs to a dead script
app.IMAGE_EXT = { png = true, jpg = true, jpeg = true, bmp = true, webp = true, gif = true }
app.VIDEO_EXT = { mp4 = true, mov = true, mkv = true, avi = true, webm = true, m4v = true }

-- reaper.set_action_options flags (REAPER 7.03+): while a job runs a relaunch of the same action
-- is ignored (no "script is already running" dialog; the progress window is on screen) and the
-- action's toggle state is on; once the job is over a relaunch ends this instance (its answer or
-- preview window) and starts afresh, and the toggle is off.
app.OPTIONS_RUNNING = 2 | 4
app.OPTIONS_IDLE = 1 | 2 | 8

function app.action_options(flags)
  if reaper.set_action_options then reaper.set_action_options(flags) end
end

-- A user-facing error: raised with this table so the message box shows only the text.
local UserError = {}
UserError.__index = UserError
local function fail(msg) error(setmetatable({ msg = msg }, UserError), 0) end
local function message_of(err)
  if getmetatable(err) == UserError then return err.msg end
  return "M2UGen script error:\n" .. tostring(err)
end
local function user_error(msg) return setmetatable({ msg = msg }, UserError) end
app.fail = fail

local function traceback(e)
  if getmetatable(e) == UserError then return e end
  return debug.traceback(tostring(e), 2)
end

function app.message(text, title)
  reaper.ShowMessageBox(text, title or "M2UGen", 0)
end

-- SWS audition (CF_Preview): plays a file without touching the project. Absent without SWS; then
-- the preview is the result inserted into the project (audible), removed again on Discard.
local audition = nil
if reaper.APIExists("CF_CreatePreview") then
  audition = {}
  function audition.play(path)
    local src = reaper.PCM_Source_CreateFromFile(path)
    if not src then return nil end
    local preview = reaper.CF_CreatePreview(src)
    if not preview then
      reaper.PCM_Source_Destroy(src)
      return nil
    end
    reaper.CF_Preview_Play(preview)
    return { preview = preview, src = src }
  end
  function audition.stop(a)
    reaper.CF_Preview_Stop(a.preview) -- also releases the preview
    reaper.PCM_Source_Destroy(a.src)
  end
end
function app.can_audition() return audition ~= nil end

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

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

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
    captions = { "Edit instruction", "Seed (empty = random)" }
    defaults = { last, s.seed }
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

-- ---------------------------------------------------------------------------------------------
-- the active job, shared with "M2UGen - Cancel" through (non-persistent) ExtState

function app.read_active()
  local raw = reaper.GetExtState(settings.SECTION, "active")
  if raw == "" then return nil end
  local a = json.try_decode(raw)
  if type(a) ~= "table" then return nil end
  if type(a.heartbeat) ~= "number" or reaper.time_precise() - a.heartbeat > app.STALE_AFTER then
    return nil, a
  end
  return a
end

local function write_active(run)
  local a = {
    name = run.name, kind = run.kind, cli = run.cli, server = run.settings.server,
    job = run.status and run.status.job or nil, heartbeat = reaper.time_precise(),
  }
  reaper.SetExtState(settings.SECTION, "active", json.encode(a), false)
end

local function clear_active(run)
  local a = app.read_active()
  if not a or a.name == run.name then
    reaper.DeleteExtState(settings.SECTION, "active", false)
    reaper.DeleteExtState(settings.SECTION, "cancel", false)
  end
end

-- ---------------------------------------------------------------------------------------------
-- running a job

local function remove_temp(run)
  if run.job then job.cleanup(run.job) end
  if run.input then os.remove(run.input) end
end

-- Ends the run with a message box. Removes what this run created that is not a result: once a job
-- has completed (run.completed), its files are never removed, whatever failed afterwards.
local function abort(run, err)
  run.finished = true
  if run.window then run.window:close() end
  remove_temp(run)
  if run.out and not run.completed then
    os.remove(run.out)
    os.remove((run.out:gsub("%.%w+$", "")) .. ".json")
  end
  clear_active(run)
  app.action_options(app.OPTIONS_IDLE)
  app.message(message_of(err), app.TITLES[run.kind])
end

-- Cancel: with a job id, `m2ugen cancel JOB --no-wait` (the running CLI reports 'cancelled').
-- Before the id is known the request file is withdrawn (a CLI that has not read it yet exits with
-- a usage error); a CLI that submits anyway reports the id, which is then cancelled. Called on
-- every poll while a cancel is wanted; after app.CANCEL_GRACE the loop ends regardless (tick).
local function request_cancel(run)
  if not run.cancel_wanted then
    run.cancel_wanted = true
    run.cancel_at = reaper.time_precise()
    if run.job.request_path then os.remove(run.job.request_path) end
  end
  local id = run.status and run.status.job
  if id and not run.cancel_sent then
    run.cancel_sent = true
    job.cancel(run.cli, id, run.settings.server, project.temp_dir("jobs"))
  end
end

-- The job record kept in the project's history (ProjExtState): enough to show, fetch and re-insert.
local function record_of(run, extra)
  local r = { job = run.status and run.status.job or nil, kind = run.fetch and run.fetch.kind or run.kind,
              prompt = run.request and run.request.prompt or (run.fetch and run.fetch.prompt) or "",
              seed = run.request and run.request.seed or nil, position = run.position, stamp = run.name,
              length = run.sel and (run.sel["end"] - run.sel.start) or nil,
              source = run.sel and run.sel.source or nil }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

local function remember(run, rec)
  if not project.is_open(run.proj) then return false end
  project.remember(run.proj, rec.job or run.name, json.encode(rec))
  return true
end

-- Where a lost job's result can be fetched to, and the command that does it.
local function fetch_hint(run)
  local id = run.status and run.status.job
  if not id then return "" end
  local kind = run.fetch and run.fetch.kind or run.kind
  local out = settings.join(run.result_dir, run.name .. (kind == "transcribe" and ".mid" or ".wav"))
  return "\n\nThe job " .. id .. " may still finish on the server. Fetch its result with M2UGen - Jobs, or:\n" ..
    job.fetch_command(run.cli, id, out, run.settings.server)
end

-- The CLI is gone (or hung) before a final status: stop it, keep the job in the history, tell how
-- to get the result.
local function cli_lost(run, why)
  job.withdraw(run.job, run.status, project.temp_dir("jobs"))
  if run.status and run.status.job then remember(run, record_of(run, { state = "lost" })) end
  fail("The M2UGen CLI " .. why .. "." .. fetch_hint(run))
end

local function view_of(run)
  local st = run.status
  return { status_line = ui.status_line(st) .. (run.cancel_wanted and "  (cancelling...)" or ""),
           fraction = st and st.fraction or 0, text = st and st.text or "" }
end

local finish -- defined below

local function poll(run, now)
  local st, text = job.read_status(run.job)
  if st then
    if text ~= run.last_text then
      run.last_text, run.last_change = text, now
    end
    run.status = st
    if st.job and not run.remembered_running and run.kind ~= "result" and run.kind ~= "learn" then
      run.remembered_running = true -- in the history from the start: nothing is lost if REAPER dies
      remember(run, record_of(run, { state = "running" }))
    end
    if st.exit_code ~= nil then
      finish(run, st)
      return "done"
    end
  end
  local code = job.read_exit(run.job)
  if code ~= nil then
    run.exit_seen = run.exit_seen or now
    if now - run.exit_seen >= app.EXIT_GRACE then
      local last = job.read_status(run.job)
      if last and last.exit_code ~= nil then
        finish(run, last)
        return "done"
      end
      if run.cancel_wanted then return "cancel_unconfirmed" end
      cli_lost(run, "ended (exit status " .. code .. ") without reporting a result")
    end
  end
  if run.cancel_wanted and now - run.cancel_at > app.CANCEL_GRACE then return "cancel_unconfirmed" end
  if not st then
    if now - run.started > app.START_TIMEOUT then
      local killed = job.withdraw(run.job, nil, project.temp_dir("jobs"))
      fail("The M2UGen CLI did not start: no status file after " .. app.START_TIMEOUT .. " s" ..
        (killed and " (it was stopped)" or " (its request was withdrawn, so it cannot submit any more)") ..
        ".\nCommand:\n" .. table.concat(run.job.argv, " "))
    end
  elseif not st.job and now - run.started > app.START_TIMEOUT then
    local killed = job.withdraw(run.job, st, project.temp_dir("jobs"))
    fail("The M2UGen CLI has not reached the server after " .. app.START_TIMEOUT .. " s" ..
      (killed and "; it was stopped" or "") .. " (status file " .. run.job.status_path .. ").")
  else
    local alive = code == nil and job.read_pid(run.job) ~= nil and run.job.pid_file ~= nil
    if now - run.last_change > (alive and app.CLI_HUNG_AFTER or app.CLI_STALE_AFTER) then
      cli_lost(run, string.format("has not updated its status file for %d s (it was closed, crashed or hangs)",
        math.floor(now - run.last_change)))
    end
  end
  if reaper.GetExtState(settings.SECTION, "cancel") == run.name or run.cancel_wanted then request_cancel(run) end
  write_active(run)
end

local function tick(run)
  if run.finished then return end
  local now = reaper.time_precise()
  if now - run.last_poll >= app.POLL_INTERVAL then
    run.last_poll = now
    local r = poll(run, now)
    if r == "done" then return end
    if r == "cancel_unconfirmed" then
      job.withdraw(run.job, run.status, project.temp_dir("jobs"))
      fail("The M2UGen job was cancelled. Nothing was added to the project.\n(The CLI did not confirm within " ..
        app.CANCEL_GRACE .. " s; it was stopped.)")
    end
  end
  if run.window and run.window:frame(view_of(run)) == "cancel" then request_cancel(run) end
  reaper.defer(function() app.step(run) end)
end

-- One defer step; every error ends the run cleanly.
function app.step(run)
  local ok, err = xpcall(tick, traceback, run)
  if not ok and not run.aborted then
    run.aborted = true
    abort(run, err)
  end
end

function app.show_text(title, text)
  local w = ui.text_window(title, text)
  local function loop()
    if w:frame() == "open" then reaper.defer(loop) end
  end
  loop()
end

-- ---------------------------------------------------------------------------------------------
-- results

-- "92 BPM, F# minor, -14.0 LUFS, 8.0 s" and the details, from an analysis record (any value may
-- be missing). Returns nil when there is no analysis.
function app.describe_analysis(a, label)
  if type(a) ~= "table" then return nil end
  local function num(v, fmt) return type(v) == "number" and string.format(fmt, v) or nil end
  local parts = {}
  local function add(v) if v then parts[#parts + 1] = v end end
  add(num(a.bpm, "%.1f BPM"))
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

-- Copies every take next to the project (<project>/M2UGen/<name>[-takeN].wav, plus the server's
-- sidecar). A file that cannot be copied stays where it is and is used from there; nothing is
-- deleted before its copy exists. Returns the list with .path (the kept file) set.
local function keep_files(run, takes)
  local dir = run.result_dir
  local dir_ok = dir ~= nil
  local out_dir = project.temp_dir("out")
  out_dir = out_dir:sub(-1):match("[/\\]") and out_dir or (out_dir .. settings.path_sep())
  for i, t in ipairs(takes) do
    if not t.from or not settings.file_exists(t.from) then
      fail("The M2UGen job finished but its audio file is missing: " .. tostring(t.from) ..
        (i > 1 and (" (take " .. i .. ")") or "") .. fetch_hint(run))
    end
    local suffix = i == 1 and "" or ("-take" .. i)
    local to = dir_ok and settings.join(dir, run.name .. suffix .. ".wav") or nil
    local copied = to and pcall(project.copy_file, t.from, to)
    if copied then
      t.path = to
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
    else
      t.path = t.from -- kept where the CLI put it
      run.copy_failed = (run.copy_failed or "") .. "\n" .. t.from
    end
  end
  return takes
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
  lines[#lines + 1] = app.describe_analysis(st.analysis, "Source measured")
  lines[#lines + 1] = app.describe_analysis(st.result_analysis, "Result measured")
  return table.concat(lines, "\n")
end

-- Where the job's project stands: "same" | "other" (the user switched tabs) | "closed".
local function project_state(run)
  if not project.is_open(run.proj) then return "closed" end
  if project.current() ~= run.proj then return "other" end
  return "same"
end

local function tab_note(run)
  if project_state(run) == "other" then
    return "\n\nThe result went into the project where the job started (" .. project.name(run.proj) ..
      "), not the tab that is open now."
  end
  return ""
end

local function kept_list(takes)
  local out = {}
  for i, t in ipairs(takes) do out[i] = "  " .. t.path end
  return table.concat(out, "\n")
end

-- The items to mute / the item to take over for an edit (project.insert_audio's mode).
local function edit_target(run)
  local sel = run.sel
  if sel.source == "items" then return sel.items, sel.items end
  if sel.source == "tracks" then return {}, project.items_in_range(run.proj, sel.tracks, sel.start, sel["end"]) end
  return {}, project.items_in_range(run.proj, nil, sel.start, sel["end"])
end

-- Inserts the kept takes into the job's project (one undo point). Raises a user error that says
-- where the files are when it cannot.
local function insert_result(run)
  local r = run.result_info
  if project_state(run) == "closed" then
    fail("The project this job started in was closed, so the result was not inserted.\nIt is kept at:\n" ..
      kept_list(r.takes) .. "\nOpen that project and re-insert it with M2UGen - Jobs.")
  end
  local opts = { takes = {}, position = run.position, name = project.track_name(r.kind, r.prompt), notes = r.notes,
                 track = run.track, mode = "track" }
  for i, t in ipairs(r.takes) do
    local rec = { job = r.job, kind = r.kind, prompt = r.prompt, seed = t.seed, take = i, path = t.path }
    opts.takes[i] = { path = t.path, ext = json.encode(rec),
                      name = (r.job or run.name) .. (#r.takes > 1 and (" take " .. i) or "") ..
                        (t.seed and (" seed " .. t.seed) or "") }
  end
  if r.kind == "edit" and run.sel and not run.fetch then
    opts.mode = run.settings.edit_result
    opts.source_items, opts.mute_items = edit_target(run)
  end
  local ok, inserted = pcall(project.insert_audio, run.proj, opts)
  if not ok then
    fail("Could not insert the result into the project: " .. message_of(inserted) .. "\nThe result is kept at:\n" ..
      kept_list(r.takes) .. "\nRe-insert it with M2UGen - Jobs.")
  end
  return inserted
end

local function finish_text(run, st)
  local answer = st.text or ""
  if answer == "" then fail("The M2UGen server returned an empty answer.") end
  local lines = { "Q: " .. run.request.prompt, "", "A: " .. answer }
  local measured = app.describe_analysis(st.analysis, "Measured")
  if measured then
    lines[#lines + 1] = ""
    lines[#lines + 1] = measured
  end
  local notes = table.concat(lines, "\n")
  local rec = record_of(run, { state = "done", text = answer, analysis = st.analysis })
  local kept = remember(run, rec) -- the answer is in the project's history before anything else
  local label = answer:gsub("[%c]+", " ")
  if #label > 60 then label = label:sub(1, 57):gsub("[\128-\191]*$", ""):gsub("[\192-\255]$", "") .. "..." end
  local extra = ""
  if project_state(run) == "closed" then
    extra = "\n\n(The project this question was asked in was closed: the answer is shown here only.)"
  else
    local ok, err = pcall(project.insert_note, run.proj, {
      position = run.sel.start, length = run.sel["end"] - run.sel.start, notes = notes, ext = json.encode(rec),
      label = "M2UGen: " .. label, marker = run.settings.answer_markers,
      name = project.track_name("ask", run.request.prompt) })
    if not ok then
      extra = "\n\n(The answer could not be added to the \"" .. project.ANSWERS_TRACK .. "\" track: " ..
        message_of(err) .. (kept and ". It is kept in the project's M2UGen job history (M2UGen - Jobs).)" or ".)")
    else
      extra = tab_note(run)
    end
  end
  remove_temp(run)
  clear_active(run)
  app.action_options(app.OPTIONS_IDLE)
  app.show_text(app.TITLES.ask, notes .. extra)
end

-- A finished transcription: the .mid (and its sidecar, whose notes are placed) copied next to the
-- project, recorded in its history, then inserted on a new MIDI track at the selection's start.
local function finish_midi(run, st)
  local from = run.out and settings.file_exists(run.out) and run.out or st.midi_path
  if not from or not settings.file_exists(from) then
    fail("The M2UGen transcription finished but its MIDI file is missing: " .. tostring(from) .. fetch_hint(run))
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
  local rec = record_of(run, { state = "done", files = { { path = kept } } })
  if run.fetch then rec.kind, rec.position, rec.stamp = "transcribe", run.fetch.position, run.fetch.stamp or run.name end
  remember(run, rec)
  remove_temp(run)
  clear_active(run)
  app.action_options(app.OPTIONS_IDLE)
  if project_state(run) == "closed" then
    fail("The project this job started in was closed, so the transcription was not inserted.\nIt is kept at:\n  " ..
      kept .. "\nOpen that project and re-insert it with M2UGen - Jobs.")
  end
  local notes = meta and type(meta.notes) == "table" and meta.notes or nil
  local lines = { "M2UGen transcribe job " .. id .. (run.fetch and " (fetched again)" or ""), "MIDI file: " .. kept }
  if meta and meta.bpm then lines[#lines + 1] = string.format("Tempo: %g bpm (%s)", meta.bpm, tostring(meta.bpm_source)) end
  if meta and type(meta.chords) == "table" then lines[#lines + 1] = "Chords: " .. #meta.chords end
  if run.sel then lines[#lines + 1] = "Source: " .. project.describe_selection(run.sel) end
  local ok, err = pcall(project.insert_midi, run.proj, {
    path = kept, notes = notes, position = run.position, track = run.track,
    length = run.sel and (run.sel["end"] - run.sel.start) or nil,
    name = project.track_name("transcribe", "job " .. id), take_name = id,
    item_notes = table.concat(lines, "\n"), ext = json.encode(rec) })
  if not ok then
    fail("Could not insert the transcription into the project: " .. message_of(err) .. "\nIt is kept at:\n  " ..
      kept .. "\nRe-insert it with M2UGen - Jobs.")
  end
  local note = tab_note(run)
  if note ~= "" then app.message(note:sub(3), app.TITLES[run.kind]) end
end

local start_preview -- defined below

finish = function(run, st)
  run.finished = true
  if run.window then run.window:close() end
  local msg = job.failure_message(st, run.settings.server ~= "" and run.settings.server or nil)
  if msg and run.cancel_wanted then msg = job.failure_message({ exit_code = job.EXIT.cancelled }) end
  if msg then
    abort(run, user_error(msg))
    return
  end
  run.completed = true
  if run.kind == "ask" then return finish_text(run, st) end
  if run.kind == "learn" then return app.finish_learn(run, st) end
  if (run.fetch and run.fetch.kind or run.kind) == "transcribe" then return finish_midi(run, st) end
  local takes = keep_files(run, produced_takes(run, st))
  local kind = run.fetch and run.fetch.kind or run.kind
  local prompt = run.request and run.request.prompt or (run.fetch and run.fetch.prompt) or ""
  run.result_info = { job = st.job, kind = kind, prompt = prompt, takes = takes }
  local files = {}
  for i, t in ipairs(takes) do files[i] = { path = t.path, seed = t.seed } end
  local rec = record_of(run, { state = "done", files = files, seed = takes[1].seed or (run.request and run.request.seed),
                               analysis = st.analysis, result_analysis = st.result_analysis })
  if run.fetch then
    rec.prompt, rec.kind, rec.position = run.fetch.prompt, run.fetch.kind, run.fetch.position
    rec.stamp = run.fetch.stamp or run.name
  end
  remember(run, rec) -- recorded before the insert: a failed insert loses nothing
  run.result_info.notes = provenance(run, st, takes)
  remove_temp(run)
  clear_active(run)
  if run.copy_failed then
    app.message("The result could not be copied next to the project; it is used from where the CLI wrote it:" ..
      run.copy_failed, app.TITLES[run.kind])
  end
  if run.settings.preview == "on" and not run.fetch then
    start_preview(run, st)
    return
  end
  insert_result(run)
  app.action_options(app.OPTIONS_IDLE)
  local note = tab_note(run)
  if note ~= "" then app.message(note:sub(3), app.TITLES[run.kind]) end
end

-- ---------------------------------------------------------------------------------------------
-- preview: audition, then Accept / Regenerate / Discard

local function preview_text(run, st)
  local r = run.result_info
  local lines = { "M2UGen " .. r.kind .. (r.job and (" job " .. r.job) or "") .. ": " .. r.prompt }
  if #r.takes > 1 then
    lines[#lines + 1] = #r.takes .. " takes (switch takes in the item as usual)"
  end
  for i, t in ipairs(r.takes) do
    if t.seed then lines[#lines + 1] = "Take " .. i .. ": seed " .. t.seed end
  end
  lines[#lines + 1] = app.describe_analysis(st.result_analysis, "Result measured")
  lines[#lines + 1] = app.describe_analysis(st.analysis, "Source measured")
  if audition then
    lines[#lines + 1] = "Playing take 1 (SWS preview): nothing is in the project until you Accept."
  else
    lines[#lines + 1] = "The result is in the project for you to hear (play the project): Accept keeps it, " ..
      "Discard removes it again (the file stays in M2UGen - Jobs)."
  end
  lines[#lines + 1] = "Accept / Regenerate (same prompt, new seed) / Discard"
  return table.concat(lines, "\n")
end

local function mark(run, state)
  local rec = record_of(run, { state = state })
  if run.result_info then
    local files = {}
    for i, t in ipairs(run.result_info.takes) do files[i] = { path = t.path, seed = t.seed } end
    rec.files = files
    rec.job = run.result_info.job
  end
  local old = project.is_open(run.proj) and select(2, reaper.GetProjExtState(run.proj, "M2UGen", "job:" .. (rec.job or run.name)))
  local prev = old and json.try_decode(old)
  if type(prev) == "table" then
    prev.state = state
    rec = prev
  end
  remember(run, rec)
end

start_preview = function(run, st)
  local pv = { playing = false }
  run.preview = pv
  if audition then
    pv.sound = audition.play(run.result_info.takes[1].path)
    pv.playing = pv.sound ~= nil
  else
    local state = project_state(run)
    if state == "closed" then insert_result(run) end -- raises with where the files are
    local item = run.sel and run.sel.source == "items" and #run.sel.items == 1 and run.sel.items[1] or nil
    if item then pv.before = { take_count = reaper.GetMediaItemNumTakes(item), active = reaper.GetActiveTake(item) } end
    pv.inserted = insert_result(run)
  end
  app.action_options(app.OPTIONS_IDLE)
  local text = preview_text(run, st)
  pv.window = ui.preview_window(app.TITLES[run.kind] .. " - preview", text)
  local function stop_sound()
    if pv.sound then
      audition.stop(pv.sound)
      pv.sound = nil
    end
    pv.playing = false
  end
  local function decide(action)
    pv.decided = true
    pv.window:close()
    stop_sound()
    if action == "accept" then
      if audition then insert_result(run) end
      mark(run, "accepted")
      local note = tab_note(run)
      if note ~= "" then app.message(note:sub(3), app.TITLES[run.kind]) end
      return
    end
    if not audition and pv.inserted then
      project.remove_result(run.proj, pv.inserted, pv.before or {})
    end
    mark(run, "discarded")
    if action == "regenerate" then
      local preset = { proj = run.proj, inputs = { prompt = run.request.prompt, duration = run.inputs.duration },
                       media_kind = run.media_kind, media_path = run.media_path }
      reaper.defer(function() app.run(run.kind, preset) end)
    end
  end
  local function loop()
    local ok, err = xpcall(function()
      if pv.decided then return end
      local act = pv.window:frame({ text = text, can_play = audition ~= nil, playing = pv.playing })
      if act == "play" and audition then
        stop_sound()
        pv.sound = audition.play(run.result_info.takes[1].path)
        pv.playing = pv.sound ~= nil
      elseif act == "stop" then
        stop_sound()
      elseif act == "accept" or act == "discard" or act == "regenerate" then
        decide(act)
        return
      elseif act == "closed" then
        decide("accept") -- closing the window keeps the result
        return
      end
      reaper.defer(loop)
    end, traceback)
    if not ok then
      pv.decided = true
      stop_sound()
      app.message(message_of(err), app.TITLES[run.kind])
    end
  end
  loop()
end

-- ---------------------------------------------------------------------------------------------
-- starting a job

local function launch(run, kind, req, extra)
  run.job = job.start({ cli = run.cli, kind = kind, request = req, dir = project.temp_dir("jobs"), name = run.name,
                        server = run.settings.server, extra = extra })
end

-- Everything after the job's files are ready: the first defer, the progress window, atexit.
local function begin_loop(run)
  run.started = reaper.time_precise()
  run.last_poll = -math.huge
  run.last_change = run.started
  write_active(run)
  app.action_options(app.OPTIONS_RUNNING)
  run.window = ui.progress_window(app.TITLES[run.kind])
  reaper.atexit(function()
    app.action_options(8)
    local pv = run.preview
    if pv and not pv.decided then
      -- REAPER ended the script while the preview was open: keep what is in the project (the
      -- fallback preview is inserted already); with SWS stop the sound, the file stays in the history
      if pv.sound then pcall(audition.stop, pv.sound) end
      return
    end
    if not run.finished then
      -- the script was stopped (REAPER closed it): the result could never be inserted
      if run.status and run.status.job and not run.cancel_sent then
        pcall(job.cancel, run.cli, run.status.job, run.settings.server, project.temp_dir("jobs"))
      elseif not (run.status and run.status.job) then
        pcall(job.withdraw, run.job, run.status, project.temp_dir("jobs"))
      end
      remove_temp(run)
      clear_active(run)
    end
  end)
  reaper.defer(function() app.step(run) end)
end

-- Everything up to the first defer; raises on any error (caught by app.run).
-- preset (Regenerate): {proj, inputs, media_kind, media_path} skips the dialogs.
local function start(run, preset)
  local kind = run.kind
  run.settings = settings.load()
  if preset and preset.proj then
    if not project.is_open(preset.proj) then fail("The project of the job to regenerate was closed.") end
    run.proj = preset.proj
  else
    run.proj = project.current()
  end
  local proj = run.proj
  local sel = project.selection(proj)
  if not sel and kind ~= "generate" then
    fail("Select a time range or one or more media items first:\n" ..
      "M2UGen listens to the selected items, else the selected tracks in the time selection (via master),\n" ..
      "else the master mix of the time selection.")
  end
  run.sel = sel

  local active = app.read_active()
  if active then
    fail("An M2UGen job (" .. tostring(active.kind) .. ") is still running in this REAPER session.\n" ..
      "Wait for it or run M2UGen - Cancel.")
  end

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
    if run.settings.loop == "on" then req.loop = true end
    if (run.settings.vocoder or "encodec") ~= "encodec" then req.vocoder = run.settings.vocoder end
  end
  if media_kind then req[media_kind] = media_path end
  if kind == "edit" or kind == "generate" then
    req.midi_notes = project.midi_notes(sel) -- a selected MIDI item is the melody (mode melody)
  end
  if run.settings.adapter ~= "" then req.adapter = run.settings.adapter end
  run.request = req

  if kind ~= "generate" then
    run.input = project.render(proj, sel, project.temp_dir("in"), run.name)
    req.audio = run.input
  end

  launch(run, kind, req, extra)
  begin_loop(run)
end

-- Entry point of "M2UGen - Ask about selection", "- Edit selection" and "- Generate".
function app.run(kind, preset)
  if not app.TITLES[kind] or kind == "result" or kind == "learn" then error("unknown M2UGen action kind " .. tostring(kind)) end
  local run = { kind = kind }
  local ok, err = xpcall(start, traceback, run, preset)
  if not ok then abort(run, err) end
  return run
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
  local active = app.read_active()
  if active then
    fail("An M2UGen job (" .. tostring(active.kind) .. ") is still running in this REAPER session.\n" ..
      "Wait for it or run M2UGen - Cancel.")
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
  launch(run, "learn", req, {})
  begin_loop(run)
end

-- The adapter is on the server: say so, and offer to use it for the next requests (Settings: Adapter).
function app.finish_learn(run, st)
  remove_temp(run)
  clear_active(run)
  app.action_options(app.OPTIONS_IDLE)
  local name = run.request.adapter_name
  local text = (st.text and st.text ~= "") and st.text or ("adapter '" .. name .. "' learnt")
  local answer = reaper.ShowMessageBox(text .. "\n\nUse adapter '" .. name .. "' for the next Ask / Edit / " ..
    "Generate? (M2UGen - Settings: Adapter; empty = the base model)", app.TITLES.learn, 4)
  if answer == 6 then reaper.SetExtState(settings.SECTION, "adapter", name, true) end
end

-- Entry point of "M2UGen - Learn from selected items".
function app.learn()
  local run = { kind = "learn" }
  local ok, err = xpcall(start_learn, traceback, run)
  if not ok then abort(run, err) end
  return run
end

-- ---------------------------------------------------------------------------------------------
-- "M2UGen - Cancel"

function app.cancel()
  local a, stale = app.read_active()
  if not a then
    if stale then
      reaper.DeleteExtState(settings.SECTION, "active", false)
    end
    app.message("No M2UGen job is running in this REAPER session.", "M2UGen - Cancel")
    return false
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
                result_dir = project.result_dir(proj) }
  run.position = tonumber(rec.position) or reaper.GetCursorPositionEx(proj)
  if reaper.CountSelectedTracks(proj) > 0 then run.track = reaper.GetSelectedTrack(proj, 0) end
  local ok, err = xpcall(function()
    if rec.kind == "ask" then
      app.show_text(app.TITLES.ask, "Q: " .. tostring(rec.prompt) .. "\n\nA: " .. tostring(rec.text or "(no answer kept)") ..
        (app.describe_analysis(rec.analysis, "\nMeasured") or ""))
      run.finished = true
      return
    end
    local takes = {}
    if type(rec.files) == "table" then
      for i, f in ipairs(rec.files) do
        if type(f) == "table" and type(f.path) == "string" and settings.file_exists(f.path) then
          takes[#takes + 1] = { path = f.path, seed = math.tointeger(f.seed) }
        elseif i == 1 then break end
      end
    end
    if #takes > 0 and rec.kind == "transcribe" then
      run.status = { job = rec.job }
      run.out = nil
      finish_midi(run, { job = rec.job, midi_path = takes[1].path })
      run.finished = true
      return
    end
    if #takes > 0 then
      run.result_info = { job = rec.job, kind = rec.kind, prompt = tostring(rec.prompt or ""), takes = takes,
                          notes = "M2UGen " .. tostring(rec.kind) .. " job " .. tostring(rec.job) .. " (re-inserted)\nPrompt: " ..
                            tostring(rec.prompt or "") }
      run.status = { job = rec.job }
      insert_result(run)
      run.finished = true
      return
    end
    if not rec.job then fail("This entry has no job id and no kept file: nothing to fetch.") end
    local cli, why = settings.resolve_cli(run.settings)
    if not cli then fail(why) end
    run.cli = cli
    run.out = settings.join(project.temp_dir("out"), run.name .. (rec.kind == "transcribe" and ".mid" or ".wav"))
    run.job = job.start_result({ cli = cli, job_id = rec.job, out = run.out, dir = project.temp_dir("jobs"),
                                 name = run.name, server = run.settings.server })
    begin_loop(run)
  end, traceback)
  if not ok then abort(run, err) end
  return run
end

app.SERVER_JOBS_LIMIT = 20

-- The server's newest jobs as history-like records (`m2ugen jobs`).
local function server_records()
  local s = settings.load()
  local cli, why = settings.resolve_cli(s)
  if not cli then fail(why) end
  local list = job.list_server(cli, s.server, project.temp_dir("jobs"), app.SERVER_JOBS_LIMIT, 10000)
  local out = {}
  for _, r in ipairs(list) do
    if r.kind == "ask" or r.state == "done" then
      out[#out + 1] = { job = r.job, kind = r.kind, state = r.state, text = r.text,
                        prompt = type(r.params) == "table" and r.params.prompt or "", seed = math.tointeger(r.seed) }
    end
  end
  return out
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
    if rec and rec.server_list then
      local list = server_records()
      if #list == 0 then fail("The server has no finished jobs.") end
      rec = app.pick_job(list)
    end
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
                     "Vocoder (encodec/mbd)", "Adapter (empty = base model)" }
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
