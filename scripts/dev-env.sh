#!/usr/bin/env bash
# Creates (or refreshes) .venv with wodmail and its test dependencies.
# Idempotent and quiet when nothing changed; sourced by scripts/test.sh and scripts/demo.sh.
# PYTHON picks the interpreter (default python3), WODMAIL_VENV the folder (default .venv):
# .ci/run uses both to run the suite on the oldest and the newest supported Python.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${WODMAIL_VENV:-$root/.venv}
py=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)-${1:-base}"
if [ ! -f "$stamp" ]; then
  if [ "${1:-base}" = test ]; then
    "$venv/bin/pip" install -q -e "$root[test]"
  else
    "$venv/bin/pip" install -q -e "$root"
  fi
  touch "$stamp"
fi
