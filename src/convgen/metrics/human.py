"""Human judgement: the statistics of a real-vs-fake (2AFC) or opinion-score (MOS) study.

The numbers a study report gives (:mod:`convgen.app.study` collects the answers):

* the rate at which raters took a fake source for real, with a **Wilson** 95% interval over answers (it treats
  every answer as independent) and a **bootstrap** 95% interval over raters (resampling whole raters, so a rater
  who answers many trials alike widens it, as HYPE reports);
* a mean opinion score per source with a Student-t 95% interval over answers and a bootstrap interval over raters;
* response-time summaries.

0.5 judged-real in a 2AFC study means raters could not tell the source from real images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (``(0, 1)`` with no trials)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} not in 0..{n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of a mean (the single value twice for one value; NaNs for none)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return (math.nan, math.nan)
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return (float(x.mean() - half), float(x.mean() + half))


def bootstrap_over_raters(
    per_rater: Mapping[str, Sequence[float]], resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the pooled mean when whole raters are resampled with replacement.

    ``per_rater`` maps a rater to their values (1/0 answers, or scores). Raters with no values are ignored; with
    none left the interval is NaN."""
    groups = [np.asarray(v, dtype=np.float64) for v in per_rater.values() if len(v)]
    if not groups:
        return (math.nan, math.nan)
    sums = np.array([g.sum() for g in groups])
    counts = np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    means = sums[picks].sum(1) / counts[picks].sum(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 0.5 + level / 2])
    return (float(lo), float(hi))


def time_summary(ms: Sequence[float]) -> dict[str, float | int]:
    """Response times: count, median, 10th and 90th percentile and mean, in milliseconds."""
    x = np.asarray(ms, dtype=np.float64)
    if len(x) == 0:
        return {"n": 0}
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return {"n": int(len(x)), "median_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90),
            "mean_ms": float(x.mean())}  # fmt: skip


def _finite(x: float) -> float | None:
    """JSON has no NaN: an undefined number (no answers yet) is None."""
    return None if x is None or math.isnan(x) else float(x)


def judged_real(per_rater: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, object]:
    """A fake source's 2AFC summary from each rater's 1 (took the fake for real) / 0 answers."""
    values = [v for vs in per_rater.values() for v in vs]
    n, k = len(values), int(sum(values))
    return {
        "judged_real_rate": k / n if n else None,
        "ci95": [_finite(v) for v in wilson_interval(k, n)] if n else [None, None],
        "bootstrap_ci95": [_finite(v) for v in bootstrap_over_raters(per_rater, seed=seed)],
        "n": n,
        "raters": sum(1 for v in per_rater.values() if len(v)),
    }


def opinion_score(per_rater: Mapping[str, Sequence[float]], seed: int = 0) -> dict[str, object]:
    """A source's mean opinion score (1-5) with t and rater-bootstrap 95% intervals."""
    values = [v for vs in per_rater.values() for v in vs]
    return {
        "mos": float(np.mean(values)) if values else None,
        "ci95": [_finite(v) for v in t_interval(values)],
        "bootstrap_ci95": [_finite(v) for v in bootstrap_over_raters(per_rater, seed=seed)],
        "n": len(values),
        "raters": sum(1 for v in per_rater.values() if len(v)),
    }
