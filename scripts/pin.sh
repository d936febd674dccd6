#!/usr/bin/env bash
# Moves the pinned Python tools to their newest releases: installs stack with
# its test extra, unconstrained, into a fresh virtualenv and writes every
# version it got into constraints.txt. Then run `bash .ci/run` and commit.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check ".[test]"
{
  sed -n '/^#/p' constraints.txt
  "$work/venv/bin/python" -m pip freeze --all --exclude-editable \
    | grep -v -e '^stack-sandbox' -e '^setuptools=' -e '^wheel=' | LC_ALL=C sort -f
} > "$work/constraints.txt"
mv "$work/constraints.txt" constraints.txt
git --no-pager diff --stat constraints.txt || true
