-- @noindex
-- Minimal JSON for the M2UGen ReaScripts (pure Lua 5.3/5.4, no REAPER calls).
--   json.encode(value) -> string     objects get sorted keys, so output is deterministic
--   json.decode(text)  -> value      \uXXXX escapes (and surrogate pairs) become UTF-8
--   json.null                       stands for JSON null in both directions
--   json.array(t)                   marks a (possibly empty) table as an array
-- Errors are raised with a message that names the position in the text.

local json = {}

json.null = setmetatable({}, { __tostring = function() return "null" end })

local ARRAY_MARK = {}

function json.array(t)
  t = t or {}
  return setmetatable(t, { __index = { [ARRAY_MARK] = true } })
end

-- ---------------------------------------------------------------------------------------------
-- encode

local ESCAPES = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

local function encode_string(s)
  -- bytes >= 0x80 pass through (UTF-8); control characters become \u00XX
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function encode_number(n)
  if n ~= n or n == math.huge or n == -math.huge then
    error("json.encode: cannot encode " .. tostring(n) .. " (NaN/infinity)", 0)
  end
  if math.type(n) == "integer" then
    return string.format("%d", n)
  end
  if n == math.floor(n) and math.abs(n) < 2^53 then
    return string.format("%d", math.floor(n)) .. ".0"
  end
  return string.format("%.17g", n)
end

-- Returns n when t is a sequence 1..n (n may be 0 only for tables marked by json.array).
local function array_length(t)
  if rawget(t, 1) == nil and next(t) == nil then
    return t[ARRAY_MARK] and 0 or nil
  end
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 then return nil end
    if k > n then n = k end
  end
  for i = 1, n do
    if t[i] == nil then return nil end
  end
  return n
end

local encode_value

local function encode_table(t, depth, seen)
  if seen[t] then error("json.encode: table contains a cycle", 0) end
  if depth > 100 then error("json.encode: nesting deeper than 100", 0) end
  seen[t] = true
  local out = {}
  local n = array_length(t)
  if n then
    for i = 1, n do out[i] = encode_value(t[i], depth + 1, seen) end
    seen[t] = nil
    return "[" .. table.concat(out, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then
      error("json.encode: object key " .. tostring(k) .. " is not a string", 0)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for i, k in ipairs(keys) do
    out[i] = encode_string(k) .. ":" .. encode_value(t[k], depth + 1, seen)
  end
  seen[t] = nil
  return "{" .. table.concat(out, ",") .. "}"
end

encode_value = function(v, depth, seen)
  local tv = type(v)
  if v == nil or v == json.null then return "null" end
  if tv == "boolean" then return v and "true" or "false" end
  if tv == "number" then return encode_number(v) end
  if tv == "string" then return encode_string(v) end
  if tv == "table" then return encode_table(v, depth, seen) end
  error("json.encode: cannot encode a " .. tv, 0)
end

function json.encode(v)
  return encode_value(v, 0, {})
end

-- ---------------------------------------------------------------------------------------------
-- decode

local function decode_error(text, pos, what)
  local line, col = 1, 1
  for i = 1, math.min(pos - 1, #text) do
    if text:sub(i, i) == "\n" then line, col = line + 1, 1 else col = col + 1 end
  end
  error(string.format("json.decode: %s at line %d column %d", what, line, col), 0)
end

local function skip_ws(text, pos)
  return text:find("[^ \t\r\n]", pos) or (#text + 1)
end

local function utf8_char(cp)
  return utf8.char(cp)
end

local decode_value

local function decode_string(text, pos)
  -- pos is at the opening quote
  local out = {}
  local i = pos + 1
  while true do
    local j = text:find('["\\%c]', i)
    if not j then decode_error(text, pos, "unterminated string") end
    out[#out + 1] = text:sub(i, j - 1)
    local c = text:sub(j, j)
    if c == '"' then
      return table.concat(out), j + 1
    elseif c == "\\" then
      local e = text:sub(j + 1, j + 1)
      local simple = ({ ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
                        n = "\n", r = "\r", t = "\t" })[e]
      if simple then
        out[#out + 1] = simple
        i = j + 2
      elseif e == "u" then
        local hex = text:match("^%x%x%x%x", j + 2)
        if not hex then decode_error(text, j, "bad \\u escape") end
        local cp = tonumber(hex, 16)
        i = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local low = text:match("^\\u(%x%x%x%x)", i)
          local lo = low and tonumber(low, 16)
          if not lo or lo < 0xDC00 or lo > 0xDFFF then
            decode_error(text, j, "lone high surrogate in \\u escape")
          end
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          i = i + 6
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          decode_error(text, j, "lone low surrogate in \\u escape")
        end
        out[#out + 1] = utf8_char(cp)
      else
        decode_error(text, j, "bad escape \\" .. e)
      end
    else
      decode_error(text, j, "control character in string")
    end
  end
end

local function decode_number(text, pos)
  local s = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if not s or s == "" or s == "-" then decode_error(text, pos, "bad number") end
  if s:match("^-?0%d") then decode_error(text, pos, "number with a leading zero") end
  local n
  if s:find("[.eE]") then n = tonumber(s) else n = math.tointeger(tonumber(s)) or tonumber(s) end
  if not n then decode_error(text, pos, "bad number '" .. s .. "'") end
  return n, pos + #s
end

local function decode_array(text, pos, depth)
  local out = json.array({})
  local n = 0
  pos = skip_ws(text, pos + 1)
  if text:sub(pos, pos) == "]" then return out, pos + 1 end
  while true do
    local v
    v, pos = decode_value(text, pos, depth + 1)
    n = n + 1
    out[n] = v
    pos = skip_ws(text, pos)
    local c = text:sub(pos, pos)
    if c == "]" then return out, pos + 1 end
    if c ~= "," then decode_error(text, pos, "expected ',' or ']'") end
    pos = skip_ws(text, pos + 1)
  end
end

local function decode_object(text, pos, depth)
  local out = {}
  pos = skip_ws(text, pos + 1)
  if text:sub(pos, pos) == "}" then return out, pos + 1 end
  while true do
    if text:sub(pos, pos) ~= '"' then decode_error(text, pos, "expected a string key") end
    local k
    k, pos = decode_string(text, pos)
    pos = skip_ws(text, pos)
    if text:sub(pos, pos) ~= ":" then decode_error(text, pos, "expected ':'") end
    local v
    v, pos = decode_value(text, skip_ws(text, pos + 1), depth + 1)
    out[k] = v
    pos = skip_ws(text, pos)
    local c = text:sub(pos, pos)
    if c == "}" then return out, pos + 1 end
    if c ~= "," then decode_error(text, pos, "expected ',' or '}'") end
    pos = skip_ws(text, pos + 1)
  end
end

decode_value = function(text, pos, depth)
  if depth > 200 then decode_error(text, pos, "nesting deeper than 200") end
  pos = skip_ws(text, pos)
  local c = text:sub(pos, pos)
  if c == "{" then return decode_object(text, pos, depth) end
  if c == "[" then return decode_array(text, pos, depth) end
  if c == '"' then return decode_string(text, pos) end
  if c == "-" or c:match("%d") then return decode_number(text, pos) end
  if text:sub(pos, pos + 3) == "true" then return true, pos + 4 end
  if text:sub(pos, pos + 4) == "false" then return false, pos + 5 end
  if text:sub(pos, pos + 3) == "null" then return json.null, pos + 4 end
  if c == "" then decode_error(text, pos, "unexpected end of text") end
  decode_error(text, pos, "unexpected character '" .. c .. "'")
end

function json.decode(text)
  if type(text) ~= "string" then
    error("json.decode: expected a string, got " .. type(text), 0)
  end
  local v, pos = decode_value(text, 1, 0)
  pos = skip_ws(text, pos)
  if pos <= #text then decode_error(text, pos, "trailing characters") end
  return v
end

-- Like decode but returns nil, message instead of raising.
function json.try_decode(text)
  local ok, v = pcall(json.decode, text)
  if ok then return v end
  return nil, v
end

return json
