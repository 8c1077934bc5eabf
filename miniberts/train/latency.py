"""Every system's size, batch-1 latency and throughput, measured in one process at the end of an experiment.

A system is a group of cells (a student x strategy x ..., or a baseline); the seeds of a group share one
architecture, so its first seed's model stands for it. What is timed is what a user would call:
`miniberts.load(dir).predict(...)` for students and the teacher (the engine `auto` picks for the shape), the
general teacher's `embed` + the head for the probe, the model2vec model's `encode` + the head for static, model2vec's
pipeline `predict` for static-trained. Batch-1 latency: one real test sentence per call, the next sentence each round,
the systems interleaved round by round (`timing.round_robin`) so that load from elsewhere falls on all alike;
throughput: the whole test set in batches.

OUT/systems.json (written after the cells) says what to load and with which settings, and holds the test texts, so
`miniberts experiment --out OUT --latency-only` re-measures on an idle machine without the flags or the data files
and rewrites OUT/latency.json, the Pareto section of summary.md/summary.json and pareto.png.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import param_count
from ..device import resolve_dtype
from ..errors import MinibertsError
from ..fileio import atomic_write_text
from ..inference import backends
from ..inference.loaded_model import load
from ..timing import cpu_flags, cpu_model, median, round_robin
from . import pareto, rundir
from .baselines import (STATIC, general_model_dir, head_labels, load_pipeline, load_static, pipeline_labels,
                        pipeline_params, probe_features, read_head, static_features)
from .common import read_jsonl

log = logging.getLogger("miniberts")

SYSTEMS, LATENCY = "systems.json", "latency.json"
LATENCY_ROUNDS = 200  # batch-1 calls per system (a different sentence each round)
THROUGHPUT_ROUNDS = 3  # passes over the test set per system


@dataclass
class System:
    name: str  # pareto.system_name of its group
    kind: str  # "model" (a miniberts classifier: students, the teacher) | "teacher-probe" | "static(-trained)"
    model: str  # the model directory (the probe: the general teacher; static: the baseline's run directory;
    #             static-trained: its saved pipeline)
    head: str = ""  # the probe's and static's logistic-regression head


@dataclass
class Settings:
    max_length: int
    dtype: str
    batch_size: int  # of the throughput passes
    threads: int  # intra-op threads of every system (torch and the engines alike)


def write_systems(out: Path, systems: list[System], texts: list[str], settings: Settings) -> None:
    atomic_write_text(out / SYSTEMS, json.dumps({"settings": dataclasses.asdict(settings), "texts": texts,
                                                 "systems": [dataclasses.asdict(s) for s in systems]}, indent=1))


def remeasure(out: Path) -> dict:
    """`--latency-only`: measure again and rewrite latency.json, the Pareto section and pareto.png; nothing trains.
    Holds OUT's lock, so it cannot run beside the experiment itself."""
    if not (out / SYSTEMS).is_file() or not (out / "summary.json").is_file():
        raise MinibertsError(f"{out}: no finished experiment with --pareto here ({SYSTEMS} and summary.json are "
                             "written at its end); run the experiment with --pareto first")
    with rundir.locked(out):
        latency = measure(out)
        return pareto.write(out, read_jsonl(out / "results.jsonl"), latency)


def measure(out: Path) -> dict:
    """Time every system of OUT/systems.json; OUT/latency.json, returned."""
    spec = json.loads((out / SYSTEMS).read_text(encoding="utf-8"))
    settings, texts = Settings(**spec["settings"]), spec["texts"]
    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        callers = {s["name"]: _caller(System(**s), settings) for s in spec["systems"]}
        load_average = os.getloadavg()[0]
        ones, batches = {}, {}
        for name, (one, many, _) in callers.items():
            sentences = itertools.cycle(texts)  # every system sees the same sentence in the same round
            ones[name] = lambda one=one, sentences=sentences: one([next(sentences)])
            batches[name] = lambda many=many: many(texts)
        log.info("latency: %d systems, %d batch-1 rounds, %d throughput rounds of %d texts", len(callers),
                 LATENCY_ROUNDS, THROUGHPUT_ROUNDS, len(texts))
        single = round_robin(ones, LATENCY_ROUNDS)
        passes = round_robin(batches, THROUGHPUT_ROUNDS, warmups={n: lambda n=n: callers[n][1](texts[: settings.batch_size])
                                                                 for n in callers})
    finally:
        torch.set_num_threads(previous)
    systems = {}
    for name, (_, _, facts) in callers.items():
        systems[name] = {**facts, "latency_ms": 1000 * median(single[name]),
                         "latency_ms_p90": 1000 * float(np.percentile(single[name], 90)),
                         "throughput": len(texts) / median(passes[name])}
    latency = {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count(), "threads": settings.threads,
               "dtype": settings.dtype, "max_length": settings.max_length, "batch_size": settings.batch_size,
               "rounds": LATENCY_ROUNDS, "throughput_rounds": THROUGHPUT_ROUNDS, "texts": len(texts),
               "load_average": load_average, "measured_at": time.strftime("%Y-%m-%d %H:%M"), "systems": systems}
    atomic_write_text(out / LATENCY, json.dumps(latency, indent=2) + "\n")
    return latency


def _caller(system: System, s: Settings):
    """(call on a list of texts at batch 1, call on many texts in batches, facts: params, disk bytes, engine)."""
    if system.kind == "static":
        static = load_static(Path(system.model) / STATIC)
        coef, intercept = read_head(Path(system.head))
        one = lambda texts: head_labels(coef, intercept, static_features(static, texts, s.max_length, 1))  # noqa: E731
        many = lambda texts: head_labels(coef, intercept, static_features(static, texts, s.max_length,  # noqa: E731
                                                                          s.batch_size))
        return one, many, {"params": int(static.embedding.size + coef.size + intercept.size),
                           "disk_bytes": _weights_bytes(Path(system.model) / STATIC) + Path(system.head).stat().st_size,
                           "engine": "model2vec"}
    if system.kind == "static-trained":
        pipeline = load_pipeline(Path(system.model))
        one = lambda texts: pipeline_labels(pipeline, texts, s.max_length, 1)  # noqa: E731
        many = lambda texts: pipeline_labels(pipeline, texts, s.max_length, s.batch_size)  # noqa: E731
        return one, many, {"params": pipeline_params(Path(system.model)),
                           "disk_bytes": _weights_bytes(Path(system.model)), "engine": "model2vec"}
    model = load(system.model, device="cpu")
    engine = "/".join(_engine(model.config, s, batch) for batch in (1, s.batch_size))
    if system.kind == "teacher-probe":
        coef, intercept = read_head(Path(system.head))
        one = lambda texts: head_labels(coef, intercept, probe_features(model, texts, s.max_length, s.dtype, 1))  # noqa: E731
        many = lambda texts: head_labels(coef, intercept, probe_features(model, texts, s.max_length,  # noqa: E731
                                                                         s.dtype, s.batch_size))
        return one, many, {"params": param_count(model.config) + int(coef.size + intercept.size),
                           "disk_bytes": _weights_bytes(general_model_dir(system.model))
                           + Path(system.head).stat().st_size, "engine": engine}
    one = lambda texts: model.predict(texts, batch_size=1, max_length=s.max_length, dtype=s.dtype)  # noqa: E731
    many = lambda texts: model.predict(texts, batch_size=s.batch_size, max_length=s.max_length,  # noqa: E731
                                       dtype=s.dtype)
    return one, many, {"params": param_count(model.config), "disk_bytes": _weights_bytes(Path(system.model)),
                       "engine": engine}


def _engine(cfg, s: Settings, batch: int) -> str:
    precision = backends.precision_of(resolve_dtype(s.dtype, torch.device("cpu")), False)
    return backends.resolve("auto", cfg, precision, batch, torch.device("cpu"))


def _weights_bytes(folder: Path) -> int:
    """Bytes of the saved weights in `folder` (its safetensors or PyTorch weight files, not subfolders)."""
    files = [p for p in folder.iterdir() if p.suffix == ".safetensors" or p.name == "pytorch_model.bin"]
    if not files:
        raise MinibertsError(f"{folder}: no weight file (model.safetensors) to measure")
    return sum(p.stat().st_size for p in files)
