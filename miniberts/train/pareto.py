"""The practitioner's Pareto: test score against batch-1 latency, every system of an experiment (students and
baselines) with its size, and which of them nobody beats on both.

A system dominates another when it is at least as fast (batch-1 latency p50 <=) and at least as accurate (mean test
score >=), and strictly better on one of the two; identical points dominate neither (both stay on the front). The
verdict asks more than the front: a student wins when it is more accurate than every system at least as fast as it
with the difference's 95% interval above zero (paired over the seeds both ran; against a deterministic system of
n = 1, the student's per-seed margins over that system's one score).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_write_text
from ..figures import pyplot, save_figure
from ..stats import paired_difference, summarize
from .experiment_report import BASELINE, group_key, objective_text


def system_name(row: dict) -> str:
    """How the Pareto table names a group: a baseline by its name, a student by its axes."""
    if row["strategy"] == BASELINE:
        return row["student"]
    parts = [row["student"], row["strategy"]]
    if row["pretrain_on"]:
        parts.append(objective_text(row) + row["pretrain_on"] + (f" {row['pretrain_steps']} steps"
                                                                 if row["pretrain_steps"] else ""))
    if row["transfer_size"] and row["transfer_size"] != "all":
        parts.append(f"transfer {row['transfer_size']}")
    return " ".join(parts)


def dominated_by(points: dict[str, tuple[float, float]]) -> dict[str, list[str]]:
    """name -> the names that dominate it, for points name -> (latency, score): lower latency and higher score are
    better. An empty list = on the front."""
    out = {}
    for name, (lat, score) in points.items():
        out[name] = [other for other, (olat, oscore) in points.items() if other != name and olat <= lat
                     and oscore >= score and (olat < lat or oscore > score)]
    return out


def difference(a: dict, b: dict) -> dict | None:
    """a − b in score points from per-seed scores {seed: score}: paired over shared seeds; against a system with one
    score (deterministic), a's per-seed margins over it. None when neither gives two or more differences."""
    if len(b) == 1 and len(a) >= 2:
        (only,) = b.values()
        return summarize([v - only for v in a.values()])
    shared = set(a) & set(b)
    return paired_difference(a, b) if len(shared) >= 2 else None


def pareto(rows: list[dict], latency: dict, metric: str) -> dict:
    """The systems (one per group of `rows` that `latency` measured), the front, and the verdict."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if metric in row["test"]:
            groups.setdefault(group_key(row), []).append(row)
    systems = []
    for members in groups.values():
        name = system_name(members[0])
        measured = latency["systems"].get(name)
        if measured is None:
            continue
        scores = {r["seed"]: r["test"][metric] for r in members}
        systems.append({"name": name, "student": members[0]["strategy"] != BASELINE, **measured,
                        "test": summarize(list(scores.values())), "scores": scores})
    dominators = dominated_by({s["name"]: (s["latency_ms"], s["test"]["mean"]) for s in systems})
    for s in systems:
        s["dominated_by"] = dominators[s["name"]]
    return {"metric": metric, "systems": systems, "verdict": verdict(systems)}


def verdict(systems: list[dict]) -> dict:
    """The best case for a student: on the front, and above every system at least as fast with the interval above
    zero. Students are ranked by (on the front, the lowest lower bound of their differences to those systems)."""
    best = None
    for s in systems:
        if not s["student"]:
            continue
        rivals = [o for o in systems if o is not s and o["latency_ms"] <= s["latency_ms"]]
        diffs = {o["name"]: difference(s["scores"], o["scores"]) for o in rivals}
        worst = min((d["low"] if d and d["low"] is not None else float("-inf") for d in diffs.values()),
                    default=float("inf"))
        rank = (not s["dominated_by"], worst)
        if best is None or rank > best["rank"]:
            best = {"rank": rank, "system": s["name"], "front": not s["dominated_by"],
                    "dominated_by": s["dominated_by"], "wins": bool(not s["dominated_by"] and worst > 0),
                    "differences": {k: None if d is None else {x: d[x] for x in ("n", "mean", "low", "high")}
                                    for k, d in diffs.items()}}
    if best is None:
        return {"system": None, "front": False, "dominated_by": [], "wins": False, "differences": {}}
    del best["rank"]
    return best


# --- text and figure -------------------------------------------------------------------------------------------

def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def _score(s: dict) -> str:
    t = s["test"]
    if t["low"] is None:
        return f"{t['mean']:.1f} (n={t['n']})"
    return f"{t['mean']:.1f} [{t['low']:.1f}, {t['high']:.1f}] (n={t['n']})"


def verdict_text(v: dict) -> str:
    if v["system"] is None:
        return "**Verdict: no student was measured.**"
    parts = []
    for name, d in v["differences"].items():
        parts.append(f"{v['system']} − {name}: " + ("no interval (one score each)" if d is None or d["low"] is None else
                                      f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] (n={d['n']})"))
    against = "; ".join(parts) if parts else "no system is at least as fast"
    where = "is on the front" if v["front"] else f"is not on the front (dominated by {', '.join(v['dominated_by'])})"
    if v["wins"]:
        return f"**Verdict: yes.** {v['system']} {where} and is more accurate than every system at least as fast, " \
               f"every 95% interval above zero ({against})."
    return f"**Verdict: no.** The best student, {v['system']}, {where}; its differences to the systems at least as " \
           f"fast, test points [95% interval]: {against}."


def markdown(result: dict, latency: dict) -> str:
    lines = ["## The practitioner's Pareto", "",
             f"Test {result['metric']} (%) against batch-1 latency, measured {latency['measured_at']} on "
             f"{latency['cpu']} ({latency['cpu_flags'] or 'no AVX flags'}; {latency['cpus']} CPUs, {latency['threads']} "
             f"thread(s), dtype {latency['dtype']}, max length {latency['max_length']}); the load average was "
             f"{latency['load_average']:.2f} at the start: timings are valid only on an idle machine. Score: mean "
             "[95% t-interval] over seeds; latency: p50 of one real test sentence per call, the systems in "
             "interleaved rounds; throughput: the whole test set in batches of "
             f"{latency['batch_size']}.", "",
             "| system | params | disk | test | latency p50 (ms) | throughput (sent./s) | engine (batch 1 / batch) | "
             "front | dominated by |",
             "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for s in sorted(result["systems"], key=lambda s: s["latency_ms"]):
        lines.append(f"| {s['name']} | {s['params'] / 1e6:.1f}M | {_size(s['disk_bytes'])} | {_score(s)} | "
                     f"{s['latency_ms']:.2f} | {s['throughput']:,.0f} | {s['engine']} | "
                     f"{'yes' if not s['dominated_by'] else 'no'} | {', '.join(s['dominated_by']) or '–'} |")
    return "\n".join(lines + ["", verdict_text(result["verdict"])])


def figure(result: dict, path: Path) -> None:
    """Test score against batch-1 latency (log x), 95% error bars, the front as a staircase."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for s in result["systems"]:
        t = s["test"]
        err = 0.0 if t["low"] is None else t["mean"] - t["low"]
        ax.errorbar([s["latency_ms"]], [t["mean"]], yerr=[err], marker="o" if s["student"] else "s", capsize=3,
                    label=s["name"])
    front = sorted((s["latency_ms"], s["test"]["mean"]) for s in result["systems"] if not s["dominated_by"])
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", lw=1, ls="--",
                label="Pareto front")
    ax.set(xscale="log", xlabel="batch-1 latency p50 (ms, log scale)", ylabel=f"test {result['metric']} (%)",
           title="Score against batch-1 latency (95% intervals over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def write(out: Path, rows: list[dict], latency: dict) -> dict:
    """The Pareto section of summary.md and summary.json ("pareto"), and pareto.png, from the rows and latency.json;
    the rest of the summary (its table) as write_report left it."""
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    result = pareto(rows, latency, summary["metric"])
    text = markdown(result, latency)
    summary["pareto"] = result
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", "# Experiment summary\n\n" + summary["table"] + "\n\n" + text + "\n")
    if result["systems"]:
        figure(result, out / "pareto.png")
    summary["pareto_table"] = text
    return summary

