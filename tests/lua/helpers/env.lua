-- Per-test sandbox: a temp dir with a project folder, a config dir with a discovery file naming a
-- (fake) CLI, os.getenv patched so the scripts find that config dir, and a fresh fake reaper.
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local Fake = dofile(HERE .. "fake_reaper.lua")

local env = {}

env.Fake = Fake
env.REPO = Fake.REPO
env.SCRIPTS = Fake.REPO .. "reaper_scripts/"

-- A directory name with everything a shell could trip over.
env.NASTY = "My Proj 'q' \"dq\" $(echo INJECTED) `id` ; & | %PATH% %%x é日本"

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  os.execute("mkdir -p " .. Fake.sh_quote(p))
  return p
end

-- opts: project_name, os_name, exec_mode, no_discovery, cli_exists (default true), preview ("on" to
-- keep the default preview; otherwise Settings say preview = off), fake options
function env.setup(opts)
  opts = opts or {}
  local ctx = { root = tmpdir() }
  ctx.project_dir = ctx.root .. "/" .. (opts.project_name or "project")
  os.execute("mkdir -p " .. Fake.sh_quote(ctx.project_dir))
  ctx.config_dir = ctx.root .. "/config"
  ctx.cli = opts.cli or (ctx.root .. "/bin dir/m2ugen")
  if opts.cli_exists ~= false and not opts.cli then
    os.execute("mkdir -p " .. Fake.sh_quote(ctx.root .. "/bin dir"))
    local f = assert(io.open(ctx.cli, "w"))
    f:write("#!/bin/sh\nexit 0\n")
    f:close()
  end
  if not opts.no_discovery then Fake.write_discovery(ctx.config_dir, ctx.cli) end
  ctx.real_getenv = os.getenv
  -- the scripts' temp files go to <root>/<tmp_name>/m2ugen-reaper/{in,out,jobs}
  ctx.tmp_dir = ctx.root .. "/" .. (opts.tmp_name or "tmp")
  os.execute("mkdir -p " .. Fake.sh_quote(ctx.tmp_dir))
  local overrides = { M2UGEN_CONFIG_DIR = ctx.config_dir, HOME = ctx.root .. "/home",
                      XDG_CONFIG_HOME = false, APPDATA = false, LOCALAPPDATA = false,
                      TMPDIR = ctx.tmp_dir, TEMP = ctx.tmp_dir, TMP = false }
  for k, v in pairs(opts.env or {}) do overrides[k] = v end
  os.getenv = function(k)
    local v = overrides[k]
    if v == false then return nil end
    if v ~= nil then return v end
    return ctx.real_getenv(k)
  end
  local fopts = { project_dir = ctx.project_dir, os_name = opts.os_name, exec_mode = opts.exec_mode,
                  tick_dt = opts.tick_dt, sim_every = opts.sim_every }
  ctx.fake = Fake.new(fopts)
  ctx.fake:install()
  -- the specs written before the preview existed insert at once; preview specs pass preview = "on"
  if opts.preview ~= "on" then
    ctx.fake.ext.M2UGen = { preview = { value = "off", persist = true } }
  end
  return ctx
end

-- Cleans up, then fails the test if the fake saw any API violation (unknown function, bad
-- argument count, unguarded extension call), even one the script caught and turned into a message.
function env.teardown(ctx)
  if ctx.torn_down then return end
  ctx.torn_down = true
  Fake.restore_io() -- a spec that filled the disk
  os.getenv = ctx.real_getenv
  os.execute("rm -rf " .. Fake.sh_quote(ctx.root))
  _G.reaper = nil
  _G.gfx = nil
  local v = ctx.fake.violations
  assert(#v == 0, "REAPER API violations: " .. table.concat(v, "; "))
end

-- A project with three tracks; `Keys` (index 1) selected, time selection 2..6 s, 3/4 at 96 bpm.
function env.standard_project(fake)
  fake:add_track("Drums")
  local keys = fake:add_track("Keys")
  fake:add_track("Bass")
  keys.selected = true
  fake.ts, fake.te = 2.0, 6.0
  fake.tempo = { num = 3, den = 4, bpm = 96 }
  return keys
end

function env.run_action(ctx, name, defer_opts)
  ctx.fake:run_script(env.SCRIPTS .. "M2UGen - " .. name .. ".lua")
  return ctx.fake:run_defer(defer_opts)
end

-- Every file (recursively) under dir, relative names.
function env.list_files(dir)
  local p = io.popen("cd " .. Fake.sh_quote(dir) .. " 2>/dev/null && find . -type f | sort")
  local out = {}
  for line in p:lines() do out[#out + 1] = line:sub(3) end
  p:close()
  return out
end

-- Helpers the specs share -------------------------------------------------------------------

-- Sets one M2UGen setting (as M2UGen - Settings would).
function env.set(fake, key, value)
  fake.ext.M2UGen = fake.ext.M2UGen or {}
  fake.ext.M2UGen[key] = { value = value, persist = true }
end

-- What every action leaves behind, whatever happened: no API violation, balanced undo blocks and UI
-- refresh, the user's render settings, no active-job ExtState.
function env.check_invariants(fake)
  local assert = require("luassert") -- busted's assert (this file is loaded outside the spec's sandbox)
  assert.are.same({}, fake.violations)
  assert.are.equal(fake.undo.begin, fake.undo["end"], "Undo_BeginBlock2/EndBlock2 unbalanced")
  assert.are.equal(0, fake.undo.depth)
  assert.are.equal(0, fake.refresh, "PreventUIRefresh unbalanced")
  assert.are.same(Fake.DEFAULT_RENDER.numbers, fake.render.numbers, "render settings not restored")
  assert.are.same(Fake.DEFAULT_RENDER.strings, fake.render.strings, "render settings not restored")
  assert.is_nil(fake.ext.M2UGen and fake.ext.M2UGen.active, "the active-job ExtState was left behind")
end

function env.last_message(fake)
  local m = fake.messages[#fake.messages]
  return m and m.msg or ""
end

-- The tracks the scripts created in project p: {index (0-based), track}.
function env.created(p)
  local out = {}
  for i, t in ipairs(p.tracks) do if t.created then out[#out + 1] = { index = i - 1, track = t } end end
  return out
end

return env
