"""How much a server's model thread slows when an event loop runs beside it in the same process (the GIL).

    python benchmarks/model_thread_contention.py [--model tiny] [--device cpu|cuda]
        [--backends torch,openvino,onnxruntime] [--work-us 50,1000] [--cap-seconds 5] [--out FILE]

`miniberts serve` runs its passes on one model thread while the event loop answers HTTP on another. An event loop
under load runs Python between short system calls (send, recv, epoll), and each call drops the GIL and takes it back
at once; a thread waiting for the GIL rarely wins it then (CPython resets its 5-ms forced-switch timer whenever the
GIL changes hands, so the waiter never forces it). A pass that needs the GIL once, around one engine call, waits once;
a pass of eager torch takes it back after every op, hundreds of times a forward, and on a GPU, where an op is a
microseconds-long kernel launch, nearly all of the pass becomes waiting.

Each engine runs the server's own pass (`Service._compute`: 64 real sentences, as a server under 64 one-sentence
clients gets them) alone, then beside a thread that loops "WORK us of Python, then a system call" (a pipe write and
read), for each --work-us. Each measurement stops after --cap-seconds: the loop-like thread stops then, and a pass
that had not finished by then is reported as over the cap (the whole run stays bounded even where a pass would take
minutes beside the loop). Run it alone on the machine: figures on a loaded machine mean little.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import miniberts
from miniberts.fileio import atomic_write_text
from miniberts.inference import backends
from miniberts.inference.serve.bodies import Inputs
from miniberts.inference.serve.config import ServeConfig
from miniberts.inference.serve.service import Service
from miniberts.timing import cpu_model

from serve_load import corpus_inputs, rt_rows

PASS = 64  # sentences per pass: a server's pass under 64 one-sentence clients


class LoopLike:
    """A thread that runs `work_us` of Python between system calls, as a loaded event loop does, until stopped or
    `seconds` have passed."""

    def __init__(self, work_us: float, seconds: float):
        self.work_s, self.running = work_us / 1e6, True
        self.until = time.monotonic() + seconds
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        r, w = os.pipe()
        while self.running and time.monotonic() < self.until:
            start = time.perf_counter()
            while time.perf_counter() - start < self.work_s:
                sum(range(50))
            os.write(w, b"x")  # the GIL is dropped around each call and taken back at once
            os.read(r, 1)
        os.close(r)
        os.close(w)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def ms_per_pass(service: Service, passes: list, cap: float) -> float | None:
    """Mean ms of the passes run within `cap` seconds; None when not even the first one finished in it."""
    start, done = time.perf_counter(), 0
    for ids, types in passes:
        service._compute(("embed", True), ids, types)
        if time.perf_counter() - start > cap:
            break
        done += 1
    return (time.perf_counter() - start) / done * 1e3 if done else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backends", default="torch,openvino,onnxruntime")
    p.add_argument("--work-us", default="50,1000")
    p.add_argument("--cap-seconds", type=float, default=5.0)
    p.add_argument("--out")
    args = p.parse_args()
    texts = corpus_inputs(rt_rows(), "sentences", 8 * PASS)
    lines = [f"Model thread beside an event-loop-like thread: {args.model} on {args.device} ({cpu_model()}, "
             f"{os.cpu_count()} CPUs), passes of {PASS} Rotten Tomatoes sentences, ms per pass", "",
             "| engine | alone | " + " | ".join(f"beside {w} us Python per syscall" for w in args.work_us.split(","))
             + " |", "|---|---:|" + "---:|" * len(args.work_us.split(","))]
    for backend in args.backends.split(","):
        if backend != "torch" and backends.missing_module(backend) is not None:
            lines.append(f"| {backend} | skipped (not installed) |")
            continue
        service = Service(ServeConfig(backend=backend), args.model, miniberts.load(args.model, args.device))
        service.start()
        passes = [service.tokens(Inputs(texts[i:i + PASS], None, False), False, truncate=True)
                  for i in range(0, len(texts), PASS)]
        for ids, types in passes:  # every shape met once
            service._compute(("embed", True), ids, types)
        alone = ms_per_pass(service, passes, float("inf"))
        cells = [f"{alone:.1f}"]
        for work in args.work_us.split(","):
            with LoopLike(float(work), args.cap_seconds):
                beside = ms_per_pass(service, passes, args.cap_seconds)
            cap_ms = args.cap_seconds * 1e3
            cells.append(f"> {cap_ms:.0f} (over {cap_ms / alone:.0f}x)" if beside is None
                         else f"{beside:.1f} ({beside / alone:.1f}x)")
        service.stop()
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
