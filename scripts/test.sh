#!/usr/bin/env bash
# Install everything, then run the test suite (unit layers, then real FUSE mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
