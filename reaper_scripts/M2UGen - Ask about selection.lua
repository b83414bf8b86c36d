-- Installed together with "M2UGen - Generate" (see its @provides).
-- @description Ask the M2UGen music assistant a question about the selected audio
-- @author M2UGen project
-- @version 0.2.0
-- @license MIT
-- @noindex
-- @about
--   Renders the selected items (else the selected tracks in the time selection, all of them mixed,
--   else the master mix) as heard and asks the M2UGen server about it. The answer (with the measured tempo, key and
--   loudness when the server sends them) appears in a window and is kept in the project: as the
--   notes of an item on the one "M2UGen answers" track, optionally as a marker or region, and in
--   the project's job history.

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("app").run("ask")
