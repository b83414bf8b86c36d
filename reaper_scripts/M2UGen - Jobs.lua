-- Installed together with "M2UGen - Generate" (see its @provides).
-- @description M2UGen job list: show answers, re-insert or fetch results
-- @author M2UGen project
-- @version 0.2.0
-- @license MIT
-- @noindex
-- @about
--   Lists the jobs kept with this project (prompt, seed, state); picks one to show its answer again,
--   re-insert its kept files, or fetch its result from the server (`m2ugen result JOB --wait --out FILE`).
--   The server's own list (`m2ugen jobs`) is read in the background.

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("app").jobs()
