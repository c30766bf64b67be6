"""Checks shared by the graded exercises' test cells and by ``tests/``: one reference backs both.

Every ``check_*`` function takes the student's class or function and the case to try (shapes, strides,
seeds, configurations), computes the expected answer with independent reference code (``torch.nn.functional``,
torchvision, ``lib.analysis`` or the published numbers) and raises :class:`GradingError` with a message
that says what was expected, what was found and where to look::

    stage 3 output is 32x32, expected 16x16: check the shortcut stride

The visible tests in a notebook call these checks on one case; the hidden tests call the same checks on
others, so an answer that only fits the visible case fails there.

The grader's own safety lives at the end of the file:

- :func:`assert_untampered` runs at the top of every test cell, after the cell has re-imported ``lib``
  from disk, and fails when a submission replaced the ``torch`` functions the checks rely on;
- :func:`scan_source` is the autograder's tripwire (see ``nbgrader_config.py``): it finds code that modifies
  the grading environment (imported modules, IPython's hooks, ``sys.modules``, the kernel's life), and
  the autograder disables such cells before it runs the notebook.
"""
from __future__ import annotations

import ast
import functools
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Imported here, not inside the checks: a test cell loads a fresh copy of this module and then gives the
# notebook its own modules back, so everything a check uses must be bound when the fresh copy loads.
from lib.analysis import empirical_receptive_field
from lib.models import efficientnet_b0, resnet50
from lib.models.blocks import SqueezeExcitation, make_shortcut
from lib.models.resnet import ResNet
from lib.models.vgg import VGG_CONFIGS, make_features


class GradingError(AssertionError):
    """A check failed; the message names the expected value, the value found and the likely fix."""


def _fail(message: str) -> None:
    raise GradingError(message)


def _quiet(check: Callable) -> Callable:
    """Run a check with warnings silenced: nbgrader gives zero to a test cell that writes to stderr."""
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return check(*args, **kwargs)
    return wrapper


def _shape(t: torch.Tensor | Sequence[int]) -> str:
    shape = tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t)
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _hw(t: torch.Tensor) -> str:
    return f"{t.shape[-2]}x{t.shape[-1]}"


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    a, b = a.detach().double(), b.detach().double()
    return a.shape == b.shape and bool(((a - b).abs() <= atol + rtol * b.abs()).all())


def _build(cls: Callable, description: str, *args, **kwargs):
    """Call the student's constructor; a TypeError names the signature the task asked for."""
    try:
        return cls(*args, **kwargs)
    except TypeError as e:
        _fail(f"{description} raised TypeError: {e}. Keep the signature given in the task.")


def _output(module: nn.Module | Callable, x: torch.Tensor, description: str) -> torch.Tensor:
    y = module(x)
    if not isinstance(y, torch.Tensor):
        _fail(f"{description} returned {type(y).__name__}, expected a torch.Tensor")
    if not torch.isfinite(y).all():
        _fail(f"{description} returned NaN or inf values (input shape {_shape(x)}): "
              f"look for a division by zero or a power of a negative number")
    return y


def _random(shape: Sequence[int], seed: int, *, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """A reproducible input that does not depend on (or disturb) the global random state."""
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(*shape, generator=g)


def _learnable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------------------
# Assignment 1: mixed, stochastic and LP pooling
# ---------------------------------------------------------------------------------------------------------

def mixed_pool_reference(x: torch.Tensor, alpha: float | torch.Tensor, kernel_size: int, stride: int | None = None,
                         padding: int = 0) -> torch.Tensor:
    """``alpha * max + (1 - alpha) * avg`` (Lee, Gallagher & Tu 2016); ``alpha`` a number or one per channel."""
    a = torch.as_tensor(alpha, dtype=x.dtype)
    if a.dim() == 1:
        a = a.view(1, -1, 1, 1)  # (1, C, 1, 1)
    return (a * F.max_pool2d(x, kernel_size, stride, padding)
            + (1 - a) * F.avg_pool2d(x, kernel_size, stride, padding))


def stochastic_pool_expectation(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Zeiler & Fergus's test-time pooling: each activation weighted by its probability ``a_i / sum_j a_j``.

    ``sum_i a_i * a_i / sum_j a_j = sum(a^2) / sum(a)`` over the window; an all-zero window gives 0.
    """
    num = F.avg_pool2d(x * x, kernel_size, stride)
    den = F.avg_pool2d(x, kernel_size, stride)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(den))


def lp_pool_reference(x: torch.Tensor, p: float, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """``(mean over the window of x^p)^(1/p)`` for non-negative ``x`` (torch's ``F.lp_pool2d`` sums instead)."""
    return F.avg_pool2d(x.pow(p), kernel_size, stride).pow(1.0 / p)


def _diagnose_mixed(y: torch.Tensor, x: torch.Tensor, alpha, k, s, p) -> str:
    """Name the usual mistake when a mixed pooling output is wrong."""
    mx, av = F.max_pool2d(x, k, s, p), F.avg_pool2d(x, k, s, p)
    a = torch.as_tensor(alpha, dtype=x.dtype)
    a = a.view(1, -1, 1, 1) if a.dim() == 1 else a
    if _close(y, (1 - a) * mx + a * av):
        return "alpha weights the average instead of the maximum"
    if _close(y, mx):
        return "this is plain max pooling: mix in the average"
    if _close(y, av):
        return "this is plain average pooling: mix in the maximum"
    if p and _close(y, a * mx + (1 - a) * F.avg_pool2d(x, k, s, p, count_include_pad=False)):
        return "the average leaves the zero padding out; use F.avg_pool2d's default (count_include_pad=True)"
    return "compare your output with alpha * F.max_pool2d(...) + (1 - alpha) * F.avg_pool2d(...)"


@_quiet
def check_mixed_pool_fixed(cls: type, *, shape: Sequence[int], kernel_size: int, stride: int | None = None,
                           padding: int = 0, alpha: float = 0.5, seed: int = 0) -> None:
    """``cls(kernel_size, stride=..., padding=..., alpha=...)`` computes ``alpha*max + (1-alpha)*avg``."""
    desc = f"MixedPool2d({kernel_size}, stride={stride}, padding={padding}, alpha={alpha})"
    pool = _build(cls, desc, kernel_size, stride=stride, padding=padding, alpha=alpha)
    x = _random(shape, seed, low=-1.0)
    expected = mixed_pool_reference(x, alpha, kernel_size, stride, padding)
    y = _output(pool, x, desc)
    if y.shape != expected.shape:
        _fail(f"{desc} gave shape {_shape(y)} for input {_shape(x)}, expected {_shape(expected)}: "
              f"pass kernel_size, stride and padding to both poolings (stride defaults to kernel_size)")
    if not _close(y, expected):
        _fail(f"{desc} output differs from alpha*max + (1-alpha)*avg by up to {_max_diff(y, expected):.3g} "
              f"on input {_shape(x)}: {_diagnose_mixed(y, x, alpha, kernel_size, stride, padding)}")
    if _learnable(pool):
        _fail(f"{desc} has learnable parameters, but a fixed alpha must not be trained: "
              f"store it as a plain number (or a buffer)")


def _alpha_of(pool: nn.Module, desc: str) -> torch.Tensor:
    if not hasattr(pool, "alpha"):
        _fail(f"{desc} has no attribute `alpha`: expose the current mixing weight(s) in [0, 1] as `self.alpha` "
              f"(a property computed from the unconstrained parameter)")
    return torch.as_tensor(pool.alpha).detach().flatten().double()


@_quiet
def check_mixed_pool_learnable(cls: type, *, mode: str, shape: Sequence[int], kernel_size: int = 2,
                               stride: int | None = None, alpha: float = 0.5, seed: int = 0,
                               steps: int = 20) -> None:
    """``learnable="layer"`` trains one alpha, ``"channel"`` one per channel; alpha stays in [0, 1] however
    hard the optimiser pushes, and the output always uses the alpha the module reports."""
    channels = shape[1]
    desc = f"MixedPool2d({kernel_size}, alpha={alpha}, learnable={mode!r}, channels={channels})"
    pool = _build(cls, desc, kernel_size, stride=stride, alpha=alpha, learnable=mode, channels=channels)
    params = _learnable(pool)
    n_expected = 1 if mode == "layer" else channels
    if not params:
        _fail(f"{desc} has no learnable parameters: wrap the (unconstrained) mixing weight in nn.Parameter")
    n_found = sum(p.numel() for p in params)
    if n_found != n_expected:
        _fail(f"{desc} has {n_found} learnable numbers, expected {n_expected} "
              f"({'one for the layer' if mode == 'layer' else 'one per channel'})")
    a0 = _alpha_of(pool, desc)
    if a0.numel() != n_expected:
        _fail(f"{desc}.alpha has {a0.numel()} values, expected {n_expected}")
    if not torch.allclose(a0, torch.full_like(a0, alpha), atol=1e-4):
        _fail(f"{desc}.alpha starts at {a0.tolist()[:4]}, expected {alpha}: initialise the parameter so that "
              f"the constrained value equals alpha (e.g. the logit log(a / (1 - a)) under a sigmoid)")
    x = _random(shape, seed, low=-1.0)
    for direction in (+1.0, -1.0):  # push alpha hard towards 1, then towards 0
        opt = torch.optim.SGD(params, lr=50.0)
        for _ in range(steps):
            opt.zero_grad()
            y = _output(pool, x, desc)
            if y.requires_grad:
                (-direction * y.mean()).backward()
            if not y.requires_grad or any(p.grad is None for p in params):
                _fail(f"{desc}: the mixing parameter gets no gradient; compute the output from it "
                      f"(no .item(), .detach() or torch.no_grad() on the way)")
            opt.step()
        a = _alpha_of(pool, desc)
        if not ((a >= 0) & (a <= 1)).all():
            _fail(f"{desc}: after {steps} large optimiser steps alpha is {a.tolist()[:4]}, outside [0, 1]: "
                  f"keep it in range by construction, e.g. alpha = sigmoid(parameter)")
        with torch.no_grad():
            y = _output(pool, x, desc)
        a_used = a if mode == "channel" else a.reshape(())
        expected = mixed_pool_reference(x, a_used.to(x.dtype), kernel_size, stride)
        if y.shape != expected.shape or not _close(y, expected, atol=1e-4):
            _fail(f"{desc}: the output does not equal alpha*max + (1-alpha)*avg with the alpha the module reports "
                  f"({a.tolist()[:4]}); max difference {_max_diff(y, expected) if y.shape == expected.shape else 'n/a'}"
                  + ("; broadcast the per-channel alpha as (1, C, 1, 1)" if mode == "channel" else ""))
    if mode == "channel" and channels > 1:
        # channels whose max and mean differ by different amounts must move their alphas differently
        x2 = x.clone()
        x2[:, 0] = x2[:, 0].mean()  # channel 0 is constant: max == avg, so its alpha gets no gradient
        pool2 = _build(cls, desc, kernel_size, stride=stride, alpha=alpha, learnable=mode, channels=channels)
        opt = torch.optim.SGD(_learnable(pool2), lr=1.0)
        opt.zero_grad()
        (-pool2(x2).mean()).backward()
        opt.step()
        a = _alpha_of(pool2, desc)
        if abs(a[0].item() - alpha) > 1e-6 or torch.allclose(a[1:], torch.full_like(a[1:], alpha)):
            _fail(f"{desc}: each channel must have its own alpha; a channel whose max equals its mean should "
                  f"keep alpha={alpha} after one step, the others should move (got {a.tolist()[:4]})")


def _windows(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    n, c = x.shape[:2]
    cols = F.unfold(x, kernel_size, stride=stride)  # (N, C*k*k, L)
    return cols.view(n, c, kernel_size * kernel_size, -1)  # (N, C, k*k, L)


@_quiet
def check_stochastic_pool(cls: type, *, shape: Sequence[int], kernel_size: int, stride: int | None = None,
                          seed: int = 0, zero_fraction: float = 0.3) -> None:
    """Zeiler & Fergus 2013: in training each output is one activation of its window, drawn with
    probability proportional to its value; in eval mode the probability-weighted average."""
    s = kernel_size if stride is None else stride
    desc = f"StochasticPool2d({kernel_size}, stride={stride})"
    pool = _build(cls, desc, kernel_size, stride=stride)
    x = _random(shape, seed)
    x = torch.where(_random(shape, seed + 1) < zero_fraction, torch.zeros_like(x), x)  # ReLU-like zeros
    x[0, 0, :kernel_size, :kernel_size] = 0.0  # at least one all-zero window
    pool.eval()
    with torch.no_grad():
        y = _output(pool, x, desc + " in eval mode")
    expected = stochastic_pool_expectation(x, kernel_size, s)
    if y.shape != expected.shape:
        _fail(f"{desc} gave shape {_shape(y)} for input {_shape(x)}, expected {_shape(expected)}: "
              f"check the stride (it defaults to kernel_size)")
    if not _close(y, expected):
        hint = ("in eval mode return the probability-weighted average sum(a_i * p_i), p_i = a_i / sum(a)"
                if not _close(y, F.avg_pool2d(x, kernel_size, s)) else
                "this is the plain average; weight each activation by its probability p_i = a_i / sum(a)")
        if _close(y[..., 1:, 1:], expected[..., 1:, 1:]) and not torch.isfinite(y).all():
            hint = "an all-zero window must give 0, not NaN"
        _fail(f"{desc} in eval mode differs from the probability-weighted average by up to "
              f"{_max_diff(y, expected):.3g}: {hint}")
    pool.train()
    torch.manual_seed(seed)
    y = _output(pool, x, desc + " in training mode")
    if y.shape != expected.shape:
        _fail(f"{desc} in training mode gave shape {_shape(y)}, expected {_shape(expected)}")
    w = _windows(x, kernel_size, s)  # (N, C, k*k, L)
    hit = ((w - y.detach().flatten(2).unsqueeze(2)).abs() < 1e-6).any(2)  # (N, C, L)
    if not hit.all():
        _fail(f"{desc} in training mode returned {int((~hit).sum())} values that are not activations of their "
              f"window: sample one activation per window (do not average)")
    # The sampling frequencies: 4000 copies of the window (1, 2, 3, 4) must pick 4 about 40% of the time.
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    m = 4000
    tile = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    if kernel_size != 2:
        return
    big = tile.repeat(1, m).view(1, 1, 2, 2 * m)  # m windows side by side
    torch.manual_seed(seed + 2)
    with torch.no_grad():
        picks = cls(2, stride=2).train()(big).flatten()
    freq = torch.stack([(picks == v).float().mean() for v in (1.0, 2.0, 3.0, 4.0)])
    if (freq - probs).abs().max() > 0.035:
        what = ("it always picks the maximum (that is max pooling)" if freq[3] > 0.9 else
                "it picks uniformly; weight by the activations" if (freq - 0.25).abs().max() < 0.035 else
                "softmax weights are not the paper's; use p_i = a_i / sum(a)")
        _fail(f"{desc}: over {m} windows (1, 2, 3, 4) the picks had frequencies "
              f"{[round(f, 3) for f in freq.tolist()]}, expected {probs.tolist()}: {what}")


@_quiet
def check_lp_pool(cls: type, *, p: float, shape: Sequence[int], kernel_size: int, stride: int | None = None,
                  seed: int = 0, zero_window: bool = False) -> None:
    """``cls(p, kernel_size, stride)`` computes ``(mean x^p)^(1/p)`` and passes gradients; with
    ``zero_window``, a window of zeros (as after a ReLU) gives about 0 and a finite gradient."""
    s = kernel_size if stride is None else stride
    desc = f"LPPool2d(p={p}, kernel_size={kernel_size}, stride={stride})"
    pool = _build(cls, desc, p, kernel_size, stride=stride)
    x = _random(shape, seed, low=0.05).requires_grad_(True)  # after a ReLU; away from 0 for the gradient
    y = _output(pool, x, desc)
    expected = lp_pool_reference(x.detach(), p, kernel_size, s)
    if y.shape != expected.shape:
        _fail(f"{desc} gave shape {_shape(y)} for input {_shape(x)}, expected {_shape(expected)}: "
              f"check the stride (it defaults to kernel_size)")
    if not _close(y, expected):
        if _close(y, F.lp_pool2d(x.detach(), p, kernel_size, s)):
            hint = ("this is torch's F.lp_pool2d, which sums over the window; the task asks for the mean "
                    "(divide by the window size inside the root)")
        elif _close(y, F.avg_pool2d(x.detach().pow(p), kernel_size, s)):
            hint = "take the 1/p-th root of the mean"
        else:
            hint = "compute (mean over each window of x**p) ** (1/p)"
        _fail(f"{desc} differs from (mean x^p)^(1/p) by up to {_max_diff(y, expected):.3g}: {hint}")
    y.sum().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or x.grad.abs().sum() == 0:
        _fail(f"{desc}: no finite gradient reaches the input; build the output from differentiable torch ops")
    if zero_window:
        x0 = x.detach().clone()
        x0[:, :, :kernel_size, :kernel_size] = 0.0  # the first window is all zeros
        x0.requires_grad_(True)
        y0 = pool(x0)
        if not torch.isfinite(y0).all() or y0[:, :, 0, 0].abs().max() > 0.05:
            _fail(f"{desc}: a window of zeros must give (about) 0, got {y0[:, :, 0, 0].flatten()[:3].tolist()}")
        y0.sum().backward()
        if not torch.isfinite(x0.grad).all():
            _fail(f"{desc}: a window of zeros gives a NaN or infinite gradient, because the derivative of "
                  f"t^(1/p) is infinite at t = 0: clamp the mean away from zero (mean.clamp_min(1e-12)) "
                  f"before taking the root")


@_quiet
def check_pooling_comparison(make_net: Callable, poolings: dict, results: dict | None, *,
                             in_shape: Sequence[int] = (4, 1, 28, 28), num_classes: int = 10) -> None:
    """``make_net(pool)`` builds a working network from every pooling factory, calling ``pool(channels)``
    with the channels each layer receives; ``results`` (unless None) has a row per pooling."""
    for name, factory in poolings.items():
        made: list[tuple[int, nn.Module]] = []

        def counting(channels, _factory=factory):
            layer = _factory(channels)
            made.append((channels, layer))
            return layer

        net = make_net(counting)
        if not made:
            _fail(f"make_net never called the pooling factory for {name!r}: build each pooling layer "
                  f"with pool(channels)")
        in_net = {id(m) for m in net.modules()}
        if not all(id(layer) in in_net for _, layer in made):
            _fail(f"make_net({name!r}) created pooling layers that are not in the returned network: "
                  f"register them (e.g. in nn.Sequential)")
        seen: dict[int, int] = {}

        def record(i: int) -> Callable:
            def hook(module, args) -> None:
                seen.setdefault(i, args[0].shape[1])
            return hook

        hooks = [layer.register_forward_pre_hook(record(i)) for i, (_, layer) in enumerate(made)]
        net.eval()
        with torch.no_grad():
            y = _output(net, _random(in_shape, 0, low=-1.0), f"make_net({name!r})")
        for h in hooks:
            h.remove()
        if tuple(y.shape) != (in_shape[0], num_classes):
            _fail(f"make_net({name!r}) gave shape {_shape(y)} for input {_shape(in_shape)}, "
                  f"expected {_shape((in_shape[0], num_classes))}")
        for i, (channels, _) in enumerate(made):
            if i in seen and seen[i] != channels:
                _fail(f"make_net({name!r}) built a pooling layer with pool({channels}), but that layer "
                      f"receives {seen[i]} channels: pass the channels of the layer's input")
    if results is None:
        return
    missing = [n for n in poolings if n not in results]
    if missing:
        _fail(f"`results` has no row for {missing}: train one network per pooling layer")
    for name in poolings:
        row = results[name]
        for key in ("acc", "seconds", "params"):
            if key not in row:
                _fail(f"results[{name!r}] has no {key!r}: record accuracy, training seconds and parameters")
        if not 0.0 <= float(row["acc"]) <= 1.0:
            _fail(f"results[{name!r}]['acc'] is {row['acc']}, expected a fraction in [0, 1]")
        if not float(row["seconds"]) > 0:
            _fail(f"results[{name!r}]['seconds'] is {row['seconds']}, expected the training time in seconds")
        expected_params = sum(p.numel() for p in make_net(poolings[name]).parameters())
        if int(row["params"]) != expected_params:
            _fail(f"results[{name!r}]['params'] is {row['params']}, but make_net gives {expected_params}")


# ---------------------------------------------------------------------------------------------------------
# Assignment 2: receptive fields
# ---------------------------------------------------------------------------------------------------------

# Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019, Table 1:
# the field of the last feature map at 224x224. ResNet-50 "v1" has the stride on the first 1x1 of a bottleneck.
PUBLISHED_FIELDS = {"vgg16": 212, "resnet50_v1": 483}
# torchvision's ResNet-50 ("v1.5", the stride on the 3x3) and EfficientNet-B0 (squeeze-excitation's global
# pooling left out), measured with lib.analysis.empirical_receptive_field on inputs large enough for the
# field to fit; tests/test_nbgrader_checks.py measures them again.
MEASURED_FIELDS = {"resnet50": 427, "efficientnet_b0": 851}


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _window_geometry(m: nn.Module):
    """(kernel, stride, padding, dilation) as (h, w) pairs, and ceil_mode, of a sliding-window module."""
    if isinstance(m, nn.Conv2d):
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        p = {"same": tuple(di * (ki - 1) // 2 for ki, di in zip(k, d)), "valid": (0, 0)}.get(m.padding, m.padding)
        return k, _pair(m.stride), _pair(p), d, False
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(m.kernel_size)
        return (k, _pair(m.stride or m.kernel_size), _pair(m.padding), _pair(getattr(m, "dilation", 1)),
                m.ceil_mode)
    return None


def chain_field_reference(layers: Sequence[nn.Module], input_hw: Sequence[int]) -> dict:
    """The textbook recursion over a chain of layers, per axis (Araujo et al. 2019, eqs. 1-3 written forward):
    ``r += (d(k-1)) * j``, ``start += (d(k-1)/2 - p) * j``, ``j *= s``; layers without a window keep the field.
    Returns ``size``, ``jump``, ``start`` and ``n`` (units per axis), each an (h, w) pair."""
    r, j, start, n = [1, 1], [1, 1], [0.0, 0.0], list(input_hw)
    for m in layers:
        g = _window_geometry(m)
        if g is None:
            continue
        (k, s, p, d, ceil) = g
        for a in range(2):
            span = d[a] * (k[a] - 1) + 1
            out = (n[a] + 2 * p[a] - span) / s[a] + 1
            out = math.ceil(out) if ceil else math.floor(out)
            if ceil and (out - 1) * s[a] >= n[a] + p[a]:
                out -= 1  # PyTorch drops a last window that would start in the padding
            r[a] += (span - 1) * j[a]
            start[a] += ((span - 1) / 2 - p[a]) * j[a]
            j[a] *= s[a]
            n[a] = out
    return {"size": tuple(r), "jump": tuple(j), "start": tuple(start), "n": tuple(n)}


def random_chain(seed: int, *, channels: int = 2) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """A random chain of convolutions and poolings (kernels, strides, paddings, dilations, non-square ones,
    ceil_mode) and an input size it accepts: the hidden tests' supply of cases nobody fitted by hand."""
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    for _ in range(100):  # draw until the chain accepts its input (no window larger than its padded input)
        model, size = _draw_chain(pick, g, channels)
        try:
            with torch.no_grad():
                model(torch.zeros(1, *size))
        except RuntimeError:
            continue
        return model, size
    raise RuntimeError(f"random_chain({seed}) found no valid chain")  # pragma: no cover


def _draw_chain(pick: Callable, g: torch.Generator, channels: int) -> tuple[nn.Sequential, tuple[int, int, int]]:
    layers: list[nn.Module] = []
    for _ in range(int(torch.randint(3, 7, (1,), generator=g))):
        kind = pick(["conv", "conv", "conv", "max", "avg"])
        if kind == "conv":
            k = pick([1, 2, 3, 3, 5, (1, 3), (3, 1), (5, 3)])
            kh, kw = _pair(k)
            d = pick([1, 1, 2, 3])
            layers.append(nn.Conv2d(channels, channels, k, stride=pick([1, 1, 2, (1, 2), (2, 1)]),
                                    padding=(int(torch.randint(0, d * (kh - 1) // 2 + 1, (1,), generator=g)),
                                             int(torch.randint(0, d * (kw - 1) // 2 + 1, (1,), generator=g))),
                                    dilation=d))
        else:
            k = pick([2, 3])
            pool = nn.MaxPool2d if kind == "max" else nn.AvgPool2d
            layers.append(pool(k, stride=pick([1, 2, k]), padding=pick([0, k // 2]), ceil_mode=pick([False, True])))
        layers.append(nn.ReLU())
    h = 30 + int(torch.randint(0, 15, (1,), generator=g))
    w = 30 + int(torch.randint(0, 15, (1,), generator=g))
    return nn.Sequential(*layers), (channels, h, w)


def _as_field(result, desc: str):
    for attr in ("size", "jump", "centers"):
        if not hasattr(result, attr):
            _fail(f"{desc} returned {type(result).__name__} without `{attr}`: return a Field(size=..., jump=..., "
                  f"centers=...)")
    size, jump = tuple(int(v) for v in result.size), tuple(int(v) for v in result.jump)
    if len(size) != 2 or len(jump) != 2 or len(result.centers) != 2:
        _fail(f"{desc}: size, jump and centers must be (height, width) pairs, got size={result.size}, "
              f"jump={result.jump} and {len(result.centers)} lists of centres")
    return size, jump, (tuple(float(c) for c in result.centers[0]), tuple(float(c) for c in result.centers[1]))


def _chain_hint(layers: Sequence[nn.Module], input_hw, size) -> str:
    """Name the usual mistake by recomputing the chain with it."""
    def variant(transform):
        return chain_field_reference([transform(m) for m in layers], input_hw)["size"]

    def no_dilation(m):
        if isinstance(m, nn.Conv2d) and m.dilation != (1, 1):
            return nn.Conv2d(1, 1, m.kernel_size, m.stride, 0)
        return m

    r, j = [1, 1], [1, 1]  # forgetting the jump: every layer adds k - 1
    for m in layers:
        geometry = _window_geometry(m)
        if geometry:
            for a in range(2):
                r[a] += geometry[3][a] * (geometry[0][a] - 1)
    if tuple(size) == tuple(r):
        return "each layer adds (k - 1) input pixels times the jump (the product of the strides before it)"
    if tuple(size) == variant(no_dilation):
        return "a dilated kernel spans d * (k - 1) + 1 pixels"
    return "walk the layers in order: r += d*(k-1)*j, then j *= s"


@_quiet
def check_rf_chain(fn: Callable, model: nn.Sequential, input_size: Sequence[int], *, centers: bool = False) -> None:
    """``fn(model, input_size)`` on a chain of layers: size and jump (and with ``centers``, the centre of
    every output unit) equal the textbook recursion."""
    hw = tuple(input_size[-2:])
    expected = chain_field_reference(list(model), hw)
    described = ", ".join(repr(m) for m in model if _window_geometry(m) is not None)
    desc = f"compute_receptive_field on [{described}] with input {tuple(input_size)}"
    size, jump, (ys, xs) = _as_field(fn(model, tuple(input_size)), desc)
    if size != expected["size"]:
        _fail(f"{desc}: size {size}, expected {expected['size']}: {_chain_hint(list(model), hw, size)}")
    if jump != expected["jump"]:
        _fail(f"{desc}: jump {jump}, expected {expected['jump']}: the jump is the product of the strides "
              f"(per axis: a stride (1, 2) moves 1 pixel down and 2 across)")
    if not centers:
        return
    if (len(ys), len(xs)) != expected["n"]:
        with torch.no_grad():
            shape = model(torch.zeros(1, *input_size[-3:])).shape[-2:]
        _fail(f"{desc}: {len(ys)}x{len(xs)} centres, but the output is {shape[0]}x{shape[1]}: one centre per "
              f"output row and column (mind ceil_mode)")
    for axis, got, start, step in (("row", ys, expected["start"][0], expected["jump"][0]),
                                   ("column", xs, expected["start"][1], expected["jump"][1])):
        want = [start + i * step for i in range(len(got))]
        if any(abs(a - b) > 1e-6 for a, b in zip(got, want)):
            offset = got[0] - want[0]
            hint = ("padding shifts the first centre back by p * jump" if offset != 0 and all(
                abs(a - b - offset) < 1e-6 for a, b in zip(got, want)) else
                "centre of unit i = start + i * jump, with start += ((d*(k-1))/2 - p) * jump at each layer")
            _fail(f"{desc}: the {axis} centres start {[round(c, 2) for c in got[:3]]}, expected "
                  f"{[round(c, 2) for c in want[:3]]} (pixel i of the input is centred at i): {hint}")


class _ResidualNet(nn.Module):
    """stem -> residual block (identity) -> residual block with a strided branch and a 1x1 shortcut."""

    def __init__(self, width: int, k: int, dilation: int):
        super().__init__()
        p = dilation * (k - 1) // 2
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.a1 = nn.Conv2d(width, width, k, padding=p, dilation=dilation)
        self.a2 = nn.Conv2d(width, width, 3, padding=1)
        self.b1 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.b2 = nn.Conv2d(width, width, k, padding=p, dilation=dilation)
        self.shortcut = nn.Conv2d(width, width, 1, stride=2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.a2(F.relu(self.a1(x))))
        return F.relu(self.shortcut(x) + self.b2(F.relu(self.b1(x))))


class _InceptionNet(nn.Module):
    """Four concatenated branches (1x1; 3x3; two 3x3; 3x3 max pooling then 1x1), a functional average pooling,
    and a second, dilated module: the field is the largest over the branches."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.b1 = nn.Conv2d(3, width, 1)
        self.b2 = nn.Conv2d(3, width, 3, padding=1)
        self.b3 = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(3, width, 1))
        self.c1 = nn.Conv2d(4 * width, width, 3, padding=dilation, dilation=dilation)
        self.c2 = nn.Conv2d(4 * width, width, 1)

    def forward(self, x):
        x = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)
        x = F.avg_pool2d(x, 2)
        return torch.cat([self.c1(x), self.c2(x)], 1)


class _GatedNet(nn.Module):
    """Convolutions with a squeeze-and-excitation gate: the gate's global pooling does not count."""

    def __init__(self, width: int, k: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, k, stride=2, padding=k // 2)
        self.se = SqueezeExcitation(width, max(1, width // 4))
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.se(F.relu(self.conv1(x))))


class _DilatedSum(nn.Module):
    """Parallel dilated 3x3 convolutions, summed (as in DeepLab's atrous spatial pyramid)."""

    def __init__(self, width: int, rates: Sequence[int]):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.branches = nn.ModuleList(nn.Conv2d(width, width, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x):
        x = self.stem(x)
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


def branching_model(kind: str, **options) -> nn.Module:
    """The branching networks the tests trace: ``residual`` (width, k, dilation), ``inception`` (width,
    dilation), ``gated`` (width, k: squeeze-excitation), ``dilated`` (width, rates)."""
    builders = {"residual": lambda width=4, k=3, dilation=1: _ResidualNet(width, k, dilation),
                "inception": lambda width=2, dilation=2: _InceptionNet(width, dilation),
                "gated": lambda width=4, k=3: _GatedNet(width, k),
                "dilated": lambda width=2, rates=(1, 2, 4): _DilatedSum(width, rates)}
    return builders[kind](**options).eval()


@_quiet
def check_rf_graph(fn: Callable, model: nn.Module, input_size: Sequence[int], *, name: str = "model") -> None:
    """``fn`` on a branching network: the size and jump, and the centre of the middle output unit, equal
    what ``lib.analysis.empirical_receptive_field`` measures (``input_size`` must leave that unit's field
    inside the image)."""
    desc = f"compute_receptive_field on the {name} network with input {tuple(input_size)}"
    size, jump, (ys, xs) = _as_field(fn(model, tuple(input_size)), desc)
    measured = empirical_receptive_field(model, (1, *input_size[-3:]))
    if measured.clipped:  # pragma: no cover - a wrong case in a test cell, not a student's mistake
        raise ValueError(f"{name}: the measured field is clipped at {tuple(input_size)}; use a larger input")
    with torch.no_grad():
        out_hw = tuple(model(torch.zeros(1, *input_size[-3:])).shape[-2:])
    if size != measured.size:
        if size[0] >= input_size[-2] and measured.size[0] < input_size[-2]:
            hint = ("the field covers the whole input: a squeeze-excitation gate's global pooling does not count "
                    "(skip the inputs that come from global pooling where paths meet)")
        elif size < measured.size:
            hint = ("where paths meet (+, torch.cat, *) keep the largest field over all incoming paths, and "
                    "follow functional calls such as F.avg_pool2d too")
        else:
            hint = "a layer counts only on the paths that go through it"
        _fail(f"{desc}: size {size}, but the gradient-based field (lib.analysis.empirical_receptive_field) "
              f"is {measured.size}: {hint}")
    if (len(ys), len(xs)) != out_hw:
        _fail(f"{desc}: {len(ys)}x{len(xs)} centres, but the output is {out_hw[0]}x{out_hw[1]}")
    i, j = measured.unit
    got = (ys[i], xs[j])
    if any(abs(a - b) > 1e-6 for a, b in zip(got, measured.center)):
        _fail(f"{desc}: unit {measured.unit} is centred at {got}, but its measured field is centred at "
              f"{measured.center}: check the start offsets (padding) on every path")
    if len(ys) > 1 and abs((ys[1] - ys[0]) - jump[0]) > 1e-6:
        _fail(f"{desc}: neighbouring centres are {ys[1] - ys[0]} pixels apart but the jump is {jump[0]}")
    far = empirical_receptive_field(model, (1, *input_size[-3:]), unit=(i, min(j + 1, out_hw[1] - 1)))
    if not far.clipped and abs(xs[far.unit[1]] - far.center[1]) > 1e-6:
        _fail(f"{desc}: unit {far.unit} is centred at x={xs[far.unit[1]]}, measured {far.center[1]}: "
              f"the jump {jump[1]} is wrong")


class _BottleneckV1(nn.Module):
    """ResNet v1's bottleneck: the stride on the first 1x1 (He et al. 2015; TF-slim's resnet_v1_50)."""

    expansion = 4

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        width = c_out // 4
        self.conv1 = nn.Conv2d(c_in, width, 1, stride, bias=False)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.relu = nn.ReLU()
        self.downsample = make_shortcut(c_in, c_out, stride, "B")

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.relu(self.conv2(self.relu(self.conv1(x))))) + identity)


def model_stages(model: nn.Module) -> dict[str, nn.Module]:
    """``lib``'s VGG, ResNet or EfficientNet cut after each stage, as modules ``torch.fx`` can trace
    (``forward_features`` checks its input with Python ``if``s, which symbolic tracing cannot follow).

    Recognised by structure, not class, so that models built before a test cell reloaded ``lib`` work too:
    ``stage_names`` (ResNet), ``features`` with max pooling (VGG: a stage ends at each pooling), ``features``
    (EfficientNet: each entry is a stage).
    """
    if hasattr(model, "stage_names"):
        stem = [model.conv1, model.bn1, model.relu, model.maxpool]
        out = {"stem": nn.Sequential(*stem)}
        for n, name in enumerate(model.stage_names):
            out[name] = nn.Sequential(*stem, *(getattr(model, s) for s in model.stage_names[:n + 1]))
        return out
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        cuts = [i + 1 for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        if cuts:
            return {f"pool{n + 1}": features[:c] for n, c in enumerate(cuts)}
        return {f"features.{i}": features[:i + 1] for i in range(len(features))}
    raise TypeError(f"model_stages knows lib's VGG, ResNet and EfficientNet, not {type(model).__name__}")


class _VGGFeatures(nn.Module):
    """VGG-16's feature extractor without its 124M-parameter classifier, which takes seconds to initialise."""

    def __init__(self):
        super().__init__()
        self.features = make_features(VGG_CONFIGS["vgg16"])


_BUILDERS = {"vgg16": _VGGFeatures, "resnet50": resnet50, "efficientnet_b0": efficientnet_b0,
             "resnet50_v1": lambda: ResNet(_BottleneckV1, (3, 4, 6, 3))}


def published_feature_extractor(name: str) -> nn.Module:
    """The feature extractors whose fields :data:`PUBLISHED_FIELDS` and :data:`MEASURED_FIELDS` give."""
    return list(model_stages(_BUILDERS[name]().eval()).values())[-1]


@_quiet
def check_rf_published(fn: Callable, name: str, *, input_size: Sequence[int] = (3, 224, 224)) -> None:
    """``fn`` reproduces the field of a whole network: Araujo et al.'s published values, or the measured ones."""
    expected = {**PUBLISHED_FIELDS, **MEASURED_FIELDS}[name]
    source = ("Araujo et al. 2019 publish" if name in PUBLISHED_FIELDS
              else "lib.analysis.empirical_receptive_field measures")
    desc = f"compute_receptive_field on {name}'s feature extractor at {tuple(input_size)}"
    size, jump, (ys, xs) = _as_field(fn(published_feature_extractor(name), tuple(input_size)), desc)
    if size != (expected, expected):
        _fail(f"{desc}: size {size}, but {source} {expected}x{expected}"
              + (": where a residual branch and its shortcut meet, keep the larger field" if size[0] < expected else ""))
    if jump != (32, 32):
        _fail(f"{desc}: jump {jump}, expected (32, 32): five stride-2 layers")
    n = input_size[-1] // 32
    if len(xs) != n:
        _fail(f"{desc}: {len(xs)} column centres, expected {n} (the output is {n}x{n})")


@_quiet
def check_rf_stages(fn: Callable, stage_fields: dict, *, input_size: Sequence[int] = (3, 224, 224)) -> None:
    """The per-stage analysis: for each network a dict stage name -> Field, in order, growing, ending at the
    published or measured field, and each entry what ``fn`` gives for that stage."""
    builders = {"VGG-16": (_VGGFeatures, "vgg16"), "ResNet-50": (resnet50, "resnet50"),
                "EfficientNet-B0": (efficientnet_b0, "efficientnet_b0")}
    missing = [k for k in builders if k not in stage_fields]
    if missing:
        _fail(f"stage_fields has no entry for {missing}: analyse all three networks")
    for label, (build, key) in builders.items():
        stages = model_stages(build().eval())
        fields = stage_fields[label]
        if list(fields) != list(stages):
            _fail(f"stage_fields[{label!r}] has the stages {list(fields)}, expected {list(stages)} "
                  f"(use model_stages)")
        sizes = [_as_field(f, f"stage_fields[{label!r}]")[0][0] for f in fields.values()]
        if any(b < a for a, b in zip(sizes, sizes[1:])):
            _fail(f"stage_fields[{label!r}]: the field shrinks from one stage to the next ({sizes})")
        expected = {**PUBLISHED_FIELDS, **MEASURED_FIELDS}[key]
        if sizes[-1] != expected:
            _fail(f"stage_fields[{label!r}] ends at {sizes[-1]}, expected {expected}")
        name, module = list(stages.items())[len(stages) // 2]
        direct = _as_field(fn(module, tuple(input_size)), label)[0]
        if tuple(fields[name].size) != direct:
            _fail(f"stage_fields[{label!r}][{name!r}] is {tuple(fields[name].size)}, but compute_receptive_field "
                  f"gives {direct} for that stage: fill the table from your function")


# ---------------------------------------------------------------------------------------------------------
# Assignment 3: ResNet variants
# ---------------------------------------------------------------------------------------------------------

# Zagoruyko & Komodakis 2016, Table 4: parameters (millions) of WRN-depth-k on CIFAR-10.
WRN_PARAMS_M = {(40, 1): 0.6, (40, 2): 2.2, (40, 4): 8.9, (40, 8): 35.7, (28, 10): 36.5, (28, 12): 52.5,
                (22, 8): 17.2, (22, 10): 26.8, (16, 8): 11.0, (16, 10): 17.1}


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm random statistics and affine parameters, so that a misplaced one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))


def _get(block: nn.Module, name: str, desc: str, names: str) -> nn.Module:
    if not hasattr(block, name):
        _fail(f"{desc} has no `{name}`: name the layers {names}, so that tests and state_dicts find them")
    return getattr(block, name)


def preact_params(c_in: int, c_out: int, stride: int) -> int:
    """BN(c_in), 3x3 conv c_in -> c_out, BN(c_out), 3x3 conv c_out -> c_out, and a 1x1 projection (no bias,
    no BN) where the shape changes, as in the wide-ResNet code."""
    projection = c_in * c_out if (stride != 1 or c_in != c_out) else 0
    return 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + projection


@_quiet
def check_preact_block(cls: type, *, c_in: int, c_out: int, stride: int = 1, hw: Sequence[int] = (8, 8),
                       seed: int = 0) -> None:
    """He et al. 2016's pre-activation block: ``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut``, where the
    shortcut is ``x`` or, when the shape changes, ``downsample(relu(bn1(x)))``; nothing after the sum."""
    desc = f"{getattr(cls, '__name__', 'PreActBlock')}({c_in}, {c_out}, stride={stride})"
    block = _build(cls, desc, c_in, c_out, stride)
    names = "bn1, conv1, bn2, conv2 (and downsample)"
    bn1, conv1, bn2, conv2 = (_get(block, n, desc, names) for n in ("bn1", "conv1", "bn2", "conv2"))
    downsample = getattr(block, "downsample", None)
    if (stride != 1 or c_in != c_out) and downsample is None:
        _fail(f"{desc}: the shape changes, so the shortcut needs a 1x1 convolution with stride {stride} (`downsample`)")
    if stride == 1 and c_in == c_out and downsample is not None:
        _fail(f"{desc}: the shape is kept, so the shortcut is the identity: set downsample = None")
    if getattr(bn1, "num_features", c_in) != c_in:
        _fail(f"{desc}: bn1 has {bn1.num_features} channels, expected {c_in}: in a pre-activation block the first "
              f"BatchNorm normalises the block's input, before conv1")
    n_params = sum(p.numel() for p in block.parameters())
    if n_params != preact_params(c_in, c_out, stride):
        _fail(f"{desc} has {n_params:,} parameters, expected {preact_params(c_in, c_out, stride):,}: two 3x3 "
              f"convolutions without bias, BN({c_in}) and BN({c_out}), and a bias-free 1x1 projection without BN "
              f"only where the shape changes")
    _randomise_norms(block, seed)
    block.eval()
    x = _random((2, c_in, *hw), seed, low=-1.0)  # negative values: a ReLU in the wrong place shows
    with torch.no_grad():
        y = _output(block, x, desc)
        h_out, w_out = (hw[0] + 2 - 3) // stride + 1, (hw[1] + 2 - 3) // stride + 1
        if tuple(y.shape) != (2, c_out, h_out, w_out):
            _fail(f"{desc}: output {_shape(y)} for input {_shape(x)}, expected {_shape((2, c_out, h_out, w_out))}: "
                  f"check the stride of conv1 and of the shortcut, and the channels of conv1/conv2")
        pre = F.relu(bn1(x))
        branch = conv2(F.relu(bn2(conv1(pre))))
        expected = branch + (x if downsample is None else downsample(pre))
        if not _close(y, expected, atol=1e-4):
            if _close(y, F.relu(expected), atol=1e-4):
                hint = "remove the ReLU after the sum: pre-activation blocks leave x + F(x) as it is"
            elif downsample is not None and _close(y, branch + downsample(x), atol=1e-4):
                hint = "the projection shortcut takes the pre-activated input relu(bn1(x)), as in the authors' code"
            else:
                hint = "the order is BN -> ReLU -> conv, twice, then add the shortcut"
            _fail(f"{desc}: output differs from conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut by up to "
                  f"{_max_diff(y, expected):.3g}: {hint}")
    block.train()
    _output(block, x, desc).square().mean().backward()
    silent = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if silent:
        _fail(f"{desc}: no gradient reaches {silent}: every layer must be on the path to the output")


def wrn_params(depth: int, k: int, *, num_classes: int = 10, in_channels: int = 3) -> int:
    """WRN-depth-k: a 3x3 stem to 16 channels, three stages of (depth-4)/6 pre-activation blocks (16k, 32k,
    64k channels), a final BN, and a linear classifier."""
    n = (depth - 4) // 6
    total, c = 9 * in_channels * 16, 16
    for width, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
        total += preact_params(c, width, stride) + (n - 1) * preact_params(width, width, 1)
        c = width
    return total + 2 * c + c * num_classes + num_classes


@_quiet
def check_wide_resnet(cls: type, *, depth: int, k: int, num_classes: int = 10, in_channels: int = 3,
                      hw: Sequence[int] = (32, 32), forward: bool = True) -> None:
    """WRN-depth-k (Zagoruyko & Komodakis 2016): the parameter count of the paper's table (or of the design,
    for configurations it does not list), three stages named layer1..layer3 with (depth-4)/6 blocks each and
    outputs at H, H/2, H/4 with 16k, 32k, 64k channels."""
    desc = f"{getattr(cls, '__name__', 'WideResNet')}({depth}, {k}, num_classes={num_classes}, in_channels={in_channels})"
    model = _build(cls, desc, depth, k, num_classes=num_classes, in_channels=in_channels)
    n_params = sum(p.numel() for p in model.parameters())
    expected = wrn_params(depth, k, num_classes=num_classes, in_channels=in_channels)
    if n_params != expected:
        published = WRN_PARAMS_M.get((depth, k))
        where = f" (the paper's Table 4: {published}M)" if published and num_classes == 10 and in_channels == 3 else ""
        hint = "three stages of (depth - 4) / 6 pre-activation blocks"
        if n_params - expected == 9 * in_channels * (16 * k - 16) + preact_params(16 * k, 16 * k, 1) - preact_params(16, 16 * k, 1):
            hint = "the stem convolution has 16 output channels, not 16k; the first block widens to 16k"
        elif n_params == expected - 2 * 64 * k:
            hint = "a pre-activation network ends with BN and ReLU before the pooling"
        _fail(f"WRN-{depth}-{k} has {n_params:,} parameters, expected {expected:,}{where}: {hint}")
    n = (depth - 4) // 6
    stages = []
    for i in (1, 2, 3):
        stage = _get(model, f"layer{i}", desc, "layer1, layer2, layer3 (the three stages)")
        if len(stage) != n:
            _fail(f"{desc}: layer{i} has {len(stage)} blocks, expected (depth - 4) / 6 = {n}")
        stages.append(stage)
    if not forward:
        return
    shapes: dict[int, tuple[int, ...]] = {}

    def record(i: int) -> Callable:
        def hook(module, args, out) -> None:  # returns None: a hook's return value would replace the output
            shapes.setdefault(i, tuple(out.shape))
        return hook

    hooks = [s.register_forward_hook(record(i)) for i, s in enumerate(stages, 1)]
    model.eval()
    with torch.no_grad():
        y = _output(model, torch.randn(1, in_channels, *hw), desc)
    for h in hooks:
        h.remove()
    for i, (c, f) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 4)), 1):
        want = (1, c, -(-hw[0] // f), -(-hw[1] // f))
        got = shapes.get(i)
        if got is None:
            _fail(f"{desc}: layer{i} did not run in forward")
        if got[1] != want[1]:
            _fail(f"{desc}: stage {i} output has {got[1]} channels, expected {want[1]} ({[16, 32, 64][i - 1]}k)")
        if got[2:] != want[2:]:
            _fail(f"{desc}: stage {i} output is {got[2]}x{got[3]}, expected {want[2]}x{want[3]}: "
                  f"check the shortcut stride (stages 2 and 3 halve the resolution in their first block)")
    if tuple(y.shape) != (1, num_classes):
        _fail(f"{desc}: output {_shape(y)}, expected {_shape((1, num_classes))}")


def _diagnose_state_dict(model: nn.Module, reference: dict, desc: str, twin: str) -> None:
    mine = model.state_dict()
    missing = [k for k in reference if k not in mine]
    unexpected = [k for k in mine if k not in reference]
    if missing or unexpected:
        _fail(f"{desc}: the state_dict keys differ from {twin}'s: missing {missing[:4]}, unexpected "
              f"{unexpected[:4]}: use torchvision's names conv1, bn1, conv2, bn2, conv3, bn3, downsample")
    for key, value in reference.items():
        if tuple(mine[key].shape) != tuple(value.shape):
            hint = ""
            if key.endswith("conv2.weight") and value.shape[1] != mine[key].shape[1]:
                hint = (f": a grouped 3x3 convolution has {value.shape[1]} input channels per group "
                        f"(groups = width / {value.shape[1]})")
            elif key.endswith("conv1.weight") or key.endswith("bn1.weight"):
                hint = ": check the bottleneck width (the channels of the 3x3 convolution)"
            _fail(f"{desc}: {key} has shape {tuple(mine[key].shape)}, {twin} has {tuple(value.shape)}{hint}")


@_quiet
def check_bottleneck_twin(cls: type, *, c_in: int, c_out: int, stride: int = 1, groups: int = 1,
                          base_width: int = 64, seed: int = 0, **block_kwargs) -> None:
    """``cls(c_in, c_out, stride, **block_kwargs)`` equals torchvision's ``Bottleneck(c_in, c_out // 4, stride,
    downsample, groups, base_width)``: its weights load and the outputs agree."""
    import torchvision

    name = getattr(cls, "__name__", None) or getattr(getattr(cls, "func", None), "__name__", "block")
    options = dict(getattr(cls, "keywords", {}) or {}, **block_kwargs)
    desc = f"{name}({c_in}, {c_out}, stride={stride}" + "".join(f", {k}={v}" for k, v in options.items()) + ")"
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
    torch.manual_seed(seed)
    twin = torchvision.models.resnet.Bottleneck(c_in, c_out // 4, stride, downsample, groups, base_width)
    _randomise_norms(twin, seed)
    block = _build(cls, desc, c_in, c_out, stride, **block_kwargs)
    if getattr(type(block), "expansion", None) != 4:
        _fail(f"{desc}: a bottleneck block needs the class attribute expansion = 4 (ResNet reads it)")
    _diagnose_state_dict(block, twin.state_dict(), desc, "torchvision's Bottleneck")
    block.load_state_dict(twin.state_dict())
    block.eval(), twin.eval()
    x = _random((2, c_in, 9, 9), seed, low=-1.0)
    with torch.no_grad():
        y, expected = _output(block, x, desc), twin(x)
    if y.shape != expected.shape or not _close(y, expected, atol=1e-4):
        _fail(f"{desc}: with torchvision's weights the output differs from torchvision's Bottleneck"
              + (f" by up to {_max_diff(y, expected):.3g}" if y.shape == expected.shape else f" in shape {_shape(y)}")
              + ": conv1x1 -> BN -> ReLU -> grouped conv3x3 (stride) -> BN -> ReLU -> conv1x1 -> BN, + shortcut, ReLU")


def _build_without_init(builder: Callable, **kwargs) -> nn.Module:
    """Build on the meta device (no memory, no initialisation: the weights are loaded next), or normally
    if the builder cannot run there."""
    try:
        with torch.device("meta"):
            return builder(**kwargs)
    except Exception:
        return builder(**kwargs)


TWINS = {"wide_resnet50_2": "Wide_ResNet50_2_Weights", "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
         "wide_resnet101_2": "Wide_ResNet101_2_Weights", "resnext101_32x8d": "ResNeXt101_32X8D_Weights"}


@_quiet
def check_torchvision_twin(builder: Callable, name: str, *, num_classes: int = 1000, hw: Sequence[int] = (32, 32),
                           seed: int = 0) -> None:
    """``builder(num_classes=...)`` has torchvision's ``name`` architecture: the parameter count of torchvision's
    weight metadata, its randomly initialised state_dict loads with strict=True, and the logits agree."""
    import torchvision

    desc = f"{getattr(builder, '__name__', 'your builder')}(num_classes={num_classes})"
    torch.manual_seed(seed)
    twin = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)  # random weights, no download
    _randomise_norms(twin, seed)
    model = _build_without_init(builder, num_classes=num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    if num_classes == 1000:
        published = getattr(torchvision.models, TWINS[name]).IMAGENET1K_V1.meta["num_params"]
        if n_params != published:
            _fail(f"{desc} has {n_params:,} parameters, torchvision's {name} has {published:,} (its weights' metadata)")
    _diagnose_state_dict(model, twin.state_dict(), desc, f"torchvision's {name}")
    model.load_state_dict(twin.state_dict(), strict=True, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = builder(num_classes=num_classes)  # something outside the state_dict: build it for real
        model.load_state_dict(twin.state_dict(), strict=True)
    model.eval(), twin.eval()
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y, expected = _output(model, x, desc), twin(x)
    if y.shape != expected.shape or not _close(y, expected, atol=1e-3, rtol=1e-3):
        _fail(f"{desc}: with torchvision's weights the logits differ from {name}'s"
              + (f" by up to {_max_diff(y, expected):.3g}" if y.shape == expected.shape else f" (shape {_shape(y)})")
              + ": compare your block's forward with torchvision.models.resnet.Bottleneck")


@_quiet
def check_variant_comparison(results: dict, builders: dict, *, at_least: int = 2) -> None:
    """``results[name] = {"acc", "seconds", "params"}`` for at least ``at_least`` of the ``builders``."""
    trained = [n for n in builders if n in results]
    if len(trained) < at_least:
        _fail(f"`results` has {len(trained)} of the variants {list(builders)}: train at least {at_least}")
    for name in trained:
        row = results[name]
        for key in ("acc", "seconds", "params"):
            if key not in row:
                _fail(f"results[{name!r}] has no {key!r}: record accuracy, training seconds and parameters")
        if not 0.0 <= float(row["acc"]) <= 1.0:
            _fail(f"results[{name!r}]['acc'] is {row['acc']}, expected a fraction in [0, 1]")
        if not float(row["seconds"]) > 0:
            _fail(f"results[{name!r}]['seconds'] is {row['seconds']}, expected the training time in seconds")
        expected = sum(p.numel() for p in builders[name]().parameters())
        if int(row["params"]) != expected:
            _fail(f"results[{name!r}]['params'] is {row['params']}, but the variant has {expected:,}")


# ---------------------------------------------------------------------------------------------------------
# The grader's own safety
# ---------------------------------------------------------------------------------------------------------

_C_TYPES = (type(len), type(str.join), type(object.__init__), type(object.__eq__))  # builtins, descriptors


def _trusted(obj: object, roots: Sequence[Path]) -> bool:
    """C functions are trusted; a Python function only when its code lives in torch, lib or the stdlib."""
    if isinstance(obj, _C_TYPES):
        return True
    if isinstance(obj, type):  # float, int: a static C type, not a class defined at run time
        return not obj.__flags__ & (1 << 9)  # Py_TPFLAGS_HEAPTYPE
    code = getattr(obj, "__code__", None)
    if code is None:
        return False
    path = Path(code.co_filename).resolve()
    return any(root in path.parents for root in roots)


def _critical() -> dict[str, object]:
    import builtins
    return {
        "torch.allclose": torch.allclose, "torch.isclose": torch.isclose, "torch.equal": torch.equal,
        "torch.Tensor.__eq__": torch.Tensor.__eq__, "torch.Tensor.__sub__": torch.Tensor.__sub__,
        "torch.Tensor.abs": torch.Tensor.abs, "torch.Tensor.all": torch.Tensor.all, "torch.Tensor.any": torch.Tensor.any,
        "torch.Tensor.max": torch.Tensor.max, "torch.Tensor.item": torch.Tensor.item,
        "torch.Tensor.backward": torch.Tensor.backward, "torch.Tensor.numel": torch.Tensor.numel,
        "F.max_pool2d": F.max_pool2d, "F.avg_pool2d": F.avg_pool2d, "F.conv2d": F.conv2d, "F.unfold": F.unfold,
        "F.lp_pool2d": F.lp_pool2d, "nn.Module.__call__": nn.Module.__call__,
        "nn.Module.parameters": nn.Module.parameters, "nn.Module.load_state_dict": nn.Module.load_state_dict,
        "torch.autograd.grad": torch.autograd.grad, "torch.manual_seed": torch.manual_seed,
        "builtins.isinstance": builtins.isinstance, "builtins.abs": builtins.abs, "builtins.len": builtins.len,
        "builtins.sum": builtins.sum, "builtins.all": builtins.all, "builtins.any": builtins.any,
        "builtins.float": builtins.float, "builtins.int": builtins.int, "builtins.round": builtins.round,
        "math.isclose": math.isclose,
    }


def assert_untampered() -> None:
    """Fail when the grading environment was modified at run time.

    Test cells first drop every ``lib`` module from ``sys.modules`` and import ``lib.grading`` again from
    disk, so patched checks do not survive; this function then makes sure that the fresh copy does not
    come from the submission's own folder and that the ``torch`` and builtin functions it relies on are
    still the real ones.
    """
    here = Path(__file__).resolve()
    cwd = Path.cwd().resolve()
    if os.environ.get("NBGRADER_EXECUTION") == "autograde" and cwd in here.parents:
        _fail(f"lib.grading was loaded from the submission's folder ({here}), not from the course's lib: "
              f"remove the `lib` folder next to your notebook")
    roots = [Path(torch.__file__).resolve().parent, here.parent, Path(os.__file__).resolve().parent]
    replaced = [name for name, obj in _critical().items() if not _trusted(obj, roots)]
    if replaced:
        _fail(f"the grading environment was modified at run time ({', '.join(replaced)} replaced): "
              f"restart the kernel and run your notebook without changing torch or Python's builtins")


# The scan: what in a student's cell modifies the grading environment. It is a tripwire, not a sandbox
# (see book/instructors.md): it reads the code without running it, so it sees through IPython magics but
# not through arbitrary obfuscation; every dynamic way in (exec, eval, __import__, getattr on modules'
# dunders, importlib) is itself on the list.
_FORBIDDEN_MODULES = {"builtins", "importlib", "ctypes", "gc", "IPython", "ipykernel", "jupyter_client",
                      "nbgrader", "nbformat", "nbclient", "subprocess", "signal", "shutil", "pty", "runpy",
                      "code", "codeop", "sysconfig", "site", "atexit"}
_FORBIDDEN_NAMES = {"get_ipython": "uses IPython's machinery", "__builtins__": "touches Python's builtins",
                    "__import__": "imports dynamically", "exec": "executes generated code",
                    "eval": "evaluates generated code", "compile": "compiles generated code",
                    "breakpoint": "stops in the debugger", "globals": "edits the namespace dynamically",
                    "vars": "edits a namespace dynamically"}
_FORBIDDEN_ATTRS = {
    "__code__", "__globals__", "__closure__", "__builtins__", "__defaults__", "__kwdefaults__",
    "__subclasses__", "__bases__", "__setattr__", "__delattr__", "__getattribute__", "__import__",
    "f_globals", "f_locals", "f_back", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
    "meta_path", "path_hooks", "path_importer_cache", "settrace", "setprofile", "addaudithook",
    "_exit", "kill", "killpg", "abort", "popen", "fork", "forkpty", "execv", "execve", "execl", "execlp",
    "execvp", "spawnv", "spawnl", "posix_spawn", "write_text", "write_bytes", "rmtree", "removedirs",
    "chmod", "symlink_to", "hardlink_to", "input_transformers_cleanup", "input_transformers_post",
    "ast_transformers", "showtraceback", "displayhook", "excepthook",
}
# Common method names that are only suspicious on an imported module: os.remove, not my_list.remove.
_FOREIGN_ONLY_ATTRS = {"__dict__", "modules", "remove", "unlink", "rename", "replace", "rmdir", "system"}
_ALLOWED_MAGICS = {"matplotlib", "time", "timeit", "config"}
_CRITICAL_ATTR_NAMES = {name.rsplit(".", 1)[-1] for name in _critical()} | {
    "empirical_receptive_field", "count_params", "count_macs", "assert_untampered", "fashion_mnist_loaders"}
_ALLOWED_MODULE_ATTR_PREFIXES = ("torch.backends.", "plt.rcParams", "matplotlib.rcParams", "pd.options.")


@dataclass(frozen=True)
class Finding:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    if isinstance(node, ast.Call):
        inner = _dotted(node.func)
        return None if inner is None else ".".join([inner + "()", *reversed(parts)])
    return None


def imported_names(sources: Sequence[str]) -> set[str]:
    """The names that ``import`` statements bind anywhere in ``sources`` (modules, their classes, functions)."""
    names = set()
    for source in sources:
        tree = _parse(source)
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Import):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names)
    return names


def _parse(source: str) -> ast.AST | None:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        source = TransformerManager().transform_cell(source)
    except Exception:  # pragma: no cover - IPython is always there in the course's environment
        pass
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None  # it will fail when it runs; nothing to scan


def scan_source(source: str, foreign: set[str] | frozenset[str] = frozenset()) -> list[Finding]:
    """What in one cell's code modifies the grading environment; empty when nothing does.

    ``foreign`` are names bound by imports elsewhere in the notebook (see :func:`imported_names`):
    setting or deleting an attribute on them (``torch.allclose = ...``, ``lib.grading.check = ...``,
    ``setattr(F, ...)``) patches code that is not the student's.
    """
    tree = _parse(source)
    if tree is None:
        return []
    foreign = set(foreign) | imported_names([source])
    aliases = set()  # names bound to foreign objects: t = torch
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Name, ast.Attribute)):
            dotted = _dotted(node.value) or "()"
            if "()" not in dotted and dotted.split(".")[0] in foreign:
                aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
    foreign |= aliases
    findings: list[Finding] = []

    def flag(node: ast.AST, message: str) -> None:
        findings.append(Finding(getattr(node, "lineno", 0), message))

    def check_target(target: ast.AST, verb: str) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                check_target(t, verb)
            return
        if isinstance(target, ast.Attribute):
            dotted = _dotted(target) or ""
            root = dotted.split(".")[0]
            if root in foreign and not dotted.startswith(_ALLOWED_MODULE_ATTR_PREFIXES):
                flag(target, f"{verb} `{dotted}`, which belongs to an imported module")
            elif target.attr in _CRITICAL_ATTR_NAMES and root != "self":
                flag(target, f"{verb} `{dotted}`, the name of a function the grader relies on")
        if isinstance(target, ast.Subscript):
            dotted = _dotted(target.value) or ""
            if dotted.split(".")[-1] in ("modules", "__dict__") or dotted.startswith("sys."):
                flag(target, f"{verb} an entry of `{dotted}`")

    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in _FORBIDDEN_MODULES:
                    flag(node, f"imports `{module}`, which can change how the notebook is run or graded")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                check_target(t, "sets")
        elif isinstance(node, ast.Delete):
            for t in node.targets:
                check_target(t, "deletes")
        elif isinstance(node, ast.Name) and node.id in _FORBIDDEN_NAMES:
            if node.id == "get_ipython" and id(node) in called:
                continue  # judged at the call, where the method and the magic's name are known
            flag(node, f"`{node.id}` {_FORBIDDEN_NAMES[node.id]}")
        elif isinstance(node, ast.Attribute) and (node.attr in _FORBIDDEN_ATTRS or node.attr in _FOREIGN_ONLY_ATTRS):
            dotted = _dotted(node) or node.attr
            if node.attr in _FOREIGN_ONLY_ATTRS and ("()" in dotted or dotted.split(".")[0] not in foreign):
                continue  # df.rename(...), pd.DataFrame(...).replace(...): methods of objects, not modules
            flag(node, f"uses `{dotted}`, which reaches into the interpreter, the kernel or the file system")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func) or ""
            if func in ("setattr", "delattr") and node.args:
                target = _dotted(node.args[0]) or ""
                if target.split(".")[0] in foreign:
                    flag(node, f"`{func}` on `{target}`, which belongs to an imported module")
            elif func == "get_ipython":
                if not any(isinstance(o, ast.Attribute) and o.value is node for o in ast.walk(tree)):
                    flag(node, "uses get_ipython(), IPython's machinery")
            elif func.startswith("get_ipython()."):
                method = func.split(".", 1)[1]
                name = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                if not (method in ("run_line_magic", "run_cell_magic") and name in _ALLOWED_MAGICS):
                    what = f"the magic or shell command `{name}`" if name else f"get_ipython().{method}"
                    flag(node, f"uses {what}; only %matplotlib, %time and %timeit are allowed in graded notebooks")
            elif func == "os.open":
                flag(node, "opens a file at the operating system's level (`os.open`)")
            elif func in ("open", "io.open") or func.endswith(".open"):
                position = 1 if func in ("open", "io.open") else 0
                mode = node.args[position] if len(node.args) > position else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
                    if set(mode.value) & set("wax+"):
                        flag(node, f"opens a file for writing (`{func}`)")
                elif mode is not None:
                    flag(node, f"opens a file with a computed mode (`{func}`)")
    return sorted(set(findings), key=lambda f: f.line)
