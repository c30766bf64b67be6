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
            (-direction * y.mean()).backward()
            grads = [p.grad for p in params]
            if any(g is None for g in grads):
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
    if cwd in here.parents or here.parent.parent == cwd:
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
            if node.attr in _FOREIGN_ONLY_ATTRS and dotted.split(".")[0] not in foreign:
                continue
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
