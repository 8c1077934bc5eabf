"""What one call costs a user, tokenization and pooling included: `miniberts.load(model).embed(...)` per backend.

    python benchmarks/user_calls.py [--model minilm|tiny|DIR] [--out docs/user_calls.md] [--iters 200]

For each backend (torch, auto, and every installed engine; fp32 and --int8): one real Rotten Tomatoes sentence per
call (p50/p99 ms over --iters calls, after warm-up calls that also make any engine artifact), and 1,024 sentences
in one call with the default batch of 32 (sentences/s, median of 3). Also sentence-transformers' `encode` on the
same sentences when the model is a sentence-transformers directory, as the notebook peer. Agreement: min cosine
of the 1,024 embeddings to torch fp32. Run it alone on the machine (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import miniberts
from miniberts.bench.harness import cpu_model, rt_rows
from miniberts.data.builtin import minilm_dir
from miniberts.fileio import atomic_write_text
from miniberts.inference import backends

N_BATCH = 1024


def sentences(n: int) -> list[str]:
    texts = [row["text"] for row in rt_rows()]
    random.Random(0).shuffle(texts)  # the bench's workload order
    return texts[:n]


def timed(fn, iters: int) -> list[float]:
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--out", default="docs/user_calls.md")
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()
    source = str(minilm_dir()) if args.model == "minilm" else args.model
    model = miniberts.load(source, device="cpu")
    texts = sentences(N_BATCH)
    one = texts[3]
    reference = model.embed(texts, backend="torch", dtype="fp32")
    rows = []
    runs = [("torch", False), ("auto", False)] + [(b, False) for b in backends.installed() if b != "torch"]
    runs += [("torch", True), ("auto", True)] + [(b, True) for b in ("onnxruntime", "ctranslate2")
                                                   if b in backends.installed()]
    for backend, int8 in runs:
        call = lambda x: model.embed(x, backend=backend, int8=int8, dtype="fp32")  # noqa: E731
        for _ in range(20):  # warm-up; the first call of an engine exports (or reads) its artifact
            call(one)
        single = sorted(timed(lambda: call(one), args.iters))
        batched = statistics.median(timed(lambda: call(texts), 3))
        vectors = call(texts)
        cos = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        picked = backends.resolve(backend, model.config, "int8" if int8 else "fp32", 1, torch.device("cpu"))
        picked_batched = backends.resolve(backend, model.config, "int8" if int8 else "fp32", 32, torch.device("cpu"))
        name = f"{backend}{' --int8' if int8 else ''}"
        if backend == "auto":
            name += f" (→ {picked} / {picked_batched})"
        rows.append((name, 1e3 * single[len(single) // 2], 1e3 * single[int(0.99 * (len(single) - 1))],
                     N_BATCH / batched, float(cos.min())))
        print(rows[-1], flush=True)
    try:
        import sentence_transformers as st

        peer = st.SentenceTransformer(source, device="cpu")
        for _ in range(20):
            peer.encode(one)
        single = sorted(timed(lambda: peer.encode(one), args.iters))
        batched = statistics.median(timed(lambda: peer.encode(texts, batch_size=32), 3))
        vectors = peer.encode(texts)
        cos = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        rows.append(("sentence-transformers encode", 1e3 * single[len(single) // 2],
                     1e3 * single[int(0.99 * (len(single) - 1))], N_BATCH / batched, float(cos.min())))
    except Exception as e:  # not a sentence-transformers directory, or not installed
        print(f"sentence-transformers skipped: {e}")
    lines = [f"# What one call costs: `{Path(source).name}` `embed`, tokenization and pooling included", "",
             f"`python benchmarks/user_calls.py --model {args.model}` on {time.strftime('%Y-%m-%d')}: {cpu_model()}, "
             f"{torch.get_num_threads()} torch threads, torch {torch.__version__}. One call = one Rotten Tomatoes "
             f"sentence ({len(model.tokenizer.encode([one], None, 512)[0][0])} tokens), p50/p99 over {args.iters} "
             f"calls; batched = {N_BATCH} sentences in one call (batches of 32), median of 3. *auto (→ a / b)*: what "
             "auto runs for one sentence / for batches of 32.", "",
             "| backend | one sentence, ms p50 | p99 | 1,024 sentences, /s | min cosine to torch fp32 |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {p50:.2f} | {p99:.2f} | {rate:,.0f} | {cos:.5f} |" for n, p50, p99, rate, cos in rows]
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
