"""Fine-tuning: a classification or regression head on the pooled [CLS] output, trained by an explicit loop.

The recipe is BERT's (Devlin et al. 2019, sec. 4 and appendix A.3; google-research/bert run_classifier.py) as the
miniatures' model card applies it: AdamW without decay on biases and LayerNorm, linear warmup over the first 10% of
steps then linear decay to zero, gradient clipping at 1.0, evaluation on dev after every epoch, the best epoch kept.

Three layers, each usable alone:
- `data.load.load_task(cfg)` -> TaskData: a GLUE task, a built-in example task or the user's CSV/TSV/JSONL files,
  with its label set and its GLUE-style metrics (the data layer; the recipe only calls it).
- `Encoded` + `bucket_batches`: token ids plus *any* per-example target tensor (class ids, scores, or a teacher's
  soft targets), cut into batches of similar length in shuffled order, so little compute goes to padding.
- `train_classifier(model, train, loss_fn, cfg, evaluate)`: the loop. The loss is a function
  `loss_fn(logits [B, C] float32, batch) -> scalar`, so distillation reuses the loop with a soft-target loss.

`run(cfg)` joins them and writes RUN/: the best model in Hugging Face layout (`save_hf`), RUN/log.jsonl and, last,
RUN/metrics.json (every epoch's dev metrics and the best). metrics.json exists only for a finished run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..checkpoint import check_max_length, load_classifier, save_hf
from ..data.load import TaskData, builtin_name, builtin_task_dir, cache_root, load_task, targets_of
from ..data.tasks import Example, get_task
from ..device import DTYPES, autocast, pick_device, resolve_dtype
from ..errors import MinibertsError
from ..fileio import atomic_write_text
from ..inference.predict import decode, format_predictions, predict_logits
from ..metrics import task_metrics
from ..model import BertForSequenceClassification
from ..model_card import CardInfo, write_card
from ..settings import validate
from ..tokenizer import CASED_HELP, VOCAB_HELP, WordPieceTokenizer
from . import lexicon, rundir
from .common import JsonlLog, check_finite, lr_at, make_optimizer, set_lr, set_seed, write_json

log = logging.getLogger("miniberts")

LossFn = Callable[[torch.Tensor, dict], torch.Tensor]


# --- configuration --------------------------------------------------------------------------------------------

@dataclass
class LoopConfig:
    """The knobs of `train_classifier`; recipes built on the loop (fine-tuning, distillation) extend it."""

    batch_size: int = field(default=32, metadata={"help": "examples per optimizer step", "min": 1})
    lr: float = field(default=5e-5, metadata={"help": "peak learning rate (AdamW)", "gt": 0})
    epochs: int = field(default=4, metadata={"help": "passes over the training set", "min": 1})
    warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of steps of linear warmup", "min": 0, "max": 1})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decay on matrices and embeddings", "min": 0})
    clip_norm: float = field(default=1.0, metadata={"help": "global gradient-norm clip", "gt": 0})
    seed: int = field(default=42, metadata={"help": "seed for head init, dropout and batch order", "min": 0})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 where native) | fp32 | bf16", "choices": DTYPES})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0 = all epochs)", "min": 0})
    log_every: int = field(default=50, metadata={"help": "steps between training-loss log records", "min": 1})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self):
        validate(self)  # every field of the subclass too (FinetuneConfig, DistillConfig): one check, up front


@dataclass
class FinetuneConfig(LoopConfig):
    model: str = field(default="", metadata={"help": "model directory (HF or Google TF layout), a Hub id "
                                                     "(org/name[@revision], released:tiny) or preset name"})
    out: str = field(default="", metadata={"help": "run directory to write (HF model + metrics.json + log.jsonl)"})
    task: str = field(default="", metadata={"help": "GLUE task (with --glue-dir) or built-in task: " + ", ".join(
        ["rotten_tomatoes", "lee_similarity", "bbc_topics"])})
    glue_dir: str = field(default="", metadata={"help": "the glue_data/ folder (one subfolder per task)"})
    train: str = field(default="", metadata={"help": "your training file (.csv, .tsv or .jsonl)"})
    dev: str = field(default="", metadata={"help": "your dev file, same columns"})
    test: str = field(default="", metadata={"help": "optional test file: predicted, and scored if labeled"})
    text_column: str = field(default="", metadata={"help": "column with the text"})
    text_pair_column: str = field(default="", metadata={"help": "column with the second text of a pair"})
    label_column: str = field(default="", metadata={"help": "column with the label"})
    task_type: str = field(default="", metadata={"help": "classification | regression (default: from the labels)",
                                                   "choices": ("", "classification", "regression")})
    max_length: int = field(default=128, metadata={"help": "tokens per example, [CLS]/[SEP] included", "min": 2})
    eval_batch_size: int = field(default=128, metadata={"help": "batch size for dev/test prediction", "min": 1})
    max_train_examples: int = field(default=0, metadata={"help": "use only the first N training examples (0 = all)",
                                                         "min": 0})
    cache_dir: str = field(default="", metadata={"help": "where built-in tasks are written (default "
                                                          "$MINIBERTS_CACHE or ~/.cache/miniberts)"})
    vocab: str = field(default="", metadata={"help": VOCAB_HELP})
    cased: bool = field(default=False, metadata={"help": CASED_HELP})
    init_lexicon: str = field(default="", metadata={"help": lexicon.INIT_HELP})
    lexicon_source: str = field(default="input", metadata={"help": lexicon.SOURCE_HELP, "choices": lexicon.SOURCES})
    fresh: bool = field(default=False, metadata={"help": "remove the results in --out first, even if they were "
                                                         "made with other settings (else such a rerun is refused)"})


# --- data: token ids + targets, batched by length -------------------------------------------------------------

@dataclass
class Encoded:
    """N tokenized examples and one target row per example.

    `targets` is any tensor whose first dimension is N: class ids [N], scores [N], a teacher's probabilities or
    logits [N, C], ... `batch(idx)` hands the rows of the batch to the loss as `batch["targets"]`.
    """

    tokenizer: WordPieceTokenizer
    ids: list[list[int]]
    type_ids: list[list[int]]
    targets: torch.Tensor

    def __post_init__(self):
        if len(self.ids) != len(self.targets):
            raise ValueError(f"{len(self.ids)} examples but {len(self.targets)} target rows")

    @classmethod
    def from_texts(cls, tokenizer: WordPieceTokenizer, texts: list[str], pairs: list[str] | None,
                   targets: torch.Tensor, max_length: int) -> "Encoded":
        ids, type_ids = tokenizer.encode(texts, pairs, max_length)
        return cls(tokenizer, ids, type_ids, targets)

    @classmethod
    def from_examples(cls, tokenizer: WordPieceTokenizer, examples: list[Example], targets: torch.Tensor,
                      max_length: int) -> "Encoded":
        pairs = [ex.text_b or "" for ex in examples] if any(ex.text_b is not None for ex in examples) else None
        return cls.from_texts(tokenizer, [ex.text_a for ex in examples], pairs, targets, max_length)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    def batch(self, idx: list[int]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, token_type_ids [B, S]; targets [B, ...]; index [B] (rows of this data)."""
        out = self.tokenizer.pad_batch([self.ids[i] for i in idx], [self.type_ids[i] for i in idx])
        out["targets"] = self.targets[idx]
        out["index"] = torch.tensor(idx)
        return out


def bucket_batches(lengths: list[int], batch_size: int, rng: random.Random, bucket: int = 50) -> list[list[int]]:
    """One epoch of batches: shuffle, sort each window of `bucket` batches by length, cut, shuffle the batches.

    Padding then costs little (neighbours in a window have similar lengths), while every epoch still sees new
    batch compositions and a random batch order. ceil(N / batch_size) batches, whatever the shuffle.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * bucket
    batches = []
    for start in range(0, len(order), window):
        part = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


# --- losses ---------------------------------------------------------------------------------------------------

def cross_entropy_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """Hard labels: batch["targets"] holds class ids [B]."""
    return F.cross_entropy(logits, batch["targets"])


def mse_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """Regression: batch["targets"] holds scores [B]; the model has one output."""
    return F.mse_loss(logits.squeeze(-1), batch["targets"])


def default_loss(regression: bool) -> LossFn:
    return mse_loss if regression else cross_entropy_loss


# --- the loop -------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    history: list[dict]  # one record per epoch: epoch, step, train_loss, and what `evaluate` returned
    best: dict | None  # the record of the kept epoch (highest "score"); None without evaluation
    steps: int
    seconds: float


def _score(record: dict) -> float:
    score = record.get("score", float("nan"))
    return -math.inf if score is None or math.isnan(score) else score  # nan (e.g. a constant regressor) never wins


def train_classifier(model: nn.Module, train: Encoded, loss_fn: LossFn, cfg: LoopConfig,
                     evaluate: Callable[[nn.Module], dict] | None = None, logger: JsonlLog | None = None,
                     device: torch.device | None = None) -> TrainResult:
    """Train `model` (anything called as model(input_ids, attention_mask, token_type_ids) -> logits [B, C]).

    Per step: a length-bucketed batch (`bucket_batches`), forward under bf16 autocast where native, then
    `loss_fn(logits.float(), batch)` in float32 (batch holds input_ids, attention_mask, token_type_ids, the rows
    `targets` of `train.targets` and `index`), backward, clip to `cfg.clip_norm`, AdamW step, warmup + linear
    decay schedule. After each epoch `evaluate(model)` (called in eval mode, no grad) returns a dict with
    "score", the number to maximize; the best epoch's weights are restored into `model` at the end (without
    `evaluate`, the last epoch is kept).

    For distillation pass soft targets and a soft loss, e.g. with teacher probabilities `P` [N, C]:
        data = Encoded.from_examples(tokenizer, examples, P, max_length)
        loss = lambda logits, batch: -(batch["targets"] * logits.log_softmax(-1)).sum(-1).mean()
    or compute the teacher inside `loss_fn` from batch["input_ids"] (teacher in eval mode, under no_grad).
    """
    if len(train) == 0:
        raise MinibertsError("no training examples")
    device = device or pick_device()
    dtype = resolve_dtype(cfg.dtype, device)
    model.to(device).train()
    rng = random.Random(cfg.seed)
    lengths = train.lengths
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = round(cfg.warmup_ratio * total)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]

    history, best, best_state = [], None, None
    step, start = 0, time.time()
    window_loss, window_tokens, window_start = 0.0, 0, time.time()  # since the last log record
    bar = tqdm(total=total, desc="train", unit="step", disable=not cfg.progress, leave=False)
    for epoch in range(1, cfg.epochs + 1):
        epoch_loss, epoch_steps = 0.0, 0
        for idx in bucket_batches(lengths, cfg.batch_size, rng):
            if step >= total:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in train.batch(idx).items()}
            lr = lr_at(step, total, warmup, cfg.lr)
            set_lr(optimizer, lr)
            with autocast(device, dtype):
                logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            loss = loss_fn(logits.float(), batch)  # float32 loss whatever the autocast dtype (as torchtune does)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
            optimizer.step()
            step += 1
            value = loss.item()
            check_finite(step, value)
            epoch_loss, epoch_steps, window_loss = epoch_loss + value, epoch_steps + 1, window_loss + value
            window_tokens += int(batch["attention_mask"].sum())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{value:.4f}", lr=f"{lr:.2e}")
            if logger and (step % cfg.log_every == 0 or step == total):
                n = (step - 1) % cfg.log_every + 1
                logger.write({"split": "train", "step": step, "epoch": epoch, "loss": window_loss / n, "lr": lr,
                              "grad_norm": float(grad_norm),
                              "tokens_per_s": window_tokens / (time.time() - window_start)})
                window_loss, window_tokens, window_start = 0.0, 0, time.time()
        record = {"epoch": epoch, "step": step, "train_loss": epoch_loss / max(1, epoch_steps)}
        if evaluate is not None:
            eval_start = time.time()
            model.eval()
            with torch.no_grad():
                record.update(evaluate(model))
            model.train()
            window_start += time.time() - eval_start  # evaluation time is not training throughput
            if best is None or _score(record) > _score(best):
                best = record
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        history.append(record)
        if logger:
            logger.write({"split": "dev", **record})
        log.info("epoch %d: train loss %.4f%s", epoch, record["train_loss"],
                 f", dev score {record['score']:.2f}" if "score" in record else "")
        if step >= total:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(history, best, step, time.time() - start)


# --- evaluation -----------------------------------------------------------------------------------------------

def evaluate_split(model: nn.Module, tokenizer: WordPieceTokenizer, data: TaskData, examples: list[Example],
                   max_length: int, batch_size: int, device: torch.device, dtype: torch.dtype
                   ) -> tuple[dict[str, float], torch.Tensor]:
    """(the task's metrics in percent with "score", logits [N, C]) on labeled examples."""
    logits = _logits(model, tokenizer, examples, max_length, batch_size, device, dtype)
    preds = decode(logits, data.id2label, data.regression)
    labels = [ex.label if data.regression else str(ex.label) for ex in examples]
    return task_metrics(data.spec, preds, labels), logits


def _logits(model, tokenizer, examples, max_length, batch_size, device, dtype) -> torch.Tensor:
    pairs = [ex.text_b or "" for ex in examples] if any(ex.text_b is not None for ex in examples) else None
    texts = [ex.text_a for ex in examples]
    return predict_logits(model, tokenizer, texts, pairs, max_length, batch_size, device, dtype)


# --- the recipe -----------------------------------------------------------------------------------------------

def run(cfg: FinetuneConfig, data: TaskData | None = None) -> dict:
    """Fine-tune `cfg.model` on the task; write RUN = cfg.out; return the contents of RUN/metrics.json.

    `data` skips loading the task again (the GLUE sweep loads each task once for its many runs). RUN is locked for
    the run and records its identity (`rundir`): a finished run with the same settings and files is not trained
    again (its metrics are returned), an unfinished one restarts from scratch, one made with other settings is
    refused unless `cfg.fresh`.
    """
    if not cfg.model:
        raise MinibertsError("--model is required (a model directory or a preset name)")
    if not cfg.out:
        raise MinibertsError("--out is required (the run directory to write)")
    check_max_length(cfg.model, cfg.max_length)  # from config.json alone, before any data file is read
    lexicon.check_random_start(cfg, cfg.model, "--model")
    data = data or load_task(cfg)
    with rundir.claim_run(cfg.out, run_identity(cfg), cfg.fresh) as run_dir:
        if run_dir.finished:
            return run_dir.finished_metrics()
        return _train_run(cfg, data, run_dir.path)


def inherit_lexicon(cfg: FinetuneConfig, model: BertForSequenceClassification, tokenizer: WordPieceTokenizer
                    ) -> None:
    """--init-lexicon: the random `model`'s word embeddings from the teacher's (`lexicon`)."""
    if cfg.init_lexicon:
        lexicon.init_embeddings(model.bert, tokenizer, cfg.init_lexicon, cfg.lexicon_source, cache_root(cfg.cache_dir))


def run_identity(cfg: FinetuneConfig, **inputs) -> dict:
    """What defines a run's results (`rundir.identity`): its settings, the bytes of the model and of the task's
    files (a GLUE task's folder, a built-in task's cache, the user's files); `inputs` adds a recipe's own."""
    task_files = {"model": cfg.model, "train": cfg.train, "dev": cfg.dev, "test": cfg.test, "vocab": cfg.vocab,
                  **inputs}
    # moving the GLUE folder changes nothing
    task_files["glue_dir"] = Path(cfg.glue_dir) / get_task(cfg.task).directory if _glue(cfg) else ""
    if cfg.task and builtin_name(cfg.task):
        task_files["cache_dir"] = builtin_task_dir(builtin_name(cfg.task), cfg.cache_dir)
    if cfg.init_lexicon:
        task_files["init_lexicon"] = cfg.init_lexicon
    return rundir.identity(cfg, task_files, skip=lexicon.identity_skip(cfg))


def _glue(cfg: FinetuneConfig) -> bool:
    return bool(cfg.task and cfg.glue_dir and not builtin_name(cfg.task))


def write_model_card(out: Path, recipe: str, cfg: FinetuneConfig, data: TaskData, metrics: dict,
                     bases: list[str]) -> None:
    """RUN/README.md, the card of the model saved in RUN: where it came from, the run's settings and scores."""
    write_card(out, CardInfo(recipe, bases, rundir.settings(cfg), metrics, list(data.spec.metrics), _glue(cfg)))


def _train_run(cfg: FinetuneConfig, data: TaskData, out: Path) -> dict:
    for stale in ("metrics.json", "log.jsonl"):  # a restarted run starts clean; metrics.json means "finished"
        (out / stale).unlink(missing_ok=True)

    set_seed(cfg.seed)  # before the model: a preset's random init and the new head depend on it
    model, tokenizer = load_classifier(cfg.model, data.id2label or None, data.regression, cfg.vocab, cfg.cased)
    inherit_lexicon(cfg, model, tokenizer)
    device = pick_device()
    dtype = resolve_dtype(cfg.dtype, device)
    train = Encoded.from_examples(tokenizer, data.train, targets_of(data, data.train), cfg.max_length)
    logger = JsonlLog(out / "log.jsonl")
    log.info("fine-tuning %s on %s: %d train examples, %s, batch %d, lr %g, %d epochs, %s on %s", cfg.model, data.name,
             len(train), "regression" if data.regression else f"{len(data.id2label)} labels", cfg.batch_size, cfg.lr,
             cfg.epochs, str(dtype).removeprefix("torch."), device)

    def evaluate(m):
        record = {}
        for i, (split, examples) in enumerate(data.dev.items()):
            record[split], _ = evaluate_split(m, tokenizer, data, examples, cfg.max_length, cfg.eval_batch_size,
                                              device, dtype)
            if i == 0:
                record["score"] = record[split]["score"]
        return record

    result = train_classifier(model, train, default_loss(data.regression), cfg, evaluate, logger, device)
    save_hf(model, tokenizer, out)  # the best epoch's weights (train_classifier restored them)

    metrics = {
        "task": data.name,
        "model": cfg.model,
        "data": data.source,
        "labels": data.id2label or None,
        "metric": "/".join(data.spec.metrics),
        "selection": f"{next(iter(data.dev))} score",
        "train_examples": len(train),
        **run_record(result, cfg),
    }
    if data.test:
        metrics["test"] = predict_test_splits(model, tokenizer, data, cfg, out, device, dtype)
    write_model_card(out, "finetune", cfg, data, metrics, [cfg.model])
    write_json(out / "metrics.json", metrics)  # last: its presence marks a finished run
    best = result.best
    log.info("best epoch %d: dev %s -> %s", best["epoch"], _brief(best[next(iter(data.dev))]), out)
    return metrics


def run_record(result: TrainResult, cfg: LoopConfig) -> dict:
    """What every metrics.json of a classifier run holds: the loop's history, the kept epoch, how it was run."""
    return {
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "epochs": result.history,
        "best": result.best,
        "config": dataclasses.asdict(cfg),
        "argv": sys.argv,
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }


def predict_test_splits(model, tokenizer, data: TaskData, cfg: FinetuneConfig, out: Path, device, dtype) -> dict:
    """Predict each test split into RUN/predictions_<split>.tsv; score it where it carries labels."""
    scores = {}
    for split, examples in data.test.items():
        if not examples:
            continue
        logits = _logits(model, tokenizer, examples, cfg.max_length, cfg.eval_batch_size, device, dtype)
        text = format_predictions(logits, data.id2label, data.regression, "tsv", [ex.index for ex in examples])
        atomic_write_text(out / f"predictions_{split}.tsv", text)
        if all(ex.label is not None for ex in examples):
            labels = [ex.label if data.regression else str(ex.label) for ex in examples]
            scores[split] = task_metrics(data.spec, decode(logits, data.id2label, data.regression), labels)
    return scores


def _brief(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k != "score")
