#!/usr/bin/env bash
# Start this app's MONAI Label server, listening on 127.0.0.1 (this machine only) unless asked otherwise.
#
#   bash monailabel_app/start_server.sh --studies /path/to/pxrs                 # http://127.0.0.1:8000
#   bash monailabel_app/start_server.sh --studies /path/to/pxrs --port 8001 --conf max_upload_mb 32
#   bash monailabel_app/start_server.sh --studies /path/to/pxrs --host 0.0.0.0  # every interface: see docs/security.md
#
# MONAI Label's own default --host is 0.0.0.0, every network interface, and the server has no authentication by
# default. This script passes --host 127.0.0.1 --port 8000 before your arguments; a --host or --port of yours comes
# later and wins (the last one counts). --app and --conf bundle default to this repository's app and bundle.
# MONAILABEL=/path/to/monailabel selects the executable (default: <repo>/.venv-monailabel/bin/monailabel).
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$APP_DIR")"
MONAILABEL="${MONAILABEL:-$REPO_DIR/.venv-monailabel/bin/monailabel}"
if [ ! -x "$MONAILABEL" ]; then
    echo "start_server.sh: $MONAILABEL not found; run 'bash monailabel_app/setup.sh' first" >&2
    exit 1
fi
# the monailabel script runs the python found on PATH: its own virtualenv's
export PATH="$(dirname "$MONAILABEL"):$PATH"
exec "$MONAILABEL" start_server --app "$APP_DIR" --conf bundle "$REPO_DIR/bundle" --host 127.0.0.1 --port 8000 "$@"
