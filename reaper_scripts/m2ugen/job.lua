-- @noindex
-- One CLI run: write the request JSON, start `<cli> <kind> --request R --status-file S` without
-- waiting (reaper.ExecProcess(cmd, -2); through a launcher script on macOS/Linux, see shell.lua),
-- read the status file (docs/protocol.md §7), cancel.
-- No prompt or user path goes on the command line: only the CLI, the request and the status file
-- (plus validated numbers: --takes N, and flags such as --fit-tempo).
--
-- Is the CLI still alive? On macOS/Linux the launcher supervises it: it writes the CLI's pid to
-- <name>.pid and, when the CLI ends however it ends (crash, kill), its exit status to <name>.exit.
-- Everywhere the status file's `updated` field changes with every event (server/cli.py Reporter).
-- The caller combines both (app.lua): an exit file without a final status, or a status file that
-- stopped changing, means the CLI died.

local import = ...
local json = import("json")
local shell = import("shell")
local settings = import("settings")

local job = {}

-- Exit codes of the CLI (protocol §7).
job.EXIT = { ok = 0, usage = 2, unreachable = 3, failed = 4, cancelled = 5, interrupted = 6 }

local function write_file(path, text)
  local f, err = io.open(path, "wb")
  if not f then error("Cannot write " .. path .. ": " .. tostring(err), 0) end
  f:write(text)
  f:close()
end

-- Copies the CLI argv prefix; returns argv, names (labels for quoting errors).
function job.cli_argv(cli)
  local argv, names = {}, {}
  for i, a in ipairs(cli) do
    argv[i] = a
    names[i] = i == 1 and "CLI path" or "CLI argument"
  end
  return argv, names
end

-- Appends {value, label} pairs to argv/names.
local function add_args(argv, names, pairs)
  for _, a in ipairs(pairs) do
    argv[#argv + 1] = a[1]
    names[#names + 1] = a[2]
  end
end

-- `--server X` when a server is named (Settings), else nothing (the CLI's default).
local function server_args(server)
  if not server or server == "" then return {} end
  return { { "--server", "option" }, { server, "server address" } }
end

-- A folder for launcher scripts whose path has no single quote (see shell.lua).
local function launcher_dir(preferred)
  if not preferred:find("'", 1, true) then return preferred end
  local dir = "/tmp/m2ugen-reaper-launch"
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

-- The command line that runs `argv` on this OS. POSIX: writes the launcher `<dir>/<name>.sh`
-- and returns `/bin/sh '<launcher>'`, launcher path. Windows: writes `<dir>/<name>.vbs` and returns
-- `wscript.exe //B //Nologo "<vbs>"` (the CLI runs hidden: no console window), launcher path.
-- supervise: {pid_file, exit_file} (Windows: the exit file only); out_file: where stdout goes.
-- Raises a clear error for an argument that cannot be passed.
function job.command(argv, names, dir, name, supervise, out_file)
  if settings.is_windows() then
    local line = shell.command(argv, true, names)
    local path = settings.join(dir, name .. ".vbs")
    local text = shell.vbs_launcher(line, { exit_file = supervise and supervise.exit_file, out_file = out_file })
    write_file(path, text)
    return "wscript.exe //B //Nologo " .. shell.quote_windows(path, "launcher path"), path
  end
  local text = shell.launcher(argv, names, supervise, out_file)
  local path = settings.join(launcher_dir(dir), name .. ".sh")
  local cmd = "/bin/sh " .. shell.quote_single(path, "launcher path")
  write_file(path, text)
  return cmd, path
end

-- Starts `<cli> <args...> --status-file S [--server X]` without waiting.
-- opts: cli (argv prefix list, see settings.resolve_cli), args (list of {value, label}), dir (for the
--       request/status/pid/exit files), name, server (optional), request (table, optional: written to
--       <name>.request.json, whose path must already be in args)
-- Returns a job table {cli, request_path, status_path, pid_file, exit_file, command, argv, launcher}.
local function start(opts)
  local j = {
    cli = opts.cli,
    server = opts.server ~= "" and opts.server or nil,
    request_path = opts.request and settings.join(opts.dir, opts.name .. ".request.json") or nil,
    status_path = settings.join(opts.dir, opts.name .. ".status.json"),
  }
  local argv, names = job.cli_argv(j.cli)
  for _, a in ipairs(opts.args(j)) do
    argv[#argv + 1] = a[1]
    names[#names + 1] = a[2]
  end
  argv[#argv + 1] = "--status-file"
  argv[#argv + 1] = j.status_path
  names[#names + 1] = "option"
  names[#names + 1] = "status file path"
  add_args(argv, names, server_args(j.server))
  -- the launcher writes the exit status (and on macOS/Linux the pid) of the CLI
  if not settings.is_windows() then j.pid_file = settings.join(opts.dir, opts.name .. ".pid") end
  j.exit_file = settings.join(opts.dir, opts.name .. ".exit")
  local supervise = { pid_file = j.pid_file, exit_file = j.exit_file }
  -- the command first: an argument that cannot be passed fails before anything is written
  j.command, j.launcher = job.command(argv, names, opts.dir, opts.name, supervise)
  j.argv = argv
  os.remove(j.status_path)
  if j.pid_file then os.remove(j.pid_file) os.remove(j.exit_file) end
  if opts.request then write_file(j.request_path, json.encode(opts.request)) end
  local ret = reaper.ExecProcess(j.command, -2)
  if ret == nil then
    job.cleanup(j)
    error("REAPER could not start the M2UGen CLI:\n" .. table.concat(argv, " "), 0)
  end
  return j
end

-- The CLI options of the server contract that are not request keys (today's CLI refuses unknown
-- request keys): only sent when they differ from the default, so an older CLI keeps working.
-- opts: takes (integer), fit_tempo (boolean)
function job.extra_args(opts)
  local out = {}
  if opts.takes and opts.takes > 1 then
    out[#out + 1] = { "--takes", "option" }
    out[#out + 1] = { string.format("%d", opts.takes), "takes count" }
  end
  if opts.fit_tempo then out[#out + 1] = { "--fit-tempo", "option" } end
  return out
end

-- An ask/edit/generate job. opts: cli, kind, request (table), dir, name, server, extra (job.extra_args)
function job.start(opts)
  local req = opts.request
  req.kind = opts.kind
  local j = start({ cli = opts.cli, dir = opts.dir, name = opts.name, server = opts.server, request = req,
    args = function(jj)
      req.status_file = jj.status_path
      local a = { { opts.kind, "kind" }, { "--request", "option" }, { jj.request_path, "request file path" } }
      for _, x in ipairs(opts.extra or {}) do a[#a + 1] = x end
      return a
    end })
  j.kind = opts.kind
  return j
end

-- `<cli> result JOB --wait --out OUT`: fetches a finished (or still running) job's WAV.
-- opts: cli, job_id, out, dir, name, server
function job.start_result(opts)
  job.check_id(opts.job_id)
  local j = start({ cli = opts.cli, dir = opts.dir, name = opts.name, server = opts.server,
    args = function()
      return { { "result", "command" }, { opts.job_id, "job id" }, { "--wait", "option" }, { "--out", "option" },
               { opts.out, "output path" } }
    end })
  j.kind = "result"
  return j
end

-- `<cli> stems INPUT --out DIR [--stem-model M]`: one WAV per stem, <DIR>/<input name>-<stem>.wav
-- (docs/protocol.md §2.6). The paths are this script's own temp files; the model name is checked.
-- opts: cli, input, out_dir, stem_model (nil = the server's default, htdemucs), dir, name, server
job.STEM_MODELS = { htdemucs = true, htdemucs_6s = true }
function job.start_stems(opts)
  if opts.stem_model ~= nil and not job.STEM_MODELS[opts.stem_model] then
    error("Unknown stem model " .. tostring(opts.stem_model), 0)
  end
  local j = start({ cli = opts.cli, dir = opts.dir, name = opts.name, server = opts.server,
    args = function()
      local a = { { "stems", "command" }, { opts.input, "rendered audio path" }, { "--out", "option" },
                  { opts.out_dir, "output folder" } }
      if opts.stem_model then
        a[#a + 1] = { "--stem-model", "option" }
        a[#a + 1] = { opts.stem_model, "stem model" }
      end
      return a
    end })
  j.kind = "stems"
  return j
end

-- The command a user can type to fetch a job's result by hand (shown when the script gives up).
function job.fetch_command(cli, job_id, out, server)
  local argv = job.cli_argv(cli)
  for _, a in ipairs({ "result", job_id, "--wait", "--out", out }) do argv[#argv + 1] = a end
  if server and server ~= "" then
    argv[#argv + 1] = "--server"
    argv[#argv + 1] = server
  end
  local ok, line = pcall(shell.command, argv, settings.is_windows())
  return ok and line or table.concat(argv, " ")
end

function job.check_id(job_id)
  if type(job_id) ~= "string" or not job_id:match("^[%w%-_.]+$") then
    error("Bad job id " .. tostring(job_id), 0)
  end
end

-- A file's whole text, or nil when it cannot be read (not there yet).
local function read_text(path)
  local f = path and io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

local function read_number_file(path)
  local text = read_text(path)
  if not text then return nil end
  return math.tointeger(tonumber(text:match("^%s*(%-?%d+)%s*$") or ""))
end

-- The CLI's exit status from the launcher's exit file (macOS/Linux), or nil while it runs.
function job.read_exit(j) return read_number_file(j.exit_file) end

-- The CLI's pid: the launcher's pid file, else a `pid` field in the status file (if the CLI has one).
function job.read_pid(j, st)
  local pid = read_number_file(j.pid_file)
  if not pid and st and math.tointeger(st.pid) then pid = math.tointeger(st.pid) end
  if pid and pid > 1 then return pid end
  return nil
end

-- Makes sure a CLI that has not submitted yet never will: the request file goes away first (a
-- CLI that has not read it yet exits with a usage error), then the process is killed when its pid
-- is known. Returns true when a kill was sent.
function job.withdraw(j, st, dir)
  if j.request_path then os.remove(j.request_path) end
  if job.read_exit(j) ~= nil then return false end -- already ended: its pid may belong to another process now
  local pid = job.read_pid(j, st)
  if not pid then return false end
  local argv, names
  if settings.is_windows() then
    argv = { "taskkill", "/PID", string.format("%d", pid), "/T", "/F" }
  else
    argv = { "kill", "-TERM", string.format("%d", pid) }
  end
  names = { "command", "option", "pid", "option", "option" }
  local cmd = job.command(argv, names, dir, "m2ugen-kill-" .. pid)
  return reaper.ExecProcess(cmd, -2) ~= nil
end

local function strip_nulls(t)
  for k, v in pairs(t) do
    if v == json.null then t[k] = nil
    elseif type(v) == "table" then strip_nulls(v) end
  end
  return t
end

-- Returns the decoded status table (JSON nulls removed at every level) and the file's text, or nil
-- while the file is missing or half-written.
function job.read_status(j)
  local text = read_text(j.status_path)
  if not text or text == "" then return nil end
  local st = json.try_decode(text)
  if type(st) ~= "table" then return nil end
  return strip_nulls(st), text
end

-- Asks the server to cancel `job_id` through a second, fire-and-forget CLI run
-- (`dir`: where its launcher script goes on macOS/Linux).
function job.cancel(cli, job_id, server, dir)
  if type(job_id) ~= "string" or not job_id:match("^[%w%-_.]+$") then
    error("Cannot cancel: bad job id " .. tostring(job_id), 0)
  end
  local argv, names = job.cli_argv(cli)
  argv[#argv + 1] = "cancel"
  argv[#argv + 1] = job_id
  argv[#argv + 1] = "--no-wait" -- the running CLI reports the final 'cancelled'
  names[#names + 1] = "command"
  names[#names + 1] = "job id"
  names[#names + 1] = "option"
  add_args(argv, names, server_args(server))
  local name = "m2ugen-cancel-" .. job_id .. string.format("-%04d", math.random(0, 9999))
  local cmd = job.command(argv, names, dir, name)
  local ret = reaper.ExecProcess(cmd, -2)
  return ret ~= nil
end

-- `<cli> jobs --limit N` in the background (never blocks REAPER), its JSON lines written to a file.
-- Returns a handle for job.read_list.
function job.start_list(cli, server, dir, limit)
  local argv, names = job.cli_argv(cli)
  add_args(argv, names, { { "jobs", "command" }, { "--limit", "option" }, { string.format("%d", limit), "limit" } })
  add_args(argv, names, server_args(server))
  local name = "m2ugen-jobs" .. string.format("-%04d", math.random(0, 9999))
  local h = { out_file = settings.join(dir, name .. ".jobs.jsonl"), argv = argv }
  os.remove(h.out_file)
  local cmd, launcher = job.command(argv, names, dir, name, nil, h.out_file)
  h.launcher = launcher
  if reaper.ExecProcess(cmd, -2) == nil then
    if launcher then os.remove(launcher) end
    error("REAPER could not run " .. table.concat(argv, " "), 0)
  end
  return h
end

-- The list of job records (docs/protocol.md §4) once `m2ugen jobs` has printed its final
-- {"op": "exit"} line; nil while it is still running. Raises when it exited with an error.
function job.read_list(h)
  local out = read_text(h.out_file)
  if not out then return nil end
  local records, code = {}, nil
  for line in out:gmatch("(.-)\r?\n") do -- whole lines only: the last one may be half-written
    local rec = json.try_decode(line)
    if type(rec) == "table" and rec.op == "job" and type(rec.job) == "string" then
      records[#records + 1] = strip_nulls(rec)
    elseif type(rec) == "table" and rec.op == "exit" then
      code = rec.code
    end
  end
  if code == nil then return nil end
  job.cleanup_list(h)
  if code ~= 0 then
    error("`m2ugen jobs` did not answer (exit code " .. tostring(code) .. "): is the server running?", 0)
  end
  return records
end

function job.cleanup_list(h)
  os.remove(h.out_file)
  if h.launcher then os.remove(h.launcher) end
end

function job.cleanup(j)
  if j.request_path then os.remove(j.request_path) end
  os.remove(j.status_path)
  if j.launcher then os.remove(j.launcher) end
  if j.pid_file then os.remove(j.pid_file) os.remove(j.pid_file .. ".tmp") end
  if j.exit_file then os.remove(j.exit_file) os.remove(j.exit_file .. ".tmp") end
end

-- A message for the user for a finished status (exit_code set), or nil when it succeeded.
function job.failure_message(st, server)
  local code = st.exit_code
  local err = type(st.error) == "table" and st.error or {}
  local detail = err.message and ((err.code and (err.code .. ": ") or "") .. err.message) or nil
  if code == job.EXIT.ok and st.state == "done" then return nil end
  if code == job.EXIT.unreachable then
    return "The M2UGen server is not running or cannot be reached" ..
      (server and (" at " .. server) or "") .. ".\n\nStart it with `m2ugen serve` (or ./dev serve) and try again." ..
      (detail and ("\n\n" .. detail) or "")
  end
  if code == job.EXIT.cancelled or st.state == "cancelled" then
    return "The M2UGen job was cancelled. Nothing was added to the project."
  end
  if code == job.EXIT.usage then
    return "The M2UGen CLI rejected the request" .. (detail and (":\n" .. detail) or " (usage error).")
  end
  if code == job.EXIT.failed or st.state == "failed" then
    return "The M2UGen job failed" .. (detail and (":\n" .. detail) or ".")
  end
  if code == job.EXIT.interrupted then
    return "The M2UGen CLI was interrupted; the job may still finish on the server" ..
      (st.job and (" (job " .. st.job .. ")") or "") .. "."
  end
  if code == job.EXIT.ok then
    return "The M2UGen CLI exited without a result (state '" .. tostring(st.state) .. "')."
  end
  return "The M2UGen CLI exited with code " .. tostring(code) .. (detail and (":\n" .. detail) or ".")
end

return job
