#!/usr/bin/env bash
# The test suite from a fresh clone: install with the test extras (and the optional pose, bench,
# export, browser and lab extras, so their tests run rather than skip), then run pytest. The browser
# test also needs a Chromium (e.g. `apt install chromium`); without one it skips.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev,minilm,pose,bench,export,browser,lab
exec .venv/bin/python -m pytest "$@"
