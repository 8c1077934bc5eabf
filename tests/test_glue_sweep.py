"""The grid sweep: run order, resume after a crash (finished runs are not retrained), results in the card's layout,
heatmaps, pruning, and the 11 GLUE submission files from the best runs (on the GLUE-format fixtures)."""

import csv
import json
from pathlib import Path

import pytest

from miniberts.cli import main
from miniberts.data.submission import SUBMISSION_FILES, check_glue_submission
from miniberts.data.tasks import GLUE_TASKS, read_glue_split
from miniberts.train import finetune
from miniberts.train import glue

GLUE = "tests/fixtures/glue_data"
CARD_HEADER = "|Model|Score|CoLA|SST-2|MRPC|STS-B|QQP|MNLI-m|MNLI-mm|QNLI(v2)|RTE|WNLI|AX|"


def sweep_config(tiny, out, **kw):
    settings = dict(glue_dir=GLUE, epochs=1, max_length=32, progress=False) | kw
    return glue.GlueConfig(model=tiny, out=str(out), **settings)


def test_card_grid_order_middle_first_all_tasks_per_setting():
    runs = glue.plan(glue.GlueConfig(tasks=["RTE", "sst2", "rotten-tomatoes"], seeds=2))
    assert len(runs) == 5 * 4 * 3 * 2
    settings = [(r.batch_size, r.lr) for r in runs[:60:3]]
    assert settings[:4] == [(32, 1e-4), (32, 5e-5), (32, 3e-4), (32, 3e-5)]  # the centre, then ties: batch 32 first
    b_idx, lr_idx = [8, 16, 32, 64, 128], [3e-4, 1e-4, 5e-5, 3e-5]
    distance = [abs(b_idx.index(b) - 2) + abs(lr_idx.index(lr) - 1.5) for b, lr in settings]
    assert distance == sorted(distance)  # outwards from the middle of the grid
    assert [r.task for r in runs[:6]] == ["RTE", "SST-2", "rotten_tomatoes"] * 2  # every task before the next setting
    assert {r.seed for r in runs[:60]} == {42} and {r.seed for r in runs[60:]} == {43}  # a whole grid per seed
    assert {(r.batch_size, r.lr) for r in runs[:60]} == {(b, lr) for b in (8, 16, 32, 64, 128)
                                                          for lr in (3e-4, 1e-4, 5e-5, 3e-5)}
    assert (runs[-3].batch_size, runs[-3].lr) in {(8, 3e-4), (8, 3e-5), (128, 3e-4), (128, 3e-5)}  # corners last


def test_resume_after_crash_trains_only_unfinished_runs(tiny, tmp_path, monkeypatch):
    real_run, calls = finetune.run, []

    def counting_run(cfg, data=None):
        calls.append((cfg.batch_size, cfg.lr))
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed during the third run
        return real_run(cfg, data)

    monkeypatch.setattr(finetune, "run", counting_run)
    cfg = sweep_config(tiny, tmp_path / "sweep", tasks=["RTE"], batch_sizes=[4, 8], lrs=[1e-3, 1e-4], keep_models=True)
    with pytest.raises(KeyboardInterrupt):
        glue.sweep(cfg)
    finished = sorted((tmp_path / "sweep" / "runs" / "RTE").glob("*/metrics.json"))
    assert len(finished) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    partial = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert partial["runs_finished"] == 2 and partial["tasks"]["RTE"]["best"] is not None  # useful already

    calls.clear()
    results = glue.sweep(cfg)
    assert len(calls) == 2 and calls[0] == (8, 1e-3)  # the crashed run first, then the one never started
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # finished runs untouched
    assert results["runs_finished"] == 4 == len(results["tasks"]["RTE"]["runs"])
    calls.clear()
    glue.sweep(cfg)
    assert calls == []


def test_results_tables_heatmaps_pruning_and_submission(tiny, tmp_path):
    out, sub = tmp_path / "sweep", tmp_path / "submission"
    argv = ["glue", "--model", tiny, "--glue-dir", GLUE, "--out", str(out), "--batch-sizes", "4", "8", "--lrs", "1e-3",
            "--epochs", "1", "--max-length", "32", "--submission", str(sub), "--no-progress"]
    assert main(argv) == 0

    md = (out / "results.md").read_text().splitlines()
    assert CARD_HEADER in md
    row = md[md.index(CARD_HEADER) + 2].split("|")[1:-1]
    assert row[0] == Path(tiny).name and row[-1] == "–"  # AX has no labeled dev set
    assert len(row[4].split("/")) == 2 and len(row[5].split("/")) == 2  # MRPC F1/Acc, STS-B Pearson/Spearman
    with open(out / "results.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == CARD_HEADER.strip("|").split("|") and table[1] == row
    results = json.loads((out / "results.json").read_text())
    assert results["runs_planned"] == results["runs_finished"] == 18
    assert row[1] == results["table"]["Score"]
    for task in glue.GLUE_TRAIN_TASKS:
        assert (out / "heatmaps" / f"{task}.png").read_bytes()[:4] == b"\x89PNG"
        best = results["tasks"][task]["best"]
        kept = sorted(p.parent.name for p in (out / "runs" / task).glob("*/model.safetensors"))
        assert kept == [(out / best["dir"]).name]  # only the best run keeps its weights

    counts = check_glue_submission(sub, GLUE)  # names, header, one row per test index, label vocabularies
    assert sorted(p.name for p in sub.iterdir()) == sorted([*(f"{n}.tsv" for n in SUBMISSION_FILES), "submission.zip"])
    for name, (task, split) in SUBMISSION_FILES.items():
        assert counts[name] == len(read_glue_split(GLUE, task, split))
        lines = (sub / f"{name}.tsv").read_text().splitlines()
        assert lines[0] == "index\tprediction"
        if GLUE_TASKS[task].labels:
            assert {line.split("\t")[1] for line in lines[1:]} <= set(GLUE_TASKS[task].labels)

    # Weights gone (pruned while another run led, say): a rerun trains no sweep run, only retrains that one.
    best_rte = out / results["tasks"]["RTE"]["best"]["dir"]
    (best_rte / "model.safetensors").unlink()
    before = (out / "runs" / "CoLA" / "bs4-lr0.001-seed42" / "metrics.json").stat().st_mtime_ns
    (sub / "RTE.tsv").unlink()
    assert main(argv) == 0
    assert (best_rte / "model.safetensors").is_file() and (sub / "RTE.tsv").is_file()
    assert (out / "runs" / "CoLA" / "bs4-lr0.001-seed42" / "metrics.json").stat().st_mtime_ns == before


def test_builtin_task_sweep_column(tiny, tmp_path):
    cfg = sweep_config(tiny, tmp_path / "sweep", tasks=["lee_similarity"], batch_sizes=[16], lrs=[1e-3],
                       max_train_examples=32, cache_dir=str(tmp_path / "cache"), name="Tiny-32")
    results = glue.sweep(cfg)
    assert list(results["table"]) == ["lee_similarity"]
    assert "|Model|lee_similarity|" in (tmp_path / "sweep" / "results.md").read_text()
    assert (tmp_path / "sweep" / "results.csv").read_text().splitlines()[1].startswith("Tiny-32,")
    assert len(results["table"]["lee_similarity"].split("/")) == 2  # Pearson/Spearman


def test_errors(tiny, tmp_path, capsys):
    def error(*argv):
        rc = main(["glue", "--model", tiny, "--out", str(tmp_path / "o"), *argv, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        return err

    assert "--glue-dir" in error("--tasks", "RTE")
    assert "unknown task 'XNLI'" in error("--glue-dir", GLUE, "--tasks", "RTE", "XNLI")
    assert "missing CoLA" in error("--glue-dir", GLUE, "--tasks", "RTE", "--submission", str(tmp_path / "s"))
    assert "--grid" in error("--glue-dir", GLUE, "--tasks", "RTE", "--grid", "huge")
    assert "MNLI model" in error("--glue-dir", GLUE, "--tasks", "AX")
    assert not (tmp_path / "o").exists()


def test_rerun_with_other_settings_is_refused_and_fresh_restarts(tiny, tmp_path, capsys):
    """A rerun with another --model/--epochs/--max-length skipped every run as "finished
    before" and results.md labelled the old numbers with the new settings."""
    out = tmp_path / "sweep"

    def sweep_cli(model, epochs, max_length, *more, batch_sizes=("4",)):
        return main(["glue", "--glue-dir", GLUE, "--tasks", "RTE", "--batch-sizes", *batch_sizes, "--lrs", "1e-3",
                     "--out", str(out), "--model", model, "--epochs", epochs, "--max-length", max_length, *more,
                     "--no-progress"])

    assert sweep_cli(tiny, "1", "32") == 0
    results = (out / "results.md").read_text()

    assert sweep_cli("tiny", "2", "64") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"miniberts glue: error: {out}: was made with --model (a directory) --epochs 1 --max-length 32, "
                   "now --model tiny --epochs 2 --max-length 64; use --fresh to start afresh or another --out"), err
    assert (out / "results.md").read_text() == results

    # More of the grid with the same settings is the same sweep, grown: only the new run trains.
    assert sweep_cli(tiny, "1", "32", batch_sizes=("4", "8")) == 0
    assert json.loads((out / "results.json").read_text())["runs_finished"] == 2

    assert sweep_cli(tiny, "2", "32", "--fresh") == 0
    done = json.loads((out / "results.json").read_text())
    assert done["grid"]["epochs"] == 2 and done["runs_finished"] == 1  # the old runs are gone, not relabelled
    run = json.loads((out / done["tasks"]["RTE"]["best"]["dir"] / "metrics.json").read_text())
    assert run["config"]["epochs"] == 2 and len(run["epochs"]) == 2
