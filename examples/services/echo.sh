#!/usr/bin/env bash
# Prints each parameter as name=value, one a line (nested values flattened:
# tags_0=a). Names are the flattened Hook_params_* variable names.
for var in ${!Hook_params_@}; do
    printf '%s=%s\n' "${var#Hook_params_}" "${!var}"
done
