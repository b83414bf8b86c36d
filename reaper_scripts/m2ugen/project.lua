-- @noindex
-- Everything that reads the REAPER project: the selection and its musical context, rendering the
-- selection to a WAV (restoring every render setting), folders, the job history. Putting results
-- into the project is place.lua's.

local import = ...
local settings = import("settings")
local common = import("common")

local project = {}

-- ---------------------------------------------------------------------------------------------
-- the project a job belongs to
-- Every call takes the project the job started in (reaper.EnumProjects(-1) at the start), never 0:
-- the user may switch tabs while the job runs, and the result must land where it was asked for.

-- Returns the current project and its file name ("" when unsaved).
function project.current()
  local proj, fn = reaper.EnumProjects(-1)
  return proj, fn or ""
end

-- True when `proj` is still an open project (its tab was not closed).
function project.is_open(proj)
  return proj ~= nil and reaper.ValidatePtr2(0, proj, "ReaProject*")
end

-- The file name of an open project ("" when unsaved): File > Open in the same tab keeps the tab's
-- ReaProject* but loads another file, so a job compares this too (see runner.project_state).
function project.file_of(proj)
  local i = 0
  while true do
    local p, fn = reaper.EnumProjects(i)
    if not p then return nil end
    if p == proj then return fn or "" end
    i = i + 1
  end
end

-- A name for messages: the project's file name, else "(unsaved project)".
function project.name(proj)
  local n = reaper.GetProjectName(proj)
  if n == nil or n == "" then return "(unsaved project)" end
  return n
end

-- ---------------------------------------------------------------------------------------------
-- selection and context

local function item_span(items)
  local s, e = math.huge, -math.huge
  for _, item in ipairs(items) do
    local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
    local len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
    if pos < s then s = pos end
    if pos + len > e then e = pos + len end
  end
  return s, e
end

-- What the job listens to, in this order of preference:
--   selected items            -> source "items"  (rendered: selected items via master)
--   selected tracks + a time selection -> "tracks" (rendered: selected tracks via master)
--   a time selection          -> "time"   (rendered: the master mix)
-- Returns {start, end, source, track, items, tracks} or nil when nothing is selected.
function project.selection(proj)
  local n = reaper.CountSelectedMediaItems(proj)
  if n > 0 then
    local items = {}
    for i = 0, n - 1 do items[#items + 1] = reaper.GetSelectedMediaItem(proj, i) end
    local s, e = item_span(items)
    if e > s then
      return { start = s, ["end"] = e, source = "items", items = items, track = reaper.GetMediaItem_Track(items[1]) }
    end
  end
  local ts, te = reaper.GetSet_LoopTimeRange2(proj, false, false, 0, 0, false)
  if te > ts then
    local nt = reaper.CountSelectedTracks(proj)
    if nt > 0 then
      local tracks = {}
      for i = 0, nt - 1 do tracks[#tracks + 1] = reaper.GetSelectedTrack(proj, i) end
      return { start = ts, ["end"] = te, source = "tracks", tracks = tracks, track = tracks[#tracks] }
    end
    return { start = ts, ["end"] = te, source = "time" }
  end
  return nil
end

-- One line for messages and the item notes: what was rendered.
function project.describe_selection(sel)
  if not sel then return "no selection" end
  local range = string.format("%.3f-%.3f s", sel.start, sel["end"])
  if sel.source == "items" then return #sel.items .. " selected item(s), " .. range end
  if sel.source == "tracks" then return #sel.tracks .. " selected track(s) via master, " .. range end
  return "master mix, " .. range
end

-- The selected items' source files, for a fine-tune ("M2UGen - Learn from selected items"): one
-- {path, start, end, caption} per audio item, start/end = the part of the file the item plays
-- (seconds), caption = the item's notes (empty: the server's model describes the clip). MIDI takes and
-- takes without a file are skipped; returns clips, number skipped.
function project.selected_sources(proj)
  local clips, skipped = {}, 0
  for i = 0, reaper.CountSelectedMediaItems(proj) - 1 do
    local item = reaper.GetSelectedMediaItem(proj, i)
    local take = reaper.GetActiveTake(item)
    local src = take and not reaper.TakeIsMIDI(take) and reaper.GetMediaItemTake_Source(take) or nil
    local parent = src and reaper.GetMediaSourceParent(src) -- a section or reversed source: its file
    if parent then src = parent end
    local path = src and reaper.GetMediaSourceFileName(src) or ""
    if path == "" then
      skipped = skipped + 1
    else
      local offset = math.max(0, reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS"))
      local rate = reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE")
      local played = reaper.GetMediaItemInfo_Value(item, "D_LENGTH") * (rate > 0 and rate or 1)
      local length = reaper.GetMediaSourceLength(src)
      local stop = math.min(offset + played, length > 0 and length or offset + played)
      local _, notes = reaper.GetSetMediaItemInfo_String(item, "P_NOTES", "", false)
      notes = (notes or ""):gsub("^%s+", ""):gsub("%s+$", "")
      local clip = { path = path }
      if offset > 0 then clip.start = offset + 0.0 end
      if stop < length then clip["end"] = stop + 0.0 end
      if notes ~= "" then clip.caption = common.utf8_cut(notes, 2000) end
      clips[#clips + 1] = clip
    end
  end
  return clips, skipped
end

function project.sample_rate(proj)
  if reaper.GetSetProjectInfo(proj, "PROJECT_SRATE_USE", 0, false) >= 1 then
    local sr = reaper.GetSetProjectInfo(proj, "PROJECT_SRATE", 0, false)
    if sr and sr > 0 then return math.floor(sr + 0.5) end
  end
  local ok, desc = reaper.GetAudioDeviceInfo("SRATE")
  local sr = ok and tonumber(desc) or nil
  if sr and sr > 0 then return math.floor(sr + 0.5) end
  return 48000
end

-- The musical context sent with every request (protocol §2 `context`).
function project.context(proj, sel, at)
  local num, den, bpm = reaper.TimeMap_GetTimeSigAtTime(proj, at)
  local ctx = {
    bpm = bpm,
    time_signature = { math.floor(num), math.floor(den) },
    project_sample_rate = project.sample_rate(proj),
  }
  if sel then ctx.selection = { start = sel.start, ["end"] = sel["end"] } end
  return ctx
end

-- ---------------------------------------------------------------------------------------------
-- MIDI items as the melody (protocol `inputs.midi.notes`)

project.DRUM_CHANNEL = 9 -- General MIDI channel 10 (0-based 9): no pitch class, left out
project.MAX_NOTES = 100000

-- The notes of the selected MIDI items of `sel` (source "items": every selected item whose active
-- take is MIDI), as the protocol wants them: {start_s, end_s, pitch, velocity} in seconds from
-- sel.start, in project time through MIDI_GetProjTimeFromPPQPos (so tempo changes are followed).
-- Muted notes, drum-channel notes and whatever lies outside its item are left out; a note is cut at
-- its item's end. Returns nil when no selected item is MIDI.
function project.midi_notes(sel)
  if not sel or sel.source ~= "items" then return nil end
  local notes, any_midi = {}, false
  for _, item in ipairs(sel.items) do
    local take = reaper.GetActiveTake(item)
    if take and reaper.TakeIsMIDI(take) then
      any_midi = true
      local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
      local item_end = pos + reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
      -- a looped item (B_LOOPSRC) plays its source again every source length (quarter notes for a
      -- MIDI source); MIDI_GetNote lists the source's notes once
      local loop_ppq = nil
      if reaper.GetMediaItemInfo_Value(item, "B_LOOPSRC") ~= 0 then
        local len, is_qn = reaper.GetMediaSourceLength(reaper.GetMediaItemTake_Source(take))
        local ppq0 = reaper.MIDI_GetPPQPosFromProjTime(take, pos)
        local qn0 = reaper.MIDI_GetProjQNFromPPQPos(take, ppq0)
        if is_qn and len and len > 0 then loop_ppq = reaper.MIDI_GetPPQPosFromProjQN(take, qn0 + len) - ppq0 end
      end
      local _, count = reaper.MIDI_CountEvts(take)
      for i = 0, count - 1 do
        local ok, _, muted, s_ppq, e_ppq, chan, pitch, vel = reaper.MIDI_GetNote(take, i)
        if ok and not muted and chan ~= project.DRUM_CHANNEL then
          local k = 0
          while true do
            local shift = loop_ppq and k * loop_ppq or 0
            local t0 = reaper.MIDI_GetProjTimeFromPPQPos(take, s_ppq + shift)
            if t0 >= item_end then break end
            local s = math.max(t0, pos)
            local e = math.min(reaper.MIDI_GetProjTimeFromPPQPos(take, e_ppq + shift), item_end)
            if e > s then
              local function rel(t) return math.floor((t - sel.start) * 1e6 + 0.5) / 1e6 end
              notes[#notes + 1] = { rel(s), rel(e), math.floor(pitch), math.max(1, math.floor(vel)) }
            end
            if not loop_ppq or #notes > project.MAX_NOTES then break end
            k = k + 1
          end
        end
      end
    end
  end
  if not any_midi then return nil end
  if #notes > project.MAX_NOTES then
    error("The selected MIDI items hold " .. #notes .. " notes; at most " .. project.MAX_NOTES .. " can be sent.", 0)
  end
  table.sort(notes, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[3] < b[3]) end)
  return notes
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
function project.result_dir(proj)
  local base = reaper.GetProjectPathEx(proj)
  if base == nil or base == "" then base = reaper.GetResourcePath() end
  local dir = settings.join(base, "M2UGen")
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

project.COPY_CHUNK = 1 << 20 -- bytes per read/write

-- Copies a file byte for byte, in chunks, into `to`.part, renamed to `to` only once every write and
-- the close succeeded (a full disk reports ENOSPC on a write or only on the close, which flushes):
-- `to` is either the complete copy or absent, never truncated. Raises with both paths on failure.
-- step(max_bytes) copies at most that much per call (for the defer loop); project.copy_file runs
-- it to the end.
function project.copier(from, to)
  local src, err = io.open(from, "rb")
  if not src then error("Cannot read " .. from .. ": " .. tostring(err), 0) end
  local part = to .. ".part"
  local dst, err2 = io.open(part, "wb")
  if not dst then
    src:close()
    error("Cannot write " .. to .. ": " .. tostring(err2), 0)
  end
  local c = { from = from, to = to, done = false }
  local function give_up(why)
    src:close()
    pcall(dst.close, dst)
    os.remove(part)
    c.done = true
    error("Cannot copy " .. from .. " to " .. to .. ": " .. tostring(why), 0)
  end
  function c.step(max_bytes)
    if c.done then return true end
    local budget = max_bytes or math.huge
    while budget > 0 do
      local data = src:read(math.min(project.COPY_CHUNK, budget))
      if not data then
        src:close()
        local ok, cerr = dst:close()
        if not ok then
          os.remove(part)
          c.done = true
          error("Cannot copy " .. from .. " to " .. to .. ": " .. tostring(cerr), 0)
        end
        os.remove(to) -- a rename does not replace an existing file on Windows
        local renamed, rerr = os.rename(part, to)
        c.done = true
        if not renamed then
          os.remove(part)
          error("Cannot copy " .. from .. " to " .. to .. ": " .. tostring(rerr), 0)
        end
        return true
      end
      local ok, werr = dst:write(data)
      if not ok then give_up(werr) end
      budget = budget - #data
    end
    return false
  end
  return c
end

function project.copy_file(from, to)
  project.copier(from, to).step()
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

function project.save_render_settings(proj)
  local saved = { numbers = {}, strings = {} }
  for _, k in ipairs(project.RENDER_NUMBERS) do
    saved.numbers[k] = reaper.GetSetProjectInfo(proj, k, 0, false)
  end
  for _, k in ipairs(project.RENDER_STRINGS) do
    local _, v = reaper.GetSetProjectInfo_String(proj, k, "", false)
    saved.strings[k] = v
  end
  return saved
end

-- Restores every saved value; keeps going when one fails and returns the first error, if any.
function project.restore_render_settings(proj, saved)
  local first_err = nil
  for _, k in ipairs(project.RENDER_NUMBERS) do
    local ok, err = pcall(reaper.GetSetProjectInfo, proj, k, saved.numbers[k], true)
    if not ok and not first_err then first_err = err end
  end
  for _, k in ipairs(project.RENDER_STRINGS) do
    local ok, err = pcall(reaper.GetSetProjectInfo_String, proj, k, saved.strings[k], true)
    if not ok and not first_err then first_err = err end
  end
  return first_err
end

-- RENDER_SETTINGS / RENDER_BOUNDSFLAG for each selection source (see project.selection), and for
-- what the model must hear (issue 22 #8; reaper_scripts/README.md, "What the model hears"):
--   "heard"      the mix as heard: through take FX, item, track and master (Ask, Transcribe)
--   "pre_master" the same without the master's FX and volume (an edit whose result goes on a NEW
--                track: that track plays through the master, so the master applies once)
--   "take"       the one selected item without its track and master ("selected media items", not via
--                master) and at item volume 1 (an edit that becomes a new TAKE of that item: the
--                item volume, track and master then apply to it at playback, once)
-- "selected tracks via master" writes one file per track (RENDER_TARGETS lists them): they are
-- summed into one (wavmix.lua).
project.RENDER_SOURCE = {
  items = { settings = 64 | (4 << 16), bounds = 4 }, -- selected media items via master, one file
  tracks = { settings = 128, bounds = 0 },           -- selected tracks via master, custom bounds
  time = { settings = 0, bounds = 0 },               -- master mix, custom bounds
  take = { settings = 32 | (4 << 16), bounds = 4 },  -- selected media items (not via master), one file
}

-- Runs body() with the master's FX bypassed and its volume at 0 dB (how = "pre_master") or the one
-- item's volume at 1 (how = "take"), putting every value back afterwards, whatever happens.
local function with_chain(proj, sel, how, body)
  local undo = {}
  local function set_track(tr, key, v)
    undo[#undo + 1] = { reaper.SetMediaTrackInfo_Value, tr, key, reaper.GetMediaTrackInfo_Value(tr, key) }
    reaper.SetMediaTrackInfo_Value(tr, key, v)
  end
  local ok, result = pcall(function()
    if how == "pre_master" then
      local master = reaper.GetMasterTrack(proj)
      set_track(master, "I_FXEN", 0)
      set_track(master, "D_VOL", 1)
    elseif how == "take" then
      local item = sel.items[1]
      undo[#undo + 1] = { reaper.SetMediaItemInfo_Value, item, "D_VOL", reaper.GetMediaItemInfo_Value(item, "D_VOL") }
      reaper.SetMediaItemInfo_Value(item, "D_VOL", 1)
    end
    return body()
  end)
  for i = #undo, 1, -1 do
    local u = undo[i]
    pcall(u[1], u[2], u[3], u[4])
  end
  if not ok then error(result, 0) end
  return result
end

-- Renders `sel` of `proj` to <dir>/<name>.wav as the model must hear it (`how`, default "heard").
-- Returns the path. Raises on failure; the user's render settings (and anything with_chain changed)
-- are restored in every case. Several files (one per selected track) are mixed into one.
function project.render(proj, sel, dir, name, how)
  how = how or "heard"
  local saved = project.save_render_settings(proj)
  local ok, result = xpcall(function()
    if project.current() ~= proj then
      -- action 42230 renders the project in front; never render another tab's project by mistake
      error("REAPER renders only the project in front: switch back to the tab of " .. project.name(proj) ..
        " first.", 0)
    end
    local function set(k, v) reaper.GetSetProjectInfo(proj, k, v, true) end
    local function set_s(k, v) reaper.GetSetProjectInfo_String(proj, k, v, true) end
    local source = project.RENDER_SOURCE[how == "take" and "take" or sel.source]
    set("RENDER_SETTINGS", source.settings)
    set("RENDER_BOUNDSFLAG", source.bounds)
    if source.bounds == 0 then
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
    local _, targets = reaper.GetSetProjectInfo_String(proj, "RENDER_TARGETS", "", false)
    local paths = {}
    for p in (targets or ""):gmatch("[^;]+") do paths[#paths + 1] = p end
    if #paths == 0 then
      error("REAPER reported no render target for " .. settings.join(dir, name .. ".wav"), 0)
    end
    for _, p in ipairs(paths) do os.remove(p) end -- never mistake an old file for this render
    with_chain(proj, sel, how, function() reaper.Main_OnCommandEx(project.ACTION_RENDER, 0, proj) end)
    local function remove_all() for _, p in ipairs(paths) do os.remove(p) end end
    for _, p in ipairs(paths) do
      local f = io.open(p, "rb")
      local size = 0
      if f then size = f:seek("end") f:close() end
      if size <= 44 then
        remove_all()
        error("Rendering the selection failed: no audio was written to " .. p, 0)
      end
    end
    if #paths == 1 then return paths[1] end
    local mixed = settings.join(dir, name .. "-mix.wav")
    local mixed_ok, err = pcall(import("wavmix").mix, paths, mixed)
    remove_all()
    if not mixed_ok then error("Mixing the rendered tracks failed: " .. tostring(err), 0) end
    return mixed
  end, function(err) return err end)
  local restore_err = project.restore_render_settings(proj, saved)
  if not ok then error(result, 0) end
  if restore_err then error("Could not restore the render settings: " .. tostring(restore_err), 0) end
  return result
end

-- ---------------------------------------------------------------------------------------------
-- job history kept with the .rpp: ProjExtState "M2UGen", key "job:<id>" = JSON record, plus "last_job"

function project.remember(proj, job_id, record_json)
  reaper.SetProjExtState(proj, "M2UGen", "job:" .. job_id, record_json)
  reaper.SetProjExtState(proj, "M2UGen", "last_job", job_id)
end

-- Every remembered record of `proj` (decoded by `decode`), newest first by their `stamp`.
function project.history(proj, decode)
  local out, i = {}, 0
  while true do
    local ok, key, value = reaper.EnumProjExtState(proj, "M2UGen", i)
    if not ok then break end
    if key:lower():sub(1, 4) == "job:" then -- REAPER may change the key's case
      local rec = decode(value)
      if type(rec) == "table" then
        rec.key = rec.job or key:sub(5)
        out[#out + 1] = rec
      end
    end
    i = i + 1
  end
  table.sort(out, function(a, b) return tostring(a.stamp or "") > tostring(b.stamp or "") end)
  return out
end

return project
