"""How the server cuts a pass into forwards (serve/forwards.py): the cheapest split under its cost model, checked
against every split of small passes, and the cost model fitted to timed forwards (on a fake clock, so the test
asserts the arithmetic, not this machine's speed)."""

from __future__ import annotations

import itertools
import random

import pytest

from miniberts.inference.serve import forwards
from miniberts.inference.serve.forwards import ROW_COUNTS, ForwardCost, measure, padded_width, plan, timed_shapes


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
