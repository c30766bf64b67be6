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
