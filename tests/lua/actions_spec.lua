-- Each action against the recording fake reaper: happy paths, render restore, insertion, undo
-- balance, every error path, cancel, ImGui/gfx windows, quoting of nasty project paths.
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local env = dofile(HERE .. "helpers/env.lua")
local Fake = env.Fake
local json = Fake.json

-- Invariants that hold after every run, whatever happened.
local check_invariants = env.check_invariants

local function last_message(fake)
  local m = fake.messages[#fake.messages]
  return m and m.msg or ""
end

local function created_tracks(fake)
  local out = {}
  for i, t in ipairs(fake.tracks) do if t.created then out[#out + 1] = { index = i - 1, track = t } end end
  return out
end

-- temporary files of the scripts: <tmp>/m2ugen-reaper/{in,out,jobs}
local function leftover_files(ctx, sub)
  return env.list_files(ctx.tmp_dir .. "/m2ugen-reaper/" .. sub)
end

-- the ExtState keys of section M2UGen (env.setup sets "preview")
local function saved_keys(fake)
  local out = {}
  for k in pairs(fake.ext.M2UGen or {}) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- results kept with the project
local function kept_files(ctx)
  return env.list_files(ctx.project_dir .. "/M2UGen")
end

describe("M2UGen - Generate", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("sends the request with context, then inserts the result below the source track (one undo point)", function()
    fake.inputs_answers = { "calm piano, 3/4 waltz\n4.000\n42" }
    fake.mb_answers = { 7 } -- no image/video
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.are.equal(1, #fake.messages) -- only the image/video question
    assert.are.equal(3, fake.messages[1].kind)

    -- the command line carries only the CLI, the kind and two file paths
    assert.are.equal(1, #fake.exec_log)
    assert.are.equal(-2, fake.exec_log[1].timeout)
    local argv = fake.exec_log[1].argv
    assert.are.equal(ctx.cli, argv[1])
    assert.are.equal("generate", argv[2])
    assert.are.equal("--request", argv[3])
    -- what REAPER sees: /bin/sh and a launcher script next to the request
    local outer = Fake.reaper_split(fake.exec_log[1].cmd)
    assert.are.equal("/bin/sh", outer[1])
    assert.are.equal(ctx.tmp_dir .. "/m2ugen-reaper/jobs/", outer[2]:match("^(.*/)"))
    assert.are.equal("--status-file", argv[5])
    assert.is_nil(fake.exec_log[1].cmd:find("piano", 1, true))

    local req = fake.sims[1].request
    assert.are.equal("calm piano, 3/4 waltz", req.prompt)
    assert.are.equal("generate", req.kind)
    assert.are.equal(42, req.seed)
    assert.are.equal(4.0, req.duration)
    assert.are.equal("text", req.conditioning)
    assert.are.equal(48000, req.sample_rate)
    assert.are.equal(2, req.channels)
    assert.are.equal(96, req.context.bpm)
    assert.are.same({ 3, 4 }, req.context.time_signature)
    assert.are.same({ start = 2.0, ["end"] = 6.0 }, req.context.selection)
    assert.are.equal(48000, req.context.project_sample_rate)
    assert.are.equal(argv[6], req.status_file)
    assert.truthy(req.out:find(ctx.tmp_dir .. "/m2ugen-reaper/out/", 1, true))
    assert.is_nil(req.audio)
    assert.are.equal(0, #fake.renders, "generate must not render")

    -- result: a new track right below "Keys" (index 1) -> index 2
    assert.are.equal(4, #fake.tracks)
    local new = created_tracks(fake)
    assert.are.equal(1, #new)
    assert.are.equal(2, new[1].index)
    local tr = new[1].track
    assert.are.equal("M2UGen generate: calm piano, 3/4 waltz", tr.name)
    assert.are.equal(1, #tr.items)
    local item = tr.items[1]
    assert.are.equal(2.0, item.position)
    assert.is_true(math.abs(item.length - 4.0) < 1e-6)
    local kept = kept_files(ctx)
    assert.are.equal(1, #kept)
    assert.are.equal(ctx.project_dir .. "/M2UGen/" .. kept[1], item.takes[1].source.path)
    assert.are.equal("job-1", item.takes[1].name)
    assert.truthy(item.notes:find("Prompt: calm piano", 1, true))
    assert.truthy(item.notes:find("Seed: 42", 1, true))
    assert.are.equal("job-1", json.decode(item.takes[1].ext.m2ugen).job)
    assert.are.equal(1, fake.undo.begin)
    assert.are.same({ "M2UGen: M2UGen generate: calm piano, 3/4 waltz" }, fake.undo.names)
    assert.are.equal("job-1", fake.proj_ext.M2UGen.last_job)
    assert.truthy(fake.proj_ext.M2UGen["job:job-1"])
    -- temporary files gone, result kept
    assert.are.same({}, leftover_files(ctx, "jobs"))
    assert.are.same({}, leftover_files(ctx, "out"))
    -- the prompt is remembered for next time (no newline in ExtState)
    assert.are.equal("calm piano, 3/4 waltz", fake.ext.M2UGen.last_prompt_generate.value)
    -- progress went through the gfx window (no ReaImGui here)
    assert.is_true(fake.gfx_state.inits >= 1)
    assert.is_false(fake.gfx_state.open)
  end)

  it("without a time selection uses the edit cursor, the default duration and appends a track", function()
    fake.ts, fake.te = 0, 0
    fake.cursor = 7.5
    for _, t in ipairs(fake.tracks) do t.selected = false end
    fake.inputs_answers = { "drum loop\n3\n" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    local req = fake.sims[1].request
    assert.is_nil(req.seed)
    assert.is_nil(req.context.selection)
    assert.are.equal(3.0, req.duration)
    local new = created_tracks(fake)
    assert.are.equal(3, new[1].index) -- end of the track list
    assert.are.equal(7.5, new[1].track.items[1].position)
    assert.is_true(math.abs(new[1].track.items[1].length - 3.0) < 1e-6)
  end)

  it("passes an image chosen in the file dialog inside the request, not on the command line", function()
    local img = ctx.root .. "/cover 'art' $(echo X).png"
    io.open(img, "w"):close()
    fake.inputs_answers = { "music for this picture\n4\n1" }
    fake.mb_answers = { 6 }
    fake.file_answers = { img }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.are.equal(img, fake.sims[1].request.image)
    assert.is_nil(fake.sims[1].request.video)
    assert.is_nil(fake.exec_log[1].cmd:find("cover", 1, true))
    assert.are.equal(1, #created_tracks(fake))
  end)

  it("with a remote server uses the WAV the CLI downloaded to `out`, not the server's path", function()
    fake.scenario = function(req)
      return { { state = "done", job = "job-r", audio = true, audio_path = "/srv/m2ugen/jobs/job-r/result.wav",
                 duration = req.duration, exit_code = 0 } }
    end
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    local new = created_tracks(fake)
    assert.are.equal(1, #new)
    assert.is_true(math.abs(new[1].track.items[1].length - 4.0) < 1e-6)
    assert.are.same({}, leftover_files(ctx, "out"))
  end)

  it("refuses a file that is neither an image nor a video", function()
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 6 }
    fake.file_answers = { ctx.root .. "/notes.txt" }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("Not an image or video file", 1, true))
    assert.are.equal(0, #fake.exec_log)
    assert.are.equal(0, #created_tracks(fake))
  end)

  it("does nothing when the user cancels the prompt or the media question", function()
    fake.inputs_answers = { false }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.are.same({}, fake.messages)
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 2 } -- Cancel in the Yes/No/Cancel box
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.are.equal(1, #fake.messages)
    assert.are.equal(0, #fake.exec_log)
    assert.are.equal(3, #fake.tracks)
  end)

  it("names bad dialog values", function()
    fake.inputs_answers = { "x\n1000\n1" }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("Duration: expected seconds between 0.5 and 300", 1, true))
    fake.inputs_answers = { "x\n4\nabc" }
    env.run_action(ctx, "Generate")
    assert.truthy(last_message(fake):find("Seed: expected a whole number", 1, true))
    fake.inputs_answers = { "   \n4\n1" }
    env.run_action(ctx, "Generate")
    assert.truthy(last_message(fake):find("is empty", 1, true))
    assert.are.equal(0, #fake.exec_log)
  end)

  it("CLI missing: a clear message, nothing started", function()
    os.remove(ctx.cli)
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("does not exist", 1, true))
    assert.truthy(last_message(fake):find(ctx.cli, 1, true))
    assert.are.equal(0, #fake.exec_log)
    assert.are.equal(3, #fake.tracks)
  end)

  it("server not running (exit code 3): a clear message, no track, no file", function()
    fake.scenario = "unreachable"
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("server is not running", 1, true))
    assert.are.equal(3, #fake.tracks)
    assert.are.same({}, leftover_files(ctx, "jobs"))
    assert.are.same({}, leftover_files(ctx, "out"))
    assert.are.same({}, kept_files(ctx))
    assert.are.equal(0, fake.undo.begin)
  end)

  it("job failed (exit code 4): the server's message is shown, nothing inserted", function()
    fake.scenario = "job_failed"
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("job failed", 1, true))
    assert.truthy(last_message(fake):find("job_failed: CUDA out of memory", 1, true))
    assert.are.equal(3, #fake.tracks)
  end)

  it("a CLI that never writes its status file times out with the command in the message", function()
    fake.scenario = "silent"
    fake.tick_dt = 0.5
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("did not start", 1, true))
    assert.truthy(last_message(fake):find("--status-file", 1, true))
    assert.are.equal(3, #fake.tracks)
    assert.are.same({}, leftover_files(ctx, "jobs"))
  end)

  it("ExecProcess failing to start the CLI is reported", function()
    fake.exec_mode = "none"
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("could not start the M2UGen CLI", 1, true))
    assert.are.same({}, leftover_files(ctx, "jobs"))
  end)

  it("Cancel button in the gfx window cancels the job through the CLI", function()
    fake.scenario = "long"
    fake.gfx_state.clicks = { 8 }
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.are.equal(2, #fake.exec_log)
    local argv = fake.exec_log[2].argv
    assert.are.same({ ctx.cli, "cancel", "job-1", "--no-wait" }, argv)
    assert.truthy(last_message(fake):find("cancelled", 1, true))
    assert.are.equal(3, #fake.tracks)
    assert.are.same({}, leftover_files(ctx, "out"))
  end)

  it("the M2UGen - Cancel action cancels the running job", function()
    fake.scenario = "long"
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    local cancelled = false
    fake:run_defer({ on_tick = function(f, tick)
      if tick == 20 and not cancelled then
        cancelled = true
        f:run_script(env.SCRIPTS .. "M2UGen - Cancel.lua")
      end
    end })
    check_invariants(fake)
    assert.is_true(cancelled)
    local cancels = {}
    for _, e in ipairs(fake.exec_log) do
      if e.argv[2] == "cancel" then cancels[#cancels + 1] = e.argv end
    end
    assert.is_true(#cancels >= 1)
    assert.are.same({ ctx.cli, "cancel", "job-1", "--no-wait" }, cancels[1])
    assert.truthy(last_message(fake):find("cancelled", 1, true))
    assert.are.equal(3, #fake.tracks)
  end)

  it("refuses to start while another job of this session is running", function()
    fake.scenario = "long"
    fake.inputs_answers = { "x\n4\n1", "y\n4\n1" }
    fake.mb_answers = { 7 }
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    local second_msg
    fake:run_defer({ on_tick = function(f, tick)
      if tick == 10 then
        f:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
        second_msg = last_message(f)
        f:run_script(env.SCRIPTS .. "M2UGen - Cancel.lua")
      end
    end })
    check_invariants(fake)
    assert.truthy(second_msg:find("still running", 1, true))
    assert.are.equal(2, #fake.exec_log) -- the first job + one cancel
  end)

  it("a script stopped by REAPER mid-job leaves the job running on the server (issue 22 #6)", function()
    fake.scenario = "long"
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    fake:run_script(env.SCRIPTS .. "M2UGen - Generate.lua")
    fake:run_defer({ on_tick = function(f, tick)
      if tick == 15 then return "stop" end -- REAPER terminates the script: no more defer calls
    end })
    assert.are.same({}, fake.violations)
    assert.are.equal(fake.undo.begin, fake.undo["end"])
    assert.are.equal(1, #fake.exec_log) -- no cancel
    assert.is_nil(fake.ext.M2UGen.active)
    assert.are.equal("running", json.decode(fake.proj_ext.M2UGen["job:job-1"]).state)
    assert.are.equal(3, #fake.tracks)
  end)

  it("a stale 'active job' left by a crashed script does not block a new job", function()
    fake.ext.M2UGen.active = { value = json.encode({ name = "old", kind = "edit", heartbeat = 1.0 }),
                               persist = false }
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.are.equal(1, #created_tracks(fake))
  end)

  it("uses ReaImGui when installed (behind APIExists) and its Cancel button", function()
    fake:enable_imgui({ button_at = 6 })
    fake.scenario = "long"
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.is_true(fake.imgui.begins >= 6)
    assert.are.equal(fake.imgui.begins, fake.imgui.ends)
    assert.is_nil(fake.gfx_state.inits)
    assert.are.equal("cancel", fake.exec_log[2].argv[2])
    assert.truthy(last_message(fake):find("cancelled", 1, true))
  end)

  it("quotes a project path full of shell metacharacters and non-ASCII", function()
    env.teardown(ctx)
    ctx = env.setup({ project_name = env.NASTY, tmp_name = env.NASTY })
    fake = ctx.fake
    env.standard_project(fake)
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    local argv = fake.exec_log[1].argv
    assert.are.equal(6, #argv)
    assert.truthy(argv[4]:find(env.NASTY, 1, true))
    -- the temp dir has a ' in it, so the launcher went to a quote-free folder
    assert.truthy(fake.exec_log[1].cmd:match("^/bin/sh '/tmp/m2ugen%-reaper%-launch/[^']+%.sh'$"))
    assert.are.equal(fake.sims[1].request.status_file, argv[6])
    assert.is_nil(table.concat(argv, " "):find("\nINJECTED", 1, true))
    assert.are.equal(1, #created_tracks(fake))
  end)

  it("on Windows uses double quotes and refuses a '%' path with a clear message", function()
    env.teardown(ctx)
    ctx = env.setup({ tmp_name = "50% louder", os_name = "Win64" })
    fake = ctx.fake
    -- discovery paths are joined with backslashes here, so name the CLI in Settings
    fake.ext.M2UGen.cli_path = { value = ctx.cli, persist = true }
    env.standard_project(fake)
    fake.exec_mode = "none"
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("'%' which Windows cmd.exe would expand", 1, true))
    assert.are.equal(0, #fake.exec_log)
    assert.are.same({}, leftover_files(ctx, "jobs"))
  end)

  it("on Windows the command splits back into the exact paths", function()
    env.teardown(ctx)
    ctx = env.setup({ tmp_name = "Zoe's proj & co; $(x) `y`", os_name = "Win64" })
    fake = ctx.fake
    -- discovery paths are joined with backslashes here, so name the CLI in Settings
    fake.ext.M2UGen.cli_path = { value = ctx.cli, persist = true }
    env.standard_project(fake)
    fake.exec_mode = "none" -- only look at the command line
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    local cmd = fake.exec_log[1].cmd
    assert.truthy(cmd:match('^wscript%.exe //B //Nologo "'), cmd) -- hidden: no console window
    local argv = fake.exec_log[1].argv -- the .vbs's command split with the MSVCRT rules
    assert.are.equal(0, fake.exec_log[1].window_style)
    assert.are.equal(ctx.cli, argv[1])
    assert.are.equal("generate", argv[2])
    assert.truthy(argv[4]:find("Zoe's proj & co; $(x) `y`", 1, true))
    assert.are.equal("--status-file", argv[5])
    assert.truthy(last_message(fake):find("could not start", 1, true))
  end)

  it("on Windows a non-ASCII %TEMP% (not UTF-8 from os.getenv) falls back to REAPER's resource path", function()
    env.teardown(ctx)
    ctx = env.setup({ tmp_name = "Zoë", os_name = "Win64" })
    fake = ctx.fake
    fake.ext.M2UGen.cli_path = { value = ctx.cli, persist = true }
    env.standard_project(fake)
    fake.exec_mode = "none"
    fake.inputs_answers = { "x\n4\n1" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    local argv = fake.exec_log[1].argv
    assert.are.equal(fake.resource_dir .. "\\m2ugen-reaper\\jobs\\", argv[4]:match("^(.*\\)"))
  end)
end)

describe("M2UGen - Edit selection", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("renders the selected track in the time selection, restores the render settings and inserts the edit", function()
    fake.inputs_answers = { "make it jazzier\n5" }
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    assert.are.same({}, fake.messages)
    -- render happened with our settings, and only once: the selected track (Keys) via master
    assert.are.equal(1, #fake.renders)
    local r = fake.renders[1]
    assert.are.equal(128, r.numbers.RENDER_SETTINGS)
    assert.are.equal(0, r.numbers.RENDER_BOUNDSFLAG)
    assert.are.equal(2.0, r.numbers.RENDER_STARTPOS)
    assert.are.equal(6.0, r.numbers.RENDER_ENDPOS)
    assert.are.equal(0, r.numbers.RENDER_ADDTOPROJ)
    assert.are.equal(0, r.numbers.RENDER_NORMALIZE)
    assert.are.equal(0, r.numbers.RENDER_TAILFLAG)
    assert.are.equal("evaw", r.strings.RENDER_FORMAT)
    assert.are.equal("", r.strings.RENDER_FORMAT2)
    local req = fake.sims[1].request
    assert.are.equal(r.path, req.audio)
    assert.are.equal("edit", req.kind)
    assert.are.equal(5, req.seed)
    assert.are.equal(4.0, req.duration) -- the selection length
    assert.is_nil(req.start)
    -- rendered input removed afterwards, result kept
    assert.is_false(Fake.file_exists(r.path))
    local new = created_tracks(fake)
    assert.are.equal(1, #new)
    assert.are.equal(2, new[1].index)
    assert.are.equal("M2UGen edit: make it jazzier", new[1].track.name)
    assert.are.equal(2.0, new[1].track.items[1].position)
    assert.is_true(math.abs(new[1].track.items[1].length - 4.0) < 1e-6)
  end)

  it("with selected items renders them via master and inserts below the first item's track", function()
    fake.ts, fake.te = 0, 0
    for _, t in ipairs(fake.tracks) do t.selected = false end
    local bass = fake.tracks[3]
    local a = fake:add_item(bass, 10.0, 1.5)
    local b = fake:add_item(bass, 12.0, 1.0)
    a.selected, b.selected = true, true
    fake.inputs_answers = { "tighter\n" }
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    local r = fake.renders[1]
    assert.are.equal(64 | (4 << 16), r.numbers.RENDER_SETTINGS)
    assert.are.equal(4, r.numbers.RENDER_BOUNDSFLAG)
    local req = fake.sims[1].request
    assert.are.same({ start = 10.0, ["end"] = 13.0 }, req.context.selection)
    assert.are.equal(3.0, req.duration)
    local new = created_tracks(fake)
    assert.are.equal(3, new[1].index) -- below Bass (index 2)
    assert.are.equal(10.0, new[1].track.items[1].position)
    assert.is_true(math.abs(new[1].track.items[1].length - 3.0) < 1e-6)
  end)

  it("no selection: a clear message before any dialog", function()
    fake.ts, fake.te = 0, 0
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("Select a time range or one or more media items", 1, true))
    assert.are.equal(0, #fake.inputs_asked)
    assert.are.equal(0, #fake.renders)
  end)

  it("a render that writes nothing: message, settings restored, nothing started", function()
    fake.render_mode = "nothing"
    fake.inputs_answers = { "x\n1" }
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("Rendering the selection failed", 1, true))
    assert.are.equal(0, #fake.exec_log)
    assert.are.equal(3, #fake.tracks)
  end)

  it("a render that raises: settings restored all the same", function()
    fake.render_mode = "raise"
    fake.inputs_answers = { "x\n1" }
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("simulated render crash", 1, true))
    assert.are.equal(0, #fake.exec_log)
  end)

  it("CLI missing is detected before rendering", function()
    os.remove(ctx.config_dir .. "/server.json")
    fake.inputs_answers = { "x\n1" }
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("CLI was not found", 1, true))
    assert.are.equal(0, #fake.renders)
  end)

  it("server not running: the rendered input is removed too", function()
    fake.scenario = "unreachable"
    fake.inputs_answers = { "x\n1" }
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("server is not running", 1, true))
    assert.are.same({}, leftover_files(ctx, "in"))
    assert.are.equal(3, #fake.tracks)
  end)

  it("an insert failing half-way removes the new track; the undo block still closes", function()
    fake.refuse_source = true
    fake.inputs_answers = { "x\n1" }
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("refused the result", 1, true))
    assert.are.equal(3, #fake.tracks)
    for _, t in ipairs(fake.tracks) do assert.are.equal(0, #t.items) end
    assert.are.equal(1, fake.undo.begin)
    -- the finished result is never deleted: kept next to the project, and the message says where
    local kept = kept_files(ctx)
    assert.are.equal(1, #kept)
    assert.truthy(last_message(fake):find(ctx.project_dir .. "/M2UGen/" .. kept[1], 1, true))
    assert.truthy(last_message(fake):find("M2UGen - Jobs", 1, true))
    local rec = json.decode(fake.proj_ext.M2UGen["job:job-1"])
    assert.are.equal("done", rec.state)
    assert.are.equal(ctx.project_dir .. "/M2UGen/" .. kept[1], rec.files[1].path)
  end)

  it("a result REAPER cannot open: message, no empty track, undo untouched", function()
    fake.scenario = function(req)
      return { { state = "done", job = "job-9", audio_path = req.out .. ".missing", exit_code = 0 } }
    end
    fake.inputs_answers = { "x\n1" }
    env.run_action(ctx, "Edit selection")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("audio file is missing", 1, true))
    assert.are.equal(3, #fake.tracks)
    assert.are.equal(0, fake.undo.begin)
  end)
end)

describe("M2UGen - Ask about selection", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
    env.standard_project(fake)
  end)
  after_each(function() env.teardown(ctx) end)

  it("shows the answer in a window and keeps it in the project (item notes + ProjExtState)", function()
    fake.inputs_answers = { "What key is this in?" }
    env.run_action(ctx, "Ask about selection")
    check_invariants(fake)
    assert.are.same({}, fake.messages)
    local req = fake.sims[1].request
    assert.are.equal("ask", req.kind)
    assert.are.equal("What key is this in?", req.prompt)
    assert.is_nil(req.out)
    assert.is_nil(req.duration)
    assert.truthy(req.audio)
    local new = created_tracks(fake)
    assert.are.equal(1, #new)
    assert.are.equal(3, new[1].index) -- the project's one answers track, at the end
    assert.are.equal("M2UGen answers", new[1].track.name)
    local item = new[1].track.items[1]
    assert.are.equal(2.0, item.position)
    assert.are.equal(4.0, item.length)
    assert.are.equal("Q: What key is this in?\n\nA: A calm piano piece in 3/4.", item.notes)
    assert.are.equal(0, #item.takes)
    local rec = json.decode(fake.proj_ext.M2UGen["job:job-1"])
    assert.are.equal("A calm piano piece in 3/4.", rec.text)
    assert.are.equal(1, fake.undo.begin)
    -- progress window, then the answer window (drawn with the answer text)
    assert.are.equal(2, fake.gfx_state.inits)
    local drawn = table.concat(fake.gfx_state.drawn, " ")
    assert.truthy(drawn:find("calm piano piece", 1, true))
    assert.are.same({}, leftover_files(ctx, "in"))
  end)

  it("streams the partial answer into the ReaImGui progress window", function()
    fake:enable_imgui({ close_at = 80 }) -- the answer window is closed on frame 80
    fake.opts.sim_every = 0.3 -- slower than the 0.25 s poll, so every state is seen
    fake.inputs_answers = { "Describe it" }
    env.run_action(ctx, "Ask about selection", { max_ticks = 200 })
    local seen = table.concat(fake.imgui.texts, "|")
    assert.truthy(seen:find("A calm piano", 1, true))
    assert.truthy(seen:find("Running: thinking 20%", 1, true))
    assert.truthy(seen:find("Queued (position 1)", 1, true))
  end)

  it("job failed: message, no track", function()
    fake.scenario = "job_failed"
    fake.inputs_answers = { "Describe it" }
    env.run_action(ctx, "Ask about selection")
    check_invariants(fake)
    assert.truthy(last_message(fake):find("CUDA out of memory", 1, true))
    assert.are.equal(3, #fake.tracks)
  end)
end)

describe("M2UGen - Cancel", function()
  it("says so when no job is running", function()
    local ctx = env.setup()
    env.run_action(ctx, "Cancel")
    assert.truthy(ctx.fake.messages[1].msg:find("No M2UGen job is running", 1, true))
    assert.are.same({}, ctx.fake.violations)
    env.teardown(ctx)
  end)
end)

describe("M2UGen - Settings", function()
  local ctx, fake
  before_each(function()
    ctx = env.setup()
    fake = ctx.fake
  end)
  after_each(function() env.teardown(ctx) end)

  it("saves valid settings persistently", function()
    fake.inputs_answers = { ctx.cli .. "\ntcp://127.0.0.1:6000\n12\nembedding\n99\n3\nmute\non\nregion\non\ncontinue\non\nmbd\nmy_style-2\noff" }
    env.run_action(ctx, "Settings")
    assert.are.same({}, fake.violations)
    assert.are.same({}, fake.messages)
    local e = fake.ext.M2UGen
    assert.are.equal(ctx.cli, e.cli_path.value)
    assert.are.equal("tcp://127.0.0.1:6000", e.server.value)
    assert.are.equal("12", e.duration.value)
    assert.are.equal("embedding", e.conditioning.value)
    assert.are.equal("99", e.seed.value)
    assert.is_true(e.seed.persist)
    assert.are.equal("3", e.takes.value)
    assert.are.equal("mute", e.edit_result.value)
    assert.are.equal("on", e.preview.value)
    assert.are.equal("region", e.answer_markers.value)
    assert.are.equal("on", e.fit_tempo.value)
    assert.are.equal("continue", e.mode.value)
    assert.are.equal("on", e.loop.value)
    assert.are.equal("mbd", e.vocoder.value)
    assert.are.equal("my_style-2", e.adapter.value)
    assert.are.equal("off", e.dereverb.value)
  end)

  it("Cancel in the dialog saves nothing", function()
    fake.inputs_answers = { false }
    env.run_action(ctx, "Settings")
    assert.are.same({ "preview" }, saved_keys(fake))
    assert.are.same({}, fake.messages)
  end)

  it("rejects a bad value, names it, and saves nothing", function()
    fake.inputs_answers = { "\n\n12\nloud\n\n1\ntake\non\noff\noff\ntext\noff\nencodec\n\non", "\n\n12\ntext\n\n9\ntake\non\noff\noff\ntext\noff\nencodec\n\non",
                            "\n\n12\ntext\n\n2\nreplace\non\noff\noff\ntext\noff\nencodec\n\non" }
    env.run_action(ctx, "Settings")
    assert.truthy(fake.messages[1].msg:find("Conditioning", 1, true))
    assert.truthy(fake.messages[1].msg:find("Nothing was saved", 1, true))
    env.run_action(ctx, "Settings")
    assert.truthy(fake.messages[2].msg:find("Takes: expected a whole number from 1 to 8, got '9'", 1, true))
    env.run_action(ctx, "Settings")
    assert.truthy(fake.messages[3].msg:find("Edit result: expected take, mute, track, got 'replace'", 1, true))
    assert.are.same({ "preview" }, saved_keys(fake))
  end)

  it("the saved settings are used: server on the command line, conditioning and seed in the request", function()
    fake.inputs_answers = { "\ntcp://127.0.0.1:6000\n8\nembedding\n5\n1\ntake\noff\noff\noff\ntext\noff\nencodec\n\non" }
    env.run_action(ctx, "Settings")
    env.standard_project(fake)
    fake.ts, fake.te = 0, 0
    fake.inputs_answers = { "x\n8\n5" }
    fake.mb_answers = { 7 }
    env.run_action(ctx, "Generate")
    check_invariants(fake)
    local argv = fake.exec_log[1].argv
    assert.are.equal("--server", argv[7])
    assert.are.equal("tcp://127.0.0.1:6000", argv[8])
    local req = fake.sims[1].request
    assert.are.equal("embedding", req.conditioning)
    assert.are.equal(5, req.seed)
    local asked = fake.inputs_asked[#fake.inputs_asked]
    assert.are.equal("\n8\n5", asked.defaults)
  end)
end)
