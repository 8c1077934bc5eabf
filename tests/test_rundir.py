"""Run directories: identity (settings + input bytes), the one-line refusals, --fresh, the lock, no traces left."""

import dataclasses
import json
import os
from dataclasses import dataclass, field

import pytest

from miniberts.train import rundir


@dataclass
class Cfg:
    model: str = "tiny"
    train: str = ""
    epochs: int = 3
    lr: float = 1e-4
    nsp: bool = False
    tasks: list[str] = field(default_factory=lambda: ["RTE"])
    out: str = ""
    progress: bool = True
    fresh: bool = False


def test_identity_is_settings_and_file_bytes_not_paths_or_progress(tmp_path):
    a, b = tmp_path / "a" / "train.tsv", tmp_path / "b" / "train.tsv"
    for path in (a, b):
        path.parent.mkdir()
        path.write_text("text\tlabel\ngood\t1\n")
    ident = rundir.identity(Cfg(train=str(a), out="x"), {"train": str(a)})
    assert set(ident) == {"model", "train", "epochs", "lr", "nsp", "tasks"}  # no out, progress, fresh
    assert ident["train"].startswith("sha256:") and ident["model"] == "tiny"
    assert rundir.identity(Cfg(train=str(b), out="y", progress=False), {"train": str(b)}) == ident  # moved: same
    b.write_text("text\tlabel\ngood\t0\n")
    assert rundir.identity(Cfg(train=str(b)), {"train": str(b)}) != ident  # edited: another identity
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / ".lock").write_text("123")
    assert rundir.identity(Cfg(model=str(model)), {"model": str(model)})["model"] == {
        "config.json": rundir.file_digest(model / "config.json")}  # hidden files are not content


def test_differences_name_each_changed_setting_as_its_flag():
    old = {"model": "tiny", "epochs": 1, "nsp": False, "tasks": ["RTE"], "train": "sha256:1"}
    new = {"model": "2-256", "epochs": 1, "nsp": True, "tasks": ["RTE", "CoLA"], "train": "sha256:2"}
    assert rundir.differences(old, new) == ("was made with --model tiny --no-nsp --tasks RTE, now --model 2-256 --nsp "
                                            "--tasks RTE CoLA; the files of --train differ from those it was made with")
    assert rundir.differences({"model": "tiny"}, {"model": {"config.json": "sha256:1"}}) == (
        "was made with --model tiny, now --model (a directory)")
    assert rundir.differences({}, {"seed": 3}) == "was made with (no --seed), now --seed 3"


def test_rerun_same_continues_other_refused_fresh_clears(tmp_path):
    out = tmp_path / "run"
    ident = rundir.identity(Cfg())
    with rundir.open_run(out, ident) as run:
        assert not run.existed and not run.finished
        (out / "metrics.json").write_text('{"score": 1}')
        (out / "data").mkdir()
        (out / "sub").mkdir()
    with rundir.open_run(out, ident) as run:
        assert run.finished and run.finished_metrics() == {"score": 1}
    assert rundir.finished(out, ident) and not rundir.finished(out, rundir.identity(Cfg(epochs=4)))

    other = rundir.identity(Cfg(model="2-256", epochs=4))
    with pytest.raises(rundir.RunMismatch) as e:
        with rundir.open_run(out, other):
            pass
    assert str(e.value) == (f"{out}: was made with --model tiny --epochs 3, now --model 2-256 --epochs 4; "
                            "use --fresh to start afresh or another --out")
    with rundir.open_run(out, other, fresh=True, keep=("data",)) as run:
        assert not run.existed and sorted(os.listdir(out)) == [".lock", "data", "identity.json"]
    assert json.loads((out / "identity.json").read_text())["identity"] == other


def test_second_holder_is_refused_with_the_pid(tmp_path):
    out = tmp_path / "run"
    ident = rundir.identity(Cfg())
    with rundir.open_run(out, ident):
        with pytest.raises(rundir.RunInUse, match=rf"run: in use by another miniberts process \(pid {os.getpid()}\)$"):
            with rundir.open_run(out, ident, fresh=True):
                pass
    with rundir.open_run(out, ident):  # released at the end of the block
        pass


def test_foreign_directory_is_not_taken_over(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for fresh in (False, True):
        with pytest.raises(rundir.RunMismatch, match="holds files but no identity.json"):
            with rundir.open_run(tmp_path, rundir.identity(Cfg()), fresh=fresh):
                pass
    assert sorted(os.listdir(tmp_path)) == [".lock", "notes.txt"]


def test_a_run_rejected_before_any_output_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "run"
    with pytest.raises(ValueError):
        with rundir.open_run(out, rundir.identity(Cfg())):
            raise ValueError("bad input")
    assert not (tmp_path / "a").exists()


def test_stale_temporaries_are_removed_under_the_lock(tmp_path):
    out = tmp_path / "run"
    ident = rundir.identity(Cfg())
    with rundir.open_run(out, ident):
        pass
    (out / ".model.safetensors.x1y2.tmp").write_bytes(b"half")
    with rundir.open_run(out, ident):
        assert not list(out.glob(".*.tmp"))


def test_identity_read_back_equals_identity_computed(tmp_path):
    cfg = dataclasses.replace(Cfg(), tasks=("RTE",), lr=3e-5)  # a tuple and a float: as JSON stores them
    with rundir.open_run(tmp_path / "run", rundir.identity(cfg)):
        pass
    with rundir.open_run(tmp_path / "run", rundir.identity(cfg)) as run:
        assert run.existed
