-- @noindex
-- "M2UGen - Split into stems": the selection rendered as an edit whose result goes on a new track hears
-- it (take FX, item, track and folder FX and faders; not the master's), a `stems` job (`m2ugen stems
-- IN --out DIR`, docs/protocol.md §2.6: one WAV per stem at the rendered file's rate and length), then
-- each stem on its own new track under a new folder track named after the item, at the selection's
-- start, the source items muted: one undo point (place.insert_stems). The folder goes at the top level
-- below the source's block, so the stems play through the master only: every FX applies once.
-- The stem files are kept next to the project (<project>/M2UGen/<name>-<stem>.wav) and recorded in its
-- job history first; "M2UGen - Jobs" puts them in again.

local import = ...
local json = import("json")
local settings = import("settings")
local project = import("project")
local place = import("place")
local job = import("job")
local common = import("common")
local runner = import("runner")
local results = import("results")
local fail, message_of = common.fail, common.message_of

local stems = {}

-- The dialog's choice -> the server's separation model (protocol.STEM_MODELS).
stems.MODELS = {
  ["4"] = { model = "htdemucs", stems = { "drums", "bass", "other", "vocals" } },
  ["6"] = { model = "htdemucs_6s", stems = { "drums", "bass", "other", "vocals", "guitar", "piano" } },
}

-- Returns the chosen stems.MODELS entry, or nil when the user pressed Cancel.
function stems.ask_model()
  local last = reaper.GetExtState(settings.SECTION, "last_stems")
  if not stems.MODELS[last] then last = "4" end
  local ok, answer = reaper.GetUserInputs(common.TITLES.stems, 1,
    "Stems: 4 = drums bass other vocals / 6 = also guitar piano,extrawidth=60", last)
  if not ok then return nil end
  local choice = common.trim(answer)
  local m = stems.MODELS[choice]
  if not m then fail("Stems: expected 4 or 6, got '" .. choice .. "'.") end
  reaper.SetExtState(settings.SECTION, "last_stems", choice, true)
  return m
end

local function take_name(item)
  local take = reaper.GetActiveTake(item)
  if not take then return "" end
  local _, name = reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", "", false)
  return common.trim((name or ""):gsub("%c+", " "))
end

local function track_name(track)
  local _, name = reaper.GetSetMediaTrackInfo_String(track, "P_NAME", "", false)
  return common.trim((name or ""):gsub("%c+", " "))
end

-- The folder track's name: "<item name> stems" (the active take's name, else its track's), "<n> items",
-- the selected tracks' names, or "Master mix".
function stems.folder_name(sel)
  local name
  if sel.source == "items" then
    name = take_name(sel.items[1])
    if name == "" then name = track_name(reaper.GetMediaItem_Track(sel.items[1])) end
    if name == "" then name = "Item" end
    if #sel.items > 1 then name = name .. " + " .. (#sel.items - 1) .. " more" end
  elseif sel.source == "tracks" then
    local names = {}
    for i, tr in ipairs(sel.tracks) do
      local n = track_name(tr)
      names[i] = n ~= "" and n or "Track"
    end
    name = table.concat(names, " + ")
  else
    name = "Master mix"
  end
  name = common.utf8_cut(name, 80)
  return name .. " stems"
end

local function start(run)
  run.settings = settings.load()
  run.proj = project.current()
  local proj = run.proj
  run.proj_file = project.file_of(proj)
  local sel = project.selection(proj)
  local app = import("app")
  if not sel then app.no_selection("splits") end
  run.sel = sel
  app.require_idle()
  local m = stems.ask_model()
  if not m then run.finished = true return end
  run.stem_model = m.model
  local cli, why = settings.resolve_cli(run.settings)
  if not cli then fail(why) end
  run.cli = cli
  run.position = sel.start
  run.track = sel.track
  run.result_dir = project.result_dir(proj) -- decided now: the tab may be closed by the time it is done
  run.name = project.stamp()
  run.folder = stems.folder_name(sel)
  run.request = { prompt = run.folder .. " (" .. m.model .. ")" } -- what the job history shows
  run.record_extra = { folder = run.folder }
  run.input = project.render(proj, sel, project.temp_dir("in"), run.name, "pre_master")
  run.out_dir = project.temp_dir("out")
  run.job = job.start_stems({ cli = cli, input = run.input, out_dir = run.out_dir,
                              stem_model = m.model ~= "htdemucs" and m.model or nil, dir = project.temp_dir("jobs"),
                              name = run.name, server = run.settings.server })
  runner.begin_loop(run)
end

-- Entry point of "M2UGen - Split into stems". A job of an earlier session that is still running is
-- offered first, as every action does (app.run_with).
function stems.run()
  return import("app").run_with("stems", start)
end

-- The CLI's sidecar: <out dir>/<input name>.json for `m2ugen stems`, <out>.json for `m2ugen result`.
local function cli_sidecar(run)
  if run.out then return (run.out:gsub("%.[wW][aA][vV]$", "")) .. ".json" end
  local base = run.input and run.input:match("([^/\\]+)%.[wW][aA][vV]$")
  return base and run.out_dir and settings.join(run.out_dir, base .. ".json") or nil
end

-- A finished stems job (or `m2ugen result` of one): its stem files (the status's takes, each with its
-- `stem`) copied next to the project as <name>-<stem>.wav, then recorded and inserted.
function stems.finish(run, st)
  local list = {}
  for _, t in ipairs(type(st.takes) == "table" and st.takes or {}) do
    if type(t) == "table" and type(t.stem) == "string" and t.stem:match("^%a+$") and type(t.audio_path) == "string" then
      list[#list + 1] = { from = t.audio_path, stem = t.stem, suffix = "-" .. t.stem }
    end
  end
  if #list == 0 then fail("The M2UGen stems job finished but named no stem files." .. runner.fetch_hint(run)) end
  results.keep_files(run, list, function(kept) stems.finish_kept(run, kept) end)
end

function stems.finish_kept(run, kept)
  local sidecar = cli_sidecar(run)
  if sidecar and settings.file_exists(sidecar) then
    pcall(project.copy_file, sidecar, settings.join(run.result_dir, run.name .. ".json"))
    os.remove(sidecar)
  end
  local files = {}
  for i, t in ipairs(kept) do files[i] = { path = t.path, stem = t.stem } end
  local rec = runner.record_of(run, { state = "done", files = files })
  if run.fetch then
    rec.kind, rec.prompt, rec.position = "stems", run.fetch.prompt, run.fetch.position
    rec.stamp, rec.folder, rec.length = run.fetch.stamp or run.name, run.fetch.folder, run.fetch.length
  end
  runner.remember(run, rec) -- recorded before the insert: a failed insert loses nothing
  runner.remove_temp(run)
  runner.clear_active(run)
  common.action_options(common.OPTIONS_IDLE)
  if run.copy_failed then
    common.message("The stems could not be copied next to the project; they are used from where the CLI wrote them:" ..
      run.copy_failed, common.TITLES.stems)
  end
  stems.insert(run, rec, kept)
  local note = results.tab_note(run)
  if note ~= "" then common.message(note:sub(3), common.TITLES.stems) end
end

-- Puts the kept stems into the job's project (place.insert_stems); a new split mutes its source items.
-- Raises a user error that says where the files are when it cannot.
function stems.insert(run, rec, kept)
  local gone = runner.project_gone(run)
  if gone then
    fail("The project this job started in " .. gone .. ", so the stems were not inserted.\nThey are kept at:\n" ..
      results.kept_list(kept) .. "\nOpen that project and put them in with M2UGen - Jobs.")
  end
  local list = {}
  for i, t in ipairs(kept) do
    list[i] = { path = t.path, stem = t.stem,
                ext = json.encode({ job = rec.job, kind = "stems", stem = t.stem, path = t.path }) }
  end
  local mute = {}
  if run.sel and run.sel.source == "items" and not run.fetch then
    for _, item in ipairs(run.sel.items) do
      if reaper.ValidatePtr2(run.proj, item, "MediaItem*") then mute[#mute + 1] = item end
    end
  end
  local notes = "M2UGen stems job " .. tostring(rec.job) .. (run.fetch and " (put in again)" or "") ..
    "\nSource: " .. (run.sel and project.describe_selection(run.sel) or tostring(rec.folder))
  local ok, inserted = pcall(place.insert_stems, run.proj, {
    stems = list, position = run.position, name = rec.folder or "Stems", track = run.track, notes = notes,
    mute = mute, label = "split into stems" })
  if not ok then
    fail("Could not insert the stems into the project: " .. message_of(inserted) .. "\nThey are kept at:\n" ..
      results.kept_list(kept) .. "\nPut them in with M2UGen - Jobs.")
  end
  return inserted
end

-- "M2UGen - Jobs" on a stems record whose files are kept: the stems again, under a new folder at the
-- record's position (the source is not muted again). Returns false when no file is left (the caller
-- then fetches the job's result from the server).
function stems.reinsert(run, rec)
  local kept = {}
  for _, f in ipairs(type(rec.files) == "table" and rec.files or {}) do
    if type(f) == "table" and type(f.path) == "string" and type(f.stem) == "string" and settings.file_exists(f.path) then
      kept[#kept + 1] = { path = f.path, stem = f.stem }
    end
  end
  if #kept == 0 then return false end
  run.status = { job = rec.job }
  stems.insert(run, rec, kept)
  return true
end

return stems
