#!/usr/bin/env bash
# A virtual environment with infinity-emb for benchmarks/serve_load.py --infinity-python DIR/bin/python.
# infinity-emb 0.0.78 pins numpy<2 and calls tokenizer methods that transformers 5 removed, so it cannot share the
# project's environment; this one sees the project's packages (torch above all: never a second copy) through a .pth
# line and shadows only what infinity needs older: numpy 1.26, transformers 4, sentence-transformers 3,
# huggingface_hub 0.x, and the numpy-2-only packages that sentence-transformers imports when it finds them: the
# project's datasets (5) imports pyarrow (26) and pandas (3), which refuse numpy 1.26 at import ("pyarrow requires
# NumPy 2.0 or newer"), so infinity's server exited 1 before it listened; datasets 3, pyarrow 20 and pandas 2 work
# with numpy 1.26. Usage: benchmarks/infinity_venv.sh [DIR] (default /tmp/infinity-venv), from the project's venv.
set -euo pipefail
DIR=${1:-/tmp/infinity-venv}
# The project's torch, pinned below: run from another python (one without torch), pip would pull torch's newest
# CUDA build, gigabytes, as infinity-emb's dependency.
TORCH=$(python -c "import torch; print(torch.__version__)" 2>/dev/null) || {
  echo "infinity_venv.sh: no torch in $(command -v python); run it from the project's venv (. .venv/bin/activate)" >&2
  exit 1
}
MAIN_SITE=$(python -c "import site; print(site.getsitepackages()[0])")
python -m venv "$DIR"
echo "$MAIN_SITE" > "$("$DIR/bin/python" -c "import site; print(site.getsitepackages()[0])")/zz_project_venv.pth"
"$DIR/bin/pip" install -q "torch==$TORCH" "infinity-emb[server]==0.0.78" "transformers<5" "sentence-transformers<4" "huggingface_hub<1" \
    "datasets<4" "pyarrow<21" "pandas<3"
"$DIR/bin/python" -c "import infinity_emb, torch, numpy; print('infinity-emb', infinity_emb.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
