-- A recording fake of REAPER's Lua API that simulates one project.
--
--   local Fake = dofile("tests/lua/helpers/fake_reaper.lua")
--   local fake = Fake.new({ root = ..., project_dir = ... })
--   fake:install()                 -- sets the globals `reaper` and `gfx`
--   fake:run_script(path)          -- dofile with the script's own path, like REAPER's action list
--   fake:run_defer(opts)           -- drives reaper.defer until idle (then runs atexit functions)
--
-- Every reaper.* call is recorded (fake.calls) and checked at call time against
-- /work/shared/reference/reaper-api.signatures.json: an unknown name, a function the fake does not
-- implement, a wrong argument count, or an extension API used before a successful APIExists guard
-- raises an error AND is added to fake.violations (scripts may swallow errors; tests check the list).

local wav = dofile((debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./") .. "wav.lua")

local Fake = {}
Fake.__index = Fake

local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
Fake.REPO = HERE:gsub("tests/lua/helpers/$", "")
Fake.SIGNATURES = os.getenv("M2UGEN_REAPER_SIGNATURES") or "/work/shared/reference/reaper-api.signatures.json"

local json = dofile(Fake.REPO .. "reaper_scripts/m2ugen/json.lua")

local signatures_cache = nil
function Fake.signatures()
  if not signatures_cache then
    local f = assert(io.open(Fake.SIGNATURES, "rb"), "signatures file missing: " .. Fake.SIGNATURES)
    local doc = json.decode(f:read("a"))
    f:close()
    signatures_cache = doc.functions
  end
  return signatures_cache
end

-- Real POSIX sh splits a command line into its argv (checks our quoting against a real shell).
function Fake.sh_argv(cmd)
  local p = assert(io.popen("printf '%s\\0' " .. cmd, "r"))
  local out = p:read("a")
  p:close()
  local argv = {}
  for a in out:gmatch("([^%z]*)%z") do argv[#argv + 1] = a end
  return argv
end

-- Windows command-line splitting (CommandLineToArgvW / MSVCRT rules) for the Windows quoting tests.
function Fake.windows_argv(cmd)
  local argv, i, n = {}, 1, #cmd
  while i <= n do
    while i <= n and cmd:sub(i, i):match("[ \t]") do i = i + 1 end
    if i > n then break end
    local arg, in_quotes = {}, false
    while i <= n do
      local c = cmd:sub(i, i)
      if c == "\\" then
        local j = i
        while j <= n and cmd:sub(j, j) == "\\" do j = j + 1 end
        local count = j - i
        if cmd:sub(j, j) == '"' then
          arg[#arg + 1] = string.rep("\\", count // 2)
          if count % 2 == 1 then arg[#arg + 1] = '"' i = j + 1 else i = j end
        else
          arg[#arg + 1] = string.rep("\\", count)
          i = j
        end
      elseif c == '"' then
        in_quotes = not in_quotes
        i = i + 1
      elseif c:match("[ \t]") and not in_quotes then
        break
      else
        arg[#arg + 1] = c
        i = i + 1
      end
    end
    argv[#argv + 1] = table.concat(arg)
  end
  return argv
end

-- How REAPER's ExecProcess splits a command line on macOS/Linux (no shell): at spaces; a token that
-- starts with ', " or ` runs to the next same character; no escapes, everything else literal.
function Fake.reaper_split(cmd)
  local argv, i, n = {}, 1, #cmd
  while i <= n do
    local c = cmd:sub(i, i)
    if c == " " then
      i = i + 1
    elseif c == "'" or c == '"' or c == "`" then
      local j = cmd:find(c, i + 1, true)
      if not j then error("fake ExecProcess: unterminated " .. c .. " in " .. cmd) end
      argv[#argv + 1] = cmd:sub(i + 1, j - 1)
      i = j + 1
    else
      local j = cmd:find(" ", i, true) or (n + 1)
      argv[#argv + 1] = cmd:sub(i, j - 1)
      i = j
    end
  end
  return argv
end

-- The argv a command line of the scripts really runs. POSIX: `/bin/sh '<launcher>'` split the way
-- REAPER does, then the launcher's exec line split by a real sh. Windows: the MSVCRT rules.
function Fake:exec_argv(cmd, consume)
  if self.os_name:match("^Win") then return Fake.windows_argv(cmd) end
  local outer = Fake.reaper_split(cmd)
  assert(#outer == 2 and outer[1] == "/bin/sh", "not a launcher command: " .. cmd)
  local text = assert(Fake.read_file(outer[2]), "launcher script missing: " .. outer[2])
  assert(text:sub(1, 10) == "#!/bin/sh\n", "launcher without #!/bin/sh")
  assert(text:find('\nrm %-f %-%- "%$0"\n'), "launcher does not delete itself")
  local line = text:match("\nexec ([^\n]*)\n$")
  assert(line, "launcher without a final exec line")
  if consume then os.remove(outer[2]) end -- what its `rm -f -- "$0"` does
  return Fake.sh_argv(line)
end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
Fake.sh_quote = sh_quote

local function file_exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function read_file(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
Fake.read_file = read_file

-- Atomic write like the CLI does (temp + rename).
local function write_atomic(path, text)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path))
end
Fake.write_atomic = write_atomic

Fake.DEFAULT_RENDER = {
  numbers = { RENDER_SETTINGS = 129, RENDER_BOUNDSFLAG = 1, RENDER_CHANNELS = 6, RENDER_SRATE = 96000,
              RENDER_STARTPOS = 1.25, RENDER_ENDPOS = 99.5, RENDER_TAILFLAG = 18, RENDER_TAILMS = 750,
              RENDER_ADDTOPROJ = 1, RENDER_DITHER = 3, RENDER_NORMALIZE = 5 },
  strings = { RENDER_FILE = "/user/renders", RENDER_PATTERN = "$project-$track", RENDER_FORMAT = "l3pm",
              RENDER_FORMAT2 = "ggo" },
}

function Fake.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Fake)
  self.opts = opts
  self.os_name = opts.os_name or "linux-x86_64"
  self.project_dir = assert(opts.project_dir, "project_dir is required")
  self.resource_dir = opts.resource_dir or (self.project_dir .. "/resource")
  self.calls = {}
  self.violations = {}
  self.counts = {}
  self.clock = 1000.0
  self.tick_dt = opts.tick_dt or 0.05
  self.deferred = {}
  self.atexit_fns = {}
  self.tracks = {}
  self.ts, self.te = 0, 0
  self.cursor = 0
  self.tempo = { num = 4, den = 4, bpm = 120 }
  self.project_srate = opts.project_srate or 48000
  self.ext = {}         -- section -> key -> {value, persist}
  self.proj_ext = {}    -- extname -> key -> value
  self.mb_answers = {}
  self.messages = {}
  self.inputs_answers = {}
  self.inputs_asked = {}
  self.file_answers = {}
  self.render = { numbers = {}, strings = {} }
  for k, v in pairs(Fake.DEFAULT_RENDER.numbers) do self.render.numbers[k] = v end
  for k, v in pairs(Fake.DEFAULT_RENDER.strings) do self.render.strings[k] = v end
  self.renders = {}     -- snapshot of the settings at each render
  self.render_mode = "ok" -- "ok" | "nothing" (writes no file) | "raise"
  self.undo = { begin = 0, ["end"] = 0, depth = 0, names = {} }
  self.refresh = 0
  self.exec_mode = opts.exec_mode or "sim" -- "sim" | "background" | "none" (no process at all)
  self.sims = {}
  self.exec_log = {}
  self.extensions = {}  -- name -> function (ImGui_* when simulating ReaImGui)
  self.guards = {}      -- names for which APIExists returned true
  self.gfx_state = { open = false, frames = 0, close_after = opts.gfx_close_after or 3, clicks = {} }
  return self
end

-- ---------------------------------------------------------------------------------------------
-- project model

function Fake:add_track(name)
  local t = { kind = "track", name = name or "", items = {}, selected = false, notes = "" }
  self.tracks[#self.tracks + 1] = t
  return t
end

function Fake:add_item(track, position, length)
  local it = { kind = "item", track = track, position = position, length = length, selected = false,
               takes = {}, notes = "" }
  track.items[#track.items + 1] = it
  return it
end

function Fake:track_index(track)
  for i, t in ipairs(self.tracks) do if t == track then return i - 1 end end
  return nil
end

function Fake:selected_items()
  local out = {}
  for _, t in ipairs(self.tracks) do
    for _, it in ipairs(t.items) do if it.selected then out[#out + 1] = it end end
  end
  return out
end

function Fake:selected_tracks()
  local out = {}
  for _, t in ipairs(self.tracks) do if t.selected then out[#out + 1] = t end end
  return out
end

-- ---------------------------------------------------------------------------------------------
-- the simulated CLI (exec_mode "sim")
-- A scenario is a list of status tables; each is written one after another, one per `every`
-- seconds of fake clock. A step with `audio = true` first writes the output WAV (request.out).

Fake.SCENARIOS = {}

function Fake.SCENARIOS.done(req)
  local steps = {
    { state = "starting" },
    { state = "queued", job = "job-1", queue_position = 1 },
    { state = "running", job = "job-1", stage = "thinking", fraction = 0.2, text = "A calm" },
    { state = "running", job = "job-1", stage = "generating", fraction = 0.6, text = "A calm piano" },
  }
  if req.kind == "ask" then
    steps[#steps + 1] = { state = "done", job = "job-1", text = "A calm piano piece in 3/4.", exit_code = 0 }
  else
    steps[#steps + 1] = { state = "done", job = "job-1", audio = true, audio_path = req.out,
                          duration = req.duration, sample_rate = req.sample_rate, text = "ok", exit_code = 0 }
  end
  return steps
end

function Fake.SCENARIOS.unreachable()
  return { { state = "starting" },
           { state = "failed", error = { code = "unreachable", message = "no reply from tcp://127.0.0.1:5557" },
             exit_code = 3 } }
end

function Fake.SCENARIOS.job_failed()
  return { { state = "starting" }, { state = "queued", job = "job-1", queue_position = 0 },
           { state = "running", job = "job-1", stage = "generating", fraction = 0.3 },
           { state = "failed", job = "job-1", error = { code = "job_failed", message = "CUDA out of memory" },
             exit_code = 4 } }
end

-- never finishes on its own (waits to be cancelled)
function Fake.SCENARIOS.long()
  local steps = { { state = "starting" }, { state = "queued", job = "job-1", queue_position = 2 } }
  for i = 1, 400 do
    steps[#steps + 1] = { state = "running", job = "job-1", stage = "generating", fraction = i / 1000 }
  end
  return steps
end

function Fake.SCENARIOS.silent() return {} end

function Fake:sim_start(argv, cmd)
  local sim = { argv = argv, cmd = cmd, step = 0, every = self.opts.sim_every or 0.1, next_at = self.clock }
  local i = 1
  while i <= #argv do
    if argv[i] == "--request" then sim.request_path = argv[i + 1] end
    if argv[i] == "--status-file" then sim.status_path = argv[i + 1] end
    i = i + 1
  end
  sim.request = json.decode(assert(read_file(sim.request_path), "sim CLI: request file missing"))
  sim.kind = argv[2]
  local scenario = self.scenario or "done"
  sim.steps = type(scenario) == "function" and scenario(sim.request) or Fake.SCENARIOS[scenario](sim.request)
  self.sims[#self.sims + 1] = sim
  return sim
end

function Fake:sim_write(sim, st)
  local s = {}
  for k, v in pairs(st) do if k ~= "audio" then s[k] = v end end
  if s.exit_code == nil then s.exit_code = json.null end
  s.updated = self.clock
  if st.audio then
    local out = sim.request.out
    wav.write(out, sim.request.duration or 1, sim.request.sample_rate or 48000, sim.request.channels or 1)
  end
  write_atomic(sim.status_path, json.encode(s))
  sim.last = s
end

function Fake:sim_advance()
  for _, sim in ipairs(self.sims) do
    if not sim.finished and self.clock >= sim.next_at then
      sim.next_at = self.clock + sim.every
      if sim.cancel_requested then
        self:sim_write(sim, { state = "cancelled", job = sim.last and sim.last.job, exit_code = 5 })
        sim.finished = true
      else
        sim.step = sim.step + 1
        local st = sim.steps[sim.step]
        if st then
          self:sim_write(sim, st)
          if st.exit_code ~= nil then sim.finished = true end
        end
      end
    end
  end
end

function Fake:sim_cancel(argv)
  local id
  for i = 1, #argv do if argv[i] == "cancel" then id = argv[i + 1] end end
  for _, sim in ipairs(self.sims) do
    if sim.last and sim.last.job == id and not sim.finished then sim.cancel_requested = true end
  end
end

-- ---------------------------------------------------------------------------------------------
-- recording + signature checks

function Fake:violation(msg)
  self.violations[#self.violations + 1] = msg
  error("fake reaper: " .. msg, 2)
end

function Fake:count(name) return self.counts[name] or 0 end

function Fake:calls_of(name)
  local out = {}
  for _, c in ipairs(self.calls) do if c.name == name then out[#out + 1] = c end end
  return out
end

function Fake:wrap(name, impl, sig)
  local fake = self
  return function(...)
    local n = select("#", ...)
    fake.calls[#fake.calls + 1] = { name = name, args = table.pack(...) }
    fake.counts[name] = (fake.counts[name] or 0) + 1
    if sig and sig.min_args and (n < sig.min_args or n > sig.max_args) then
      fake:violation(string.format("reaper.%s called with %d argument(s), expected %d..%d", name, n,
        sig.min_args, sig.max_args))
    end
    return impl(...)
  end
end

function Fake:build()
  local sigs = Fake.signatures()
  local impl = self:implementations()
  local fake = self
  local api = setmetatable({}, {
    __index = function(_, name)
      local sig = sigs["reaper." .. name]
      if sig then
        if not impl[name] then fake:violation("no fake implementation of reaper." .. name) end
        return fake:wrap(name, impl[name], sig)
      end
      local ext = fake.extensions[name]
      if ext then
        local prefix = name:match("^(%a+_)")
        if not fake.guards[prefix] then
          fake:violation("extension API reaper." .. name .. " used without a successful APIExists guard")
        end
        return fake:wrap(name, ext, nil)
      end
      fake:violation("unknown REAPER API reaper." .. tostring(name))
    end,
    __newindex = function(_, name) fake:violation("script assigns reaper." .. tostring(name)) end,
  })
  self.reaper = api
  self.gfx = self:build_gfx()
  return api
end

function Fake:install()
  self:build()
  _G.reaper = self.reaper
  _G.gfx = self.gfx
  math.randomseed(7)
end

-- Runs an action script the way REAPER does (the chunk knows its own path).
function Fake:run_script(path)
  local chunk = assert(loadfile(path))
  return chunk()
end

-- Drives the defer queue: each tick runs the functions deferred in the previous tick, advances the
-- fake clock by tick_dt (and, with real processes, sleeps that long), and lets the sim CLI move.
-- opts.max_ticks (default 2000), opts.on_tick(fake, tick) hook (return "stop" to terminate the script
-- like REAPER's 'terminate instances'), opts.real_sleep (seconds per tick).
function Fake:run_defer(opts)
  opts = opts or {}
  local max_ticks = opts.max_ticks or 2000
  local sleeper = nil
  if opts.real_sleep then
    local ok, system = pcall(require, "system")
    if ok and system.sleep then sleeper = system.sleep
    else sleeper = function(s) os.execute("sleep " .. s) end end
  end
  local tick = 0
  while #self.deferred > 0 do
    tick = tick + 1
    if tick > max_ticks then error("defer loop still running after " .. max_ticks .. " ticks") end
    local now = self.deferred
    self.deferred = {}
    self.clock = self.clock + self.tick_dt
    if sleeper then sleeper(opts.real_sleep) end
    self:sim_advance()
    if opts.on_tick and opts.on_tick(self, tick) == "stop" then
      self.deferred = {} -- REAPER terminated the script: nothing deferred runs any more
      break
    end
    for _, fn in ipairs(now) do fn() end
  end
  self.ticks = tick
  local fns = self.atexit_fns
  self.atexit_fns = {}
  for _, fn in ipairs(fns) do fn() end
  return tick
end

-- ---------------------------------------------------------------------------------------------
-- gfx

function Fake:build_gfx()
  local fake = self
  local st = self.gfx_state
  local g = { w = 460, h = 220, x = 0, y = 0, texth = 14, mouse_cap = 0, mouse_x = 0, mouse_y = 0 }
  g.init = function(title, w, h)
    st.open, st.title, st.frames = true, title, 0
    g.w, g.h = w or g.w, h or g.h
    st.inits = (st.inits or 0) + 1
    st.text_mode = (w == 520) -- the answer window (ui.lua opens it 520 wide); closed after a few frames
  end
  g.setfont = function() end
  g.set = function() end
  g.rect = function() end
  g.drawstr = function(s) st.drawn = st.drawn or {} st.drawn[#st.drawn + 1] = s end
  g.measurestr = function(s) return #s * 7, 14 end
  g.update = function() end
  g.quit = function() st.open = false st.quits = (st.quits or 0) + 1 end
  g.getchar = function()
    if not st.open then return -1 end
    st.frames = st.frames + 1
    -- a scheduled click on the progress window's Cancel button (press on frame n, release on n+1)
    local click = st.clicks[1]
    if click and st.frames == click then
      g.mouse_cap, g.mouse_x, g.mouse_y = 1, 20, g.h - 20
    elseif click and st.frames == click + 1 then
      g.mouse_cap = 0
      table.remove(st.clicks, 1)
    end
    if st.text_mode and st.frames > st.close_after then return -1 end
    return 0
  end
  return setmetatable(g, { __index = function(_, k)
    fake.violations[#fake.violations + 1] = "unknown gfx." .. tostring(k)
    error("fake gfx: unknown gfx." .. tostring(k), 2)
  end })
end

-- ---------------------------------------------------------------------------------------------
-- reaper.* implementations

function Fake:implementations()
  local fake = self
  local I = {}

  local function track_of(index) return fake.tracks[index + 1] end

  I.GetOS = function() return fake.os_name end
  I.APIExists = function(name)
    local ok = fake.extensions[name] ~= nil
    if ok then fake.guards[name:match("^(%a+_)")] = true end
    return ok
  end
  I.time_precise = function() return fake.clock end
  I.defer = function(fn)
    assert(type(fn) == "function", "defer needs a function")
    fake.deferred[#fake.deferred + 1] = fn
  end
  I.atexit = function(fn) fake.atexit_fns[#fake.atexit_fns + 1] = fn end
  I.ShowConsoleMsg = function(msg) fake.console = (fake.console or "") .. msg end
  I.ShowMessageBox = function(msg, title, kind)
    fake.messages[#fake.messages + 1] = { msg = msg, title = title, kind = kind }
    local a = table.remove(fake.mb_answers, 1)
    return a or 1
  end
  I.MB = I.ShowMessageBox
  I.GetUserInputs = function(title, n, captions, defaults)
    fake.inputs_asked[#fake.inputs_asked + 1] = { title = title, n = n, captions = captions, defaults = defaults }
    local a = table.remove(fake.inputs_answers, 1)
    if a == nil then return false, defaults end
    if a == false then return false, "" end
    return true, a
  end
  I.GetUserFileNameForRead = function(_, _, _)
    local a = table.remove(fake.file_answers, 1)
    if not a then return false, "" end
    return true, a
  end

  -- ExtState
  I.GetExtState = function(section, key)
    local s = fake.ext[section]
    return s and s[key] and s[key].value or ""
  end
  I.SetExtState = function(section, key, value, persist)
    assert(type(value) == "string", "SetExtState value must be a string")
    if value:find("[\r\n]") then fake:violation("SetExtState value contains a newline: " .. key) end
    fake.ext[section] = fake.ext[section] or {}
    fake.ext[section][key] = { value = value, persist = persist }
  end
  I.HasExtState = function(section, key) return fake.ext[section] ~= nil and fake.ext[section][key] ~= nil end
  I.DeleteExtState = function(section, key, _) if fake.ext[section] then fake.ext[section][key] = nil end end
  I.SetProjExtState = function(_, extname, key, value)
    fake.proj_ext[extname] = fake.proj_ext[extname] or {}
    fake.proj_ext[extname][key] = value
    return 1
  end
  I.GetProjExtState = function(_, extname, key)
    local v = fake.proj_ext[extname] and fake.proj_ext[extname][key]
    return v and 1 or 0, v or ""
  end

  -- paths
  I.GetProjectPathEx = function(_) return fake.project_dir end
  I.GetResourcePath = function() return fake.resource_dir end
  I.RecursiveCreateDirectory = function(path, _)
    os.execute("mkdir -p " .. sh_quote(path))
    return 1
  end

  -- selection / context
  I.GetSet_LoopTimeRange2 = function(_, is_set, _, s, e, _)
    if is_set then fake.ts, fake.te = s, e end
    return fake.ts, fake.te
  end
  I.GetCursorPosition = function() return fake.cursor end
  I.CountSelectedMediaItems = function(_) return #fake:selected_items() end
  I.GetSelectedMediaItem = function(_, i) return fake:selected_items()[i + 1] end
  I.CountSelectedTracks = function(_) return #fake:selected_tracks() end
  I.GetSelectedTrack = function(_, i) return fake:selected_tracks()[i + 1] end
  I.GetMediaItem_Track = function(item) return item.track end
  I.CountTracks = function(_) return #fake.tracks end
  I.GetTrack = function(_, i) return track_of(i) end
  I.TimeMap_GetTimeSigAtTime = function(_, _) return fake.tempo.num, fake.tempo.den, fake.tempo.bpm end
  I.TimeMap2_timeToQN = function(_, t) return t * fake.tempo.bpm / 60 end
  I.TimeMap2_QNToTime = function(_, qn) return qn * 60 / fake.tempo.bpm end
  I.GetAudioDeviceInfo = function(attr)
    if attr == "SRATE" then return true, "44100" end
    return false, ""
  end

  -- project info / render
  I.GetSetProjectInfo = function(_, key, value, is_set)
    if key == "PROJECT_SRATE_USE" then return fake.project_srate and 1 or 0 end
    if key == "PROJECT_SRATE" then return fake.project_srate or 0 end
    if fake.render.numbers[key] == nil then fake:violation("fake has no project info " .. key) end
    if is_set then fake.render.numbers[key] = value end
    return fake.render.numbers[key]
  end
  I.GetSetProjectInfo_String = function(_, key, value, is_set)
    if key == "RENDER_TARGETS" then
      local r = fake.render.strings
      return true, r.RENDER_FILE .. "/" .. r.RENDER_PATTERN .. ".wav"
    end
    if fake.render.strings[key] == nil then fake:violation("fake has no project info string " .. key) end
    if is_set then fake.render.strings[key] = value end
    return true, fake.render.strings[key]
  end
  I.Main_OnCommand = function(cmd, _)
    if cmd == 42230 then
      local snap = { numbers = {}, strings = {} }
      for k, v in pairs(fake.render.numbers) do snap.numbers[k] = v end
      for k, v in pairs(fake.render.strings) do snap.strings[k] = v end
      fake.renders[#fake.renders + 1] = snap
      if fake.render_mode == "raise" then error("simulated render crash") end
      if fake.render_mode == "ok" then
        local r = fake.render.numbers
        local len
        if r.RENDER_BOUNDSFLAG == 0 then len = r.RENDER_ENDPOS - r.RENDER_STARTPOS
        else
          local s, e = math.huge, -math.huge
          for _, it in ipairs(fake:selected_items()) do
            s = math.min(s, it.position) e = math.max(e, it.position + it.length)
          end
          len = e - s
        end
        snap.path = fake.render.strings.RENDER_FILE .. "/" .. fake.render.strings.RENDER_PATTERN .. ".wav"
        snap.seconds = len
        wav.write(snap.path, len, 8000, r.RENDER_CHANNELS)
      end
    elseif cmd == 40047 then
      fake.peaks_built = (fake.peaks_built or 0) + 1
    else
      fake:violation("fake does not simulate action " .. tostring(cmd))
    end
  end

  -- processes
  I.ExecProcess = function(cmd, timeout)
    local entry = { cmd = cmd, timeout = timeout }
    fake.exec_log[#fake.exec_log + 1] = entry
    if fake.exec_mode == "none" then
      entry.argv = fake:exec_argv(cmd, false)
      return nil
    end
    if fake.exec_mode == "background" then
      entry.argv = fake:exec_argv(cmd, false)
      os.execute(cmd .. " >/dev/null 2>&1 &")
      return ""
    end
    local argv = fake:exec_argv(cmd, true)
    entry.argv = argv
    if argv[2] == "cancel" then fake:sim_cancel(argv) return "" end
    fake:sim_start(argv, cmd)
    return ""
  end

  -- undo / refresh
  I.Undo_BeginBlock2 = function(_)
    fake.undo.begin = fake.undo.begin + 1
    fake.undo.depth = fake.undo.depth + 1
  end
  I.Undo_EndBlock2 = function(_, name, _)
    fake.undo["end"] = fake.undo["end"] + 1
    fake.undo.depth = fake.undo.depth - 1
    fake.undo.names[#fake.undo.names + 1] = name
  end
  I.PreventUIRefresh = function(n) fake.refresh = fake.refresh + n end
  I.UpdateArrange = function() end

  -- tracks / items / takes / sources
  I.InsertTrackAtIndex = function(idx, _)
    idx = math.max(0, math.min(idx, #fake.tracks))
    table.insert(fake.tracks, idx + 1, { kind = "track", name = "", items = {}, selected = false, notes = "",
                                         created = true })
  end
  I.DeleteTrack = function(tr)
    local i = fake:track_index(tr)
    if i then table.remove(fake.tracks, i + 1) end
  end
  I.GetMediaTrackInfo_Value = function(tr, key)
    if key == "IP_TRACKNUMBER" then return (fake:track_index(tr) or -2) + 1 end
    fake:violation("fake has no track value " .. key)
  end
  I.GetSetMediaTrackInfo_String = function(tr, key, value, set)
    if key ~= "P_NAME" then fake:violation("fake has no track string " .. key) end
    if set then tr.name = value end
    return true, tr.name
  end
  I.AddMediaItemToTrack = function(tr) return fake:add_item(tr, 0, 0) end
  I.AddTakeToMediaItem = function(item)
    local take = { kind = "take", item = item, name = "", ext = {} }
    item.takes[#item.takes + 1] = take
    return take
  end
  I.GetMediaItemInfo_Value = function(item, key)
    if key == "D_POSITION" then return item.position end
    if key == "D_LENGTH" then return item.length end
    fake:violation("fake has no item value " .. key)
  end
  I.SetMediaItemInfo_Value = function(item, key, v)
    if key == "D_POSITION" then item.position = v return true end
    if key == "D_LENGTH" then item.length = v return true end
    fake:violation("fake has no item value " .. key)
  end
  I.GetSetMediaItemInfo_String = function(item, key, value, set)
    if key ~= "P_NOTES" then fake:violation("fake has no item string " .. key) end
    if set then item.notes = value end
    return true, item.notes
  end
  I.GetSetMediaItemTakeInfo_String = function(take, key, value, set)
    if key == "P_NAME" then
      if set then take.name = value end
      return true, take.name
    end
    local ext = key:match("^P_EXT:(.+)$")
    if not ext then fake:violation("fake has no take string " .. key) end
    if set then take.ext[ext] = value end
    return true, take.ext[ext] or ""
  end
  I.PCM_Source_CreateFromFile = function(path)
    local info = wav.info(path)
    if not info then return nil end
    return { kind = "source", path = path, info = info }
  end
  I.PCM_Source_Destroy = function(src) src.destroyed = true end
  I.GetMediaSourceLength = function(src) return src.info.seconds, false end
  I.SetMediaItemTake_Source = function(take, src)
    if fake.refuse_source then return false end
    take.source = src
    return true
  end

  return I
end

-- Enables a fake ReaImGui. opts.button_at = frame on which Button() returns true.
function Fake:enable_imgui(opts)
  opts = opts or {}
  local fake = self
  local frames = 0
  fake.imgui = { texts = {}, begins = 0, ends = 0, contexts = 0 }
  local E = self.extensions
  E.ImGui_CreateContext = function(_) fake.imgui.contexts = fake.imgui.contexts + 1 return { ctx = true } end
  E.ImGui_Cond_FirstUseEver = function() return 4 end
  E.ImGui_SetNextWindowSize = function() end
  E.ImGui_Begin = function(_, _, _)
    frames = frames + 1
    fake.imgui.begins = fake.imgui.begins + 1
    if opts.close_at and frames >= opts.close_at then return true, false end
    return true, true
  end
  E.ImGui_End = function() fake.imgui.ends = fake.imgui.ends + 1 end
  E.ImGui_Text = function(_, s) fake.imgui.texts[#fake.imgui.texts + 1] = s end
  E.ImGui_TextWrapped = function(_, s) fake.imgui.texts[#fake.imgui.texts + 1] = s end
  E.ImGui_ProgressBar = function(_, f) fake.imgui.last_fraction = f end
  E.ImGui_Button = function(_, label)
    return opts.button_at ~= nil and frames == opts.button_at and label ~= nil
  end
end

-- Writes a discovery file <dir>/server.json naming `cli`.
function Fake.write_discovery(dir, cli, extra)
  os.execute("mkdir -p " .. sh_quote(dir))
  local d = { version = "test", protocol = 1, endpoint = "tcp://127.0.0.1:5557", cli = cli }
  for k, v in pairs(extra or {}) do d[k] = v end
  write_atomic(dir .. "/server.json", json.encode(d))
end

Fake.json = json
Fake.wav = wav
Fake.file_exists = file_exists

return Fake
