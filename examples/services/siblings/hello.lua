-- require looks in the script's folder, as plain lua run from there does.
local greeting = require("greeting")

print(greeting(Hook.params.name or "world"))
