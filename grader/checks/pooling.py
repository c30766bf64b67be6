"""Hidden checks of assignment 1 (``mixed_pooling``): mixed pooling with a fixed and a learned alpha (Lee,
Gallagher & Tu 2016), stochastic pooling (Zeiler & Fergus 2013), LP pooling, and the comparison network,
whose reported rows are trained again and compared."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from grader.checks.base import (build, check_result_row, check_rows_retrained, close, fail, learnable, max_diff,
                                output, quiet, random_input, shape_str)
from grader.checks.integrity import assert_own_work, assert_untampered, reference  # noqa: F401 (the cells call it)
from lib.data import fashion_mnist_loaders
from lib.scratch import windows
from lib.train import fit, seed_everything


@reference
def mixed_pool_reference(x: torch.Tensor, alpha: float | torch.Tensor, kernel_size: int, stride: int | None = None,
                         padding: int = 0) -> torch.Tensor:
    """``alpha * max + (1 - alpha) * avg`` (Lee, Gallagher & Tu 2016); ``alpha`` a number or one per channel."""
    a = torch.as_tensor(alpha, dtype=x.dtype)
    if a.dim() == 1:
        a = a.view(1, -1, 1, 1)  # (1, C, 1, 1)
    return (a * F.max_pool2d(x, kernel_size, stride, padding)
            + (1 - a) * F.avg_pool2d(x, kernel_size, stride, padding))


@reference
def stochastic_pool_expectation(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Zeiler & Fergus's test-time pooling: each activation weighted by its probability ``a_i / sum_j a_j``.

    ``sum_i a_i * a_i / sum_j a_j = sum(a^2) / sum(a)`` over the window; an all-zero window gives 0.
    """
    num = F.avg_pool2d(x * x, kernel_size, stride)
    den = F.avg_pool2d(x, kernel_size, stride)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(den))


@reference
def lp_pool_reference(x: torch.Tensor, p: float, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """``(mean over the window of x^p)^(1/p)`` for non-negative ``x`` (torch's ``F.lp_pool2d`` sums instead)."""
    return F.avg_pool2d(x.pow(p), kernel_size, stride).pow(1.0 / p)


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


@quiet
def check_mixed_pool_fixed(cls: type, *, shape: Sequence[int], kernel_size: int, stride: int | None = None,
                           padding: int = 0, alpha: float = 0.5, seed: int = 0) -> None:
    """``cls(kernel_size, stride=..., padding=..., alpha=...)`` computes ``alpha*max + (1-alpha)*avg``."""
    desc = f"MixedPool2d({kernel_size}, stride={stride}, padding={padding}, alpha={alpha})"
    pool = build(cls, desc, kernel_size, stride=stride, padding=padding, alpha=alpha)
    x = random_input(shape, seed, low=-1.0)
    expected = mixed_pool_reference(x, alpha, kernel_size, stride, padding)
    y = output(pool, x, desc)
    if y.shape != expected.shape:
        fail(f"{desc} gave shape {shape_str(y)} for input {shape_str(x)}, expected {shape_str(expected)}: "
              f"pass kernel_size, stride and padding to both poolings (stride defaults to kernel_size)")
    if not close(y, expected):
        fail(f"{desc} output differs from alpha*max + (1-alpha)*avg by up to {max_diff(y, expected):.3g} "
              f"on input {shape_str(x)}: {_diagnose_mixed(y, x, alpha, kernel_size, stride, padding)}")
    if learnable(pool):
        fail(f"{desc} has learnable parameters, but a fixed alpha must not be trained: "
              f"store it as a plain number (or a buffer)")


def _alpha_of(pool: nn.Module, desc: str) -> torch.Tensor:
    if not hasattr(pool, "alpha"):
        fail(f"{desc} has no attribute `alpha`: expose the current mixing weight(s) in [0, 1] as `self.alpha` "
              f"(a property computed from the unconstrained parameter)")
    return torch.as_tensor(pool.alpha).detach().flatten().double()


@quiet
def check_mixed_pool_learnable(cls: type, *, mode: str, shape: Sequence[int], kernel_size: int = 2,
                               stride: int | None = None, alpha: float = 0.5, seed: int = 0,
                               steps: int = 20) -> None:
    """``learnable="layer"`` trains one alpha, ``"channel"`` one per channel; alpha stays in [0, 1] however
    hard the optimiser pushes, and the output always uses the alpha the module reports."""
    channels = shape[1]
    desc = f"MixedPool2d({kernel_size}, alpha={alpha}, learnable={mode!r}, channels={channels})"
    pool = build(cls, desc, kernel_size, stride=stride, alpha=alpha, learnable=mode, channels=channels)
    params = learnable(pool)
    n_expected = 1 if mode == "layer" else channels
    if not params:
        fail(f"{desc} has no learnable parameters: wrap the (unconstrained) mixing weight in nn.Parameter")
    n_found = sum(p.numel() for p in params)
    if n_found != n_expected:
        fail(f"{desc} has {n_found} learnable numbers, expected {n_expected} "
              f"({'one for the layer' if mode == 'layer' else 'one per channel'})")
    a0 = _alpha_of(pool, desc)
    if a0.numel() != n_expected:
        fail(f"{desc}.alpha has {a0.numel()} values, expected {n_expected}")
    if not torch.allclose(a0, torch.full_like(a0, alpha), atol=1e-4):
        fail(f"{desc}.alpha starts at {a0.tolist()[:4]}, expected {alpha}: initialise the parameter so that "
              f"the constrained value equals alpha (e.g. the logit log(a / (1 - a)) under a sigmoid)")
    x = random_input(shape, seed, low=-1.0)
    for direction in (+1.0, -1.0):  # push alpha hard towards 1, then towards 0
        opt = torch.optim.SGD(params, lr=50.0)
        for _ in range(steps):
            opt.zero_grad()
            y = output(pool, x, desc)
            if y.requires_grad:
                (-direction * y.mean()).backward()
            if not y.requires_grad or any(p.grad is None for p in params):
                fail(f"{desc}: the mixing parameter gets no gradient; compute the output from it "
                      f"(no .item(), .detach() or torch.no_grad() on the way)")
            opt.step()
        a = _alpha_of(pool, desc)
        if not ((a >= 0) & (a <= 1)).all():
            fail(f"{desc}: after {steps} large optimiser steps alpha is {a.tolist()[:4]}, outside [0, 1]: "
                  f"keep it in range by construction, e.g. alpha = sigmoid(parameter)")
        with torch.no_grad():
            y = output(pool, x, desc)
        a_used = a if mode == "channel" else a.reshape(())
        expected = mixed_pool_reference(x, a_used.to(x.dtype), kernel_size, stride)
        if y.shape != expected.shape or not close(y, expected, atol=1e-4):
            fail(f"{desc}: the output does not equal alpha*max + (1-alpha)*avg with the alpha the module reports "
                  f"({a.tolist()[:4]}); max difference {max_diff(y, expected) if y.shape == expected.shape else 'n/a'}"
                  + ("; broadcast the per-channel alpha as (1, C, 1, 1)" if mode == "channel" else ""))
    if mode == "channel" and channels > 1:
        # channels whose max and mean differ by different amounts must move their alphas differently
        x2 = x.clone()
        x2[:, 0] = x2[:, 0].mean()  # channel 0 is constant: max == avg, so its alpha gets no gradient
        pool2 = build(cls, desc, kernel_size, stride=stride, alpha=alpha, learnable=mode, channels=channels)
        opt = torch.optim.SGD(learnable(pool2), lr=1.0)
        opt.zero_grad()
        (-pool2(x2).mean()).backward()
        opt.step()
        a = _alpha_of(pool2, desc)
        if abs(a[0].item() - alpha) > 1e-6 or torch.allclose(a[1:], torch.full_like(a[1:], alpha)):
            fail(f"{desc}: each channel must have its own alpha; a channel whose max equals its mean should "
                  f"keep alpha={alpha} after one step, the others should move (got {a.tolist()[:4]})")


@quiet
def check_stochastic_pool(cls: type, *, shape: Sequence[int], kernel_size: int, stride: int | None = None,
                          seed: int = 0, zero_fraction: float = 0.3) -> None:
    """Zeiler & Fergus 2013: in training each output is one activation of its window, drawn with
    probability proportional to its value; in eval mode the probability-weighted average."""
    s = kernel_size if stride is None else stride
    desc = f"StochasticPool2d({kernel_size}, stride={stride})"
    pool = build(cls, desc, kernel_size, stride=stride)
    x = random_input(shape, seed)
    x = torch.where(random_input(shape, seed + 1) < zero_fraction, torch.zeros_like(x), x)  # ReLU-like zeros
    x[0, 0, :kernel_size, :kernel_size] = 0.0  # at least one all-zero window
    pool.eval()
    with torch.no_grad():
        y = output(pool, x, desc + " in eval mode")
    expected = stochastic_pool_expectation(x, kernel_size, s)
    if y.shape != expected.shape:
        fail(f"{desc} gave shape {shape_str(y)} for input {shape_str(x)}, expected {shape_str(expected)}: "
              f"check the stride (it defaults to kernel_size)")
    if not close(y, expected):
        hint = ("in eval mode return the probability-weighted average sum(a_i * p_i), p_i = a_i / sum(a)"
                if not close(y, F.avg_pool2d(x, kernel_size, s)) else
                "this is the plain average; weight each activation by its probability p_i = a_i / sum(a)")
        if close(y[..., 1:, 1:], expected[..., 1:, 1:]) and not torch.isfinite(y).all():
            hint = "an all-zero window must give 0, not NaN"
        fail(f"{desc} in eval mode differs from the probability-weighted average by up to "
              f"{max_diff(y, expected):.3g}: {hint}")
    pool.train()
    torch.manual_seed(seed)
    y = output(pool, x, desc + " in training mode")
    if y.shape != expected.shape:
        fail(f"{desc} in training mode gave shape {shape_str(y)}, expected {shape_str(expected)}")
    w = windows(x, (kernel_size, kernel_size), (s, s))  # (N, C, oh, ow, k*k)
    hit = ((w - y.detach().unsqueeze(-1)).abs() < 1e-6).any(-1)  # (N, C, oh, ow)
    if not hit.all():
        fail(f"{desc} in training mode returned {int((~hit).sum())} values that are not activations of their "
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
        fail(f"{desc}: over {m} windows (1, 2, 3, 4) the picks had frequencies "
              f"{[round(f, 3) for f in freq.tolist()]}, expected {probs.tolist()}: {what}")


@quiet
def check_lp_pool(cls: type, *, p: float, shape: Sequence[int], kernel_size: int, stride: int | None = None,
                  seed: int = 0, zero_window: bool = False) -> None:
    """``cls(p, kernel_size, stride)`` computes ``(mean x^p)^(1/p)`` and passes gradients; with
    ``zero_window``, a window of zeros (as after a ReLU) gives about 0 and a finite gradient."""
    s = kernel_size if stride is None else stride
    desc = f"LPPool2d(p={p}, kernel_size={kernel_size}, stride={stride})"
    pool = build(cls, desc, p, kernel_size, stride=stride)
    x = random_input(shape, seed, low=0.05).requires_grad_(True)  # after a ReLU; away from 0 for the gradient
    y = output(pool, x, desc)
    expected = lp_pool_reference(x.detach(), p, kernel_size, s)
    if y.shape != expected.shape:
        fail(f"{desc} gave shape {shape_str(y)} for input {shape_str(x)}, expected {shape_str(expected)}: "
              f"check the stride (it defaults to kernel_size)")
    if not close(y, expected):
        if close(y, F.lp_pool2d(x.detach(), p, kernel_size, s)):
            hint = ("this is torch's F.lp_pool2d, which sums over the window; the task asks for the mean "
                    "(divide by the window size inside the root)")
        elif close(y, F.avg_pool2d(x.detach().pow(p), kernel_size, s)):
            hint = "take the 1/p-th root of the mean"
        else:
            hint = "compute (mean over each window of x**p) ** (1/p)"
        fail(f"{desc} differs from (mean x^p)^(1/p) by up to {max_diff(y, expected):.3g}: {hint}")
    y.sum().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or x.grad.abs().sum() == 0:
        fail(f"{desc}: no finite gradient reaches the input; build the output from differentiable torch ops")
    if zero_window:
        x0 = x.detach().clone()
        x0[:, :, :kernel_size, :kernel_size] = 0.0  # the first window is all zeros
        x0.requires_grad_(True)
        y0 = pool(x0)
        if not torch.isfinite(y0).all() or y0[:, :, 0, 0].abs().max() > 0.05:
            fail(f"{desc}: a window of zeros must give (about) 0, got {y0[:, :, 0, 0].flatten()[:3].tolist()}")
        y0.sum().backward()
        if not torch.isfinite(x0.grad).all():
            fail(f"{desc}: a window of zeros gives a NaN or infinite gradient, because the derivative of "
                  f"t^(1/p) is infinite at t = 0: clamp the mean away from zero (mean.clamp_min(1e-12)) "
                  f"before taking the root")


def retrain_row(make_net: Callable, pool: Callable, *, train_subset: int, val_subset: int) -> dict:
    """The task's protocol for one row, run by the grader: seed 0, fresh loaders, one epoch of Adam at 3e-3."""
    seed_everything(0)
    train_loader, val_loader, _ = fashion_mnist_loaders(batch_size=64, test_subset=16, train_subset=train_subset,
                                                        val_subset=val_subset)
    net = make_net(pool)
    history = fit(net, train_loader, val_loader, epochs=1, lr=3e-3, progress=False)
    return {"acc": history.last("val_acc"), "params": sum(p.numel() for p in net.parameters())}


@quiet
def check_pooling_comparison(make_net: Callable, poolings: dict, results: dict | None, *,
                             in_shape: Sequence[int] = (4, 1, 28, 28), num_classes: int = 10,
                             retrain: dict | None = None) -> None:
    """``make_net(pool)`` builds a working network from every pooling factory, calling ``pool(channels)``
    with the channels each layer receives; ``results`` (unless None) has a row per pooling, and with
    ``retrain`` (the subset sizes the notebook trained on) every row is trained again and compared."""
    for name, factory in poolings.items():
        made: list[tuple[int, nn.Module]] = []

        def counting(channels, _factory=factory):
            layer = _factory(channels)
            made.append((channels, layer))
            return layer

        net = make_net(counting)
        if not made:
            fail(f"make_net never called the pooling factory for {name!r}: build each pooling layer "
                  f"with pool(channels)")
        in_net = {id(m) for m in net.modules()}
        if not all(id(layer) in in_net for _, layer in made):
            fail(f"make_net({name!r}) created pooling layers that are not in the returned network: "
                  f"register them (e.g. in nn.Sequential)")
        seen: dict[int, int] = {}

        def record(i: int) -> Callable:
            def hook(module, args) -> None:
                seen.setdefault(i, args[0].shape[1])
            return hook

        hooks = [layer.register_forward_pre_hook(record(i)) for i, (_, layer) in enumerate(made)]
        net.eval()
        with torch.no_grad():
            y = output(net, random_input(in_shape, 0, low=-1.0), f"make_net({name!r})")
        for h in hooks:
            h.remove()
        if tuple(y.shape) != (in_shape[0], num_classes):
            fail(f"make_net({name!r}) gave shape {shape_str(y)} for input {shape_str(in_shape)}, "
                  f"expected {shape_str((in_shape[0], num_classes))}")
        for i, (channels, _) in enumerate(made):
            if i in seen and seen[i] != channels:
                fail(f"make_net({name!r}) built a pooling layer with pool({channels}), but that layer "
                      f"receives {seen[i]} channels: pass the channels of the layer's input")
    if results is None:
        return
    missing = [n for n in poolings if n not in results]
    if missing:
        fail(f"`results` has no row for {missing}: train one network per pooling layer")
    for name in poolings:
        expected_params = sum(p.numel() for p in make_net(poolings[name]).parameters())
        check_result_row(name, results[name], expected_params, "make_net gives")
    if retrain is not None:
        check_rows_retrained(results, list(poolings), lambda name: retrain_row(make_net, poolings[name], **retrain),
                             protocol="seed_everything(0), loaders(), fit(make_net(pool), ..., epochs=1, lr=3e-3)")
