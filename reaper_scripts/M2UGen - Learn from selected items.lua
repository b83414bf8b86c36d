-- Installed together with "M2UGen - Generate" (see its @provides).
-- @description M2UGen: learn a personal adapter from the selected items
-- @author M2UGen project
-- @version 0.3.0
-- @license MIT
-- @noindex
-- @about
--   Sends the part of each selected audio item's source file that the item plays (its notes, if any,
--   as its caption) to the M2UGen server as a fine-tune job (`m2ugen learn`): a personal LoRA adapter,
--   named in the dialog, that Ask / Edit / Generate then use when M2UGen - Settings names it (Adapter).
--   It runs in the background with its own progress window: Ask / Edit / Generate / Transcribe keep
--   working meanwhile. Cancel stops the fine-tune at its next step.

-- The library lives in m2ugen/ next to this script (installed together by ReaPack).
local script_dir = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local loaded, import = pcall(dofile, script_dir .. "m2ugen/lib.lua")
if not loaded then
  reaper.ShowMessageBox("The M2UGen library is missing next to this script:\n" .. tostring(import) ..
    "\n\nReinstall the M2UGen package (ReaPack) or copy the m2ugen folder beside the scripts.", "M2UGen", 0)
  return
end

import("app").learn()
