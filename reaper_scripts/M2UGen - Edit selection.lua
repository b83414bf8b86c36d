-- Installed together with "M2UGen - Generate" (see its @provides).
-- @description Edit the selected audio with M2UGen (new take, or the source muted)
-- @author M2UGen project
-- @version 0.3.0
-- @license MIT
-- @noindex
-- @about
--   Renders the selected items (else the selected tracks in the time selection, else the master mix
--   of the time selection), sends it with an edit instruction to the M2UGen server and puts the
--   edit in place of its source: a new active take of the selected item, or the source muted (only
--   inside a time selection) and the edit on a new track below (M2UGen - Settings), at the selection
--   start, as one undo point. The model hears the source up to where the result sits, so every FX
--   and fader applies once.
--   Stem-aware: remove, keep or replace one stem (drums, bass, other, vocals; guitar, piano) or add a
--   part, chosen in the dialog or read from the instruction ("remove the drums"); the rest of the mix
--   stays as it was.

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("app").run("edit")
