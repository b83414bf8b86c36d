-- Installed together with "M2UGen - Generate" (see its @provides).
-- @description Split the selected audio into stems with M2UGen (drums, bass, other, vocals; guitar, piano)
-- @author M2UGen project
-- @version 0.1.0
-- @license MIT
-- @noindex
-- @about
--   Renders the selected items (else the selected tracks in the time selection, else the master mix
--   of the time selection) as an edit hears them, sends them to the M2UGen server as a stems job
--   (Demucs: 4 stems, or 6 with guitar and piano) and puts each stem on its own new track under a new
--   folder track named after the item, aligned sample for sample to the selection start, the source
--   items muted, as one undo point. The stem files are kept next to the project
--   (<project>/M2UGen/<name>-<stem>.wav); M2UGen - Jobs puts them in again.

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("stems").run()
