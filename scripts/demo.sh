#!/usr/bin/env bash
# The main job from a fresh clone: install, then generate demo data, train, evaluate, predict.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/clipmg demo "$@"
