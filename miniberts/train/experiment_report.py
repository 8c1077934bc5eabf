"""An experiment's report from its results.jsonl rows: summary.json, summary.md, the figures.

Per group (student x strategy x pre-training objective x source x budget x transfer size): mean ± std over seeds and the 95%
t-interval (`stats.summarize`). The paper's comparisons as paired differences over the seeds both arms ran
(`stats.paired_difference`): pd − distill (does pre-training help distillation?), distill − pt-ft (is the
transfer set worth more than pre-training?), pt-ft − scratch-ft (does pre-training help fine-tuning?), pd-ft − pd
(do the labels add anything after PD?). Figures as in Turc et al. (2019): score against parameters (log x, one
line per strategy, 95% error bars), against transfer-set size, PD's gain against the pre-training budget, and the
dev score per epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_write_text
from ..figures import pyplot, save_figure
from ..stats import interval_text, paired_difference, summarize
from .common import plot_curves, read_jsonl

AXES = ("student", "strategy", "pretrain_objective", "pretrain_on", "pretrain_steps", "transfer_size")
BASELINE = "baseline"  # the strategy of a baseline's rows (train/baselines.py); their student field names it
COMPARISONS = (("pd", "distill"), ("distill", "pt-ft"), ("pt-ft", "scratch-ft"), ("pd-ft", "pd"))


def group_key(row: dict) -> tuple:
    return tuple(row[a] for a in AXES)


def groups_of(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows by group, groups in the order they first appear (the plan's order)."""
    out: dict[tuple, list[dict]] = {}
    for row in rows:
        out.setdefault(group_key(row), []).append(row)
    return out


def _scores(rows: list[dict], split: str, metric: str) -> dict[int, float]:
    return {r["seed"]: r[split][metric] for r in rows if metric in r[split]}


def summarize_groups(rows: list[dict], metric: str) -> list[dict]:
    out = []
    for key, members in groups_of(rows).items():
        first = members[0]
        entry = dict(zip(AXES, key))
        entry["params"] = first["params"]
        for extra in ("transfer_examples", "pretrain_tokens", "pretrain_mlm_accuracy", "pretrain_hidden_loss"):
            if extra in first:
                entry[extra] = first[extra]
        for split in ("dev", "test"):
            values = list(_scores(members, split, metric).values())
            entry[split] = summarize(values) if values else None
        entry["n"] = len(members)
        out.append(entry)
    return out


def _compatible(a: dict, b: dict) -> bool:
    """Same student, and every axis that both cells have set is equal (distill has no pre-training, pt-ft no
    transfer set: they pair with every budget / transfer size of the other arm)."""
    return a["student"] == b["student"] and all(
        a[k] is None or b[k] is None or a[k] == b[k] for k in AXES[2:])


def comparisons(rows: list[dict], metric: str) -> list[dict]:
    groups = groups_of(rows)
    out = []
    for first, second in COMPARISONS:
        for ka, a in groups.items():
            if ka[1] != first:
                continue
            for kb, b in groups.items():
                if kb[1] != second or not _compatible(dict(zip(AXES, ka)), dict(zip(AXES, kb))):
                    continue
                entry = {"comparison": f"{first} − {second}", "student": ka[0],
                         **{k: va if va is not None else vb
                            for k, va, vb in zip(AXES[2:], ka[2:], kb[2:])}}
                for split in ("dev", "test"):
                    entry[split] = paired_difference(_scores(a, split, metric), _scores(b, split, metric))
                out.append(entry)
    return out


# --- text ---------------------------------------------------------------------------------------------------------

def objective_text(g: dict) -> str:
    """The pre-training objective as tables name it: nothing for masked LM, the default."""
    return "" if g["pretrain_objective"] in (None, "mlm") else f"{g['pretrain_objective']} "


def pretraining_text(g: dict) -> str:
    if not g["pretrain_on"]:
        return "–"
    if g["pretrain_steps"] is None:
        return g["pretrain_on"]
    acc, hidden = g.get("pretrain_mlm_accuracy"), g.get("pretrain_hidden_loss")
    reached = f" (MLM {acc:.1f}%)" if acc is not None else f" (hidden-state loss {hidden:.3f})" if hidden else ""
    return f"{objective_text(g)}{g['pretrain_on']}, {g['pretrain_steps']} steps{reached}"


def _cell(s: dict | None) -> str:
    return "–" if s is None else interval_text(s)


def markdown(groups: list[dict], diffs: list[dict], metric: str, teacher: dict | None) -> str:
    lines = [f"{metric} (%) on dev and test: mean ± std over seeds [95% t-interval]", "",
             "| student | params | strategy | pre-training | transfer | n | dev | test |",
             "|---|---:|---|---|---:|---:|---:|---:|"]
    if teacher is not None:
        scores = [f"{teacher[split][metric]:.1f}" if metric in teacher[split] else "–" for split in ("dev", "test")]
        lines.append(f"| teacher | | fine-tuned | | | 1 | {scores[0]} | {scores[1]} |")
    for g in groups:
        transfer = g.get("transfer_examples", g["transfer_size"]) if g["transfer_size"] else "–"
        lines.append(f"| {g['student']} | {g['params'] / 1e6:.1f}M | {g['strategy']} | {pretraining_text(g)} | "
                     f"{transfer} | {g['n']} | {_cell(g['dev'])} | {_cell(g['test'])} |")
    if diffs:
        lines += ["", f"Paired differences over seeds ({metric} points): mean ± std [95% t-interval]; an interval "
                      "above 0 means the first arm is better", "",
                  "| comparison | student | pre-training | transfer | n | dev | test |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for d in diffs:
            pre = "–" if not d["pretrain_on"] else objective_text(d) + d["pretrain_on"] + (
                f", {d['pretrain_steps']} steps" if d["pretrain_steps"] else "")
            n = max((d[s]["n"] for s in ("dev", "test") if d[s]), default=0)
            lines.append(f"| {d['comparison']} | {d['student']} | {pre} | {d['transfer_size'] or '–'} | {n} | "
                         f"{_cell(d['dev'])} | {_cell(d['test'])} |")
    return "\n".join(lines)


# --- figures ------------------------------------------------------------------------------------------------------

def _label(g: dict, with_pretraining: bool, with_student: bool = False) -> str:
    if g["strategy"] == BASELINE:  # each baseline its own point
        return g["student"]
    parts = [g["student"]] if with_student else []
    parts.append(g["strategy"])
    if with_pretraining and g["pretrain_on"] and g["pretrain_steps"]:
        parts.append(f"{objective_text(g)}{g['pretrain_on']} {g['pretrain_steps']}")
    return " ".join(parts)


def _errorbar(ax, xs, summaries, label):
    ys = [s["mean"] for s in summaries]
    err = [0.0 if s["low"] is None else s["mean"] - s["low"] for s in summaries]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)


def _group_lines(lines: dict[str, list[dict]], x: str, split: str, xlabel: str, title: str, metric: str,
                 path: Path, ticks_text: list[str] | None = None) -> None:
    """One line per label through its groups' means at x = g[x] (log scale), 95% error bars."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for label, members in lines.items():
        members = sorted(members, key=lambda g: g[x])
        _errorbar(ax, [g[x] for g in members], [g[split] for g in members], label)
    ax.set(xscale="log", xlabel=xlabel, ylabel=f"{split} {metric} (%)", title=title)
    xs = sorted({g[x] for members in lines.values() for g in members})
    ax.set_xticks(xs, ticks_text or [f"{v:,}" for v in xs])  # the values that ran, not log-scale decades
    ax.minorticks_off()
    low, high = ax.get_ylim()
    floor = 0 if all(g[split]["mean"] >= 0 for m in lines.values() for g in m) else -100  # correlations go below 0
    ax.set_ylim(max(low, floor), min(high, 100))  # few-seed t-intervals overshoot the metric's range
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _several_budgets(groups: list[dict]) -> bool:
    return len({(g["pretrain_objective"], g["pretrain_on"], g["pretrain_steps"]) for g in groups
                if g["pretrain_steps"]}) > 1


def figure_params(groups: list[dict], split: str, metric: str, path: Path) -> None:
    """Score against parameters, one line per strategy, at the largest transfer size (the paper's Figure 2)."""
    sizes = [g["transfer_size"] for g in groups if g["transfer_size"]]
    largest = max(sizes, key=lambda s: float("inf") if s == "all" else int(s)) if sizes else None
    lines: dict[str, list[dict]] = {}
    for g in groups:
        if g[split] is not None and g["transfer_size"] in (None, largest):
            lines.setdefault(_label(g, _several_budgets(groups)), []).append(g)
    names = {g["params"]: f"{g['student']}\n{g['params'] / 1e6:.1f}M" for g in groups}
    _group_lines(lines, "params", split, "parameters", f"{split} {metric} against student size (95% intervals over "
                 "seeds)", metric, path, [names[v] for v in sorted({g["params"] for m in lines.values() for g in m})])


def figure_transfer(groups: list[dict], split: str, metric: str, path: Path) -> None:
    """Score against transfer-set size (texts), one line per student and distilled strategy."""
    lines: dict[str, list[dict]] = {}
    for g in groups:
        if g["transfer_size"] and g[split] is not None:
            lines.setdefault(_label(g, _several_budgets(groups), True), []).append(g)
    _group_lines(lines, "transfer_examples", split, "transfer texts",
                 f"{split} {metric} against transfer-set size (95% intervals)", metric, path)


def figure_budget(diffs: list[dict], groups: list[dict], split: str, metric: str, path: Path) -> None:
    """PD − distill against the student's pre-training tokens, one line per student x source x transfer size;
    each point labelled with the held-out MLM accuracy the pre-training reached."""
    tokens = {(g["student"], g["pretrain_objective"], g["pretrain_on"], g["pretrain_steps"]): (
        g.get("pretrain_tokens"), g.get("pretrain_mlm_accuracy")) for g in groups if g["strategy"] == "pd"}
    lines: dict[str, list[tuple]] = {}
    for d in diffs:
        if d["comparison"] == "pd − distill" and d[split] is not None:
            tok, acc = tokens[(d["student"], d["pretrain_objective"], d["pretrain_on"], d["pretrain_steps"])]
            lines.setdefault(f"{d['student']} {objective_text(d)}{d['pretrain_on']} transfer {d['transfer_size']}",
                             []).append(
                (tok, d[split], acc))
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for label, points in lines.items():
        points.sort(key=lambda p: p[0])
        _errorbar(ax, [p[0] for p in points], [p[1] for p in points], label)
        for tok, s, acc in points:
            if acc is not None:
                ax.annotate(f"MLM {acc:.0f}%", (tok, s["mean"]), fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xscale="log", xlabel="student pre-training tokens", ylabel=f"PD − distill, {split} {metric} (points)",
           title="Where pre-training starts to pay (95% paired intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def figure_dev_curves(groups: list[dict], cell_dirs: dict, metric: str, path: Path) -> None:
    """Dev score per epoch, averaged over each group's seeds."""
    by_group: dict[tuple, list[Path]] = {}
    for cell, run_dir in cell_dirs.items():
        by_group.setdefault(tuple(getattr(cell, a) for a in AXES), []).append(run_dir)
    series = {}
    several = len({g["student"] for g in groups}) > 1
    for g in groups:
        curves = []
        for run_dir in by_group.get(tuple(g[a] for a in AXES), []):
            log_file = run_dir / "log.jsonl"
            if (run_dir / "metrics.json").is_file() and log_file.is_file():
                curves.append([r["score"] for r in read_jsonl(log_file) if r.get("split") == "dev"])
        if curves:
            epochs = min(len(c) for c in curves)
            mean = [sum(c[e] for c in curves) / len(curves) for e in range(epochs)]
            size = f" t{g['transfer_size']}" if g["transfer_size"] else ""
            label = _label(g, _several_budgets(groups), several) + size
            series[label] = (list(range(1, epochs + 1)), mean)
    if series:
        plot_curves(series, path, "epoch", f"dev {metric} (%)", "dev score per epoch (mean over seeds)")


# --- the report ---------------------------------------------------------------------------------------------------

def write_report(out: Path, rows: list[dict], metric: str, teacher: dict | None, params: dict,
                 cell_dirs: dict) -> dict:
    """summary.json, summary.md and the figures under `out`; returns the summary (its "table" is the Markdown)."""
    groups = summarize_groups(rows, metric)
    diffs = comparisons(rows, metric)
    table = markdown(groups, diffs, metric, teacher)
    summary = {"metric": metric, "cells": len(rows), "groups": groups, "comparisons": diffs, "teacher": teacher,
               "params": params, "table": table}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", "# Experiment summary\n\n" + table + "\n")
    if not rows:
        return summary
    split = "test" if any(g["test"] for g in groups) else "dev"
    figure_params(groups, split, metric, out / "score_vs_params.png")
    if len({g["transfer_size"] for g in groups if g["transfer_size"]}) > 1:
        figure_transfer(groups, split, metric, out / "score_vs_transfer_size.png")
    if len({g["pretrain_steps"] for g in groups if g["pretrain_steps"]}) > 1 and any(
            d["comparison"] == "pd − distill" for d in diffs):
        figure_budget(diffs, groups, split, metric, out / "pd_gain_vs_pretraining.png")
    figure_dev_curves(groups, cell_dirs, metric, out / "dev_curves.png")
    return summary
