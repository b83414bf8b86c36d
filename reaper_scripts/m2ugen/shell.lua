-- @noindex
-- Command lines for reaper.ExecProcess (pure Lua, no REAPER calls).
--
-- Only the CLI path, the kind, the request file, the status file (and a validated server address)
-- ever reach a command line. Prompts and user file names travel inside the request JSON.
--
-- macOS/Linux: REAPER's ExecProcess runs no shell; it splits the command line at spaces and honours
-- '...', "..." and `...` without any escapes. So the real argv goes into a small launcher script
-- where every argument is sh-quoted, and REAPER runs `/bin/sh '<launcher>'` (a path we choose, with
-- no quote in it). The same line also means the same thing to a shell, should one be involved.
--   shell.quote_posix(s)          single quotes, ' written as '\''  (sh: nothing is special in '...')
--   shell.launcher(argv, names)   the launcher text: #!/bin/sh, rm -f "$0", exec <quoted argv>
--   shell.launcher(argv, names, {pid_file, exit_file})
--                                 a supervising launcher: runs the argv as its child, writes the
--                                 child's pid to pid_file and, when it ends however it ends, its exit
--                                 status to exit_file (both atomically: temp file + mv)
--   shell.launcher(argv, names, nil, out_file)
--                                 the same, its standard output written to out_file
--   shell.quote_single(s)         '...' for the launcher path itself (refuses a ' in it)
-- Windows: CreateProcess hands the line to the program, which splits it with the MSVCRT rules.
--   shell.quote_windows(s)        double quotes; backslashes before the closing quote are doubled;
--                                 '"' (illegal in Windows file names), '%' (cmd.exe would expand
--                                 %VAR% even inside quotes) and control characters are refused
--   shell.command(argv, is_windows, names) -> one command line with every argument quoted
--   shell.vbs_launcher(line, opts) a .vbs (UTF-16LE text) that runs `line` HIDDEN: REAPER's
--                                 ExecProcess opens a console window for a console program (even
--                                 -2 "minimize" shows one on the taskbar), so the scripts run
--                                 `wscript.exe //B //Nologo "<vbs>"` -- wscript is a GUI program -- and
--                                 the .vbs calls WshShell.Run(line, 0, wait): window style 0 = hidden
--                                 (Microsoft, WshShell.Run). opts.exit_file: wait, then write the exit
--                                 code there (temp file + MoveFile); opts.out_file: run through
--                                 `cmd.exe /s /c "<line> > "<out_file>""` to keep the output.
-- Every refusal raises an error that names the argument.

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

function shell.quote_single(s, what)
  check_common(s, what)
  if s:find("'", 1, true) then
    error(string.format("%s contains a single quote ('), which REAPER cannot pass: %s", what or "argument", s), 0)
  end
  return "'" .. s .. "'"
end

-- The launcher script for `argv` (POSIX). It deletes itself first: sh keeps reading the open file.
function shell.launcher(argv, names, supervise, out_file)
  local quoted = {}
  for i, a in ipairs(argv) do
    quoted[i] = shell.quote_posix(a, names and names[i] or ("argument " .. i))
  end
  local head = "#!/bin/sh\n# written by the M2UGen ReaScripts for one run of the m2ugen CLI\n" ..
    "rm -f -- \"$0\"\n"
  if out_file then
    return head .. "M2UGEN_OUT=" .. shell.quote_posix(out_file, "output file path") .. "\n" ..
      "exec " .. table.concat(quoted, " ") .. " >\"$M2UGEN_OUT\"\n"
  end
  if not supervise then
    return head .. "exec " .. table.concat(quoted, " ") .. "\n"
  end
  return head ..
    "M2UGEN_PID_FILE=" .. shell.quote_posix(supervise.pid_file, "pid file path") .. "\n" ..
    "M2UGEN_EXIT_FILE=" .. shell.quote_posix(supervise.exit_file, "exit file path") .. "\n" ..
    table.concat(quoted, " ") .. " </dev/null &\n" ..
    "pid=$!\n" ..
    "echo \"$pid\" > \"$M2UGEN_PID_FILE.tmp\" && mv -f \"$M2UGEN_PID_FILE.tmp\" \"$M2UGEN_PID_FILE\"\n" ..
    "wait \"$pid\"\n" ..
    "code=$?\n" ..
    -- only while the script still watches (it removes the pid file when it is done): no stray file
    "[ -e \"$M2UGEN_PID_FILE\" ] && echo \"$code\" > \"$M2UGEN_EXIT_FILE.tmp\" && " ..
    "mv -f \"$M2UGEN_EXIT_FILE.tmp\" \"$M2UGEN_EXIT_FILE\"\n"
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

-- UTF-8 -> UTF-16LE with a BOM (wscript reads a .vbs with this BOM as Unicode: any path works).
function shell.utf16le(text)
  local out = { "\255\254" }
  for _, c in utf8.codes(text) do
    if c >= 0x10000 then
      c = c - 0x10000
      out[#out + 1] = string.pack("<I2I2", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF))
    else
      out[#out + 1] = string.pack("<I2", c)
    end
  end
  return table.concat(out)
end

local function vbs_string(s) return '"' .. s:gsub('"', '""') .. '"' end

-- The hidden launcher for a Windows command line (see the header). Returns its UTF-16LE text.
function shell.vbs_launcher(line, opts)
  opts = opts or {}
  if opts.out_file then
    line = 'cmd.exe /s /c "' .. line .. " > " .. shell.quote_windows(opts.out_file, "output file path") .. '"'
  end
  local lines = {
    "' written by the M2UGen ReaScripts for one run of the m2ugen CLI",
    'Set sh = CreateObject("WScript.Shell")',
    'Set fs = CreateObject("Scripting.FileSystemObject")',
    "fs.DeleteFile WScript.ScriptFullName",
  }
  if opts.exit_file then
    lines[#lines + 1] = "exitFile = " .. vbs_string(opts.exit_file)
    lines[#lines + 1] = "rc = sh.Run(" .. vbs_string(line) .. ", 0, True)"
    lines[#lines + 1] = 'Set f = fs.CreateTextFile(exitFile & ".tmp", True)'
    lines[#lines + 1] = "f.WriteLine rc"
    lines[#lines + 1] = "f.Close"
    lines[#lines + 1] = 'fs.MoveFile exitFile & ".tmp", exitFile'
  else
    lines[#lines + 1] = "rc = sh.Run(" .. vbs_string(line) .. ", 0, False)"
  end
  return shell.utf16le(table.concat(lines, "\r\n") .. "\r\n")
end

return shell
