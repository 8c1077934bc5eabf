"""Task loading: one `load_task(settings) -> TaskData` for every recipe (finetune, distill, glue, experiment).

A task is a GLUE task (`data.tasks`, read from the user's glue_data/ folder), a built-in task (`data.builtin`,
written from installed PyPI packages into a cache folder once), or the user's own CSV/TSV/JSONL files
(`data.tabular`). Whatever the source, the result is the same `TaskData`: examples, label set, metrics.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataError
from .tabular import table_columns
from .tasks import GLUE_TASKS, Example, TaskSpec, get_task, label_set, read_glue_split, read_user_file

log = logging.getLogger("miniberts")


@dataclass(frozen=True)
class BuiltinTask:
    """A real labeled data set shipped by a PyPI package, written by `data.builtin.BUILTIN[name](dir)`."""

    text_column: str
    text_pair_column: str | None
    label_column: str
    task_type: str
    metrics: tuple[str, ...]


BUILTIN_TASKS = {
    "rotten_tomatoes": BuiltinTask("sentence", None, "label", "classification", ("accuracy",)),
    "lee_similarity": BuiltinTask("sentence1", "sentence2", "score", "regression", ("pearson", "spearman")),
    "bbc_topics": BuiltinTask("text", None, "label", "classification", ("accuracy",)),
}


@dataclass
class TaskData:
    """One task's examples and how to score them. `spec.labels` is the label set (None = regression); the first
    dev split selects the best epoch (MNLI: dev_matched), the others are reported beside it."""

    spec: TaskSpec
    train: list[Example]
    dev: dict[str, list[Example]]
    # Predicted (and scored, where labeled) after training. Left empty for GLUE: its tests are unlabeled and large,
    # and `miniberts glue --submission` predicts them with the best run of a sweep.
    test: dict[str, list[Example]] = field(default_factory=dict)
    source: str = ""  # the folder the files came from

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def regression(self) -> bool:
        return self.spec.is_regression

    @property
    def id2label(self) -> list[str]:
        return [] if self.regression else list(self.spec.labels)


def cache_root(cache_dir: str = "") -> Path:
    return Path(cache_dir or os.environ.get("MINIBERTS_CACHE") or Path.home() / ".cache" / "miniberts")


def builtin_task_dir(name: str, cache_dir: str = "") -> Path:
    """The built-in task's train/dev/test.tsv, written on first use (SOURCES.md is written last: it marks done)."""
    from .builtin import fetch

    out = cache_root(cache_dir) / "tasks" / name
    if not all((out / f).is_file() for f in ("train.tsv", "dev.tsv", "test.tsv", "SOURCES.md")):
        log.info("writing built-in task %s to %s", name, out)
        fetch(name, out)
    return out


def builtin_name(task: str) -> str | None:
    key = task.strip().lower().replace("-", "_")
    return key if key in BUILTIN_TASKS else None


def check_task_name(task: str) -> None:
    """A GLUE or built-in task name, or a one-line error listing both."""
    if builtin_name(task):
        return
    try:
        get_task(task)
    except DataError:
        raise DataError(f"unknown task {task!r}; GLUE tasks: {', '.join(GLUE_TASKS)}; "
                        f"built-in tasks: {', '.join(BUILTIN_TASKS)}") from None


def _read_user_task(name: str, train: Path, dev: Path, test: Path | None, text_column: str, pair_column: str | None,
                    label_column: str, task_type: str | None, metrics: tuple[str, ...] | None = None) -> TaskData:
    """Train/dev(/test) files with a header; the label set comes from train, dev/test labels must be in it."""
    for flag, value in (("--text-column", text_column), ("--label-column", label_column)):
        if not value:
            raise DataError(f"{train}: {flag} is required for your own files")
    train_examples = read_user_file(train, text_column, pair_column, label_column, task_type)
    labels = label_set(train_examples, task_type, source=train)  # None = regression
    kind = "regression" if labels is None else "classification"
    if labels is None and task_type is None:  # inferred regression: read the scores as numbers, at their lines
        train_examples = read_user_file(train, text_column, pair_column, label_column, "regression")
    dev_examples = read_user_file(dev, text_column, pair_column, label_column, kind, labels)
    tests = {}
    if test is not None:
        labeled = label_column in table_columns(test)
        tests["test"] = read_user_file(test, text_column, pair_column, label_column if labeled else None, kind, labels)
    metrics = metrics or (("pearson", "spearman") if labels is None else ("accuracy",))
    spec = TaskSpec(name, text_column, pair_column, label_column, labels, metrics)
    return TaskData(spec, train_examples, {"dev": dev_examples}, tests, str(train.parent))


def load_task(cfg) -> TaskData:
    """The task named by `cfg.task` (GLUE or built-in) or given by the user-file flags.

    `cfg` is any settings object with the task fields of `FinetuneConfig` (task, glue_dir, train, dev, test,
    text_column, text_pair_column, label_column, task_type, max_train_examples, cache_dir)."""
    user_flags = [f for f in ("train", "dev", "test") if getattr(cfg, f)]
    if cfg.task and user_flags:
        raise DataError(f"give either --task or your own files (--train/--dev), not both "
                        f"(got --task and --{user_flags[0]})")
    if cfg.task:
        check_task_name(cfg.task)
        name = builtin_name(cfg.task)
        if name:
            b = BUILTIN_TASKS[name]
            folder = builtin_task_dir(name, cfg.cache_dir)
            data = _read_user_task(name, folder / "train.tsv", folder / "dev.tsv", folder / "test.tsv", b.text_column,
                                   b.text_pair_column, b.label_column, b.task_type, b.metrics)
        else:
            data = load_glue_task(cfg.task, cfg.glue_dir)
    else:
        if not (cfg.train and cfg.dev):
            raise DataError("no task: give --task NAME (GLUE with --glue-dir, or built-in) or --train FILE --dev FILE")
        test = Path(cfg.test) if cfg.test else None
        data = _read_user_task(Path(cfg.train).stem, Path(cfg.train), Path(cfg.dev), test, cfg.text_column,
                               cfg.text_pair_column or None, cfg.label_column, cfg.task_type or None)
    if cfg.max_train_examples:
        data.train = data.train[: cfg.max_train_examples]
    return data


def load_glue_task(task: str, glue_dir: str | Path) -> TaskData:
    spec = get_task(task)
    if spec.model_task:
        raise DataError(f"{spec.name} has no training data; it is predicted with the {spec.model_task} model "
                        "(`miniberts glue --submission`)")
    if not glue_dir:
        raise DataError(f"the GLUE task {spec.name} needs --glue-dir (the glue_data/ folder)")
    if Path(glue_dir).is_file():
        raise DataError(f"{glue_dir}: is a file, expected the glue_data/ folder (one subfolder per task)")
    if not Path(glue_dir).is_dir():
        raise DataError(f"{glue_dir}: GLUE folder not found")
    train = read_glue_split(glue_dir, spec, "train")
    dev = {s: read_glue_split(glue_dir, spec, s) for s in spec.splits if s.startswith("dev")}
    return TaskData(spec, train, dev, {}, str(Path(glue_dir) / spec.directory))


def targets_of(data: TaskData, examples: list[Example]) -> torch.Tensor:
    """Hard targets: class ids [N] (long) or scores [N] (float32)."""
    if data.regression:
        return torch.tensor([float(ex.label) for ex in examples], dtype=torch.float32)
    label2id = {name: i for i, name in enumerate(data.id2label)}
    return torch.tensor([label2id[str(ex.label)] for ex in examples], dtype=torch.long)
