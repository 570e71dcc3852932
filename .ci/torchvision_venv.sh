#!/usr/bin/env bash
# Create (or reuse) .venv-torchvision: the venv in which CI runs tests/test_network_torchvision.py (genuine
# torchvision DenseNet-121 against the bundle's networks). torch and torchvision from .ci/requirements-torchvision.txt
# (why not the project's torch: see that file), every other package at requirements.txt's pin, the project editable.
#   bash .ci/torchvision_venv.sh        # $PYTHON (default python3.11); $TORCHVISION_VENV moves the venv
# A second run with unchanged requirement files only checks the imports.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TORCHVISION_VENV:-$ROOT/.venv-torchvision}"
PYTHON="${PYTHON:-python3.11}"
STAMP="$VENV/.aasn-torchvision-installed"
WANT="$(cat "$ROOT/.ci/requirements-torchvision.txt" "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
    # torch and torchvision first and together, so that nothing below can pull another torch
    "${PIP[@]}" -r "$ROOT/.ci/requirements-torchvision.txt"
    grep -v -E '^torch(vision)?==' "$ROOT/requirements.txt" > "$VENV/requirements-without-torch.txt"
    "${PIP[@]}" -r "$ROOT/.ci/requirements-torchvision.txt" -r "$VENV/requirements-without-torch.txt"
    "${PIP[@]}" --no-deps -e "$ROOT"
    echo "$WANT" > "$STAMP"
fi
"$VENV/bin/python" -c "import torch, torchvision, monai, custom_transforms; \
print('torchvision venv ready: torch', torch.__version__, '| torchvision', torchvision.__version__, '| monai', \
monai.__version__)"
