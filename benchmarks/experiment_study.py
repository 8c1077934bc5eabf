"""The study of docs/experiments.md: the paper's comparisons on Rotten Tomatoes, as four `miniberts experiment` runs.

    python benchmarks/experiment_study.py [--out runs/study] [--workers 2] [--threads 1] [--part budget,transfer,lr,sizes]

  budget    Tiny, distill and pd x pre-training budgets of 250, 1,000 and 3,000 steps on the generic corpus and on
            the transfer text itself (D_LM = D_T) x 3 seeds: PD − distill against pre-training tokens and MLM accuracy
  transfer  Tiny, distill / pd / pd-ft x transfer sets of 500, 2,000 and all (~8,250) texts x 3 seeds
  lr        Tiny, scratch-ft / pt-ft / distill / pd at the card's learning rate 1e-4 (3e-4 is in the other parts) x 3
            seeds: does any arm's order change with another learning rate? (LRS: add 5e-5, 3e-5 for the whole grid)
  sizes     5 students spanning depth and width (2-128, 4-128, 6-128, 2-256, 4-256) x the five strategies x 3 seeds,
            each student pre-trained 250 steps (SIZES_PRETRAIN_STEPS)

Every part shares the quickstart's data split (1,500 labeled / 1,000 dev / 2,000 test sentences, seed 13) and
teacher (MiniLM-L6-H384 fine-tuned once on the 1,500 labels, by the first part; the others are given that
classifier). `transfer` and `lr` start their pre-trained cells from the 1,000-step generic Tiny of `budget` (a
student directory: `pretrain_on` = `given` in their rows), so it is trained once. Distillation cells outside
`transfer` use the first 2,000 transfer texts (a quarter of the cost of all 8,252; `transfer` shows what more
text adds). Each part is resumable (rerun the same command after an interruption). Writes OUT/study.md: each part's
summary table and figures, the machine, the settings and the minutes each part took; docs/experiments.md quotes it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from miniberts.fileio import atomic_write_text
from miniberts.train import experiment
from miniberts.train.quickstart import QuickstartConfig, experiment_config

PARTS = ("budget", "transfer", "lr", "sizes")
BUDGETS = [250, 1000, 3000]
SIZES = ["2-128", "4-128", "6-128", "2-256", "4-256"]
LRS = [1e-4]
DISTILL_SIZE = "2000"  # transfer texts of the distillation cells outside the `transfer` part
SIZES_PRETRAIN_STEPS = 250  # per student of `sizes`: 4-256 costs ~3x Tiny per step


def parts(base: experiment.ExperimentConfig, out: Path) -> dict[str, list[experiment.ExperimentConfig]]:
    """The experiments of each part, each a variation of the quickstart's spec in its own folder."""
    common = dict(train=base.train, dev=base.dev, test=base.test, transfer=base.transfer,
                  text_column=base.text_column, label_column=base.label_column, seeds=base.seeds,
                  epochs=base.epochs, lr=base.lr, max_length=base.max_length, workers=base.workers,
                  threads=base.threads, cache_dir=str(out / "cache"))  # one cache: corpus shards and teacher logits
    budget = out / "budget"
    teacher = str(budget / "teacher")  # fine-tuned by `budget`, then a ready classifier for the other parts
    tiny_1000 = str(budget / "pretrained" / "tiny-generic-1000steps")
    return {
        "budget": [experiment.ExperimentConfig(
            out=str(budget), students=["tiny"], strategies=["distill", "pd"], pretrain_on=["generic", "transfer"],
            pretrain_steps=BUDGETS, transfer_sizes=[DISTILL_SIZE], teacher=base.teacher,
            teacher_epochs=base.teacher_epochs, **common)],
        "transfer": [experiment.ExperimentConfig(
            out=str(out / "transfer"), students=[tiny_1000], strategies=["distill", "pd", "pd-ft"],
            transfer_sizes=["500", "2000", "all"], teacher=teacher, **common)],
        "lr": [experiment.ExperimentConfig(
            out=str(out / f"lr-{lr:g}"), students=[tiny_1000], strategies=["scratch-ft", "pt-ft", "distill", "pd"],
            transfer_sizes=[DISTILL_SIZE], teacher=teacher, **{**common, "lr": lr}) for lr in LRS],
        # 1e-3: Mini's pre-training rate in docs/pretraining.md; 2e-3 (Tiny's) is on the edge for the wider ones
        "sizes": [experiment.ExperimentConfig(
            out=str(out / "sizes"), students=SIZES, pretrain_steps=[SIZES_PRETRAIN_STEPS], pretrain_lr=1e-3,
            transfer_sizes=[DISTILL_SIZE], teacher=teacher, **common)],
    }


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (results do not depend on it)")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (part of the results' identity)")
    parser.add_argument("--part", default=",".join(PARTS), help="which parts to run, comma-separated (the later "
                                                               "ones need budget's teacher and pre-trained Tiny)")
    args = parser.parse_args()
    wanted = args.part.split(",")
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        parser.error(f"--part: unknown {', '.join(unknown)} (parts: {', '.join(PARTS)})")
    out = Path(args.out)
    # the quickstart's split, written under OUT/cache once
    base = experiment_config(QuickstartConfig(out=str(out), workers=args.workers, threads=args.threads))
    sections = [f"# The experiment study\n\nMachine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
                f"{args.workers} worker(s) x {args.threads} thread(s); {time.strftime('%Y-%m-%d')}."]
    for name, configs in parts(base, out).items():
        if name not in wanted:
            continue
        for cfg in configs:
            load = os.getloadavg()[0]
            summary = experiment.run(cfg)
            title = name if len(configs) == 1 else f"{name}: {Path(cfg.out).name}"
            sections.append(f"## {title}\n\n{summary['minutes']} minutes (load average {load:.1f} at the start); "
                            f"figures in {cfg.out}/\n\n{summary['table']}")
            atomic_write_text(out / "study.md", "\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
