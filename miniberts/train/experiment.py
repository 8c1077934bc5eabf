"""The paper's comparisons as one resumable grid: `run(ExperimentConfig) -> summary`.

Turc et al. (2019, sections 4-6) compare five ways to train a compact student on a task with few labels and much
unlabeled in-domain text (the transfer set):

  scratch-ft  random init, fine-tune on the labels                  (finetune.run)
  pt-ft       masked-LM pre-training, then fine-tune                (pretrain.run -> finetune.run)
  distill     random init, distil the fine-tuned teacher            (distill.run)
  pd          pre-trained distillation: pre-train, then distil      (pretrain.run -> distill.run)
  pd-ft       PD, then fine-tune on the labels                      (the pd cell -> finetune.run)

Pre-training is masked LM, or (`pretrain_objective` general-distill) TinyBERT's general distillation from a general
teacher on the same text (`general_distill`): the objective is one more axis of the pre-trained strategies.

A *cell* is one student x strategy x pre-training objective x source x budget x transfer size x seed, and one run
directory under OUT/cells/. The work cells share is done once, as jobs of its own, before the cells that need it:
each pre-trained student (one per student x objective x source x budget, pre-trained with `shared_seed`: every seed of a
strategy starts from the same pre-trained weights, as the paper's students all start from one pre-trained
checkpoint, and a seed then varies the head, the dropout and the batch order), and the teacher (fine-tuned on the
labels first when it is not already a classifier for them) with its logits on every transfer set.

Resumable and parallel: a run directory with metrics.json is finished and skipped; a pre-training run killed
half-way resumes from its last checkpoint; any other cell starts again (each recipe is deterministic given its
seed and thread count). `workers` > 1 runs the jobs in that many spawned processes as their inputs become ready;
every job runs with `threads` intra-op threads whatever `workers` is, because the thread count changes float
summation order (measured: gradients differ in the 8th digit between 1 and 2 threads) and with it the trained
model. So `threads` is part of the experiment's identity and `workers` is not: --workers 2 gives the results of
--workers 1.

OUT/identity.json records the settings and input files (`rundir`); a rerun with other settings is refused,
naming them, unless --fresh; a lock keeps a second process out of OUT while one runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import load_tokenizer, read_checkpoint, resolve
from ..config import find_preset, param_count
from ..data.builtin import fetch
from ..hub import local_path
from ..data.pretraining import check_files
from ..device import DTYPES
from ..errors import MinibertsError
from ..fileio import as_found_on_refusal, atomic_write_text
from ..lifetime import die_with_parent
from ..settings import SettingsError, validate
from ..data.load import TaskData, builtin_name, builtin_task_dir, load_task
from . import baselines, distill, finetune, latency, pareto, pretrain, rundir
from .distill_targets import check_same_vocab
from .experiment_report import write_report
from .general_distill import OBJECTIVES

log = logging.getLogger("miniberts")

STRATEGIES = {
    "scratch-ft": "random init + fine-tune",
    "pt-ft": "pre-train + fine-tune",
    "distill": "distillation (random init)",
    "pd": "pre-trained distillation (PD)",
    "pd-ft": "PD + fine-tune",
}
PRETRAINED = ("pt-ft", "pd", "pd-ft")  # strategies that start from a pre-trained student
DISTILLED = ("distill", "pd", "pd-ft")  # strategies that use the teacher and the transfer set
SOURCES = ("generic", "transfer", "both")
INITS = ("random", "lexicon-input", "lexicon-output")  # random, or lexicon-<source> (`lexicon`)
GIVEN = "given"  # pretrain_on of a student directory: pre-trained before the experiment


@dataclass
class ExperimentConfig:
    out: str = field(default="", metadata={"help": "experiment folder: identity.json, results.jsonl, summary.*, figures, "
                                                    "cells/, pretrained/, teacher/"})
    students: list[str] = field(default_factory=lambda: ["tiny"], metadata={
        "help": "presets (tiny, 2-256, ...; random init), model directories or Hub ids (released:tiny: already "
                "pre-trained students)"})
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES), metadata={
        "help": "of " + ", ".join(f"{k} ({v})" for k, v in STRATEGIES.items()), "choices": tuple(STRATEGIES)})
    student_init: list[str] = field(default_factory=lambda: ["random"], metadata={
        "help": "how a student without weights starts: random (BERT's init), lexicon-input or lexicon-output (its "
                "word embeddings from --teacher's input embeddings or per-token outputs, by PCA: the teacher as "
                "given, before any fine-tuning); several = one more grid axis, the student named tiny+lexicon-input",
        "choices": INITS})
    pretrain_on: list[str] = field(default_factory=lambda: ["generic"], metadata={
        "help": "what students are pre-trained on: generic (--pretrain-files), transfer (the transfer text itself, "
                "the paper's D_LM = D_T), both (concatenated); several = one more grid axis", "choices": SOURCES})
    pretrain_files: list[str] = field(default_factory=list, metadata={
        "help": "generic pre-training text (default: the built-in corpus, written under --cache-dir)"})
    pretrain_eval_files: list[str] = field(default_factory=list, metadata={
        "help": "held-out text for the students' MLM accuracy, the same for every source (default: the built-in "
                "corpus' eval.txt; with --pretrain-files, 1%% of their documents)"})
    pretrain_objective: list[str] = field(default_factory=lambda: ["mlm"], metadata={
        "help": "pre-training objective: mlm (masked LM) or general-distill (the student matches the hidden states of "
                "--general-teacher on the same text); several = one more grid axis", "choices": OBJECTIVES})
    pretrain_steps: list[int] = field(default_factory=lambda: [2000], metadata={
        "help": "pre-training budgets in optimizer steps (several = the budget curve)", "min": 1})
    pretrain_minutes: float = field(default=0.0, metadata={
        "help": "optional wall-clock cap per pre-training run (0 = none); when it binds, results depend on the "
                "machine's speed", "min": 0})
    pretrain_batch_size: int = field(default=16, metadata={"help": "sequences per pre-training step", "min": 1})
    pretrain_lr: float = field(default=2e-3, metadata={"help": "peak pre-training learning rate", "gt": 0})
    pretrain_seq_len: int = field(default=128, metadata={"help": "tokens per pre-training sequence", "min": 8})
    teacher: str = field(default="", metadata={
        "help": "teacher model directory (needed by distill, pd, pd-ft); fine-tuned on --train first unless it is "
                "already a classifier for the task's labels"})
    general_teacher: str = field(default="", metadata={
        "help": "the teacher before task fine-tuning, for --baselines teacher-probe,static,static-trained and "
                "--pretrain-objective general-distill (default: --teacher when it is not yet a classifier for the "
                "task)"})
    baselines: list[str] = field(default_factory=list, metadata={
        "help": "systems scored beside the students, each a cell: " + ", ".join(f"{k} ({v})" for k, v in
                                                                                baselines.BASELINES.items()),
        "choices": tuple(baselines.BASELINES)})
    pareto: bool = field(default=False, metadata={
        "help": "at the end, measure every system's size, batch-1 latency and throughput in one process and add the "
                "Pareto table to summary.md and pareto.png"})
    latency_only: bool = field(default=False, metadata={
        "help": "with --out alone: re-measure a finished --pareto experiment's latencies (an idle machine) and "
                "rewrite latency.json, summary.md and pareto.png; nothing trains"})
    teacher_epochs: int = field(default=3, metadata={"help": "epochs of the teacher's fine-tuning", "min": 1})
    teacher_lr: float = field(default=5e-5, metadata={"help": "learning rate of the teacher's fine-tuning", "gt": 0})
    task: str = field(default="", metadata={"help": "built-in task (rotten_tomatoes, ...) or GLUE task (with "
                                                     "--glue-dir)"})
    glue_dir: str = field(default="", metadata={"help": "the glue_data/ folder, for a GLUE --task"})
    train: str = field(default="", metadata={"help": "your labeled training file (.csv, .tsv or .jsonl)"})
    dev: str = field(default="", metadata={"help": "your dev file, same columns"})
    test: str = field(default="", metadata={"help": "your test file, same columns (scored)"})
    transfer: list[str] = field(default_factory=list, metadata={
        "help": "unlabeled transfer text, one example per line (default for rotten_tomatoes: its transfer.txt)"})
    text_column: str = field(default="", metadata={"help": "column with the text (your own files)"})
    text_pair_column: str = field(default="", metadata={"help": "column with the second text of a pair"})
    label_column: str = field(default="", metadata={"help": "column with the label (your own files)"})
    transfer_sizes: list[str] = field(default_factory=lambda: ["all"], metadata={
        "help": "transfer-set sizes: numbers of texts (the first N) or all; several = the transfer-size curve"})
    seeds: int = field(default=3, metadata={"help": "seeds per cell (first-seed .. first-seed + K - 1)", "min": 1})
    first_seed: int = field(default=1, metadata={"help": "the first seed: a later range gives fresh seeds, e.g. to "
                                                         "confirm a choice made on seeds 1..K", "min": 1})
    epochs: int = field(default=4, metadata={"help": "epochs of every student's fine-tuning or distillation", "min": 1})
    lr: float = field(default=3e-4, metadata={"help": "students' learning rate (the card's grid: 3e-4..3e-5)", "gt": 0})
    batch_size: int = field(default=32, metadata={"help": "students' batch size", "min": 1})
    max_length: int = field(default=128, metadata={"help": "tokens per example", "min": 2})
    eval_batch_size: int = field(default=128, metadata={"help": "batch size of prediction", "min": 1})
    max_train_examples: int = field(default=0, metadata={"help": "use only the first N labeled examples (0 = all)",
                                                           "min": 0})
    temperature: float = field(default=1.0, metadata={"help": "distillation temperature", "gt": 0})
    alpha: float = field(default=0.0, metadata={"help": "weight of the hard-label loss in distillation", "min": 0,
                                                "max": 1})
    shared_seed: int = field(default=0, metadata={"help": "seed of the shared work: student pre-training, teacher "
                                                          "fine-tuning", "min": 0})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 where native) | fp32 | bf16", "choices": DTYPES})
    threads: int = field(default=1, metadata={"help": "intra-op threads of every job (part of the results' identity)",
                                              "min": 1})
    workers: int = field(default=1, metadata={"help": "jobs run at once, each in its own process (results do not "
                                                      "depend on it)", "min": 1})
    cache_dir: str = field(default="", metadata={"help": "built-in data, token shards and teacher logits (default "
                                                          "OUT/cache)"})
    fresh: bool = field(default=False, metadata={"help": "remove an earlier experiment in --out (made with other "
                                                         "settings) and start afresh; OUT/cache is kept"})

    def __post_init__(self):
        validate(self)
        for size in self.transfer_sizes:
            if size != "all" and not (size.isdigit() and int(size) > 0):
                raise SettingsError(f"--transfer-sizes takes positive numbers of texts or all, got {size!r}")
        for name in ("students", "student_init", "strategies", "pretrain_on", "pretrain_objective", "pretrain_steps",
                     "transfer_sizes"):
            values = getattr(self, name)
            if not values:
                raise SettingsError(f"--{name.replace('_', '-')} needs at least one value")
            if len(set(values)) != len(values):
                raise SettingsError(f"--{name.replace('_', '-')} lists a value twice: {values}")
        if len(set(self.baselines)) != len(self.baselines):
            raise SettingsError(f"--baselines lists a value twice: {self.baselines}")
        if "pd-ft" in self.strategies and "pd" not in self.strategies:
            raise SettingsError("--strategies pd-ft fine-tunes the pd cells' students: list pd too")


# Settings that do not change a number of the results (identity.json leaves them out).
NOT_IDENTITY = ("workers", "pareto", "latency_only")  # beside rundir.NOT_IDENTITY (out, fresh, cache_dir, ...)


# --- the plan: students, cells, jobs --------------------------------------------------------------------------

@dataclass(frozen=True)
class Student:
    label: str  # how tables name it: the preset as given, or the directory's name
    model: str  # preset name or directory
    scratch: str | None  # the preset random-init arms start from (None: a directory of no preset's shape)
    params: int
    init: str = "random"  # of INITS: how `scratch` starts

    @property
    def pretrained(self) -> bool:
        return local_path(self.model).is_dir()


@dataclass(frozen=True)
class Cell:
    student: str
    strategy: str
    pretrain_on: str | None  # None for random-init strategies
    pretrain_steps: int | None
    transfer_size: str | None  # None for strategies without the transfer set
    seed: int
    pretrain_objective: str | None = None  # None for random-init strategies and given students

    @property
    def path(self) -> str:
        parts = [self.student, self.strategy]
        if self.pretrain_on:
            steps = "" if self.pretrain_steps is None else f"-{self.pretrain_steps}steps"
            parts.append(_objective_prefix(self.pretrain_objective) + self.pretrain_on + steps)
        if self.transfer_size:
            parts.append(f"transfer-{self.transfer_size}")
        return "/".join(parts + [f"seed-{self.seed}"])


def _objective_prefix(objective: str | None) -> str:
    """How a pre-training objective shows in folder names: none for masked LM (the names of earlier experiments)."""
    return "" if objective in (None, "mlm") else f"{objective}-"


def _pretrain_job_name(student: str, objective: str, source: str, steps: int) -> str:
    return f"pretrain {student} {_objective_prefix(objective)}{source} {steps}"


@dataclass
class Job:
    """One call of a recipe. `out/metrics.json` marks it finished; it runs once every job in `deps` has."""

    name: str
    kind: str  # pretrain | teacher | finetune | distill | baseline
    settings: object  # the recipe's config (for "teacher": TeacherWork)
    out: Path
    deps: tuple[str, ...] = ()
    cell: Cell | None = None

    def finished(self) -> bool:
        return (self.out / "metrics.json").is_file()


@dataclass
class TeacherWork:
    teacher: str  # the directory of the fine-tuned teacher
    finetune: finetune.FinetuneConfig | None  # None: the teacher is already a classifier for the task's labels
    label: list[distill.DistillConfig]  # one distillation config per transfer size: the logits they will ask for


@dataclass
class Plan:
    cfg: ExperimentConfig
    data: TaskData
    students: list[Student]
    jobs: list[Job]
    teacher_dir: Path | None
    pretrained: dict[tuple[str, str, str, int], Path]  # (student, objective, source, steps) -> its pre-training run


def plan(cfg: ExperimentConfig) -> Plan:
    """Every input read and checked, every job laid out; nothing trained. Bad input fails here, in one line."""
    if not cfg.out:
        raise MinibertsError("--out is required (the experiment folder)")
    out = Path(cfg.out)
    cache = cfg.cache_dir or str(out / "cache")
    task_fields = dict(task=cfg.task, glue_dir=cfg.glue_dir, train=cfg.train, dev=cfg.dev, test=cfg.test,
                       text_column=cfg.text_column, text_pair_column=cfg.text_pair_column,
                       label_column=cfg.label_column, max_length=cfg.max_length, eval_batch_size=cfg.eval_batch_size,
                       max_train_examples=cfg.max_train_examples, dtype=cfg.dtype, cache_dir=cache, progress=False)
    data = load_task(finetune.FinetuneConfig(**task_fields))
    students = [_with_init(_student(name, cfg), init, cfg) for name in cfg.students for init in cfg.student_init]
    if len({s.label for s in students}) != len(students):
        raise MinibertsError(f"--students names one student twice: {cfg.students}")
    distilling = any(s in DISTILLED for s in cfg.strategies)
    baselines.check(cfg.baselines, data)
    if cfg.pareto and not any(ex.label is not None for ex in data.test.get("test", [])):
        raise MinibertsError("--pareto puts the systems' test scores against their latency: give --test FILE, "
                             "with labels")
    teaching = distilling or any(b in baselines.NEEDS_TEACHER for b in cfg.baselines)
    pretraining = any(s in PRETRAINED for s in cfg.strategies) and any(not s.pretrained for s in students)

    transfer, n_transfer = _transfer_files(cfg, data, cache, needed=distilling or any(
        b in baselines.STATIC_ARMS for b in cfg.baselines) or (
        pretraining and any(src != "generic" for src in cfg.pretrain_on)))
    for size in cfg.transfer_sizes:
        if distilling and size != "all" and int(size) > n_transfer:
            raise MinibertsError(f"--transfer-sizes {size}: the transfer set {transfer[0]} has {n_transfer} texts")

    teacher_dir, teacher_ft = None, None
    if teaching:
        teacher_dir, teacher_ft = _teacher(cfg, data, students, out, task_fields)

    # The built-in corpus is written when a source uses it or, by default, for its held-out eval.txt: every
    # source's MLM accuracy is then measured on the same generic held-out text.
    uses_generic = any(src != "transfer" for src in cfg.pretrain_on) or not cfg.pretrain_eval_files
    generic, generic_eval = _generic_corpus(cfg, cache) if pretraining and uses_generic else ([], [])
    corpora = {"generic": generic, "transfer": transfer, "both": generic + transfer}
    if pretraining and cfg.pretrain_eval_files:
        check_files(cfg.pretrain_eval_files, "pretrain-eval")
    eval_files = cfg.pretrain_eval_files or generic_eval
    if pretraining and "transfer" in cfg.pretrain_on and not eval_files:
        raise MinibertsError("--pretrain-on transfer needs --pretrain-eval-files: the transfer text is one document, "
                             "so none of it can be held out")

    distiller = _general_distiller(cfg, students, teacher_ft) if pretraining else ""
    jobs: list[Job] = []
    pretrained: dict[tuple[str, str, str, int], Path] = {}
    if pretraining:
        for s in students:
            if s.pretrained:
                continue
            for objective in cfg.pretrain_objective:
                for source in cfg.pretrain_on:
                    for steps in cfg.pretrain_steps:
                        run_dir = out / "pretrained" / f"{s.label}-{_objective_prefix(objective)}{source}-{steps}steps"
                        pretrained[(s.label, objective, source, steps)] = run_dir
                        jobs.append(Job(_pretrain_job_name(s.label, objective, source, steps), "pretrain",
                                        pretrain.PretrainConfig(
                            model=s.model, **_lexicon(s, cfg), objective=objective,
                            teacher=distiller if objective == "general-distill" else "",
                            train_files=corpora[source], eval_files=eval_files, out=str(run_dir), steps=steps,
                            max_minutes=cfg.pretrain_minutes, batch_size=cfg.pretrain_batch_size, lr=cfg.pretrain_lr,
                            seq_len=cfg.pretrain_seq_len, dropout=0.0, eval_every=0, save_every=max(100, steps // 4),
                            seed=cfg.shared_seed, dtype=cfg.dtype, progress=False, resume=True),
                                        run_dir))  # resume: a run killed half-way continues (none yet: fresh)

    student_loop = dict(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, **task_fields)
    distill_extra = dict(teacher=str(teacher_dir), transfer=transfer, temperature=cfg.temperature, alpha=cfg.alpha)
    cells = _cell_jobs(cfg, students, pretrained, out, student_loop, distill_extra)
    if teaching:
        label = {}  # transfer size -> the first distillation config of that size: the logits its cells ask for
        for job in cells:
            if job.kind == "distill":
                label.setdefault(job.cell.transfer_size, job.settings)
        jobs.append(Job("teacher", "teacher", TeacherWork(str(teacher_dir), teacher_ft, list(label.values())),
                        out / "teacher-logits"))
    cells += _baseline_jobs(cfg, teacher_dir, teacher_ft, transfer, out, task_fields)
    return Plan(cfg, data, students, jobs + cells, teacher_dir, pretrained)


def _baseline_jobs(cfg: ExperimentConfig, teacher_dir: Path | None, teacher_ft, transfer: list[str], out: Path,
                   task_fields: dict) -> list[Job]:
    """One cell per baseline, in OUT/baselines/<name>/, after the teacher's job where it needs the teacher."""
    general = general_teacher(cfg, teacher_ft)
    if not general and any(b in baselines.NEEDS_GENERAL for b in cfg.baselines):
        raise MinibertsError("--baselines teacher-probe, static and static-trained embed with the teacher before task "
                             f"fine-tuning: --teacher {cfg.teacher} is already fine-tuned, so give "
                             "--general-teacher DIR")
    if general:
        resolve(general)  # a model directory, or one line
    jobs = []
    for name in cfg.baselines:
        deps = ("teacher",) if name in baselines.NEEDS_TEACHER else ()
        for seed in seed_numbers(cfg) if name in baselines.SEEDED else (None,):
            run_dir = out / "baselines" / name / ("" if seed is None else f"seed-{seed}")
            settings = baselines.BaselineConfig(name, finetune.FinetuneConfig(**task_fields), str(teacher_dir),
                                                general, transfer, str(run_dir), seed)
            cell = Cell(name, pareto.BASELINE, None, None, "all" if name in baselines.STATIC_ARMS else None, seed)
            jobs.append(Job(f"baseline {name}" + ("" if seed is None else f" seed {seed}"), "baseline", settings,
                            run_dir, deps, cell))
    return jobs


def seed_numbers(cfg: ExperimentConfig) -> range:
    """The seeds every seeded cell runs: --seeds of them from --first-seed."""
    return range(cfg.first_seed, cfg.first_seed + cfg.seeds)


def _cell_jobs(cfg: ExperimentConfig, students: list[Student], pretrained: dict, out: Path, student_loop: dict,
               distill_extra: dict) -> list[Job]:
    """One job per cell, seed by seed (the first seeds' rows come first), each after the jobs it starts from."""
    jobs: dict[Cell, Job] = {}
    for seed in seed_numbers(cfg):
        for s in students:
            for strategy in cfg.strategies:
                for objective, source, steps, init in _starts(s, strategy, cfg, pretrained):
                    for size in cfg.transfer_sizes if strategy in DISTILLED else [None]:
                        cell = Cell(s.label, strategy, source, steps, size, seed, objective)
                        lexicon = _lexicon(s, cfg) if source is None else {}  # a random start
                        jobs[cell] = _cell_job(cell, init, out / "cells" / cell.path, jobs, dict(
                            student_loop, **lexicon), distill_extra)
    return list(jobs.values())


def _cell_job(cell: Cell, init: str, run_dir: Path, earlier: dict, student_loop: dict, distill_extra: dict) -> Job:
    name = f"cell {cell.path}"
    if cell.strategy == "pd-ft":  # fine-tunes the student of the pd cell with the same axes
        pd = earlier[dataclasses.replace(cell, strategy="pd")]
        return Job(name, "finetune", finetune.FinetuneConfig(model=str(pd.out), out=str(run_dir), seed=cell.seed,
                                                             **student_loop), run_dir, (pd.name,), cell)
    deps = (_pretrain_job_name(cell.student, cell.pretrain_objective, cell.pretrain_on, cell.pretrain_steps),) if (
        cell.pretrain_on not in (None, GIVEN)) else ()
    if cell.strategy in DISTILLED:
        limit = 0 if cell.transfer_size == "all" else int(cell.transfer_size)
        return Job(name, "distill", distill.DistillConfig(student=init, out=str(run_dir), transfer_limit=limit,
                                                          seed=cell.seed, **distill_extra, **student_loop),
                   run_dir, deps + ("teacher",), cell)
    return Job(name, "finetune", finetune.FinetuneConfig(model=init, out=str(run_dir), seed=cell.seed, **student_loop),
               run_dir, deps, cell)


def _with_init(s: Student, init: str, cfg: ExperimentConfig) -> Student:
    """The student `s` starting as `init` says: a lexicon init is another student, named `tiny+lexicon-input`."""
    if init == "random":
        return s
    if s.pretrained:
        raise MinibertsError(f"--student-init {init} initialises a random student, but {s.model} is a model directory "
                             "with weights: give a preset (tiny, 2-256, ...)")
    if not cfg.teacher:
        raise MinibertsError(f"--student-init {init} takes the lexicon from --teacher DIR: give one")
    check_same_vocab(load_tokenizer(read_checkpoint(cfg.teacher)), load_tokenizer(resolve(s.model)))
    return dataclasses.replace(s, label=f"{s.label}+{init}", init=init)


def _lexicon(s: Student, cfg: ExperimentConfig) -> dict:
    """The init_lexicon and lexicon_source settings of `s`'s random start (none for BERT's random init): the
    lexicon of --teacher as given, before the experiment fine-tunes it."""
    if s.init == "random":
        return {}
    return {"init_lexicon": cfg.teacher, "lexicon_source": s.init.removeprefix("lexicon-")}


def _student(name: str, cfg: ExperimentConfig) -> Student:
    ckpt = resolve(name)  # a preset or a directory; a one-line error otherwise
    c = ckpt.config
    if cfg.max_length > c.max_position_embeddings:
        raise MinibertsError(f"{name}: --max-length {cfg.max_length} exceeds its {c.max_position_embeddings} positions")
    path = local_path(name)
    if not path.is_dir():
        return Student(name, name, name, param_count(c))
    preset = find_preset(f"{c.num_layers}-{c.hidden_size}")
    same = preset is not None and preset.config() == dataclasses.replace(c, id2label=[], regression=False)
    scratch = preset.name if same else None
    if scratch is None and any(s in ("scratch-ft", "distill") for s in cfg.strategies):
        raise MinibertsError(f"{path}: scratch-ft and distill start from a random init of the student's shape, and "
                             f"no preset has this one; drop them or give a preset")
    if not Path(name).exists():  # a Hub id, passed on as given (each run records its resolved commit); its label
        return Student(name.replace("/", "--"), name, scratch, param_count(c))  # names a folder: no "/" in it
    return Student(path.name, str(path), scratch, param_count(c))


def _starts(s: Student, strategy: str, cfg: ExperimentConfig, pretrained: dict) -> list[tuple]:
    """(pretrain_objective, pretrain_on, pretrain_steps, initial model) for each cell of this student and
    strategy."""
    if strategy not in PRETRAINED:
        return [(None, None, None, s.scratch)]
    if s.pretrained:
        return [(None, GIVEN, None, s.model)]
    return [(objective, src, steps, str(pretrained[(s.label, objective, src, steps)]))
            for objective in cfg.pretrain_objective for src in cfg.pretrain_on for steps in cfg.pretrain_steps]


def _transfer_files(cfg: ExperimentConfig, data: TaskData, cache: str, needed: bool) -> tuple[list[str], int]:
    """The transfer files (given, or the built-in task's transfer.txt) and their number of texts."""
    files = list(cfg.transfer)
    if not files and cfg.task and builtin_name(cfg.task):
        builtin = builtin_task_dir(builtin_name(cfg.task), cache) / "transfer.txt"
        files = [str(builtin)] if builtin.is_file() else []
    if not needed:
        return files, 0
    if not files:
        raise MinibertsError("distill, pd, pd-ft and --pretrain-on transfer|both need --transfer FILE... "
                             "(unlabeled text, one example per line)")
    pairs = any(ex.text_b is not None for ex in data.train)
    texts, _ = distill.read_transfer(files, pairs)  # errors name the file and line
    return files, len(texts)


def _generic_corpus(cfg: ExperimentConfig, cache: str) -> tuple[list[str], list[str]]:
    """(pre-training files, held-out files): the user's, or the built-in corpus written once under the cache."""
    if cfg.pretrain_files:
        check_files(cfg.pretrain_files, "pretrain")
        return list(cfg.pretrain_files), []
    corpus = Path(cache) / "corpus"
    if not (corpus / "SOURCES.md").is_file():  # written last: marks a complete corpus
        fetch("pretraining", corpus)
    return [str(corpus / "train.txt")], [str(corpus / "eval.txt")]


def general_teacher(cfg: ExperimentConfig, teacher_ft) -> str:
    """The teacher before task fine-tuning: --general-teacher, else --teacher when this experiment fine-tunes it
    (`teacher_ft`, not None); "" when there is none."""
    return cfg.general_teacher or (cfg.teacher if teacher_ft is not None else "")


def _general_distiller(cfg: ExperimentConfig, students: list[Student], teacher_ft) -> str:
    """The teacher of general distillation (`general_teacher`), its vocabulary and positions checked against the
    students; "" when no student is pre-trained by general distillation."""
    if "general-distill" not in cfg.pretrain_objective:
        return ""
    teacher = general_teacher(cfg, teacher_ft)
    if not teacher:
        raise MinibertsError("--pretrain-objective general-distill learns from the teacher before task fine-tuning: "
                             "give --general-teacher DIR (or a --teacher that is not yet fine-tuned)")
    ckpt = read_checkpoint(teacher)
    for s in students:
        if not s.pretrained:
            check_same_vocab(load_tokenizer(ckpt), load_tokenizer(resolve(s.model)))
    if cfg.pretrain_seq_len > ckpt.config.max_position_embeddings:
        raise MinibertsError(f"--pretrain-seq-len {cfg.pretrain_seq_len} exceeds the "
                             f"{ckpt.config.max_position_embeddings} positions of the general teacher {teacher}")
    return teacher


def _teacher(cfg: ExperimentConfig, data: TaskData, students: list[Student], out: Path, task_fields: dict):
    """(the teacher directory distillation uses, the fine-tuning that makes it or None); the vocabularies checked."""
    if not cfg.teacher:
        raise MinibertsError("distill, pd and pd-ft need --teacher DIR (a model directory)")
    ckpt = read_checkpoint(cfg.teacher)
    teacher_tok = load_tokenizer(ckpt)
    for s in students:
        check_same_vocab(teacher_tok, load_tokenizer(resolve(s.model)))
    c = ckpt.config
    ready = ckpt.has_head("classifier.") and c.regression == data.regression and (
        data.regression or c.id2label == data.id2label)
    if ready:
        return Path(cfg.teacher), None
    run_dir = out / "teacher"
    return run_dir, finetune.FinetuneConfig(model=cfg.teacher, out=str(run_dir), epochs=cfg.teacher_epochs,
                                            lr=cfg.teacher_lr, seed=cfg.shared_seed, **task_fields)


# --- the spec ---------------------------------------------------------------------------------------------------

def identity(cfg: ExperimentConfig) -> dict:
    """What defines an experiment's numbers (OUT/identity.json, `rundir`): every setting but where and how fast it
    runs (--out, --workers, --cache-dir, --fresh), with the input files and model directories by their bytes."""
    inputs = {name: getattr(cfg, name) for name in ("students", "pretrain_files", "pretrain_eval_files", "teacher",
                                                     "general_teacher", "train", "dev", "test", "transfer")}
    # A random start from seed 1 has the identity it had before --student-init and --first-seed existed.
    skip = NOT_IDENTITY + (("student_init",) if cfg.student_init == ["random"] else ()) + (
        ("first_seed",) if cfg.first_seed == 1 else ())
    return rundir.identity(cfg, inputs, skip=skip)


# --- running the jobs -------------------------------------------------------------------------------------------

def run_job(job: Job, threads: int) -> str:
    """Run one job with `threads` intra-op threads (in this process or a worker's); returns its name."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if job.kind == "pretrain":
            pretrain.run(job.settings)
        elif job.kind == "finetune":
            finetune.run(job.settings)
        elif job.kind == "distill":
            distill.run(job.settings)
        elif job.kind == "baseline":
            baselines.run(job.settings)
        else:
            _teacher_work(job)
    finally:
        torch.set_num_threads(previous)
    return job.name


def _teacher_work(job: Job) -> None:
    work: TeacherWork = job.settings
    if work.finetune is not None and not (Path(work.finetune.out) / "metrics.json").is_file():
        finetune.run(work.finetune)
    counts = {}
    for cfg in work.label:  # the same texts distill.run will ask for, so its cache lookups hit
        data = load_task(dataclasses.replace(cfg, model=cfg.student))
        texts, pairs = distill.read_transfer(cfg.transfer, any(ex.text_b is not None for ex in data.train),
                                             cfg.transfer_limit)
        distill.teacher_targets(cfg, distill.teacher_splits(data, texts, pairs))
        counts[cfg.transfer_limit or "all"] = len(texts)
    job.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job.out / "metrics.json", json.dumps({"teacher": work.teacher,
                                                            "transfer_texts": counts}, indent=2) + "\n")


def _worker_init(counter, gpus: int, parent: int) -> None:
    """The worker exits when the experiment's process dies, however it dies (`lifetime`); logging; with several
    GPUs, worker i sees only GPU i mod gpus (set before CUDA starts)."""
    die_with_parent(parent)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)


def execute(jobs: list[Job], workers: int, threads: int, on_done) -> None:
    """Run the unfinished jobs, each after its dependencies; `on_done(job)` in this process after each."""
    done = {j.name for j in jobs if j.finished()}
    todo = [j for j in jobs if j.name not in done]
    log.info("experiment: %d jobs, %d finished earlier, %d to run on %d worker(s) x %d thread(s)", len(jobs),
             len(done), len(todo), workers, threads)
    if workers == 1:
        for job in todo:  # the plan lists every job after its dependencies
            log.info("experiment: %s", job.name)
            run_job(job, threads)
            on_done(job)
        return
    context = multiprocessing.get_context("spawn")  # no fork: torch's thread pools do not survive it
    gpus = torch.cuda.device_count()  # one worker per GPU on a multi-GPU machine
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=(context.Value("i", 0), gpus, os.getpid())) as pool:
        running = {}
        while todo or running:
            for job in [j for j in todo if all(d in done for d in j.deps)]:
                todo.remove(job)
                log.info("experiment: %s", job.name)
                running[pool.submit(run_job, job, threads)] = job
            if not running:
                raise MinibertsError(f"experiment: {todo[0].name} waits for a job that is not planned")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                if future.exception() is not None:  # a worker's error (one line for bad input) surfaces here
                    for other in running:
                        other.cancel()  # queued jobs do not start; running ones finish (they are resumable)
                    raise future.exception()
                done.add(job.name)
                on_done(job)


def run(cfg: ExperimentConfig, prepare: Callable[[], None] = lambda: None) -> dict:
    """Plan (checking every input), record the spec, run what is not finished, write the report; the summary.
    `prepare()` writes input files that `cfg` names (the quickstart's split) before they are fingerprinted."""
    started = time.time()
    out = Path(cfg.out)
    if cfg.latency_only:
        if not cfg.out:
            raise MinibertsError("--latency-only needs --out (a finished --pareto experiment)")
        summary = latency.remeasure(out)
        summary["minutes"] = round((time.time() - started) / 60, 2)
        return summary
    # A refusal (bad settings, another OUT) leaves OUT as it was: no identity, cache or lock of the refused run.
    with as_found_on_refusal(out, unless=(rundir.RunInUse,)) as accept:
        prepare()
        # The lock is held for the whole run, and an OUT made with other settings is refused before any planning;
        # --fresh keeps OUT/cache (token shards and teacher logits are keyed by their inputs).
        with rundir.open_run(out, identity(cfg), cfg.fresh, keep=("cache",)):
            p = plan(cfg)
            accept()
            return _run(cfg, p, out, started)


def _run(cfg: ExperimentConfig, p: Plan, out: Path, started: float) -> dict:
    cells = [j for j in p.jobs if j.cell is not None]

    def on_done(job: Job) -> None:
        if job.cell is not None:
            write_results(p, cells)

    execute(p.jobs, cfg.workers, cfg.threads, on_done)
    rows = write_results(p, cells)
    teacher = None  # the teacher's own scores, when this experiment fine-tuned it on the task's splits
    work = next((j.settings for j in p.jobs if j.kind == "teacher"), None)
    if work is not None and work.finetune is not None:
        teacher = row_scores(json.loads((p.teacher_dir / "metrics.json").read_text(encoding="utf-8")), p.data)
    summary = write_report(out, rows, p.data.spec.metrics[0], teacher, {s.label: s.params for s in p.students},
                           {j.cell: j.out for j in cells})
    if cfg.pareto:
        latency.write_systems(out, _systems(p, cells), [ex.text_a for ex in p.data.test.get("test", [])],
                              latency.Settings(cfg.max_length, cfg.dtype, cfg.eval_batch_size, cfg.threads))
        summary = pareto.write(out, rows, latency.measure(out))
    summary["minutes"] = round((time.time() - started) / 60, 2)
    log.info("experiment: %d cells in %.1f minutes; results in %s", len(rows), summary["minutes"], out)
    return summary


def _systems(p: Plan, cells: list[Job]) -> list[latency.System]:
    """What the latency measurement loads: per group, its first finished cell's model (seeds share the shape)."""
    systems: dict[str, latency.System] = {}
    for job in cells:
        if not job.finished():
            continue
        name = pareto.system_name(dataclasses.asdict(job.cell))
        if name in systems:
            continue
        if job.kind != "baseline":
            systems[name] = latency.System(name, "model", str(job.out))
        elif job.cell.student == "teacher":
            systems[name] = latency.System(name, "model", str(p.teacher_dir))
        elif job.cell.student == "static-trained":
            systems[name] = latency.System(name, job.cell.student, str(job.out / baselines.PIPELINE))
        else:
            systems[name] = latency.System(name, job.cell.student, job.settings.general if name == "teacher-probe"
                                           else str(job.out), str(job.out / baselines.HEAD))
    return list(systems.values())


# --- results ------------------------------------------------------------------------------------------------------

def row_scores(metrics: dict, data: TaskData) -> dict:
    """{"dev": {...}, "test": {...}}: the kept epoch's first dev split and the test split, in percent."""
    dev_name = next(iter(data.dev))
    strip = lambda m: {k: round(v, 4) for k, v in m.items() if k != "score"}  # noqa: E731
    return {"dev": strip(metrics["best"][dev_name]), "test": strip(metrics.get("test", {}).get("test", {}))}


def cell_row(p: Plan, job: Job) -> dict:
    """One line of results.jsonl: the cell's axes, its scores, its student's size and pre-training."""
    cell = job.cell
    metrics = json.loads((job.out / "metrics.json").read_text(encoding="utf-8"))
    if job.kind == "baseline":
        return {**dataclasses.asdict(cell), **row_scores(metrics, p.data), "params": metrics["params"],
                "seconds": metrics["seconds"], **{k: metrics[k] for k in ("transfer_examples",) if k in metrics}}
    student = next(s for s in p.students if s.label == cell.student)
    row = {"student": cell.student, "student_init": student.init, "strategy": cell.strategy,
           "pretrain_objective": cell.pretrain_objective, "pretrain_on": cell.pretrain_on,
           "pretrain_steps": cell.pretrain_steps, "transfer_size": cell.transfer_size, "seed": cell.seed,
           **row_scores(metrics, p.data), "params": student.params, "seconds": metrics["seconds"]}
    if cell.strategy in DISTILLED:
        row["transfer_examples"] = _transfer_examples(job, p)
    if cell.pretrain_on and cell.pretrain_on != GIVEN:
        pre = json.loads((p.pretrained[(cell.student, cell.pretrain_objective, cell.pretrain_on,
                                        cell.pretrain_steps)] / "metrics.json").read_text(encoding="utf-8"))
        row.update(pretrain_steps_done=pre["steps"], pretrain_tokens=pre["tokens_seen"],
                   pretrain_seconds=pre["train_time_s"],
                   pretrain_mlm_accuracy=None if pre["eval_mlm_accuracy"] is None
                   else round(100 * pre["eval_mlm_accuracy"], 4))
        if pre.get("eval_hidden_loss") is not None:  # general distillation: MLM accuracy does not apply
            row["pretrain_hidden_loss"] = round(pre["eval_hidden_loss"], 6)
    return row


def _transfer_examples(job: Job, p: Plan) -> int:
    """Transfer texts the cell distilled on (pd-ft: its pd cell's)."""
    metrics = json.loads((job.out / "metrics.json").read_text(encoding="utf-8"))
    if "transfer_examples" in metrics:
        return metrics["transfer_examples"]
    pd = Path(job.settings.model) / "metrics.json"
    return json.loads(pd.read_text(encoding="utf-8"))["transfer_examples"]


def write_results(p: Plan, cells: list[Job]) -> list[dict]:
    """OUT/results.jsonl: one line per finished cell, in the plan's order (so a resumed or parallel run writes the
    same file as an unbroken one, `seconds` aside)."""
    rows = [cell_row(p, job) for job in cells if job.finished()]
    atomic_write_text(Path(p.cfg.out) / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows
