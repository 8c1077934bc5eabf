#!/usr/bin/env bash
# The GPU check on one CUDA machine: parity tests on the device, 2 minutes of Tiny and Small pre-training
# against stock BertForMaskedLM, inference throughput; a Markdown report in OUT. Needs torch (CUDA build) and the repo;
# transformers, pytest, scattertext and the MiniLM checkpoint are used when present and reported as skipped when not.
# No network. Finishes within 10 minutes (the timeout below enforces it).
#
#   benchmarks/gpu_check.sh OUT_DIR               # on the GPU machine; then copy OUT_DIR/gpu_check.md to docs/
#   benchmarks/gpu_check.sh OUT_DIR --cpu-smoke   # dry run on a CPU (tiny budgets): checks the script, not the GPU
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: benchmarks/gpu_check.sh OUT_DIR [--cpu-smoke] [--pretrain-seconds S]" >&2
  exit 2
fi
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check: torch is not importable with $PY" >&2
  exit 2
fi
timeout 590 "$PY" benchmarks/gpu_check.py "$@"
status=$?
[ $status -eq 124 ] && echo "gpu_check: stopped at the 10-minute limit" >&2
exit $status
