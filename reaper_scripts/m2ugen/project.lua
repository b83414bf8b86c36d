-- @noindex
-- Everything that touches the REAPER project: the selection and its musical context, rendering the
-- selection to a WAV (restoring every render setting), and inserting results (one undo point).

local import = ...
local settings = import("settings")

local project = {}

-- ---------------------------------------------------------------------------------------------
-- selection and context

-- Returns {start, end, source = "time"|"items", track = MediaTrack|nil} or nil when nothing is selected.
function project.selection()
  local ts, te = reaper.GetSet_LoopTimeRange2(0, false, false, 0, 0, false)
  if te > ts then
    local track = nil
    if reaper.CountSelectedTracks(0) > 0 then
      track = reaper.GetSelectedTrack(0, 0)
    elseif reaper.CountSelectedMediaItems(0) > 0 then
      track = reaper.GetMediaItem_Track(reaper.GetSelectedMediaItem(0, 0))
    end
    return { start = ts, ["end"] = te, source = "time", track = track }
  end
  local n = reaper.CountSelectedMediaItems(0)
  if n == 0 then return nil end
  local s, e, track = math.huge, -math.huge, nil
  for i = 0, n - 1 do
    local item = reaper.GetSelectedMediaItem(0, i)
    local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
    local len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
    if pos < s then s = pos end
    if pos + len > e then e = pos + len end
    if i == 0 then track = reaper.GetMediaItem_Track(item) end
  end
  if e <= s then return nil end
  return { start = s, ["end"] = e, source = "items", track = track }
end

function project.sample_rate()
  if reaper.GetSetProjectInfo(0, "PROJECT_SRATE_USE", 0, false) >= 1 then
    local sr = reaper.GetSetProjectInfo(0, "PROJECT_SRATE", 0, false)
    if sr and sr > 0 then return math.floor(sr + 0.5) end
  end
  local ok, desc = reaper.GetAudioDeviceInfo("SRATE")
  local sr = ok and tonumber(desc) or nil
  if sr and sr > 0 then return math.floor(sr + 0.5) end
  return 48000
end

-- The musical context sent with every request (protocol §2 `context`).
function project.context(sel, at)
  local num, den, bpm = reaper.TimeMap_GetTimeSigAtTime(0, at)
  local ctx = {
    bpm = bpm,
    time_signature = { math.floor(num), math.floor(den) },
    project_sample_rate = project.sample_rate(),
  }
  if sel then ctx.selection = { start = sel.start, ["end"] = sel["end"] } end
  return ctx
end

-- ---------------------------------------------------------------------------------------------
-- folders
-- Files the server must read or write (rendered input, request, status, raw result) live in the
-- system temp dir, which the server allows by default (its roots are the home and temp dirs) --
-- projects on another drive would be refused. Results are then copied next to the project.

function project.temp_dir(sub)
  local base
  if settings.is_windows() then
    -- os.getenv is not UTF-8 on Windows: a non-ASCII %TEMP% falls back to REAPER's resource path
    base = os.getenv("TEMP") or os.getenv("TMP")
    if not base or base:find("[\128-\255]") then base = reaper.GetResourcePath() end
  else
    base = os.getenv("TMPDIR") or "/tmp"
  end
  local dir = settings.join(settings.join(base, "m2ugen-reaper"), sub)
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

-- <project recording path>/M2UGen: results kept with the project.
function project.result_dir()
  local base = reaper.GetProjectPathEx(0)
  if base == nil or base == "" then base = reaper.GetResourcePath() end
  local dir = settings.join(base, "M2UGen")
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

-- Copies a file byte for byte; raises with both paths on failure.
function project.copy_file(from, to)
  local src, err = io.open(from, "rb")
  if not src then error("Cannot read " .. from .. ": " .. tostring(err), 0) end
  local data = src:read("a")
  src:close()
  local dst, err2 = io.open(to, "wb")
  if not dst then error("Cannot write " .. to .. ": " .. tostring(err2), 0) end
  dst:write(data)
  dst:close()
end

-- A name unique enough for one user: time + random suffix.
function project.stamp()
  return os.date("%Y%m%d-%H%M%S") .. string.format("-%04d", math.random(0, 9999))
end

-- ---------------------------------------------------------------------------------------------
-- render the selection without dialogs

project.RENDER_NUMBERS = {
  "RENDER_SETTINGS", "RENDER_BOUNDSFLAG", "RENDER_CHANNELS", "RENDER_SRATE", "RENDER_STARTPOS",
  "RENDER_ENDPOS", "RENDER_TAILFLAG", "RENDER_TAILMS", "RENDER_ADDTOPROJ", "RENDER_DITHER",
  "RENDER_NORMALIZE",
}
project.RENDER_STRINGS = { "RENDER_FILE", "RENDER_PATTERN", "RENDER_FORMAT", "RENDER_FORMAT2" }

project.ACTION_RENDER = 42230 -- File: Render project, using the most recent render settings, auto-close

function project.save_render_settings()
  local saved = { numbers = {}, strings = {} }
  for _, k in ipairs(project.RENDER_NUMBERS) do
    saved.numbers[k] = reaper.GetSetProjectInfo(0, k, 0, false)
  end
  for _, k in ipairs(project.RENDER_STRINGS) do
    local _, v = reaper.GetSetProjectInfo_String(0, k, "", false)
    saved.strings[k] = v
  end
  return saved
end

-- Restores every saved value; keeps going when one fails and returns the first error, if any.
function project.restore_render_settings(saved)
  local first_err = nil
  for _, k in ipairs(project.RENDER_NUMBERS) do
    local ok, err = pcall(reaper.GetSetProjectInfo, 0, k, saved.numbers[k], true)
    if not ok and not first_err then first_err = err end
  end
  for _, k in ipairs(project.RENDER_STRINGS) do
    local ok, err = pcall(reaper.GetSetProjectInfo_String, 0, k, saved.strings[k], true)
    if not ok and not first_err then first_err = err end
  end
  return first_err
end

-- Renders `sel` to <dir>/<name>.wav (master mix of the time range, or the selected items via master).
-- Returns the path. Raises on failure; the user's render settings are restored in every case.
function project.render(sel, dir, name)
  local saved = project.save_render_settings()
  local ok, result = xpcall(function()
    local function set(k, v) reaper.GetSetProjectInfo(0, k, v, true) end
    local function set_s(k, v) reaper.GetSetProjectInfo_String(0, k, v, true) end
    if sel.source == "items" then
      set("RENDER_SETTINGS", 64 | (4 << 16)) -- selected media items via master, as one file
      set("RENDER_BOUNDSFLAG", 4)            -- bounds: selected media items
    else
      set("RENDER_SETTINGS", 0)              -- master mix
      set("RENDER_BOUNDSFLAG", 0)            -- custom bounds
      set("RENDER_STARTPOS", sel.start)
      set("RENDER_ENDPOS", sel["end"])
    end
    set("RENDER_CHANNELS", 2)
    set("RENDER_SRATE", 0)      -- project rate
    set("RENDER_TAILFLAG", 0)
    set("RENDER_ADDTOPROJ", 0)
    set("RENDER_DITHER", 0)
    set("RENDER_NORMALIZE", 0)
    set_s("RENDER_FILE", dir)
    set_s("RENDER_PATTERN", name)
    set_s("RENDER_FORMAT", "evaw")
    set_s("RENDER_FORMAT2", "")
    local _, targets = reaper.GetSetProjectInfo_String(0, "RENDER_TARGETS", "", false)
    local path = (targets or ""):match("^([^;]+)")
    if not path or path == "" then
      error("REAPER reported no render target for " .. settings.join(dir, name .. ".wav"), 0)
    end
    os.remove(path) -- never mistake an old file for this render
    reaper.Main_OnCommand(project.ACTION_RENDER, 0)
    local f = io.open(path, "rb")
    local size = 0
    if f then size = f:seek("end") f:close() end
    if size <= 44 then
      error("Rendering the selection failed: no audio was written to " .. path, 0)
    end
    return path
  end, function(err) return err end)
  local restore_err = project.restore_render_settings(saved)
  if not ok then error(result, 0) end
  if restore_err then error("Could not restore the render settings: " .. tostring(restore_err), 0) end
  return result
end

-- ---------------------------------------------------------------------------------------------
-- results

-- Index (0-based) where the result track goes: right below `track`, or at the end.
function project.insert_index(track)
  if track then
    local number = reaper.GetMediaTrackInfo_Value(track, "IP_TRACKNUMBER") -- 1-based; -1 = master
    if number and number >= 1 then return math.floor(number) end
  end
  return reaper.CountTracks(0)
end

function project.track_name(kind, prompt)
  local p = prompt:gsub("[%c]+", " ")
  if #p > 60 then p = p:sub(1, 57):gsub("[\128-\191]*$", ""):gsub("[\192-\255]$", "") .. "..." end
  return "M2UGen " .. kind .. ": " .. p
end

-- Length in seconds of a PCM source (converts a beat-based length, which WAVs never have).
local function source_seconds(src, at)
  local len, is_qn = reaper.GetMediaSourceLength(src)
  if is_qn then
    local qn0 = reaper.TimeMap2_timeToQN(0, at)
    return reaper.TimeMap2_QNToTime(0, qn0 + len) - at
  end
  return len
end

-- Runs fill(track) on a new track named opts.name below opts.track, as one undo point.
-- All or nothing: if fill raises, the new track (and whatever fill put on it) is removed and the
-- error raised again; Undo_Begin/End always pair up. Returns fill's table plus {track, index}.
local function on_new_track(opts, fill)
  local index = project.insert_index(opts.track)
  local created = nil
  reaper.Undo_BeginBlock2(0)
  reaper.PreventUIRefresh(1)
  local ok, result = pcall(function()
    reaper.InsertTrackAtIndex(index, true)
    created = reaper.GetTrack(0, index)
    if not created then error("REAPER did not create a track at index " .. index, 0) end
    reaper.GetSetMediaTrackInfo_String(created, "P_NAME", opts.name, true)
    local r = fill(created)
    r.track, r.index = created, index
    return r
  end)
  if not ok and created then
    pcall(reaper.DeleteTrack, created) -- no empty track, no stray item
  end
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  reaper.Undo_EndBlock2(0, ok and ("M2UGen: " .. opts.name) or "M2UGen: insert failed", -1)
  if not ok then error(result, 0) end
  return result
end

-- Inserts `path` as an item at `position` on a new track below `track`.
-- Returns {track, item, take, length, index}.
function project.insert_audio(opts)
  local src = reaper.PCM_Source_CreateFromFile(opts.path)
  if not src then error("REAPER could not open the result file " .. opts.path, 0) end
  local length = source_seconds(src, opts.position)
  if not length or length <= 0 then
    reaper.PCM_Source_Destroy(src)
    error("The result file is empty: " .. opts.path, 0)
  end
  local ok, result = pcall(on_new_track, opts, function(track)
    local item = reaper.AddMediaItemToTrack(track)
    local take = reaper.AddTakeToMediaItem(item)
    if not reaper.SetMediaItemTake_Source(take, src) then
      error("REAPER refused the result as the take's source", 0)
    end
    src = nil -- owned by the take now
    reaper.SetMediaItemInfo_Value(item, "D_POSITION", opts.position)
    reaper.SetMediaItemInfo_Value(item, "D_LENGTH", length)
    reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", opts.take_name or opts.name, true)
    if opts.notes then reaper.GetSetMediaItemInfo_String(item, "P_NOTES", opts.notes, true) end
    if opts.ext then reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:m2ugen", opts.ext, true) end
    reaper.Main_OnCommand(40047, 0) -- Peaks: build any missing peaks
    return { item = item, take = take, length = length }
  end)
  if not ok then
    if src then pcall(reaper.PCM_Source_Destroy, src) end
    error(result, 0)
  end
  return result
end

-- A text answer kept with the project: an empty item spanning the selection whose notes hold the
-- answer, on a new track below `track` (REAPER draws item notes inside the item). One undo point.
function project.insert_note(opts)
  return on_new_track(opts, function(track)
    local item = reaper.AddMediaItemToTrack(track)
    reaper.SetMediaItemInfo_Value(item, "D_POSITION", opts.position)
    reaper.SetMediaItemInfo_Value(item, "D_LENGTH", opts.length)
    reaper.GetSetMediaItemInfo_String(item, "P_NOTES", opts.notes, true)
    return { item = item }
  end)
end

-- Job history kept with the .rpp: ProjExtState "M2UGen", key "job:<id>" = JSON, plus "last_job".
function project.remember(job_id, record_json)
  reaper.SetProjExtState(0, "M2UGen", "job:" .. job_id, record_json)
  reaper.SetProjExtState(0, "M2UGen", "last_job", job_id)
end

return project
