#!/bin/bash
# An Exo handler: the whole request JSON on stdin ({"action", "input": {...}}),
# the whole response JSON on stdout; settings from EXO__* variables.
request=$(cat /dev/stdin)
greeting=$(jq -r '.input.greeting' <<<"$request")
name=$(jq -r '.input.name' <<<"$request")
mood=${EXO__EXAMPLE__MOOD:-calm}
echo "greeting $name" >&2
jq -cn --arg text "$greeting, $name ($mood)" '{status: "OK", output: {text: $text}}'
