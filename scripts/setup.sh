#!/usr/bin/env bash
# Sets up stack on a fresh Debian/Ubuntu machine: the interpreters and
# compilers of the registry, bubblewrap, a C compiler (also for the process
# launcher), a virtualenv in .venv with stack and its test tools. Safe to run
# again: it only installs what is missing.
#
#   scripts/setup.sh                  # everything
#   SKIP_APT=1 scripts/setup.sh       # only the virtualenv (no root needed)
#   STACK_SETUP=runtime scripts/setup.sh  # only what running stack needs (the Containerfile)
set -euo pipefail
cd "$(dirname "$0")/.."

# What running stack needs: every interpreter and compiler of languages/,
# bubblewrap, a C compiler for the launcher, jq for the bash example actions.
RUNTIME=(
  bash dash perl tcl ruby php-cli lua5.4 nodejs python3 python3-venv
  gcc g++ libc6-dev rustc golang-go default-jdk-headless
  bubblewrap util-linux procps ca-certificates jq musl-tools
)
# What the tests and benchmarks need besides: peers and real brokers.
TESTING=(lighttpd wrk redis-server redis-tools mosquitto nats-server postgresql)
PACKAGES=("${RUNTIME[@]}")
if [[ "${STACK_SETUP:-all}" != runtime ]]; then
  PACKAGES+=("${TESTING[@]}")
  # npm runs the test that drives the real piston-client package.
  command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
fi

if [[ -z "${SKIP_APT:-}" ]]; then
  missing=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [[ "${STACK_SETUP:-all}" == runtime ]]; then
  exit 0
fi

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# The versions CI was green with (constraints.txt; scripts/pin.sh moves them).
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt)
"${PIP[@]}" pip >/dev/null
# Build warnings of the editable install are setuptools' notes, not ours:
# shown only when the install fails.
if ! out=$("${PIP[@]}" -e ".[test]" 2>&1); then
  echo "$out" >&2
  echo "setup: installing stack into .venv failed" >&2
  exit 1
fi
echo "setup: done; run .venv/bin/stack --help" >&2
