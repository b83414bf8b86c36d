-- @noindex
-- Putting results into the project: a new track below the source, new takes of the source item, a
-- muted source, the "M2UGen answers" track, a MIDI track, the stems under a folder track (stems.lua);
-- each as one undo point of the job's project.

local import = ...

local place = {}

-- Every insert is one undo point in the job's project and all or nothing: whatever it created is
-- removed again when a later step fails. A result FILE is never removed here.

place.ANSWERS_TRACK = "M2UGen answers"
place.ACTION_PEAKS = 40047       -- Peaks: build any missing peaks
place.ACTION_DELETE_TAKE = 40129 -- Take: Delete active take from items (acts on selected items)

function place.track_name(kind, prompt)
  local p = prompt:gsub("[%c]+", " ")
  if #p > 60 then p = p:sub(1, 57):gsub("[\128-\191]*$", ""):gsub("[\192-\255]$", "") .. "..." end
  return "M2UGen " .. kind .. ": " .. p
end

-- Index (0-based) where a new track goes: right below `track` (when it still exists), or at the end.
function place.insert_index(proj, track)
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
function place.items_in_range(proj, tracks, s, e)
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
function place.insert_audio(proj, opts)
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
      local index = place.insert_index(proj, opts.track)
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
    reaper.Main_OnCommandEx(place.ACTION_PEAKS, 0, proj)
    result = r
    return r
  end, function()
    if undo_mute then undo_mute() end
    if created_track then reaper.DeleteTrack(created_track) end -- no empty track, no stray item
    if target then place.remove_new_takes(proj, target, old_count, old_active) end
  end)
  if not ok then
    close_all()
    error(err, 0)
  end
  return result
end

-- ---------------------------------------------------------------------------------------------
-- stems under a folder track
-- REAPER keeps the folder tree in one value per track, I_FOLDERDEPTH: "folder depth change, 0=normal,
-- 1=track is a folder parent, -1=track is the last in the innermost folder, -2=track is the last in
-- the innermost and next-innermost folders, etc" (reaper-api.lua, GetMediaTrackInfo_Value). A track's
-- level is the sum of the changes of the tracks above it.

-- The index (0-based) where a new top-level block goes below `track`: after the last track of the
-- top-level folder that holds it (right below it when it is a top-level track that is no folder), at
-- the end when it is gone or the tree never closes (then the block lands inside the folder left open,
-- where REAPER's own insert at the end puts a track too).
function place.top_level_index(proj, track)
  local n = reaper.CountTracks(proj)
  local from = nil
  if track and reaper.ValidatePtr2(proj, track, "MediaTrack*") then
    local number = reaper.GetMediaTrackInfo_Value(track, "IP_TRACKNUMBER")
    if number and number >= 1 then from = math.floor(number) - 1 end
  end
  local level = 0
  for i = 0, n - 1 do
    level = math.max(0, level + math.floor(reaper.GetMediaTrackInfo_Value(reaper.GetTrack(proj, i), "I_FOLDERDEPTH")))
    if from and i >= from and level == 0 then return i + 1 end
  end
  return n
end

-- Puts each stem on its own new track under a new folder track (one undo point): the folder named
-- `opts.name` at the top level below the source's block (place.top_level_index), the stems inside it in
-- the given order, the last one closing it; each stem one item at opts.position as long as its file,
-- playing it from its start at rate 1 (the file is the selection as rendered: the take offset, rate
-- and fades of the source are in it already). opts.mute: items to mute (the source), put back on
-- failure. Nothing is left when a step fails (no empty folder, no stray item).
-- opts: stems = {{path, stem, ext}, ...}, position, name, track (the source track), notes, mute, label
-- Returns {folder, tracks = {stem = track}, items = {stem = item}, index, muted}.
function place.insert_stems(proj, opts)
  local takes = {}
  for i, s in ipairs(opts.stems) do takes[i] = { path = s.path, name = s.stem, ext = s.ext } end
  local _, close_all = open_sources(proj, takes, opts.position)
  local created, undo_mute = {}, nil
  local ok, result = pcall(undo_block, proj, opts.label or opts.name, function()
    local index = place.top_level_index(proj, opts.track)
    local folder = new_track(proj, index, opts.name)
    created[1] = folder
    reaper.SetMediaTrackInfo_Value(folder, "I_FOLDERDEPTH", 1)
    local r = { folder = folder, tracks = {}, items = {}, index = index }
    for i, t in ipairs(takes) do
      local track = new_track(proj, index + i, t.name)
      created[#created + 1] = track
      reaper.SetMediaTrackInfo_Value(track, "I_FOLDERDEPTH", i == #takes and -1 or 0)
      local item = reaper.AddMediaItemToTrack(track)
      fill_takes(item, { t })
      reaper.SetMediaItemInfo_Value(item, "D_POSITION", opts.position)
      reaper.SetMediaItemInfo_Value(item, "D_LENGTH", t.length)
      if opts.notes then reaper.GetSetMediaItemInfo_String(item, "P_NOTES", opts.notes, true) end
      r.tracks[t.name], r.items[t.name] = track, item
    end
    if opts.mute and #opts.mute > 0 then
      undo_mute = mute_items(opts.mute)
      r.muted = opts.mute
    end
    reaper.Main_OnCommandEx(place.ACTION_PEAKS, 0, proj)
    return r
  end, function()
    if undo_mute then undo_mute() end
    for i = #created, 1, -1 do reaper.DeleteTrack(created[i]) end -- the stems first, then their folder
  end)
  if not ok then
    close_all()
    error(result, 0)
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
function place.insert_midi(proj, opts)
  local track = nil
  return undo_block(proj, opts.name, function()
    track = new_track(proj, place.insert_index(proj, opts.track), opts.name)
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
function place.remove_new_takes(proj, item, keep, active)
  local selected = {}
  for i = 0, reaper.CountSelectedMediaItems(proj) - 1 do selected[#selected + 1] = reaper.GetSelectedMediaItem(proj, i) end
  for _, it in ipairs(selected) do reaper.SetMediaItemSelected(it, false) end
  reaper.SetMediaItemSelected(item, true)
  while reaper.GetMediaItemNumTakes(item) > keep do
    local take = reaper.GetMediaItemTake(item, reaper.GetMediaItemNumTakes(item) - 1)
    reaper.SetActiveTake(take)
    reaper.Main_OnCommandEx(place.ACTION_DELETE_TAKE, 0, proj)
  end
  reaper.SetMediaItemSelected(item, false)
  for _, it in ipairs(selected) do reaper.SetMediaItemSelected(it, true) end
  if active and reaper.ValidatePtr2(proj, active, "MediaItem_Take*") then reaper.SetActiveTake(active) end
end

-- Takes back what insert_audio did (Discard in the preview), as one undo point. The files stay.
function place.remove_result(proj, inserted, before)
  undo_block(proj, "discard preview", function()
    if inserted.mode == "take" then
      place.remove_new_takes(proj, inserted.item, before.take_count, before.active)
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
    if name == place.ANSWERS_TRACK then return tr, false end
  end
  return new_track(proj, reaper.CountTracks(proj), place.ANSWERS_TRACK), true
end

-- A text answer kept with the project: an empty item spanning the selection on the project's one
-- "M2UGen answers" track, its notes holding the answer (REAPER draws item notes inside the item);
-- optionally a project marker or region named after the answer. One undo point.
-- opts: position, length, notes, label (marker name), marker = "off"|"marker"|"region", name (undo label)
function place.insert_note(proj, opts)
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

return place
