-- Installed together with "M2UGen - Generate" (see its @provides).
-- @description Transcribe the selected audio to MIDI with M2UGen (a melody and a chord track)
-- @author M2UGen project
-- @version 0.3.0
-- @license MIT
-- @noindex
-- @about
--   Renders the selected items (else the selected tracks in the time selection, else the master mix
--   of the time selection), sends it to the M2UGen server as a transcribe job and puts its notes (a
--   monophonic melody, channel 1, and a chord track, channel 2) on a new MIDI track at the selection
--   start, as one undo point. The .mid is kept next to the project (<project>/M2UGen/<name>.mid) and
--   the MIDI take is named after the job. The project tempo is the file's and the chord grid's.

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("app").run("transcribe")
