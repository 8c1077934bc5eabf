"""One model's section, the profile, and the whole run (`run_bench`)."""

from __future__ import annotations

import datetime
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_classifier
from ..device import autocast, resolve_dtype
from ..inference.batching import length_batches
from ..inference.fast_paths import for_inference
from ..tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
from .engines import run_engines
from .harness import (BATCH, FINETUNE_BATCHES, HF, LATENCY_TOKENS, MAX_LEN, ORT32, ORT8, OURS, BenchConfig, Busy,
                      Workload, cpu_flags, cpu_model, forward_flops, load_workload, matmul_peak, median, native_bf16,
                      nickname, round_robin, size_key, versions)
from .report import check_report_path, check_targets, write_report
from .systems import (build_systems, finetune_steps, hf_mlm_step, make_checkpoint, measure_inference, measure_latency,
                      measure_memory, mlm_batch, ours_mlm_step)

log = logging.getLogger(__name__)


# --- one model --------------------------------------------------------------------------------------------------

def bench_model(preset: str, cfg: BenchConfig, workload: Workload, tokenizer: WordPieceTokenizer, peaks: dict,
                work: Path) -> dict:
    device = torch.device("cpu")
    dtype = resolve_dtype("auto", device)
    repeats = cfg.repeats_for(preset)
    n = BATCH * cfg.n_batches(preset)
    model_dir = make_checkpoint(preset, work / preset / "model")
    onnx_dir = work / preset / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"preset": preset, "name": nickname(preset), "repeats": repeats, "sentences": n}
    with Busy() as busy:
        systems = build_systems(model_dir, onnx_dir, device, dtype, threads=cfg.threads)
        result["missing"] = systems.missing
        result["precision"] = systems.precision
        model_cfg = load_classifier(model_dir)[0].cfg
        lengths = workload.lengths(n)
        arrival = [list(range(i, min(i + BATCH, n))) for i in range(0, n, BATCH)]
        batches = {"arrival": [workload.batch(tokenizer, rows) for rows in arrival],
                   "sorted": [workload.batch(tokenizer, rows) for rows in length_batches(lengths, BATCH)]}
        g = torch.Generator().manual_seed(1)
        batches["fixed"] = [{"input_ids": torch.randint(1000, 30000, (BATCH, MAX_LEN), generator=g),
                             "attention_mask": torch.ones(BATCH, MAX_LEN, dtype=torch.long),
                             "token_type_ids": torch.zeros(BATCH, MAX_LEN, dtype=torch.long)}]
        log.info("%s: inference (%d sentences, %d repeats)", nickname(preset), n, repeats)
        seconds = measure_inference(systems, batches, repeats)
        flops = {"arrival": forward_flops(model_cfg, lengths), "sorted": forward_flops(model_cfg, lengths),
                 "fixed": forward_flops(model_cfg, [MAX_LEN] * BATCH)}
        count = {"arrival": n, "sorted": n, "fixed": BATCH}
        result["inference"] = {
            w: {name: {"per_s": count[w] / median(t), "gflops": flops[w] / median(t) / 1e9,
                       "mfu": mfu(flops[w] / median(t), systems.precision[name], peaks), "seconds": t}
                for name, t in per.items()}
            for w, per in seconds.items()}

        log.info("%s: batch-1 latency", nickname(preset))
        long_enough = [i for i, L in enumerate(workload.lengths(len(workload.ids))) if L >= LATENCY_TOKENS][:50]
        singles = [{k: v[:, :LATENCY_TOKENS].clone() for k, v in workload.batch(tokenizer, [i]).items()} for i in long_enough]
        for s in singles:
            s["input_ids"][0, -1] = tokenizer.sep_id
        result["latency"] = measure_latency(systems, singles, cfg.latency_iters(preset))

        log.info("%s: MLM step (32x128)", nickname(preset))
        mlm_jobs = {OURS: ours_mlm_step(model_cfg, device, dtype)}
        if HF not in systems.missing:
            mlm_jobs[HF] = hf_mlm_step(model_cfg)
        mlm_rounds = 2 if model_cfg.hidden_size >= 512 else min(repeats, 3)
        t = round_robin(mlm_jobs, mlm_rounds)
        masked = int(mlm_batch(model_cfg)["mlm_positions"].sum())
        step_flops = 3 * forward_flops(model_cfg, [MAX_LEN] * BATCH, masked=masked, head=False)
        result["mlm"] = {name: {"tokens_per_s": BATCH * MAX_LEN / median(s), "gflops": step_flops / median(s) / 1e9,
                                "mfu": mfu(step_flops / median(s), "bf16" if name == OURS and dtype == torch.bfloat16 else "fp32", peaks),
                                "seconds": s}
                         for name, s in t.items()}
        del mlm_jobs

        log.info("%s: fine-tuning steps", nickname(preset))
        labels = torch.Generator().manual_seed(2)
        ft_batches = [dict(b, labels=torch.randint(0, 2, (b["input_ids"].shape[0],), generator=labels))
                      for b in batches["arrival"][:FINETUNE_BATCHES]]
        ft_n = sum(len(b["labels"]) for b in ft_batches)
        ft_jobs = {OURS: finetune_steps(model_dir, ft_batches, device, dtype, OURS)}
        try:
            from ..train.finetune import bucket_batches

            bucketed = [workload.batch(tokenizer, rows) for rows in bucket_batches(lengths[:ft_n], BATCH, random.Random(0))]
            bucketed = [dict(b, labels=torch.randint(0, 2, (b["input_ids"].shape[0],), generator=labels)) for b in bucketed]
            ft_jobs[OURS + " (bucketed)"] = finetune_steps(model_dir, bucketed, device, dtype, OURS)
        except ImportError:
            pass
        if HF not in systems.missing:
            ft_jobs[HF] = finetune_steps(model_dir, ft_batches, device, dtype, HF)
        t = round_robin(ft_jobs, 2 if model_cfg.hidden_size >= 512 else min(repeats, 3),
                        warmups={name: (lambda job=job: job(1)) for name, job in ft_jobs.items()})
        ft_flops = 3 * forward_flops(model_cfg, lengths[:ft_n])
        result["finetune"] = {name: {"examples_per_s": ft_n / median(s), "gflops": ft_flops / median(s) / 1e9,
                                     "mfu": mfu(ft_flops / median(s), "fp32" if name == HF or dtype == torch.float32 else "bf16", peaks),
                                     "seconds": s}
                              for name, s in t.items()}
        del ft_jobs, systems

        log.info("%s: peak memory (one process per system)", nickname(preset))
        names = [OURS] + [s for s in (HF, ORT32, ORT8) if s not in result["missing"]]
        result["memory"] = {"inference_32x128": measure_memory(model_dir, onnx_dir, names, "infer", cfg.threads),
                            "mlm_step": measure_memory(model_dir, onnx_dir, [s for s in (OURS, HF) if s in names], "mlm", cfg.threads)}
    result["machine"] = busy.summary()
    return result


def mfu(flops_per_s: float, precision: str, peaks: dict) -> float | None:
    peak = peaks.get(precision)
    return flops_per_s / 1e9 / peak if peak else None


# --- the profile ------------------------------------------------------------------------------------------------

CATEGORIES = [  # (label, op-name fragments), first match wins
    ("matmul (Linear layers, MLM decoder)", ("addmm", "aten::mm", "matmul", "linear", "mkldnn", "onednn")),
    ("attention (SDPA kernel; with dropout: bmm + softmax)", ("scaled_dot_product", "flash_attention", "_efficient_attention",
                                                               "softmax", "bmm")),
    ("dropout masks (bernoulli)", ("bernoulli", "dropout")),
    ("gather/scatter (unpad, groups, pad)", ("index", "gather", "scatter", "nonzero", "masked", "embedding")),
    ("LayerNorm", ("layer_norm",)),
    ("GELU / tanh", ("gelu", "tanh")),
    ("adds, copies, casts, fills", ("add", "copy", "_to_copy", "fill", "cat", "zero", "mul", "where", "clone")),
    ("optimizer (AdamW)", ("_foreach", "adam", "lerp", "sqrt", "addcdiv", "addcmul")),
]


def profile_ops(fn: Callable[[], object], warmup: int = 1, rows: int = 12) -> dict:
    """torch.profiler over one call of `fn`: top ops by self CPU time, and the time by category."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]
    categories: dict[str, float] = {}
    for e in events:
        label = next((lab for lab, keys in CATEGORIES if any(k in e.key.lower() for k in keys)), "other")
        categories[label] = categories.get(label, 0.0) + e.self_cpu_time_total
    return {"total_ms": total / 1e3,
            "top": [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
                     "calls": e.count} for e in top],
            "categories": {k: v / total for k, v in sorted(categories.items(), key=lambda kv: -kv[1])}}


def bench_profile(preset: str, workload: Workload, tokenizer: WordPieceTokenizer, n: int, work: Path) -> dict:
    device = torch.device("cpu")
    dtype = resolve_dtype("auto", device)
    model_dir = work / preset / "model"
    if not model_dir.is_dir():
        make_checkpoint(preset, model_dir)
    model = for_inference(load_classifier(model_dir)[0], dtype)
    lengths = workload.lengths(n)
    arrival = [workload.batch(tokenizer, list(range(i, min(i + BATCH, n)))) for i in range(0, n, BATCH)]

    def infer():
        with torch.inference_mode(), autocast(device, dtype):
            for b in arrival:
                model(b["input_ids"], b["attention_mask"], b["token_type_ids"])

    # Batch 1, where the engines lead: 50 requests of 32 tokens on the eager model, so that the per-op
    # dispatch shows op by op (the traced fp32 path of inference/backends/pytorch.py runs the same ops without Python between).
    row = next(i for i, L in enumerate(lengths) if L >= LATENCY_TOKENS)
    single = {k: v[:, :LATENCY_TOKENS] for k, v in workload.batch(tokenizer, [row]).items()}

    def batch1():
        with torch.inference_mode(), autocast(device, dtype):
            for _ in range(50):
                model(single["input_ids"], single["attention_mask"], single["token_type_ids"])

    out = {"inference_arrival": profile_ops(infer), "sentences": n, "mean_tokens": float(np.mean(lengths))}
    out["batch1"] = profile_ops(batch1)
    out["mlm_step"] = profile_ops(ours_mlm_step(model.cfg, device, dtype))
    return out


# --- the run ----------------------------------------------------------------------------------------------------

def run_bench(cfg: BenchConfig, out: str | Path) -> dict:
    out = Path(out)
    check_report_path(out)  # before an hour of measuring
    start = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tokenizer = WordPieceTokenizer(BUILTIN_VOCAB)
    most = max(BATCH * cfg.n_batches(size_key(p)) for p in cfg.models + cfg.engine_models)
    workload = load_workload(tokenizer, max(most, 256))
    log.info("workload: %s", workload.source)
    with Busy() as busy:
        peaks = {"fp32": matmul_peak(torch.float32)["gflops"]}
        if native_bf16():
            peaks["bf16"] = matmul_peak(torch.bfloat16)["gflops"]
    log.info("matmul peak: %s GFLOP/s", {k: round(v) for k, v in peaks.items()})
    report: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "command": "miniberts bench " + " ".join(sys.argv[2:]),
        "quick": cfg.quick, "cpu": cpu_model(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "ort_threads": cfg.threads or "default (one per core)", "versions": versions(), "bf16_native": native_bf16(),
        "workload": {"source": workload.source, **workload.stats(most)}, "peaks_gflops": peaks,
        "peak_machine": busy.summary(), "models": [], "engines": [],
    }
    with tempfile.TemporaryDirectory(prefix="miniberts-bench-") as tmp:
        work = Path(tmp)
        with Busy() as busy:
            report["engines"] = run_engines(cfg, workload, tokenizer, work)
        report["engines_machine"] = busy.summary()
        for preset in cfg.models:
            report["models"].append(bench_model(preset, cfg, workload, tokenizer, peaks, work))
            _log_model(report["models"][-1])
        if cfg.profile:
            preset = "4-512" if "4-512" in cfg.models or not cfg.models else cfg.models[-1]
            log.info("profile: %s", nickname(preset))
            report["profile"] = {"preset": preset, **bench_profile(preset, workload, tokenizer, BATCH * cfg.n_batches(preset), work)}
    report["seconds"] = round(time.time() - start, 1)
    report["targets"] = check_targets(report)
    write_report(report, out)
    return report


def _log_model(r: dict) -> None:
    inf = r["inference"]["arrival"]
    line = ", ".join(f"{name} {v['per_s']:.0f}/s" for name, v in inf.items())
    log.info("%s variable-length arrival: %s%s", r["name"], line, " (machine busy)" if r["machine"]["busy"] else "")
