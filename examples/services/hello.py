# ruff: noqa: F821 (Hook is a global the stack prelude defines)
print(f"Hello, {Hook['params'].get('name', 'world')}!")
