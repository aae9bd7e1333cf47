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
  "$venv/bin/pip" install -q --upgrade pip >"$venv/pip-install.log" 2>&1 \
    || { cat "$venv/pip-install.log" >&2; exit 1; }
fi
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)-${1:-base}"
if [ ! -f "$stamp" ]; then
  target="$root"
  [ "${1:-base}" = test ] && target="$root[test]"
  # pip and setuptools chat (the editable-install banner) on stderr: kept in a log, shown
  # only when the install fails.
  log="$venv/pip-install.log"
  if ! "$venv/bin/pip" install -q -e "$target" >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  touch "$stamp"
fi
