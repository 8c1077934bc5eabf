"""The GLUE task table, GLUE split readers, and readers for the user's own CSV/TSV/JSONL files.

GLUE files are read in the layout that the official `download_glue_data.py` (nyu-mll/GLUE-baselines)
writes: `glue_data/<Task>/{train,dev,test}.tsv`, MNLI with `dev_matched/dev_mismatched/test_matched/
test_mismatched.tsv`, and the diagnostic set (AX) as `glue_data/diagnostic/diagnostic.tsv`. The formats
below were checked against that script, HF `datasets` `datasets/glue/glue.py`, HF `transformers`
`src/transformers/data/processors/glue.py` and google-research/bert `run_classifier.py`:

  task    header (train/dev)                                 test header                 text columns
  CoLA    none: source, label, star, sentence                index, sentence             sentence
  SST-2   sentence, label                                    index, sentence             sentence
  MRPC    Quality, #1 ID, #2 ID, #1 String, #2 String        index, #1 ID, ... #2 String #1 String, #2 String
  STS-B   index, genre, ..., sentence1, sentence2, score     the same without score      sentence1, sentence2
  QQP     id, qid1, qid2, question1, question2, is_duplicate id, question1, question2    question1, question2
  MNLI    12 columns (train) / 16 (dev), gold_label last     10 columns, no label        sentence1, sentence2
  QNLI    index, question, sentence, label                   index, question, sentence   question, sentence
  RTE     index, sentence1, sentence2, label                 index, sentence1, sentence2 sentence1, sentence2
  WNLI    as RTE                                             as RTE
  AX      -                                                  index, sentence1, sentence2 sentence1, sentence2

Columns are read by header name wherever a header exists, so the 12- vs 16-column MNLI files need no
special case. Quirks handled here:
- GLUE text contains unbalanced quotes (`" the witness "` in MRPC), so TSVs are read with QUOTE_NONE,
  as HF `datasets` does.
- The MRPC train/dev header is copied from `msr_paraphrase_train.txt`, which starts with a UTF-8 BOM
  (noted in HF `datasets` glue.py), so every file is opened as `utf-8-sig`.
- QQP and MNLI training files contain a few rows with missing fields (transformers' QqpProcessor
  skips them on IndexError). We skip them in *train* only, and log how many; in dev/test such a row
  is an error naming file and line, because a dropped test row breaks the submission.

Label orders are those of transformers' processors (`get_labels`), so a classifier head trained here
has the same label ids as one trained there; label *names* are the strings GLUE uses in its files and
expects in submissions (0/1 for CoLA, SST-2, MRPC, QQP, WNLI).
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .tabular import delimited_rows, label_text, read_table, require_columns

log = logging.getLogger(__name__)

TASK_TYPES = ("classification", "regression")

_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_MNLI_SPLITS = {
    "train": "train.tsv",
    "dev_matched": "dev_matched.tsv",
    "dev_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}
_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_NLI3 = ("contradiction", "entailment", "neutral")


@dataclass(frozen=True)
class TaskSpec:
    """How to read one task's files and how to score it.

    `metrics` are the figures the GLUE leaderboard reports for the task, in its column order
    (MRPC "F1/Acc", STS-B "Pearson/Spearman"); the task's own score is their mean (see metrics.py).
    `labels` is None for regression. Column names are header names; `columns` names the columns of
    the splits listed in `headerless` (CoLA train/dev are the only GLUE files without a header).
    """

    name: str
    text_a: str
    text_b: str | None
    label_column: str | None
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    splits: dict[str, str] = field(default_factory=lambda: dict(_SPLITS))
    folder: str = ""  # directory under glue_data; defaults to `name`
    index_column: str = "index"  # the id column of test files, echoed in submissions
    headerless: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    skip_bad_train_rows: bool = False  # QQP/MNLI train have rows with missing fields: skip, count, log
    model_task: str | None = None  # AX has no training data: it is predicted by the MNLI model

    @property
    def directory(self) -> str:
        return self.folder or self.name

    @property
    def is_regression(self) -> bool:
        return self.labels is None


GLUE_TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("CoLA", "sentence", None, "label", _BINARY, ("mcc",), headerless=("train", "dev"), columns=("source", "label", "star", "sentence")),
    TaskSpec("SST-2", "sentence", None, "label", _BINARY, ("accuracy",)),
    TaskSpec("MRPC", "#1 String", "#2 String", "Quality", _BINARY, ("f1", "accuracy")),
    TaskSpec("STS-B", "sentence1", "sentence2", "score", None, ("pearson", "spearman")),
    TaskSpec("QQP", "question1", "question2", "is_duplicate", _BINARY, ("f1", "accuracy"), index_column="id", skip_bad_train_rows=True),
    TaskSpec("MNLI", "sentence1", "sentence2", "gold_label", _NLI3, ("accuracy",), splits=_MNLI_SPLITS, skip_bad_train_rows=True),
    TaskSpec("QNLI", "question", "sentence", "label", _NLI2, ("accuracy",)),
    TaskSpec("RTE", "sentence1", "sentence2", "label", _NLI2, ("accuracy",)),
    TaskSpec("WNLI", "sentence1", "sentence2", "label", _BINARY, ("accuracy",)),
    TaskSpec("AX", "sentence1", "sentence2", None, _NLI3, ("mcc",), splits={"test": "diagnostic.tsv"}, folder="diagnostic", model_task="MNLI"),
)}


@dataclass
class Example:
    """One input: text (pair), label (str for classification, float for regression, None in test)
    and the file's id for the row (None where the file has no id column)."""

    text_a: str
    text_b: str | None
    label: str | float | None
    index: str | None


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_task(task: "str | TaskSpec") -> TaskSpec:
    """Look a task up by name, ignoring case, '-' and '_' ("sst2", "STS-B", "mnli" all work)."""
    if isinstance(task, TaskSpec):
        return task
    for spec in GLUE_TASKS.values():
        if _key(spec.name) == _key(task):
            return spec
    raise DataError(f"unknown task {task!r}; known GLUE tasks: {', '.join(GLUE_TASKS)}")


def parse_score(raw: str, where: str) -> float:
    """A regression label; NaN and infinities are refused here, at their line, not later as a diverged loss."""
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{where}: score {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: score {raw!r} is not a finite number")
    return value


def _parse_label(spec: TaskSpec, raw: str, where: str) -> str | float:
    if spec.is_regression:
        return parse_score(raw, where)
    if raw not in spec.labels:
        raise DataError(f"{where}: unknown label {raw!r}; {spec.name} labels are {', '.join(spec.labels)}")
    return raw


def read_glue_split(glue_dir: "str | Path", task: "str | TaskSpec", split: str) -> list[Example]:
    """Read one split of a GLUE task from `glue_dir` (the folder `download_glue_data.py` writes)."""
    spec = get_task(task)
    if split not in spec.splits:
        raise DataError(f"{spec.name} has no split {split!r}; its splits are {', '.join(spec.splits)}")
    path = Path(glue_dir) / spec.directory / spec.splits[split]
    is_test = split.startswith("test")
    rows = delimited_rows(path, "\t")

    if split in spec.headerless:
        header = list(spec.columns)
    else:
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path}: empty file (no header, no examples)")
        header = first[1]
    wanted = [spec.text_a] + ([spec.text_b] if spec.text_b else [])
    wanted += [spec.index_column] if is_test else [spec.label_column]
    require_columns(path, header, wanted)
    pos = {name: i for i, name in enumerate(header)}

    examples, skipped = [], []
    for line, fields in rows:
        if len(fields) != len(header):
            problem = f"expected {len(header)} tab-separated fields, found {len(fields)}"
        elif not is_test and fields[pos[spec.label_column]] == "":
            problem = "empty label"
        else:
            problem = None
        if problem:
            if split == "train" and spec.skip_bad_train_rows:
                skipped.append(line)
                continue
            raise DataError(f"{path}:{line}: {problem}")
        label = None if is_test else _parse_label(spec, fields[pos[spec.label_column]], f"{path}:{line}")
        index = fields[pos[spec.index_column]] if spec.index_column in pos else None
        text_b = fields[pos[spec.text_b]] if spec.text_b else None
        examples.append(Example(fields[pos[spec.text_a]], text_b, label, index))

    if skipped:
        # Known QQP/MNLI training-file defects; logged so that a badly broken file is noticed.
        log.warning("%s: skipped %d malformed training rows (lines %s)", path, len(skipped),
                    ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else ""))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


# ---------------------------------------------------------------------------------------------
# The user's own files


def read_user_file(path: "str | Path", text_column: str, text_pair_column: str | None = None,
                   label_column: str | None = None, task_type: str | None = None,
                   labels: "tuple[str, ...] | None" = None) -> list[Example]:
    """Read a .csv, .tsv or .jsonl file with a header (or keys) naming the columns (`tabular.read_table`).

    Labels stay strings unless `task_type == "regression"` (then finite floats). Pass the training label set
    as `labels` when reading dev/test files: a label outside it is an error naming file and line.
    Example.index is the 0-based data row.
    """
    path = Path(path)
    if task_type not in (None, *TASK_TYPES):
        raise DataError(f"{path}: task type {task_type!r} is not one of {', '.join(TASK_TYPES)}")
    table = read_table(path)
    table.require([c for c in (text_column, text_pair_column, label_column) if c])

    examples = []
    for line, row in table.rows:
        text_a = table.text(line, row, text_column)
        text_b = table.text(line, row, text_pair_column) if text_pair_column else None
        label = None
        if label_column:
            raw = table.label(line, row, label_column)
            if task_type == "regression":
                label = parse_score(raw, f"{path}:{line}")
            elif labels is not None and raw not in labels:
                raise DataError(f"{path}:{line}: unknown label {raw!r}; the training labels are {', '.join(labels)}")
            else:
                label = raw
        examples.append(Example(text_a, text_b, label, str(len(examples))))
    if not examples:
        raise DataError(f"{path}: no examples (a header but no rows)")
    return examples


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def infer_task_type(labels: list) -> str:
    """"regression" if every label is a number and at least one is not a whole number ("3.5"),
    else "classification". So "0/1" and star ratings "1".."5" are classes; pass the task type
    explicitly to regress on whole-number scores. "NaN" and "inf" count as numbers that are not whole,
    so a score column with a NaN is a regression whose reader then names the NaN's line (not ~80 classes)."""
    values = [_as_float(label_text(v)) for v in labels]
    if values and all(v is not None for v in values) and any(not math.isfinite(v) or v != int(v) for v in values):
        return "regression"
    return "classification"


def label_set(examples: list[Example], task_type: str | None = None,
              source: "str | Path" = "the training data") -> tuple[str, ...] | None:
    """The label vocabulary from training examples: None for regression, else the sorted classes
    (numerically when every label is a number, so "2" < "10"). An explicit `task_type` wins over
    `infer_task_type`. `source` (the file) is named in errors."""
    if task_type not in (None, *TASK_TYPES):
        raise DataError(f"{source}: task type {task_type!r} is not one of {', '.join(TASK_TYPES)}")
    values = [ex.label for ex in examples]
    if not values or any(v is None for v in values):
        raise DataError(f"{source}: examples without labels; a label column is needed for training")
    if (task_type or infer_task_type(values)) == "regression":
        return None
    classes = {label_text(v) for v in values}
    if len(classes) < 2:
        raise DataError(f"{source}: the label column has only one class ({next(iter(classes))!r}); "
                        "a classifier needs two or more")
    numeric = all(_is_number(c) for c in classes)
    return tuple(sorted(classes, key=float if numeric else None))
