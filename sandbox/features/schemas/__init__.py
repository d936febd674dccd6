"""Data package: files read with importlib.resources, no code."""
