"""How the server cuts a pass into forwards (serve/forwards.py): the cheapest split under its cost model, checked
against every split of small passes, and the cost model fitted to timed forwards (on a fake clock, so the test
asserts the arithmetic, not this machine's speed)."""

from __future__ import annotations

import itertools
import random

import pytest

from miniberts.inference.serve import forwards
from miniberts.inference.serve.forwards import (ROW_COUNTS, ForwardCost, PackedForward, measure, padded_width, plan,
                                                timed_shapes)


def total(split, cost):
    return sum(cost.of(len(rows), width) for rows, width in split)


def every_split(lengths, longest):
    """Every cut of the length-sorted rows into consecutive forwards of ROW_COUNTS rows, as plan's (rows, width)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for cut in itertools.product((False, True), repeat=len(order) - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cut) if c] + [len(order)]
        split = [order[a:b] for a, b in itertools.pairwise(bounds)]
        if all(len(rows) in ROW_COUNTS for rows in split):
            yield [(rows, padded_width(lengths[rows[0]], longest)) for rows in split]


def test_padded_widths_round_up_to_the_step_within_the_longest_input():
    assert [padded_width(n, 512) for n in (3, 16, 17, 100, 250)] == [16, 16, 32, 112, 256]
    assert padded_width(250, 250) == 250 and padded_width(120, 128) == 128 and padded_width(129, 128) == 129


@pytest.mark.parametrize("cost", [ForwardCost(0.0, 1.0, 0.0), ForwardCost(20.0, 1.0, 0.0),
                                  ForwardCost(150.0, 1.0, 0.01), ForwardCost(1000.0, 1.0, 0.0)])
def test_the_plan_is_the_cheapest_split(cost):
    rng = random.Random(int(cost.fixed))
    for n in range(1, 11):
        lengths = [rng.choice([rng.randint(3, 40), rng.randint(3, 128)]) for _ in range(n)]
        split = plan(lengths, cost, 128)
        assert sorted(i for rows, _ in split for i in rows) == list(range(n))  # every row once
        assert all(len(rows) in ROW_COUNTS and all(lengths[i] <= width for i in rows) for rows, width in split)
        assert total(split, cost) == pytest.approx(min(total(s, cost) for s in every_split(lengths, 128)))


def test_a_costly_forward_makes_few_large_ones_a_cheap_one_groups_lengths():
    lengths = [100] * 4 + [10] * 4
    assert [(len(rows), width) for rows, width in plan(lengths, ForwardCost(1000.0, 1.0, 0.0), 128)] == [(8, 112)]
    assert [(len(rows), width) for rows, width in plan(lengths, ForwardCost(1.0, 1.0, 0.0), 128)] == [(4, 112), (4, 16)]
    assert [len(rows) for rows, _ in plan([30] * 64, ForwardCost(50.0, 1.0, 0.0), 128)] == [64]
    assert plan([], ForwardCost(50.0, 1.0, 0.0), 128) == []
    # attention's share: padding long rows costs more than padding short ones
    long_rows = [250] * 2 + [200] * 2
    assert len(plan(long_rows, ForwardCost(300.0, 1.0, 0.0), 256)) == 1
    assert len(plan(long_rows, ForwardCost(300.0, 1.0, 0.05), 256)) == 2


def test_no_forward_holds_more_than_the_batch_budget():
    """The batcher bounds a pass by rows x its longest unrounded length; the forwards pad to rounded widths (and packed
    rows to powers of two, with empty rows), yet none may hold more tokens than --max-batch-tokens."""
    rng = random.Random(0)
    costly_forwards = ForwardCost(1e6, 1.0, 0.0)  # one forward wherever it may: the budget is all that cuts
    for _ in range(200):
        budget = rng.choice([512, 1000, 2048, 4096])
        lengths = []
        while len(lengths) < 64 and max(lengths + [n := rng.randint(3, 512)]) * (len(lengths) + 1) <= budget:
            lengths.append(n)  # what the batcher takes: rows x the longest within the budget
        for packs in (False, True):
            planned = plan(lengths, costly_forwards, 512, packs, budget)
            shapes = [(len(p.rows), p.width)] if isinstance(p := planned, PackedForward) else [
                (len(rows), width) for rows, width in planned]
            assert all(rows * width <= budget for rows, width in shapes), (lengths, budget, shapes)
    # 40 inputs of 400 tokens fit a budget of 16,384 as taken (16,000) but not as packed rows of 512 (20,480), and 16
    # of 500 fit it as taken (8,000) but not padded to 512 in one forward of 16 (8,192 over a budget of 8,000)
    assert not isinstance(plan([400] * 40, costly_forwards, 512, True, 16384), PackedForward)
    assert isinstance(plan([400] * 40, costly_forwards, 512, True), PackedForward)  # without the budget it would be
    assert [len(rows) for rows, _ in plan([500] * 16, costly_forwards, 512, False, 8000)] == [8, 8]
    assert [len(rows) for rows, _ in plan([500] * 16, costly_forwards, 512)] == [16]


def test_the_cost_model_is_fitted_to_timed_forwards(monkeypatch):
    """Forwards that take 2 ms + 1 us per padded token + 4 ns per padded token and width give back those numbers."""
    clock = [0.0]
    monkeypatch.setattr(forwards.time, "perf_counter", lambda: clock[0])
    truth = ForwardCost(0.002, 1e-6, 4e-9)

    def run(rows, width):
        clock[0] += truth.of(rows, width)

    for longest in (512, 128, 40):
        fitted = measure(run, longest)
        assert all(width <= longest for _, width in timed_shapes(longest))
        assert fitted.fixed == pytest.approx(truth.fixed, rel=1e-6)
        assert fitted.per_token == pytest.approx(truth.per_token, rel=1e-6)
        assert fitted.per_token_width == pytest.approx(truth.per_token_width, rel=1e-6)
    assert measure(lambda rows, width: None, 512) == ForwardCost(0.0, 0.0, 0.0)  # nothing to fit: all free
