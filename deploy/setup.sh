#!/usr/bin/env bash
# Create (or update) the MONAI Deploy app's own virtualenv, .venv-deploy at the repository root: the project
# (editable) with its pinned requirements, the CPU torch wheel, and the MONAI Deploy App SDK (deploy/requirements.txt).
#   bash deploy/setup.sh        # python3.11 (or $PYTHON); the venv folder can be changed with $DEPLOY_VENV
# Does nothing when the venv is newer than the requirement files (delete the venv to force a reinstall).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEPLOY_VENV:-$ROOT/.venv-deploy}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.aasn-deploy-installed"
if [ -f "$STAMP" ] && [ "$STAMP" -nt "$ROOT/requirements.txt" ] && [ "$STAMP" -nt "$ROOT/deploy/requirements.txt" ] \
    && [ "$STAMP" -nt "$ROOT/pyproject.toml" ]; then
    echo "deploy venv up to date: $VENV"
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# torch first and pinned, so that nothing below can pull a CUDA build of it.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -r "$ROOT/requirements.txt" -r "$ROOT/deploy/requirements.txt"
"${PIP[@]}" --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import torch, monai, pydicom, highdicom, holoscan, monai.deploy, custom_transforms; \
print('deploy venv ready: torch', torch.__version__, '| monai', monai.__version__, '| pydicom', pydicom.__version__, \
'| holoscan', holoscan.__version__, '| monai-deploy-app-sdk', monai.deploy.__version__)"
touch "$STAMP"
