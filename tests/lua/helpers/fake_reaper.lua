-- A recording fake of REAPER's Lua API that simulates REAPER with several project tabs: tracks,
-- items with takes, markers, render settings, ExtState/ProjExtState, and a simulated m2ugen CLI
-- (scenarios, including one that dies, one that never starts, takes and analysis records).
--
--   fake.main                      the first project; fake.tracks, fake.ts, fake.render, ... are its
--   fake:add_project(name)         another tab; fake:switch_project(p) makes it current
--   fake:close_project(p)          closes a tab (its pointers stop validating)
--   fake:open_in_tab(p, name)      File > Open in the same tab: the same ReaProject*, another project
--   fake:fill_disk(dir, bytes)     writes under dir fail once `bytes` more were written (a full disk)
--   fake:heard(item)               the level a listener hears from an item (file peak x take FX x item
--                                  volume x track FX/volume x master FX/volume)
--
-- Audio model (issue 22): every source is a 440 Hz sine; a track has fx_gain (its FX chain, bypassed
-- by I_FXEN = 0) and vol (D_VOL), so has the master track (GetMasterTrack); an item has vol (D_VOL),
-- its take fx_gain (take FX). A render writes a sine whose peak is what that render source hears
-- (RENDER_SETTINGS: master mix, &2 stems, &32 selected items, &64 items via master, &128 selected
-- tracks via master -- one file per track or item unless &(4<<16) for items), so an FX applied twice
-- shows in the level of the inserted result.
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

-- Corrections to the generated signature list (the same ones tests/test_reaper_api.py applies):
-- the luadoc source declares set_action_options() without its parameter, but its own text
-- describes `flag` (&1 auto-terminate on relaunch, &2 relaunch, &4 toggle on, &8 toggle off) and
-- REAPER 7.03+ takes exactly one integer.
Fake.SIGNATURE_PATCHES = {
  ["reaper.set_action_options"] = { min_args = 1, max_args = 1 },
}

local signatures_cache = nil
function Fake.signatures()
  if not signatures_cache then
    local f = assert(io.open(Fake.SIGNATURES, "rb"), "signatures file missing: " .. Fake.SIGNATURES)
    local doc = json.decode(f:read("a"))
    f:close()
    signatures_cache = doc.functions
    for name, patch in pairs(Fake.SIGNATURE_PATCHES) do
      local sig = assert(signatures_cache[name], "patched function missing from the list: " .. name)
      for k, v in pairs(patch) do sig[k] = v end
    end
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
-- UTF-16LE (with BOM) -> UTF-8: how wscript reads a Unicode .vbs.
function Fake.utf16le_to_utf8(blob)
  assert(blob:sub(1, 2) == "\255\254", "a .vbs without the UTF-16LE BOM (wscript would read it as ANSI)")
  local out, i = {}, 3
  while i + 1 <= #blob do
    local u = string.unpack("<I2", blob, i)
    i = i + 2
    if u >= 0xD800 and u <= 0xDBFF then
      local lo = string.unpack("<I2", blob, i)
      i = i + 2
      u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
    end
    out[#out + 1] = utf8.char(u)
  end
  return table.concat(out)
end

-- Windows: ExecProcess starts a console program in a console window ("-2 for no wait and minimize"
-- still shows one on the taskbar), so the scripts start `wscript.exe //B //Nologo "<launcher.vbs>"`
-- (wscript is a GUI program: no console), whose WshShell.Run(cmd, 0, wait) runs the CLI with window
-- style 0 = hidden (Microsoft's WshShell.Run documentation) and, when it waits, writes its exit code.
-- Returns the CLI argv and {exit_file, out_file, window_style}.
function Fake:windows_exec(cmd, consume)
  local path = cmd:match('^wscript%.exe //B //Nologo "([^"]+)"$')
  if not path then
    self:violation("ExecProcess on Windows without the hidden wscript launcher (a console window flashes): " .. cmd)
  end
  local blob = assert(Fake.read_file(path), "launcher .vbs missing: " .. path)
  local text = Fake.utf16le_to_utf8(blob):gsub("\r\n", "\n")
  assert(text:find("\nfs.DeleteFile WScript.ScriptFullName\n", 1, true), "the .vbs does not delete itself")
  local lit, style, wait = text:match('\nrc = sh%.Run%("(.-)", (%d+), (%a+)%)\n')
  assert(lit, "no WshShell.Run line in the .vbs")
  local line = lit:gsub('""', '"') -- a VBScript string literal: "" is one "
  local files = { window_style = tonumber(style), wait = wait == "True" }
  local exit_lit = text:match('\nexitFile = "(.-)"\n')
  if exit_lit then files.exit_file = exit_lit:gsub('""', '"') end
  -- `cmd.exe /s /c "<command> > "<out>""`: /s strips the outer quotes, the rest is run with its redirect
  local inner = line:match('^cmd%.exe /s /c "(.*)"$')
  if inner then
    local command, out = inner:match('^(.*) > "([^"]+)"$')
    assert(command, "cmd.exe without an output redirect: " .. inner)
    line, files.out_file = command, out
  end
  if consume then os.remove(path) end
  return Fake.windows_argv(line), files
end

function Fake:exec_argv(cmd, consume)
  if self.os_name:match("^Win") then return self:windows_exec(cmd, consume) end
  local outer = Fake.reaper_split(cmd)
  assert(#outer == 2 and outer[1] == "/bin/sh", "not a launcher command: " .. cmd)
  local text = assert(Fake.read_file(outer[2]), "launcher script missing: " .. outer[2])
  assert(text:sub(1, 10) == "#!/bin/sh\n", "launcher without #!/bin/sh")
  assert(text:find('\nrm %-f %-%- "%$0"\n'), "launcher does not delete itself")
  local line = text:match("\nexec ([^\n]*)\n$")
  local files = nil
  local out_q = text:match("\nM2UGEN_OUT=([^\n]*)\n")
  if out_q then
    -- output to a file: `exec <argv> >"$M2UGEN_OUT"`
    line = text:match('\nexec ([^\n]*) >"%$M2UGEN_OUT"\n$')
    assert(line, "launcher with M2UGEN_OUT but no redirected exec line")
    files = { out_file = Fake.sh_argv(out_q)[1] }
  elseif not line then
    -- a supervising launcher: the CLI runs as a child; pid and exit status go to files
    line = text:match("\n([^\n]*) </dev/null &\npid=%$!\n")
    local pid_q = text:match("\nM2UGEN_PID_FILE=([^\n]*)\n")
    local exit_q = text:match("\nM2UGEN_EXIT_FILE=([^\n]*)\n")
    assert(line and pid_q and exit_q, "launcher without an exec line or a supervised child")
    assert(text:find('\nwait "%$pid"\ncode=%$%?\n'), "supervising launcher does not wait for its child")
    files = { pid_file = Fake.sh_argv(pid_q)[1], exit_file = Fake.sh_argv(exit_q)[1] }
  end
  if consume then os.remove(outer[2]) end -- what its `rm -f -- "$0"` does
  return Fake.sh_argv(line), files
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

-- Fields of the first project that the specs read and write on the fake itself (fake.tracks, ...).
local PROJECT_FIELDS = { tracks = true, ts = true, te = true, cursor = true, tempo = true, project_srate = true,
                         proj_ext = true, render = true, renders = true, render_mode = true, markers = true,
                         project_dir = true }

Fake.__index = function(t, k)
  local main = rawget(t, "main")
  if main and PROJECT_FIELDS[k] then return main[k] end
  return Fake[k]
end
Fake.__newindex = function(t, k, v)
  local main = rawget(t, "main")
  if main and PROJECT_FIELDS[k] then main[k] = v else rawset(t, k, v) end
end

function Fake:new_project(name, dir)
  local p = { kind = "project", name = name or "", project_dir = dir, tracks = {}, ts = 0, te = 0, cursor = 0,
              tempo = { num = 4, den = 4, bpm = 120 }, project_srate = self.opts.project_srate or 48000,
              proj_ext = {}, render = { numbers = {}, strings = {} }, renders = {}, render_mode = "ok",
              markers = {}, open = true }
  -- GetMasterTrack(proj): the master track, with its FX (I_FXEN) and volume (D_VOL)
  p.master = { kind = "track", project = p, name = "MASTER", items = {}, selected = false, mute = 0, master = true,
               fx_gain = 1, fxen = 1, vol = 1 }
  for k, v in pairs(Fake.DEFAULT_RENDER.numbers) do p.render.numbers[k] = v end
  for k, v in pairs(Fake.DEFAULT_RENDER.strings) do p.render.strings[k] = v end
  return p
end

function Fake.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Fake)
  self.opts = opts
  self.os_name = opts.os_name or "linux-x86_64"
  local main = self:new_project("project.rpp", assert(opts.project_dir, "project_dir is required"))
  rawset(self, "main", main)
  self.projects = { main }
  self.current = main
  self.resource_dir = opts.resource_dir or (main.project_dir .. "/resource")
  self.calls = {}
  self.violations = {}
  self.counts = {}
  self.clock = 1000.0
  self.tick_dt = opts.tick_dt or 0.05
  self.deferred = {}
  self.atexit_fns = {}
  self.ext = {}         -- section -> key -> {value, persist}
  self.mb_answers = {}
  self.messages = {}
  self.inputs_answers = {}
  self.inputs_asked = {}
  self.file_answers = {}
  self.menu_answers = {}
  self.menus = {}
  self.undo = { begin = 0, ["end"] = 0, depth = 0, names = {}, projects = {} }
  self.refresh = 0
  self.exec_mode = opts.exec_mode or "sim" -- "sim" | "background" | "none" (no process at all)
  self.sims = {}
  self.exec_log = {}
  self.kills = {}
  self.action_options = {}
  self.extensions = {}  -- name -> function (ImGui_* when simulating ReaImGui, CF_* for SWS)
  self.guards = {}      -- names for which APIExists returned true
  self.gfx_state = { open = false, frames = 0, close_after = opts.gfx_close_after or 3, clicks = {}, keys = {} }
  -- every running script instance has its own gfx window ("Initializes the graphics window" -- one
  -- per script; gfx.getchar "returns ... -1 if the graphics window is not open", reaper-api.lua):
  -- fake:run_script(path, {instance = "x"}) runs a second script beside the first
  self.gfx_states = { main = self.gfx_state }
  self.cur_instance = "main"
  return self
end

-- ---------------------------------------------------------------------------------------------
-- project model

function Fake:add_project(name, dir)
  local p = self:new_project(name, dir or (self.main.project_dir .. "/" .. name))
  os.execute("mkdir -p " .. Fake.sh_quote(p.project_dir))
  self.projects[#self.projects + 1] = p
  return p
end

function Fake:switch_project(p) self.current = p end

function Fake:close_project(p)
  p.open = false
  for i, q in ipairs(self.projects) do if q == p then table.remove(self.projects, i) break end end
  if self.current == p then self.current = self.projects[1] end
end

-- The project a proj argument means (0 = the current tab); a closed project is a violation.
function Fake:proj(arg)
  if arg == 0 or arg == nil then return self.current end
  if type(arg) == "table" and arg.kind == "project" then
    if not arg.open then self:violation("a closed project was passed to the API") end
    return arg
  end
  self:violation("not a project: " .. tostring(arg))
end

-- File > Open in the same tab: REAPER keeps the tab's ReaProject* and loads another project into it
-- (EnumProjects(-1) then returns the same pointer with another projfn; the old project's tracks,
-- items and takes stop validating: ValidatePtr2 "returns true if the pointer is a valid object of
-- the correct type in proj" -- reaper-api.lua).
function Fake:open_in_tab(p, name, dir)
  for _, t in ipairs(p.tracks) do t.project = { kind = "project", open = false, tracks = {} } end
  p.tracks, p.markers, p.proj_ext, p.renders = {}, {}, {}, {}
  p.name = name
  p.project_dir = dir or (self.main.project_dir .. "/" .. name:gsub("%.rpp$", ""))
  os.execute("mkdir -p " .. Fake.sh_quote(p.project_dir))
  p.ts, p.te = 0, 0
end

-- A full disk under `dir`: once `bytes` more bytes were written there, writes fail. Lua's file:write
-- "returns fail plus an error message" on error and file:close does the same (Lua 5.4 manual §6.8);
-- with opts.buffered the error shows only at close (C stdio buffers: fclose flushes, reports ENOSPC).
-- Files that did not fit stay behind truncated, as on a real disk.
Fake.real_io_open = Fake.real_io_open or io.open
function Fake:fill_disk(dir, bytes, opts)
  opts = opts or {}
  local fake = self
  fake.disk = { dir = dir, left = bytes, buffered = opts.buffered, failures = 0 }
  io.open = function(path, mode)
    local f, err, code = Fake.real_io_open(path, mode)
    if not f or not fake.disk or not (mode or "r"):find("[wa]") or path:sub(1, #dir) ~= dir then
      return f, err, code
    end
    local proxy, failed = {}, false
    local function enospc()
      fake.disk.failures = fake.disk.failures + 1
      return nil, path .. ": No space left on device", 28
    end
    function proxy.write(_, ...)
      for _, chunk in ipairs({ ... }) do
        chunk = tostring(chunk)
        local fit = math.max(0, math.min(#chunk, fake.disk.left))
        f:write(chunk:sub(1, fit))
        fake.disk.left = fake.disk.left - fit
        if fit < #chunk then
          failed = true
          if not fake.disk.buffered then return enospc() end
        end
      end
      return proxy
    end
    function proxy.close()
      f:close()
      if failed then return enospc() end
      return true
    end
    function proxy.seek(_, ...) return f:seek(...) end
    function proxy.flush() if failed then return enospc() end return proxy end
    function proxy.setvbuf(_, ...) return f:setvbuf(...) end
    return proxy
  end
end
function Fake.restore_io() io.open = Fake.real_io_open end

-- Gain of a track's FX chain and volume (I_FXEN = 0 bypasses the FX).
local function track_gain(t) return (t.fxen ~= 0 and t.fx_gain or 1) * (t.vol or 1) end
local function take_gain(item) return item.active and item.active.fx_gain or 1 end
Fake.track_gain = track_gain

-- What a listener hears from `item` at playback: its active take's file peak through take FX, item
-- volume, its track and the master.
function Fake:heard(item)
  local take = assert(item.active, "item without a take")
  local p = item.track.project
  return wav.gain(take.source.path) * take_gain(item) * (item.vol or 1) * track_gain(item.track) * track_gain(p.master)
end

function Fake:add_track(name, p)
  p = p or self.main
  local t = { kind = "track", project = p, name = name or "", items = {}, selected = false, mute = 0,
              fx_gain = 1, fxen = 1, vol = 1, depth = 0 }
  p.tracks[#p.tracks + 1] = t
  return t
end

function Fake:add_item(track, position, length)
  local it = { kind = "item", track = track, position = position, length = length, selected = false,
               takes = {}, active = nil, notes = "", mute = 0, ext = {}, vol = 1, loop = 0 }
  track.items[#track.items + 1] = it
  return it
end

-- A take on `item` playing `path` (a WAV made with wav.write), made active.
function Fake:add_take(item, path, name)
  local take = { kind = "take", item = item, name = name or "", ext = {}, fx_gain = 1,
                 source = { kind = "source", path = path, info = wav.info(path) } }
  item.takes[#item.takes + 1] = take
  item.active = take
  return take
end

-- A MIDI take on `item`, made active: notes = {{start_ppq, end_ppq, pitch, vel, chan, muted}, ...}
-- (PPQ from the item's start, Fake.PPQ per quarter note, placed on the project's tempo map).
Fake.PPQ = 960
-- length_qn: the MIDI source's length in quarter notes (default: the item's length). A looped item
-- (item.loop = 1, B_LOOPSRC) longer than its source plays the source again and again; MIDI_GetNote
-- lists the source's events once and MIDI_GetProjTimeFromPPQPos maps them into the first loop.
function Fake:add_midi_take(item, notes, name, length_qn)
  local p = item.track.project
  local qn0 = Fake.time_to_qn(p, item.position)
  length_qn = length_qn or (Fake.time_to_qn(p, item.position + item.length) - qn0)
  local take = { kind = "take", item = item, name = name or "", ext = {}, midi = {},
                 source = { kind = "source", path = "", midi = true, length_qn = length_qn } }
  for i, n in ipairs(notes or {}) do
    take.midi[i] = { s = n[1], e = n[2], pitch = n[3], vel = n[4] or 100, chan = n[5] or 0, muted = n[6] or false }
  end
  item.takes[#item.takes + 1] = take
  item.active = take
  return take
end

-- Quarter notes <-> seconds on a project's tempo map: p.tempo_map = {{qn = 0, bpm = 120}, {qn = 8,
-- bpm = 60}, ...} (constant tempo between markers), else the constant p.tempo.bpm.
local function tempo_segments(p)
  return p.tempo_map or { { qn = 0, bpm = p.tempo.bpm } }
end
function Fake.qn_to_time(p, qn)
  local segs, t = tempo_segments(p), 0
  for i, seg in ipairs(segs) do
    local nxt = segs[i + 1]
    if not nxt or qn <= nxt.qn then return t + (qn - seg.qn) * 60 / seg.bpm end
    t = t + (nxt.qn - seg.qn) * 60 / seg.bpm
  end
end
function Fake.time_to_qn(p, time)
  local segs, t = tempo_segments(p), 0
  for i, seg in ipairs(segs) do
    local nxt = segs[i + 1]
    local seg_len = nxt and (nxt.qn - seg.qn) * 60 / seg.bpm or math.huge
    if time <= t + seg_len then return seg.qn + (time - t) * seg.bpm / 60 end
    t = t + seg_len
  end
end

function Fake:track_index(track)
  local p = track.project
  for i, t in ipairs(p.tracks) do if t == track then return i - 1 end end
  return nil
end

-- The folder tree as REAPER builds it from I_FOLDERDEPTH (see GetMediaTrackInfo_Value): for each
-- track (in order) {track, level, parent}; `open` = the folders still open after the last track (0 in a
-- well-formed project). A depth that closes more folders than are open closes them all (ASSUMED, no
-- documentation says it; reaper_scripts/README.md lists it among what a real-REAPER run must confirm).
function Fake.folder_tree(p)
  local out, stack = {}, {}
  for i, t in ipairs(p.tracks) do
    out[i] = { track = t, level = #stack, parent = stack[#stack] }
    if t.depth > 0 then
      for _ = 1, t.depth do stack[#stack + 1] = t end
    elseif t.depth < 0 then
      for _ = 1, math.min(-t.depth, #stack) do stack[#stack] = nil end
    end
  end
  out.open = #stack
  return out
end

function Fake:selected_items(p)
  p = p or self.current
  local out = {}
  for _, t in ipairs(p.tracks) do
    for _, it in ipairs(t.items) do if it.selected then out[#out + 1] = it end end
  end
  return out
end

function Fake:selected_tracks(p)
  p = p or self.current
  local out = {}
  for _, t in ipairs(p.tracks) do if t.selected then out[#out + 1] = t end end
  return out
end

local function alive_track(t) return t.project.open and Fake.index_of(t.project.tracks, t) ~= nil end
function Fake.index_of(list, x)
  for i, v in ipairs(list) do if v == x then return i end end
  return nil
end

-- ---------------------------------------------------------------------------------------------
-- the simulated CLI (exec_mode "sim")
-- A scenario is a list of status tables; each is written one after another, one per `every`
-- seconds of fake clock. A step with `audio = true` first writes the output WAV (request.out) and,
-- with `--takes N`, the other takes next to it. A step with `die = code` ends the process without
-- a final status (the launcher then writes its exit file). fake.start_delay: seconds before the
-- CLI reads its request (a slow start); a request gone by then makes it exit with a usage error.

Fake.SCENARIOS = {}

Fake.ANALYSIS = { duration_s = 4.0, channels = 2, sample_rate = 48000, bpm = 92.0, beats = json.null,
                  downbeats = json.null, meter = 4, key = 6, mode = "minor", key_name = "F# minor",
                  key_confidence = 0.81, lufs = -14.0, true_peak_dbtp = -1.2, peak_dbfs = -1.5,
                  summary = "92 BPM, F# minor, -14.0 LUFS, 4.0 s" }

function Fake.SCENARIOS.done(req)
  local steps = {
    { state = "starting" },
    { state = "queued", job = "job-1", queue_position = 1 },
    { state = "running", job = "job-1", stage = "thinking", fraction = 0.2, text = "A calm" },
    { state = "running", job = "job-1", stage = "generating", fraction = 0.6, text = "A calm piano" },
  }
  if req.kind == "ask" then
    steps[#steps + 1] = { state = "done", job = "job-1", text = "A calm piano piece in 3/4.", exit_code = 0 }
  elseif req.kind == "stems" then
    steps[#steps + 1] = { state = "done", job = "job-1", stems = true, text = "4 stems", exit_code = 0 }
  else
    steps[#steps + 1] = { state = "done", job = "job-1", audio = true, audio_path = req.out,
                          duration = req.duration, sample_rate = req.sample_rate, text = "ok", exit_code = 0 }
  end
  return steps
end

-- the server contract the lead adds: analysis of the source and the result, takes with seeds
function Fake.SCENARIOS.analysed(req)
  local steps = Fake.SCENARIOS.done(req)
  local last = steps[#steps]
  last.analysis = Fake.ANALYSIS
  last.seed = 101
  if req.kind ~= "ask" then
    local ra = {}
    for k, v in pairs(Fake.ANALYSIS) do ra[k] = v end
    ra.summary = "120 BPM, A minor, -12.0 LUFS, 4.0 s"
    last.result_analysis = ra
  end
  return steps
end

-- an answer whose tempo level the server was unsure of (m2ugen.analysis: bpm_confidence under 0.8
-- names the next likely level, here half the tempo, in bpm_alternative and in the summary)
function Fake.SCENARIOS.unsure_tempo(req)
  local steps = Fake.SCENARIOS.done(req)
  local a = {}
  for k, v in pairs(Fake.ANALYSIS) do a[k] = v end
  a.bpm, a.bpm_confidence, a.bpm_alternative = 146.0, 0.55, 73.0
  a.summary = "146 BPM (or 73), F# minor, -14.0 LUFS, 4.0 s"
  steps[#steps].analysis = a
  return steps
end

-- an edit that changes nothing: the result is exactly as loud as what the model heard (so any gain
-- between the two comes from the project: an FX applied twice)
function Fake.SCENARIOS.identity(req)
  local steps = Fake.SCENARIOS.done(req)
  steps[#steps].gain = "input"
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

-- the process is killed mid-job (a crash, or the console closed): no final status
function Fake.SCENARIOS.dies()
  return { { state = "starting" }, { state = "queued", job = "job-1", queue_position = 0 },
           { state = "running", job = "job-1", stage = "generating", fraction = 0.3 }, { die = 137 } }
end

-- the process hangs (or is gone without anyone writing an exit file): the status stops changing
function Fake.SCENARIOS.hangs()
  return { { state = "starting" }, { state = "running", job = "job-1", stage = "generating", fraction = 0.3 },
           { hang = true } }
end

-- writes its status file, then never reaches the server
function Fake.SCENARIOS.stuck_starting()
  return { { state = "starting" }, { hang = true } }
end

-- ignores cancel requests (and never finishes)
function Fake.SCENARIOS.deaf()
  local steps = Fake.SCENARIOS.long()
  steps.deaf = true
  return steps
end

function Fake.SCENARIOS.silent() return {} end

Fake.STEMS = { htdemucs = { "drums", "bass", "other", "vocals" },
               htdemucs_6s = { "drums", "bass", "other", "vocals", "guitar", "piano" } }
Fake.STEM_GAINS = { 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625 }

local function opt_value(argv, name)
  for i = 1, #argv do if argv[i] == name then return argv[i + 1] end end
  return nil
end

function Fake:sim_start(argv, cmd, files)
  local sim = { argv = argv, cmd = cmd, step = 0, every = self.opts.sim_every or 0.1, next_at = self.clock,
                files = files or {}, started_at = self.clock, pid = 4000 + #self.sims + 1 }
  sim.request_path = opt_value(argv, "--request")
  sim.status_path = opt_value(argv, "--status-file")
  sim.kind = argv[2]
  sim.takes = tonumber(opt_value(argv, "--takes") or "1")
  sim.fit_tempo = Fake.index_of(argv, "--fit-tempo") ~= nil
  if sim.files.pid_file then write_atomic(sim.files.pid_file, sim.pid .. "\n") end
  self.sims[#self.sims + 1] = sim
  if (self.start_delay or 0) <= 0 then self:sim_read_request(sim) end
  return sim
end

-- Reading the request (and, for `result`, the job): what the real CLI does first.
function Fake:sim_read_request(sim)
  sim.read = true
  if sim.kind == "result" then
    sim.request = { kind = "result", out = opt_value(sim.argv, "--out"), job = sim.argv[3] }
    local scenario = self.result_scenario or function(req)
      return { { state = "running", job = req.job }, { state = "done", job = req.job, audio = true,
               audio_path = req.out, duration = 2.0, sample_rate = 48000, exit_code = 0 } }
    end
    sim.steps = scenario(sim.request)
    return
  end
  if sim.kind == "stems" then
    -- `m2ugen stems FILE --out DIR [--stem-model M]` (server/cli/stems.py): no request file
    sim.request = { kind = "stems", audio = sim.argv[3], out_dir = opt_value(sim.argv, "--out"),
                    stem_model = opt_value(sim.argv, "--stem-model") }
    if not file_exists(sim.request.audio or "") then
      sim.steps = { { state = "failed", error = { code = "usage", message = "no such file" }, exit_code = 2 } }
      return
    end
    sim.input_info = wav.info(sim.request.audio)
    sim.submitted = true
    local scenario = self.scenario or "done"
    sim.steps = type(scenario) == "function" and scenario(sim.request) or Fake.SCENARIOS[scenario](sim.request)
    return
  end
  local text = sim.request_path and read_file(sim.request_path)
  if not text then
    sim.steps = { { state = "failed", error = { code = "usage", message = "--request: no such file" }, exit_code = 2 } }
    sim.usage_error = true
    return
  end
  sim.request = json.decode(text)
  -- what the model hears: the level of the rendered input (the file is gone once the job ends)
  if type(sim.request.audio) == "string" and file_exists(sim.request.audio) then
    sim.input_gain = wav.gain(sim.request.audio)
    sim.input_seconds = wav.info(sim.request.audio).seconds
  end
  sim.submitted = true
  local scenario = self.scenario or "done"
  sim.steps = type(scenario) == "function" and scenario(sim.request) or Fake.SCENARIOS[scenario](sim.request)
end

function Fake:sim_exit(sim, code)
  sim.finished = true
  sim.exit = code
  if sim.files.exit_file then write_atomic(sim.files.exit_file, code .. "\n") end
end

function Fake:sim_write(sim, st)
  local s = {}
  for k, v in pairs(st) do if k ~= "audio" and k ~= "gain" and k ~= "stems" then s[k] = v end end
  local gain = st.gain == "input" and sim.input_gain or 1
  if s.exit_code == nil then s.exit_code = json.null end
  s.updated = 1.7e9 + self.clock -- time.time() in the real CLI
  if st.stems then
    -- one WAV per stem, <out>/<input name>-<stem>.wav, the input's rate, channels and frames (the server
    -- keeps the source's rate and length, docs/protocol.md §2.6); stem i at level Fake.STEM_GAINS[i]
    -- (`m2ugen result JOB --out OUT` of a stems job: <OUT name>-<stem>.wav, 2 s at 48 kHz, server/client.py)
    local info, base
    if sim.request.kind == "result" then
      info, base = { rate = 48000, channels = 2, frames = 96000 }, sim.request.out:gsub("%.wav$", "")
    else
      info = sim.input_info
      base = sim.request.out_dir .. "/" .. sim.request.audio:match("([^/]+)%.wav$")
    end
    s.takes = {}
    for i, stem in ipairs(Fake.STEMS[sim.request.stem_model or "htdemucs"]) do
      local p = base .. "-" .. stem .. ".wav"
      wav.write(p, info.frames / info.rate, info.rate, info.channels, Fake.STEM_GAINS[i])
      s.takes[i] = { take = i, stem = stem, audio_path = p }
    end
    s.audio_path, s.sample_rate, s.duration = s.takes[1].audio_path, info.rate, info.frames / info.rate
    write_atomic(base .. ".json", json.encode({ job = st.job, stems = #s.takes }))
  end
  if st.audio then
    local out = sim.request.out
    local duration = sim.request.duration or 2
    wav.write(out, duration, sim.request.sample_rate or 48000, sim.request.channels or 1, gain)
    if sim.takes > 1 then
      local takes = { { audio_path = out, seed = st.seed or 101 } }
      for i = 2, sim.takes do
        local p = out:gsub("%.wav$", "") .. "-take" .. i .. ".wav"
        wav.write(p, duration, sim.request.sample_rate or 48000, sim.request.channels or 1)
        takes[i] = { audio_path = p, seed = (st.seed or 101) + i - 1 }
      end
      s.takes = takes
      s.seed = s.seed or 101
    end
  end
  local text = json.encode(s)
  if (self.partial_status_writes or 0) > 0 then
    -- a reader that comes at the wrong moment sees half a file (a writer that could not rename and
    -- wrote in place, Windows); the whole text follows on the next step
    self.partial_status_writes = self.partial_status_writes - 1
    local f = assert(io.open(sim.status_path, "wb"))
    f:write(text:sub(1, #text // 2))
    f:close()
    sim.pending_status = text
  else
    write_atomic(sim.status_path, text)
  end
  sim.last = s
end

function Fake:sim_advance()
  for i = #(self.pending_outputs or {}), 1, -1 do
    local o = self.pending_outputs[i]
    if self.clock >= o.at then
      local f = assert(io.open(o.path, "wb"))
      f:write(o.text)
      f:close()
      table.remove(self.pending_outputs, i)
    end
  end
  for _, sim in ipairs(self.sims) do
    if sim.pending_status then
      write_atomic(sim.status_path, sim.pending_status)
      sim.pending_status = nil
    end
    if not sim.read and self.clock - sim.started_at >= (self.start_delay or 0) then self:sim_read_request(sim) end
    if sim.read and not sim.finished and not sim.hung and self.clock >= sim.next_at then
      sim.next_at = self.clock + sim.every
      if sim.cancel_requested and not sim.steps.deaf then
        self:sim_write(sim, { state = "cancelled", job = sim.last and sim.last.job, exit_code = 5 })
        self:sim_exit(sim, 5)
      else
        sim.step = sim.step + 1
        local st = sim.steps[sim.step]
        if st and st.die then
          self:sim_exit(sim, st.die)
        elseif st and st.hang then
          sim.hung = true
        elseif st then
          self:sim_write(sim, st)
          if st.exit_code ~= nil then self:sim_exit(sim, st.exit_code) end
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

-- `kill -TERM PID` / `taskkill /PID PID ...`: the sim process ends (SIGTERM: 143), without a status.
function Fake:sim_kill(pid)
  self.kills[#self.kills + 1] = pid
  for _, sim in ipairs(self.sims) do
    if sim.pid == pid and not sim.finished then
      sim.killed = true
      self:sim_exit(sim, 143)
    end
  end
end

-- `m2ugen jobs`: JSON lines on stdout (ExecProcess with a timeout returns "<code>\n<output>").
function Fake:sim_jobs_output()
  local lines = {}
  for _, rec in ipairs(self.server_jobs or {}) do lines[#lines + 1] = json.encode(rec) end
  local code = self.jobs_exit or 0
  if code ~= 0 then lines = {} end
  lines[#lines + 1] = json.encode({ op = "exit", code = code })
  return code .. "\n" .. table.concat(lines, "\n") .. "\n"
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
function Fake:run_script(path, opts)
  local chunk = assert(loadfile(path))
  local before = self.cur_instance
  self.cur_instance = opts and opts.instance or "main"
  local ok, r = pcall(chunk)
  self.cur_instance = before
  if not ok then error(r, 0) end
  return r
end

function Fake:gstate(instance)
  instance = instance or self.cur_instance
  local st = self.gfx_states[instance]
  if not st then
    st = { open = false, frames = 0, close_after = self.opts.gfx_close_after or 3, clicks = {}, keys = {} }
    self.gfx_states[instance] = st
  end
  return st
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
  local st = setmetatable({}, { __index = function(_, k) return fake:gstate()[k] end,
                                __newindex = function(_, k, v) fake:gstate()[k] = v end })
  local g = { w = 460, h = 220, x = 0, y = 0, texth = 14, mouse_cap = 0, mouse_x = 0, mouse_y = 0 }
  g.init = function(title, w, h)
    st.open, st.title, st.frames = true, title, 0
    g.w, g.h = w or g.w, h or g.h
    st.inits = (st.inits or 0) + 1
    st.text_mode = (w == 520 and h == 320 and not (title or ""):find("preview", 1, true))
    -- the answer window (ui.lua opens it 520x320) closes after a few frames; the preview window
    -- reacts to st.keys = {[frame] = "a" | "r" | "d" | " "}
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
    -- the user closes the preview window (its close box): getchar returns -1 from then on
    if st.close_preview_at and (st.title or ""):find("preview", 1, true) and st.frames >= st.close_preview_at then
      st.close_preview_at = nil
      st.open = false
      return -1
    end
    local key = (st.title or ""):find("preview", 1, true) and st.keys[st.frames]
    if key then
      st.keys[st.frames] = nil -- pressed once
      return string.byte(key)
    end
    return 0
  end
  g.showmenu = function(menu)
    fake.menus[#fake.menus + 1] = menu
    return table.remove(fake.menu_answers, 1) or 0
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

  local function P(proj) return fake:proj(proj) end

  -- A MediaItem* whose item was deleted (or whose project was closed or replaced) is a dangling
  -- pointer: REAPER crashes on it. ValidatePtr2 exists to check first (reaper-api.lua).
  local function live_item(item)
    if type(item) ~= "table" or item.kind ~= "item" or not alive_track(item.track)
      or not Fake.index_of(item.track.items, item) then
      fake:violation("a deleted MediaItem* was used (REAPER would crash; check it with ValidatePtr2)")
    end
    return item
  end

  I.GetOS = function() return fake.os_name end
  I.GetAppVersion = function() return "7.40/linux-x86_64" end
  I.APIExists = function(name)
    local ok = fake.extensions[name] ~= nil
    if ok then fake.guards[name:match("^(%a+_)")] = true end
    return ok
  end
  I.time_precise = function() return fake.clock end
  I.defer = function(fn)
    assert(type(fn) == "function", "defer needs a function")
    local instance = fake.cur_instance
    fake.deferred[#fake.deferred + 1] = function()
      fake.cur_instance = instance
      fn()
      fake.cur_instance = "main"
    end
  end
  I.atexit = function(fn) fake.atexit_fns[#fake.atexit_fns + 1] = fn end
  I.set_action_options = function(flag)
    if math.type(flag) ~= "integer" or flag < 0 or flag > 15 then fake:violation("set_action_options flag " .. tostring(flag)) end
    fake.action_options[#fake.action_options + 1] = flag
    if flag & 4 ~= 0 then fake.toggle = 1 end
    if flag & 8 ~= 0 then fake.toggle = 0 end
  end
  I.ShowConsoleMsg = function(msg) fake.console = (fake.console or "") .. msg end
  I.ShowMessageBox = function(msg, title, kind)
    fake.messages[#fake.messages + 1] = { msg = msg, title = title, kind = kind }
    local a = table.remove(fake.mb_answers, 1)
    return a or 1
  end
  I.MB = I.ShowMessageBox
  I.GetUserInputs = function(title, n, captions, defaults)
    -- "max 16 fields" (daw-bridges.md, GetUserInputs): a dialog with more is a script bug
    if n > 16 then fake:violation("GetUserInputs with " .. n .. " fields (REAPER shows at most 16)") end
    fake.inputs_asked[#fake.inputs_asked + 1] = { title = title, n = n, captions = captions, defaults = defaults }
    local a = table.remove(fake.inputs_answers, 1)
    if a == nil then return false, defaults end
    if a == false then return false, "" end
    -- "Values are returned as a comma-separated string ... separator=X to use a different separator for
    -- returned fields" (reaper-api.lua, GetUserInputs): every field comes back, and a field the user did
    -- not touch keeps its default; a spec's answer with fewer than n fields gets the defaults for the rest
    local sep = captions:match(",separator=(.)") or ","
    local function fields(text)
      local out = {}
      for f in (text .. sep):gmatch("(.-)" .. sep:gsub("%p", "%%%0")) do out[#out + 1] = f end
      return out
    end
    local given, dflt = fields(a), fields(defaults)
    if #given < n then
      for i = #given + 1, n do given[i] = dflt[i] or "" end
      a = table.concat(given, sep)
    end
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
  I.SetProjExtState = function(proj, extname, key, value)
    local p = P(proj)
    p.proj_ext[extname] = p.proj_ext[extname] or {}
    p.proj_ext[extname][key] = value
    return 1
  end
  I.GetProjExtState = function(proj, extname, key)
    local p = P(proj)
    local v = p.proj_ext[extname] and p.proj_ext[extname][key]
    return v and 1 or 0, v or ""
  end
  -- REAPER returns the keys upper-cased (ProjExtState keys are case-insensitive)
  I.EnumProjExtState = function(proj, extname, idx)
    local p = P(proj)
    local keys = {}
    for k in pairs(p.proj_ext[extname] or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    local k = keys[idx + 1]
    if not k then return false, "", "" end
    return true, k:upper(), p.proj_ext[extname][k]
  end

  -- projects and paths
  I.EnumProjects = function(idx)
    local p
    if idx == -1 then p = fake.current else p = fake.projects[idx + 1] end
    if not p then return nil, "" end
    return p, p.project_dir .. "/" .. p.name
  end
  I.ValidatePtr2 = function(proj, ptr, ctype)
    if type(ptr) ~= "table" then return false end
    if ctype == "ReaProject*" then return ptr.kind == "project" and ptr.open end
    local p = P(proj)
    if ctype == "MediaTrack*" then return ptr.kind == "track" and ptr.project == p and alive_track(ptr) end
    if ctype == "MediaItem*" then
      return ptr.kind == "item" and ptr.track.project == p and alive_track(ptr.track)
        and Fake.index_of(ptr.track.items, ptr) ~= nil
    end
    if ctype == "MediaItem_Take*" then
      return ptr.kind == "take" and Fake.index_of(ptr.item.takes, ptr) ~= nil and ptr.item.track.project == p
    end
    fake:violation("fake ValidatePtr2 does not know " .. tostring(ctype))
  end
  I.GetProjectName = function(proj) return P(proj).name end
  I.GetProjectPathEx = function(proj) return P(proj).project_dir end
  I.GetResourcePath = function() return fake.resource_dir end
  I.RecursiveCreateDirectory = function(path, _)
    os.execute("mkdir -p " .. sh_quote(path) .. " 2>/dev/null")
    return 1
  end

  -- selection / context
  I.GetSet_LoopTimeRange2 = function(proj, is_set, _, s, e, _)
    local p = P(proj)
    if is_set then p.ts, p.te = s, e end
    return p.ts, p.te
  end
  I.GetCursorPositionEx = function(proj) return P(proj).cursor end
  I.CountSelectedMediaItems = function(proj) return #fake:selected_items(P(proj)) end
  I.GetSelectedMediaItem = function(proj, i) return fake:selected_items(P(proj))[i + 1] end
  I.SetMediaItemSelected = function(item, sel) item.selected = sel end
  I.CountSelectedTracks = function(proj) return #fake:selected_tracks(P(proj)) end
  I.GetSelectedTrack = function(proj, i) return fake:selected_tracks(P(proj))[i + 1] end
  I.GetMediaItem_Track = function(item) return item.track end
  I.CountTracks = function(proj) return #P(proj).tracks end
  I.GetTrack = function(proj, i) return P(proj).tracks[i + 1] end
  I.CountTrackMediaItems = function(tr) return #tr.items end
  I.GetTrackMediaItem = function(tr, i) return tr.items[i + 1] end
  I.TimeMap_GetTimeSigAtTime = function(proj, _)
    local t = P(proj).tempo
    return t.num, t.den, t.bpm
  end
  I.TimeMap2_timeToQN = function(proj, t) return Fake.time_to_qn(P(proj), t) end
  I.TimeMap2_QNToTime = function(proj, qn) return Fake.qn_to_time(P(proj), qn) end
  I.GetAudioDeviceInfo = function(attr)
    if attr == "SRATE" then return true, "44100" end
    return false, ""
  end

  -- project info / render
  I.GetSetProjectInfo = function(proj, key, value, is_set)
    local p = P(proj)
    if key == "PROJECT_SRATE_USE" then return p.project_srate and 1 or 0 end
    if key == "PROJECT_SRATE" then return p.project_srate or 0 end
    if p.render.numbers[key] == nil then fake:violation("fake has no project info " .. key) end
    if is_set then p.render.numbers[key] = value end
    return p.render.numbers[key]
  end
  I.GetSetProjectInfo_String = function(proj, key, value, is_set)
    local p = P(proj)
    if key == "RENDER_TARGETS" then
      local names = {}
      for i, f in ipairs(fake:render_plan(p)) do names[i] = f.path end
      return true, table.concat(names, ";")
    end
    if p.render.strings[key] == nil then fake:violation("fake has no project info string " .. key) end
    if is_set then p.render.strings[key] = value end
    return true, p.render.strings[key]
  end

  -- What one render writes (RENDER_SETTINGS / RENDER_BOUNDSFLAG as documented in reaper-api.lua,
  -- GetSetProjectInfo): a list of {path, gain, seconds}, one per file. "selected tracks via master"
  -- and stems write one file PER TRACK, selected items one per item unless &(4<<16) "render as a single
  -- file"; the names are what RENDER_TARGETS ("semicolon separated list of files that would be
  -- written") reports. Level: the peak over time of the summed gains of what plays.
  local function level(parts)
    local peak = 0
    for _, a in ipairs(parts) do
      local sum = 0
      for _, b in ipairs(parts) do
        if b.s <= a.s and b.e > a.s then sum = sum + b.g end
      end
      peak = math.max(peak, sum)
    end
    return peak
  end
  local function bounds(p)
    local r = p.render.numbers
    if r.RENDER_BOUNDSFLAG == 0 then return r.RENDER_STARTPOS, r.RENDER_ENDPOS end
    if r.RENDER_BOUNDSFLAG == 4 then
      local s, e = math.huge, -math.huge
      for _, it in ipairs(fake:selected_items(p)) do
        s = math.min(s, it.position) e = math.max(e, it.position + it.length)
      end
      return s, e
    end
    fake:violation("fake renders custom bounds (0) and selected items (4) only, got " .. tostring(r.RENDER_BOUNDSFLAG))
  end
  local function plays(it, s, e)
    return it.mute == 0 and it.track.mute == 0 and it.position < e and it.position + it.length > s
  end
  local function part(it, s, e, g)
    return { s = math.max(it.position, s), e = math.min(it.position + it.length, e), g = g }
  end
  function fake:render_plan(p)
    local r = p.render.numbers
    local flags = math.floor(r.RENDER_SETTINGS)
    local s, e = bounds(p)
    local master = track_gain(p.master)
    local files = {} -- {parts}
    local function item_gain(it) return take_gain(it) * (it.vol or 1) end
    if flags & 32 ~= 0 or flags & 64 ~= 0 then
      local via = flags & 64 ~= 0
      local single = flags & (4 << 16) ~= 0
      for _, it in ipairs(fake:selected_items(p)) do
        if plays(it, s, e) then
          local g = item_gain(it) * (via and track_gain(it.track) * master or 1)
          if single then
            files[1] = files[1] or {}
            table.insert(files[1], part(it, s, e, g))
          else
            files[#files + 1] = { part(it, s, e, g) }
          end
        end
      end
      if #files == 0 then files[1] = {} end
    elseif flags & 128 ~= 0 or flags & 2 ~= 0 then
      local via = flags & 128 ~= 0
      for _, t in ipairs(fake:selected_tracks(p)) do
        local parts = {}
        for _, it in ipairs(t.items) do
          if plays(it, s, e) then parts[#parts + 1] = part(it, s, e, item_gain(it) * track_gain(t) * (via and master or 1)) end
        end
        files[#files + 1] = parts
      end
    else
      local parts = {}
      for _, t in ipairs(p.tracks) do
        for _, it in ipairs(t.items) do
          if plays(it, s, e) then parts[#parts + 1] = part(it, s, e, item_gain(it) * track_gain(t) * master) end
        end
      end
      files[1] = parts
    end
    local base = p.render.strings.RENDER_FILE .. "/" .. p.render.strings.RENDER_PATTERN
    local out = {}
    for i, parts in ipairs(files) do
      out[i] = { path = #files == 1 and (base .. ".wav") or string.format("%s-%03d.wav", base, i),
                 gain = level(parts), seconds = e - s }
    end
    return out
  end

  local function render(p)
    local snap = { numbers = {}, strings = {}, project = p }
    for k, v in pairs(p.render.numbers) do snap.numbers[k] = v end
    for k, v in pairs(p.render.strings) do snap.strings[k] = v end
    p.renders[#p.renders + 1] = snap
    if p.render_mode == "raise" then error("simulated render crash") end
    if p.render_mode == "ok" then
      snap.files = fake:render_plan(p)
      snap.path, snap.seconds = snap.files[1].path, snap.files[1].seconds
      -- a silent render (nothing plays) still writes a file of silence
      for _, f in ipairs(snap.files) do wav.write(f.path, f.seconds, 8000, p.render.numbers.RENDER_CHANNELS, f.gain) end
    end
  end

  local function command(cmd, p)
    if cmd == 42230 then
      if p ~= fake.current then fake:violation("render action 42230 run for a project that is not the current tab") end
      render(p)
    elseif cmd == 40047 then
      fake.peaks_built = (fake.peaks_built or 0) + 1
    elseif cmd == 40129 then -- Take: Delete active take from items (selected items)
      for _, it in ipairs(fake:selected_items(p)) do
        local i = Fake.index_of(it.takes, it.active)
        if i then
          table.remove(it.takes, i)
          it.active = it.takes[math.min(i, #it.takes)]
        end
      end
    else
      fake:violation("fake does not simulate action " .. tostring(cmd))
    end
  end
  I.Main_OnCommand = function(cmd, _) command(cmd, fake.current) end
  I.Main_OnCommandEx = function(cmd, _, proj) command(cmd, P(proj)) end

  -- processes
  I.ExecProcess = function(cmd, timeout)
    local entry = { cmd = cmd, timeout = timeout }
    fake.exec_log[#fake.exec_log + 1] = entry
    if fake.exec_mode == "none" then
      local files
      entry.argv, files = fake:exec_argv(cmd, false)
      entry.window_style = files and files.window_style
      return nil
    end
    if fake.exec_mode == "background" then
      entry.argv = fake:exec_argv(cmd, false)
      os.execute(cmd .. " >/dev/null 2>&1 &")
      return ""
    end
    local argv, files = fake:exec_argv(cmd, true)
    entry.argv = argv
    entry.window_style = files and files.window_style
    if argv[1] == "kill" or argv[1] == "taskkill" then
      fake:sim_kill(tonumber(argv[#argv] == "/F" and argv[3] or argv[3]))
      return ""
    end
    if argv[2] == "cancel" then fake:sim_cancel(argv) return "" end
    if argv[2] == "jobs" then
      local out = fake:sim_jobs_output()
      if files and files.out_file then
        -- in the background: the list arrives a few ticks later, written as the CLI prints it
        fake.pending_outputs = fake.pending_outputs or {}
        fake.pending_outputs[#fake.pending_outputs + 1] = { path = files.out_file, text = out:gsub("^[^\n]*\n", ""),
                                                           at = fake.clock + 0.3 }
        return ""
      end
      return out
    end
    fake:sim_start(argv, cmd, files)
    return ""
  end

  -- undo / refresh
  I.Undo_BeginBlock2 = function(proj)
    fake.undo.begin = fake.undo.begin + 1
    fake.undo.depth = fake.undo.depth + 1
    fake.undo.projects[#fake.undo.projects + 1] = P(proj)
  end
  I.Undo_EndBlock2 = function(proj, name, _)
    if fake.undo.projects[#fake.undo.projects] ~= P(proj) then
      fake:violation("Undo_EndBlock2 for another project than its Undo_BeginBlock2")
    end
    fake.undo["end"] = fake.undo["end"] + 1
    fake.undo.depth = fake.undo.depth - 1
    fake.undo.names[#fake.undo.names + 1] = name
    fake.undo.last_project = P(proj)
  end
  I.PreventUIRefresh = function(n) fake.refresh = fake.refresh + n end
  I.UpdateArrange = function() end

  -- tracks / items / takes / sources / markers
  -- "inserts a track in project proj at idx, this will be clamped to 0..CountTracks(proj)"
  -- (reaper-api.lua, InsertTrackInProject): the tracks from idx on move down by one
  local function insert_track(p, idx)
    idx = math.max(0, math.min(idx, #p.tracks))
    -- a new track changes no other track's I_FOLDERDEPTH: it lands at the folder level of the gap it is
    -- inserted into (the level after the track above it), as a normal track (0). ASSUMED (the API text
    -- covers only the index): place.insert_stems relies on it after a folder's last track (-1) and after a
    -- folder parent (1); reaper_scripts/README.md lists it among what a real-REAPER run must confirm
    table.insert(p.tracks, idx + 1, { kind = "track", project = p, name = "", items = {}, selected = false,
                                      mute = 0, created = true, depth = 0 })
  end
  I.InsertTrackAtIndex = function(idx, _) insert_track(fake.current, idx) end
  I.InsertTrackInProject = function(proj, idx, _) insert_track(P(proj), idx) end
  I.DeleteTrack = function(tr)
    local i = fake:track_index(tr)
    if i then table.remove(tr.project.tracks, i + 1) end
  end
  -- IP_TRACKNUMBER: "track number 1-based, 0=not found, -1=master track"; I_FXEN: "fx enabled,
  -- 0=bypassed"; D_VOL: volume; I_FOLDERDEPTH: "folder depth change, 0=normal, 1=track is a folder
  -- parent, -1=track is the last in the innermost folder, -2=track is the last in the innermost and
  -- next-innermost folders, etc" (reaper-api.lua, GetMediaTrackInfo_Value). The tree is that one value
  -- per track: Fake.folder_tree reads it as REAPER draws it.
  I.GetMasterTrack = function(proj) return P(proj).master end
  I.GetMediaTrackInfo_Value = function(tr, key)
    if key == "IP_TRACKNUMBER" then
      if tr.master then return -1 end
      return (fake:track_index(tr) or -1) + 1
    end
    if key == "B_MUTE" then return tr.mute end
    if key == "I_FXEN" then return tr.fxen end
    if key == "D_VOL" then return tr.vol end
    if key == "I_FOLDERDEPTH" then return tr.master and 0 or tr.depth end
    fake:violation("fake has no track value " .. key)
  end
  I.SetMediaTrackInfo_Value = function(tr, key, v)
    if key == "B_MUTE" then tr.mute = v return true end
    if key == "I_FXEN" then tr.fxen = v return true end
    if key == "D_VOL" then tr.vol = v return true end
    if key == "I_FOLDERDEPTH" then
      if math.type(v) ~= "integer" and v ~= math.floor(v) then fake:violation("I_FOLDERDEPTH " .. tostring(v)) end
      tr.depth = math.floor(v)
      return true
    end
    fake:violation("fake has no track value " .. key)
  end
  I.GetSetMediaTrackInfo_String = function(tr, key, value, set)
    if key ~= "P_NAME" then fake:violation("fake has no track string " .. key) end
    if set then tr.name = value end
    return true, tr.name
  end
  I.AddMediaItemToTrack = function(tr) return fake:add_item(tr, 0, 0) end
  I.DeleteTrackMediaItem = function(tr, item)
    local i = Fake.index_of(tr.items, item)
    if i then table.remove(tr.items, i) return true end
    return false
  end
  I.AddTakeToMediaItem = function(item)
    live_item(item)
    local take = { kind = "take", item = item, name = "", ext = {} }
    item.takes[#item.takes + 1] = take
    if not item.active then item.active = take end
    return take
  end
  I.GetActiveTake = function(item) return live_item(item).active end
  -- a take's source: take.source (fake:add_take); a MIDI take has take.midi (Fake:add_midi_take),
  -- take.startoffs and take.playrate (defaults 0 and 1) are the part of the file the item plays
  I.GetMediaItemTake_Source = function(take) return take.source end
  I.GetMediaSourceParent = function(src) return src.parent end
  I.GetMediaSourceFileName = function(src) return src.path or "" end
  I.GetMediaItemTakeInfo_Value = function(take, key)
    if key == "D_STARTOFFS" then return take.startoffs or 0 end
    if key == "D_PLAYRATE" then return take.playrate or 1 end
    fake:violation("fake has no take value " .. key)
  end
  I.SetActiveTake = function(take) take.item.active = take end
  I.GetMediaItemNumTakes = function(item) return #live_item(item).takes end
  I.GetMediaItemTake = function(item, i) return item.takes[i + 1] end
  -- D_VOL "item volume", B_LOOPSRC "loop source" (reaper-api.lua, GetMediaItemInfo_Value)
  I.GetMediaItemInfo_Value = function(item, key)
    live_item(item)
    if key == "D_POSITION" then return item.position end
    if key == "D_LENGTH" then return item.length end
    if key == "B_MUTE" then return item.mute end
    if key == "D_VOL" then return item.vol end
    if key == "B_LOOPSRC" then return item.loop end
    fake:violation("fake has no item value " .. key)
  end
  I.SetMediaItemInfo_Value = function(item, key, v)
    live_item(item)
    if key == "D_POSITION" then item.position = v return true end
    if key == "D_LENGTH" then item.length = v return true end
    if key == "B_MUTE" then item.mute = v return true end
    if key == "D_VOL" then item.vol = v return true end
    if key == "B_LOOPSRC" then item.loop = v return true end
    fake:violation("fake has no item value " .. key)
  end
  -- "the original item becomes the left-hand split, the function returns the right-hand split (or NULL
  -- if the split failed)" (reaper-api.lua, SplitMediaItem); the right part's takes start later in their
  -- sources (D_STARTOFFS + the cut, in source time: x D_PLAYRATE).
  I.SplitMediaItem = function(item, pos)
    if pos <= item.position or pos >= item.position + item.length then return nil end
    local right = fake:add_item(item.track, pos, item.position + item.length - pos)
    table.remove(item.track.items) -- add_item appended it: put it right after the left part
    table.insert(item.track.items, Fake.index_of(item.track.items, item) + 1, right)
    right.mute, right.vol, right.loop, right.selected, right.notes = item.mute, item.vol, item.loop, item.selected, item.notes
    for _, t in ipairs(item.takes) do
      local c = {}
      for k, v in pairs(t) do c[k] = v end
      c.item, c.ext = right, {}
      for k, v in pairs(t.ext) do c.ext[k] = v end
      c.startoffs = (t.startoffs or 0) + (pos - item.position) * (t.playrate or 1)
      right.takes[#right.takes + 1] = c
      if item.active == t then right.active = c end
    end
    item.length = pos - item.position
    fake.splits = (fake.splits or 0) + 1
    return right
  end
  I.GetSetMediaItemInfo_String = function(item, key, value, set)
    if key == "P_NOTES" then
      if set then item.notes = value end
      return true, item.notes
    end
    local ext = key:match("^P_EXT:(.+)$")
    if not ext then fake:violation("fake has no item string " .. key) end
    if set then item.ext[ext] = value end
    return true, item.ext[ext] or ""
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
  -- a .mid file becomes a MIDI source (beat-based: its length is in quarter notes)
  I.PCM_Source_CreateFromFile = function(path)
    if path:lower():match("%.mid$") then
      if not file_exists(path) then return nil end
      return { kind = "source", path = path, midi = true, length_qn = fake.mid_length_qn or 8 }
    end
    local info = wav.info(path)
    if not info then return nil end
    return { kind = "source", path = path, info = info }
  end
  I.PCM_Source_Destroy = function(src)
    if src.owned then fake:violation("PCM_Source_Destroy on a source a take owns (double free)") end
    src.destroyed = true
  end
  -- "If the media source is beat-based, the length will be in quarter notes, otherwise it will be in
  -- seconds" (reaper-api.lua, GetMediaSourceLength): a MIDI source returns QN, lengthIsQN = true
  I.GetMediaSourceLength = function(src)
    if src.midi then return src.length_qn or 4, true end
    return src.info.seconds, false
  end
  -- refuse_source: every source refused; refuse_source_after = n: the first n accepted, then refused
  I.SetMediaItemTake_Source = function(take, src)
    fake.sources_set = (fake.sources_set or 0) + 1
    if fake.refuse_source or (fake.refuse_source_after and fake.sources_set > fake.refuse_source_after) then
      return false
    end
    take.source = src
    src.owned = true
    return true
  end
  -- MIDI takes (see Fake:add_midi_take)
  local function midi_take(take)
    if type(take) ~= "table" or take.kind ~= "take" then fake:violation("not a take: " .. tostring(take)) end
    if not take.midi then fake:violation("a MIDI function called on an audio take") end
    return take
  end
  local function take_start_qn(take) return Fake.time_to_qn(take.item.track.project, take.item.position) end
  I.TakeIsMIDI = function(take) return take.midi ~= nil end
  I.MIDI_CountEvts = function(take) return 1, #midi_take(take).midi, 0, 0 end
  I.MIDI_GetNote = function(take, i)
    local n = midi_take(take).midi[i + 1]
    if not n then return false, false, false, 0, 0, 0, 0, 0 end
    return true, false, n.muted, n.s, n.e, n.chan, n.pitch, n.vel
  end
  I.MIDI_GetProjTimeFromPPQPos = function(take, ppq)
    return Fake.qn_to_time(take.item.track.project, take_start_qn(midi_take(take)) + ppq / Fake.PPQ)
  end
  -- "the project time in quarter notes corresponding to a specific MIDI tick (ppq) position" and
  -- back (reaper-api.lua); PPQ counted from the item's start
  I.MIDI_GetProjQNFromPPQPos = function(take, ppq) return take_start_qn(midi_take(take)) + ppq / Fake.PPQ end
  I.MIDI_GetPPQPosFromProjQN = function(take, qn) return (qn - take_start_qn(midi_take(take))) * Fake.PPQ end
  I.MIDI_GetPPQPosFromProjTime = function(take, t)
    return (Fake.time_to_qn(take.item.track.project, t) - take_start_qn(midi_take(take))) * Fake.PPQ
  end
  I.CreateNewMIDIItemInProj = function(tr, s, e, qn)
    if qn then fake:violation("CreateNewMIDIItemInProj with times in QN: the scripts pass seconds") end
    local item = fake:add_item(tr, s, e - s)
    fake:add_midi_take(item, {})
    return item
  end
  I.MIDI_InsertNote = function(take, selected, muted, s, e, chan, pitch, vel, no_sort)
    local t = midi_take(take)
    if math.type(chan) ~= "integer" or math.type(pitch) ~= "integer" or math.type(vel) ~= "integer" then
      fake:violation("MIDI_InsertNote: chan, pitch and vel must be integers")
    end
    t.midi[#t.midi + 1] = { s = s, e = e, pitch = pitch, vel = vel, chan = chan, muted = muted, selected = selected }
    t.sorted = false
    return true
  end
  I.MIDI_Sort = function(take)
    local t = midi_take(take)
    table.sort(t.midi, function(a, b) return a.s < b.s end)
    t.sorted = true
  end
  I.SetEditCurPos = function(time, _, _) fake.current.cursor = time end
  I.SetOnlyTrackSelected = function(track)
    for _, t in ipairs(track.project.tracks) do t.selected = (t == track) end
  end
  I.SetTrackSelected = function(track, sel) track.selected = sel end
  -- mode 0: add to the (first) selected track at the edit cursor. Only what the scripts use.
  I.InsertMedia = function(path, mode)
    if mode ~= 0 then fake:violation("fake InsertMedia simulates mode 0 only, got " .. tostring(mode)) end
    if fake.refuse_insert_media or not file_exists(path) then return 0 end
    local tr = fake:selected_tracks(fake.current)[1]
    if not tr then return 0 end
    local item = fake:add_item(tr, fake.current.cursor, 2.0)
    local take = fake:add_midi_take(item, {})
    take.source.path = path
    fake.inserted_media = (fake.inserted_media or 0) + 1
    return 1
  end
  I.AddProjectMarker2 = function(proj, isrgn, pos, rgnend, name, _, color)
    local p = P(proj)
    if fake.refuse_markers then return -1 end
    p.markers[#p.markers + 1] = { region = isrgn, pos = pos, rgnend = rgnend, name = name, color = color }
    return #p.markers
  end

  return I
end

-- Enables a fake SWS preview (CF_CreatePreview / CF_Preview_Play / CF_Preview_Stop).
function Fake:enable_sws()
  local fake = self
  fake.sws = { previews = {}, playing = 0 }
  local E = self.extensions
  E.CF_CreatePreview = function(src)
    local pv = { src = src, playing = false }
    fake.sws.previews[#fake.sws.previews + 1] = pv
    return pv
  end
  E.CF_Preview_Play = function(pv) pv.playing = true fake.sws.playing = fake.sws.playing + 1 return true end
  E.CF_Preview_Stop = function(pv) pv.playing = false pv.stopped = true return true end
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
    fake.imgui.buttons = fake.imgui.buttons or {}
    fake.imgui.buttons[label] = (fake.imgui.buttons[label] or 0) + 1
    -- press = {[label] = n}: the button is clicked the n-th time it is drawn
    if opts.press and opts.press[label] then return fake.imgui.buttons[label] == opts.press[label] end
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
