# ruff: noqa: F821 (Hook is a global the stack prelude defines)
# The script's folder is first on sys.path, as when python3 runs it.
from greeting import greeting

print(greeting(Hook["params"].get("name", "world")))
