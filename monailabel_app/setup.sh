#!/usr/bin/env bash
# One-command set-up of the MONAI Label app's own virtualenv.
#
#   bash monailabel_app/setup.sh            # creates/updates <repo>/.venv-monailabel
#   VENV=/some/path bash monailabel_app/setup.sh
#
# MONAI Label 0.8.5 needs pydicom 2.4 (pydicom-seg, pynetdicom 2), the project's .venv has pydicom 3,
# so the app gets a virtualenv of its own. The project itself is installed editable into it, so that
# `custom_transforms`, `simulation` and the bundle's `scripts` import with pydicom 2.4.
# Idempotent: a second run only checks that everything imports.
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$APP_DIR")"
VENV="${VENV:-$REPO_DIR/.venv-monailabel}"
PYTHON="${PYTHON:-python3.11}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "setup.sh: $PYTHON not found; set PYTHON=/path/to/python3.10+" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup.sh: creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# A stamp of the requirement files: skip pip entirely when nothing changed since the last success.
STAMP="$VENV/.aasn-monailabel-requirements"
WANT="$(cat "$APP_DIR/requirements.txt" "$APP_DIR/requirements-no-deps.txt" "$REPO_DIR/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    "${PIP[@]}" install --quiet -r "$APP_DIR/requirements.txt"
    "${PIP[@]}" install --quiet --no-deps -r "$APP_DIR/requirements-no-deps.txt"
    "${PIP[@]}" install --quiet --no-deps -e "$REPO_DIR"
    rm -f "$STAMP"
fi

# Check what the app needs, with the versions that matter (fails loudly on a broken environment).
"$VENV/bin/python" - <<'EOF'
import importlib

import pydicom
import torch

assert pydicom.__version__.startswith("2.4"), f"pydicom {pydicom.__version__}: MONAI Label 0.8.5 needs pydicom 2.4"
assert not torch.version.cuda, f"torch {torch.__version__} is a CUDA build; this venv must hold the CPU wheel"
for module in (
    "monailabel.app",
    "monailabel.tasks.infer.basic_infer",
    "monailabel.tasks.train.bundle",
    "monailabel.datastore.utils.convert",  # pydicom-seg, pynetdicom
    "custom_transforms",
):
    importlib.import_module(module)
import monai
import monailabel

print(f"monailabel {monailabel.__version__}, monai {monai.__version__}, torch {torch.__version__}, pydicom {pydicom.__version__}")
EOF
echo "$WANT" > "$STAMP"
echo "setup.sh: MONAI Label environment ready: $VENV/bin/monailabel"
