# ruff: noqa: F821 (Hook is a global the stack prelude defines)
Hook["res"].json(Hook["params"])
