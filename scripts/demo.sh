#!/usr/bin/env bash
# Runs wodmail on its embedded defaults against a sandboxed backend and shows a CREATE and
# a CLEANUP going through (see `wodmail demo --help`). Needs nothing but Python 3.11+.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/dev-env.sh" base
exec "$root/.venv/bin/wodmail" demo "$@"
