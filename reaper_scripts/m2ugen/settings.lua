-- @noindex
-- Settings (persisted with reaper.SetExtState) and the server's discovery file.
--
-- ExtState section "M2UGen", keys:
--   cli_path      path of the m2ugen CLI; empty = take "cli" from the discovery file
--   server        tcp://host:port; empty = the CLI's default (the discovery file's endpoint)
--   duration      default generation length in seconds when there is no time selection
--   conditioning  "text" | "embedding"
--   seed          integer >= 0, or empty for a random seed
--   takes         1..8 variations per request (sent as `--takes N` only when N > 1)
--   edit_result   "take" (the edit becomes the active take of the source item) | "mute" (the source
--                 is muted, the edit goes on a new track below) | "track" (new track, source untouched)
--   preview       "on" (audition, then Accept / Regenerate / Discard) | "off" (insert at once)
--   answer_markers "off" | "marker" | "region": Ask answers also as project markers/regions
--   fit_tempo     "off" | "on" (sent as `--fit-tempo`: the server fits the result to the project tempo)
--   mode          edits: "text" (the official: the decoder hears only the reply) | "continue" (MusicGen
--                 continues the selection) | "melody" (MusicGen-Melody follows its tune; needs a melody decoder)
--   loop          "off" | "on": a seamless loop of whole bars at the project tempo
--   vocoder       "encodec" | "mbd" (multi-band diffusion: cleaner, slower)
--   adapter       the server's LoRA adapter for ask/edit/generate (a personal fine-tune, "M2UGen - Learn
--                 from selected items"); empty = the base model
--   dereverb      Transcribe: "on" (a room's late reverberation is subtracted before the notes are found) |
--                 "off" (for a dry struck instrument, a DI piano, whose own decay reads as a room)
-- Values never contain newlines (ExtState is an .ini file).

local import = ...
local json = import("json")

local settings = {}

settings.SECTION = "M2UGen"

settings.DEFAULTS = {
  cli_path = "",
  server = "",
  duration = "10",
  conditioning = "text",
  seed = "",
  takes = "1",
  edit_result = "take",
  preview = "on",
  answer_markers = "off",
  fit_tempo = "off",
  mode = "text",
  loop = "off",
  vocoder = "encodec",
  adapter = "",
  dereverb = "on",
}

settings.KEYS = { "cli_path", "server", "duration", "conditioning", "seed", "takes", "edit_result", "preview",
                  "answer_markers", "fit_tempo", "mode", "loop", "vocoder", "adapter", "dereverb" }

-- The allowed words of the choice settings (the Settings dialog names them when one is wrong).
settings.CHOICES = {
  edit_result = { "take", "mute", "track" },
  preview = { "on", "off" },
  answer_markers = { "off", "marker", "region" },
  fit_tempo = { "off", "on" },
  mode = { "text", "continue", "melody" },
  loop = { "off", "on" },
  vocoder = { "encodec", "mbd" },
  dereverb = { "on", "off" },
}
settings.LABELS = { edit_result = "Edit result", preview = "Preview", answer_markers = "Answer markers",
                    fit_tempo = "Fit tempo", mode = "Edit mode", loop = "Loop", vocoder = "Vocoder",
                    dereverb = "Transcribe dereverb" }
settings.MAX_TAKES = 8

-- An adapter name as the server takes it ([A-Za-z0-9_-]{1,64}); returns the name or nil.
function settings.adapter_name(text)
  local name = (text or ""):match("^%s*(.-)%s*$")
  if #name >= 1 and #name <= 64 and name:match("^[%w_%-]+$") and not name:find("[\128-\255]") then return name end
  return nil
end

function settings.is_windows()
  return reaper.GetOS():match("^Win") ~= nil
end

function settings.is_macos()
  local os_name = reaper.GetOS()
  return os_name:match("^OSX") ~= nil or os_name:match("^macOS") ~= nil
end

function settings.path_sep()
  return settings.is_windows() and "\\" or "/"
end

function settings.join(a, b)
  local sep = settings.path_sep()
  if a:sub(-1) == "/" or a:sub(-1) == "\\" then return a .. b end
  return a .. sep .. b
end

function settings.file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Returns a table with every key of DEFAULTS (strings).
function settings.load()
  local s = {}
  for _, k in ipairs(settings.KEYS) do
    local v = reaper.GetExtState(settings.SECTION, k)
    if v == nil or v == "" then v = settings.DEFAULTS[k] end
    s[k] = v
  end
  return s
end

-- Checks raw strings (as typed in the Settings dialog); returns a clean table or nil, message.
function settings.validate(raw)
  local out = {}
  local cli = (raw.cli_path or ""):match("^%s*(.-)%s*$")
  if cli ~= "" and not settings.file_exists(cli) then
    return nil, "CLI path: no file at '" .. cli .. "'"
  end
  out.cli_path = cli

  local server = (raw.server or ""):match("^%s*(.-)%s*$")
  if server ~= "" and not server:match("^tcp://[%w%.%-]+:%d+$") and not server:match("^tcp://%[[%x:]+%]:%d+$") then
    return nil, "Server address: expected tcp://HOST:PORT (for example tcp://127.0.0.1:5557), got '" .. server .. "'"
  end
  out.server = server

  local d = tonumber(raw.duration)
  if not d or d < 0.5 or d > 300 then
    return nil, "Default duration: expected seconds between 0.5 and 300, got '" .. tostring(raw.duration) .. "'"
  end
  out.duration = tostring(d)

  local c = (raw.conditioning or ""):match("^%s*(.-)%s*$")
  if c ~= "text" and c ~= "embedding" then
    return nil, "Conditioning: expected 'text' or 'embedding', got '" .. c .. "'"
  end
  out.conditioning = c

  local seed = (raw.seed or ""):match("^%s*(.-)%s*$")
  if seed ~= "" and not seed:match("^%d+$") then
    return nil, "Seed: expected a whole number >= 0 or empty (random), got '" .. seed .. "'"
  end
  out.seed = seed

  local takes = (raw.takes or settings.DEFAULTS.takes):match("^%s*(.-)%s*$")
  local n = takes:match("^%d+$") and tonumber(takes) or nil
  if not n or n < 1 or n > settings.MAX_TAKES then
    return nil, "Takes: expected a whole number from 1 to " .. settings.MAX_TAKES .. ", got '" .. takes .. "'"
  end
  out.takes = tostring(math.floor(n))

  for _, k in ipairs({ "edit_result", "preview", "answer_markers", "fit_tempo", "mode", "loop", "vocoder", "dereverb" }) do
    local v = (raw[k] or settings.DEFAULTS[k]):match("^%s*(.-)%s*$"):lower()
    local ok = false
    for _, c in ipairs(settings.CHOICES[k]) do if c == v then ok = true end end
    if not ok then
      return nil, settings.LABELS[k] .. ": expected " .. table.concat(settings.CHOICES[k], ", ") ..
        ", got '" .. v .. "'"
    end
    out[k] = v
  end

  local adapter = (raw.adapter or ""):match("^%s*(.-)%s*$")
  if adapter ~= "" and not settings.adapter_name(adapter) then
    return nil, "Adapter: expected a name of 1 to 64 letters, digits, _ or - (or empty: the base model), got '" ..
      adapter .. "'"
  end
  out.adapter = adapter
  return out
end

function settings.save(clean)
  for _, k in ipairs(settings.KEYS) do
    local v = clean[k] or ""
    assert(not v:find("[\r\n]"), "settings value for " .. k .. " contains a newline")
    reaper.SetExtState(settings.SECTION, k, v, true)
  end
end

-- ---------------------------------------------------------------------------------------------
-- discovery file: <user config dir>/m2ugen/server.json (platformdirs user_config_dir rules)

function settings.discovery_candidates()
  local list = {}
  local function add(dir, ...)
    if dir and dir ~= "" then
      local p = dir
      for _, part in ipairs({ ... }) do p = settings.join(p, part) end
      list[#list + 1] = p
    end
  end
  local override = os.getenv("M2UGEN_CONFIG_DIR")
  if override and override ~= "" then
    add(override, "server.json") -- the server writes <M2UGEN_CONFIG_DIR>/server.json
  end
  if settings.is_windows() then
    -- platformdirs.user_config_dir("m2ugen"): %LOCALAPPDATA%\<appauthor>\<appname>, and appauthor
    -- defaults to appname; the others cover a roaming profile or an appauthor=False server
    add(os.getenv("LOCALAPPDATA"), "m2ugen", "m2ugen", "server.json")
    add(os.getenv("LOCALAPPDATA"), "m2ugen", "server.json")
    add(os.getenv("APPDATA"), "m2ugen", "server.json")
    add(os.getenv("APPDATA"), "m2ugen", "m2ugen", "server.json")
    -- os.getenv is not UTF-8 on Windows; REAPER's resource path is (...\AppData\Roaming\REAPER)
    local appdata = reaper.GetResourcePath():match("^(.*)\\Roaming\\REAPER$")
    if appdata then add(appdata .. "\\Local", "m2ugen", "m2ugen", "server.json") end
  elseif settings.is_macos() then
    add(os.getenv("HOME"), "Library", "Application Support", "m2ugen", "server.json")
  else
    local xdg = os.getenv("XDG_CONFIG_HOME")
    if xdg and xdg ~= "" then add(xdg, "m2ugen", "server.json") end
    add(os.getenv("HOME"), ".config", "m2ugen", "server.json")
  end
  return list
end

-- Returns the decoded discovery table and its path, or nil and the list of places looked at.
function settings.read_discovery()
  local tried = settings.discovery_candidates()
  for _, p in ipairs(tried) do
    local f = io.open(p, "rb")
    if f then
      local text = f:read("a")
      f:close()
      local d = json.try_decode(text)
      if type(d) == "table" then return d, p end
    end
  end
  return nil, tried
end

-- The edit modes of the running server's decoder ({"text", "continue", "melody"}: can it follow a
-- melody?) from the discovery file's model.decoder.modes; nil when unknown (no discovery file, an
-- older server, or Settings name another server than the one the discovery file describes).
function settings.server_modes(s)
  local d = settings.read_discovery()
  if type(d) ~= "table" then return nil end
  if s and s.server ~= "" and s.server ~= d.endpoint then return nil end
  local model = type(d.model) == "table" and d.model or nil
  local dec = model and type(model.decoder) == "table" and model.decoder or nil
  if not dec or type(dec.modes) ~= "table" then return nil end
  local modes = {}
  for _, m in ipairs(dec.modes) do if type(m) == "string" then modes[m] = true end end
  return modes, tostring(dec.kind or model.name or "decoder")
end

-- Resolves the CLI to an argv prefix: {"/abs/m2ugen"} or {"/abs/python", "-m", "server.cli"}
-- (the discovery file's "cli" may be such a "python -m" command when no m2ugen script exists).
-- Returns the list, or nil and a message that tells the user what to do.
function settings.resolve_cli(s)
  if s.cli_path ~= "" then
    if not settings.file_exists(s.cli_path) then
      return nil, "The M2UGen CLI set in M2UGen - Settings does not exist:\n" .. s.cli_path ..
        "\n\nFix the path in M2UGen - Settings (or clear it to use the running server's CLI)."
    end
    return { s.cli_path }
  end
  local d, where = settings.read_discovery()
  if not d then
    return nil, "The M2UGen CLI was not found: no server discovery file in\n" .. table.concat(where, "\n") ..
      "\n\nStart the server (m2ugen serve) once, or set the CLI path in M2UGen - Settings."
  end
  if type(d.cli) ~= "string" or d.cli == "" then
    return nil, "The discovery file " .. where .. " has no \"cli\" entry.\nSet the CLI path in M2UGen - Settings."
  end
  if settings.file_exists(d.cli) then return { d.cli } end
  if type(d.python) == "string" and settings.file_exists(d.python) and d.cli:find(" -m server.cli", 1, true) then
    return { d.python, "-m", "server.cli" }
  end
  return nil, "The M2UGen CLI named in " .. where .. " does not exist:\n" .. d.cli ..
    "\n\nReinstall m2ugen or set the CLI path in M2UGen - Settings."
end

return settings
