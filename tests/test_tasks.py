"""GLUE task table and readers, on fixtures in the exact GLUE distribution formats."""

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from miniberts.data.tasks import (
    GLUE_TASKS, Example, get_task, infer_task_type, label_set, read_glue_split, read_user_file,
)
from miniberts.errors import DataError

GLUE_DIR = Path(__file__).parent / "fixtures" / "glue_data"


@pytest.fixture
def glue(tmp_path):
    """A writable copy of the GLUE fixtures, for tests that break a file."""
    shutil.copytree(GLUE_DIR, tmp_path / "glue_data")
    return tmp_path / "glue_data"


def rewrite_line(path: Path, line_no: int, new: str) -> None:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    lines[line_no - 1] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- the table ----------------------------------------------------------------------------------

def test_table_lists_every_glue_task():
    assert list(GLUE_TASKS) == ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI", "AX"]
    assert set(GLUE_TASKS["MNLI"].splits) == {"train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched"}
    assert GLUE_TASKS["AX"].splits == {"test": "diagnostic.tsv"} and GLUE_TASKS["AX"].directory == "diagnostic"


def test_label_orders_match_transformers_processors():
    # transformers/data/processors/glue.py get_labels(): the label ids of a fine-tuned head.
    expected = {"CoLA": ("0", "1"), "SST-2": ("0", "1"), "MRPC": ("0", "1"), "STS-B": None, "QQP": ("0", "1"),
                "MNLI": ("contradiction", "entailment", "neutral"), "QNLI": ("entailment", "not_entailment"),
                "RTE": ("entailment", "not_entailment"), "WNLI": ("0", "1")}
    assert {name: GLUE_TASKS[name].labels for name in expected} == expected
    # AX is predicted by the MNLI model, so it has MNLI's labels in MNLI's order.
    assert GLUE_TASKS["AX"].model_task == "MNLI" and GLUE_TASKS["AX"].labels == GLUE_TASKS["MNLI"].labels


def test_get_task_is_forgiving_about_spelling_and_lists_known_names():
    assert get_task("sst2").name == "SST-2" and get_task("stsb").name == "STS-B" and get_task("mnli").name == "MNLI"
    with pytest.raises(DataError, match=r"unknown task 'SNLI'; known GLUE tasks: CoLA, SST-2, .*, AX$"):
        get_task("SNLI")


# --- reading every split ------------------------------------------------------------------------

COUNTS = {  # data rows in each fixture (QQP train: 8 rows, one malformed)
    ("CoLA", "train"): 8, ("CoLA", "dev"): 6, ("CoLA", "test"): 6,
    ("SST-2", "train"): 8, ("SST-2", "dev"): 6, ("SST-2", "test"): 6,
    ("MRPC", "train"): 6, ("MRPC", "dev"): 6, ("MRPC", "test"): 6,
    ("STS-B", "train"): 8, ("STS-B", "dev"): 6, ("STS-B", "test"): 6,
    ("QQP", "train"): 7, ("QQP", "dev"): 6, ("QQP", "test"): 6,
    ("MNLI", "train"): 8, ("MNLI", "dev_matched"): 6, ("MNLI", "dev_mismatched"): 6,
    ("MNLI", "test_matched"): 6, ("MNLI", "test_mismatched"): 6,
    ("QNLI", "train"): 6, ("QNLI", "dev"): 6, ("QNLI", "test"): 6,
    ("RTE", "train"): 6, ("RTE", "dev"): 6, ("RTE", "test"): 6,
    ("WNLI", "train"): 6, ("WNLI", "dev"): 6, ("WNLI", "test"): 6,
    ("AX", "test"): 7,
}


def test_counts_cover_every_split_in_the_table():
    assert set(COUNTS) == {(t.name, s) for t in GLUE_TASKS.values() for s in t.splits}


@pytest.mark.parametrize("task,split", list(COUNTS))
def test_every_split_reads(task, split):
    spec = GLUE_TASKS[task]
    examples = read_glue_split(GLUE_DIR, task, split)
    assert len(examples) == COUNTS[task, split]
    for ex in examples:
        assert ex.text_a and (ex.text_b is None) == (spec.text_b is None)
        if split.startswith("test"):
            assert ex.label is None and ex.index is not None
        elif spec.is_regression:
            assert isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0
        else:
            assert ex.label in spec.labels
    if split.startswith("test"):
        assert [ex.index for ex in examples] == [str(i) for i in range(len(examples))]


def test_cola_headerless_train_and_headed_test():
    train = read_glue_split(GLUE_DIR, "CoLA", "train")
    assert train[1] == Example("The children kept until the bus arrived singing.", None, "0", None)
    test = read_glue_split(GLUE_DIR, "CoLA", "test")
    assert test[0] == Example("The tall man opened the window.", None, None, "0")


def test_quotes_are_text_not_csv_quoting():
    # QUOTE_NONE: an unbalanced '"' would otherwise swallow the tabs and lines after it.
    sst = read_glue_split(GLUE_DIR, "SST-2", "train")
    assert sst[2].text_a == 'one of the year \'s most " original " thrillers ' and sst[2].label == "1"
    assert len(sst) == 8


def test_mrpc_header_with_utf8_bom():
    assert (GLUE_DIR / "MRPC/train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality")
    train = read_glue_split(GLUE_DIR, "MRPC", "train")
    assert train[1].text_a == 'The mayor called the plan " a good start " on Tuesday .'
    assert train[1].text_b == "The council rejected the mayor 's plan on Tuesday ."
    assert [ex.label for ex in train] == ["1", "0", "1", "0", "1", "0"]
    assert read_glue_split(GLUE_DIR, "MRPC", "test")[2].index == "2"


def test_stsb_score_is_a_float_from_the_last_column():
    dev = read_glue_split(GLUE_DIR, "STS-B", "dev")
    assert dev[0] == Example("A man is playing a guitar.", "A man plays the guitar.", 4.8, "0")


def test_qqp_uses_id_column_and_skips_malformed_train_rows_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="miniberts.data.tasks"):
        train = read_glue_split(GLUE_DIR, "QQP", "train")
    assert len(train) == 7
    assert re.search(r"QQP/train\.tsv: skipped 1 malformed training rows \(lines 6\)", caplog.text)
    assert train[0].index == "201359"
    assert [ex.index for ex in read_glue_split(GLUE_DIR, "QQP", "test")] == ["0", "1", "2", "3", "4", "5"]


def test_mnli_reads_12_and_16_column_files_by_header_name():
    train = read_glue_split(GLUE_DIR, "MNLI", "train")
    assert (train[1].text_a, train[1].text_b, train[1].label) == (
        "He walked to the store in the rain.", "He went to the store.", "entailment")
    mm = read_glue_split(GLUE_DIR, "MNLI", "dev_mismatched")
    assert [ex.label for ex in mm] == ["entailment", "contradiction", "neutral"] * 2
    assert mm[0].text_a == "The letter was signed by the director."


def test_ax_is_read_from_the_diagnostic_file():
    ax = read_glue_split(GLUE_DIR, "AX", "test")
    assert ax[3] == Example("The doctor is not unfriendly.", "The doctor is friendly.", None, "3")


# --- errors: one line, naming the file (and line) -----------------------------------------------

def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_file_names_the_path(glue):
    (glue / "RTE/dev.tsv").unlink()
    with pytest.raises(DataError) as e:
        read_glue_split(glue, "RTE", "dev")
    assert one_line(e) == f"{glue / 'RTE/dev.tsv'}: file not found"


def test_unknown_split_lists_the_splits():
    with pytest.raises(DataError, match="MNLI has no split 'dev'; its splits are train, dev_matched"):
        read_glue_split(GLUE_DIR, "MNLI", "dev")


def test_missing_column_names_file_and_columns_found(glue):
    rewrite_line(glue / "RTE/dev.tsv", 1, "index\tpremise\tsentence2\tlabel")
    with pytest.raises(DataError) as e:
        read_glue_split(glue, "RTE", "dev")
    assert one_line(e) == (f"{glue / 'RTE/dev.tsv'}: missing column(s) 'sentence1'; "
                           "found 'index', 'premise', 'sentence2', 'label'")


def test_test_file_without_index_column(glue):
    rewrite_line(glue / "QQP/test.tsv", 1, "qid\tquestion1\tquestion2")
    with pytest.raises(DataError, match=r"QQP/test\.tsv: missing column\(s\) 'id'; found 'qid'"):
        read_glue_split(glue, "QQP", "test")


@pytest.mark.parametrize("task,split,line,new,expected", [
    # a missing field in dev/test is an error, even for the tasks whose train rows are skipped
    ("QQP", "dev", 3, "292434\t413897\t413898\tWhat is the best phone under $300?\t0",
     "expected 6 tab-separated fields, found 5"),
    ("MNLI", "test_matched", 4, "2\t31195\t31195n\tfiction\tx\ty",
     "expected 10 tab-separated fields, found 6"),
    ("CoLA", "dev", 2, "ad03\t0\tThe dog that the cat chased was tired the.",
     "expected 4 tab-separated fields, found 3"),
    # and in train for every other task
    ("RTE", "train", 2, "0\tThe company announced record profits.\tentailment",
     "expected 4 tab-separated fields, found 3"),
    ("SST-2", "dev", 4, "it 's a small gem . \t", "empty label"),
])
def test_bad_line_names_file_line_and_expected_count(glue, task, split, line, new, expected):
    path = glue / GLUE_TASKS[task].directory / GLUE_TASKS[task].splits[split]
    rewrite_line(path, line, new)
    with pytest.raises(DataError) as e:
        read_glue_split(glue, task, split)
    assert one_line(e) == f"{path}:{line}: {expected}"


def test_unknown_label_in_dev_names_file_and_line(glue):
    path = glue / "RTE/dev.tsv"
    rewrite_line(path, 3, "1\tThe senator opposed the new tax.\tThe senator proposed the new tax.\tcontradiction")
    with pytest.raises(DataError) as e:
        read_glue_split(glue, "RTE", "dev")
    assert one_line(e) == f"{path}:3: unknown label 'contradiction'; RTE labels are entailment, not_entailment"


def test_unknown_label_in_skipping_train_is_still_an_error(glue):
    path = glue / "QQP/train.tsv"
    rewrite_line(path, 2, "201359\t303345\t303346\tHow do I learn to cook rice?\tWhat is the best way?\tyes")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: unknown label 'yes'; QQP labels are 0, 1")):
        read_glue_split(glue, "QQP", "train")


def test_non_numeric_stsb_score(glue):
    path = glue / "STS-B/dev.tsv"
    rewrite_line(path, 2, "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA man.\thigh")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: score 'high' is not a number")):
        read_glue_split(glue, "STS-B", "dev")


@pytest.mark.parametrize("content,expected", [
    ("index\tsentence1\tsentence2\tlabel\n", "no examples"),
    ("", "empty file (no header, no examples)"),
])
def test_empty_split_names_the_file(glue, content, expected):
    path = glue / "WNLI/dev.tsv"
    path.write_text(content)
    with pytest.raises(DataError) as e:
        read_glue_split(glue, "WNLI", "dev")
    assert one_line(e) == f"{path}: {expected}"


def test_train_with_only_malformed_rows_is_empty(glue):
    path = glue / "QQP/train.tsv"
    path.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tWhy?\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: no examples")):
        read_glue_split(glue, "QQP", "train")


# --- the user's own files ----------------------------------------------------------------------

def test_csv_with_standard_quoting(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('text,label\n"Great, really great",pos\n"He said ""meh""",neg\nFine,pos\n')
    examples = read_user_file(path, "text", label_column="label")
    assert examples == [Example("Great, really great", None, "pos", "0"),
                        Example('He said "meh"', None, "neg", "1"), Example("Fine", None, "pos", "2")]


def test_tsv_pair_regression(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text('a\tb\tscore\nA "quoted" cat\tA cat\t4.5\nA dog\tA car\t0.5\n')
    examples = read_user_file(path, "a", "b", "score", task_type="regression")
    assert examples[0] == Example('A "quoted" cat', "A cat", 4.5, "0")


def test_jsonl_numbers_become_label_strings(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"q": "Is it?", "y": 1}, {"q": "No.", "y": 0}]) + "\n")
    assert [ex.label for ex in read_user_file(path, "q", label_column="y")] == ["1", "0"]


def test_user_file_errors(tmp_path):
    txt = tmp_path / "data.txt"
    txt.write_text("x\n")
    with pytest.raises(DataError, match=re.escape(f"{txt}: unsupported file type '.txt'; expected .csv, .tsv or .jsonl")):
        read_user_file(txt, "text")

    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nope.csv'}: file not found")):
        read_user_file(tmp_path / "nope.csv", "text")

    csv_path = tmp_path / "d.csv"
    csv_path.write_text("sentence,target\nhello,a\n")
    with pytest.raises(DataError) as e:
        read_user_file(csv_path, "text", label_column="label")
    assert one_line(e) == f"{csv_path}: missing column(s) 'text', 'label'; found 'sentence', 'target'"

    csv_path.write_text("text,label\nhello,a\nbye\n")
    with pytest.raises(DataError, match=re.escape(f"{csv_path}:3: expected 2 fields, found 1")):
        read_user_file(csv_path, "text", label_column="label")

    csv_path.write_text("text,label\n")
    with pytest.raises(DataError, match=re.escape(f"{csv_path}: no examples")):
        read_user_file(csv_path, "text", label_column="label")

    jl = tmp_path / "d.jsonl"
    jl.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=re.escape(f"{jl}:2: missing value for 'label'")):
        read_user_file(jl, "text", label_column="label")
    jl.write_text('{"text": "a", "label": "x"}\n{"text": "b", \n')
    with pytest.raises(DataError, match=re.escape(f"{jl}:2: not valid JSON")):
        read_user_file(jl, "text", label_column="label")

    csv_path.write_text("text,label\nhello,high\n")
    with pytest.raises(DataError, match=re.escape(f"{csv_path}:2: score 'high' is not a number")):
        read_user_file(csv_path, "text", label_column="label", task_type="regression")


def test_unknown_label_in_user_dev_names_file_and_line(tmp_path):
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\ngood,pos\nbad,negative\n")
    with pytest.raises(DataError) as e:
        read_user_file(dev, "text", label_column="label", labels=("neg", "pos"))
    assert one_line(e) == f"{dev}:3: unknown label 'negative'; the training labels are neg, pos"


def ex(labels):
    return [Example("t", None, y, str(i)) for i, y in enumerate(labels)]


def test_label_set_sorts_and_infers():
    assert label_set(ex(["pos", "neg", "pos"])) == ("neg", "pos")
    assert label_set(ex(["10", "2", "1", "2"])) == ("1", "2", "10")  # numerically, not "1","10","2"
    assert label_set(ex(["0.5", "3.2", "4"])) is None  # non-integer numbers: regression
    assert label_set(ex(["1", "2", "3", "4", "5"])) == ("1", "2", "3", "4", "5")  # star ratings: classes
    assert label_set(ex(["1", "2", "3", "4", "5"]), task_type="regression") is None  # explicit wins
    assert label_set(ex(["0.5", "1.5"]), task_type="classification") == ("0.5", "1.5")
    assert infer_task_type([1.5, 2.0]) == "regression" and infer_task_type(["a", "1.5"]) == "classification"


def test_label_set_with_one_class_names_the_file():
    with pytest.raises(DataError) as e:
        label_set(ex(["pos", "pos"]), source="data/train.csv")
    assert one_line(e) == "data/train.csv: the label column has only one class ('pos'); a classifier needs two or more"
