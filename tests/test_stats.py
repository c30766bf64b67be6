"""lib.stats against scipy's own routines, and lib.train's learning-rate schedule (warm-up, cosine)."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats as sps

from lib import stats
from lib.train import lr_factor, make_scheduler


def test_summarize_is_the_t_interval():
    xs = [0.81, 0.84, 0.835, 0.828]
    est = stats.summarize(xs)
    low, high = sps.t.interval(0.95, len(xs) - 1, loc=sps.tmean(xs), scale=sps.sem(xs))
    assert est.mean == pytest.approx(sum(xs) / 4) and est.sd == pytest.approx(sps.tstd(xs))
    assert (est.low, est.high) == (pytest.approx(low), pytest.approx(high))
    assert stats.summarize([0.5]).n == 1 and math.isinf(stats.summarize([0.5]).high)
    with pytest.raises(ValueError, match="at least one"):
        stats.summarize([])


def test_paired_and_welch_differences_match_scipy():
    a, b = [0.81, 0.84, 0.83], [0.80, 0.82, 0.825]
    paired = stats.difference(a, b, paired=True)
    d = [x - y for x, y in zip(a, b)]
    assert (paired.low, paired.high) == tuple(pytest.approx(v) for v in sps.t.interval(0.95, 2, loc=sum(d) / 3,
                                                                                            scale=sps.sem(d)))
    welch = stats.difference(a, b)
    res = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (welch.low, welch.high) == (pytest.approx(res.low), pytest.approx(res.high))


def test_ranking_ties_what_noise_cannot_separate():
    runs = {"a": [0.90, 0.91, 0.905], "b": [0.80, 0.81, 0.805], "c": [0.90, 0.80, 0.95]}
    table = stats.ranking(runs)
    assert table.loc["a", "rank"] == 1 and table.loc["b", "rank"] == 2
    assert table.loc["c", "rank"] == 1 and "a" in table.loc["c", "tied with"], "c is within noise of a"


def test_holm_matches_statsmodels():
    # statsmodels.stats.multitest.multipletests(p, method="holm")[1] for these p-values (statsmodels 0.14)
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.012]
    assert stats.holm(p) == pytest.approx([0.05, 0.09, 0.09, 0.03, 0.2, 0.05])
    assert stats.holm([]) == [] and stats.holm([0.7]) == [0.7]


def test_p_value_agrees_with_the_interval():
    a, b = [0.81, 0.84, 0.83], [0.80, 0.82, 0.825]
    assert stats.p_value(a, b, paired=True) == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert stats.p_value(a, b) == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    for paired in (True, False):  # p < 0.05 exactly when the 95% interval of the difference excludes 0
        for shift in (0.0, 0.004, 0.01, 0.03):
            c = [x - shift for x in b]
            assert (stats.p_value(a, c, paired=paired) < 0.05) == stats.difference(a, c, paired=paired).excludes(0)
    assert stats.p_value([1, 2, 3], [0, 1, 2], paired=True) == 0.0  # a constant, non-zero difference
    assert stats.p_value([1, 2, 3], [1, 2, 3], paired=True) == 1.0


def test_ranking_adjusts_for_the_number_of_comparisons():
    # Twelve settings that differ only by noise, and one pair whose paired difference is modest: alone,
    # its interval excludes 0; among 78 comparisons, Holm's adjustment keeps it within noise.
    runs = {f"s{i}": [0.80 + 0.01 * ((i * 7 + k * 3) % 5) for k in range(3)] for i in range(11)}
    runs["x"], runs["y"] = [0.85, 0.86, 0.87], [0.84, 0.8505, 0.8595]
    alone = stats.ranking({"x": runs["x"], "y": runs["y"]})
    assert alone.loc["y", "rank"] == 2 and alone.attrs["comparisons"] == 1
    table = stats.ranking(runs)
    assert table.attrs == {"comparisons": 78, "adjustment": "Holm"}
    assert "y" in table.loc["x", "tied with"].split(", ")
    unadjusted = stats.ranking(runs, adjust=None)
    assert unadjusted.attrs["adjustment"] == "none" and "y" not in unadjusted.loc["x", "tied with"].split(", ")
    assert (table["rank"] <= unadjusted["rank"]).all(), "adjusting can only merge ranks, never split them"
    with pytest.raises(ValueError, match="adjust"):
        stats.ranking(runs, adjust="bonferroni")


def test_binomial_interval_is_wilsons():
    est = stats.binomial_interval(90, 100)
    # Wilson's interval for 90/100 at 95%: (0.8256, 0.9448)
    assert (round(est.low, 4), round(est.high, 4)) == (0.8256, 0.9448)


def test_warmup_then_cosine():
    total = 100
    f = [lr_factor(s, total, warmup_steps=10) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[5] == pytest.approx(0.55) and f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert [lr_factor(s, total, warmup_steps=10, warmup="constant") for s in (0, 9, 10)] == [0.1, 0.1, 1.0]
    assert lr_factor(50, total, schedule=None) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, 10, schedule="step")


def test_scheduler_follows_the_factors():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = make_scheduler(opt, 20, warmup_steps=4)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [pytest.approx(0.1 * lr_factor(s, 20, warmup_steps=4)) for s in range(20)]
    assert make_scheduler(opt, 20, schedule=None) is None
    with pytest.raises(ValueError, match="leaves none"):
        make_scheduler(opt, 5, warmup_steps=5)


def test_a_family_of_comparisons_is_adjusted_together():
    a, b = [0.85, 0.86, 0.87], [0.84, 0.8505, 0.8595]          # alone: beyond noise
    noise = [[0.80, 0.83, 0.81], [0.81, 0.80, 0.83]]
    alone = stats.compare_family({"a-b": (a, b)})["a-b"]
    assert alone.beyond_noise and alone.verdict == "better" and alone.m == 1
    assert alone.p == pytest.approx(sps.ttest_rel(a, b).pvalue) and alone.adjusted_p == pytest.approx(alone.p)
    family = stats.compare_family({"a-b": (a, b), **{f"n{i}": tuple(noise) for i in range(99)}})
    assert family["a-b"].m == 100 and family["a-b"].adjusted_p == pytest.approx(min(1.0, 100 * alone.p))
    assert not family["a-b"].beyond_noise and family["a-b"].verdict == "indistinguishable"
    assert family["a-b"].difference == alone.difference, "the interval shown is the unadjusted one"
    assert stats.compare_family({"b-a": (b, a)})["b-a"].verdict == "worse"
