"""The judge of assignment 1 (``mixed_pooling``): mixed pooling with a fixed and a learned alpha (Lee, Gallagher
& Tu 2016), stochastic pooling (Zeiler & Fergus 2013), LP pooling, and the comparison network.

For each test cell: the hidden cases (``*_cases``, drawn at grading time) and the judge of what the cell's
hidden part reported for them (``judge_*``), against references computed here, in the grader's process.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from grader.checks.base import (check_result_row, check_rows_retrained, close, fail, finite, max_diff, ok,
                                result_table, shape_str, tensor)
from grader.judge import Cell, Check, check
from lib.report import rand
from lib.scratch import windows


def mixed_pool_reference(x: torch.Tensor, alpha, kernel_size: int, stride: int | None = None,
                         padding: int = 0) -> torch.Tensor:
    """``alpha * max + (1 - alpha) * avg`` (Lee, Gallagher & Tu 2016); ``alpha`` a number or one per channel."""
    a = torch.as_tensor(alpha, dtype=x.dtype)
    if a.dim() == 1:
        a = a.view(1, -1, 1, 1)  # (1, C, 1, 1)
    return (a * F.max_pool2d(x, kernel_size, stride, padding)
            + (1 - a) * F.avg_pool2d(x, kernel_size, stride, padding))


def stochastic_pool_expectation(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Zeiler & Fergus's test-time pooling: ``sum(a^2) / sum(a)`` over each window; an all-zero window gives 0."""
    num = F.avg_pool2d(x * x, kernel_size, stride)
    den = F.avg_pool2d(x, kernel_size, stride)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(den))


def lp_pool_reference(x: torch.Tensor, p: float, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """``(mean over the window of x^p)^(1/p)`` for non-negative ``x`` (torch's ``F.lp_pool2d`` sums instead)."""
    return F.avg_pool2d(x.pow(p), kernel_size, stride).pow(1.0 / p)


def _geometry(rng: random.Random) -> dict:
    """A random pooling geometry and an input it accepts."""
    k = rng.choice([2, 3])
    return dict(shape=(rng.randint(1, 3), rng.randint(1, 5), rng.randint(k + 3, 13), rng.randint(k + 3, 13)),
                kernel_size=k, stride=rng.choice([None, 1, 2]))


def _seeded(rng: random.Random, cases: list[dict]) -> list[dict]:
    return [dict(case, seed=rng.randrange(2**31)) for case in cases]


# ---- 1. mixed pooling, fixed alpha ------------------------------------------------------------------------

def mixed_fixed_cases(rng: random.Random) -> list[dict]:
    drawn = dict(_geometry(rng), padding=rng.choice([0, 1]), alpha=round(rng.uniform(0.05, 0.95), 2))
    return _seeded(rng, [
        dict(shape=(2, 3, 8, 8), kernel_size=2, stride=None, padding=0, alpha=0.5),
        dict(shape=(3, 5, 13, 11), kernel_size=3, stride=2, padding=1, alpha=0.7),
        dict(shape=(1, 2, 9, 9), kernel_size=3, stride=None, padding=0, alpha=0.0),
        dict(shape=(1, 2, 9, 7), kernel_size=2, stride=1, padding=0, alpha=1.0), drawn])


def _diagnose_mixed(y: torch.Tensor, x: torch.Tensor, alpha, k, s, p) -> str:
    """Name the usual mistake when a mixed pooling output is wrong."""
    mx, av = F.max_pool2d(x, k, s, p), F.avg_pool2d(x, k, s, p)
    a = torch.as_tensor(alpha, dtype=x.dtype)
    a = a.view(1, -1, 1, 1) if a.dim() == 1 else a
    if close(y, (1 - a) * mx + a * av):
        return "alpha weights the average instead of the maximum"
    if close(y, mx):
        return "this is plain max pooling: mix in the average"
    if close(y, av):
        return "this is plain average pooling: mix in the maximum"
    if p and close(y, a * mx + (1 - a) * F.avg_pool2d(x, k, s, p, count_include_pad=False)):
        return "the average leaves the zero padding out; use F.avg_pool2d's default (count_include_pad=True)"
    return "compare your output with alpha * F.max_pool2d(...) + (1 - alpha) * F.avg_pool2d(...)"


def _fixed_desc(c: dict) -> str:
    return (f"MixedPool2d({c['kernel_size']}, stride={c['stride']}, padding={c['padding']}, alpha={c['alpha']}) "
            f"on {shape_str(c['shape'])}")


def _check_fixed(c: dict, result) -> None:
    desc = _fixed_desc(c)
    out = ok(result, desc)
    x = rand(c["shape"], c["seed"], low=-1.0)
    expected = mixed_pool_reference(x, c["alpha"], c["kernel_size"], c["stride"], c["padding"])
    y = finite(tensor(out["y"], desc), desc)
    if y.shape != expected.shape:
        fail(f"{desc}: shape {shape_str(y)}, expected {shape_str(expected)}: pass kernel_size, stride and padding "
             f"to both poolings (stride defaults to kernel_size)")
    if not close(y, expected):
        fail(f"{desc}: differs from alpha*max + (1-alpha)*avg by up to {max_diff(y, expected):.3g}: "
             f"{_diagnose_mixed(y, x, c['alpha'], c['kernel_size'], c['stride'], c['padding'])}")
    if out["learnable"] != 0:
        fail(f"{desc} has learnable parameters, but a fixed alpha must not be trained: store it as a plain number")


def judge_mixed_fixed(cases: list[dict], results: list) -> list[Check]:
    return [check(_fixed_desc(c), _check_fixed, c, r) for c, r in zip(cases, results)]


# ---- 1. mixed pooling, learned alpha ----------------------------------------------------------------------

def mixed_learnable_cases(rng: random.Random) -> list[dict]:
    drawn = dict(_geometry(rng), mode=rng.choice(["layer", "channel"]), alpha=round(rng.uniform(0.1, 0.9), 2))
    return _seeded(rng, [
        dict(mode="layer", shape=(2, 3, 8, 8), kernel_size=2, stride=None, alpha=0.5),
        dict(mode="channel", shape=(2, 4, 8, 8), kernel_size=2, stride=None, alpha=0.5),
        dict(mode="layer", shape=(3, 2, 10, 12), kernel_size=3, stride=2, alpha=0.2),
        dict(mode="channel", shape=(2, 7, 9, 9), kernel_size=3, stride=None, alpha=0.8), drawn])


def _learnable_desc(c: dict) -> str:
    return f"MixedPool2d({c['kernel_size']}, alpha={c['alpha']}, learnable={c['mode']!r}) on {shape_str(c['shape'])}"


def _check_learnable(c: dict, result) -> None:
    desc = _learnable_desc(c)
    out = ok(result, desc)
    n_expected = 1 if c["mode"] == "layer" else c["shape"][1]
    if out["learnable"] != n_expected:
        fail(f"{desc} has {out['learnable']} learnable numbers, expected {n_expected} "
             f"({'one for the layer' if c['mode'] == 'layer' else 'one per channel'})")
    a0 = tensor(out["alpha0"], desc + ".alpha").flatten()
    if a0.numel() != n_expected or not close(a0, torch.full_like(a0, c["alpha"]), atol=1e-4):
        fail(f"{desc}: alpha starts at {a0.tolist()[:4]}, expected {n_expected} x {c['alpha']}: initialise the "
             f"parameter so that the constrained value equals alpha (the logit log(a / (1 - a)) under a sigmoid)")
    x = rand(c["shape"], c["seed"], low=-1.0)
    for push in ("+1", "-1"):
        a = tensor(out["alpha" + push], desc + ".alpha").flatten()
        if a.numel() != n_expected or not ((a >= 0) & (a <= 1)).all():
            fail(f"{desc}: after 20 large optimiser steps alpha is {a.tolist()[:4]}, outside [0, 1]: keep it in "
                 f"range by construction, e.g. alpha = sigmoid(parameter)")
        expected = mixed_pool_reference(x, a if c["mode"] == "channel" else a.reshape(()), c["kernel_size"], c["stride"])
        y = tensor(out["y" + push], desc)
        if not close(y, expected, atol=1e-4):
            fail(f"{desc}: the output does not equal alpha*max + (1-alpha)*avg with the alpha the module reports "
                 f"({a.tolist()[:4]})" + ("; broadcast the per-channel alpha as (1, C, 1, 1)" if c["mode"] == "channel" else ""))
    if c["mode"] == "channel" and c["shape"][1] > 1:
        a = tensor(out["alpha_one_step"], desc + ".alpha").flatten()
        if a.numel() < 2 or abs(a[0].item() - c["alpha"]) > 1e-6 or close(a[1:], torch.full_like(a[1:], c["alpha"])):
            fail(f"{desc}: each channel must have its own alpha; a channel whose max equals its mean keeps "
                 f"alpha={c['alpha']} after one step, the others move (got {a.tolist()[:4]})")


def judge_mixed_learnable(cases: list[dict], results: list) -> list[Check]:
    return [check(_learnable_desc(c), _check_learnable, c, r) for c, r in zip(cases, results)]


# ---- 2. stochastic pooling ------------------------------------------------------------------------------

def stochastic_cases(rng: random.Random) -> list[dict]:
    return _seeded(rng, [
        dict(shape=(2, 3, 8, 8), kernel_size=2, stride=None, zeros=0.3, frequencies=True),
        dict(shape=(3, 4, 9, 11), kernel_size=3, stride=None, zeros=0.3, frequencies=False),
        dict(shape=(2, 2, 10, 10), kernel_size=3, stride=2, zeros=0.3, frequencies=False),
        dict(_geometry(rng), zeros=round(rng.uniform(0.2, 0.6), 2), frequencies=False)])


def stochastic_input(c: dict) -> torch.Tensor:
    """The case's input: non-negative, with zeros as after a ReLU, and an all-zero first window."""
    x = rand(c["shape"], c["seed"], zeros=c["zeros"])
    x[0, 0, :c["kernel_size"], :c["kernel_size"]] = 0.0
    return x


def _stochastic_desc(c: dict) -> str:
    return f"StochasticPool2d({c['kernel_size']}, stride={c['stride']}) on {shape_str(c['shape'])}"


def _check_stochastic(c: dict, result) -> None:
    desc = _stochastic_desc(c)
    out = ok(result, desc)
    k = c["kernel_size"]
    s = k if c["stride"] is None else c["stride"]
    x = stochastic_input(c)
    expected = stochastic_pool_expectation(x, k, s)
    y = tensor(out["eval"], desc + " in eval mode")
    if y.shape != expected.shape:
        fail(f"{desc}: shape {shape_str(y)}, expected {shape_str(expected)}: check the stride (it defaults to kernel_size)")
    if not close(y, expected):
        hint = ("an all-zero window must give 0, not NaN" if not torch.isfinite(y).all() else
                "this is the plain average; weight each activation by its probability p_i = a_i / sum(a)"
                if close(y, F.avg_pool2d(x, k, s)) else
                "in eval mode return the probability-weighted average sum(a_i * p_i), p_i = a_i / sum(a)")
        fail(f"{desc}: in eval mode differs from the probability-weighted average by up to "
             f"{max_diff(y, expected):.3g}: {hint}")
    y = tensor(out["train"], desc + " in training mode")
    if y.shape != expected.shape:
        fail(f"{desc}: in training mode shape {shape_str(y)}, expected {shape_str(expected)}")
    hit = ((windows(x, (k, k), (s, s)) - y.unsqueeze(-1)).abs() < 1e-6).any(-1)  # (N, C, oh, ow)
    if not hit.all():
        fail(f"{desc}: in training mode {int((~hit).sum())} values are not activations of their window: sample "
             f"one activation per window (do not average)")
    if c["frequencies"]:
        _check_frequencies(tensor(out["picks"], desc).flatten(), desc)


def _check_frequencies(picks: torch.Tensor, desc: str) -> None:
    """4000 windows (1, 2, 3, 4) must pick 4 about 40% of the time."""
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    freq = torch.stack([(picks == v).double().mean() for v in (1.0, 2.0, 3.0, 4.0)])
    if picks.numel() != 4000 or (freq - probs).abs().max() > 0.035:
        what = ("it always picks the maximum (that is max pooling)" if freq[3] > 0.9 else
                "it picks uniformly; weight by the activations" if (freq - 0.25).abs().max() < 0.035 else
                "use p_i = a_i / sum(a)")
        fail(f"{desc}: over 4000 windows (1, 2, 3, 4) the picks had frequencies "
             f"{[round(f, 3) for f in freq.tolist()]}, expected {probs.tolist()}: {what}")


def judge_stochastic(cases: list[dict], results: list) -> list[Check]:
    return [check(_stochastic_desc(c), _check_stochastic, c, r) for c, r in zip(cases, results)]


# ---- 3. LP pooling ----------------------------------------------------------------------------------------

def lp_cases(rng: random.Random) -> list[dict]:
    return _seeded(rng, [
        dict(p=2, shape=(2, 3, 8, 8), kernel_size=2, stride=None, zero_window=False),
        dict(p=3, shape=(3, 2, 9, 9), kernel_size=3, stride=None, zero_window=False),
        dict(p=1, shape=(2, 4, 10, 8), kernel_size=2, stride=1, zero_window=False),
        dict(p=4.5, shape=(1, 3, 11, 11), kernel_size=3, stride=2, zero_window=True),
        dict(_geometry(rng), p=rng.choice([1.5, 2, 2.5, 3, 4]), zero_window=rng.random() < 0.5)])


def _lp_desc(c: dict) -> str:
    return f"LPPool2d(p={c['p']}, kernel_size={c['kernel_size']}, stride={c['stride']}) on {shape_str(c['shape'])}"


def _check_lp(c: dict, result) -> None:
    desc = _lp_desc(c)
    out = ok(result, desc)
    k = c["kernel_size"]
    s = k if c["stride"] is None else c["stride"]
    x = rand(c["shape"], c["seed"], low=0.05).requires_grad_(True)  # after a ReLU; away from 0 for the gradient
    expected = lp_pool_reference(x, c["p"], k, s)
    expected.sum().backward()
    y = tensor(out["y"], desc)
    if y.shape != expected.shape:
        fail(f"{desc}: shape {shape_str(y)}, expected {shape_str(expected)}: check the stride (it defaults to kernel_size)")
    if not close(y, expected):
        hint = ("this is torch's F.lp_pool2d, which sums over the window; the task asks for the mean"
                if close(y, F.lp_pool2d(x.detach(), c["p"], k, s)) else
                "take the 1/p-th root of the mean" if close(y, F.avg_pool2d(x.detach().pow(c["p"]), k, s)) else
                "compute (mean over each window of x**p) ** (1/p)")
        fail(f"{desc}: differs from (mean x^p)^(1/p) by up to {max_diff(y, expected):.3g}: {hint}")
    if not close(tensor(out["grad"], desc + "'s gradient"), x.grad, atol=1e-4):
        fail(f"{desc}: the gradient that reaches the input is not the one of (mean x^p)^(1/p): build the output "
             f"from differentiable torch operations")
    if c["zero_window"]:
        y0, grad0 = tensor(out["y0"], desc), tensor(out["grad0"], desc + "'s gradient")
        if not torch.isfinite(y0).all() or y0.abs().max() > 0.05:
            fail(f"{desc}: a window of zeros must give (about) 0, got {y0.flatten()[:3].tolist()}")
        if not torch.isfinite(grad0).all():
            fail(f"{desc}: a window of zeros gives a NaN or infinite gradient, because the derivative of t^(1/p) "
                 f"is infinite at t = 0: clamp the mean away from zero (mean.clamp_min(1e-12)) before the root")


def judge_lp(cases: list[dict], results: list) -> list[Check]:
    return [check(_lp_desc(c), _check_lp, c, r) for c, r in zip(cases, results)]


# ---- 4. the comparison ----------------------------------------------------------------------------------

POOLINGS = ("max", "average", "mixed, alpha=0.5", "mixed, learned per layer", "mixed, learned per channel",
            "stochastic", "LP, p=3")


def comparison_cases(rng: random.Random) -> list[dict]:
    return _seeded(rng, [dict(width=None, batch=4, retrain=dict(train_subset=128, val_subset=128)),
                         dict(width=rng.choice([5, 6, 8, 12]), batch=rng.randint(2, 4), retrain=None)])


def _check_network(c: dict, out: dict, name: str) -> None:
    desc = f"make_net(POOLINGS[{name!r}]" + (f", width={c['width']})" if c["width"] else ")")
    net = out["nets"].get(name) if isinstance(out.get("nets"), dict) else None
    if not isinstance(net, dict):
        fail(f"{desc}: no result")
    if not net["made"]:
        fail(f"{desc} never called the pooling factory: build each pooling layer with pool(channels)")
    if not net["registered"]:
        fail(f"{desc} created pooling layers that are not in the returned network: register them")
    if net["shape"] != [c["batch"], 10]:
        fail(f"{desc} gave shape {shape_str(net['shape'])} for input {shape_str((c['batch'], 1, 28, 28))}, "
             f"expected {shape_str((c['batch'], 10))}")
    for made, seen in zip(net["made"], net["seen"]):
        if seen is not None and made != seen:
            fail(f"{desc} built a pooling layer with pool({made}), but that layer receives {seen} channels")


def _check_comparison(c: dict, result) -> None:
    out = ok(result, "make_net")
    for name in POOLINGS:
        _check_network(c, out, name)
    if c["retrain"] is None:
        return
    results = result_table(out, POOLINGS, "network per pooling layer")
    for name in POOLINGS:
        check_result_row(name, results[name], out["params"][name], "make_net gives")
    check_rows_retrained(results, out["again"], protocol="seed_everything(0), loaders(), "
                         "fit(make_net(pool), ..., epochs=1, lr=3e-3)")


def judge_comparison(cases: list[dict], results: list) -> list[Check]:
    names = ["make_net with every pooling layer, and the results of its runs, trained again",
             "make_net with another width and batch size"]
    return [check(name, _check_comparison, c, r) for name, c, r in zip(names, cases, results)]


CELLS = {
    "test_mixed_fixed": Cell(mixed_fixed_cases, judge_mixed_fixed),
    "test_mixed_learnable": Cell(mixed_learnable_cases, judge_mixed_learnable),
    "test_stochastic": Cell(stochastic_cases, judge_stochastic),
    "test_lp": Cell(lp_cases, judge_lp),
    "test_comparison": Cell(comparison_cases, judge_comparison),
}
