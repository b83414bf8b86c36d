-- Tiny WAV writer/reader for the tests (16-bit PCM), with string.pack.
local wav = {}

wav.AMPLITUDE = 3000 -- the peak of wav.write's sine at gain 1

-- Writes `seconds` of a quiet sine (peak wav.AMPLITUDE * gain, clipped to 16 bits) to `path`;
-- returns the number of frames written.
function wav.write(path, seconds, rate, channels, gain)
  rate = math.floor(rate or 48000)
  channels = math.floor(channels or 1)
  local amp = math.min(32767, wav.AMPLITUDE * (gain or 1))
  local frames = math.floor(seconds * rate + 0.5)
  local data = {}
  for i = 0, frames - 1 do
    local v = math.floor(amp * math.sin(2 * math.pi * 440 * i / rate) + 0.5)
    local s = string.pack("<i2", v)
    data[#data + 1] = s:rep(channels)
  end
  local body = table.concat(data)
  local f = assert(io.open(path, "wb"))
  f:write("RIFF", string.pack("<I4", 36 + #body), "WAVE")
  f:write("fmt ", string.pack("<I4I2I2I4I4I2I2", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16))
  f:write("data", string.pack("<I4", #body), body)
  f:close()
  return frames
end

-- Returns {rate, channels, bits, frames, seconds} or nil, message.
function wav.info(path)
  local f = io.open(path, "rb")
  if not f then return nil, "no file " .. path end
  local blob = f:read("a")
  f:close()
  if blob:sub(1, 4) ~= "RIFF" or blob:sub(9, 12) ~= "WAVE" then return nil, "not a WAV: " .. path end
  local pos, fmt = 13, nil
  while pos + 8 <= #blob do
    local id = blob:sub(pos, pos + 3)
    local size = string.unpack("<I4", blob, pos + 4)
    if id == "fmt " then
      local tag, ch, rate, _, _, bits = string.unpack("<I2I2I4I4I2I2", blob, pos + 8)
      fmt = { tag = tag, channels = ch, rate = rate, bits = bits }
    elseif id == "data" and fmt then
      local bytes_per_frame = fmt.channels * fmt.bits // 8
      local data_size = math.min(size, #blob - pos - 7)
      fmt.frames = data_size // bytes_per_frame
      fmt.seconds = fmt.frames / fmt.rate
      return fmt
    end
    pos = pos + 8 + size + (size % 2)
  end
  return nil, "no data chunk in " .. path
end

-- The peak of a WAV (16/24-bit PCM or 32-bit float) as a gain relative to wav.AMPLITUDE / 32768 (what
-- the fake's level checks use).
function wav.gain(path)
  local info = assert(wav.info(path))
  local f = assert(io.open(path, "rb"))
  local blob = f:read("a")
  f:close()
  local pos = assert(blob:find("data", 13, true), "no data chunk in " .. path)
  local size = string.unpack("<I4", blob, pos + 4)
  local fmt, width, scale
  if info.tag == 3 then fmt, width, scale = "<f", 4, 32768
  elseif info.bits == 24 then fmt, width, scale = "<i3", 3, 1 / 256
  else fmt, width, scale = "<i2", 2, 1 end
  local peak = 0
  local i, stop = pos + 8, math.min(pos + 7 + size, #blob) - width + 1
  while i <= stop do
    local v = math.abs(string.unpack(fmt, blob, i)) * scale
    if v > peak then peak = v end
    i = i + width
  end
  return peak / wav.AMPLITUDE
end

return wav
