"""Numbers with their noise: the one helper every chapter uses to report repeated runs and compare them.

A single training run is one draw: another seed (initialisation, data order) gives another number. The
chapters therefore repeat a comparison over seeds and report the mean with a 95% interval, and they
only call one setting better than another when the interval of the *difference* excludes zero::

    acc = {"max": [0.838, 0.842, 0.835], "average": [0.830, 0.833, 0.829]}   # one value per seed
    summarize(acc["max"])               # Estimate(mean=0.8383, sd=0.0035, n=3, low=0.8296, high=0.8470)
    difference(acc["max"], acc["average"], paired=True)   # the seeds are shared: a paired interval
    ranking(acc)                        # a table; settings whose differences are within noise share a rank

With 3 seeds the t-quantile is 4.30, so a 95% interval is wide: that is the honest answer for 3 runs.
For one accuracy measured on n test images, :func:`binomial_interval` gives its sampling interval.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def _t_quantile(confidence: float, df: int) -> float:
    from scipy.stats import t
    return float(t.ppf(0.5 + confidence / 2, df))


@dataclass(frozen=True)
class Estimate:
    """The mean of ``n`` values, their standard deviation and a ``confidence`` interval for the mean."""
    mean: float
    sd: float
    n: int
    low: float
    high: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside the interval (for a difference: the gap is not noise)."""
        return not self.low <= value <= self.high

    def format(self, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        """``"88.5 ± 0.4"``-style text: mean ± half the interval (``scale=100`` for percentages)."""
        if self.n < 2:
            return f"{self.mean * scale:.{digits}f}{unit} (1 run)"
        return f"{self.mean * scale:.{digits}f}{unit} ± {self.half_width * scale:.{digits}f}{unit}"

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.half_width:.2g} ({self.confidence:.0%} interval, n={self.n})"


def summarize(values: Sequence[float], *, confidence: float = 0.95) -> Estimate:
    """Mean, sample standard deviation and the t-interval of the mean of ``values`` (one per seed)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("summarize needs at least one value (one per seed)")
    if not all(math.isfinite(v) for v in xs):
        raise ValueError(f"summarize got a value that is not finite: {xs}")
    mean = sum(xs) / n
    if n == 1:
        return Estimate(mean, float("nan"), 1, float("-inf"), float("inf"), confidence)
    sd = math.sqrt(sum((v - mean) ** 2 for v in xs) / (n - 1))
    half = _t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, sd, n, mean - half, mean + half, confidence)


def difference(a: Sequence[float], b: Sequence[float], *, paired: bool = False,
               confidence: float = 0.95) -> Estimate:
    """The interval of ``mean(a) - mean(b)``.

    ``paired=True`` when ``a[i]`` and ``b[i]`` share seed ``i`` (same data order, same initial weights
    where the architectures allow): the interval is then that of the per-seed differences, which removes
    the noise the two runs share. Otherwise Welch's interval for two independent samples.
    """
    if paired:
        if len(a) != len(b):
            raise ValueError(f"a paired difference needs one value per seed on both sides, got {len(a)} and {len(b)}")
        return summarize([x - y for x, y in zip(a, b)], confidence=confidence)
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        raise ValueError("an unpaired difference needs at least two values on each side")
    va, vb = sa.sd ** 2 / sa.n, sb.sd ** 2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0:
        d = sa.mean - sb.mean
        return Estimate(d, 0.0, sa.n + sb.n, d, d, confidence)
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))  # Welch-Satterthwaite
    from scipy.stats import t
    half = float(t.ppf(0.5 + confidence / 2, df)) * se
    d = sa.mean - sb.mean
    return Estimate(d, se, sa.n + sb.n, d - half, d + half, confidence)


def binomial_interval(correct: int, n: int, *, confidence: float = 0.95) -> Estimate:
    """Wilson's interval for an accuracy of ``correct / n`` measured on ``n`` independent test images."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"binomial_interval needs 0 <= correct <= n and n > 0, got {correct} of {n}")
    from scipy.stats import norm
    z = float(norm.ppf(0.5 + confidence / 2))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, math.sqrt(p * (1 - p)), n, centre - half, centre + half, confidence)


def ranking(runs: Mapping[str, Sequence[float]], *, higher_is_better: bool = True, paired: bool = True,
            confidence: float = 0.95):
    """A table of settings, best first: mean, sd, interval, and a rank that ties within noise.

    ``runs`` maps a setting to its values, one per seed (in the same seed order for every setting when
    ``paired``). A setting gets a worse rank than the best one only when the interval of the difference
    between the two excludes zero; "tied with" lists the settings it cannot be told apart from.
    """
    import pandas as pd

    if not runs:
        raise ValueError("ranking needs at least one setting")
    names = sorted(runs, key=lambda k: summarize(runs[k]).mean, reverse=higher_is_better)
    n_min = min(len(v) for v in runs.values())
    paired = paired and n_min >= 2 and len({len(v) for v in runs.values()}) == 1

    def tied(x: str, y: str) -> bool:
        if x == y:
            return True
        if min(len(runs[x]), len(runs[y])) < 2:
            return True  # one run each: nothing can be told apart
        return not difference(runs[x], runs[y], paired=paired, confidence=confidence).excludes(0.0)

    def better(x: str, y: str) -> bool:  # x beats y beyond noise
        if tied(x, y):
            return False
        d = summarize(runs[x]).mean - summarize(runs[y]).mean
        return d > 0 if higher_is_better else d < 0

    rows = []
    for name in names:
        est = summarize(runs[name], confidence=confidence)
        rows.append({"setting": name, "rank": 1 + sum(better(o, name) for o in names), "mean": est.mean,
                     "sd": est.sd, "low": est.low, "high": est.high, "n": est.n,
                     "tied with": ", ".join(o for o in names if o != name and tied(name, o)) or "-"})
    return pd.DataFrame(rows).set_index("setting")
