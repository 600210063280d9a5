#!/usr/bin/env bash
# The main job: a real headless ComfyUI runs the text-to-image example and prints the PNG's path.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
exec "${SANA_ENV:-$ROOT/.sana-env}/venv/bin/python" "$ROOT/scripts/run_example.py" "$@"
