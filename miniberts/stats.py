"""Small-sample statistics for experiment tables: mean ± std over seeds, Student-t intervals, paired differences.

With 3-5 seeds per arm the normal approximation (mean ± 1.96 s/√n) is too narrow: the 95% interval of a mean of n
runs is mean ± t(0.975, n-1) · s/√n, with s the sample standard deviation (ddof 1) and t from scipy.stats.t. Two
arms run with the same seeds (same data order, same head init) are compared by the mean of their per-seed
differences and its t-interval (a paired t-test): the seed-to-seed noise they share cancels.
"""

from __future__ import annotations

import math

from scipy import stats as scipy_stats


def summarize(values: list[float], confidence: float = 0.95) -> dict:
    """{"n", "mean", "std", "low", "high"}: the sample mean, its standard deviation (ddof 1) and the two-sided
    t-interval of the mean. With one value std and the interval are None (no spread can be estimated)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = math.fsum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "low": None, "high": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


def paired_difference(a: dict, b: dict, confidence: float = 0.95) -> dict | None:
    """a − b over the keys (seeds) both have: summarize() of the per-key differences, plus the keys paired.
    None when no key is shared."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    return {**summarize([a[k] - b[k] for k in keys], confidence), "paired": keys}


def interval_text(s: dict, digits: int = 1) -> str:
    """"74.1 ± 0.6 [73.4, 74.8]" (mean ± std [95% interval]); a single run is just its value."""
    if s["std"] is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} [{s['low']:.{digits}f}, {s['high']:.{digits}f}]"
