-- @noindex
-- Sums WAV files of one render into one (pure Lua, no REAPER calls). REAPER's "selected tracks via
-- master" writes one file per selected track (RENDER_TARGETS lists them all); the model must hear
-- them together, as they play together. The sum of the per-track files through the master equals the
-- master's output of those tracks for every linear master chain (faders, EQ, reverb sends); a
-- compressor/limiter on the master is the one difference, and is named in the README.
--
--   wavmix.read_header(path)            -> {tag, channels, rate, bits, data_pos, data_size} or error
--   wavmix.mix(paths, out)              writes the sample-by-sample sum as 32-bit float WAV (no clipping)
-- Inputs: PCM 16/24/32-bit or IEEE float 32/64-bit (WAVE_FORMAT_EXTENSIBLE too), same rate and
-- channel count (one render: always). A shorter file counts as silence after its end.

local wavmix = {}

wavmix.BLOCK = 4096 -- samples per unpack/pack

local FORMATS = {
  [1] = { [16] = "i2", [24] = "i3", [32] = "i4" },
  [3] = { [32] = "f", [64] = "d" },
}
local SCALE = { i2 = 1 / 32768, i3 = 1 / 8388608, i4 = 1 / 2147483648, f = 1, d = 1 }

function wavmix.read_header(path)
  local f, err = io.open(path, "rb")
  if not f then error("Cannot read " .. path .. ": " .. tostring(err), 0) end
  local head = f:read(12)
  if not head or #head < 12 or head:sub(1, 4) ~= "RIFF" or head:sub(9, 12) ~= "WAVE" then
    f:close()
    error("Not a WAV file: " .. path, 0)
  end
  local h = nil
  while true do
    local ck = f:read(8)
    if not ck or #ck < 8 then break end
    local id, size = ck:sub(1, 4), string.unpack("<I4", ck, 5)
    if id == "fmt " then
      local body = f:read(size + (size % 2))
      local tag, ch, rate, _, _, bits = string.unpack("<I2I2I4I4I2I2", body)
      if tag == 0xFFFE and #body >= 26 then tag = string.unpack("<I2", body, 25) end -- the SubFormat GUID's first 2 bytes
      h = { tag = tag, channels = ch, rate = rate, bits = bits }
    elseif id == "data" then
      if not h then break end
      h.data_pos = f:seek()
      -- a render still being written may say 0 / 0xFFFFFFFF: take what is in the file
      local size_left = f:seek("end") - h.data_pos
      h.data_size = (size == 0 or size > size_left) and size_left or size
      f:close()
      h.code = FORMATS[h.tag] and FORMATS[h.tag][h.bits]
      if not h.code then error(string.format("%s: unsupported WAV format %d / %d bits", path, h.tag, h.bits), 0) end
      return h
    else
      f:seek("cur", size + (size % 2))
    end
  end
  f:close()
  error("No audio data in " .. path, 0)
end

local function float_header(channels, rate, data_bytes)
  return "RIFF" .. string.pack("<I4", 4 + 26 + 8 + data_bytes) .. "WAVE" ..
    "fmt " .. string.pack("<I4I2I2I4I4I2I2I2", 18, 3, channels, rate, rate * channels * 4, channels * 4, 32, 0) ..
    "data" .. string.pack("<I4", data_bytes)
end

function wavmix.mix(paths, out)
  local inputs = {}
  local channels, rate, longest = nil, nil, 0
  for i, p in ipairs(paths) do
    local h = wavmix.read_header(p)
    if channels and (h.channels ~= channels or h.rate ~= rate) then
      error("The rendered files differ in channels or sample rate: " .. paths[1] .. ", " .. p, 0)
    end
    channels, rate = h.channels, h.rate
    local width = h.bits // 8
    h.samples = h.data_size // width
    h.width, h.scale = width, SCALE[h.code]
    h.file = assert(io.open(p, "rb"))
    h.file:seek("set", h.data_pos)
    h.left = h.samples
    inputs[i] = h
    longest = math.max(longest, h.samples)
  end
  local dst, err = io.open(out, "wb")
  if not dst then error("Cannot write " .. out .. ": " .. tostring(err), 0) end
  local function close_all()
    for _, h in ipairs(inputs) do h.file:close() end
  end
  local ok, werr = dst:write(float_header(channels, rate, longest * 4))
  local done = 0
  while ok and done < longest do
    local n = math.min(wavmix.BLOCK, longest - done)
    local sum = {}
    for k = 1, n do sum[k] = 0.0 end
    for _, h in ipairs(inputs) do
      local m = math.min(n, h.left)
      if m > 0 then
        local bytes = h.file:read(m * h.width)
        local vals = table.pack(string.unpack("<" .. string.rep(h.code, m), bytes))
        local scale = h.scale
        for k = 1, m do sum[k] = sum[k] + vals[k] * scale end
        h.left = h.left - m
      end
    end
    ok, werr = dst:write(string.pack("<" .. string.rep("f", n), table.unpack(sum, 1, n)))
    done = done + n
  end
  close_all()
  local closed, cerr = dst:close()
  if not ok or not closed then
    os.remove(out)
    error("Cannot write " .. out .. ": " .. tostring(werr or cerr), 0)
  end
  return out
end

return wavmix
