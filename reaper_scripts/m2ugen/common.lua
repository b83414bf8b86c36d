-- @noindex
-- What every M2UGen action module shares: the window titles, the relaunch options, user-facing
-- errors (raised as a table so the message box shows only the text) and the message box itself.

local common = {}

common.TITLES = {
  ask = "M2UGen - Ask about selection",
  edit = "M2UGen - Edit selection",
  generate = "M2UGen - Generate",
  transcribe = "M2UGen - Transcribe selection",
  result = "M2UGen - Jobs",
  learn = "M2UGen - Learn from selected items",
  stems = "M2UGen - Split into stems",
}

-- reaper.set_action_options flags (REAPER 7.03+): while a job runs a relaunch of the same action
-- is ignored (no "script is already running" dialog; the progress window is on screen) and the
-- action's toggle state is on; once the job is over a relaunch ends this instance (its answer or
-- preview window) and starts afresh, and the toggle is off.
common.OPTIONS_RUNNING = 2 | 4
common.OPTIONS_IDLE = 1 | 2 | 8

function common.action_options(flags)
  if reaper.set_action_options then reaper.set_action_options(flags) end
end

local UserError = {}
UserError.__index = UserError

function common.user_error(msg) return setmetatable({ msg = msg }, UserError) end
function common.fail(msg) error(common.user_error(msg), 0) end
function common.message_of(err)
  if getmetatable(err) == UserError then return err.msg end
  return "M2UGen script error:\n" .. tostring(err)
end
-- xpcall handler: a user error as is, anything else with its traceback.
function common.traceback(e)
  if getmetatable(e) == UserError then return e end
  return debug.traceback(tostring(e), 2)
end

function common.message(text, title)
  reaper.ShowMessageBox(text, title or "M2UGen", 0)
end

function common.trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- At most `n` bytes of `s`, cut at a UTF-8 character boundary (never inside a multi-byte character).
function common.utf8_cut(s, n)
  if #s <= n then return s end
  local cut = n
  -- step back over continuation bytes (10xxxxxx) to the start of the character at n + 1
  while cut > 0 and (s:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
  return s:sub(1, cut)
end

return common
