#!/usr/bin/env bash
# Installs everything the tests need into .venv (fresh machine included) and runs them.
# Usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch is pinned: 2.13.0 is a CPU build; an unpinned torch pulls a multi-GB CUDA build.
python -m pip install -q -r requirements-test.txt -e ".[test]"
# onnx2torch without its torchvision requirement (no torchvision wheel loads with torch 2.13.0 CPU)
python -m pip install -q --no-deps -r requirements-onnx2torch.txt
python -m pytest -q "$@"
