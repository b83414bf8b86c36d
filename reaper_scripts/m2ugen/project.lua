-- @noindex
-- Everything that touches the REAPER project: the selection and its musical context, rendering the
-- selection to a WAV (restoring every render setting), and inserting results (one undo point).

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
-- results
-- Every insert is one undo point in the job's project and all or nothing: whatever it created is
-- removed again when a later step fails. A result FILE is never removed here.

project.ANSWERS_TRACK = "M2UGen answers"
project.ACTION_PEAKS = 40047       -- Peaks: build any missing peaks
project.ACTION_DELETE_TAKE = 40129 -- Take: Delete active take from items (acts on selected items)

function project.track_name(kind, prompt)
  local p = prompt:gsub("[%c]+", " ")
  if #p > 60 then p = p:sub(1, 57):gsub("[\128-\191]*$", ""):gsub("[\192-\255]$", "") .. "..." end
  return "M2UGen " .. kind .. ": " .. p
end

-- Index (0-based) where a new track goes: right below `track` (when it still exists), or at the end.
function project.insert_index(proj, track)
  if track and reaper.ValidatePtr2(proj, track, "MediaTrack*") then
    local number = reaper.GetMediaTrackInfo_Value(track, "IP_TRACKNUMBER") -- 1-based; -1 = master
    if number and number >= 1 then return math.floor(number) end
  end
  return reaper.CountTracks(proj)
end

-- Length in seconds of a PCM source (converts a beat-based length, which WAVs never have).
local function source_seconds(proj, src, at)
  local len, is_qn = reaper.GetMediaSourceLength(src)
  if is_qn then
    local qn0 = reaper.TimeMap2_timeToQN(proj, at)
    return reaper.TimeMap2_QNToTime(proj, qn0 + len) - at
  end
  return len
end

-- Opens every take file first (nothing in the project changes when one cannot be opened).
-- takes: list of {path, name, ext}. Returns the list with .src and .length added.
-- close_all() destroys the sources no take owns yet (fill_takes clears t.src once a take has it).
local function open_sources(proj, takes, position)
  local function close_all()
    for _, t in ipairs(takes) do
      if t.src then pcall(reaper.PCM_Source_Destroy, t.src) end
      t.src = nil
    end
  end
  for _, t in ipairs(takes) do
    local src = reaper.PCM_Source_CreateFromFile(t.path)
    if not src then
      close_all()
      error("REAPER could not open the result file " .. t.path, 0)
    end
    t.src = src
    local length = source_seconds(proj, src, position)
    if not length or length <= 0 then
      close_all()
      error("The result file is empty: " .. t.path, 0)
    end
    t.length = length
  end
  return takes, close_all
end

-- Runs body() as one undo point of `proj`; undo() is called when body raises, then the error is
-- raised again. Undo_BeginBlock2/EndBlock2 always pair up.
local function undo_block(proj, label, body, undo)
  reaper.Undo_BeginBlock2(proj)
  reaper.PreventUIRefresh(1)
  local ok, result = pcall(body)
  if not ok and undo then pcall(undo) end
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  reaper.Undo_EndBlock2(proj, ok and ("M2UGen: " .. label) or "M2UGen: insert failed", -1)
  if not ok then error(result, 0) end
  return result
end

local function new_track(proj, index, name)
  reaper.InsertTrackInProject(proj, index, 1)
  local track = reaper.GetTrack(proj, index)
  if not track then error("REAPER did not create a track at index " .. index, 0) end
  reaper.GetSetMediaTrackInfo_String(track, "P_NAME", name, true)
  return track
end

-- Puts each take's source on `item` (takes[active or 1] active). Sources belong to the takes afterwards.
local function fill_takes(item, takes, active)
  local made = {}
  for i, t in ipairs(takes) do
    local take = reaper.AddTakeToMediaItem(item)
    made[i] = take
    if not reaper.SetMediaItemTake_Source(take, t.src) then
      error("REAPER refused the result as the take's source", 0)
    end
    t.src = nil -- owned by the take now
    reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", t.name, true)
    if t.ext then reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:m2ugen", t.ext, true) end
  end
  reaper.SetActiveTake(made[active and made[active] and active or 1])
  return made
end

-- The parts of `items` inside [s, e): an item reaching beyond the range is split at its edges
-- (SplitMediaItem: "the original item becomes the left-hand split, the function returns the
-- right-hand split"), so muting the part mutes nothing outside the range. Returns the parts.
local function parts_in_range(items, s, e)
  local out = {}
  for _, item in ipairs(items) do
    local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
    local stop = pos + reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
    local part = item
    if pos < s and stop > s then part = reaper.SplitMediaItem(item, s) or item end
    if stop > e and pos < e then reaper.SplitMediaItem(part, e) end
    out[#out + 1] = part
  end
  return out
end

-- Sets B_MUTE on items; returns what to put back.
local function mute_items(items)
  local before = {}
  for i, item in ipairs(items) do
    before[i] = reaper.GetMediaItemInfo_Value(item, "B_MUTE")
    reaper.SetMediaItemInfo_Value(item, "B_MUTE", 1)
  end
  return function()
    for i, item in ipairs(items) do reaper.SetMediaItemInfo_Value(item, "B_MUTE", before[i]) end
  end
end

-- Items of `tracks` (or of every track when nil) that overlap [s, e).
function project.items_in_range(proj, tracks, s, e)
  if not tracks then
    tracks = {}
    for i = 0, reaper.CountTracks(proj) - 1 do tracks[#tracks + 1] = reaper.GetTrack(proj, i) end
  end
  local out = {}
  for _, tr in ipairs(tracks) do
    for i = 0, reaper.CountTrackMediaItems(tr) - 1 do
      local item = reaper.GetTrackMediaItem(tr, i)
      local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
      local len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
      if pos < e and pos + len > s then out[#out + 1] = item end
    end
  end
  return out
end

-- Inserts a finished audio result into `proj` as one undo point.
-- opts: takes = {{path, name, ext}, ...} (take 1 active), position, name (track/undo label),
--       notes (item notes), track (the source track: the new track goes below it),
--       mode = "track" | "mute" | "take", source_items (for "take"/"mute": the items the job listened to),
--       mute_items (for "mute": what to mute; defaults to source_items), mute_range ({start, end}: split
--       the items to mute at these edges and mute only what lies inside).
-- "take": with exactly one source item the result becomes its new active take(s); otherwise it
-- falls back to "mute". Returns {mode, track, item, takes, length, muted}.
function project.insert_audio(proj, opts)
  local takes, close_all = open_sources(proj, opts.takes, opts.position)
  local mode = opts.mode or "track"
  local source_items = opts.source_items or {}
  if mode == "take" and #source_items ~= 1 then mode = "mute" end
  local created_track, result = nil, nil
  local undo_mute = nil
  local target, old_active, old_count = nil, nil, 0
  local ok, err = pcall(undo_block, proj, opts.name, function()
    local r = { mode = mode, length = takes[1].length }
    if mode == "take" then
      target = source_items[1]
      old_active = reaper.GetActiveTake(target)
      old_count = reaper.GetMediaItemNumTakes(target)
      r.item = target
      r.takes = fill_takes(target, takes, opts.active)
      r.track = reaper.GetMediaItem_Track(target)
    else
      local index = project.insert_index(proj, opts.track)
      created_track = new_track(proj, index, opts.name)
      local item = reaper.AddMediaItemToTrack(created_track)
      r.track, r.item, r.index = created_track, item, index
      r.takes = fill_takes(item, takes, opts.active)
      reaper.SetMediaItemInfo_Value(item, "D_POSITION", opts.position)
      reaper.SetMediaItemInfo_Value(item, "D_LENGTH", takes[1].length)
      if opts.notes then reaper.GetSetMediaItemInfo_String(item, "P_NOTES", opts.notes, true) end
      if mode == "mute" then
        local to_mute = opts.mute_items or source_items
        if opts.mute_range then to_mute = parts_in_range(to_mute, opts.mute_range[1], opts.mute_range[2]) end
        undo_mute = mute_items(to_mute)
        r.muted = to_mute
      end
    end
    reaper.Main_OnCommandEx(project.ACTION_PEAKS, 0, proj)
    result = r
    return r
  end, function()
    if undo_mute then undo_mute() end
    if created_track then reaper.DeleteTrack(created_track) end -- no empty track, no stray item
    if target then project.remove_new_takes(proj, target, old_count, old_active) end
  end)
  if not ok then
    close_all()
    error(err, 0)
  end
  return result
end

-- Inserts a transcription on a NEW track below opts.track (one undo point), as a MIDI item at
-- opts.position: with opts.notes ({start_s, end_s, pitch, velocity, channel} from the job's sidecar,
-- seconds from the start of the transcribed audio) the notes are written with the MIDI API at their
-- project time (MIDI_GetPPQPosFromProjTime: exact under any tempo map); without them the .mid file
-- itself becomes the item's source (its length in quarter notes on the tempo map). The file is never
-- removed.
-- opts: path (.mid), notes, position, length, name (track/undo label), take_name, item_notes, ext, track.
-- Returns {track, item, take}.
function project.insert_midi(proj, opts)
  local track = nil
  return undo_block(proj, opts.name, function()
    track = new_track(proj, project.insert_index(proj, opts.track), opts.name)
    local item, take
    if opts.notes and #opts.notes > 0 then
      local last = opts.length or 0
      for _, n in ipairs(opts.notes) do last = math.max(last, n[2]) end
      item = reaper.CreateNewMIDIItemInProj(track, opts.position, opts.position + last, false)
      take = item and reaper.GetActiveTake(item)
      if not take then error("REAPER did not create a MIDI item", 0) end
      for _, n in ipairs(opts.notes) do
        local s = reaper.MIDI_GetPPQPosFromProjTime(take, opts.position + n[1])
        local e = reaper.MIDI_GetPPQPosFromProjTime(take, opts.position + n[2])
        reaper.MIDI_InsertNote(take, false, false, s, e, math.floor(n[5] or 0), math.floor(n[3]),
          math.floor(n[4] or 100), true)
      end
      reaper.MIDI_Sort(take)
    else
      -- the .mid itself as the take's source, in the job's project (InsertMedia and SetEditCurPos act
      -- on the tab in front, which may be another project by now)
      local src = reaper.PCM_Source_CreateFromFile(opts.path)
      if not src then error("REAPER could not open the MIDI file " .. opts.path, 0) end
      item = reaper.AddMediaItemToTrack(track)
      take = reaper.AddTakeToMediaItem(item)
      if not reaper.SetMediaItemTake_Source(take, src) then
        reaper.PCM_Source_Destroy(src)
        error("REAPER could not insert the MIDI file " .. opts.path, 0)
      end
      reaper.SetMediaItemInfo_Value(item, "D_POSITION", opts.position)
      reaper.SetMediaItemInfo_Value(item, "D_LENGTH", source_seconds(proj, src, opts.position))
    end
    reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", opts.take_name, true)
    if opts.ext then reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:m2ugen", opts.ext, true) end
    if opts.item_notes then reaper.GetSetMediaItemInfo_String(item, "P_NOTES", opts.item_notes, true) end
    return { track = track, item = item, take = take }
  end, function()
    if track then reaper.DeleteTrack(track) end
  end)
end

-- Removes the takes after the first `keep` ones from `item` and makes `active` the active take
-- again (there is no DeleteTake API: select only the item, make the take active, run "Delete active
-- take", and put the item selection back).
function project.remove_new_takes(proj, item, keep, active)
  local selected = {}
  for i = 0, reaper.CountSelectedMediaItems(proj) - 1 do selected[#selected + 1] = reaper.GetSelectedMediaItem(proj, i) end
  for _, it in ipairs(selected) do reaper.SetMediaItemSelected(it, false) end
  reaper.SetMediaItemSelected(item, true)
  while reaper.GetMediaItemNumTakes(item) > keep do
    local take = reaper.GetMediaItemTake(item, reaper.GetMediaItemNumTakes(item) - 1)
    reaper.SetActiveTake(take)
    reaper.Main_OnCommandEx(project.ACTION_DELETE_TAKE, 0, proj)
  end
  reaper.SetMediaItemSelected(item, false)
  for _, it in ipairs(selected) do reaper.SetMediaItemSelected(it, true) end
  if active and reaper.ValidatePtr2(proj, active, "MediaItem_Take*") then reaper.SetActiveTake(active) end
end

-- Takes back what insert_audio did (Discard in the preview), as one undo point. The files stay.
function project.remove_result(proj, inserted, before)
  undo_block(proj, "discard preview", function()
    if inserted.mode == "take" then
      project.remove_new_takes(proj, inserted.item, before.take_count, before.active)
    else
      if inserted.muted then
        for _, item in ipairs(inserted.muted) do
          if reaper.ValidatePtr2(proj, item, "MediaItem*") then reaper.SetMediaItemInfo_Value(item, "B_MUTE", 0) end
        end
      end
      if reaper.ValidatePtr2(proj, inserted.track, "MediaTrack*") then reaper.DeleteTrack(inserted.track) end
    end
  end)
end

-- The project's "M2UGen answers" track, created at the end of the track list when missing.
local function answers_track(proj)
  for i = 0, reaper.CountTracks(proj) - 1 do
    local tr = reaper.GetTrack(proj, i)
    local _, name = reaper.GetSetMediaTrackInfo_String(tr, "P_NAME", "", false)
    if name == project.ANSWERS_TRACK then return tr, false end
  end
  return new_track(proj, reaper.CountTracks(proj), project.ANSWERS_TRACK), true
end

-- A text answer kept with the project: an empty item spanning the selection on the project's one
-- "M2UGen answers" track, its notes holding the answer (REAPER draws item notes inside the item);
-- optionally a project marker or region named after the answer. One undo point.
-- opts: position, length, notes, label (marker name), marker = "off"|"marker"|"region", name (undo label)
function project.insert_note(proj, opts)
  local created, item, track = false, nil, nil
  return undo_block(proj, opts.name, function()
    track, created = answers_track(proj)
    item = reaper.AddMediaItemToTrack(track)
    reaper.SetMediaItemInfo_Value(item, "D_POSITION", opts.position)
    reaper.SetMediaItemInfo_Value(item, "D_LENGTH", opts.length)
    reaper.GetSetMediaItemInfo_String(item, "P_NOTES", opts.notes, true)
    if opts.ext then reaper.GetSetMediaItemInfo_String(item, "P_EXT:m2ugen", opts.ext, true) end
    local marker = nil
    if opts.marker == "marker" or opts.marker == "region" then
      local is_region = opts.marker == "region"
      marker = reaper.AddProjectMarker2(proj, is_region, opts.position,
        is_region and (opts.position + opts.length) or 0, opts.label, -1, 0)
      if marker < 0 then error("REAPER did not add the answer " .. opts.marker, 0) end
    end
    return { track = track, item = item, marker = marker, created_track = created }
  end, function()
    if created and track then reaper.DeleteTrack(track)
    elseif item and track then reaper.DeleteTrackMediaItem(track, item) end
  end)
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
