print("Hello, " .. (Hook.params.name or "world") .. "!")
