"""Data package: each language's prelude, run before the script; no code."""
