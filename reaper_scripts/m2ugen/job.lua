-- @noindex
-- One CLI run: write the request JSON, start `<cli> <kind> --request R --status-file S` without
-- waiting (reaper.ExecProcess(cmd, -2); through a launcher script on macOS/Linux, see shell.lua),
-- read the status file (docs/protocol.md §7), cancel.
-- No prompt or user path goes on the command line: only the CLI, the request and the status file.

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

-- A folder for launcher scripts whose path has no single quote (see shell.lua).
local function launcher_dir(preferred)
  if not preferred:find("'", 1, true) then return preferred end
  local dir = "/tmp/m2ugen-reaper-launch"
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

-- The command line that runs `argv` on this OS. POSIX: writes the launcher `<dir>/<name>.sh`
-- and returns `/bin/sh '<launcher>'`, launcher path. Windows: the quoted argv, nil.
-- Raises a clear error for an argument that cannot be passed.
function job.command(argv, names, dir, name)
  if settings.is_windows() then
    return shell.command(argv, true, names), nil
  end
  local text = shell.launcher(argv, names)
  local path = settings.join(launcher_dir(dir), name .. ".sh")
  local cmd = "/bin/sh " .. shell.quote_single(path, "launcher path")
  write_file(path, text)
  return cmd, path
end

-- opts: cli (argv prefix list, see settings.resolve_cli), kind, request (table),
--       dir (for the request/status files), name, server (optional)
-- Returns a job table {cli, kind, request_path, status_path, command, server}.
function job.start(opts)
  local j = {
    cli = opts.cli,
    kind = opts.kind,
    server = opts.server ~= "" and opts.server or nil,
    request_path = settings.join(opts.dir, opts.name .. ".request.json"),
    status_path = settings.join(opts.dir, opts.name .. ".status.json"),
  }
  local req = opts.request
  req.kind = opts.kind
  req.status_file = j.status_path
  local argv, names = job.cli_argv(j.cli)
  for _, a in ipairs({ j.kind, "--request", j.request_path, "--status-file", j.status_path }) do
    argv[#argv + 1] = a
  end
  for _, n in ipairs({ "kind", "option", "request file path", "option", "status file path" }) do
    names[#names + 1] = n
  end
  if j.server then
    argv[#argv + 1] = "--server"
    argv[#argv + 1] = j.server
    names[#names + 1] = "option"
    names[#names + 1] = "server address"
  end
  -- the command first: an argument that cannot be passed fails before anything is written
  j.command, j.launcher = job.command(argv, names, opts.dir, opts.name)
  j.argv = argv
  os.remove(j.status_path)
  write_file(j.request_path, json.encode(req))
  local ret = reaper.ExecProcess(j.command, -2)
  if ret == nil then
    job.cleanup(j)
    error("REAPER could not start the M2UGen CLI:\n" .. table.concat(argv, " "), 0)
  end
  return j
end

-- Returns the decoded status table, or nil while the file is missing or half-written.
function job.read_status(j)
  local f = io.open(j.status_path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  if text == "" then return nil end
  local st = json.try_decode(text)
  if type(st) ~= "table" then return nil end
  for k, v in pairs(st) do
    if v == json.null then st[k] = nil end
  end
  return st
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
  if server and server ~= "" then
    argv[#argv + 1] = "--server"
    argv[#argv + 1] = server
    names[#names + 1] = "option"
    names[#names + 1] = "server address"
  end
  local name = "m2ugen-cancel-" .. job_id .. string.format("-%04d", math.random(0, 9999))
  local cmd = job.command(argv, names, dir, name)
  local ret = reaper.ExecProcess(cmd, -2)
  return ret ~= nil
end

function job.cleanup(j)
  os.remove(j.request_path)
  os.remove(j.status_path)
  if j.launcher then os.remove(j.launcher) end
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
