"""Predict with a fine-tuned classifier or regressor: labels and probabilities (or scores), batched by length.

Input is a CSV/TSV/JSONL file with a text column (and optionally a text-pair column), read by
`data.tasks.read_user_file`, or plain text with one text per line (`infer.read_lines`). Texts run through the model in
length-sorted batches (`infer.run_batches`) and come back in input order. Output is chosen by the file's extension:

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

import numpy as np
import torch

from .checkpoint import load_classifier, read_checkpoint
from .data.tasks import read_user_file
from .errors import DataError, MinibertsError
from .fileio import atomic_write_text
from .infer import read_lines, run_batches
from .model import BertForSequenceClassification
from .tokenizer import WordPieceTokenizer

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
DEFAULT_TEXT_COLUMNS = ("text", "sentence")  # tried in this order when no --text-column is given


def predict_logits(model: BertForSequenceClassification, tokenizer: WordPieceTokenizer, texts: list[str],
                   pairs: list[str] | None, max_length: int = 128, batch_size: int = 64,
                   device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
                   desc: str = "") -> torch.Tensor:
    """[N, num_labels] float32 logits in input order. Leaves the model in eval mode on `device`."""
    model.eval().to(device)

    def step(batch):
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

    return run_batches(tokenizer, texts, pairs, max_length, batch_size, step, device, dtype, desc)


def decode(logits: torch.Tensor, id2label: list[str], regression: bool) -> list:
    """Label names (argmax) for classification, float scores for regression."""
    if regression:
        return logits[:, 0].tolist()
    return [id2label[i] for i in logits.argmax(-1).tolist()]


def file_columns(path: Path) -> list[str]:
    """The header of a CSV/TSV, or the keys of a JSONL file's first object (errors are left to the reader)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.suffix.lower() == ".jsonl":
            for line in f:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        return []
                    return list(record) if isinstance(record, dict) else []
            return []
        quoting = csv.QUOTE_NONE if path.suffix.lower() == ".tsv" else csv.QUOTE_MINIMAL
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        return next(csv.reader(f, delimiter=delimiter, quoting=quoting), [])


def read_inputs(path: str | Path, text_column: str | None = None, text_pair_column: str | None = None
                ) -> tuple[list[str], list[str] | None]:
    """Texts (and pair texts) from a CSV/TSV/JSONL table or a plain text file (any other extension)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        if text_pair_column:
            raise DataError(f"{path}: a text-pair column needs a .csv, .tsv or .jsonl file, not plain text")
        return read_lines(path), None
    if not text_column:
        columns = file_columns(path)
        text_column = next((c for c in DEFAULT_TEXT_COLUMNS if c in columns), None)
        if text_column is None:
            raise DataError(f"{path}: no 'text' or 'sentence' column; name one with --text-column "
                            f"(found {', '.join(map(repr, columns)) or 'no columns'})")
    examples = read_user_file(path, text_column, text_pair_column or None)
    pairs = [ex.text_b for ex in examples] if text_pair_column else None
    return [ex.text_a for ex in examples], pairs


def format_predictions(logits: torch.Tensor, id2label: list[str], regression: bool, fmt: str,
                       indices: list | None = None) -> str:
    """The output file's text in `fmt` ("csv", "tsv" or "jsonl"); one row per logits row."""
    indices = list(range(len(logits))) if indices is None else indices
    if regression:
        header = ["index", "score"]
        rows = [[i, float(s)] for i, s in zip(indices, logits[:, 0].tolist())]
        records = [{"index": i, "score": s} for i, s in rows]
    else:
        probs = torch.softmax(logits.float(), -1).numpy()
        labels = decode(logits, id2label, regression)
        header = ["index", "label"] + [f"prob_{name}" for name in id2label]
        rows = [[i, label, *(f"{p:.6f}" for p in row)] for i, label, row in zip(indices, labels, probs)]
        records = [{"index": i, "label": label, "probabilities": {n: round(float(p), 6) for n, p in zip(id2label, row)}}
                   for i, label, row in zip(indices, labels, probs)]
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


def load_predictor(model_dir: str | Path) -> tuple[BertForSequenceClassification, WordPieceTokenizer]:
    """A fine-tuned model directory; one without a trained head is an error (its head would be random)."""
    ckpt = read_checkpoint(model_dir)
    if not ckpt.has_head("classifier.") or ckpt.config.num_labels < 1:
        raise MinibertsError(f"{model_dir}: no classification/regression head with labels in this checkpoint; "
                             "fine-tune it first (`miniberts finetune`)")
    return load_classifier(model_dir)


def predict_file(model_dir: str | Path, input_path: str | Path, output: str | Path, text_column: str | None = None,
                 text_pair_column: str | None = None, max_length: int = 128, batch_size: int = 64,
                 device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
                 progress: bool = False, backend: str = "torch", int8: bool = False) -> int:
    """Predict every row of `input_path` into `output` (format from its extension). Returns the row count.
    `backend`/`int8`: what runs the encoder (miniberts/backends)."""
    from . import backends

    fmt = output_format(Path(output))
    texts, pairs = read_inputs(input_path, text_column, text_pair_column)
    model, tokenizer = load_predictor(model_dir)
    runner, dtype = backends.for_classifier(model, backend, backends.precision_of(dtype, int8), min(batch_size, len(texts)),
                                             device)
    logits = predict_logits(runner, tokenizer, texts, pairs, max_length, batch_size, device, dtype,
                            "predict" if progress else "")
    if not np.isfinite(logits.numpy()).all():
        raise MinibertsError(f"{model_dir}: the model produced non-finite outputs")
    atomic_write_text(Path(output), format_predictions(logits, model.cfg.id2label, model.cfg.regression, fmt))
    return len(texts)
