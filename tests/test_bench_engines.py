"""The engine section of `miniberts bench` on a random Tiny model and one batch per workload: every row is either
measured or listed as skipped with the install line, the agreement columns hold, and the per-cell table names the
fastest row and our ratio to it. Timings are not asserted (the machine is shared); only that they exist."""

from __future__ import annotations

import sys

import pytest

from miniberts.bench.engines import ENGINES, REFERENCE, WORKLOADS, run_engines
from miniberts.bench.harness import BenchConfig, load_workload
from miniberts.bench.report import engines_markdown
from miniberts.inference.backends import smoothquant
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer


@pytest.fixture(scope="module")
def tiny_engines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIBERTS_CACHE", str(tmp / "cache"))
        mp.setitem(sys.modules, "ctranslate2", None)  # as if CTranslate2 were not installed
        mp.setattr(smoothquant, "CALIBRATION_SENTENCES", 16)  # the calibrated int8 rows: calibrated in less time
        cfg = BenchConfig([], repeats=1, quick=True, profile=False, threads=1, batches={"2-128": 1}, engine_models=["2-128"])
        mp.setattr(cfg, "latency_iters", lambda preset: 10)
        tok = WordPieceTokenizer(BUILTIN_VOCAB)
        return run_engines(cfg, load_workload(tok, 64), tok, tmp / "work")


def test_every_engine_is_measured_or_skipped_with_the_reason(tiny_engines):
    (r,) = tiny_engines
    measured = set(r["throughput"]["sorted"])
    assert REFERENCE in measured
    for label, backend, _ in ENGINES:
        assert (label in measured) != (label in r["skipped"]), f"{label}: exactly one of measured or skipped"
    for label in ("ctranslate2 float32", "ctranslate2 int8"):
        assert r["skipped"][label] == "skipped (not installed: pip install 'miniberts[engines]')"
    for w in ("arrival", "sorted", "fixed"):
        assert set(r["throughput"][w]) == measured and all(v > 0 for v in r["throughput"][w].values())
    assert all(r["latency"][label]["p99_ms"] >= r["latency"][label]["p50_ms"] > 0 for label in measured)


def test_agreement_and_cells(tiny_engines):
    (r,) = tiny_engines
    agree = r["agreement"]
    assert agree[REFERENCE] == {"max_abs": 0.0, "min_cosine": pytest.approx(1.0)}
    if "onnxruntime fp32 (fused)" in agree:
        assert agree["onnxruntime fp32 (fused)"]["max_abs"] < 1e-4
    assert all(a["min_cosine"] > 0.99 for a in agree.values())
    assert [c["workload"] for c in r["cells"]] == list(WORKLOADS)
    for c in r["cells"]:
        assert c["fastest"] in r["agreement"]
        assert c["float"]["ours"] is not None and c["float"]["ratio"] > 0
        assert not c["float"]["fastest"].endswith("int8")
    md = "\n".join(engines_markdown({"engines": tiny_engines}))
    assert "| ctranslate2 int8 | skipped (not installed: pip install 'miniberts[engines]') |" in md
    assert md.count("| tiny | ") == 2 * len(WORKLOADS)  # the per-cell table and the precision table


def test_precision_cells_compare_with_exact_fp32(tiny_engines):
    """`--dtype fp32`'s pick is an exact row (never OpenVINO), the int8 ratio is over that pick, in the same run."""
    (r,) = tiny_engines
    for c in r["cells"]:
        fp32, int8 = c["fp32"]["ours"], c["int8"]["ours"]
        assert fp32 is not None and r["agreement"][fp32]["max_abs"] <= 1e-4 and not fp32.startswith("openvino")
        if int8 is not None:
            speed = (lambda label: 1 / r["latency"][label]["p50_ms"]) if c["workload"] == "batch1" else (
                lambda label: r["throughput"][c["workload"]][label])
            assert c["int8"]["vs_fp32"] == pytest.approx(speed(int8) / speed(fp32))
