#!/usr/bin/env bash
# Create (or update) the MONAI Deploy app's own virtualenv, .venv-deploy at the repository root:
# the project with its pinned requirements (CPU torch wheel) plus the MONAI Deploy App SDK.
#   bash deploy/setup.sh            # uses python3 on PATH, or $PYTHON
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEPLOY_VENV:-$ROOT/.venv-deploy}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# torch first and pinned, so that nothing below can pull a CUDA build of it.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -r "$ROOT/requirements.txt" -r "$ROOT/deploy/requirements.txt"
"${PIP[@]}" --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import torch, monai, pydicom, highdicom, holoscan, monai.deploy; \
print('deploy venv ready: torch', torch.__version__, '| monai', monai.__version__, '| pydicom', pydicom.__version__, \
'| holoscan', holoscan.__version__, '| monai-deploy-app-sdk', monai.deploy.__version__)"
