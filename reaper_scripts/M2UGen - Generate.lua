-- @description M2UGen: generate, edit and ask about music from REAPER
-- @author M2UGen project
-- @version 0.5.0
-- @license MIT
-- @about
--   # M2UGen for REAPER
--   Nine actions that talk to a local M2UGen server through the `m2ugen` command-line client:
--   Generate (text, optionally an image, a video or a selected MIDI item as the melody), Edit selection
--   (also stem-aware: remove, keep or replace one stem, or add a part), Ask about selection, Split into
--   stems (each stem on its own track under a folder track), Transcribe selection (to MIDI), Learn from
--   selected items (a personal fine-tune that runs in the background while the others keep working), Jobs (re-insert / fetch),
--   Cancel and Settings. The server (m2ugen serve) must be running;
--   its discovery file tells these scripts where the CLI is. Results are previewed (Accept /
--   Regenerate / Discard), can come as several takes, and land in the project the job started in.
-- @provides
--   [main] M2UGen - Ask about selection.lua
--   [main] M2UGen - Edit selection.lua
--   [main] M2UGen - Cancel.lua
--   [main] M2UGen - Jobs.lua
--   [main] M2UGen - Learn from selected items.lua
--   [main] M2UGen - Settings.lua
--   [main] M2UGen - Split into stems.lua
--   [main] M2UGen - Transcribe selection.lua
--   [nomain] m2ugen/*.lua
-- @changelog
--   0.5.0: M2UGen - Split into stems (4 or 6 stems, each on its own track under a folder track named
--   after the item, aligned to it, the source muted, one undo point); Edit selection has stem fields
--   (remove / keep / replace one stem, or add a part; auto reads the instruction).
--   0.4.0: a Learn runs in the background (Ask / Edit / Generate / Transcribe keep working; Cancel asks
--   which job); several selected tracks are heard together; every FX and fader applies once (Ask hears
--   the mix, an edit hears its source up to where the result sits); an edit over a time selection
--   mutes only the range (items split at its edges); a full disk never keeps a truncated copy; File >
--   Open in the job's tab is noticed; quitting REAPER no longer cancels a job (the next run fetches it);
--   a MIDI item is the melody only when the server's decoder can follow one (else you are told);
--   looped MIDI items count every loop; Windows: no console window, a locked status file is handled;
--   the server's job list and result copies never freeze REAPER; SWS preview of any take; Esc /
--   closing the preview asks instead of accepting.
--   0.3.0: a selected MIDI item is the melody of Generate / Edit (its notes on the project's tempo
--   map, mode melody); M2UGen - Transcribe selection: the selection as MIDI (melody + chords) on a
--   new MIDI track; M2UGen - Learn from selected items (a personal adapter learnt on the server from
--   the selected items' audio); Settings: Adapter (the one Ask / Edit / Generate use; empty = the base model).
--   0.2.0: results go into the project the job started in (also after a tab switch); a finished
--   result is never deleted; a dead, hung or never-started CLI ends the job with the command that
--   fetches its result; Edit listens to selected items, then selected tracks, then the master mix,
--   and replaces (new take) or mutes its source in one undo point; preview with Accept / Regenerate /
--   Discard (SWS CF_Preview when installed); N takes on one item; answers on one "M2UGen answers"
--   track (optional markers/regions) with the measured analysis; M2UGen - Jobs; relaunching a
--   running action no longer asks "script already running".
--   0.1.0: first release.

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("app").run("generate")
