"""How one batcher pass is cut into forwards: the split that a measured cost model says is cheapest.

A forward costs a fixed amount (the engine's call, its per-shape bookkeeping), an amount per padded token (the dense
layers) and an amount per padded token and width (attention). So a small model wants few, large forwards (its fixed
cost dominates: the fine-tuned Tiny classifier ran passes of 32 real reviews 1.3-1.4x faster in one forward of 32 than
in four of 8) and a larger one wants forwards of similar lengths (its tokens dominate: MiniLM-L6 ran passes of 64
fastest in forwards of about 8). Rather than one row count for every model, the server times a few forwards at
start-up (`measure`) and `plan` picks, per pass, the split of the length-sorted rows that the model says is cheapest.

Where the passes' engine runs packed rows (inference/packing.py: several inputs one after another in a row, each
attending only to itself), `plan` also prices the pass as one packed forward, for a few row widths, and takes it when
it is cheaper: a pass of 64 short sentences fills rows of 128 tokens to ~92% in one forward, where its best split into
padded forwards was ~70-76% real tokens in 3-6 forwards.

Widths are rounded up to a multiple of WIDTH_STEP and row counts taken from ROW_COUNTS, so the shapes a server meets
repeat: OpenVINO prepares each new input shape on its first run (measured on the EPYC: a pass of 32 reviews on the
Tiny classifier in forwards of 8 ran at 583 sentences/s the first time and 1,005 once its shapes were known; rounded
to 16-token widths, 1,002 the first time).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from ..packing import pack_rows

WIDTH_STEP = 16  # padded widths are multiples of this (up to the model's longest input)
ROW_COUNTS = (1, 2, 4, 8, 16, 32, 64)  # rows per forward
REPEATS = 5  # each timed forward runs once to prepare its shape, then this many times; the median counts

Forward = tuple[list[int], int]  # the rows (indices into the pass) and the width they are padded to


@dataclass(frozen=True)
class ForwardCost:
    """Seconds of a forward of `rows` inputs padded to `width` tokens: fixed + rows x width x (per_token + width x
    per_token_width)."""

    fixed: float
    per_token: float
    per_token_width: float

    def of(self, rows: int, width: int) -> float:
        return self.fixed + rows * width * (self.per_token + width * self.per_token_width)


TOKENS_ONLY = ForwardCost(0.0, 1.0, 0.0)  # before the measurement: every split costs its padded tokens


def padded_width(length: int, longest: int) -> int:
    """`length` rounded up to a multiple of WIDTH_STEP, but never beyond `longest` (the model's longest input)."""
    return min(-(-length // WIDTH_STEP) * WIDTH_STEP, max(length, longest))


@dataclass(frozen=True)
class PackedForward:
    """A pass as one forward of packed rows (packing.pack_rows): the inputs of each row, and the rows' width."""

    rows: list[list[int]]
    width: int


# Packed forwards come in few shapes, so that OpenVINO meets each often and its memory levels off: row widths from
# PACKED_WIDTHS (or the model's longest input), row counts rounded up to 4 steps per doubling (`packed_row_count`: at
# most a quarter of the rows empty, ~8% on average). With any row count and 16-token widths, a Tiny server met hundreds
# of shapes and its resident memory kept rising by steps over 100,000 requests (+20 MiB in the second minute) where
# padded forwards stayed flat.
PACKED_WIDTHS = (32, 64, 128, 256, 512)


def packed_row_count(rows: int) -> int:
    """`rows` rounded up to a multiple of 2^(floor(log2 rows) - 2): 1-8 as they are, then 10, 12, 14, 16, 20, ..."""
    step = 1 << max(0, rows.bit_length() - 3)
    return -(-rows // step) * step


def plan(lengths: list[int], cost: ForwardCost, longest: int, packs: bool = False,
         max_tokens: int | None = None) -> list[Forward] | PackedForward:
    """The cheapest way under `cost` to run a pass of inputs of `lengths`: padded forwards (`split`) or, where the
    engine `packs`, one forward of packed rows of the cheapest width that holds the longest input (empty rows added
    up to `packed_row_count`). No forward holds more than `max_tokens` tokens, padding and empty rows included (the
    server's --max-batch-tokens: the batcher bounds a pass by its unrounded lengths, and rounded widths or a packed
    row's power-of-two width could exceed that)."""
    forwards, split_cost = split(lengths, cost, longest, max_tokens)
    if not packs or not lengths:
        return forwards
    widths = [w for w in PACKED_WIDTHS if max(lengths) <= w <= longest] or [longest]
    packed = []
    for width in widths:
        rows = pack_rows(lengths, width)
        rows += [[] for _ in range(packed_row_count(len(rows)) - len(rows))]
        if max_tokens is None or len(rows) * width <= max_tokens:
            packed.append(PackedForward(rows, width))
    best = min(packed, key=lambda p: cost.of(len(p.rows), p.width), default=None)
    return best if best is not None and cost.of(len(best.rows), best.width) < split_cost else forwards


def split(lengths: list[int], cost: ForwardCost, longest: int,
          max_tokens: int | None = None) -> tuple[list[Forward], float]:
    """The cheapest split of rows of `lengths` into padded forwards under `cost`, and its cost, longest rows first:
    each forward holds consecutive rows of the length-sorted order, ROW_COUNTS of them, padded to its first (longest)
    row's `padded_width`, and at most `max_tokens` padded tokens (a forward of one row always fits: the server's
    budget holds its longest input). Dynamic programming over the sorted rows: len(lengths) x len(ROW_COUNTS) steps."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    widths = [padded_width(lengths[i], longest) for i in order]
    best = [0.0] + [float("inf")] * len(order)  # best[end]: the cheapest split of order[:end]
    last = [0] * (len(order) + 1)  # rows of the last forward in that split
    for end in range(1, len(order) + 1):
        for rows in reversed(ROW_COUNTS):  # on a tie, fewer forwards
            if rows > end or (rows > 1 and max_tokens is not None and rows * widths[end - rows] > max_tokens):
                continue
            total = best[end - rows] + cost.of(rows, widths[end - rows])
            if total < best[end]:
                best[end], last[end] = total, rows
    forwards: list[Forward] = []
    end = len(order)
    while end:
        start = end - last[end]
        forwards.append((order[start:end], widths[start]))
        end = start
    return forwards[::-1], best[-1]


def timed_shapes(longest: int) -> list[tuple[int, int]]:
    """(rows, width) of the forwards `measure` times: short and long, few rows and many, within `longest`."""
    return sorted({(2, min(16, longest)), (16, min(64, longest)), (8, max(16, longest // 2)), (4, longest)})


def measure(run: Callable[[int, int], object], longest: int) -> ForwardCost:
    """The cost model fitted (non-negative least squares) to the median times of `run(rows, width)` on
    `timed_shapes(longest)`."""
    shapes, seconds = timed_shapes(longest), []
    for rows, width in shapes:
        run(rows, width)  # the shape's first run
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            run(rows, width)
            times.append(time.perf_counter() - start)
        seconds.append(statistics.median(times))
    terms = np.array([[1.0, rows * width, rows * width * width] for rows, width in shapes])
    scale = terms.max(axis=0)  # columns of similar size for the solver
    coefficients, _ = nnls(terms / scale, np.array(seconds))
    return ForwardCost(*(float(c) for c in coefficients / scale))
