"""The machine and round-robin timing, shared by `miniberts bench` and an experiment's latency measurement: the CPU's
name and the instruction-set flags that decide which kernels run, and calls timed in interleaved rounds."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return ""
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f in flags)


def round_robin(jobs: dict[str, Callable[[], object]], repeats: int,
                warmups: dict[str, Callable[[], object]] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each job: a warm-up (the job itself, or a shorter `warmups[name]`), then `repeats` rounds
    in which every job runs once, the first job of a round rotating, so that a burst of load from elsewhere falls on
    all systems alike."""
    for name, job in jobs.items():
        (warmups or {}).get(name, job)()
    names, times = list(jobs), {name: [] for name in jobs}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            jobs[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)
