"""benchmarks/gpu_check.sh in its CPU dry-run mode: it runs every section (the parity tests of tests/test_gpu.py on
the CPU, pre-training and inference throughput) and writes a report that says it is a smoke run. ~1-2 minutes on a
shared 2-core machine, hence slow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(tmp_path), "--cpu-smoke"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["cpu_smoke"] and report["environment"]["device"] == "cpu"
    assert report["parity"]["returncode"] == 0 and "passed" in report["parity"]["summary"]
    assert any(r["system"].startswith("miniberts (") for r in report["pretraining"])
    assert all(r["tokens_per_s"] > 0 for r in report["pretraining"])
    assert all(r["sentences_per_s"] > 0 and r["batch1_p99_ms"] >= r["batch1_p50_ms"] for r in report["inference"])
    md = (tmp_path / "gpu_check.md").read_text()
    assert "CPU smoke run: not GPU numbers" in md and "## Pre-training throughput" in md


def test_gpu_check_without_cuda_says_so(tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(tmp_path)], cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "--cpu-smoke" in proc.stderr
