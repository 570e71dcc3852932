#!/usr/bin/env bash
# The MAP packager's own virtualenv, .venv-package at the repository root: holoscan-cli 3.x, whose `holoscan package`
# builds a MONAI Application Package (the holoscan-cli 5.x that the SDK 4.0 installs in .venv-deploy has no packager).
# Used for the packager's static checks of deploy/app.yaml (tools/check_package_config.py, no docker needed) and, on a
# machine with docker, for packaging (deploy/README.md). About 50 MB.
#   bash deploy/setup_packager.sh      # python3.11 (or $PYTHON); the folder can be changed with $PACKAGE_VENV
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PACKAGE_VENV:-$ROOT/.venv-package}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
CLI="holoscan-cli==3.11.0"
STAMP="$VENV/.aasn-packager-installed"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$CLI" ]; then
    echo "packager venv up to date: $VENV"
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q "$CLI"
"$VENV/bin/python" -c "import holoscan_cli.packager.config_reader; print('packager venv ready: $CLI')"
echo "$CLI" > "$STAMP"
