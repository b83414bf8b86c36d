-- Installed together with "M2UGen - Generate" (see its @provides).
-- @description M2UGen settings (CLI path, server, duration, conditioning, seed)
-- @author M2UGen project
-- @version 0.2.0
-- @license MIT
-- @noindex
-- @about
--   Settings are kept with reaper.SetExtState (section "M2UGen").

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("app").settings_dialog()
