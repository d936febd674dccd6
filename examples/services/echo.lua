-- Prints each parameter as name=value, one a line, sorted.
local names = {}
for name in pairs(Hook.params) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do print(name .. "=" .. Hook.params[name]) end
