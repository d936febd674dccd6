-- stack prelude for Lua: lua5.4 lua.lua SCRIPT [ARGS...]
--
-- Reads $STACK_HOOK_FLAT (name\0value\0 pairs) into globals (Hook_params_name,
-- ...) and the table Hook = {params = {name = ...}, req = {...}, env = {...}}
-- of strings (keys without the prefix), never through load. Defines
-- stack_status and stack_header (fd 3 control messages), then runs SCRIPT
-- with arg and ... describing it, and package.path and package.cpath
-- looking in SCRIPT's folder where they looked in "./".
--
-- Lua cannot adopt an inherited descriptor, so fd 3 is reopened through
-- /dev/fd/3: that needs /dev/fd and a pipe or file (not a socket) at fd 3.

-- Before anything else opens a file: without an inherited fd 3 (a script run
-- by hand) control messages are dropped.
local control = io.open("/dev/fd/3", "a")
if control then control:setvbuf("full") end

io.stdout:setvbuf("no")

Hook = { params = {}, req = {}, env = {} }
local flat = os.getenv("STACK_HOOK_FLAT")
if flat and flat ~= "" then
  local file = assert(io.open(flat, "rb"))
  local data = file:read("a")
  file:close()
  for name, value in data:gmatch("([^\0]*)\0([^\0]*)\0") do
    -- Only Hook_* names: a crafted name cannot replace a library table.
    if name:match("^Hook_[%w_]*$") then
      _G[name] = value
      local section, key = name:match("^Hook_(%l+)_(.+)$")
      if Hook[section] then Hook[section][key] = value end
    end
  end
end

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function json_string(s)
  return '"' .. (tostring(s):gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end)) .. '"'
end

local function send(line)
  if not control then return end
  io.stdout:flush() -- control and body stay in program order
  if not (control:write(line, "\n") and control:flush()) then
    control:close()
    control = nil
  end
end

-- stack_status(code): set the response status.
function stack_status(code)
  local digits = tostring(code):match("^0*(%d+)$")
  if not digits then error("stack_status: not a status code: " .. tostring(code), 2) end
  send('{"type":"statusCode","payload":{"value":' .. digits .. "}}")
end

-- stack_header(name, value): set a response header; value may be a list.
function stack_header(name, value)
  if type(value) == "table" then
    local items = {}
    for i, v in ipairs(value) do items[i] = json_string(v) end
    value = "[" .. table.concat(items, ",") .. "]"
  else
    value = json_string(value)
  end
  send(string.format('{"type":"setHeader","payload":{"name":%s,"value":%s}}', json_string(name), value))
end

local script = arg[1]
if not script then
  io.stderr:write("usage: lua5.4 lua.lua SCRIPT [ARGS...]\n")
  os.exit(2)
end
local script_arg = { [0] = script }
for i = -1, -math.huge, -1 do
  if arg[i] == nil then break end
  script_arg[i] = arg[i]
end
for i = 2, #arg do script_arg[i - 1] = arg[i] end
arg = script_arg

-- The script's folder is its code: require finds the modules beside it
-- where plain lua, run from there, finds them through "./" (after the
-- system's), though the working directory is the call's own.
local folder = script:match("^(.*)/[^/]*$") or "."
local function beside(path)
  return ((";" .. path):gsub(";%./", function() return ";" .. folder .. "/" end):sub(2))
end
package.path = beside(package.path)
package.cpath = beside(package.cpath)

local chunk, err = loadfile(script)
if not chunk then
  io.stderr:write("lua: ", err, "\n")
  os.exit(1)
end
return chunk(table.unpack(arg, 1, #arg))
