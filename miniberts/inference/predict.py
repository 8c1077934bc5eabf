"""Predict with a fine-tuned classifier or regressor: labels and probabilities (or scores), batched by length.

Input is a CSV/TSV/JSONL file with a text column (and optionally a text-pair column), read by
`data.tabular.read_table`, or plain text with one text per line (`batching.read_lines`). Texts run through the model in
length-sorted batches (`batching.run_batches`) and come back in input order. Output is chosen by the file's extension:

  .jsonl  {"index": 0, "label": "positive", "probabilities": {"negative": 0.02, "positive": 0.98}}
  .csv    index,label,prob_negative,prob_positive          (regression: index,score)
  .tsv    the same, tab-separated

`index` is the 0-based row (or line) of the input. Probabilities are a float32 softmax over the logits.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import Checkpoint, load_classifier, read_checkpoint
from ..config import check_length
from ..data.tabular import SUFFIXES as TABLE_SUFFIXES, check_input_file, read_table
from ..errors import DataError, MinibertsError
from ..fileio import atomic_write_text, check_output_path
from ..model import BertForSequenceClassification
from ..tokenizer import WordPieceTokenizer
from .batching import check_finite, read_lines, run_batches
from .config import PredictConfig

DEFAULT_TEXT_COLUMNS = ("text", "sentence")  # tried in this order when no --text-column is given


def predict_logits(model: BertForSequenceClassification, tokenizer: WordPieceTokenizer, texts: list[str],
                   pairs: list[str] | None, max_length: int = 128, batch_size: int = 64,
                   device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
                   desc: str = "") -> torch.Tensor:
    """[N, num_labels] float32 logits in input order. Leaves the model in eval mode on `device`."""
    return run_batches(tokenizer, texts, pairs, max_length, batch_size, classify_step(model.eval().to(device)), device,
                       dtype, desc)


def classify_step(model: nn.Module):
    """A `run_batches` step: one padded batch -> the classifier's logits [b, num_labels]."""
    def step(batch):
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

    return step


def checked_logits(model: BertForSequenceClassification, tokenizer: WordPieceTokenizer, texts: list[str],
                   pairs: list[str] | None, cfg: PredictConfig, device: torch.device, dtype: torch.dtype, where: str,
                   desc: str = "", runner: nn.Module | None = None) -> torch.Tensor:
    """`predict_logits` for `predict_file` and `Model.predict`: the length is checked against the model before any
    text runs, and non-finite outputs (broken weights) are refused. `runner`: what computes the logits in `model`'s
    place (a backend, miniberts/inference/backends; default `model` itself)."""
    check_length(cfg.max_length, model.cfg, where, pairs is not None)
    logits = predict_logits(runner or model, tokenizer, texts, pairs, cfg.max_length, cfg.batch_size, device, dtype,
                            desc)
    check_finite(logits, where)
    return logits


def decode(logits: torch.Tensor, id2label: list[str], regression: bool) -> list:
    """Label names (argmax) for classification, float scores for regression."""
    if regression:
        return logits[:, 0].tolist()
    return [id2label[i] for i in logits.argmax(-1).tolist()]


def results(logits: torch.Tensor, id2label: list[str], regression: bool) -> list:
    """Per row, a score (regression) or {"label": name, "probabilities": {name: p}} (a float32 softmax): what
    `Model.predict` returns and the output files hold."""
    if regression:
        return decode(logits, id2label, regression)
    probs = torch.softmax(logits.float(), -1).tolist()
    return [{"label": label, "probabilities": dict(zip(id2label, row))}
            for label, row in zip(decode(logits, id2label, regression), probs)]


def read_inputs(path: str | Path, text_column: str | None = None, text_pair_column: str | None = None
                ) -> tuple[list[str], list[str] | None]:
    """Texts (and pair texts) from a CSV/TSV/JSONL table or a plain text file (any other extension)."""
    path = check_input_file(Path(path))
    if path.suffix.lower() not in TABLE_SUFFIXES:
        if text_pair_column:
            raise DataError(f"{path}: a text-pair column needs a .csv, .tsv or .jsonl file, not plain text")
        return read_lines(path), None
    table = read_table(path)
    if not text_column:
        text_column = next((c for c in DEFAULT_TEXT_COLUMNS if c in table.columns), None)
        if text_column is None:
            raise DataError(f"{path}: no 'text' or 'sentence' column; name one with --text-column "
                            f"(found {', '.join(map(repr, table.columns)) or 'no columns'})")
    table.require([c for c in (text_column, text_pair_column) if c])
    if not table.rows:
        raise DataError(f"{path}: no examples (a header but no rows)")
    texts = [table.text(line, row, text_column) for line, row in table.rows]
    pairs = [table.text(line, row, text_pair_column) for line, row in table.rows] if text_pair_column else None
    return texts, pairs


def format_predictions(logits: torch.Tensor, id2label: list[str], regression: bool, fmt: str,
                       indices: list | None = None) -> str:
    """The output file's text in `fmt` ("csv", "tsv" or "jsonl"); one row per logits row."""
    indices = list(range(len(logits))) if indices is None else indices
    items = results(logits, id2label, regression)
    if regression:
        header = ["index", "score"]
        rows = [[i, s] for i, s in zip(indices, items)]
        records = [{"index": i, "score": s} for i, s in rows]
    else:
        header = ["index", "label"] + [f"prob_{name}" for name in id2label]
        rows = [[i, r["label"], *(f"{p:.6f}" for p in r["probabilities"].values())] for i, r in zip(indices, items)]
        records = [{"index": i, "label": r["label"], "probabilities": {n: round(p, 6) for n, p in r["probabilities"].items()}}
                   for i, r in zip(indices, items)]
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in records)
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    writer.writerows([header, *rows])
    return buf.getvalue()


def output_format(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unsupported output type {suffix or '(none)'!r}; use .csv, .tsv or .jsonl")
    return suffix[1:]


def has_task_head(ckpt: Checkpoint) -> bool:
    """A trained classification/regression head with its labels (without one, a head would be random)."""
    return ckpt.has_head("classifier.") and ckpt.config.num_labels >= 1


def no_head(where: str) -> MinibertsError:
    return MinibertsError(f"{where}: no classification/regression head with labels in this checkpoint; "
                          "fine-tune it first (`miniberts finetune`)")


def load_predictor(model_dir: str | Path) -> tuple[BertForSequenceClassification, WordPieceTokenizer]:
    """A fine-tuned model directory; one without a trained head is an error (its head would be random)."""
    ckpt = read_checkpoint(model_dir)
    if not has_task_head(ckpt):
        raise no_head(str(model_dir))
    return load_classifier(ckpt)


def predict_file(model_dir: str | Path, input_path: str | Path, output: str | Path, text_column: str | None = None,
                 text_pair_column: str | None = None, max_length: int = 128, batch_size: int = 64,
                 device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
                 progress: bool = False, backend: str = "torch", int8: bool = False) -> int:
    """Predict every row of `input_path` into `output` (format from its extension). Returns the row count.
    `backend`/`int8`: what runs the encoder (miniberts/inference/backends)."""
    from . import backends

    cfg = PredictConfig(max_length=max_length, batch_size=batch_size, backend=backend, int8=int8)  # before any file
    fmt = output_format(Path(output))
    check_output_path(Path(output))  # a folder as --output fails before the model runs
    texts, pairs = read_inputs(input_path, text_column, text_pair_column)
    model, tokenizer = load_predictor(model_dir)
    runner, dtype = backends.for_classifier(model, cfg.backend, backends.precision_of(dtype, cfg.int8),
                                            min(batch_size, len(texts)), device, tokenizer=tokenizer)
    logits = checked_logits(model, tokenizer, texts, pairs, cfg, device, dtype, str(model_dir),
                            "predict" if progress else "", runner)
    atomic_write_text(Path(output), format_predictions(logits, model.cfg.id2label, model.cfg.regression, fmt))
    return len(texts)
