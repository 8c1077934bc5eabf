"""The evidence of docs/pretraining.md: Tiny and Mini pre-trained for 5 minutes each on the built-in corpus.

    miniberts data fetch pretraining --out runs/data/pretraining
    python benchmarks/pretrain_evidence.py [--minutes 5] [--data runs/data/pretraining] [--out runs/evidence]

Runs one model after the other (run it on an otherwise idle machine: the throughput is the result), then writes
RUN/evidence.md (the minutes table, the summary table, the machine) and RUN/evidence.png (held-out MLM loss against
minutes, with the unigram baseline). docs/pretraining.md quotes them.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch

from miniberts.figures import pyplot, save_figure
from miniberts.fileio import atomic_write_text
from miniberts.train.pretrain import PretrainConfig, run

RUNS = {"Tiny (2-128)": dict(model="tiny", lr=2e-3), "Mini (4-256)": dict(model="mini", lr=1e-3)}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--data", default="runs/data/pretraining")
    parser.add_argument("--out", default="runs/evidence")
    args = parser.parse_args()
    out = Path(args.out)
    results = {}
    for name, settings in RUNS.items():
        load_before = os.getloadavg()[0]
        cfg = PretrainConfig(train_files=[f"{args.data}/train.txt"], eval_files=[f"{args.data}/eval.txt"],
                             out=str(out / settings["model"]), max_minutes=args.minutes, dropout=0.0,
                             eval_every=0, eval_every_minutes=0.5, cache_dir=str(out / "cache"), progress=False,
                             **settings)
        results[name] = (cfg, run(cfg), load_before, os.getloadavg()[0])
    write_report(results, out, args.minutes)


def write_report(results: dict, out: Path, minutes: float) -> None:
    names = list(results)
    curves = {n: results[n][1]["eval_curve"] for n in names}
    m = {n: results[n][1] for n in names}
    rule = "|---" * (len(names) + 1) + "|"

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(n) for n in names) + " |"

    def at(n: str, minute: float) -> str:  # the evaluation nearest to this minute
        e = min(curves[n], key=lambda r: abs(r["minutes"] - minute))
        return f"{e['mlm_loss']:.3f} / {100 * e['mlm_accuracy']:.1f}% (step {e['step']})"

    rows = [row("≈ minutes", lambda n: f"{n}, lr {results[n][0].lr:g}"), rule]
    rows += [row(f"{half / 2:.1f}", lambda n: at(n, half / 2)) for half in range(int(minutes * 2) + 1)]
    summary = [
        row("after the run", str), rule,
        row("held-out MLM loss", lambda n: f"**{m[n]['eval_mlm_loss']:.3f}**"),
        row("held-out perplexity", lambda n: f"{m[n]['eval_perplexity']:.0f}"),
        row("held-out MLM accuracy", lambda n: f"**{100 * m[n]['eval_mlm_accuracy']:.1f}%**"),
        row("unigram baseline loss (same masks)", lambda n: f"{m[n]['unigram_baseline_loss']:.3f}"),
        row("loss − baseline", lambda n: f"{m[n]['eval_mlm_loss'] - m[n]['unigram_baseline_loss']:+.3f} nats"),
        row("steps (16 sequences each)", lambda n: f"{m[n]['steps']:,}"),
        row("tokens seen", lambda n: f"{m[n]['tokens_seen']:,}"),
        row("tokens/s", lambda n: f"{m[n]['tokens_per_s']:,.0f}"),
        row("training time", lambda n: f"{m[n]['wall_time_s']:.0f} s"),
        row("load average before / after", lambda n: f"{results[n][2]:.2f} / {results[n][3]:.2f}"),
    ]
    machine = (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
               f"threads, dtype {m[names[0]]['dtype']}")
    atomic_write_text(out / "evidence.md", f"Machine: {machine}\n\n" + "\n".join(rows) + "\n\n"
                      + "\n".join(summary) + "\n")

    fig, ax = pyplot().subplots(figsize=(7, 4.2))
    for n in names:
        ax.plot([r["minutes"] for r in curves[n]], [r["mlm_loss"] for r in curves[n]], marker="o", ms=3, label=n)
    ax.axhline(m[names[0]]["unigram_baseline_loss"], color="gray", ls="--", label="unigram baseline")
    ax.set(xlabel="minutes of training (evaluations excluded)", ylabel="held-out MLM loss (nats)",
           title=f"pre-training on the built-in corpus, {os.cpu_count()} CPU cores", ylim=(None, 8.0))
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out / "evidence.png")
    print((out / "evidence.md").read_text())


if __name__ == "__main__":
    main()
