#!/usr/bin/env bash
# Install everything, lint and type-check (either failing fails the script), then run the test suite
# (unit layers, then real FUSE mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check thermofs bench tests
.venv/bin/python -m mypy thermofs
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
