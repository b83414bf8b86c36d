-- @noindex
-- Preview before insert: audition (SWS CF_Preview when present, else the result is inserted into
-- the project to be heard), then Accept / Regenerate / Discard.

local import = ...
local json = import("json")
local project = import("project")
local place = import("place")
local ui = import("ui")
local common = import("common")
local runner = import("runner")
local results = import("results")
local fail, message_of, traceback = common.fail, common.message_of, common.traceback

local preview = {}

-- SWS audition (CF_Preview): plays a file without touching the project. Absent without SWS; then
-- the preview is the result inserted into the project (audible), removed again on Discard.
local audition = nil
if reaper.APIExists("CF_CreatePreview") then
  audition = {}
  function audition.play(path)
    local src = reaper.PCM_Source_CreateFromFile(path)
    if not src then return nil end
    local preview = reaper.CF_CreatePreview(src)
    if not preview then
      reaper.PCM_Source_Destroy(src)
      return nil
    end
    reaper.CF_Preview_Play(preview)
    return { preview = preview, src = src }
  end
  function audition.stop(a)
    reaper.CF_Preview_Stop(a.preview) -- also releases the preview
    reaper.PCM_Source_Destroy(a.src)
  end
end
function preview.can_audition() return audition ~= nil end

-- Stops the sound of a preview state {sound} (SWS).
function preview.stop_sound(pv)
  if pv.sound then
    audition.stop(pv.sound)
    pv.sound = nil
  end
  pv.playing = false
end
-- ---------------------------------------------------------------------------------------------
-- preview: audition, then Accept / Regenerate / Discard

local function preview_text(run, st)
  local r = run.result_info
  local lines = { "M2UGen " .. r.kind .. (r.job and (" job " .. r.job) or "") .. ": " .. r.prompt }
  if #r.takes > 1 then
    lines[#lines + 1] = #r.takes .. " takes (switch takes in the item as usual)"
  end
  for i, t in ipairs(r.takes) do
    if t.seed then lines[#lines + 1] = "Take " .. i .. ": seed " .. t.seed end
  end
  lines[#lines + 1] = results.describe_analysis(st.result_analysis, "Result measured")
  lines[#lines + 1] = results.describe_analysis(st.analysis, "Source measured")
  if audition then
    lines[#lines + 1] = "Playing take 1 (SWS preview): nothing is in the project until you Accept." ..
      (#r.takes > 1 and ("\nKeys 1-" .. math.min(#r.takes, 9) .. " play that take; the take last played becomes the active one.") or "")
  else
    lines[#lines + 1] = "The result is in the project for you to hear (play the project): Accept keeps it, " ..
      "Discard removes it again (the file stays in M2UGen - Jobs)."
  end
  lines[#lines + 1] = "Accept / Regenerate (same prompt, new seed) / Discard"
  return table.concat(lines, "\n")
end

local function mark(run, state)
  local rec = runner.record_of(run, { state = state })
  if run.result_info then
    local files = {}
    for i, t in ipairs(run.result_info.takes) do files[i] = { path = t.path, seed = t.seed } end
    rec.files = files
    rec.job = run.result_info.job
  end
  local old = not runner.project_gone(run) and select(2, reaper.GetProjExtState(run.proj, "M2UGen", "job:" .. (rec.job or run.name)))
  local prev = old and json.try_decode(old)
  if type(prev) == "table" then
    prev.state = state
    rec = prev
  end
  runner.remember(run, rec)
end

function preview.start(run, st)
  local pv = { playing = false }
  run.preview = pv
  pv.take = 1
  if audition then
    pv.sound = audition.play(run.result_info.takes[1].path)
    pv.playing = pv.sound ~= nil
  else
    local state = results.project_state(run)
    if state == "closed" or state == "replaced" then results.insert_result(run) end -- raises with where the files are
    local item = run.sel and run.sel.source == "items" and #run.sel.items == 1 and run.sel.items[1] or nil
    if item and not reaper.ValidatePtr2(run.proj, item, "MediaItem*") then item = nil end
    if item then pv.before = { take_count = reaper.GetMediaItemNumTakes(item), active = reaper.GetActiveTake(item) } end
    pv.inserted = results.insert_result(run)
  end
  common.action_options(common.OPTIONS_IDLE)
  local text = preview_text(run, st)
  pv.window = ui.preview_window(common.TITLES[run.kind] .. " - preview", text)
  local function stop_sound() preview.stop_sound(pv) end
  local ntakes = #run.result_info.takes
  local function decide(action)
    pv.decided = true
    pv.window:close()
    stop_sound()
    if action == "closed" then
      -- Esc or the window's close box: not an answer; ask (an accidental close must not keep or lose it)
      local answer = reaper.ShowMessageBox("Keep the M2UGen result in the project?\n\nYes = Accept, No = Discard " ..
        "(the file stays in M2UGen - Jobs).", common.TITLES[run.kind], 4)
      action = answer == 6 and "accept" or "discard"
    end
    if action == "accept" then
      -- with SWS the take last auditioned becomes the active take
      if audition then run.result_info.active_take = pv.take results.insert_result(run) end
      mark(run, "accepted")
      local note = results.tab_note(run)
      if note ~= "" then common.message(note:sub(3), common.TITLES[run.kind]) end
      return
    end
    if not audition and pv.inserted then
      place.remove_result(run.proj, pv.inserted, pv.before or {})
    end
    mark(run, "discarded")
    if action == "regenerate" then
      local preset = { proj = run.proj, inputs = { prompt = run.request.prompt, duration = run.inputs.duration },
                       media_kind = run.media_kind, media_path = run.media_path }
      reaper.defer(function() import("app").run(run.kind, preset) end)
    end
  end
  local function loop()
    local ok, err = xpcall(function()
      if pv.decided then return end
      local act = pv.window:frame({ text = text, can_play = audition ~= nil, playing = pv.playing, takes = ntakes,
                                    take = pv.take })
      local n = math.tointeger(tonumber(tostring(act):match("^take(%d+)$") or ""))
      if n and n >= 1 and n <= ntakes and audition then
        pv.take = n
        act = "play"
      end
      if act == "play" and audition then
        stop_sound()
        pv.sound = audition.play(run.result_info.takes[pv.take].path)
        pv.playing = pv.sound ~= nil
      elseif act == "stop" then
        stop_sound()
      elseif act == "accept" or act == "discard" or act == "regenerate" or act == "closed" then
        decide(act)
        return
      end
      reaper.defer(loop)
    end, traceback)
    if not ok then
      pv.decided = true
      stop_sound()
      common.message(message_of(err), common.TITLES[run.kind])
    end
  end
  loop()
end
return preview
