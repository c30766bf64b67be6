"""Numbers with their noise: the one helper every chapter uses to report repeated runs and compare them.

A single training run is one draw: another seed (initialisation, data order) gives another number. The
chapters therefore repeat a comparison over seeds and report the mean with a 95% interval, and they
only call one setting better than another when the interval of the *difference* excludes zero::

    acc = {"max": [0.838, 0.842, 0.835], "average": [0.830, 0.833, 0.829]}   # one value per seed
    summarize(acc["max"])               # Estimate(mean=0.8383, sd=0.0035, n=3, low=0.8296, high=0.8470)
    difference(acc["max"], acc["average"], paired=True)   # the seeds are shared: a paired interval
    ranking(acc)                        # a table; settings whose differences are within noise share a rank
                                        # (all pairs compared, p-values adjusted together by Holm's method)

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


def p_value(a: Sequence[float], b: Sequence[float], *, paired: bool = False) -> float:
    """The two-sided p-value of "mean(a) = mean(b)": a paired t-test when ``a[i]`` and ``b[i]`` share seed
    ``i``, else Welch's. It is below ``1 - confidence`` exactly when :func:`difference`'s interval excludes 0."""
    from scipy.stats import ttest_ind, ttest_rel

    if paired:
        d = [x - y for x, y in zip(a, b)]
        if len(set(d)) == 1:  # no spread: a constant difference is either exactly 0 or certain
            return 1.0 if d[0] == 0 else 0.0
        return float(ttest_rel(a, b).pvalue)
    if len(set(a)) == 1 and len(set(b)) == 1:
        return 1.0 if a[0] == b[0] else 0.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (Holm, 1979) of ``m`` p-values, in their given order.

    The smallest p-value is multiplied by ``m``, the next by ``m - 1``, and so on, each kept at least as
    large as the one before it and at most 1. Calling a comparison significant when its adjusted p-value is
    below ``alpha`` keeps the chance of *any* false "beyond noise" verdict among the ``m`` at most ``alpha``
    (the family-wise error rate), whatever the dependence between them; unadjusted, 78 comparisons at 5%
    would give about 4 false verdicts when nothing differs.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def ranking(runs: Mapping[str, Sequence[float]], *, higher_is_better: bool = True, paired: bool = True,
            confidence: float = 0.95, adjust: str | None = "holm"):
    """A table of settings, best first: mean, sd, interval, and a rank that ties within noise.

    ``runs`` maps a setting to its values, one per seed (in the same seed order for every setting when
    ``paired``). Every pair of settings is compared (a paired t-test, or Welch's), and with ``adjust="holm"``
    (the default) the p-values of all ``k (k - 1) / 2`` comparisons are adjusted together by :func:`holm`:
    a setting gets a worse rank than another only when their adjusted p-value is below ``1 - confidence``;
    "tied with" lists the settings it cannot be told apart from. ``adjust=None`` judges each pair alone
    (its own interval excludes 0), as one planned comparison may be. The table's ``attrs`` say how many
    comparisons were made and how they were adjusted (``table.attrs["comparisons"]``,
    ``table.attrs["adjustment"]``).
    """
    import pandas as pd

    if not runs:
        raise ValueError("ranking needs at least one setting")
    if adjust not in ("holm", None):
        raise ValueError(f"adjust must be 'holm' or None, got {adjust!r}")
    names = sorted(runs, key=lambda k: summarize(runs[k]).mean, reverse=higher_is_better)
    n_min = min(len(v) for v in runs.values())
    paired = paired and n_min >= 2 and len({len(v) for v in runs.values()}) == 1
    pairs = [(x, y) for i, x in enumerate(names) for y in names[i + 1:]]
    raw = [1.0 if min(len(runs[x]), len(runs[y])) < 2 else p_value(runs[x], runs[y], paired=paired)
           for x, y in pairs]  # one run each: nothing can be told apart
    adjusted = dict(zip(pairs, holm(raw) if adjust == "holm" else raw))

    def tied(x: str, y: str) -> bool:
        return x == y or adjusted.get((x, y), adjusted.get((y, x))) >= 1 - confidence

    def better(x: str, y: str) -> bool:  # x beats y beyond noise
        d = summarize(runs[x]).mean - summarize(runs[y]).mean
        return not tied(x, y) and (d > 0 if higher_is_better else d < 0)

    rows = []
    for name in names:
        est = summarize(runs[name], confidence=confidence)
        rows.append({"setting": name, "rank": 1 + sum(better(o, name) for o in names), "mean": est.mean,
                     "sd": est.sd, "low": est.low, "high": est.high, "n": est.n,
                     "tied with": ", ".join(o for o in names if o != name and tied(name, o)) or "-"})
    table = pd.DataFrame(rows).set_index("setting")
    table.attrs.update(comparisons=len(pairs), adjustment="Holm" if adjust == "holm" else "none")
    return table


@dataclass(frozen=True)
class Comparison:
    """One comparison of a family: the interval of ``mean(a) - mean(b)`` (unadjusted, for its size), its
    p-value, the Holm-adjusted p-value over the whole family of ``m`` comparisons, and the verdict."""
    difference: Estimate
    p: float
    adjusted_p: float
    m: int
    beyond_noise: bool

    @property
    def verdict(self) -> str:
        """``"better"``, ``"worse"`` or ``"indistinguishable"``: a in relation to b, after the adjustment."""
        if not self.beyond_noise:
            return "indistinguishable"
        return "better" if self.difference.mean > 0 else "worse"


def compare_family(pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, paired: bool = True,
                   confidence: float = 0.95) -> dict[str, Comparison]:
    """Several comparisons made together, each ``key: (a, b)``, judged together.

    A chapter that reports twelve "is this step better than the last?" verdicts makes twelve chances of a
    false "beyond noise" verdict; this adjusts their p-values together with :func:`holm`, so that the chance
    of any false verdict in the family stays at most ``1 - confidence``. Each :class:`Comparison` keeps the
    unadjusted interval (the size of the difference) beside the adjusted verdict.
    """
    keys = list(pairs)
    raw = [p_value(*pairs[k], paired=paired) if min(len(pairs[k][0]), len(pairs[k][1])) >= 2 else 1.0 for k in keys]
    adjusted = holm(raw)
    out = {}
    for k, p, q in zip(keys, raw, adjusted):
        d = difference(*pairs[k], paired=paired, confidence=confidence)
        out[k] = Comparison(d, p, q, len(keys), q < 1 - confidence)
    return out
