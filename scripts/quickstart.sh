#!/usr/bin/env bash
# Install (scripts/install.sh) and run the main job on built-in real data: `miniberts quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
miniberts quickstart "$@"
