-- busted --lua=lua5.4 tests/lua
local REPO = (debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or "./"):gsub("tests/lua/$", "")
local json = dofile(REPO .. "reaper_scripts/m2ugen/json.lua")

describe("json", function()
  it("encodes objects with sorted keys, arrays, floats and escapes", function()
    local s = json.encode({ b = { 1, 2.5, "x" }, a = true, c = json.null, d = json.array(), e = 3.0 })
    assert.are.equal('{"a":true,"b":[1,2.5,"x"],"c":null,"d":[],"e":3.0}', s)
    assert.are.equal('"q\\"b\\\\n\\nt\\tc\\u0001"', json.encode('q"b\\n\nt\tc\1'))
  end)

  it("keeps UTF-8 as is and round-trips nasty strings", function()
    local nasty = "é日本🎵 '$(rm -rf)' `x` \"q\" \\ %PATH% \r\n"
    assert.are.equal(nasty, json.decode(json.encode(nasty)))
    assert.are.equal('"é"', json.encode("é"))
  end)

  it("decodes unicode escapes including surrogate pairs", function()
    assert.are.equal("é", json.decode('"\\u00e9"'))
    assert.are.equal("日", json.decode('"\\u65e5"'))
    assert.are.equal("🎵", json.decode('"\\ud83c\\udfb5"'))
    assert.are.equal("a/b", json.decode('"a\\/b"'))
  end)

  it("decodes numbers, literals and nesting", function()
    local v = json.decode(' {"a": [1, -2.5e1, 0, 1E2], "b": {"c": null, "d": false}, "e": true} ')
    assert.are.equal(1, v.a[1])
    assert.are.equal("integer", math.type(v.a[1]))
    assert.are.equal(-25.0, v.a[2])
    assert.are.equal(100.0, v.a[4])
    assert.are.equal(json.null, v.b.c)
    assert.is_false(v.b.d)
    assert.is_true(v.e)
  end)

  it("rejects bad JSON with a message naming the place", function()
    local cases = {
      ['{"a":1,}'] = "expected a string key",
      ['[1,2'] = "expected ',' or ']'",
      ['"abc'] = "unterminated string",
      ['{"a":01}'] = "leading zero",
      ['"\\ud83c"'] = "lone high surrogate",
      ['"\\x"'] = "bad escape",
      ['[1] x'] = "trailing characters",
      [''] = "unexpected end",
      ['"a\nb"'] = "control character",
    }
    for text, want in pairs(cases) do
      local ok, err = pcall(json.decode, text)
      assert.is_false(ok, text)
      assert.truthy(err:find(want, 1, true), text .. " -> " .. tostring(err))
      assert.truthy(err:find("line %d+ column %d+"), err)
    end
  end)

  it("refuses values JSON cannot carry", function()
    assert.has_error(function() json.encode(0 / 0) end)
    assert.has_error(function() json.encode(math.huge) end)
    assert.has_error(function() json.encode({ [true] = 1 }) end)
    local t = {}
    t.self = t
    assert.has_error(function() json.encode(t) end)
    assert.has_error(function() json.encode(print) end)
  end)

  it("try_decode returns nil and the message instead of raising", function()
    local v, err = json.try_decode("{")
    assert.is_nil(v)
    assert.truthy(err:find("json.decode"))
  end)
end)
