"""GLUE submission files: names, rows per test index, label vocabularies, and the refusals."""

import re
import zipfile
from pathlib import Path

import pytest

from miniberts.data.submission import SUBMISSION_FILES, check_glue_submission, write_glue_submission
from miniberts.data.tasks import get_task, read_glue_split
from miniberts.errors import DataError

GLUE_DIR = Path(__file__).parent / "fixtures" / "glue_data"

# The 11 files the GLUE server expects (jiant's GlueBenchmark.BENCHMARK_SUBMISSION_FILENAMES).
EXPECTED_FILES = {"CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                  "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"}
VOCAB = {"CoLA": {"0", "1"}, "SST-2": {"0", "1"}, "MRPC": {"0", "1"}, "QQP": {"0", "1"}, "WNLI": {"0", "1"},
         "MNLI-m": {"entailment", "neutral", "contradiction"}, "MNLI-mm": {"entailment", "neutral", "contradiction"},
         "AX": {"entailment", "neutral", "contradiction"}, "QNLI": {"entailment", "not_entailment"},
         "RTE": {"entailment", "not_entailment"}}
STSB_PREDICTIONS = [-0.4, 1.23456, 2.5, 5.7, 4.0, 0.0]  # out-of-range values are clipped to [0, 5]


def fake_predictions() -> dict[str, list[tuple]]:
    """Cycle through each task's labels over its test rows (reversed, to show order is not relied on)."""
    out = {}
    for name, (task, split) in SUBMISSION_FILES.items():
        spec = get_task(task)
        test = read_glue_split(GLUE_DIR, task, split)
        if spec.is_regression:
            rows = [(ex.index, STSB_PREDICTIONS[i]) for i, ex in enumerate(test)]
        else:
            rows = [(ex.index, spec.labels[i % len(spec.labels)]) for i, ex in enumerate(test)]
        out[name] = rows[::-1]
    return out


def read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def test_submission_names_are_the_eleven_glue_files():
    assert {f"{name}.tsv" for name in SUBMISSION_FILES} == EXPECTED_FILES
    assert SUBMISSION_FILES["MNLI-m"] == ("MNLI", "test_matched")
    assert SUBMISSION_FILES["MNLI-mm"] == ("MNLI", "test_mismatched")
    assert SUBMISSION_FILES["AX"] == ("AX", "test")


def test_write_all_files_and_check_them(tmp_path):
    out = tmp_path / "submission"
    paths = write_glue_submission(out, fake_predictions(), GLUE_DIR)
    assert {p.name for p in paths} == EXPECTED_FILES
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES | {"submission.zip"}  # and no temp files left behind
    with zipfile.ZipFile(out / "submission.zip") as z:  # what is uploaded: the same 11 files at the root
        assert {n: z.read(n) for n in z.namelist()} == {p.name: p.read_bytes() for p in paths}
    for name, (task, split) in SUBMISSION_FILES.items():
        rows = read_rows(out / f"{name}.tsv")
        test = read_glue_split(GLUE_DIR, task, split)
        assert rows[0] == ["index", "prediction"]
        assert [r[0] for r in rows[1:]] == [ex.index for ex in test]  # one row per index, in file order
        values = {r[1] for r in rows[1:]}
        if name == "STS-B":
            assert [r[1] for r in rows[1:]] == ["0.000", "1.235", "2.500", "5.000", "4.000", "0.000"]
        else:
            assert values <= VOCAB[name]
    counts = check_glue_submission(out, GLUE_DIR)
    assert counts == {"CoLA": 6, "SST-2": 6, "MRPC": 6, "STS-B": 6, "QQP": 6, "MNLI-m": 6, "MNLI-mm": 6,
                      "QNLI": 6, "RTE": 6, "WNLI": 6, "AX": 7}


def test_integer_predictions_for_binary_tasks(tmp_path):
    preds = fake_predictions()
    preds["CoLA"] = [(index, int(label)) for index, label in preds["CoLA"]]
    write_glue_submission(tmp_path, preds, GLUE_DIR)
    assert {r[1] for r in read_rows(tmp_path / "CoLA.tsv")[1:]} == {"0", "1"}


def test_missing_index_is_refused_before_anything_is_written(tmp_path):
    preds = fake_predictions()
    preds["QNLI"] = [row for row in preds["QNLI"] if row[0] != "3"]
    out = tmp_path / "submission"
    with pytest.raises(DataError) as e:
        write_glue_submission(out, preds, GLUE_DIR)
    assert str(e.value) == (f"QNLI.tsv: no prediction for 1 of the 6 rows of {GLUE_DIR / 'QNLI/test.tsv'} "
                            "(first missing index: 3)")
    assert not out.exists()


@pytest.mark.parametrize("name,change,message", [
    ("RTE", lambda rows: rows + [rows[0]], "RTE.tsv: index 5 is predicted more than once"),
    ("QQP", lambda rows: rows + [("999", "1")], "QQP.tsv: index 999 is not in"),
    ("MNLI-mm", lambda rows: [(i, "entailed") for i, _ in rows],
     "MNLI-mm.tsv index 5: prediction 'entailed' is not a label of MNLI (contradiction, entailment, neutral)"),
    ("AX", lambda rows: [(i, 1) for i, _ in rows], "AX.tsv index 6: prediction 1 is not a label of AX (contradiction, entailment, neutral)"),
    ("STS-B", lambda rows: [(i, float("nan")) for i, _ in rows], "STS-B.tsv index 5: prediction nan is not a finite number"),
])
def test_bad_predictions_are_refused(tmp_path, name, change, message):
    preds = fake_predictions()
    preds[name] = change(preds[name])
    with pytest.raises(DataError, match=re.escape(message)):
        write_glue_submission(tmp_path / "out", preds, GLUE_DIR)


def test_missing_and_unknown_files_are_named(tmp_path):
    preds = fake_predictions()
    preds["diagnostic"] = preds.pop("AX")
    with pytest.raises(DataError, match=r"^predictions: missing AX; unexpected diagnostic; GLUE expects CoLA, SST-2, .*, AX$"):
        write_glue_submission(tmp_path, preds, GLUE_DIR)


def test_check_finds_a_broken_submission(tmp_path):
    write_glue_submission(tmp_path, fake_predictions(), GLUE_DIR)
    rte = tmp_path / "RTE.tsv"
    lines = rte.read_text().splitlines()

    rte.write_text("\n".join(lines[:3] + ["2\tcontradiction"] + lines[4:]) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{rte}:4: prediction 'contradiction' is not a label of RTE")):
        check_glue_submission(tmp_path, GLUE_DIR)

    rte.write_text("\n".join(lines[:-1]) + "\n")  # a row short
    with pytest.raises(DataError, match=r"RTE\.tsv: no prediction for 1 of the 6 rows of .*first missing index: 5"):
        check_glue_submission(tmp_path, GLUE_DIR)

    rte.write_text("\n".join(["id\tlabel"] + lines[1:]) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{rte}:1: header should be 'index<TAB>prediction', found 'id\\tlabel'")):
        check_glue_submission(tmp_path, GLUE_DIR)

    rte.write_text("\n".join(lines) + "\n")
    stsb = tmp_path / "STS-B.tsv"
    stsb.write_text(stsb.read_text().replace("5.000", "5.100"))
    with pytest.raises(DataError, match=re.escape(f"{stsb}:5: STS-B score 5.100 is outside [0, 5]")):
        check_glue_submission(tmp_path, GLUE_DIR)

    (tmp_path / "AX.tsv").rename(tmp_path / "diagnostic.tsv")
    with pytest.raises(DataError, match="missing AX; unexpected diagnostic"):
        check_glue_submission(tmp_path, GLUE_DIR)
