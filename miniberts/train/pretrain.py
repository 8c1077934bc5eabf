"""Masked-LM (+ optional next-sentence) pre-training of a preset or a model directory: `run(PretrainConfig) -> metrics`.

The standard BERT recipe (Devlin et al. 2019, appendix A.2; google-research/bert run_pretraining.py and
optimization.py): the MLM loss only at the masked positions, AdamW with weight decay 0.01 except on LayerNorm and
biases, linear warm-up then linear decay, gradients clipped to norm 1.0. Added: gradient accumulation, bf16 autocast
where the hardware has it, a wall-clock budget (`max_minutes`; as in cramming, the schedule then runs on the time
spent), DDP under torchrun, periodic held-out evaluation, exact resume.

One optimizer step consumes `batch_size` sequences in all: split evenly over the processes and then over `grad_accum`
micro-batches. The MLM loss of every micro-batch is normalised by the masked-token count of the whole step (summed
over ranks before any backward pass), so the accumulated, rank-averaged gradient is that of one big batch: the
process count and the accumulation change no number beyond float rounding.

Resume is exact because nothing about the data stream is state: the batch of step s is built from samples
s * batch_size ... (see data.pretraining.Sampler), each masked by a generator seeded by (seed, epoch, instance).
A checkpoint holds the model, the optimizer, the RNGs (dropout) and the clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoint import load_pretraining, save_hf
from ..config import BertConfig
from ..data.pretraining import (EVAL_STREAM, TRAIN_STREAM, MaskingCollator, Sampler, cached_instances, check_files,
                                default_max_predictions, split_documents, tokenized_corpus)
from ..device import DTYPES, autocast, resolve_dtype
from ..errors import CheckpointError, DataError, MinibertsError
from ..fileio import atomic_write_text
from ..hub import local_path
from ..model import BertForPreTraining
from ..model_card import CardInfo, write_card
from ..settings import validate
from ..tokenizer import CASED_HELP, VOCAB_HELP, WordPieceTokenizer, open_vocab
from ..vocab import cached_vocab
from . import lexicon, rundir
from .common import (Checkpoints, JsonlLog, check_finite, init_distributed, lr_at, make_optimizer, plot_curves,
                     read_jsonl, rng_state, set_lr, set_rng_state, set_seed, write_json)
from . import general_distill
from .general_distill import OBJECTIVES, ProjectedStudent, Teacher, hidden_loss_sum, load_teacher

log = logging.getLogger("miniberts")


@dataclass
class PretrainConfig:
    model: str = field(default="tiny", metadata={"help": "preset (tiny, mini, 4-256, ...) for a random start, a model "
                                                          "directory to continue from, or a config.json (custom dims)"})
    objective: str = field(default="mlm", metadata={
        "help": "mlm (masked LM, + NSP with --nsp) or general-distill (TinyBERT's general distillation: every "
                "layer's hidden states, embeddings included, matched to --teacher's through one learned projection)",
        "choices": OBJECTIVES})
    teacher: str = field(default="", metadata={
        "help": "the frozen teacher of --objective general-distill: a model directory with the student's vocabulary "
                "and at least --seq-len positions (e.g. the general MiniLM)"})
    train_files: list[str] = field(default_factory=list, metadata={
        "help": "text files, one sentence per line, a blank line between documents (.gz/.bz2 accepted)"})
    out: str = field(default="", metadata={"help": "run directory: the model (Hugging Face layout), metrics.json, "
                                                    "log.jsonl, learning_curve.png, checkpoints/"})
    steps: int = field(default=0, metadata={"help": "optimizer steps (0 = until --max-minutes)", "min": 0})
    max_minutes: float = field(default=0.0, metadata={
        "help": "wall-clock budget of training (held-out evaluations not counted; 0 = none); without --steps the "
                "learning-rate schedule runs on this clock", "min": 0})
    batch_size: int = field(default=16, metadata={"help": "sequences per optimizer step over all processes and "
                                                           "accumulation micro-batches", "min": 1})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step (per process)", "min": 1})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (2e-3 suits short runs of Tiny; BERT-Base "
                                                     "used 1e-4 at batch 256)", "gt": 0})
    warmup: float = field(default=0.05, metadata={"help": "warm-up: a fraction of the run when < 1, else steps",
                                                   "min": 0})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on LayerNorm and biases)",
                                                         "min": 0})
    dropout: float = field(default=-1.0, metadata={
        "help": "dropout while pre-training, hidden and attention (-1 = the model's own; 0 suits runs of less than an "
                "epoch). The saved config keeps the model's value for fine-tuning", "min": -1, "lt": 1})
    seq_len: int = field(default=128, metadata={"help": "tokens per sequence, [CLS]/[SEP] included (at most the "
                                                         "model's positions)", "min": 2})
    max_predictions: int = field(default=0, metadata={"help": "masked tokens per sequence at most (0 = Google's: 20 "
                                                               "at 128, 80 at 512)", "min": 0})
    nsp: bool = field(default=False, metadata={"help": "next-sentence prediction (segment pairs, 50%% random next)"})
    whole_word: bool = field(default=False, metadata={"help": "whole-word masking (a word's ## pieces together)"})
    short_seq_prob: float = field(default=0.1, metadata={"help": "share of documents given a shorter random target "
                                                                  "length (Google's short_seq_prob)", "min": 0,
                                                      "max": 1})
    eval_files: list[str] = field(default_factory=list, metadata={
        "help": "held-out text files (default: hold out --eval-fraction of the training documents)"})
    eval_fraction: float = field(default=0.01, metadata={"help": "training documents held out when no --eval-files",
                                                          "min": 0, "lt": 1})
    eval_sequences: int = field(default=512, metadata={"help": "held-out sequences per evaluation (fixed masks)",
                                                        "min": 1})
    eval_every: int = field(default=500, metadata={"help": "evaluate every N steps (0 = off)", "min": 0})
    eval_every_minutes: float = field(default=0.0, metadata={"help": "also evaluate every M minutes (0 = off)",
                                                             "min": 0})
    save_every: int = field(default=1000, metadata={"help": "checkpoint every N steps (and at the end)", "min": 1})
    keep_checkpoints: int = field(default=3, metadata={"help": "checkpoints kept in RUN/checkpoints", "min": 1})
    log_every: int = field(default=10, metadata={"help": "write a training record to log.jsonl every N steps",
                                                   "min": 1})
    resume: bool = field(default=False, metadata={"help": "continue from the latest checkpoint in RUN/checkpoints"})
    seed: int = field(default=42, metadata={"help": "seed of initialisation, data order, masks and dropout", "min": 0})
    dtype: str = field(default="auto", metadata={"help": f"one of {DTYPES}: auto = bf16 autocast where the hardware "
                                                          "has it natively; fp32 for exact reproducibility",
                                            "choices": DTYPES})
    cache_dir: str = field(default="", metadata={"help": "token shards cache (default RUN/data)"})
    vocab_size: int = field(default=0, metadata={"help": "train a new WordPiece vocabulary (uncased, or --cased) "
                                                          "of this size on the training files with `miniberts vocab`'s "
                                                          "trainer (random-init models only; 0 = keep)",
                                                  "min": 0})
    unigram_bias: bool = field(default=True, metadata={
        "help": "start a randomly initialised model's MLM output bias at the log unigram frequencies of the training "
                "corpus, so step 0 already predicts at the unigram baseline (--no-unigram-bias: Google's zeros)"})
    progress: bool = field(default=True, metadata={"help": "progress bar on a terminal"})
    vocab: str = field(default="", metadata={"help": VOCAB_HELP})
    cased: bool = field(default=False, metadata={"help": CASED_HELP})
    init_lexicon: str = field(default="", metadata={"help": lexicon.INIT_HELP})
    lexicon_source: str = field(default="input", metadata={"help": lexicon.SOURCE_HELP, "choices": lexicon.SOURCES})
    fresh: bool = field(default=False, metadata={"help": "remove the run in --out (checkpoints, model, logs; not the "
                                                         "token cache RUN/data) and start afresh"})

    def __post_init__(self):
        validate(self)


# Settings a resumed run must share with the checkpoint: they decide which batch comes at which step.
RESUME_KEYS = ("objective", "train_files", "batch_size", "seq_len", "max_predictions", "nsp", "whole_word", "short_seq_prob",
               "eval_files", "eval_fraction", "seed", "vocab_size", "vocab", "cased")
# Settings a resumed run may change: its length and how often it evaluates and saves. All the others define the
# run (`rundir` identity), with the model and data files by their bytes.
EXTENDABLE = ("steps", "max_minutes", "eval_every", "eval_every_minutes", "save_every", "keep_checkpoints",
              "grad_accum")
DATA_FIELDS = ("model", "train_files", "eval_files", "eval_fraction", "seq_len", "nsp", "short_seq_prob", "seed",
               "cache_dir", "vocab_size", "vocab", "cased")


# --- model and data -------------------------------------------------------------------------------------------

def build_model(cfg: PretrainConfig, cache_root: Path) -> tuple[BertForPreTraining, WordPieceTokenizer]:
    """The model with MLM (+ NSP) heads and its tokenizer: the model's own vocabulary, --vocab, or with
    --vocab-size one trained on the training files (`miniberts.vocab`, cached). A random start (a preset, or a
    config .json with --vocab-size) takes the vocabulary's size; weights and a config .json must match it."""
    if cfg.vocab_size and cfg.vocab:
        raise MinibertsError(f"--vocab-size trains a new vocabulary and --vocab {cfg.vocab} gives one: pass one")
    path = local_path(cfg.model)  # a Hub id -> its snapshot directory
    if cfg.vocab_size and path.is_dir():
        raise MinibertsError(f"--vocab-size trains a new vocabulary, so the model must start from random weights "
                             f"(a preset or config .json), not from {cfg.model}")
    vocab = str(cached_vocab(cfg.train_files, cfg.vocab_size, cfg.cased, cache_root)) if cfg.vocab_size else cfg.vocab
    if path.is_file():
        if path.suffix != ".json":
            raise CheckpointError(f"{path}: --model takes a preset name, a model directory or a config .json")
        model_cfg = BertConfig.from_hf_json(path)
        tokenizer = open_vocab(vocab, cfg.cased)
        if cfg.vocab_size:
            model_cfg = dataclasses.replace(model_cfg, vocab_size=len(tokenizer))
        model = BertForPreTraining(model_cfg, nsp=cfg.nsp)
    else:
        model, tokenizer = load_pretraining(cfg.model, cfg.nsp, vocab, cfg.cased)
    if len(tokenizer) != model.cfg.vocab_size:
        raise CheckpointError(f"{tokenizer.vocab_path}: {len(tokenizer)} tokens, but the model's vocab_size is "
                              f"{model.cfg.vocab_size}")
    if cfg.seq_len > model.cfg.max_position_embeddings:
        raise MinibertsError(f"--seq-len {cfg.seq_len} exceeds the {model.cfg.max_position_embeddings} positions of "
                             f"the model {cfg.model}")
    if cfg.init_lexicon:  # (a resumed run then loads its checkpoint over it)
        lexicon.init_embeddings(model.bert, tokenizer, cfg.init_lexicon, cfg.lexicon_source, cache_root)
    return model, tokenizer


@dataclass
class PretrainData:
    train: MaskingCollator
    eval: MaskingCollator | None
    counts: dict


def prepare_data(cfg: PretrainConfig, tokenizer: WordPieceTokenizer, cache_root: Path) -> PretrainData:
    """Token shards (cached by files, vocabulary) and instances (cached by seq_len, nsp, seed) for training and
    held-out evaluation, wrapped in their masking collators."""
    max_predictions = cfg.max_predictions or default_max_predictions(cfg.seq_len)
    corpus = tokenized_corpus(check_files(cfg.train_files, "train"), tokenizer, cache_root)
    instances = lambda c, docs=None: cached_instances(c, cfg.seq_len, cfg.nsp, cfg.short_seq_prob, cfg.seed, docs)
    if cfg.eval_files:
        eval_corpus = tokenized_corpus(check_files(cfg.eval_files, "eval"), tokenizer, cache_root)
        train, held = instances(corpus), instances(eval_corpus)
    elif cfg.eval_fraction > 0:
        train_docs, eval_docs = split_documents(corpus.num_documents, cfg.eval_fraction, cfg.seed)
        eval_corpus = corpus
        train, held = instances(corpus, train_docs), instances(corpus, eval_docs)
    else:
        eval_corpus, train, held = None, instances(corpus), None
    if len(train) == 0:
        raise DataError(f"{cfg.train_files[0]}: no training sequences could be built")
    collate = lambda c, inst, stream: MaskingCollator(c, inst, tokenizer, max_predictions, cfg.whole_word, cfg.seed,
                                                      stream, masking=cfg.objective == "mlm")
    counts = {"train_documents": corpus.num_documents, "train_tokens": len(corpus.tokens),
              "train_sequences": len(train), "eval_sequences": 0 if held is None else min(len(held), cfg.eval_sequences),
              "cache": str(corpus.dir)}
    return PretrainData(collate(corpus, train, TRAIN_STREAM),
                        None if held is None or len(held) == 0 else collate(eval_corpus, held, EVAL_STREAM), counts)


def eval_batches(collator: MaskingCollator, n: int, batch_size: int, seed: int) -> list[dict]:
    """A fixed held-out set: n instances chosen once by seed, masked once (epoch 0 of the eval stream)."""
    chosen = np.sort(np.random.default_rng([seed, 5]).permutation(len(collator))[:n])
    items = [(0, int(i)) for i in chosen]
    return [collator(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def unigram_log_probs(collator: MaskingCollator) -> np.ndarray:
    """log p(token) of the training corpus' unigram distribution, add-one smoothed, special tokens never predicted
    counted as zero."""
    counts = np.zeros(collator.vocab_size, dtype=np.float64)
    tokens = collator.corpus.tokens
    for i in range(0, len(tokens), 1 << 24):  # chunks: the shard may be larger than memory
        counts += np.bincount(tokens[i:i + (1 << 24)], minlength=collator.vocab_size)
    counts[~collator.maskable] = 0
    return np.log(counts + 1) - np.log(counts.sum() + collator.maskable.sum())


def unigram_loss(log_probs: np.ndarray, batches: list[dict]) -> float:
    """The loss of the best context-free guess: cross-entropy of the unigram distribution on the held-out masked
    targets. A model must beat it to use context. (When the held-out documents come from the training files,
    --eval-fraction, their tokens are in the counts too.)"""
    labels = torch.cat([b["mlm_labels"] for b in batches]).numpy()
    return float(-log_probs[labels].mean())


# --- evaluation, schedule, signals ----------------------------------------------------------------------------

def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: BertForPreTraining, batches: list[dict], device: torch.device, dtype: torch.dtype) -> dict:
    """Held-out MLM loss (mean over masked tokens), perplexity, accuracy; NSP accuracy when the model has the head."""
    was_training = model.training
    model.eval()
    ce = correct = n = nsp_correct = seqs = 0.0
    for batch in batches:
        b = _to(batch, device)
        with autocast(device, dtype):
            mlm_logits, nsp_logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                                           mlm_positions=b["mlm_positions"])
        ce += F.cross_entropy(mlm_logits.float(), b["mlm_labels"], reduction="sum").item()
        correct += (mlm_logits.argmax(-1) == b["mlm_labels"]).sum().item()
        n += b["mlm_labels"].numel()
        if nsp_logits is not None:
            nsp_correct += (nsp_logits.argmax(-1) == b["nsp_labels"]).sum().item()
            seqs += len(b["nsp_labels"])
    model.train(was_training)
    out = {"mlm_loss": ce / n, "perplexity": math.exp(min(ce / n, 50.0)), "mlm_accuracy": correct / n}
    if seqs:
        out["nsp_accuracy"] = nsp_correct / seqs
    return out


def learning_rate(cfg: PretrainConfig, step: int, clock: float) -> float:
    """Linear warm-up, then linear decay to 0 at the last step, or, without --steps, at the end of the time budget
    (the schedule then runs on the fraction of the budget spent, in virtual steps of a millionth)."""
    if cfg.steps:
        warmup = cfg.warmup * cfg.steps if cfg.warmup < 1 else cfg.warmup
        return lr_at(step, cfg.steps, round(warmup), cfg.lr)
    spent = clock / (cfg.max_minutes * 60)
    if cfg.warmup >= 1:  # warm-up counted in steps, decay on the clock
        return cfg.lr * min((step + 1) / cfg.warmup, max(0.0, 1.0 - spent))
    virtual = 1_000_000
    return lr_at(min(virtual, int(spent * virtual)), virtual, round(cfg.warmup * virtual), cfg.lr)


class StopRequest:
    """SIGINT (Ctrl-C) or SIGTERM asks the loop to stop after the current step, save and exit; a second Ctrl-C
    interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.info("stopping after this step: saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Change every dropout rate of the running model, leaving model.cfg (what is saved) as it was."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        if hasattr(module, "dropout_p"):  # attention dropout, applied inside scaled_dot_product_attention
            module.dropout_p = p


def _all_reduce(values: list[float], device: torch.device, world: int) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


def _new_dirs(*paths: Path) -> list[Path]:
    """The directories among `paths` (and their parents) that do not exist yet, deepest first."""
    out = []
    for p in paths:
        for d in [p, *p.parents]:
            if d.exists():
                break
            if d not in out:
                out.append(d)
    return sorted(out, key=lambda d: len(d.parts), reverse=True)


# --- the run --------------------------------------------------------------------------------------------------

def run(cfg: PretrainConfig) -> dict:
    """Pre-train; RUN/ ends as a Hugging Face model directory with metrics.json, log.jsonl, learning_curve.png and
    checkpoints/. Returns the metrics (held-out numbers on rank 0 only)."""
    if not cfg.out:
        raise MinibertsError("give the run directory with --out RUN")
    if cfg.steps <= 0 and cfg.max_minutes <= 0:
        raise MinibertsError("give a length with --steps N and/or --max-minutes M")
    if cfg.fresh and cfg.resume:
        raise MinibertsError("give --resume (continue the run in --out) or --fresh (start it afresh), not both")
    lexicon.check_random_start(cfg, cfg.model, "--model")
    if cfg.objective == "mlm" and cfg.teacher:
        raise MinibertsError("--teacher is the teacher of --objective general-distill; masked LM has none")
    if cfg.objective == "general-distill" and (cfg.nsp or not cfg.teacher):
        raise MinibertsError("--objective general-distill needs --teacher DIR (a model directory with the student's "
                             "vocabulary)" if not cfg.nsp else "--nsp is a masked-LM head: not with general-distill")
    check_files(cfg.train_files, "train")
    if cfg.eval_files:
        check_files(cfg.eval_files, "eval")
    started_dist = "RANK" in os.environ and not dist.is_initialized()
    rank, world, device = init_distributed()
    try:
        if cfg.batch_size % (world * cfg.grad_accum):
            raise MinibertsError(f"--batch-size {cfg.batch_size} must be divisible by processes x --grad-accum "
                                 f"({world} x {cfg.grad_accum})")
        if rank > 0:  # rank 0 holds the lock and checks the identity for all
            return _run(cfg, rank, world, device)
        keep = () if cfg.cache_dir else ("data",)  # the token cache is keyed by its inputs: still valid
        with rundir.claim_run(cfg.out, run_identity(cfg), cfg.fresh, keep):
            return _run(cfg, rank, world, device)
    finally:
        if started_dist and dist.is_initialized():
            dist.destroy_process_group()


def run_identity(cfg: PretrainConfig) -> dict:
    """What defines a pre-training run (`rundir`): every setting but EXTENDABLE ones, the files by their bytes."""
    inputs = {"model": cfg.model, "train_files": cfg.train_files, "eval_files": cfg.eval_files, "vocab": cfg.vocab,
              "teacher": cfg.teacher}
    if cfg.init_lexicon:
        inputs["init_lexicon"] = cfg.init_lexicon
    return rundir.identity(cfg, inputs, skip=EXTENDABLE + lexicon.identity_skip(cfg))


# --- what the loop keeps: counters, clock, held-out evaluation, training records ----------------------------------

# Per-step sums, all-reduced over the ranks and added up over a log window.
SUMS = ("mlm_ce", "mlm_correct", "masked", "nsp_ce", "nsp_correct", "sequences", "tokens", "hidden_se")


@dataclass
class Progress:
    """The counters a checkpoint carries across a resume."""
    step: int = 0
    tokens_seen: int = 0
    clock_before: float = 0.0  # the training clock when this session started
    train_s: float = 0.0  # seconds spent in steps, all sessions


class Clock:
    """The training clock: training seconds over all sessions. Evaluation time is kept off it (`eval_s`), so it
    counts neither on the budget nor in the schedule."""

    def __init__(self, before: float):
        self.before, self.eval_s, self.start = before, 0.0, time.perf_counter()

    def __call__(self) -> float:
        return self.before + time.perf_counter() - self.start - self.eval_s


class HeldOut:
    """The held-out evaluation (rank 0, when there are held-out batches): its last result and when it ran."""

    def __init__(self, batches: list[dict] | None, clock: float, jlog: JsonlLog, measure):
        self.batches, self.last_clock, self.jlog = batches, clock, jlog
        self.measure = measure  # held-out batches -> {metric: value}
        self.last: dict = {}

    def due(self, cfg: PretrainConfig, step: int, clock: float) -> bool:
        return bool((cfg.eval_every and step % cfg.eval_every == 0) or (
            cfg.eval_every_minutes and clock - self.last_clock >= cfg.eval_every_minutes * 60))

    def run(self, progress: Progress, clock: float) -> float:
        """Evaluate at training time `clock` and log it; returns the seconds it took (0 without held-out data)."""
        if self.batches is None:
            return 0.0
        t = time.perf_counter()
        step = progress.step
        self.last = {"step": step, "minutes": round(clock / 60, 3), **self.measure(self.batches)}
        self.last_clock = clock
        self.jlog.write({"split": "eval", "step": step, "elapsed_s": round(clock, 3), "tokens": progress.tokens_seen,
                         **{k: v for k, v in self.last.items() if k not in ("step", "minutes")}})
        if "hidden_loss" in self.last:
            log.info("step %d (%.1f min): held-out hidden-state loss %.4f", step, clock / 60, self.last["hidden_loss"])
        else:
            log.info("step %d (%.1f min): held-out MLM loss %.4f, perplexity %.1f, accuracy %.4f%s", step, clock / 60,
                     self.last["mlm_loss"], self.last["perplexity"], self.last["mlm_accuracy"],
                     f", NSP accuracy {self.last['nsp_accuracy']:.4f}" if "nsp_accuracy" in self.last else "")
        return time.perf_counter() - t


class TrainLog:
    """The training records of log.jsonl, one per --log-every steps over the steps since the last, and what the
    terminal shows: a progress bar, or without one a line every 30 seconds."""

    def __init__(self, cfg: PretrainConfig, jlog: JsonlLog, step: int, rank: int):
        self.cfg, self.jlog = cfg, jlog
        self.window = np.zeros(len(SUMS))  # since the last record
        self.window_s = 0.0  # step time since the last record
        self.last_line = time.perf_counter()
        self.show_bar = rank == 0 and cfg.progress and sys.stderr.isatty()
        self.bar = tqdm(total=cfg.steps or None, initial=step, unit="step", dynamic_ncols=True,
                        disable=not self.show_bar)

    def add(self, sums: np.ndarray, seconds: float) -> None:
        self.window += sums
        self.window_s += seconds
        self.bar.update(1)

    def write(self, progress: Progress, lr: float, grad_norm: float, clock: float, budget: float) -> None:
        cfg, step = self.cfg, progress.step
        rec = _train_record(self.window, step, lr, grad_norm, progress.tokens_seen, clock, self.window_s, cfg)
        self.jlog.write(rec)
        self.window[:], self.window_s = 0, 0.0
        now = time.perf_counter()
        eta = ((cfg.steps - step) * progress.train_s / max(step, 1)) if cfg.steps else max(0.0, budget - clock)
        acc = f"{rec['mlm_accuracy']:.4f}" if "mlm_accuracy" in rec else "n/a"
        self.bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=acc, tok_s=f"{rec['tokens_per_s']:.0f}",
                             eta=f"{eta / 60:.1f}m", refresh=False)
        if not self.show_bar and now - self.last_line >= 30:
            self.last_line = now
            log.info("step %d: loss %.4f, MLM accuracy %s, %.0f tokens/s, %.1f min left", step, rec["loss"], acc,
                     rec["tokens_per_s"], eta / 60)

    def close(self) -> None:
        self.bar.close()


# --- the loop -------------------------------------------------------------------------------------------------

def _run(cfg: PretrainConfig, rank: int, world: int, device: torch.device) -> dict:
    """One process's run: set up, then step after step (a record every --log-every steps, held-out evaluation and
    checkpoints when due) until the steps or the time budget are spent or a stop is asked for; then rank 0 evaluates
    and saves the end point and writes the model, metrics.json and the curve."""
    run_dir = Path(cfg.out)
    ckpts = Checkpoints(run_dir, keep=cfg.keep_checkpoints)
    model, tokenizer, data, state, teacher = _set_up(cfg, rank, world, run_dir, ckpts)
    dtype = resolve_dtype(cfg.dtype, device)
    log_probs = _unigrams(cfg, data, state, rank)
    net, trained, optimizer, progress = _ready_to_train(cfg, model, teacher, state, log_probs, rank, world, device)
    micro = cfg.batch_size // (world * cfg.grad_accum)
    sampler = Sampler(len(data.train), cfg.seed)
    held_batches, unigram = _held_out_set(cfg, data, log_probs, micro, rank)

    log_path = run_dir / "log.jsonl"
    if rank == 0:
        _trim_log(log_path, progress.step if state is not None else None)
    jlog = JsonlLog(log_path)
    if rank == 0:
        _announce(cfg, model, data, world, device, dtype, unigram)
    measure = (lambda b: evaluate(model, b, device, dtype)) if teacher is None else (
        lambda b: general_distill.evaluate(trained, teacher, b, device, dtype))
    held = HeldOut(held_batches, progress.clock_before, jlog, measure)
    if rank == 0 and state is None:
        held.run(progress, 0.0)  # the starting point of the curve; not on the clock
    clock = Clock(progress.clock_before)
    budget = cfg.max_minutes * 60
    last_saved = progress.step if state is not None else -1
    interrupted = False
    train_log = TrainLog(cfg, jlog, progress.step, rank)

    with StopRequest() as stop:
        while not (cfg.steps and progress.step >= cfg.steps):
            t0 = time.perf_counter()
            first = progress.step * cfg.batch_size + rank * micro * cfg.grad_accum
            batches = [data.train(sampler.take(first + j * micro, micro)) for j in range(cfg.grad_accum)]
            counted, now, interrupts, out_of_time = _agree(batches, clock(), stop, budget, rank, world, device,
                                                           cfg.objective)
            if interrupts or out_of_time:
                interrupted = interrupts > 0
                break
            lr = learning_rate(cfg, progress.step, now)
            sums, grad_norm = train_step(net, trained, optimizer, batches, counted, lr, cfg.batch_size, world,
                                         device, dtype, teacher)
            progress.step += 1
            sums = np.array(_all_reduce(sums.tolist(), device, world))
            check_divergence(progress.step, sums, grad_norm)
            progress.train_s += time.perf_counter() - t0
            progress.tokens_seen += int(sums[SUMS.index("tokens")])
            train_log.add(sums, time.perf_counter() - t0)

            if rank == 0 and (progress.step % cfg.log_every == 0 or (cfg.steps and progress.step == cfg.steps)):
                train_log.write(progress, lr, float(grad_norm), clock(), budget)
            if rank == 0:
                now = clock()
                if held.due(cfg, progress.step, now):
                    clock.eval_s += held.run(progress, now)
                if cfg.save_every and progress.step % cfg.save_every == 0:
                    save_checkpoint(ckpts, cfg, trained, optimizer, progress, clock())
                    last_saved = progress.step
    train_log.close()

    end = clock()
    if rank != 0:
        return {"steps": progress.step, "tokens_seen": progress.tokens_seen, "interrupted": interrupted}
    if not interrupted and held.last.get("step") != progress.step:
        held.run(progress, end)  # the end point of the curve
    if last_saved != progress.step:
        save_checkpoint(ckpts, cfg, trained, optimizer, progress, end)
    save_hf(model, tokenizer, run_dir)
    metrics = _metrics(cfg, log_path, held.last, unigram, progress, end, interrupted, world, device, dtype,
                       data.counts)
    write_card(run_dir, CardInfo("pretrain", [cfg.model], rundir.settings(cfg), metrics))
    write_json(run_dir / "metrics.json", metrics)
    _plot(log_path, unigram, run_dir / "learning_curve.png", cfg.objective)
    if interrupted:
        log.info("stopped at step %d; continue with --resume", progress.step)
    return metrics


# --- the steps of the run -------------------------------------------------------------------------------------

def _set_up(cfg: PretrainConfig, rank: int, world: int, run_dir: Path, ckpts: Checkpoints
            ) -> tuple[BertForPreTraining, WordPieceTokenizer, PretrainData, dict | None, Teacher | None]:
    """The model, its tokenizer, the data, the checkpoint to resume from (None: a fresh start) and the teacher of
    general distillation (None: masked LM). Rank 0 builds what is cached first (vocabulary, shards), then the others
    open it; rejected inputs leave no directory behind."""
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else run_dir / "data"
    new_dirs = _new_dirs(run_dir, cache_root)
    if rank == 0:
        for stale in ckpts.dir.glob(".step-*.tmp"):  # a save cut short by a kill (the lock: nobody is saving now)
            stale.unlink(missing_ok=True)
    try:
        for turn in (0, 1):
            if (rank == 0) == (turn == 0):
                set_seed(cfg.seed)  # the same initial weights on every rank
                model, tokenizer = build_model(cfg, cache_root)
                teacher = load_teacher(cfg.teacher, tokenizer, cfg.seq_len, model.cfg.num_layers) if (
                    cfg.objective == "general-distill") else None
                state = _resume_state(cfg, ckpts, model.cfg) if cfg.resume else None
                if not cfg.resume and ckpts.steps():
                    raise MinibertsError(f"{ckpts.dir} holds checkpoints of an earlier run: pass --resume to continue "
                                         "it, --fresh to start afresh, or choose another --out")
                data = prepare_data(cfg, tokenizer, cache_root)
            if world > 1 and turn == 0:
                dist.barrier()
    except BaseException:
        for d in new_dirs:
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty
        raise
    return model, tokenizer, data, state, teacher


def _unigrams(cfg: PretrainConfig, data: PretrainData, state: dict | None, rank: int) -> np.ndarray | None:
    """The training corpus' unigram log-probabilities (a corpus pass), when a random start takes them as its MLM
    bias or rank 0 reports the held-out unigram baseline; else None."""
    held_out_baseline = rank == 0 and data.eval is not None and cfg.objective == "mlm"
    return unigram_log_probs(data.train) if _bias_from_unigrams(cfg, state) or held_out_baseline else None


def _bias_from_unigrams(cfg: PretrainConfig, state: dict | None) -> bool:
    return bool(cfg.unigram_bias and cfg.objective == "mlm" and state is None  # random starts only
                and not local_path(cfg.model).is_dir())


def _ready_to_train(cfg: PretrainConfig, model: BertForPreTraining, teacher: Teacher | None, state: dict | None,
                    log_probs: np.ndarray | None, rank: int, world: int, device: torch.device
                    ) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, Progress]:
    """The trained module on its device in training mode (the model, a random start at the unigram baseline; with a
    teacher, the model and its projection), its optimizer, both restored from `state` with the RNGs and the
    counters, and the module the steps run (DDP-wrapped under torchrun)."""
    if _bias_from_unigrams(cfg, state):
        with torch.no_grad():  # a random start begins at the unigram baseline
            model.mlm.bias.copy_(torch.from_numpy(log_probs))
    model.to(device).train()
    if cfg.dropout >= 0:
        set_dropout(model, cfg.dropout)
    if not cfg.nsp:
        # Without NSP the pooler feeds no loss; frozen, DDP does not wait for its gradients (and AdamW skips it).
        model.bert.pooler.requires_grad_(False)
    trained: torch.nn.Module = model
    if teacher is not None:  # the MLM head feeds no loss either; the projection is trained beside the encoder
        model.mlm.requires_grad_(False)
        teacher.model.to(device)
        trained = ProjectedStudent(model, teacher.model.cfg.hidden_size).to(device).train()
    optimizer = make_optimizer(trained, cfg.lr, cfg.weight_decay)
    progress = Progress()
    if state is not None:
        model.load_state_dict(state["model"])
        if teacher is not None:
            trained.projection.load_state_dict(state["projection"])
        optimizer.load_state_dict(state["optimizer"])
        progress = Progress(int(state["step"]), int(state["tokens_seen"]), float(state["elapsed_s"]),
                            float(state["train_s"]))
        set_rng_state(state["rng"])
    if rank > 0:  # dropout differs per rank (rank 0 restores its exact stream; the others are re-seeded by step)
        torch.manual_seed(cfg.seed + 7919 * rank + progress.step)
    net = DistributedDataParallel(trained) if world > 1 else trained
    return net, trained, optimizer, progress


def _held_out_set(cfg: PretrainConfig, data: PretrainData, log_probs: np.ndarray | None, micro: int, rank: int
                  ) -> tuple[list[dict] | None, float | None]:
    """The fixed held-out batches and the unigram baseline's loss on them (rank 0, when there are held-out data)."""
    if rank != 0 or data.eval is None:
        return None, None
    batches = eval_batches(data.eval, cfg.eval_sequences, max(micro, 32), cfg.seed)
    return batches, None if log_probs is None else unigram_loss(log_probs, batches)


def _announce(cfg: PretrainConfig, model: BertForPreTraining, data: PretrainData, world: int, device: torch.device,
              dtype: torch.dtype, unigram: float | None) -> None:
    log.info("pre-training %s (%s parameters) with %s on %d sequences of <= %d tokens (%d tokens); %d held out; "
             "%d process(es) on %s, %s; unigram baseline loss %s", cfg.model,
             f"{sum(p.numel() for p in model.parameters()):,}",
             "masked LM" if cfg.objective == "mlm" else f"general distillation from {cfg.teacher}", len(data.train),
             cfg.seq_len,
             data.counts["train_tokens"], data.counts["eval_sequences"], world, device,
             str(dtype).removeprefix("torch."), "n/a" if unigram is None else f"{unigram:.3f}")


def _agree(batches: list[dict], now: float, stop: StopRequest, budget: float, rank: int, world: int,
           device: torch.device, objective: str) -> list[float]:
    """One agreement per step, before any work: the step's count of the tokens the loss is a mean over (masked
    tokens; for general distillation all real tokens), rank 0's clock (the schedule must be the same everywhere),
    whether any rank was interrupted, whether time is up."""
    counted = (lambda b: b["mlm_labels"].numel()) if objective == "mlm" else (lambda b: int(b["attention_mask"].sum()))
    return _all_reduce([sum(counted(b) for b in batches), now if rank == 0 else 0.0,
                        float(stop.requested), float(rank == 0 and budget > 0 and now >= budget)], device, world)


def train_step(net: torch.nn.Module, trained: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batches: list[dict], counted: float, lr: float, batch_size: int, world: int, device: torch.device,
               dtype: torch.dtype, teacher: Teacher | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over this rank's micro-batches, gradients accumulated (DDP syncs on the last one) and
    clipped to norm 1.0. `counted`: the step's masked tokens (with a teacher: real tokens) on all ranks, which
    normalises the loss. Returns this rank's sums (SUMS) and the gradient norm."""
    set_lr(optimizer, lr)
    sums = torch.zeros(len(SUMS), dtype=torch.float64, device=device)
    scale = world / max(counted, 1.0)  # DDP averages over ranks: undo it, divide by all
    for j, batch in enumerate(batches):
        b = _to(batch, device)
        sync = net.no_sync() if world > 1 and j < len(batches) - 1 else contextlib.nullcontext()
        with sync:
            if teacher is None:
                loss, row = _mlm_loss(net, b, scale, batch_size, world, device, dtype)
            else:
                hidden_se = hidden_loss_sum(net, teacher, b, device, dtype)
                loss, row = hidden_se * scale, [0.0] * 5 + [float(len(b["input_ids"])), 0.0, hidden_se.detach()]
            loss.backward()
        with torch.no_grad():
            row[SUMS.index("tokens")] = b["attention_mask"].sum()
            sums += torch.stack([torch.as_tensor(v, device=device).double() for v in row])
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in trained.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return sums, grad_norm


def _mlm_loss(net: torch.nn.Module, b: dict, scale: float, batch_size: int, world: int, device: torch.device,
              dtype: torch.dtype) -> tuple[torch.Tensor, list]:
    """The micro-batch's MLM (+ NSP) loss, scaled for the step, and its row of SUMS (tokens filled in by the caller)."""
    with autocast(device, dtype):
        mlm_logits, nsp_logits = net(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                                     mlm_positions=b["mlm_positions"])
    mlm_ce = F.cross_entropy(mlm_logits.float(), b["mlm_labels"], reduction="sum")  # [N masked]
    loss = mlm_ce * scale
    nsp_ce = torch.zeros((), device=device)
    nsp_correct = 0.0
    if nsp_logits is not None:
        nsp_ce = F.cross_entropy(nsp_logits.float(), b["nsp_labels"], reduction="sum")
        loss = loss + nsp_ce * (world / batch_size)
        nsp_correct = (nsp_logits.argmax(-1) == b["nsp_labels"]).sum().detach()
    row = [mlm_ce.detach(), (mlm_logits.argmax(-1) == b["mlm_labels"]).sum().detach(), float(b["mlm_labels"].numel()),
           nsp_ce.detach(), nsp_correct, float(len(b["input_ids"])), 0.0, 0.0]
    return loss, row


def check_divergence(step: int, sums: np.ndarray, grad_norm: torch.Tensor) -> None:
    """The divergence guard: the step's sums are already on the host, so checking every step is free, and stops the
    run before a NaN model could be saved."""
    check_finite(step, sums[0] / max(sums[2], 1) + sums[3] / max(sums[5], 1) + sums[7] / max(sums[6], 1),
                 float(grad_norm))


def save_checkpoint(ckpts: Checkpoints, cfg: PretrainConfig, trained: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, progress: Progress, clock: float) -> None:
    """Everything an exact resume needs: weights (with general distillation, the projection's too), optimizer, RNGs
    (dropout), counters and the clock."""
    model = trained.student if isinstance(trained, ProjectedStudent) else trained
    extra = {"projection": trained.projection.state_dict()} if isinstance(trained, ProjectedStudent) else {}
    ckpts.save(progress.step, {"step": progress.step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "rng": rng_state(), "tokens_seen": progress.tokens_seen, "elapsed_s": clock,
                               "train_s": progress.train_s, "config": dataclasses.asdict(cfg),
                               "model_config": model.cfg.to_dict(), **extra})


def _resume_state(cfg: PretrainConfig, ckpts: Checkpoints, model_cfg: BertConfig) -> dict | None:
    state = ckpts.load_latest()
    if state is None:
        log.info("%s: no checkpoint yet; starting from scratch", ckpts.dir)
        return None
    where = ckpts.dir / f"step-{ckpts.steps()[-1]:08d}.pt"
    need = ("step", "model", "optimizer", "rng", "tokens_seen", "elapsed_s", "train_s", "config", "model_config")
    if not isinstance(state, dict) or any(k not in state for k in need):
        raise CheckpointError(f"{where}: not a pre-training checkpoint of miniberts")
    if state["model_config"] != model_cfg.to_dict():
        raise CheckpointError(f"{where}: was written for another model than {cfg.model}")
    saved = state["config"]
    differ = [k for k in RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    if differ:
        flags = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)}" for k in differ)
        raise MinibertsError(f"{where}: resume with the settings it was written with ({flags})")
    return state


def _trim_log(path: Path, keep_until: int | None) -> None:
    """On resume drop records written after the checkpoint (they will be written again); on a fresh run, all."""
    if not path.is_file():
        return
    if keep_until is None:
        path.unlink()
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # the record a kill cut short (appends are not atomic): it is written again
            continue
        if record.get("step", 0) <= keep_until:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _train_record(w: np.ndarray, step: int, lr: float, grad_norm: float, tokens_seen: int, clock: float, seconds: float,
                  cfg: PretrainConfig) -> dict:
    mlm_loss = w[0] / max(w[2], 1)
    rec = {"split": "train", "step": step, "loss": mlm_loss, "mlm_loss": mlm_loss,
           "mlm_accuracy": w[1] / max(w[2], 1)}
    if cfg.objective == "general-distill":  # no MLM numbers: they do not apply
        hidden = w[7] / max(w[6], 1)
        rec = {"split": "train", "step": step, "loss": hidden, "hidden_loss": hidden}
    if cfg.nsp:
        nsp_loss = w[3] / max(w[5], 1)
        rec.update(loss=mlm_loss + nsp_loss, nsp_loss=nsp_loss, nsp_accuracy=w[4] / max(w[5], 1))
    rec.update(lr=lr, grad_norm=grad_norm, tokens=tokens_seen, tokens_per_s=w[6] / max(seconds, 1e-9),
               elapsed_s=round(clock, 3))
    return {k: float(v) if isinstance(v, (np.floating, float)) else v for k, v in rec.items()}


def _metrics(cfg: PretrainConfig, log_path: Path, last_eval: dict, unigram: float | None, progress: Progress,
             clock: float, interrupted: bool, world: int, device: torch.device, dtype: torch.dtype, counts: dict) -> dict:
    step, tokens_seen, train_s = progress.step, progress.tokens_seen, progress.train_s
    records = read_jsonl(log_path) if log_path.is_file() else []
    train = [r for r in records if r.get("split") == "train"]
    metrics = {
        "model": cfg.model,
        "objective": cfg.objective,
        "steps": step,
        "interrupted": interrupted,
        "eval_mlm_loss": last_eval.get("mlm_loss"),
        "eval_perplexity": last_eval.get("perplexity"),
        "eval_mlm_accuracy": last_eval.get("mlm_accuracy"),
        **({"eval_nsp_accuracy": last_eval.get("nsp_accuracy")} if cfg.nsp else {}),
        "eval_hidden_loss": last_eval.get("hidden_loss"),
        "eval_step": last_eval.get("step"),
        "unigram_baseline_loss": unigram,
        "train_mlm_loss": train[-1].get("mlm_loss") if train else None,
        "train_hidden_loss": train[-1].get("hidden_loss") if train else None,
        "tokens_seen": tokens_seen,
        "wall_time_s": round(clock, 2),
        "train_time_s": round(train_s, 2),
        "tokens_per_s": round(tokens_seen / train_s, 1) if train_s else None,
        "eval_curve": [{"step": r["step"], "minutes": round(r["elapsed_s"] / 60, 3),
                        **{k: r[k] for k in ("mlm_loss", "mlm_accuracy", "hidden_loss") if k in r}}
                       for r in records if r.get("split") == "eval"],
        "data": counts,
        "processes": world,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "config": dataclasses.asdict(cfg),
        "command": sys.argv,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }
    return metrics


def _plot(log_path: Path, unigram: float | None, out: Path, objective: str) -> None:
    records = read_jsonl(log_path) if log_path.is_file() else []
    series = {}
    train = [r for r in records if r.get("split") == "train"]
    held = [r for r in records if r.get("split") == "eval"]
    key, name = ("mlm_loss", "MLM loss") if objective == "mlm" else ("hidden_loss", "hidden-state loss")
    if train:
        series[f"train {name}"] = ([r["step"] for r in train], [r[key] for r in train])
    if held:
        series[f"held-out {name}"] = ([r["step"] for r in held], [r[key] for r in held])
        if unigram is not None:
            series["unigram baseline"] = ([held[0]["step"], max(r["step"] for r in records)], [unigram, unigram])
    if series:
        ylabel, title = ("loss (nats)", "masked-LM pre-training") if objective == "mlm" else (
            "MSE per hidden unit", "general distillation")
        plot_curves(series, out, xlabel="step", ylabel=ylabel, title=title)
