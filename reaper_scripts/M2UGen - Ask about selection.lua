-- Installed together with "M2UGen - Generate" (see its @provides).
-- @description Ask the M2UGen music assistant a question about the selected audio
-- @author M2UGen project
-- @version 0.1.0
-- @license MIT
-- @noindex
-- @about
--   Renders the time selection (or the selected items) and asks the M2UGen server about it.
--   The answer appears in a window and is kept in the project as the notes of an item on a new
--   track below the source track (and in the project's extension state).

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("app").run("ask")
