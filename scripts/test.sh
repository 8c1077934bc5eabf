#!/usr/bin/env bash
# Install (scripts/install.sh) and run the default test suite (slow tests excluded; run them with -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
python -m pytest -m "not slow" -q "$@"
