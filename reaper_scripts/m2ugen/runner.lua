-- @noindex
-- Running one job: the active-job heartbeat (ExtState, shared with "M2UGen - Cancel"), the CLI
-- launch, the defer loop that polls the status file and draws the progress window, cancel, and the
-- ends of a run (abort, a lost CLI). What happens with a finished job is results.lua's.
--
-- The loop always ends: a final status, the CLI's exit (launcher exit file), a status file that
-- stopped changing (runner.CLI_STALE_AFTER), the start timeout, or Cancel (runner.CANCEL_GRACE).

local import = ...
local json = import("json")
local settings = import("settings")
local project = import("project")
local job = import("job")
local ui = import("ui")
local common = import("common")
local fail, message_of, traceback = common.fail, common.message_of, common.traceback

local runner = {}

runner.POLL_INTERVAL = 0.25   -- seconds between status-file reads
runner.START_TIMEOUT = 60     -- seconds for the CLI to write its status file and reach the server
runner.CLI_STALE_AFTER = 120  -- a status file unchanged this long (no event, no exit) = the CLI is gone
runner.CLI_HUNG_AFTER = 600   -- the same when the launcher says the process is still alive (it may just be
                              -- waiting in the queue: today's CLI writes the status only on events)
runner.EXIT_GRACE = 1.0       -- after the launcher's exit file: time for the final status to be read
runner.CANCEL_GRACE = 10      -- after Cancel: at most this long waiting for the CLI to confirm
runner.STALE_AFTER = 10       -- an "active job" heartbeat older than this belongs to a dead script

-- ---------------------------------------------------------------------------------------------
-- the active jobs, shared with "M2UGen - Cancel" through (non-persistent) ExtState
-- Two slots: the interactive job (ask/edit/generate/transcribe/fetch: one at a time, its window on
-- screen) and the long one (a Learn: minutes to hours, in the background with its own window). The
-- server schedules interactive jobs first, so a running Learn never blocks Ask/Edit/Generate.

runner.SLOTS = { interactive = "active", long = "active_learn" }

function runner.slot_of(kind) return kind == "learn" and runner.SLOTS.long or runner.SLOTS.interactive end

-- The job in `slot` (default: the interactive one), or nil, stale record when its heartbeat stopped.
function runner.read_active(slot)
  local raw = reaper.GetExtState(settings.SECTION, slot or runner.SLOTS.interactive)
  if raw == "" then return nil end
  local a = json.try_decode(raw)
  if type(a) ~= "table" then return nil end
  if type(a.heartbeat) ~= "number" or reaper.time_precise() - a.heartbeat > runner.STALE_AFTER then
    return nil, a
  end
  a.slot = slot or runner.SLOTS.interactive
  return a
end

-- Every live job of this REAPER session (interactive first).
function runner.active_jobs()
  local out = {}
  for _, slot in ipairs({ runner.SLOTS.interactive, runner.SLOTS.long }) do
    local a, stale = runner.read_active(slot)
    if a then out[#out + 1] = a
    elseif stale then reaper.DeleteExtState(settings.SECTION, slot, false) end
  end
  return out
end

function runner.write_active(run)
  local a = {
    name = run.name, kind = run.kind, cli = run.cli, server = run.settings.server,
    job = run.status and run.status.job or nil, heartbeat = reaper.time_precise(),
  }
  reaper.SetExtState(settings.SECTION, runner.slot_of(run.kind), json.encode(a), false)
end

function runner.clear_active(run)
  local slot = runner.slot_of(run.kind)
  local a = runner.read_active(slot)
  if not a or a.name == run.name then reaper.DeleteExtState(settings.SECTION, slot, false) end
  if reaper.GetExtState(settings.SECTION, "cancel") == run.name then
    reaper.DeleteExtState(settings.SECTION, "cancel", false)
  end
end

-- ---------------------------------------------------------------------------------------------
-- running a job

function runner.remove_temp(run)
  if run.job then job.cleanup(run.job) end
  if run.input then os.remove(run.input) end
end

-- Ends the run with a message box. Removes what this run created that is not a result: once a job
-- has completed (run.completed), its files are never removed, whatever failed afterwards.
function runner.abort(run, err)
  run.finished = true
  if run.window then run.window:close() end
  runner.remove_temp(run)
  if run.out and not run.completed then
    os.remove(run.out)
    os.remove((run.out:gsub("%.%w+$", "")) .. ".json")
  end
  runner.clear_active(run)
  common.action_options(common.OPTIONS_IDLE)
  common.message(message_of(err), common.TITLES[run.kind])
end

-- Cancel: with a job id, `m2ugen cancel JOB --no-wait` (the running CLI reports 'cancelled').
-- Before the id is known the request file is withdrawn (a CLI that has not read it yet exits with
-- a usage error); a CLI that submits anyway reports the id, which is then cancelled. Called on
-- every poll while a cancel is wanted; after runner.CANCEL_GRACE the loop ends regardless (tick).
function runner.request_cancel(run)
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
function runner.record_of(run, extra)
  local r = { job = run.status and run.status.job or nil, kind = run.fetch and run.fetch.kind or run.kind,
              prompt = run.request and run.request.prompt or (run.fetch and run.fetch.prompt) or "",
              seed = run.request and run.request.seed or nil, position = run.position, stamp = run.name,
              length = run.sel and (run.sel["end"] - run.sel.start) or nil,
              source = run.sel and run.sel.source or nil }
  for k, v in pairs(run.record_extra or {}) do r[k] = v end -- what a kind keeps besides (a stems folder's name)
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

-- Where the job's project stands: "same" | "other" (the user switched tabs) | "closed" |
-- "replaced" (File > Open loaded another project into its tab: same pointer, another file; a Save As
-- keeps the job's history record, a replaced project does not have it).
function runner.project_state(run)
  if not project.is_open(run.proj) then return "closed" end
  local fn = project.file_of(run.proj)
  if run.proj_file ~= nil and fn ~= run.proj_file then
    local id = run.status and run.status.job
    if run.remembered_running and id then
      local _, rec = reaper.GetProjExtState(run.proj, "M2UGen", "job:" .. id)
      if rec == "" then return "replaced" end
    elseif run.proj_file ~= "" then
      return "replaced"
    end
  end
  if project.current() ~= run.proj then return "other" end
  return "same"
end

-- Nil while the job's project is there; else why not ("was closed" / "was replaced ...").
function runner.project_gone(run)
  local state = runner.project_state(run)
  if state == "closed" then return "was closed" end
  if state == "replaced" then return "was replaced by another project in its tab (File > Open)" end
  return nil
end

function runner.remember(run, rec)
  if runner.project_gone(run) then return false end
  project.remember(run.proj, rec.job or run.name, json.encode(rec))
  return true
end

-- Where a lost job's result can be fetched to, and the command that does it.
function runner.fetch_hint(run)
  local id = run.status and run.status.job
  if not id then return "" end
  local kind = run.fetch and run.fetch.kind or run.kind
  local out = settings.join(run.result_dir, run.name .. (kind == "transcribe" and ".mid" or ".wav"))
  return "\n\nThe job " .. id .. " may still finish on the server. Fetch its result with M2UGen - Jobs, or:\n" ..
    job.fetch_command(run.cli, id, out, run.settings.server)
end

-- The CLI is gone (or hung) before a final status: stop it, keep the job in the history, tell how
-- to get the result.
function runner.cli_lost(run, why)
  job.withdraw(run.job, run.status, project.temp_dir("jobs"))
  if run.status and run.status.job then runner.remember(run, runner.record_of(run, { state = "lost" })) end
  fail("The M2UGen CLI " .. why .. "." .. runner.fetch_hint(run))
end

local function view_of(run)
  local st = run.status
  return { status_line = ui.status_line(st) .. (run.cancel_wanted and "  (cancelling...)" or ""),
           fraction = st and st.fraction or 0, text = st and st.text or "" }
end

local function finish(run, st) return import("results").finish(run, st) end

local function poll(run, now)
  local st, text = job.read_status(run.job)
  if st then
    if text ~= run.last_text then
      run.last_text, run.last_change = text, now
    end
    run.status = st
    if st.job and not run.remembered_running and run.kind ~= "result" and run.kind ~= "learn" then
      run.remembered_running = true -- in the history from the start: nothing is lost if REAPER dies
      runner.remember(run, runner.record_of(run, { state = "running" }))
    end
    if st.exit_code ~= nil then
      finish(run, st)
      return "done"
    end
  end
  local code = job.read_exit(run.job)
  if code ~= nil then
    run.exit_seen = run.exit_seen or now
    if now - run.exit_seen >= runner.EXIT_GRACE then
      local last = job.read_status(run.job)
      if last and last.exit_code ~= nil then
        finish(run, last)
        return "done"
      end
      if run.cancel_wanted then return "cancel_unconfirmed" end
      runner.cli_lost(run, "ended (exit status " .. code .. ") without reporting a result")
    end
  end
  if run.cancel_wanted and now - run.cancel_at > runner.CANCEL_GRACE then return "cancel_unconfirmed" end
  if not st then
    if now - run.started > runner.START_TIMEOUT then
      local killed = job.withdraw(run.job, nil, project.temp_dir("jobs"))
      fail("The M2UGen CLI did not start: no status file after " .. runner.START_TIMEOUT .. " s" ..
        (killed and " (it was stopped)" or " (its request was withdrawn, so it cannot submit any more)") ..
        ".\nCommand:\n" .. table.concat(run.job.argv, " "))
    end
  elseif not st.job and now - run.started > runner.START_TIMEOUT then
    local killed = job.withdraw(run.job, st, project.temp_dir("jobs"))
    fail("The M2UGen CLI has not reached the server after " .. runner.START_TIMEOUT .. " s" ..
      (killed and "; it was stopped" or "") .. " (status file " .. run.job.status_path .. ").")
  else
    local alive = code == nil and job.read_pid(run.job) ~= nil and run.job.pid_file ~= nil
    if now - run.last_change > (alive and runner.CLI_HUNG_AFTER or runner.CLI_STALE_AFTER) then
      runner.cli_lost(run, string.format("has not updated its status file for %d s (it was closed, crashed or hangs)",
        math.floor(now - run.last_change)))
    end
  end
  if reaper.GetExtState(settings.SECTION, "cancel") == run.name or run.cancel_wanted then runner.request_cancel(run) end
  runner.write_active(run)
end

local function tick(run)
  if run.finished then return end
  local now = reaper.time_precise()
  if now - run.last_poll >= runner.POLL_INTERVAL then
    run.last_poll = now
    local r = poll(run, now)
    if r == "done" then return end
    if r == "cancel_unconfirmed" then
      job.withdraw(run.job, run.status, project.temp_dir("jobs"))
      fail("The M2UGen job was cancelled. Nothing was added to the project.\n(The CLI did not confirm within " ..
        runner.CANCEL_GRACE .. " s; it was stopped.)")
    end
  end
  if run.window and run.window:frame(view_of(run)) == "cancel" then runner.request_cancel(run) end
  reaper.defer(function() runner.step(run) end)
end

-- One defer step; every error ends the run cleanly.
function runner.step(run)
  local ok, err = xpcall(tick, traceback, run)
  if not ok and not run.aborted then
    run.aborted = true
    runner.abort(run, err)
  end
end

function runner.show_text(title, text)
  local w = ui.text_window(title, text)
  local function loop()
    if w:frame() == "open" then reaper.defer(loop) end
  end
  loop()
end
-- ---------------------------------------------------------------------------------------------
-- starting a job

function runner.launch(run, kind, req, extra)
  run.job = job.start({ cli = run.cli, kind = kind, request = req, dir = project.temp_dir("jobs"), name = run.name,
                        server = run.settings.server, extra = extra })
end

-- Everything after the job's files are ready: the first defer, the progress window, atexit.
function runner.begin_loop(run)
  run.started = reaper.time_precise()
  run.last_poll = -math.huge
  run.last_change = run.started
  runner.write_active(run)
  common.action_options(common.OPTIONS_RUNNING)
  run.window = ui.progress_window(common.TITLES[run.kind])
  reaper.atexit(function()
    common.action_options(8)
    local pv = run.preview
    if pv and not pv.decided then
      -- REAPER ended the script while the preview was open: keep what is in the project (the
      -- fallback preview is inserted already); with SWS stop the sound, the file stays in the history
      if pv.sound then pcall(import("preview").stop_sound, pv) end
      return
    end
    if not run.finished then
      -- the script was stopped (REAPER quits, or the user terminated it). A job the server has
      -- accepted goes on: it stays "running" in the project's history and the next M2UGen action
      -- offers to fetch its result (app.pickup); its files stay (the server may still read the input).
      -- A CLI that has not submitted yet is withdrawn.
      if run.status and run.status.job then
        if run.kind ~= "learn" then pcall(runner.remember, run, runner.record_of(run, { state = "running" })) end
      else
        pcall(job.withdraw, run.job, run.status, project.temp_dir("jobs"))
        runner.remove_temp(run)
      end
      runner.clear_active(run)
    end
  end)
  reaper.defer(function() runner.step(run) end)
end

return runner
