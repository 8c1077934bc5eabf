"""Small-sample statistics for experiment tables: mean ± std over seeds, Student-t intervals, paired differences.

With 3-5 seeds per arm the normal approximation (mean ± 1.96 s/√n) is too narrow: the 95% interval of a mean of n
runs is mean ± t(0.975, n-1) · s/√n, with s the sample standard deviation (ddof 1) and t from scipy.stats.t. Two
arms run with the same seeds (same data order, same head init) are compared by the mean of their per-seed
differences and its t-interval (a paired t-test): the seed-to-seed noise they share cancels. Arms that share no
randomness (a student against model2vec's trainer) or have different seed counts are compared by Welch's interval.
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


def welch_difference(a: list[float], b: list[float], confidence: float = 0.95) -> dict:
    """mean(a) − mean(b) for independent samples of unequal variances: {"n" (len a, len b), "mean", "low", "high",
    "df"}, the Welch-Satterthwaite t-interval (scipy's ttest_ind(equal_var=False))."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's interval needs at least two values per arm")
    sa, sb = summarize(a, confidence), summarize(b, confidence)
    va, vb = sa["std"] ** 2 / len(a), sb["std"] ** 2 / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    mean = sa["mean"] - sb["mean"]
    half = scipy_stats.t.ppf(0.5 + confidence / 2, df) * math.sqrt(va + vb)
    return {"n": (len(a), len(b)), "mean": mean, "low": mean - half, "high": mean + half, "df": df}


def interval_text(s: dict, digits: int = 1) -> str:
    """"74.1 ± 0.6 [73.4, 74.8]" (mean ± std [95% interval]); a single run is just its value."""
    if s["std"] is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} [{s['low']:.{digits}f}, {s['high']:.{digits}f}]"
