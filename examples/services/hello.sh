#!/usr/bin/env bash
# Greets the "name" parameter: Hook_params_name is set by the prelude.
echo "Hello, ${Hook_params_name:-world}!"
