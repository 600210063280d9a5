#!/usr/bin/env bash
# The whole test suite (unit + real-host) in the project environment; installs it first if needed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
PY=${SANA_ENV:-$ROOT/.sana-env}/venv/bin/python
cd "$ROOT"
"$PY" scripts/make_workflows.py --check
"${PY%/python}/ruff" check --quiet .
exec "$PY" -m pytest -q "$@"
