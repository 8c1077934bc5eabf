"""The model card's grid search: per task, fine-tune at every (batch size, learning rate), keep the best on dev.

The BERT miniatures card: "For each task, we selected the best fine-tuning hyperparameters from the lists below,
and trained for 4 epochs: batch sizes 8, 16, 32, 64, 128; learning rates 3e-4, 1e-4, 5e-5, 3e-5."

- Resumable: each run is OUT/runs/<task>/bs<B>-lr<LR>-seed<S>/, a `finetune.run` directory; its metrics.json is
  written last, so a run with one is finished and is never trained again. A crash loses at most the run in flight.
- One identity (`rundir`): OUT/identity.json records the settings every run shares (model, epochs, max length, ...),
  each run's identity.json its own with the task's files; a rerun with others is refused naming them (`--fresh`
  starts over), so results.md never labels old numbers with new settings. The grid, tasks and seeds may grow.
- Ordered so a partial sweep is already useful: seed by seed, grid settings from the middle of the grid outwards,
  and within a setting every task before the next setting. After the first len(tasks) runs every task has a result.
- After every run: OUT/results.md and results.csv (the card's columns: Score, CoLA, SST-2, MRPC F1/Acc, STS-B
  Pearson/Spearman, QQP F1/Acc, MNLI-m, MNLI-mm, QNLI(v2), RTE, WNLI, AX; *dev* figures, where the card's are test),
  OUT/results.json (every run), OUT/heatmaps/<task>.png (dev score over the grid, mean over seeds).
- With several seeds a setting's score is the mean over its seeds; the best setting's best seed is the task's model.
- Only the best run of each task keeps its weights (unless `keep_models`): a full card sweep of Base would otherwise
  keep 180 copies. Should a pruned run become best later (seeds can reorder settings), it is retrained on demand.
- `submission`: the 11 GLUE server files from the best models (AX by the MNLI model), via `data.submission`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import check_max_length
from ..config import find_preset
from ..data.load import TaskData, builtin_name, check_task_name, load_task
from ..data.submission import SUBMISSION_FILES, write_glue_submission
from ..device import DTYPES
from ..data.tasks import get_task, read_glue_split
from ..errors import DataError, MinibertsError
from ..figures import pyplot, save_figure
from ..fileio import atomic_write_text
from ..metrics import GLUE_SCORE_COLUMNS, glue_score
from ..settings import validate
from . import finetune, rundir
from .common import write_json

log = logging.getLogger("miniberts")

GRIDS = {
    "card": ((8, 16, 32, 64, 128), (3e-4, 1e-4, 5e-5, 3e-5)),
    "quick": ((16, 32), (1e-4, 5e-5)),  # the middle 2x2 of the card's grid
}
GLUE_TRAIN_TASKS = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI")
# The card's table: column -> (task, dev split whose figures fill it). AX has no labeled dev set.
CARD_COLUMNS = {
    "CoLA": ("CoLA", "dev"), "SST-2": ("SST-2", "dev"), "MRPC": ("MRPC", "dev"), "STS-B": ("STS-B", "dev"),
    "QQP": ("QQP", "dev"), "MNLI-m": ("MNLI", "dev_matched"), "MNLI-mm": ("MNLI", "dev_mismatched"),
    "QNLI(v2)": ("QNLI", "dev"), "RTE": ("RTE", "dev"), "WNLI": ("WNLI", "dev"), "AX": ("AX", None),
}
NO_VALUE = "–"


@dataclass
class GlueConfig:
    model: str = field(default="", metadata={"help": "model directory, a Hub id (org/name[@revision], released:tiny) "
                                                     "or preset name"})
    name: str = field(default="", metadata={"help": "the model's name in the tables (default: directory or preset)"})
    glue_dir: str = field(default="", metadata={"help": "the glue_data/ folder (needed for GLUE tasks)"})
    out: str = field(default="", metadata={"help": "sweep directory: runs/, results.*, heatmaps/"})
    tasks: list[str] = field(default_factory=lambda: list(GLUE_TRAIN_TASKS),
                             metadata={"help": "GLUE and/or built-in tasks"})
    grid: str = field(default="card", metadata={"help": "card (5 batch sizes x 4 lrs) | quick (2 x 2)",
                                                "choices": tuple(GRIDS)})
    batch_sizes: list[int] = field(default_factory=list, metadata={"help": "override the grid's batch sizes", "min": 1})
    lrs: list[float] = field(default_factory=list, metadata={"help": "override the grid's learning rates", "gt": 0})
    epochs: int = field(default=4, metadata={"help": "epochs per run", "min": 1})
    seeds: int = field(default=1, metadata={"help": "seeds per setting (seed, seed+1, ...)", "min": 1})
    seed: int = field(default=42, metadata={"help": "first seed", "min": 0})
    max_length: int = field(default=128, metadata={"help": "tokens per example", "min": 2})
    eval_batch_size: int = field(default=128, metadata={"help": "batch size for dev/test prediction", "min": 1})
    dtype: str = field(default="auto", metadata={"help": "auto | fp32 | bf16", "choices": DTYPES})
    max_train_examples: int = field(default=0, metadata={"help": "first N training examples per task (0 = all)",
                                                         "min": 0})
    submission: str = field(default="", metadata={"help": "write the 11 GLUE submission files to this folder"})
    keep_models: bool = field(default=False, metadata={"help": "keep the weights of every run, not only the best"})
    cache_dir: str = field(default="", metadata={"help": "where built-in tasks are written"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})
    fresh: bool = field(default=False, metadata={"help": "remove the sweep in --out first (needed to rerun it with "
                                                         "another model, --epochs, --max-length, ...)"})

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class Run:
    task: str
    batch_size: int
    lr: float
    seed: int

    def dir(self, out: Path) -> Path:
        return Path(out) / "runs" / self.task / f"bs{self.batch_size}-lr{self.lr:g}-seed{self.seed}"


# --- planning -------------------------------------------------------------------------------------------------

def grid_of(cfg: GlueConfig) -> tuple[list[int], list[float]]:
    batch_sizes, lrs = GRIDS[cfg.grid]
    return [int(b) for b in cfg.batch_sizes or batch_sizes], [float(x) for x in cfg.lrs or lrs]


def settings_in_order(batch_sizes: list[int], lrs: list[float]) -> list[tuple[int, float]]:
    """Grid cells from the middle outwards (Manhattan distance in grid steps; ties: nearer batch size first)."""
    mid_b, mid_l = (len(batch_sizes) - 1) / 2, (len(lrs) - 1) / 2
    cells = [(abs(i - mid_b) + abs(j - mid_l), abs(i - mid_b), i, j)
             for i in range(len(batch_sizes)) for j in range(len(lrs))]
    return [(batch_sizes[i], lrs[j]) for *_, i, j in sorted(cells)]


def task_names(cfg: GlueConfig) -> list[str]:
    """Canonical names (GLUE spelling, built-in key), each checked, in the order given, without repeats."""
    names = []
    for task in cfg.tasks:
        check_task_name(task)
        builtin = builtin_name(task)
        name = builtin or get_task(task).name
        if not builtin and get_task(name).model_task:
            raise DataError(f"{name} is not trained: it is predicted with the {get_task(name).model_task} model")
        if name not in names:
            names.append(name)
    return names


def plan(cfg: GlueConfig) -> list[Run]:
    """Every run of the sweep, in the order they are trained."""
    tasks = task_names(cfg)
    settings = settings_in_order(*grid_of(cfg))
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    return [Run(t, b, lr, s) for s in seeds for b, lr in settings for t in tasks]


# --- running --------------------------------------------------------------------------------------------------

def _check(cfg: GlueConfig, tasks: list[str]) -> None:
    if not cfg.model or not cfg.out:
        raise MinibertsError("--model and --out are required")
    check_max_length(cfg.model, cfg.max_length)
    glue = [t for t in tasks if not builtin_name(t)]
    if glue and not cfg.glue_dir:
        raise DataError(f"the GLUE tasks {', '.join(glue)} need --glue-dir (the glue_data/ folder)")
    if cfg.submission:
        missing = [t for t in GLUE_TRAIN_TASKS if t not in tasks]
        if missing:
            raise DataError(f"--submission needs all nine GLUE tasks in the sweep; missing {', '.join(missing)}")


def run_config(cfg: GlueConfig, run: Run, out: Path) -> finetune.FinetuneConfig:
    return finetune.FinetuneConfig(
        model=cfg.model, out=str(run.dir(out)), task=run.task, glue_dir=cfg.glue_dir, batch_size=run.batch_size,
        lr=run.lr, epochs=cfg.epochs, seed=run.seed, max_length=cfg.max_length, eval_batch_size=cfg.eval_batch_size,
        dtype=cfg.dtype, max_train_examples=cfg.max_train_examples, cache_dir=cfg.cache_dir, progress=cfg.progress)


# The settings every run of a sweep shares, and so its results.md states: the sweep's identity with the model's files.
SWEEP_IDENTITY = ("model", "epochs", "max_length", "eval_batch_size", "dtype", "max_train_examples")


def sweep_identity(cfg: GlueConfig) -> dict:
    skip = [f.name for f in dataclasses.fields(cfg) if f.name not in SWEEP_IDENTITY]
    return rundir.identity(cfg, {"model": cfg.model}, skip)


def sweep(cfg: GlueConfig) -> dict:
    """Train every unfinished run of the plan, write the results after each; return results.json's contents."""
    tasks = task_names(cfg)
    _check(cfg, tasks)
    out = Path(cfg.out)
    runs = plan(cfg)
    with rundir.claim_run(out, sweep_identity(cfg), cfg.fresh):
        data: dict[str, TaskData] = {}  # each task is read and checked once, before its first run
        for n, run in enumerate(runs, 1):
            run_cfg = run_config(cfg, run, out)
            label = f"[{n}/{len(runs)}] {run.task} batch {run.batch_size} lr {run.lr:g} seed {run.seed}"
            if rundir.finished(run.dir(out), finetune.run_identity(run_cfg)):
                log.info("%s: finished before, skipped", label)
                continue
            log.info("%s", label)
            if run.task not in data:
                data[run.task] = load_task(run_cfg)
            finetune.run(run_cfg, data[run.task])
            results = write_results(cfg, tasks, runs, out, heatmaps=[run.task])
            if not cfg.keep_models:
                prune(results["tasks"][run.task], out)
        results = write_results(cfg, tasks, runs, out)
        if cfg.submission:
            write_submission(cfg, results, runs, out, data)
        return results


def prune(task_results: dict, out: Path) -> None:
    """Delete the weights of every finished run of a task but its best."""
    best = task_results.get("best")
    for r in task_results["runs"]:
        if best and r["dir"] != best["dir"]:
            (out / r["dir"] / "model.safetensors").unlink(missing_ok=True)


# --- results --------------------------------------------------------------------------------------------------

def _score(value) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def collect(cfg: GlueConfig, tasks: list[str], runs: list[Run], out: Path) -> dict:
    """Every finished run's dev results, per-setting means over seeds, and the best setting per task."""
    per_task = {}
    for task in tasks:
        finished = []
        for run in (r for r in runs if r.task == task):
            path = run.dir(out) / "metrics.json"
            if rundir.finished(run.dir(out), finetune.run_identity(run_config(cfg, run, out))):  # never another's
                m = json.loads(path.read_text(encoding="utf-8"))
                best = m["best"]
                finished.append({"batch_size": run.batch_size, "lr": run.lr, "seed": run.seed,
                                 "dir": str(run.dir(out).relative_to(out)), "score": best["score"],
                                 "best_epoch": best["epoch"], "metric": m["metric"],
                                 "dev": {k: v for k, v in best.items() if isinstance(v, dict)},
                                 "test": m.get("test") or {}})
        settings = {}
        for r in finished:
            settings.setdefault((r["batch_size"], r["lr"]), []).append(r)
        rows = []
        for (b, lr), rs in settings.items():
            scores = [r["score"] for r in rs]
            rows.append({"batch_size": b, "lr": lr, "seeds": len(rs), "mean": statistics.fmean(scores),
                         "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                         "best_run": max(rs, key=lambda r: _score(r["score"]))})
        best = None
        if rows:
            top = max(rows, key=lambda s: _score(s["mean"]))
            best = {**top["best_run"], "mean": top["mean"], "std": top["std"], "seeds": top["seeds"]}
        per_task[task] = {"metric": finished[0]["metric"] if finished else None, "runs": finished,
                          "settings": [{k: v for k, v in s.items() if k != "best_run"} for s in rows], "best": best}
    return per_task


def _cell(metrics: dict | None) -> str:
    """The card's cell: one figure, or two as 'F1/Acc', 'Pearson/Spearman' (the task's metric order)."""
    if not metrics:
        return NO_VALUE
    return "/".join(f"{v:.1f}" for k, v in metrics.items() if k != "score")


def card_row(per_task: dict) -> dict[str, str]:
    """{column: cell} in the card's layout when a GLUE task is in the sweep, then one column per built-in task."""
    row: dict[str, str] = {}
    glue_results: dict[str, dict] = {}
    if any(t in per_task for t in GLUE_TRAIN_TASKS):
        row["Score"] = NO_VALUE
        for column, (task, split) in CARD_COLUMNS.items():
            best = per_task.get(task, {}).get("best")
            metrics = best["dev"].get(split) if best and split else None
            row[column] = _cell(metrics)
            if metrics:
                glue_results[column.removesuffix("(v2)")] = metrics
        finite = all(math.isfinite(v) for m in glue_results.values() for v in m.values())  # a constant regressor: nan
        if finite and all(c in glue_results for c in GLUE_SCORE_COLUMNS):
            row["Score"] = f"{glue_score(glue_results):.1f}"
    for task, res in per_task.items():
        if builtin_name(task):
            row[task] = _cell(res["best"]["dev"]["dev"] if res["best"] else None)
    return row


def _model_name(model: str) -> str:
    preset = find_preset(model) if not Path(model).exists() else None
    return f"preset {preset.name}" if preset else Path(model).name or model


def write_results(cfg: GlueConfig, tasks: list[str], runs: list[Run], out: Path,
                  heatmaps: list[str] | None = None) -> dict:
    """results.json, results.md, results.csv, and the heatmaps of `heatmaps` (default: every task)."""
    per_task = collect(cfg, tasks, runs, out)
    row = card_row(per_task)
    name = cfg.name or _model_name(cfg.model)
    batch_sizes, lrs = grid_of(cfg)
    results = {
        "model": cfg.model,
        "grid": {"batch_sizes": batch_sizes, "lrs": lrs, "epochs": cfg.epochs,
                 "seeds": [cfg.seed + k for k in range(cfg.seeds)], "max_length": cfg.max_length},
        "runs_planned": len(runs),
        "runs_finished": sum(len(t["runs"]) for t in per_task.values()),
        "table": row,
        "tasks": per_task,
    }
    write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(name, row, per_task, results))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([["Model", *row], [name, *row.values()]])
    atomic_write_text(out / "results.csv", buf.getvalue())
    for task, res in per_task.items():
        if res["settings"] and (heatmaps is None or task in heatmaps):
            heatmap(task, res, batch_sizes, lrs, out / "heatmaps" / f"{task}.png", name)
    return results


def results_markdown(name: str, row: dict, per_task: dict, results: dict) -> str:
    lines = [f"# Fine-tuning sweep: {name}", "",
             f"Dev results ({results['runs_finished']} of {results['runs_planned']} runs finished); the best setting "
             f"per task on dev. Grid: batch {results['grid']['batch_sizes']} x lr {results['grid']['lrs']}, "
             f"{results['grid']['epochs']} epoch(s) per run, seeds {results['grid']['seeds']}.", "",
             "|Model|" + "|".join(row) + "|", "|---|" + "|".join(":---:" for _ in row) + "|",
             f"|{name}|" + "|".join(row.values()) + "|", "",
             "|Task|Metric|Best batch|Best lr|Seeds|Dev score (mean ± std)|Best epoch|Test score of that run|Runs|",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task, res in per_task.items():
        b = res["best"]
        if b:
            test = b["test"].get("test", {}).get("score")  # built-in and user tasks have labeled tests; GLUE not
            lines.append(f"|{task}|{res['metric']}|{b['batch_size']}|{b['lr']:g}|{b['seeds']}"
                         f"|{b['mean']:.2f} ± {b['std']:.2f}|{b['best_epoch']}|"
                         f"{NO_VALUE if test is None else f'{test:.2f}'}|{len(res['runs'])}|")
        else:
            lines.append(f"|{task}|{NO_VALUE}|{NO_VALUE}|{NO_VALUE}|0|{NO_VALUE}|{NO_VALUE}|{NO_VALUE}|0|")
    return "\n".join(lines) + "\n"


def heatmap(task: str, res: dict, batch_sizes: list[int], lrs: list[float], path: Path, model: str) -> Path:
    """Dev score (mean over seeds) per (batch size, lr) cell; unfinished cells blank, the best one framed."""
    import numpy as np

    plt = pyplot()
    grid = np.full((len(batch_sizes), len(lrs)), np.nan)
    for s in res["settings"]:
        if s["batch_size"] in batch_sizes and s["lr"] in lrs:
            grid[batch_sizes.index(s["batch_size"]), lrs.index(s["lr"])] = s["mean"]
    fig, ax = plt.subplots(figsize=(1.3 * len(lrs) + 2.2, 0.7 * len(batch_sizes) + 1.6))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    what = res["metric"] if "/" not in res["metric"] else f"mean of {res['metric']}"
    fig.colorbar(image, ax=ax, label=f"dev {what}")
    ax.set_xticks(range(len(lrs)), [f"{x:g}" for x in lrs])
    ax.set_yticks(range(len(batch_sizes)), [str(b) for b in batch_sizes])
    ax.set(xlabel="learning rate", ylabel="batch size", title=f"{task}: dev {what} ({model})")
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(batch_sizes)):
        for j in range(len(lrs)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center",
                        color="black" if grid[i, j] > middle else "white", fontsize=9)
    best = res["best"]
    if best and best["batch_size"] in batch_sizes and best["lr"] in lrs:
        i, j = batch_sizes.index(best["batch_size"]), lrs.index(best["lr"])
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    return save_figure(fig, path, dpi=110)


# --- submission -----------------------------------------------------------------------------------------------

def write_submission(cfg: GlueConfig, results: dict, runs: list[Run], out: Path,
                     data: dict[str, TaskData]) -> list[Path]:
    """Predict every GLUE test file with its task's best model (AX with MNLI's) and write the 11 files."""
    from ..device import pick_device, resolve_dtype
    from ..inference.predict import decode, load_predictor, predict_logits

    device = pick_device()
    dtype = resolve_dtype(cfg.dtype, device)
    models = {}
    predictions = {}
    for name, (task, split) in SUBMISSION_FILES.items():
        model_task = get_task(task).model_task or task
        best = results["tasks"].get(model_task, {}).get("best")
        if not best:
            raise DataError(f"--submission: no finished run for {model_task}")
        if model_task not in models:
            run_dir = out / best["dir"]
            if not (run_dir / "model.safetensors").is_file():  # pruned when it was not the best: train it again
                log.info("retraining %s for its weights (pruned earlier)", best["dir"])
                run = next(r for r in runs if r.dir(out) == run_dir)
                fcfg = dataclasses.replace(run_config(cfg, run, out), fresh=True)  # finished, so it would be kept
                finetune.run(fcfg, data.get(model_task) or load_task(fcfg))
            models[model_task] = load_predictor(run_dir)
        model, tokenizer = models[model_task]
        examples = read_glue_split(cfg.glue_dir, task, split)
        pairs = [ex.text_b or "" for ex in examples] if examples[0].text_b is not None else None
        logits = predict_logits(model, tokenizer, [ex.text_a for ex in examples], pairs, cfg.max_length,
                                cfg.eval_batch_size, device, dtype, f"predict {name}" if cfg.progress else "")
        labels = decode(logits, model.cfg.id2label, model.cfg.regression)
        predictions[name] = list(zip((ex.index for ex in examples), labels))
    paths = write_glue_submission(cfg.submission, predictions, cfg.glue_dir)
    log.info("wrote the GLUE submission (%d files) to %s", len(paths), cfg.submission)
    return paths
