-- Quoting for POSIX sh (checked against a real /bin/sh) and Windows (checked against the
-- CommandLineToArgvW rules implemented in the fake).
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local Fake = dofile(HERE .. "helpers/fake_reaper.lua")
local shell = dofile(Fake.REPO .. "reaper_scripts/m2ugen/shell.lua")

local NASTY = {
  "plain",
  "with space",
  "it's",
  "''",
  'double "quoted"',
  "$(echo INJECTED)",
  "`echo INJECTED`",
  "a;b",
  "a && b",
  "a | b",
  "%PATH%",
  "%%x%%",
  "$HOME",
  "back\\slash\\",
  "tab\there",
  "new\nline",
  "é日本🎵",
  "-n",
  "*",
  "!bang",
}

describe("shell.quote_posix", function()
  it("round-trips every nasty string through a real sh", function()
    local quoted = {}
    for i, s in ipairs(NASTY) do quoted[i] = shell.quote_posix(s) end
    local argv = Fake.sh_argv(table.concat(quoted, " "))
    assert.are.same(NASTY, argv)
  end)

  it("writes ' as '\\''", function()
    assert.are.equal("'it'\\''s'", shell.quote_posix("it's"))
  end)

  it("refuses empty strings and NUL bytes, naming the argument", function()
    local ok, err = pcall(shell.quote_posix, "", "request file path")
    assert.is_false(ok)
    assert.truthy(err:find("request file path is empty", 1, true))
    ok, err = pcall(shell.quote_posix, "a\0b", "CLI path")
    assert.is_false(ok)
    assert.truthy(err:find("CLI path contains a NUL", 1, true))
  end)
end)

describe("shell.launcher", function()
  it("runs the exact argv under /bin/sh and deletes itself", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. Fake.sh_quote(dir))
    local path = dir .. "/run 1.sh"
    local argv = { "printf", "%s\\0" }
    for _, a in ipairs(NASTY) do argv[#argv + 1] = a end
    local f = assert(io.open(path, "w"))
    f:write(shell.launcher(argv))
    f:close()
    local cmd = "/bin/sh " .. shell.quote_single(path, "launcher path")
    -- REAPER splits that line into exactly /bin/sh and the launcher path
    assert.are.same({ "/bin/sh", path }, Fake.reaper_split(cmd))
    local p = assert(io.popen(cmd, "r"))
    local out = p:read("a")
    p:close()
    local got = {}
    for a in out:gmatch("([^%z]*)%z") do got[#got + 1] = a end
    assert.are.same(NASTY, got)
    assert.is_false(Fake.file_exists(path))
    os.execute("rm -rf " .. Fake.sh_quote(dir))
  end)

  it("a supervising launcher records the child's pid and its exit status, also when it is killed", function()
    local dir = os.tmpname()
    os.remove(dir)
    dir = dir .. " it's"
    os.execute("mkdir -p " .. Fake.sh_quote(dir))
    local sup = { pid_file = dir .. "/job.pid", exit_file = dir .. "/job.exit" }
    local function run(argv, wait)
      local path = dir .. "/run.sh"
      local f = assert(io.open(path, "w"))
      f:write(shell.launcher(argv, nil, sup))
      f:close()
      os.execute("/bin/sh " .. Fake.sh_quote(path) .. (wait and "" or " >/dev/null 2>&1 &"))
      assert.is_false(wait and Fake.file_exists(path) or false)
    end
    run({ "sh", "-c", "exit 7" }, true)
    assert.truthy(Fake.read_file(sup.pid_file):match("^%d+\n$"))
    assert.are.equal("7\n", Fake.read_file(sup.exit_file))
    os.remove(sup.exit_file)
    os.remove(sup.pid_file)
    run({ "sleep", "30" }, false)
    local pid
    for _ = 1, 50 do
      pid = Fake.read_file(sup.pid_file)
      if pid then break end
      os.execute("sleep 0.05")
    end
    assert.truthy(pid)
    os.execute("kill -9 " .. pid:match("%d+"))
    local code
    for _ = 1, 50 do
      code = Fake.read_file(sup.exit_file)
      if code then break end
      os.execute("sleep 0.05")
    end
    assert.are.equal("137\n", code)
    -- once the script removed the pid file (it is done watching), no exit file is written any more
    os.remove(sup.pid_file)
    os.remove(sup.exit_file)
    run({ "sh", "-c", "sleep 0.2; exit 3" }, false)
    os.execute("sleep 0.1")
    os.remove(sup.pid_file)
    os.execute("sleep 0.4")
    assert.is_false(Fake.file_exists(sup.exit_file))
    os.execute("rm -rf " .. Fake.sh_quote(dir))
  end)

  it("refuses a launcher path with a single quote", function()
    local ok, err = pcall(shell.quote_single, "/tmp/it's/x.sh", "launcher path")
    assert.is_false(ok)
    assert.truthy(err:find("launcher path contains a single quote", 1, true))
  end)
end)

describe("shell.quote_windows", function()
  it("round-trips paths with spaces, cmd metacharacters, non-ASCII and trailing backslashes", function()
    local ok_cases = {
      [[C:\Program Files\m2ugen\m2ugen.exe]],
      [[C:\Users\Zoë\AppData\Local\m2ugen\req uest.json]],
      [[D:\a & b\c | d\e ; f\g^h\(x)]],
      [[C:\it's\$(echo INJECTED)\`id`]],
      [[C:\dir with trailing\\]],
      [[\\server\share\日本\file.json]],
    }
    local quoted = {}
    for i, s in ipairs(ok_cases) do
      quoted[i] = shell.quote_windows(s)
      assert.are.equal('"', quoted[i]:sub(1, 1))
      assert.are.equal('"', quoted[i]:sub(-1))
    end
    assert.are.same(ok_cases, Fake.windows_argv(table.concat(quoted, " ")))
  end)

  it("doubles only the backslashes before the closing quote", function()
    assert.are.equal([["C:\a\b\\"]], shell.quote_windows([[C:\a\b\]]))
    assert.are.equal([["C:\a\b"]], shell.quote_windows([[C:\a\b]]))
  end)

  it("rejects double quotes, percent signs and control characters with a clear message", function()
    local bad = {
      { 'C:\\a"b', "double quote" },
      { "C:\\%APPDATA%\\x", "'%' which Windows cmd.exe would expand" },
      { "C:\\100%", "'%'" },
      { "C:\\a\nb", "control character" },
    }
    for _, case in ipairs(bad) do
      local ok, err = pcall(shell.quote_windows, case[1], "status file path")
      assert.is_false(ok, case[1])
      assert.truthy(err:find("status file path", 1, true), err)
      assert.truthy(err:find(case[2], 1, true), err)
    end
  end)
end)

describe("shell.command", function()
  it("quotes each argument for the OS and names the bad one", function()
    local argv = { "/opt/m 2/m2ugen", "generate", "--request", "/tmp/it's/r.json" }
    assert.are.same(argv, Fake.sh_argv(shell.command(argv, false)))
    local win = { [[C:\m 2\m2ugen.exe]], "generate", "--request", [[C:\x y\r.json]] }
    assert.are.same(win, Fake.windows_argv(shell.command(win, true)))
    local ok, err = pcall(shell.command, { "C:\\m2ugen.exe", "C:\\50%\\r.json" }, true,
      { "CLI path", "request file path" })
    assert.is_false(ok)
    assert.truthy(err:find("request file path", 1, true))
  end)
end)
