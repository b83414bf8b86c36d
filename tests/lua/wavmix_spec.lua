-- wavmix.lua: the per-track files of one render summed into one float WAV, whatever PCM/float format
-- REAPER wrote (16/24/32-bit PCM, 32-bit float, WAVE_FORMAT_EXTENSIBLE), shorter files as silence.
local HERE = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"
local env = dofile(HERE .. "helpers/env.lua")

local function write(path, code, tag, bits, samples, extensible)
  local data = string.pack("<" .. string.rep(code, #samples), table.unpack(samples))
  local fmt
  if extensible then
    fmt = string.pack("<I2I2I4I4I2I2I2I2I4", 0xFFFE, 1, 8000, 8000 * bits // 8, bits // 8, bits, 22, bits, 4) ..
      string.pack("<I2", tag) .. string.rep("\0", 14)
  else
    fmt = string.pack("<I2I2I4I4I2I2", tag, 1, 8000, 8000 * bits // 8, bits // 8, bits)
  end
  local f = assert(io.open(path, "wb"))
  f:write("RIFF", string.pack("<I4", 4 + 8 + #fmt + 8 + #data), "WAVE", "fmt ", string.pack("<I4", #fmt), fmt,
    "data", string.pack("<I4", #data), data)
  f:close()
end

local function read_floats(path)
  local f = assert(io.open(path, "rb"))
  local blob = f:read("a")
  f:close()
  local pos = blob:find("data", 13, true)
  local n = string.unpack("<I4", blob, pos + 4) // 4
  local out = table.pack(string.unpack("<" .. string.rep("f", n), blob, pos + 8))
  out[n + 1] = nil
  out.n = nil
  return out, string.unpack("<I2", blob, 21)
end

describe("wavmix", function()
  local ctx, wavmix
  before_each(function()
    ctx = env.setup()
    wavmix = dofile(env.SCRIPTS .. "m2ugen/lib.lua")("wavmix")
  end)
  after_each(function() env.teardown(ctx) end)

  it("sums 16-bit, 24-bit, float and extensible 32-bit PCM sample by sample; a shorter file is silence", function()
    local a, b, c, d = ctx.root .. "/a.wav", ctx.root .. "/b.wav", ctx.root .. "/c.wav", ctx.root .. "/d.wav"
    write(a, "i2", 1, 16, { 16384, -16384, 8192 })
    write(b, "i3", 1, 24, { 4194304, 0, 0 })
    write(c, "f", 3, 32, { 0.25, 0.25 })
    write(d, "i4", 1, 32, { 0, 1073741824, 0 }, true)
    local out = ctx.root .. "/mix.wav"
    wavmix.BLOCK = 2 -- several blocks
    wavmix.mix({ a, b, c, d }, out)
    local s, tag = read_floats(out)
    assert.are.equal(3, tag)
    assert.are.same({ 0.5 + 0.5 + 0.25, -0.5 + 0.25 + 0.5, 0.25 }, s)
  end)

  it("refuses files of different rates or channel counts", function()
    local a, b = ctx.root .. "/a.wav", ctx.root .. "/b.wav"
    write(a, "i2", 1, 16, { 1 })
    local f = assert(io.open(b, "wb"))
    f:write("RIFF", string.pack("<I4", 38), "WAVE", "fmt ", string.pack("<I4I2I2I4I4I2I2", 16, 1, 2, 8000, 32000, 4, 16),
      "data", string.pack("<I4", 4), string.pack("<i2i2", 1, 1))
    f:close()
    assert.has_error(function() wavmix.mix({ a, b }, ctx.root .. "/m.wav") end)
  end)
end)
