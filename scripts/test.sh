#!/usr/bin/env bash
# Runs the whole test suite against real interpreters, bubblewrap and servers.
# Extra arguments go to pytest (e.g. scripts/test.sh -k http -x).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
