"""Where the time of a whole call goes: `miniberts embed` on 4,000 sentences and one sentence through `Model.embed`.

    python benchmarks/profile_call.py [--models minilm,tiny] [--sentences 4000] [--iters 200] [--out docs/profile_call.md]

Per model (the real MiniLM-L6 and the Tiny preset, random weights: its speed does not depend on them), defaults
throughout (`--dtype auto`: bf16 where the CPU has it natively, else fp32; `--backend auto`, batch 32, the model's
own max length):

1. **The whole process**, as a user runs it: `python -m miniberts embed MODEL FILE --output X.npy` in a subprocess,
   its wall time with the engine artifact cached (a warm-up run builds it first), beside `python -c pass`
   (interpreter start-up) and `python -c "import miniberts.commands.embed"` (imports).
2. **The same work, stage by stage, in-process**: model load; engine preparation with the artifact built (an empty
   $MINIBERTS_CACHE) and read from the cache; tokenization; batching (length sort and padding); the engine (every
   batch through the runner `Model.embed` uses); pooling; writing the .npy. Beside them the in-process
   `Model.embed` call itself, whose excess over tokenization + batching + engine + pooling is its own overhead.
3. **The arithmetic**: useful FLOPs of the real tokens (bench.harness.forward_flops), the fp32 matmul peak measured
   in the same run (bench.harness.matmul_peak), and the fraction of that peak the whole process and the engine reach.
4. **One sentence**: `Model.embed(one sentence)` p50/p99 over `--iters` calls, its stages (tokenize, pad, engine,
   pool) and the engine's own call (ONNX Runtime's `session.run` on the tokenizer's ids, tokenization included).

Timings are meaningful on an otherwise idle machine only (benchmarks/README.md); the report names the CPU.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import miniberts
from miniberts.bench.harness import cpu_model, forward_flops, matmul_peak, rt_rows
from miniberts.data.builtin import minilm_dir
from miniberts.device import autocast, resolve_dtype
from miniberts.fileio import atomic_write_text
from miniberts.inference.batching import length_batches, pool
from miniberts.inference.config import EmbedConfig

SOURCES = {"minilm": lambda: str(minilm_dir()), "tiny": lambda: "2-128"}


def sentences(n: int) -> list[str]:
    texts = [row["text"] for row in rt_rows()]
    random.Random(0).shuffle(texts)  # the bench's workload order
    return texts[:n]


def wall(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def whole_process(source: str, file: Path, work: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(Path(miniberts.__file__).parents[1])}
    embed = [sys.executable, "-m", "miniberts", "embed", source, str(file), "--output", str(work / "cli.npy")]
    wall(embed, env)  # builds (or finds) the engine artifact
    return {"interpreter": wall([sys.executable, "-c", "pass"], env),
            "imports": wall([sys.executable, "-c", "import miniberts.commands.embed"], env),
            "process": wall(embed, env)}


def stages(source: str, texts: list[str], work: Path) -> tuple[dict[str, float], list[int], object]:
    """Seconds per stage of embedding `texts` with the defaults, in-process; the token lengths; the model."""
    t = {}
    t["load"], model = timed(lambda: miniberts.load(source, device="cpu"))
    pooling, _, length = model.embedding_settings(EmbedConfig())
    dtype = resolve_dtype(EmbedConfig().dtype, torch.device("cpu"))  # the default: bf16 where the CPU has it natively
    cache = os.environ.get("MINIBERTS_CACHE")
    os.environ["MINIBERTS_CACHE"] = str(work / "cache")  # empty: the artifact is built here
    try:
        t["engine preparation (built)"], _ = timed(lambda: miniberts.load(source, device="cpu")._runner(
            False, "auto", dtype, False, 32))
        # run_dtype: bf16 for torch's bf16 (autocast), fp32 for an engine (it runs in its own precision)
        t["engine preparation (cached)"], (runner, run_dtype) = timed(lambda: model._runner(False, "auto", dtype, False, 32))
    finally:
        os.environ.pop("MINIBERTS_CACHE") if cache is None else os.environ.update(MINIBERTS_CACHE=cache)
    t["tokenization"], (ids, types) = timed(lambda: model.tokenizer.encode(texts, None, length))
    t["batching"], batches = timed(lambda: [model.tokenizer.pad_batch([ids[i] for i in b], [types[i] for i in b])
                                            for b in length_batches([len(x) for x in ids], 32)])
    outputs, t["engine"], t["pooling"] = [], 0.0, 0.0
    with torch.no_grad(), autocast(torch.device("cpu"), run_dtype):
        runner(batches[0]["input_ids"], batches[0]["attention_mask"], batches[0]["token_type_ids"])  # first-run set-up
        for b in batches:
            seconds, (hidden, pooled) = timed(lambda: runner(b["input_ids"], b["attention_mask"], b["token_type_ids"]))
            t["engine"] += seconds
            seconds, vectors = timed(lambda: pool(hidden.float(), pooled.float(), b["attention_mask"], pooling))
            t["pooling"] += seconds
            outputs.append(vectors)
    vectors = torch.cat(outputs).numpy()
    t["output (.npy)"], _ = timed(lambda: np.save(work / "stages.npy", vectors))
    t["Model.embed (whole call)"], _ = timed(lambda: model.embed(texts))
    return t, [len(x) for x in ids], model


def one_sentence(model, text: str, iters: int) -> dict[str, float]:
    """p50 ms of Model.embed(text), of its stages, and of the engine's own call (tokenization included)."""
    runner, _ = model._runner(False, "auto", resolve_dtype(EmbedConfig().dtype, torch.device("cpu")), False, 1)
    _, _, length = model.embedding_settings(EmbedConfig())

    def p50(fn) -> float:
        for _ in range(10):
            fn()
        return 1e3 * statistics.median(timed(fn)[0] for _ in range(iters))

    calls = sorted(timed(lambda: model.embed(text))[0] for _ in range(iters))
    ids, types = model.tokenizer.encode([text], None, length)
    b = model.tokenizer.pad_batch(ids, types)
    hidden, pooled = runner(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    out = {"Model.embed p50": 1e3 * calls[len(calls) // 2], "Model.embed p99": 1e3 * calls[int(0.99 * (iters - 1))],
           "tokenize": p50(lambda: model.tokenizer.encode([text], None, length)),
           "pad": p50(lambda: model.tokenizer.pad_batch(ids, types)),
           "engine (runner)": p50(lambda: runner(b["input_ids"], b["attention_mask"], b["token_type_ids"])),
           "pool": p50(lambda: pool(hidden, pooled, b["attention_mask"], "mean"))}
    session = getattr(runner, "session", None)
    if session is not None:
        tok = model.tokenizer._tok

        def own():
            e = tok.encode(text)
            x = np.array([e.ids], np.int64)
            return session.run(None, {"input_ids": x, "attention_mask": np.ones_like(x),
                                      "token_type_ids": np.array([e.type_ids], np.int64)})
        out["engine's own call (tokenize + session.run)"] = p50(own)
    return out


def report(name: str, n: int, proc: dict, t: dict, lengths: list[int], cfg, peak: float, single: dict) -> list[str]:
    flops = forward_flops(cfg, lengths, head=False)
    arithmetic = flops / (peak * 1e9)
    lines = [f"## {name}: {n:,} sentences, {sum(lengths):,} real tokens, {flops / 1e12:.3f} TFLOP "
             f"(at the measured fp32 peak of {peak:.0f} GFLOP/s: {arithmetic:.2f} s of arithmetic)", "",
             "| whole process | s |", "|---|---:|",
             *(f"| {k} | {v:.2f} |" for k, v in proc.items()),
             f"| fraction of peak (whole process) | {arithmetic / proc['process']:.0%} |", "",
             "| stage (in-process) | s | share of the stages |", "|---|---:|---:|"]
    counted = [k for k in t if k not in ("engine preparation (built)", "Model.embed (whole call)")]
    total = sum(t[k] for k in counted)
    lines += [f"| {k} | {v:.3f} | {f'{v / total:.0%}' if k in counted else '–'} |" for k, v in t.items()]
    lines += [f"| fraction of peak (engine alone) | {arithmetic / t['engine']:.0%} | |", "",
              "| one sentence | ms |", "|---|---:|", *(f"| {k} | {v:.2f} |" for k, v in single.items()), ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="minilm,tiny")
    p.add_argument("--sentences", type=int, default=4000)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("docs/profile_call.md"))
    args = p.parse_args()
    texts = sentences(args.sentences)
    work = Path(tempfile.mkdtemp(prefix="profile_call-"))
    file = work / "sentences.txt"
    file.write_text("".join(t.replace("\n", " ").replace("\r", " ") + "\n" for t in texts), encoding="utf-8")
    peak = matmul_peak(torch.float32)["gflops"]
    lines = [f"# The whole call, profiled ({cpu_model()}, {torch.get_num_threads()} threads, "
             f"{time.strftime('%Y-%m-%d')})", "",
             "`python benchmarks/profile_call.py`; the method is its docstring. fp32 matmul peak of this run: "
             f"{peak:.0f} GFLOP/s.", ""]
    for name in args.models.split(","):
        source = SOURCES[name]()
        proc = whole_process(source, file, work)
        t, lengths, model = stages(source, texts, work)
        lines += report(name, len(texts), proc, t, lengths, model.config, peak, one_sentence(model, texts[3], args.iters))
        print("\n".join(lines), flush=True)
    atomic_write_text(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
