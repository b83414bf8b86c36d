-- End to end (run by tests/test_reaper_e2e.py, not by busted): one M2UGen action under lua5.4 with
-- the fake reaper in "background" mode, so ExecProcess really starts the CLI named by the server's
-- discovery file (M2UGEN_CONFIG_DIR) and the defer loop polls its real status file in real time.
-- Environment: E2E_KIND (generate | edit | ask | transcribe | stems), E2E_PROJECT (project folder), E2E_PROMPT,
-- E2E_TIMEOUT (seconds), E2E_ACCEPT=1 (preview on, Accept pressed), E2E_KILL=1 (the CLI is killed with
-- SIGKILL once its job has an id), E2E_TRACKS=2 (Keys and Bass selected: two files per render),
-- E2E_DISK_FULL=N (the project's disk takes N more bytes), E2E_KIND=learn_ask (a Learn trains; an Ask
-- is started beside it and must complete; then the Learn is cancelled). Prints one JSON line
-- describing the fake project afterwards.
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local Fake = dofile(HERE .. "helpers/fake_reaper.lua")
local json = Fake.json

local kind = assert(os.getenv("E2E_KIND"), "E2E_KIND")
local project_dir = assert(os.getenv("E2E_PROJECT"), "E2E_PROJECT")
local prompt = os.getenv("E2E_PROMPT") or "a calm piano melody"
local timeout = tonumber(os.getenv("E2E_TIMEOUT") or "120")
local dt = 0.05

local fake = Fake.new({ project_dir = project_dir, exec_mode = "background", tick_dt = dt })
fake:install()
fake:add_track("Drums")
local keys = fake:add_track("Keys")
local bass = fake:add_track("Bass")
keys.selected = true
-- what plays: a 440 Hz sine on Keys and on Bass (Bass at half volume), 0..3 s
local function audio_item(track, name)
  local path = project_dir .. "/" .. name .. ".wav"
  Fake.wav.write(path, 3.0, 48000, 1)
  local item = fake:add_item(track, 0.0, 3.0)
  fake:add_take(item, path, name)
  return item
end
local keys_item = audio_item(keys, "keys source")
audio_item(bass, "bass source")
bass.vol = 0.5
if os.getenv("E2E_TRACKS") == "2" then bass.selected = true end
if os.getenv("E2E_DISK_FULL") then fake:fill_disk(project_dir, tonumber(os.getenv("E2E_DISK_FULL"))) end
fake.ts, fake.te = 1.0, 2.0 -- a 1 s time selection
fake.tempo = { num = 4, den = 4, bpm = 100 }
-- as set in M2UGen - Settings
fake.ext.M2UGen = { preview = { value = os.getenv("E2E_ACCEPT") == "1" and "on" or "off", persist = true } }
if os.getenv("E2E_ACCEPT") == "1" then fake.gfx_state.keys = { [3] = "a" } end
local server = os.getenv("E2E_SERVER")
if server then fake.ext.M2UGen.server = { value = server, persist = true } end

local script
if kind == "generate" then
  fake.inputs_answers = { prompt .. "\n1\n7" }
  fake.mb_answers = { 7 }
  script = "M2UGen - Generate.lua"
elseif kind == "edit" then
  fake.inputs_answers = { prompt .. "\n7" }
  script = "M2UGen - Edit selection.lua"
elseif kind == "stems" then
  keys_item.selected = true -- the Keys item is split; the stems dialog: 4 stems
  fake.inputs_answers = { "4" }
  script = "M2UGen - Split into stems.lua"
elseif kind == "transcribe" then
  script = "M2UGen - Transcribe selection.lua" -- no dialog
elseif kind == "learn_ask" then
  keys_item.selected = true
  keys_item.notes = "a plain sine tone"
  fake.inputs_answers = { "e2e\n20000\nno", prompt }
  script = "M2UGen - Learn from selected items.lua"
else
  fake.inputs_answers = { prompt }
  script = "M2UGen - Ask about selection.lua"
end

-- E2E_CANCEL=1: once the job has an id, run "M2UGen - Cancel" (as a user would from the action list)
local cancel = os.getenv("E2E_CANCEL") == "1"
local kill = os.getenv("E2E_KILL") == "1"
local cancelled_job, killed_pid = nil, nil
local jobs_dir = (os.getenv("TMPDIR") or "/tmp") .. "/m2ugen-reaper/jobs"
-- the level and length of what the job hears, read while its rendered input exists
local input_gain, input_seconds = nil, nil
local function watch_input()
  if input_gain then return end
  local p = io.popen("ls " .. Fake.sh_quote(jobs_dir) .. "/*.request.json 2>/dev/null")
  local list = p:read("a")
  p:close()
  for path in list:gmatch("[^\n]+") do
    local req = json.try_decode(Fake.read_file(path) or "")
    if type(req) == "table" and type(req.audio) == "string" and Fake.file_exists(req.audio) then
      local ok, g = pcall(Fake.wav.gain, req.audio)
      if ok then input_gain, input_seconds = g, Fake.wav.info(req.audio).seconds end
    end
  end
end

-- learn_ask: the Ask starts once the Learn has a job id; when the Ask's answer is in, the Learn must
-- still be running; then "M2UGen - Cancel" cancels the Learn
local ask_started, ask_done_while_learning, learn_job, learn_cancelled = false, json.null, json.null, false
-- what happened when (fake clock seconds), for a failure's message: each change of the Learn's slot and
-- of the last history record
local timeline, last_seen, ask_was_active = {}, {}, false
local function note_change(what, value)
  if last_seen[what] ~= value then
    last_seen[what] = value
    timeline[#timeline + 1] = string.format("%.2f %s %s", fake.clock, what, tostring(value))
  end
end
local function learn_ask(f)
  local ext = f.ext.M2UGen or {}
  local la = ext.active_learn and json.decode(ext.active_learn.value)
  if la and la.job then learn_job = la.job end
  note_change("learn", la and (la.job or "starting") or "none")
  if not ask_started and la and la.job then
    ask_started = true
    keys_item.selected = false -- the Ask listens to the time selection
    f:run_script(Fake.REPO .. "reaper_scripts/M2UGen - Ask about selection.lua", { instance = "ask" })
  end
  local hist = f.proj_ext.M2UGen or {}
  local last = hist.last_job and hist["job:" .. hist.last_job] and json.decode(hist["job:" .. hist.last_job])
  note_change("history", last and (tostring(last.kind) .. " " .. tostring(last.state)) or "none")
  -- the Ask's record reached a final state (done, or failed / lost: then the test fails at once instead
  -- of waiting out the Learn's 20,000 steps)
  if ext.active then ask_was_active = true end
  local ask_ended = last and last.kind == "ask" and last.state ~= "running"
  ask_ended = ask_ended or (ask_was_active and not ext.active) -- the Ask's script stopped without a record
  if ask_started and ask_done_while_learning == json.null and ask_ended then
    ask_done_while_learning = last ~= nil and last.kind == "ask" and last.state == "done" and la ~= nil and la.job ~= nil
    if la then
      learn_cancelled = true
      f:run_script(Fake.REPO .. "reaper_scripts/M2UGen - Cancel.lua", { instance = "cancel" })
    end
  end
end

local function on_tick(f)
  watch_input()
  if kind == "learn_ask" then learn_ask(f) end
  local active = f.ext.M2UGen and f.ext.M2UGen.active
  local a = active and json.decode(active.value)
  if cancel and not cancelled_job and a and a.job then
    cancelled_job = a.job
    f:run_script(Fake.REPO .. "reaper_scripts/M2UGen - Cancel.lua")
  end
  if kill and not killed_pid and a and a.job then
    -- the launcher's pid file names the CLI; SIGKILL it like a closed console window would
    local p = io.popen("cat " .. Fake.sh_quote(jobs_dir) .. "/*.pid 2>/dev/null")
    local pid = tonumber(p:read("a"):match("%d+") or "")
    p:close()
    if pid then
      killed_pid = pid
      os.execute("kill -9 " .. pid)
    end
  end
end

fake:run_script(Fake.REPO .. "reaper_scripts/" .. script)
local ok, err = pcall(fake.run_defer, fake, { real_sleep = dt, max_ticks = math.floor(timeout / dt), on_tick = on_tick })

local tracks = {}
for i, t in ipairs(fake.tracks) do
  local items = {}
  for _, it in ipairs(t.items) do
    local take = it.takes[1]
    local pitches = {}
    for i, n in ipairs(take and take.midi or {}) do pitches[i] = n.pitch end
    items[#items + 1] = { position = it.position, length = it.length, notes = it.notes, takes = #it.takes, mute = it.mute,
                          midi_pitches = json.array(pitches),
                          source = take and take.source and take.source.path or json.null,
                          take_name = take and take.name or json.null }
  end
  tracks[#tracks + 1] = { index = i - 1, name = t.name, created = t.created or false, items = json.array(items),
                         depth = t.depth }
end
local messages = {}
for _, m in ipairs(fake.messages) do messages[#messages + 1] = m.msg end
local commands = {}
for _, e in ipairs(fake.exec_log) do commands[#commands + 1] = e.cmd end

print(json.encode({
  ok = ok, error = ok and json.null or tostring(err),
  tracks = json.array(tracks), messages = json.array(messages), commands = json.array(commands),
  violations = json.array(fake.violations),
  undo = { begin = fake.undo.begin, ["end"] = fake.undo["end"] },
  render_restored = json.encode(fake.render.numbers) == json.encode(Fake.DEFAULT_RENDER.numbers)
    and json.encode(fake.render.strings) == json.encode(Fake.DEFAULT_RENDER.strings),
  renders = #fake.renders,
  proj_ext = fake.proj_ext.M2UGen or json.null,
  ticks = fake.ticks or json.null,
  cancelled_job = cancelled_job or json.null,
  input_gain = input_gain or json.null, input_seconds = input_seconds or json.null,
  render_files = fake.renders[1] and fake.renders[1].files and #fake.renders[1].files or json.null,
  ask_done_while_learning = ask_done_while_learning, learn_job = learn_job, learn_cancelled = learn_cancelled,
  timeline = json.array(timeline),
  disk_failures = fake.disk and fake.disk.failures or json.null,
  killed_pid = killed_pid or json.null,
  action_options = json.array(fake.action_options),
  argv = json.array((function()
    local out = {}
    for i, e in ipairs(fake.exec_log) do out[i] = json.array(e.argv or {}) end
    return out
  end)()),
}))
