-- @noindex
-- Windows drawn from the defer loop: a progress window (queue position, stage, streamed text, Cancel)
-- and a text window for answers. ReaImGui when installed (every ImGui call sits inside an
-- APIExists guard), a plain gfx window otherwise. frame() never blocks.
--   local w = ui.progress_window("M2UGen - Generate")
--   w:frame(view) -> "open" | "cancel" | "closed"     view = {status_line, fraction, text}
--   w:close()
--   local t = ui.text_window(title, text); t:frame() -> "open" | "closed"
--   local p = ui.preview_window(title, text)
--   p:frame(view) -> "open" | "closed" | "accept" | "regenerate" | "discard" | "play" | "stop" | "take<N>"
--                   view = {text, can_play, playing, takes}; keys in the gfx window: a, r, d, space,
--                   1-9 (audition take N); "closed" = Esc or the close box (the caller asks, it is no Accept)

local ui = {}

local backends = {}

-- ---------------------------------------------------------------------------------------------
-- ReaImGui

if reaper.APIExists("ImGui_CreateContext") then
  backends.imgui = {}

  function backends.imgui.progress(title)
    local w = { ctx = reaper.ImGui_CreateContext(title), title = title, closed = false }
    function w:frame(view)
      if self.closed then return "closed" end
      local result = "open"
      reaper.ImGui_SetNextWindowSize(self.ctx, 460, 220, reaper.ImGui_Cond_FirstUseEver())
      local visible, open = reaper.ImGui_Begin(self.ctx, self.title, true)
      if visible then
        reaper.ImGui_Text(self.ctx, view.status_line or "")
        reaper.ImGui_ProgressBar(self.ctx, view.fraction or 0)
        if view.text and view.text ~= "" then reaper.ImGui_TextWrapped(self.ctx, view.text) end
        if reaper.ImGui_Button(self.ctx, "Cancel job") then result = "cancel" end
        reaper.ImGui_End(self.ctx)
      end
      if open == false then self.closed = true return "closed" end
      return result
    end
    function w:close() self.closed = true end
    return w
  end

  function backends.imgui.text(title, text)
    local w = { ctx = reaper.ImGui_CreateContext(title), title = title, text = text, closed = false }
    function w:frame()
      if self.closed then return "closed" end
      reaper.ImGui_SetNextWindowSize(self.ctx, 520, 320, reaper.ImGui_Cond_FirstUseEver())
      local visible, open = reaper.ImGui_Begin(self.ctx, self.title, true)
      if visible then
        reaper.ImGui_TextWrapped(self.ctx, self.text)
        if reaper.ImGui_Button(self.ctx, "Close") then open = false end
        reaper.ImGui_End(self.ctx)
      end
      if open == false then self.closed = true return "closed" end
      return "open"
    end
    function w:close() self.closed = true end
    return w
  end

  function backends.imgui.preview(title, text)
    local w = { ctx = reaper.ImGui_CreateContext(title), title = title, text = text, closed = false }
    function w:frame(view)
      if self.closed then return "closed" end
      local result = "open"
      reaper.ImGui_SetNextWindowSize(self.ctx, 520, 320, reaper.ImGui_Cond_FirstUseEver())
      local visible, open = reaper.ImGui_Begin(self.ctx, self.title, true)
      if visible then
        reaper.ImGui_TextWrapped(self.ctx, view.text or self.text)
        if view.can_play then
          if reaper.ImGui_Button(self.ctx, view.playing and "Stop" or "Play") then
            result = view.playing and "stop" or "play"
          end
          for n = 1, (view.takes or 1) > 1 and math.min(view.takes, 9) or 0 do
            if reaper.ImGui_Button(self.ctx, "Take " .. n) then result = "take" .. n end
          end
        end
        if reaper.ImGui_Button(self.ctx, "Accept") then result = "accept" end
        if reaper.ImGui_Button(self.ctx, "Regenerate") then result = "regenerate" end
        if reaper.ImGui_Button(self.ctx, "Discard") then result = "discard" end
        reaper.ImGui_End(self.ctx)
      end
      if open == false then self.closed = true return "closed" end
      return result
    end
    function w:close() self.closed = true end
    return w
  end
end

-- ---------------------------------------------------------------------------------------------
-- gfx fallback (one gfx window per script)

local function wrap(text, width)
  local lines = {}
  for para in (text .. "\n"):gmatch("(.-)\n") do
    local line = ""
    for word in para:gmatch("%S+") do
      local candidate = line == "" and word or (line .. " " .. word)
      if line ~= "" and gfx.measurestr(candidate) > width then
        lines[#lines + 1] = line
        line = word
      else
        line = candidate
      end
    end
    lines[#lines + 1] = line
  end
  return lines
end

local function draw_lines(lines, x, y, bottom)
  local lh = gfx.texth + 2
  for _, l in ipairs(lines) do
    if y + lh > bottom then break end
    gfx.x, gfx.y = x, y
    gfx.drawstr(l)
    y = y + lh
  end
  return y
end

backends.gfx = {}

function backends.gfx.progress(title)
  local w = { closed = false, was_down = false }
  gfx.init(title, 460, 220)
  gfx.setfont(1, "Arial", 15)
  function w:frame(view)
    if self.closed then return "closed" end
    local c = gfx.getchar()
    if c < 0 or c == 27 then self:close() return "closed" end
    gfx.set(0.14, 0.14, 0.14, 1)
    gfx.rect(0, 0, gfx.w, gfx.h, 1)
    gfx.set(0.9, 0.9, 0.9, 1)
    gfx.x, gfx.y = 12, 10
    gfx.drawstr(view.status_line or "")
    local bar_w = math.max(gfx.w - 24, 10)
    gfx.set(0.3, 0.3, 0.3, 1)
    gfx.rect(12, 34, bar_w, 14, 1)
    gfx.set(0.35, 0.7, 0.4, 1)
    gfx.rect(12, 34, math.floor(bar_w * math.max(0, math.min(1, view.fraction or 0))), 14, 1)
    gfx.set(0.9, 0.9, 0.9, 1)
    local bx, by, bw, bh = 12, gfx.h - 34, 110, 24
    draw_lines(wrap(view.text or "", bar_w), 12, 56, by - 6)
    gfx.set(0.5, 0.25, 0.25, 1)
    gfx.rect(bx, by, bw, bh, 1)
    gfx.set(1, 1, 1, 1)
    gfx.x, gfx.y = bx + 14, by + 4
    gfx.drawstr("Cancel job")
    local down = (gfx.mouse_cap & 1) == 1
    local inside = gfx.mouse_x >= bx and gfx.mouse_x <= bx + bw and gfx.mouse_y >= by and gfx.mouse_y <= by + bh
    local clicked = self.was_down and not down and inside
    self.was_down = down
    gfx.update()
    return clicked and "cancel" or "open"
  end
  function w:close()
    if not self.closed then self.closed = true gfx.quit() end
  end
  return w
end

function backends.gfx.text(title, text)
  local w = { closed = false }
  gfx.init(title, 520, 320)
  gfx.setfont(1, "Arial", 15)
  function w:frame()
    if self.closed then return "closed" end
    local c = gfx.getchar()
    if c < 0 or c == 27 then self:close() return "closed" end
    gfx.set(0.14, 0.14, 0.14, 1)
    gfx.rect(0, 0, gfx.w, gfx.h, 1)
    gfx.set(0.92, 0.92, 0.92, 1)
    draw_lines(wrap(text, math.max(gfx.w - 24, 10)), 12, 10, gfx.h - 8)
    gfx.update()
    return "open"
  end
  function w:close()
    if not self.closed then self.closed = true gfx.quit() end
  end
  return w
end

-- Buttons along the bottom of a gfx window: {label, action}; returns the clicked action or nil.
local function gfx_buttons(w, buttons)
  local x, by, bh = 12, gfx.h - 34, 24
  local down = (gfx.mouse_cap & 1) == 1
  local hit = nil
  for _, b in ipairs(buttons) do
    local bw = 110
    gfx.set(0.3, 0.3, 0.35, 1)
    gfx.rect(x, by, bw, bh, 1)
    gfx.set(1, 1, 1, 1)
    gfx.x, gfx.y = x + 14, by + 4
    gfx.drawstr(b[1])
    local inside = gfx.mouse_x >= x and gfx.mouse_x <= x + bw and gfx.mouse_y >= by and gfx.mouse_y <= by + bh
    if w.was_down and not down and inside then hit = b[2] end
    x = x + bw + 8
  end
  w.was_down = down
  return hit
end

backends.gfx.KEYS = { [string.byte("a")] = "accept", [string.byte("r")] = "regenerate",
                      [string.byte("d")] = "discard", [string.byte(" ")] = "toggle" }

function backends.gfx.preview(title, text)
  local w = { closed = false, was_down = false }
  gfx.init(title, 520, 320)
  gfx.setfont(1, "Arial", 15)
  function w:frame(view)
    if self.closed then return "closed" end
    local c = gfx.getchar()
    if c < 0 or c == 27 then self:close() return "closed" end
    gfx.set(0.14, 0.14, 0.14, 1)
    gfx.rect(0, 0, gfx.w, gfx.h, 1)
    gfx.set(0.92, 0.92, 0.92, 1)
    draw_lines(wrap(view.text or text, math.max(gfx.w - 24, 10)), 12, 10, gfx.h - 44)
    local buttons = { { "Accept (a)", "accept" }, { "Regenerate (r)", "regenerate" }, { "Discard (d)", "discard" } }
    if view.can_play then
      buttons[#buttons + 1] = view.playing and { "Stop (space)", "stop" } or { "Play (space)", "play" }
    end
    local hit = gfx_buttons(self, buttons)
    gfx.update()
    if c >= 49 and c <= 57 then return "take" .. (c - 48) end -- keys 1-9: audition that take
    local key = backends.gfx.KEYS[c]
    if key == "toggle" then
      if not view.can_play then return "open" end
      return view.playing and "stop" or "play"
    end
    return hit or key or "open"
  end
  function w:close()
    if not self.closed then self.closed = true gfx.quit() end
  end
  return w
end

local function backend()
  return backends.imgui or backends.gfx
end

function ui.progress_window(title) return backend().progress(title) end
function ui.text_window(title, text) return backend().text(title, text) end
function ui.preview_window(title, text) return backend().preview(title, text) end
function ui.uses_imgui() return backends.imgui ~= nil end

-- "Queued (position 2)", "Running: generating 45%", ... from a status table (protocol §7).
function ui.status_line(st)
  if not st then return "Starting the M2UGen CLI..." end
  local s = st.state or "starting"
  if s == "starting" then return "Connecting to the M2UGen server..." end
  if s == "queued" then
    return "Queued" .. (st.queue_position and (" (position " .. math.floor(st.queue_position) .. ")") or "")
  end
  if s == "running" then
    local pct = st.fraction and string.format(" %d%%", math.floor(st.fraction * 100 + 0.5)) or ""
    return "Running: " .. (st.stage or "working") .. pct
  end
  return s:sub(1, 1):upper() .. s:sub(2)
end

return ui
