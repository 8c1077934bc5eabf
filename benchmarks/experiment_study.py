"""The study of docs/experiments.md: the paper's comparisons on Rotten Tomatoes, as three `miniberts experiment` runs.

    python benchmarks/experiment_study.py [--out runs/study] [--workers 2] [--threads 1] [--part sizes,transfer,budget]

  sizes     5 students spanning depth and width (2-128, 4-128, 2-256, 4-256, 4-512) x the five strategies x 3 seeds
  transfer  Tiny, distill / pd / pd-ft x transfer sets of 500, 2,000 and all (~8,200) texts x 3 seeds
  budget    Tiny, distill and pd x pre-training budgets of 250-8,000 steps on the generic corpus and on the transfer
            text itself (D_LM = D_T) x 3 seeds: PD − distill against pre-training tokens and MLM accuracy

Every part shares the quickstart's data split (1,500 labeled / 1,000 dev / 2,000 test sentences, seed 13) and
teacher (MiniLM-L6-H384 fine-tuned on the 1,500 labels). Each part is resumable (rerun the same command after an
interruption). Writes OUT/study.md: each part's summary table and figures, the machine, the settings and the
minutes each part took; docs/experiments.md quotes it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from miniberts.fileio import atomic_write_text
from miniberts.quickstart import QuickstartConfig, experiment_config
from miniberts.train import experiment

SIZES = ["2-128", "4-128", "2-256", "4-256", "4-512"]
BUDGETS = [250, 1000, 4000, 8000]


def parts(base: experiment.ExperimentConfig, out: Path) -> dict[str, experiment.ExperimentConfig]:
    """The three experiments, each a variation of the quickstart's spec in its own folder."""
    common = {k: getattr(base, k) for k in ("teacher", "teacher_epochs", "train", "dev", "test", "transfer",
                                            "text_column", "label_column", "seeds", "epochs", "lr", "max_length",
                                            "workers", "threads")}
    # one shared cache: the built-in corpus and the teacher's logits are written once for all three parts
    common["cache_dir"] = str(out / "cache")
    return {
        # 1e-3: Mini's pre-training rate in docs/pretraining.md; 2e-3 (Tiny's) is on the edge for the wider ones
        "sizes": experiment.ExperimentConfig(out=str(out / "sizes"), students=SIZES, pretrain_steps=[1000],
                                             pretrain_lr=1e-3, **common),
        "transfer": experiment.ExperimentConfig(out=str(out / "transfer"), students=["tiny"],
                                                strategies=["distill", "pd", "pd-ft"], pretrain_steps=[1000],
                                                transfer_sizes=["500", "2000", "all"], **common),
        "budget": experiment.ExperimentConfig(out=str(out / "budget"), students=["tiny"], strategies=["distill", "pd"],
                                              pretrain_on=["generic", "transfer"], pretrain_steps=BUDGETS, **common),
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
    parser.add_argument("--part", default="sizes,transfer,budget", help="which parts to run, comma-separated")
    args = parser.parse_args()
    out = Path(args.out)
    # the quickstart's split and teacher, written under OUT/data once
    base = experiment_config(QuickstartConfig(out=str(out), workers=args.workers, threads=args.threads))
    sections = [f"# The experiment study\n\nMachine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
                f"{args.workers} worker(s) x {args.threads} thread(s); {time.strftime('%Y-%m-%d')}."]
    for name, cfg in parts(base, out).items():
        if name not in args.part.split(","):
            continue
        load = os.getloadavg()[0]
        summary = experiment.run(cfg)
        sections.append(f"## {name}\n\n{summary['minutes']} minutes (load average {load:.1f} at the start); "
                        f"figures in {cfg.out}/\n\n{summary['table']}")
        atomic_write_text(out / "study.md", "\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
