-- @noindex
-- The actions: ask about / edit / generate into the selection, cancel, settings.
--
-- Flow of ask/edit/generate:
--   prompt dialog -> selection + context -> (render the selection) -> request JSON ->
--   ExecProcess(cli, -2) -> defer loop polls the status file (throttled) and draws the progress
--   window -> done: insert the result (one undo point) / show and keep the answer.
-- Any error: a message box, and nothing half-done (render settings restored in project.render,
-- no track left behind by project.insert_*, temporary files removed).

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
}
app.POLL_INTERVAL = 0.25   -- seconds between status-file reads
app.START_TIMEOUT = 30     -- seconds to wait for the first status file
app.STALE_AFTER = 10       -- an "active job" heartbeat older than this belongs to a dead script
app.IMAGE_EXT = { png = true, jpg = true, jpeg = true, bmp = true, webp = true, gif = true }
app.VIDEO_EXT = { mp4 = true, mov = true, mkv = true, avi = true, webm = true, m4v = true }

-- A user-facing error: raised with this table so the message box shows only the text.
local UserError = {}
UserError.__index = UserError
local function fail(msg) error(setmetatable({ msg = msg }, UserError), 0) end
local function message_of(err)
  if getmetatable(err) == UserError then return err.msg end
  return "M2UGen script error:\n" .. tostring(err)
end
app.fail = fail

function app.message(text, title)
  reaper.ShowMessageBox(text, title or "M2UGen", 0)
end

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

-- Ends the run with a message box; removes what this run created that is not a result.
local function abort(run, err)
  run.finished = true
  if run.window then run.window:close() end
  remove_temp(run)
  if run.out then os.remove(run.out) end
  if run.kept and not run.result then os.remove(run.kept) end
  if run.kept_sidecar and not run.result then os.remove(run.kept_sidecar) end
  if run.out then os.remove((run.out:gsub("%.wav$", "")) .. ".json") end
  clear_active(run)
  app.message(message_of(err), app.TITLES[run.kind])
end

local function request_cancel(run)
  run.cancel_wanted = true
  local id = run.status and run.status.job
  if id and not run.cancel_sent then
    run.cancel_sent = true
    job.cancel(run.cli, id, run.settings.server, project.temp_dir("jobs"))
  end
end

local function provenance(run, st)
  local lines = {
    "M2UGen " .. run.kind .. (st.job and (" job " .. st.job) or ""),
    "Prompt: " .. run.request.prompt,
  }
  if run.request.seed then lines[#lines + 1] = "Seed: " .. run.request.seed end
  if st.duration then lines[#lines + 1] = string.format("Duration: %.3f s", st.duration) end
  if st.sample_rate then lines[#lines + 1] = "Sample rate: " .. math.floor(st.sample_rate) end
  return table.concat(lines, "\n")
end

local function finish(run, st)
  run.finished = true
  if run.window then run.window:close() end
  local msg = job.failure_message(st, run.settings.server ~= "" and run.settings.server or nil)
  if msg then
    abort(run, setmetatable({ msg = msg }, UserError))
    return
  end
  local record = { job = st.job, kind = run.kind, prompt = run.request.prompt, seed = run.request.seed,
                   position = run.position, text = st.text, audio_path = st.audio_path }
  local name = project.track_name(run.kind, run.request.prompt)
  if run.kind == "ask" then
    local answer = st.text or ""
    if answer == "" then fail("The M2UGen server returned an empty answer.") end
    local notes = "Q: " .. run.request.prompt .. "\n\nA: " .. answer
    run.result = project.insert_note({ track = run.sel.track, name = name, position = run.sel.start,
                                       length = run.sel["end"] - run.sel.start, notes = notes })
    project.remember(st.job or run.name, json.encode(record))
    remove_temp(run)
    clear_active(run)
    app.show_text(app.TITLES.ask, notes)
    return
  end
  -- our `out` first: with a remote server the CLI downloads the WAV there, and audio_path is the
  -- server's own path
  local produced = run.out
  if not (produced and settings.file_exists(produced)) then produced = st.audio_path end
  if not produced or not settings.file_exists(produced) then
    fail("The M2UGen job finished but its audio file is missing: " .. tostring(produced))
  end
  local path = settings.join(project.result_dir(), run.name .. ".wav")
  project.copy_file(produced, path)
  run.kept = path
  -- the server's sidecar (<out>.json: prompt, seed, model, timings) goes along as provenance
  local sidecar = produced:gsub("%.[wW][aA][vV]$", "") .. ".json"
  if produced == run.out and settings.file_exists(sidecar) then
    run.kept_sidecar = settings.join(project.result_dir(), run.name .. ".json")
    project.copy_file(sidecar, run.kept_sidecar)
    os.remove(sidecar)
  end
  if produced == run.out then os.remove(run.out) end
  run.result = project.insert_audio({ path = path, track = run.track, position = run.position, name = name,
                                      take_name = st.job, notes = provenance(run, st),
                                      ext = json.encode(record) })
  project.remember(st.job or run.name, json.encode(record))
  remove_temp(run)
  clear_active(run)
end

local function view_of(run)
  local st = run.status
  return { status_line = ui.status_line(st) .. (run.cancel_wanted and "  (cancelling...)" or ""),
           fraction = st and st.fraction or 0, text = st and st.text or "" }
end

local function tick(run)
  if run.finished then return end
  local now = reaper.time_precise()
  if now - run.last_poll >= app.POLL_INTERVAL then
    run.last_poll = now
    local st = job.read_status(run.job)
    if st then
      run.status = st
      if st.exit_code ~= nil then
        finish(run, st)
        return
      end
      if st.state == "starting" and not st.job and now - run.started > app.START_TIMEOUT * 2 then
        fail("The M2UGen CLI has not reached the server after " .. app.START_TIMEOUT * 2 ..
          " s (status file " .. run.job.status_path .. ").")
      end
    elseif now - run.started > app.START_TIMEOUT then
      fail("The M2UGen CLI did not start: no status file after " .. app.START_TIMEOUT .. " s.\nCommand:\n" ..
        table.concat(run.job.argv, " "))
    end
    if reaper.GetExtState(settings.SECTION, "cancel") == run.name then request_cancel(run) end
    if run.cancel_wanted then request_cancel(run) end
    write_active(run)
  end
  if run.window and run.window:frame(view_of(run)) == "cancel" then request_cancel(run) end
  reaper.defer(function() app.step(run) end)
end

-- One defer step; every error ends the run cleanly.
function app.step(run)
  local ok, err = xpcall(tick, function(e)
    if getmetatable(e) == UserError then return e end
    return debug.traceback(tostring(e), 2)
  end, run)
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

-- Everything up to the first defer; raises on any error (caught by app.run).
local function start(run)
  local kind = run.kind
  run.settings = settings.load()
  local sel = project.selection()
  if not sel and kind ~= "generate" then
    fail("Select a time range or one or more media items first:\n" ..
      "M2UGen listens to the selection (rendered through the master).")
  end
  run.sel = sel

  local active = app.read_active()
  if active then
    fail("An M2UGen job (" .. tostring(active.kind) .. ") is still running in this REAPER session.\n" ..
      "Wait for it or run M2UGen - Cancel.")
  end

  local inputs = app.ask_inputs(kind, run.settings, sel)
  if not inputs then run.finished = true return end

  local media_kind, media_path
  if kind == "generate" then
    media_kind, media_path = app.ask_media()
    if media_kind == false then run.finished = true return end
  end

  local cli, why = settings.resolve_cli(run.settings)
  if not cli then fail(why) end
  run.cli = cli

  run.position = sel and sel.start or reaper.GetCursorPosition()
  run.track = sel and sel.track or nil
  if not run.track and reaper.CountSelectedTracks(0) > 0 then run.track = reaper.GetSelectedTrack(0, 0) end
  local context = project.context(sel, run.position)
  run.name = project.stamp()

  local req = { prompt = inputs.prompt, context = context }
  if inputs.seed then req.seed = inputs.seed end
  if kind ~= "ask" then
    req.conditioning = run.settings.conditioning
    req.sample_rate = context.project_sample_rate
    req.channels = 2
    local duration = inputs.duration or (sel and (sel["end"] - sel.start)) or tonumber(run.settings.duration)
    req.duration = duration + 0.0 -- a JSON float, as the protocol says
    run.out = settings.join(project.temp_dir("out"), run.name .. ".wav")
    req.out = run.out
  end
  if media_kind then req[media_kind] = media_path end
  run.request = req

  if kind ~= "generate" then
    run.input = project.render(sel, project.temp_dir("in"), run.name)
    req.audio = run.input
  end

  run.job = job.start({ cli = cli, kind = kind, request = req, dir = project.temp_dir("jobs"), name = run.name,
                        server = run.settings.server })
  run.started = reaper.time_precise()
  run.last_poll = -math.huge
  write_active(run)
  run.window = ui.progress_window(app.TITLES[kind])
  reaper.atexit(function()
    if not run.finished then
      -- the script was stopped (REAPER closed it): the result could never be inserted
      if run.status and run.status.job and not run.cancel_sent then
        pcall(job.cancel, run.cli, run.status.job, run.settings.server, project.temp_dir("jobs"))
      end
      remove_temp(run)
      clear_active(run)
    end
  end)
  reaper.defer(function() app.step(run) end)
end

-- Entry point of "M2UGen - Ask about selection", "- Edit selection" and "- Generate".
function app.run(kind)
  if not app.TITLES[kind] then error("unknown M2UGen action kind " .. tostring(kind)) end
  local run = { kind = kind }
  local ok, err = xpcall(start, function(e)
    if getmetatable(e) == UserError then return e end
    return debug.traceback(tostring(e), 2)
  end, run)
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
-- "M2UGen - Settings"

function app.settings_dialog()
  local s = settings.load()
  local captions = { "CLI path (empty = from server)", "Server (empty = default)", "Default duration (s)",
                     "Conditioning (text/embedding)", "Seed (empty = random)" }
  local values = { s.cli_path, s.server, s.duration, s.conditioning, s.seed }
  local ok, answer = reaper.GetUserInputs("M2UGen - Settings", #captions,
    table.concat(captions, ",") .. ",separator=\n,extrawidth=320", table.concat(values, "\n"))
  if not ok then return false end
  local fields_ok, f = pcall(app.split_fields, answer, #captions)
  if not fields_ok then
    app.message(message_of(f), "M2UGen - Settings")
    return false
  end
  local clean, why = settings.validate({ cli_path = f[1], server = f[2], duration = f[3], conditioning = f[4],
                                         seed = f[5] })
  if not clean then
    app.message(why .. "\n\nNothing was saved.", "M2UGen - Settings")
    return false
  end
  settings.save(clean)
  return true
end

return app
