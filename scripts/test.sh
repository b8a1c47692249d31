#!/usr/bin/env bash
# The test suite from a fresh clone: install with the test extras (and the optional pose and
# bench extras, so their tests run rather than skip), then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev,minilm,pose,bench
exec .venv/bin/python -m pytest "$@"
