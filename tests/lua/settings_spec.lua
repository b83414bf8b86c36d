-- Settings (ExtState) and discovery-file rules.
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local env = dofile(HERE .. "helpers/env.lua")

local function load_settings()
  local import = dofile(env.SCRIPTS .. "m2ugen/lib.lua")
  return import("settings")
end

describe("settings", function()
  local ctx
  after_each(function() env.teardown(ctx) end)

  it("looks for the discovery file where platformdirs puts user_config_dir('m2ugen')", function()
    ctx = env.setup({ os_name = "linux-x86_64", env = { M2UGEN_CONFIG_DIR = false, HOME = "/home/u" } })
    local settings = load_settings()
    assert.are.same({ "/home/u/.config/m2ugen/server.json" }, settings.discovery_candidates())
    env.teardown(ctx)

    ctx = env.setup({ os_name = "linux-x86_64", env = { M2UGEN_CONFIG_DIR = false, HOME = "/home/u",
                                                        XDG_CONFIG_HOME = "/xdg" } })
    settings = load_settings()
    assert.are.equal("/xdg/m2ugen/server.json", settings.discovery_candidates()[1])
    env.teardown(ctx)

    ctx = env.setup({ os_name = "macOS-arm64", env = { M2UGEN_CONFIG_DIR = false, HOME = "/Users/u" } })
    settings = load_settings()
    assert.are.same({ "/Users/u/Library/Application Support/m2ugen/server.json" }, settings.discovery_candidates())
    env.teardown(ctx)

    ctx = env.setup({ os_name = "Win64", env = { M2UGEN_CONFIG_DIR = false,
                                                 LOCALAPPDATA = [[C:\Users\u\AppData\Local]],
                                                 APPDATA = [[C:\Users\u\AppData\Roaming]] } })
    ctx.fake.resource_dir = [[C:\Users\Zoë\AppData\Roaming\REAPER]]
    settings = load_settings()
    local c = settings.discovery_candidates()
    assert.are.equal([[C:\Users\u\AppData\Local\m2ugen\m2ugen\server.json]], c[1])
    assert.are.equal([[C:\Users\u\AppData\Roaming\m2ugen\server.json]], c[3])
    -- derived from REAPER's resource path (UTF-8, unlike os.getenv on Windows)
    assert.are.equal([[C:\Users\Zoë\AppData\Local\m2ugen\m2ugen\server.json]], c[#c])
    env.teardown(ctx)

    ctx = env.setup({ os_name = "linux-x86_64", env = { M2UGEN_CONFIG_DIR = "/cfg" } })
    settings = load_settings()
    assert.are.equal("/cfg/server.json", settings.discovery_candidates()[1])
  end)

  it("resolves the CLI from the discovery file, from Settings, or says what is missing", function()
    ctx = env.setup()
    local settings = load_settings()
    assert.are.same({ ctx.cli }, settings.resolve_cli(settings.load()))

    local s = settings.load()
    s.cli_path = ctx.root .. "/nope/m2ugen"
    local cli, why = settings.resolve_cli(s)
    assert.is_nil(cli)
    assert.truthy(why:find("set in M2UGen - Settings does not exist", 1, true))

    os.remove(ctx.config_dir .. "/server.json")
    cli, why = settings.resolve_cli(settings.load())
    assert.is_nil(cli)
    assert.truthy(why:find("no server discovery file", 1, true))
    assert.truthy(why:find(ctx.config_dir, 1, true))
  end)

  it("accepts a discovery 'cli' of the form '<python> -m server.cli'", function()
    ctx = env.setup({ cli_exists = false })
    local py = ctx.root .. "/py thon"
    io.open(py, "w"):close()
    env.Fake.write_discovery(ctx.config_dir, py .. " -m server.cli", { python = py })
    local settings = load_settings()
    assert.are.same({ py, "-m", "server.cli" }, settings.resolve_cli(settings.load()))
  end)

  it("validates every field and names the bad one", function()
    ctx = env.setup()
    local settings = load_settings()
    local good = { cli_path = "", server = "tcp://127.0.0.1:5557", duration = "12.5", conditioning = "embedding",
                   seed = "7" }
    local clean = assert(settings.validate(good))
    assert.are.equal("12.5", clean.duration)
    local bad = {
      { "server", "localhost", "Server address" },
      { "duration", "0.1", "Default duration" },
      { "duration", "abc", "Default duration" },
      { "conditioning", "audio", "Conditioning" },
      { "seed", "-3", "Seed" },
      { "cli_path", "/no/such/m2ugen", "CLI path" },
    }
    for _, b in ipairs(bad) do
      local raw = {}
      for k, v in pairs(good) do raw[k] = v end
      raw[b[1]] = b[2]
      local out, why = settings.validate(raw)
      assert.is_nil(out, b[1])
      assert.truthy(why:find(b[3], 1, true), why)
    end
  end)
end)
