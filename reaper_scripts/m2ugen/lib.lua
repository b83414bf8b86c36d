-- @noindex
-- Loader for the M2UGen library files that sit next to this one.
--   local import = dofile(script_dir .. "m2ugen/lib.lua")
--   local app = import("app")
-- Each library file is loaded once and receives `import` as its chunk argument (`local import = ...`),
-- so all modules share one instance of every other module (one json.null, one settings table).

local dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded = {}

local function import(name)
  local m = loaded[name]
  if m == nil then
    local chunk, err = loadfile(dir .. name .. ".lua")
    if not chunk then
      error("M2UGen: cannot load library file '" .. name .. ".lua': " .. tostring(err), 0)
    end
    m = chunk(import)
    loaded[name] = m
  end
  return m
end

return import
