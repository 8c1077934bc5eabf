"""Test scores of arms from finished experiments, and their differences: each arm's mean ± std [95% t-interval],
Welch's interval of every difference with the first arm, and the paired interval over the seeds both share.

    python benchmarks/compare_arms.py runs/e6:tiny+lexicon-input:distill runs/e6:static-trained:baseline ...

An arm is OUT:STUDENT:STRATEGY (a baseline's strategy is `baseline`); its scores are the `test` metric of
OUT/results.jsonl's lines for that student and strategy, by seed. Arms from different folders compare as long as
they share the split (the experiments' identity.json say which files they read).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from miniberts import stats
from miniberts.errors import MinibertsError


def scores(arm: str, metric: str) -> dict[int, float]:
    """{seed: test score} of OUT:STUDENT:STRATEGY."""
    parts = arm.split(":")
    if len(parts) != 3:
        raise MinibertsError(f"{arm}: expected OUT:STUDENT:STRATEGY")
    out, student, strategy = parts
    path = Path(out) / "results.jsonl"
    if not path.is_file():
        raise MinibertsError(f"{path}: no such file (not a finished experiment)")
    found = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["student"] == student and row["strategy"] == strategy:
            found[row["seed"] or 0] = row["test"][metric]
    if not found:
        raise MinibertsError(f"{path}: no line of student {student}, strategy {strategy}")
    return dict(sorted(found.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arms", nargs="+", help="OUT:STUDENT:STRATEGY; the first is compared with each other")
    parser.add_argument("--metric", default="accuracy", help="the test metric (default accuracy)")
    args = parser.parse_args()
    try:
        arms = {arm: scores(arm, args.metric) for arm in args.arms}
    except MinibertsError as e:
        raise SystemExit(f"compare_arms: {e}") from None
    for arm, by_seed in arms.items():
        print(f"{arm}: n = {len(by_seed)}, {stats.interval_text(stats.summarize(list(by_seed.values())), 2)}; "
              f"seeds {by_seed}")
    first, *others = args.arms
    for other in others:
        a, b = arms[first], arms[other]
        w = stats.welch_difference(list(a.values()), list(b.values()))
        print(f"{first} − {other}: Welch n = {w['n'][0]}, {w['n'][1]}: {w['mean']:+.2f} "
              f"[{w['low']:+.2f}, {w['high']:+.2f}] (df {w['df']:.1f})")
        p = stats.paired_difference(a, b)
        if p and p["n"] > 1:
            print(f"{'':>{len(first)}}   paired over seeds {p['paired']}: {p['mean']:+.2f} "
                  f"[{p['low']:+.2f}, {p['high']:+.2f}]")


if __name__ == "__main__":
    main()
