"""Pre-trained Distillation (Turc et al., 2019, "Well-Read Students Learn Better", section 3).

A fine-tuned teacher labels unlabeled transfer text from the task's domain with soft targets; the (pre-trained)
student learns to match them, then optionally fine-tunes on the gold labels. The labeled training texts join the
transfer set (the teacher labels them too); `alpha` mixes in the hard-label loss where a gold label exists.

The loop is fine-tuning's `train_classifier`; only the targets and the loss differ. Teacher logits come from
`distill_targets.teacher_logits`, cached on disk, so a sweep of students labels the transfer set once.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import check_max_length, load_classifier, load_tokenizer, read_checkpoint, save_hf
from ..data.load import TaskData, cache_root, load_task, targets_of
from ..device import pick_device, resolve_dtype
from ..errors import DataError, MinibertsError
from ..inference.batching import unlabeled_texts
from . import finetune, lexicon, rundir
from .common import JsonlLog, set_seed, write_json
from .distill_targets import Split, check_same_vocab, kl_to_teacher, soft_target_loss, teacher_logits

log = logging.getLogger("miniberts")


@dataclass
class DistillConfig(finetune.FinetuneConfig):
    teacher: str = field(default="", metadata={"help": "fine-tuned teacher directory (any layout miniberts reads) or "
                                                       "Hub id"})
    student: str = field(default="", metadata={"help": "student: a preset name (random init), a model directory or "
                                                       "a Hub id (org/name[@revision], released:tiny)"})
    transfer: list[str] = field(default_factory=list, metadata={
        "help": "unlabeled transfer text files, one text per line (pair tasks: text_a<TAB>text_b)"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the soft targets (loss x T^2)",
                                                      "gt": 0})
    alpha: float = field(default=0.0, metadata={"help": "weight of the hard-label loss on labeled examples (0 = pure "
                                                        "distillation)", "min": 0, "max": 1})
    finetune_after: bool = field(default=False, metadata={"help": "then fine-tune on the labeled train set"})
    finetune_epochs: int = field(default=0, metadata={"help": "epochs of --finetune-after (0 = --epochs)", "min": 0})
    finetune_lr: float = field(default=0.0, metadata={"help": "learning rate of --finetune-after (0 = --lr)", "min": 0})
    transfer_limit: int = field(default=0, metadata={"help": "use only the first N transfer texts (0 = all)", "min": 0})


def read_transfer(files: list[str], pairs: bool, limit: int = 0) -> tuple[list[str], list[str] | None]:
    """Texts (and second texts for pair tasks) from the transfer files; errors name file and line."""
    if not files:
        raise DataError("distillation needs --transfer FILE... (unlabeled text, one example per line)")
    texts, seconds = [], []
    for name in files:
        for number, line in unlabeled_texts(name):  # blank lines are not texts: skipped (and counted in the log)
            if pairs:
                parts = line.split("\t")
                if len(parts) != 2:
                    raise DataError(f"{name}:{number}: expected text_a<TAB>text_b for a pair task, got {len(parts)} field(s)")
                if not (parts[0].strip() and parts[1].strip()):
                    raise DataError(f"{name}:{number}: an empty text in a pair (expected text_a<TAB>text_b)")
                texts.append(parts[0])
                seconds.append(parts[1])
            else:
                texts.append(line)
    if limit:
        texts, seconds = texts[:limit], seconds[:limit]
    return texts, (seconds if pairs else None)


def distillation_loss(num_outputs: int, temperature: float, alpha: float, regression: bool):
    """targets = [teacher logits (num_outputs) | gold label or -1/nan]: soft loss, plus alpha x hard loss."""

    def loss_fn(logits: torch.Tensor, batch: dict) -> torch.Tensor:
        targets = batch["targets"]
        soft = soft_target_loss(logits, targets[:, :num_outputs], temperature)
        if alpha == 0:
            return soft
        gold = targets[:, num_outputs]
        labeled = ~gold.isnan() if regression else gold >= 0
        if not labeled.any():
            return (1 - alpha) * soft
        hard = (F.mse_loss(logits[labeled].squeeze(-1), gold[labeled]) if regression
                else F.cross_entropy(logits[labeled], gold[labeled].long()))
        return (1 - alpha) * soft + alpha * hard

    return loss_fn


def teacher_splits(data: TaskData, transfer_texts: list[str], transfer_pairs: list[str] | None) -> list[Split]:
    """What the teacher labels for one distillation run: the transfer texts, the labeled train texts, the first dev
    split (for the student's KL to the teacher)."""
    pairs = transfer_pairs is not None
    dev_examples = next(iter(data.dev.values()))
    return [(transfer_texts, transfer_pairs),
            ([ex.text_a for ex in data.train], [ex.text_b or "" for ex in data.train] if pairs else None),
            ([ex.text_a for ex in dev_examples], [ex.text_b or "" for ex in dev_examples] if pairs else None)]


def teacher_targets(cfg: DistillConfig, splits: list[Split]) -> list[torch.Tensor]:
    """The teacher's logits [N, C] on each split, from the on-disk cache (under --cache-dir) or computed into it: an
    experiment labels its transfer sets once, before its distillation cells run."""
    cache = cache_root(cfg.cache_dir) / "teacher-logits"
    # Loading the teacher draws random numbers (its init), a cache hit does not: fork_rng keeps the student's dropout
    # stream the same either way, so a rerun (warm cache) reproduces the first run (cold cache).
    with torch.random.fork_rng(devices=[]):
        return [torch.from_numpy(x) for x in teacher_logits(cfg.teacher, splits, cfg.max_length, cache,
                                                            cfg.eval_batch_size, cfg.dtype)]


def run(cfg: DistillConfig) -> dict:
    """Distill `cfg.teacher` into `cfg.student` on the transfer texts (+ labeled train texts); RUN = cfg.out.

    RUN is a `rundir` run as fine-tuning's is: locked, its identity (settings, teacher, student, transfer and task
    files) recorded; a finished run with the same identity is returned as it is, another identity refused unless
    `cfg.fresh`.
    """
    for flag in ("teacher", "student", "out"):
        if not getattr(cfg, flag):
            raise MinibertsError(f"--{flag} is required")
    for model in (cfg.teacher, cfg.student):
        check_max_length(model, cfg.max_length)  # from the configs alone, before any data file is read
    lexicon.check_random_start(cfg, cfg.student, "--student")
    data = load_task(cfg)
    pairs = any(ex.text_b is not None for ex in data.train)
    transfer_texts, transfer_pairs = read_transfer(cfg.transfer, pairs, cfg.transfer_limit)
    ident = finetune.run_identity(cfg, teacher=cfg.teacher, student=cfg.student, transfer=cfg.transfer)
    with rundir.claim_run(cfg.out, ident, cfg.fresh) as run_dir:
        if run_dir.finished:
            return run_dir.finished_metrics()
        return _distill(cfg, data, pairs, transfer_texts, transfer_pairs, run_dir.path)


def _distill(cfg: DistillConfig, data: TaskData, pairs: bool, transfer_texts: list[str],
             transfer_pairs: list[str] | None, out: Path) -> dict:
    for stale in ("metrics.json", "log.jsonl"):
        (out / stale).unlink(missing_ok=True)

    teacher_ckpt = read_checkpoint(cfg.teacher)
    teacher_tok = load_tokenizer(teacher_ckpt)
    set_seed(cfg.seed)
    student, tokenizer = load_classifier(cfg.student, data.id2label or None, data.regression, cfg.vocab, cfg.cased)
    check_same_vocab(teacher_tok, tokenizer)
    finetune.inherit_lexicon(cfg, student, tokenizer)
    if teacher_ckpt.config.regression != data.regression or (
            not data.regression and teacher_ckpt.config.id2label != data.id2label):
        raise MinibertsError(f"{cfg.teacher}: the teacher's labels {teacher_ckpt.config.id2label or 'regression'} "
                             f"differ from the task's {data.id2label or 'regression'}")

    # The teacher labels the transfer texts and the labeled train texts (one cached pass each).
    splits = teacher_splits(data, transfer_texts, transfer_pairs)
    train_texts, train_pairs = splits[1]
    dev_name, dev_examples = next(iter(data.dev.items()))
    t_transfer, t_train, t_dev = teacher_targets(cfg, splits)

    gold = targets_of(data, data.train).float()
    missing = torch.full((len(transfer_texts),), float("nan") if data.regression else -1.0)
    targets = torch.cat([torch.cat([t_transfer, missing[:, None]], 1), torch.cat([t_train, gold[:, None]], 1)])
    train = finetune.Encoded.from_texts(tokenizer, transfer_texts + train_texts,
                                        (transfer_pairs + train_pairs) if pairs else None, targets, cfg.max_length)
    device = pick_device()
    dtype = resolve_dtype(cfg.dtype, device)
    log.info("distilling %s -> %s on %d transfer + %d labeled texts (T=%g, alpha=%g)", cfg.teacher, cfg.student,
             len(transfer_texts), len(train_texts), cfg.temperature, cfg.alpha)

    def evaluate(model):
        metrics, logits = finetune.evaluate_split(model, tokenizer, data, dev_examples, cfg.max_length,
                                                  cfg.eval_batch_size, device, dtype)
        record = {dev_name: metrics, "score": metrics["score"]}
        if not data.regression:
            record["kl_to_teacher"] = kl_to_teacher(logits, t_dev)
        return record

    loss_fn = distillation_loss(t_transfer.shape[1], cfg.temperature, cfg.alpha, data.regression)
    result = finetune.train_classifier(student, train, loss_fn, cfg, evaluate, JsonlLog(out / "log.jsonl"), device)
    metrics = {
        "task": data.name,
        "teacher": cfg.teacher,
        "student": cfg.student,
        "transfer_examples": len(transfer_texts),
        "labeled_examples": len(train_texts),
        **finetune.run_record(result, cfg),
    }
    if cfg.finetune_after:
        distilled = out / "distilled"
        save_hf(student, tokenizer, distilled)
        ft_cfg = dataclasses.replace(cfg, model=str(distilled), out=str(out / "finetuned"), fresh=True,  # ours
                                     epochs=cfg.finetune_epochs or cfg.epochs, lr=cfg.finetune_lr or cfg.lr)
        metrics["finetune"] = finetune.run(finetune.FinetuneConfig(**{
            f.name: getattr(ft_cfg, f.name) for f in dataclasses.fields(finetune.FinetuneConfig)}), data)
        student, _ = load_classifier(out / "finetuned")
        metrics["best"] = metrics["finetune"]["best"]
    save_hf(student, tokenizer, out)
    if data.test:
        metrics["test"] = finetune.predict_test_splits(student, tokenizer, data, cfg, out, device, dtype)
    finetune.write_model_card(out, "distill", cfg, data, metrics, [cfg.student, cfg.teacher])
    write_json(out / "metrics.json", metrics)
    return metrics

