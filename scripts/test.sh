#!/usr/bin/env bash
# Install (scripts/install.sh), check the import layers (lint-imports, the contracts in pyproject.toml) and run the
# default test suite (slow tests excluded; run them with -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
lint-imports
python -m pytest -m "not slow" -q "$@"
