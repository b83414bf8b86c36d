-- Installed together with "M2UGen - Generate" (see its @provides).
-- @description Cancel the running M2UGen job
-- @author M2UGen project
-- @version 0.2.0
-- @license MIT
-- @noindex
-- @about
--   Asks the server to cancel a job started in this REAPER session (Ask / Edit / Generate /
--   Transcribe / a fetch, or a Learn; asks which when both run).

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("app").cancel()
