-- @noindex
-- Command-line quoting for reaper.ExecProcess (pure Lua, no REAPER calls).
--
-- Only three things ever reach a command line: the CLI path, the request file and the status file.
-- Prompts and user file names travel inside the request JSON, never through a shell.
--
--   shell.quote_posix(s)     single quotes, ' written as '\''  (sh: nothing is special inside '...')
--   shell.quote_windows(s)   double quotes for CreateProcess/cmd.exe; backslashes before the closing
--                            quote are doubled (MSVCRT rules); '"' (illegal in Windows file names),
--                            '%' (cmd.exe expands %VAR% even inside quotes) and control characters
--                            are rejected with an error that names the argument
--   shell.command(argv, is_windows) -> one command line string

local shell = {}

local function check_common(s, what)
  if type(s) ~= "string" then
    error(string.format("%s must be a string, got %s", what or "argument", type(s)), 0)
  end
  if s == "" then
    error(string.format("%s is empty", what or "argument"), 0)
  end
  if s:find("\0", 1, true) then
    error(string.format("%s contains a NUL byte: %q", what or "argument", s), 0)
  end
end

function shell.quote_posix(s, what)
  check_common(s, what)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function shell.quote_windows(s, what)
  check_common(s, what)
  what = what or "argument"
  if s:find('"', 1, true) then
    error(string.format('%s contains a double quote (") which cannot be passed safely on Windows: %s',
      what, s), 0)
  end
  if s:find("%", 1, true) then
    error(string.format("%s contains '%%' which Windows cmd.exe would expand as a variable: %s",
      what, s), 0)
  end
  if s:find("[%c]") then
    error(string.format("%s contains a control character (newline, tab...): %q", what, s), 0)
  end
  -- No quotes inside, so only a run of backslashes right before the closing quote needs doubling.
  local body, trailing = s:match("^(.-)(\\*)$")
  return '"' .. body .. trailing .. trailing .. '"'
end

-- argv: list of strings; names (optional): list of labels used in error messages.
function shell.command(argv, is_windows, names)
  local quote = is_windows and shell.quote_windows or shell.quote_posix
  local parts = {}
  for i, a in ipairs(argv) do
    parts[i] = quote(a, names and names[i] or ("argument " .. i))
  end
  return table.concat(parts, " ")
end

return shell
