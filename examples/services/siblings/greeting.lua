-- A module of hello.lua.
return function(name)
  return "Hello, " .. name .. "! (greeting.lua)"
end
