#!/usr/bin/env bash
# The whole test suite, from a fresh clone: system tools, virtualenv, packages, lint, tests.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/system-deps.sh
bash scripts/dev-env.sh test
venv=${WODMAIL_VENV:-$root/.venv}
"$venv/bin/python" --version
"$venv/bin/ruff" check .
"$venv/bin/python" -m pytest "$@"
