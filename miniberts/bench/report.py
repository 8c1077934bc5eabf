"""The targets against transformers and ONNX Runtime, the Markdown report and the chart."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..figures import pyplot, save_figure
from ..fileio import atomic_write_text, check_folder, output_folder
from .engines import ENGINES, WORKLOADS
from .harness import HF, LATENCY_TOKENS, ORT32, ORT8, OURS, nickname

log = logging.getLogger(__name__)


# --- targets: ours against transformers and ONNX Runtime ------------------------------------------------------

def check_targets(report: dict) -> list[dict]:
    rows = []

    def add(target: str, model: str, measured: float | None, goal: float, higher_is_better: bool = True):
        if measured is None:
            rows.append({"target": target, "model": model, "measured": None, "goal": goal, "met": None, "gap": None})
            return
        met = measured >= goal if higher_is_better else measured <= goal
        gap = (goal / measured - 1) if higher_is_better else (measured / goal - 1)  # how far: the factor still missing
        rows.append({"target": target, "model": model, "measured": measured, "goal": goal, "met": met, "gap": None if met else gap})

    def ratio(a, b):
        return a / b if a and b else None

    for r in report["models"]:
        name, hidden = r["name"], int(r["preset"].split("-")[1])
        inf = r["inference"]
        get = lambda w, s, k="per_s": inf[w].get(s, {}).get(k)  # noqa: E731
        if hidden >= 512:
            add("var-len inference, arrival order: ours / transformers fp32 >= 8x", name, ratio(get("arrival", OURS), get("arrival", HF)), 8)
            for w in ("arrival", "sorted"):
                add(f"var-len inference, {w}: ours / ORT fp32 >= 2x", name, ratio(get(w, OURS), get(w, ORT32)), 2)
                add(f"var-len inference, {w}: ours / ORT int8 >= 1x", name, ratio(get(w, OURS), get(w, ORT8)), 1)
        else:
            for w in ("arrival", "sorted"):
                add(f"var-len inference, {w}: ours / ORT fp32 >= 1x", name, ratio(get(w, OURS), get(w, ORT32)), 1)
            lat = r["latency"]
            add("batch-1 latency p50: ours / ORT fp32 <= 2x", name,
                ratio(lat.get(OURS, {}).get("p50_ms"), lat.get(ORT32, {}).get("p50_ms")), 2, higher_is_better=False)
        mlm = r["mlm"]
        add("MLM step tokens/s: ours / stock BertForMaskedLM fp32 >= 6x", name,
            ratio(mlm[OURS]["tokens_per_s"], mlm.get(HF, {}).get("tokens_per_s")), 6)
        if hidden >= 512 and mlm[OURS]["mfu"] is not None:
            add("MLM step MFU (bf16 peak) >= 50%", name, mlm[OURS]["mfu"], 0.5)
        ft = r["finetune"]
        add("fine-tuning examples/s, same batches: ours / transformers fp32 >= 5x", name,
            ratio(ft[OURS]["examples_per_s"], ft.get(HF, {}).get("examples_per_s")), 5)
        for kind, mem in r["memory"].items():
            add(f"peak memory ({kind}): ours / transformers <= 1x", name, ratio(mem.get(OURS), mem.get(HF)), 1, higher_is_better=False)
    return rows


# --- the report -------------------------------------------------------------------------------------------------

def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    if digits == 0 and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.{max(digits, 1 if abs(x) < 100 else 0)}f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def report_files(out: Path) -> list[str]:
    return [out.name, out.with_suffix(".json").name, out.with_suffix(".png").name]


def check_report_path(out: Path) -> None:
    """Before measuring: the report's files may be written (a file miniberts did not write is never replaced;
    other files beside them are none of its business)."""
    check_folder(out.parent, report_files(out), force=True)


def write_report(report: dict, out: Path) -> None:
    with output_folder(out.parent, report_files(out), force=True):
        atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1, default=float))
        png = out.with_suffix(".png")
        try:
            plot(report, png)
        except Exception as e:  # a chart must never lose the measurements
            log.warning("could not draw %s: %s", png, e)
        atomic_write_text(out, markdown(report, png.name))
    log.info("wrote %s, %s, %s (%.0f s)", out, out.with_suffix(".json"), png, report["seconds"])


def markdown(report: dict, png_name: str) -> str:
    v, w = report["versions"], report["workload"]
    busy = [r["name"] for r in report["models"] if r["machine"]["busy"]] + (["peaks"] if report["peak_machine"]["busy"] else [])
    lines = [
        "# Benchmarks: miniberts vs transformers, ONNX Runtime, OpenVINO and CTranslate2",
        "",
        f"Written by `{report['command'].strip()}` on {report['date']} in {report['seconds']:.0f} s"
        + (" (`--quick`: fewer sentences and repeats)" if report["quick"] else "") + ". How to rerun: `benchmarks/README.md`.",
        "",
        f"- **CPU**: {report['cpu']} ({report['cpus']} CPUs; {report['cpu_flags']}); torch threads: {report['torch_threads']}, "
        f"onnxruntime intra-op threads: {report['ort_threads']}; "
        f"bf16 native: {'yes' if report['bf16_native'] else 'no'}",
        f"- **Versions**: Python {v['python']}, torch {v['torch']}, transformers {v['transformers'] or 'not installed'}, "
        f"onnxruntime {v['onnxruntime'] or 'not installed'}, onnx {v['onnx'] or 'not installed'}, "
        f"openvino {v.get('openvino') or 'not installed'}, ctranslate2 {v.get('ctranslate2') or 'not installed'}",
        "- **Machine busy**: " + (f"yes, during {', '.join(busy)} (other processes took CPU time; numbers are noisy, the "
                                   "round-robin ratios less so)" if busy else "no (other processes took < 10% of the CPUs)"),
        f"- **Matmul peak** (torch, best of square sizes 512-2048): fp32 {report['peaks_gflops']['fp32']:.0f} GFLOP/s"
        + (f", bf16 {report['peaks_gflops']['bf16']:.0f} GFLOP/s" if "bf16" in report["peaks_gflops"] else ""),
        f"- **Workload**: {w['source']}. First {w['sentences']} sentences: median {w['median_tokens']:.0f} tokens, p90 "
        f"{w['p90_tokens']:.0f}, p99 {w['p99_tokens']:.0f}, max {w['max_tokens']}; in arrival-order batches of 32, "
        f"{100 * w['padding_fraction_arrival']:.0f}% of the padded tokens are padding. Tokenization is not timed.",
        "- **Systems**: *miniberts* = the library's default path: unpadded execution, bf16 autocast where native (Linear "
        "weights cast once), length-sorted batches in the *sorted* column (the *arrival* column keeps arrival order). "
        "*transformers* = `BertForSequenceClassification`/`BertForMaskedLM`, SDPA, fp32. *onnxruntime* = the graph of "
        "`miniberts export` (same weights), CPU provider, default session options; int8 = `--quantize int8`.",
        "- **Method**: warm-up, then repeats run round-robin over the systems; medians. MFU = useful GFLOP/s (real tokens "
        "only, counted analytically) / the matmul peak of the precision it ran in (int8: none measured). Peak memory: "
        "VmHWM of a fresh process per system, reset after loading (/proc/self/clear_refs), minus its RSS before loading: "
        "weights + activations + runtime arenas.",
        "",
    ]
    lines += engines_markdown(report)
    missing = {k: v for r in report["models"] for k, v in r["missing"].items()}
    if missing:
        lines += ["**Could not run**: " + "; ".join(f"{k}: {v}" for k, v in missing.items()), ""]

    if report["models"]:  # not with --engines-only
        lines += peers_markdown(report)

    lines += ["## Machine load per section", "", "| section | other processes' CPU share | load avg start → end | calibration GFLOP/s before → after | busy |",
              "|---|---:|---|---|---|"]
    engines = [("engine section", report["engines_machine"])] if report.get("engines_machine") else []
    for label, m in [("matmul peaks", report["peak_machine"])] + engines + [(r["name"], r["machine"]) for r in report["models"]]:
        lines.append(f"| {label} | {_pct(m['other_cpu_fraction'])} | {m['load_start']:.2f} → {m['load_end']:.2f} | "
                     f"{m['calibration_gflops'][0]:.0f} → {m['calibration_gflops'][1]:.0f} | {'yes' if m['busy'] else 'no'} |")

    if "profile" in report:
        lines += profile_markdown(report["profile"])
    lines += ["", f"![throughput]({png_name})", ""]
    return "\n".join(lines)


def peers_markdown(report: dict) -> list[str]:
    """Ours against transformers and ONNX Runtime: inference, batch-1 latency, training steps, memory, targets."""
    systems = [OURS, HF, ORT32, ORT8]
    lines: list[str] = []
    lines += ["## Inference: sentences/s (batches of 32)", "",
              "| model | workload | " + " | ".join(systems) + " | ours ÷ transformers | ours ÷ ORT fp32 | ours ÷ ORT int8 | MFU ours | MFU transformers |",
              "|---|---|" + "---:|" * (len(systems) + 5)]
    for r in report["models"]:
        for wl, label in (("arrival", "variable, arrival order"), ("sorted", "variable, length-sorted"), ("fixed", "fixed 32×128")):
            row = r["inference"][wl]
            get = lambda s: row.get(s, {}).get("per_s")  # noqa: E731
            ratio = lambda s: (f"{get(OURS) / get(s):.2f}×" if get(OURS) and get(s) else "—")  # noqa: E731
            lines.append(f"| {r['name']} | {label} | " + " | ".join(_fmt(get(s)) for s in systems)
                         + f" | {ratio(HF)} | {ratio(ORT32)} | {ratio(ORT8)} | {_pct(row[OURS]['mfu'])} | {_pct(row.get(HF, {}).get('mfu'))} |")

    lines += ["", "## Batch-1 latency (32 tokens), ms: p50 / p99", "",
              "| model | " + " | ".join(systems) + " | ours ÷ ORT fp32 (p50) |", "|---|" + "---:|" * (len(systems) + 1)]
    for r in report["models"]:
        lat = r["latency"]
        cell = lambda s: (f"{lat[s]['p50_ms']:.2f} / {lat[s]['p99_ms']:.2f}" if s in lat else "—")  # noqa: E731
        ratio = f"{lat[OURS]['p50_ms'] / lat[ORT32]['p50_ms']:.2f}×" if ORT32 in lat else "—"
        lines.append(f"| {r['name']} | " + " | ".join(cell(s) for s in systems) + f" | {ratio} |")

    lines += ["", "## Training steps", "",
              "| model | MLM 32×128 tokens/s: ours | stock BertForMaskedLM | ratio | MFU ours | MFU stock "
              "| fine-tune examples/s: ours (same batches) | ours (bucketed, library default) | transformers | ratio (same batches) |",
              "|---|" + "---:|" * 9]
    for r in report["models"]:
        m, f = r["mlm"], r["finetune"]
        mr = f"{m[OURS]['tokens_per_s'] / m[HF]['tokens_per_s']:.2f}×" if HF in m else "—"
        fr = f"{f[OURS]['examples_per_s'] / f[HF]['examples_per_s']:.2f}×" if HF in f else "—"
        lines.append(f"| {r['name']} | {_fmt(m[OURS]['tokens_per_s'])} | {_fmt(m.get(HF, {}).get('tokens_per_s'))} | {mr} "
                     f"| {_pct(m[OURS]['mfu'])} | {_pct(m.get(HF, {}).get('mfu'))} | {_fmt(f[OURS]['examples_per_s'])} "
                     f"| {_fmt(f.get(OURS + ' (bucketed)', {}).get('examples_per_s'))} | {_fmt(f.get(HF, {}).get('examples_per_s'))} | {fr} |")

    lines += ["", "## Peak memory, MiB (fresh process per system)", "",
              "| model | work | " + " | ".join(systems) + " |", "|---|---|" + "---:|" * len(systems)]
    for r in report["models"]:
        for kind, mem in r["memory"].items():
            lines.append(f"| {r['name']} | {kind.replace('_', ' ')} | " + " | ".join(_fmt(mem.get(s)) for s in systems) + " |")

    lines += ["", "## Targets against transformers and ONNX Runtime", "", "| target | model | measured | goal | met | short by |", "|---|---|---:|---:|---|---:|"]
    for t in report["targets"]:
        pct = "MFU" in t["target"]
        measured = "—" if t["measured"] is None else (_pct(t["measured"]) if pct else f"{t['measured']:.2f}×")
        goal = _pct(t["goal"]) if pct else f"{t['goal']:g}×"
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        gap = "" if not t["gap"] else f"{100 * t['gap']:.0f}%"
        lines.append(f"| {t['target']} | {t['model']} | {measured} | {goal} | {met} | {gap} |")
    lines += ["", "*short by*: how much faster (or, for latency and memory, smaller) ours has to get to meet the goal.", ""]
    lines += gap_notes(report)
    return lines


def engines_markdown(report: dict) -> list[str]:
    """The engine section (engines.py): per model, every row's speed per workload and its agreement with fp32; then
    per cell the fastest engine and the ratio of what ours runs (default path and --int8) to the fastest of its class."""
    results = report.get("engines") or []
    if not results:
        return []
    titles = {"arrival": "arrival order, /s", "sorted": "length-sorted, /s", "fixed": "fixed 32×128, /s",
              "batch1": "batch 1 (32 tokens), ms p50 / p99"}
    lines = ["## Inference against every engine", "",
             "Same encoder weights and padded batches for every row; random weights per size, real ones for MiniLM. "
             "Agreement with *miniberts torch fp32* on the length-sorted batches: max abs on hidden states at real "
             "tokens, min cosine of mean-pooled embeddings; *task acc.* (real checkpoint only): held-out fresh/rotten "
             "accuracy of one logistic-regression head fitted on fp32 features. `auto` is not a row: it runs the row "
             "named in the per-cell table.", ""]
    for r in results:
        lines += [f"### {r['name']} ({r['sentences']} sentences, {r['repeats']} repeats)", "",
                  "| engine | precision ran | " + " | ".join(titles[w] for w in WORKLOADS)
                  + " | max abs | min cosine | task acc. |", "|---|---|" + "---:|" * (len(WORKLOADS) + 3)]
        task = r.get("task_accuracy") or {}
        for label, *_ in ENGINES:
            if label in r["skipped"]:
                lines.append(f"| {label} | {r['skipped'][label]} |" + " |" * (len(WORKLOADS) + 3))
                continue
            speeds = [_fmt(r["throughput"][w].get(label)) for w in WORKLOADS if w != "batch1"]
            lat = r["latency"].get(label)
            speeds.append(f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}" if lat else "—")
            a = r["agreement"].get(label, {})
            acc = f"{100 * task[label]:.1f}%" if label in task else "—"
            lines.append(f"| {label} | {r['precision'].get(label, '—')} | " + " | ".join(speeds)
                         + f" | {a.get('max_abs', 0):.1e} | {a.get('min_cosine', 0):.5f} | {acc} |")
        lines.append("")
    lines += ["### Fastest engine per cell, and ours against it", "",
              "*ours*: the row `--backend auto` runs (default precision: bf16 where native, else fp32; and with "
              "`--int8`), from inference/backends/auto.py's table. Ratio > 1: ours is faster.", "",
              "| model | workload | fastest | fastest non-int8 | ours (default) | ratio | fastest accurate int8 | ours (--int8) | ratio |",
              "|---|---|---|---|---|---:|---|---|---:|"]
    times = lambda x: "—" if x is None else f"{x:.2f}×"  # noqa: E731
    for r in results:
        for c in r["cells"]:
            f, i = c["float"], c["int8"]
            lines.append(f"| {r['name']} | {c['workload']} | {c['fastest']} | {f['fastest'] or '—'} | {f['ours'] or '—'} "
                         f"| {times(f['ratio'])} | {i['fastest'] or '—'} | {i['ours'] or '—'} | {times(i['ratio'])} |")
    lines += ["", "### Each precision of `auto` against exact fp32, same run", "",
              "*exact fp32*: rows within 1e-4 of the reference (what `--dtype fp32` may run); *accurate int8*: int8 rows "
              "whose mean-pooled cosine to fp32 is >= 0.99 on every sentence (meaningful on the real checkpoint; random "
              "weights keep every int8 row close). *÷ fp32*: that path's speed over `--dtype fp32`'s (> 1: faster); "
              f"the default precision here is {results[0].get('default_precision', 'fp32')}.", "",
              "| model | workload | ours (--dtype fp32) | ratio to fastest exact fp32 | ours (default) | ÷ fp32 "
              "| ours (--int8) | min cosine | ÷ fp32 |", "|---|---|---|---:|---|---:|---|---:|---:|"]
    for r in results:
        for c in r["cells"]:
            e, f, i = c["fp32"], c["float"], c["int8"]
            cosine = r["agreement"].get(i["ours"], {}).get("min_cosine")
            lines.append(f"| {r['name']} | {c['workload']} | {e['ours'] or '—'} | {times(e['ratio'])} | {f['ours'] or '—'} "
                         f"| {times(f['vs_fp32'])} | {i['ours'] or '—'} | {'—' if cosine is None else f'{cosine:.4f}'} "
                         f"| {times(i['vs_fp32'])} |")
    return lines + [""]


def gap_notes(report: dict) -> list[str]:
    """Why the missed speed targets are missed, from this run's numbers: each ratio against its ceiling, the ratio
    ours would reach at 100% of the bf16 peak given what the peer achieved."""
    bf16, fp32 = report["peaks_gflops"].get("bf16"), report["peaks_gflops"]["fp32"]
    missed = {(t["target"], t["model"]) for t in report["targets"] if t["met"] is False}
    if not missed or not bf16:
        return []
    out = ["### Where the missed targets stand", "",
           f"The measured bf16 matmul peak is {bf16 / fp32:.1f}× the fp32 peak here ({bf16:.0f} vs {fp32:.0f} GFLOP/s). "
           "A ratio against an fp32 peer cannot exceed (bf16 peak) ÷ (the peer's useful GFLOP/s): the *ceiling* below, "
           "what ours would reach at 100% of the bf16 peak on the same useful work.", ""]
    rows = []
    for r in report["models"]:
        cases = [("var-len inference, arrival order", r["inference"]["arrival"]), ("MLM step tokens/s", r["mlm"]),
                 ("fine-tuning examples/s", r["finetune"])]
        for label, section in cases:
            if not any(label in target and model == r["name"] for target, model in missed) or HF not in section:
                continue
            ours, peer = section[OURS], section[HF]
            rows.append(f"| {label} | {r['name']} | {ours['gflops'] / peer['gflops']:.2f}× | {bf16 / peer['gflops']:.1f}× "
                        f"| {_pct(ours['mfu'])} | {_pct(peer['mfu'])} |")
    if rows:
        out += ["| target | model | ours ÷ peer | ceiling | ours, % of bf16 peak | peer, % of fp32 peak |",
                "|---|---|---:|---:|---:|---:|", *rows, ""]
    if any("ORT int8" in target for target, _ in missed):
        out.append("- *ours ÷ ORT int8 on length-sorted batches*: sorted batches have little padding left to skip, and "
                   "int8 matmuls (VNNI) outrun bf16 ones; `fast_paths.quantize_int8` is the torch switch for that precision.")
    if any("latency" in target for target, _ in missed):
        out.append("- *batch-1 latency*: a 32-token forward of a small model is dominated by eager PyTorch's per-op "
                   "dispatch and autocast casts (~10 µs each, ~60 ops for Tiny); ONNX Runtime runs one fused graph.")
    return out + [""]


def profile_markdown(p: dict) -> list[str]:
    lines = ["", f"## Where the time goes ({nickname(p['preset'])}, torch.profiler, self CPU time)", ""]
    for key, title in (("inference_arrival", f"inference, {p['sentences']} sentences in arrival-order batches of 32 "
                                                 f"(mean {p['mean_tokens']:.0f} tokens)"),
                       ("batch1", f"50 batch-1 requests of {LATENCY_TOKENS} tokens (eager: the per-op dispatch that the "
                                  "engines' fused graphs do not pay)"),
                       ("mlm_step", "one MLM pre-training step, 32×128")):
        if key not in p:
            continue
        prof = p[key]
        lines += [f"**{title}**: {prof['total_ms']:.0f} ms profiled.", "",
                  "| category | share |", "|---|---:|"]
        lines += [f"| {k} | {_pct(v)} |" for k, v in prof["categories"].items()]
        lines += ["", "| op | self ms | share | calls |", "|---|---:|---:|---:|"]
        lines += [f"| `{t['op']}` | {t['self_ms']:.1f} | {_pct(t['share'])} | {t['calls']} |" for t in prof["top"]]
        lines.append("")
    return lines


def plot(report: dict, out: Path) -> None:
    names = [r["name"] for r in report["models"]]
    fig, axes = pyplot().subplots(1, 3, figsize=(15, 4.5))
    panels = [
        ("variable-length inference, arrival order\n(sentences/s)", lambda r, s: r["inference"]["arrival"].get(s, {}).get("per_s"), [OURS, HF, ORT32, ORT8]),
        ("variable-length inference, length-sorted\n(sentences/s)", lambda r, s: r["inference"]["sorted"].get(s, {}).get("per_s"), [OURS, HF, ORT32, ORT8]),
        ("MLM step 32×128 (tokens/s) and\nfine-tuning (examples/s)", None, None),
    ]
    x = np.arange(len(names))
    for ax, (title, get, systems) in zip(axes, panels):
        if get is None:
            series = {"MLM ours": [r["mlm"][OURS]["tokens_per_s"] for r in report["models"]],
                      "MLM stock HF": [r["mlm"].get(HF, {}).get("tokens_per_s") for r in report["models"]],
                      "fine-tune ours": [r["finetune"][OURS]["examples_per_s"] for r in report["models"]],
                      "fine-tune HF": [r["finetune"].get(HF, {}).get("examples_per_s") for r in report["models"]]}
        else:
            series = {s: [get(r, s) for r in report["models"]] for s in systems}
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, [v or 0 for v in values], width, label=label)
        ax.set_yscale("log")
        ax.set_xticks(x, names)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    threads = report["torch_threads"]
    fig.suptitle(f"{report['cpu']}, {threads} thread{'s' if threads != 1 else ''}, torch {report['versions']['torch']} "
                 f"({report['date'][:10]}){' — machine busy' if any(r['machine']['busy'] for r in report['models']) else ''}", fontsize=10)
    save_figure(fig, out, dpi=110)
