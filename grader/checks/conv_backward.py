"""The judge of assignment 4 (``conv_backward``): a convolution's forward and backward pass (input, weight and bias
gradients) with stride, padding and dilation, max pooling's forward and backward, and a numerical gradient check,
all from scratch (the cs231n exercise).

For each test cell: the hidden cases (``*_cases``, drawn at grading time) and the judge of what the cell's hidden
part reported for them (``judge_*``), against ``F.conv2d``, ``F.max_pool2d`` and autograd run here, in the
grader's process, in float64. The kernel also reports the torch functions and operators each answer called
(``lib.report.traced``): an answer that ran torch's convolution, unfold, pooling or autograd fails its case,
whatever name or route it reached them by.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from grader.checks.base import close, fail, finite, max_diff, ok, shape_str, tensor
from grader.judge import Cell, Check, check
from lib.report import rand

# torch function or operator -> what it is; an answer that called one did not write the computation itself
NOT_FROM_SCRATCH = {
    "conv2d": "torch's convolution (F.conv2d)", "convolution": "torch's convolution (F.conv2d, nn.Conv2d)",
    "_convolution": "torch's convolution", "conv_transpose2d": "torch's transposed convolution",
    "convolution_backward": "torch's convolution backward (torch.nn.grad)",
    "conv2d_input": "torch's convolution backward (torch.nn.grad)",
    "conv2d_weight": "torch's convolution backward (torch.nn.grad)",
    "unfold": "unfold, which cuts the windows for you", "im2col": "F.unfold, which cuts the windows for you",
    "col2im": "F.fold", "fold": "F.fold",
    "max_pool2d": "torch's max pooling (F.max_pool2d)", "max_pool2d_with_indices": "torch's max pooling",
    "max_pool2d_with_indices_backward": "torch's max pooling backward", "max_unpool2d": "torch's max unpooling",
    "backward": "autograd (.backward())", "grad": "autograd (torch.autograd.grad or torch.func.grad)",
    "requires_grad_": "autograd (requires_grad_)", "vjp": "autograd (vjp)", "jacrev": "autograd (jacrev)",
    "jacfwd": "autograd (jacfwd)", "jvp": "autograd (jvp)",
}
MAX_CALLS = 2000


def own_work(result, desc: str) -> None:
    """Fail a case whose answer called torch's implementation of what it is asked to write."""
    calls = result.get("calls") if isinstance(result, dict) else None
    if not isinstance(calls, list) or len(calls) > MAX_CALLS:
        fail(f"{desc}: the cell did not report which torch functions the answer called")
    found = sorted({str(c) for c in calls} & NOT_FROM_SCRATCH.keys())
    if found:
        fail(f"{desc} calls {NOT_FROM_SCRATCH[found[0]]}: the points are for computing it yourself, with "
             f"slices, sums and products of tensors")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _geometry_str(c: dict) -> str:
    return f"stride={c['stride']}, padding={c['padding']}, dilation={c['dilation']}"


def conv_inputs(c: dict) -> tuple:
    """The case's input, weight, bias (or None) and upstream gradient, in float64: what the hidden cell builds."""
    x = rand(c["x"], c["seed"], low=-1.0).double()
    weight = rand(c["weight"], c["seed"] + 1, low=-1.0).double()
    bias = rand([c["weight"][0]], c["seed"] + 2, low=-1.0).double() if c["bias"] else None
    y = F.conv2d(x, weight, bias, c["stride"], c["padding"], c["dilation"])
    dy = rand(list(y.shape), c["seed"] + 3, low=-1.0).double()
    return x, weight, bias, dy


def conv_reference(c: dict) -> dict:
    """F.conv2d's output and autograd's gradients for the case."""
    x, weight, bias, dy = conv_inputs(c)
    bias = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias  # the same output
    x, weight, bias = (t.clone().requires_grad_(True) for t in (x, weight, bias))
    y = F.conv2d(x, weight, bias, c["stride"], c["padding"], c["dilation"])
    y.backward(dy)
    return {"y": y.detach(), "dx": x.grad, "dweight": weight.grad, "dbias": bias.grad}


def _conv_case(rng: random.Random, *, pairs: bool) -> dict:
    """A random geometry with room for the dilated kernel (at least one output row and column)."""
    k = (rng.randint(1, 4), rng.randint(1, 4)) if pairs else (rng.randint(1, 4),) * 2
    stride = (rng.randint(1, 3), rng.randint(1, 3)) if pairs else rng.randint(1, 3)
    padding = (rng.randint(0, 2), rng.randint(0, 2)) if pairs else rng.randint(0, 2)
    dilation = (rng.randint(1, 3), rng.randint(1, 3)) if pairs else rng.randint(1, 3)
    d, p = _pair(dilation), _pair(padding)
    hw = [max(d[i] * (k[i] - 1) + 1 - 2 * p[i], 1) + rng.randint(0, 6) for i in (0, 1)]
    return dict(x=[rng.randint(1, 3), rng.randint(1, 4), *hw], weight=[rng.randint(1, 5), 0, *k], stride=stride,
                padding=padding, dilation=dilation, bias=rng.random() < 0.8)


def conv_cases(rng: random.Random) -> list[dict]:
    fixed = [dict(x=[2, 3, 7, 7], weight=[4, 0, 3, 3], stride=1, padding=1, dilation=1, bias=True),
             dict(x=[1, 2, 9, 8], weight=[3, 0, 3, 2], stride=2, padding=0, dilation=1, bias=True),
             dict(x=[2, 2, 10, 9], weight=[2, 0, 3, 3], stride=1, padding=2, dilation=2, bias=False),
             dict(x=[1, 3, 11, 10], weight=[2, 0, 2, 3], stride=(2, 3), padding=(1, 0), dilation=(2, 1), bias=True),
             dict(x=[3, 1, 5, 6], weight=[2, 0, 1, 1], stride=2, padding=0, dilation=1, bias=True)]
    cases = fixed + [_conv_case(rng, pairs=False), _conv_case(rng, pairs=True)]
    for c in cases:
        c["weight"][1] = c["x"][1]  # C_in
    return [dict(c, seed=rng.randrange(2**31)) for c in cases]


def _conv_desc(c: dict, what: str) -> str:
    return f"{what} on x {shape_str(c['x'])}, weight {shape_str(c['weight'])}, {_geometry_str(c)}"


def _where(a: torch.Tensor, b: torch.Tensor) -> str:
    index = tuple(int(i) for i in torch.unravel_index((a - b).abs().argmax(), a.shape))
    return f"largest at index {index}: {a[index].item():.6g}, expected {b[index].item():.6g}"


def _check_forward(c: dict, result) -> None:
    desc = _conv_desc(c, "conv2d_forward" + ("" if c["bias"] else " (bias=None)"))
    out = ok(result, desc)
    own_work(result, desc)
    expected = conv_reference(c)["y"]
    y = finite(tensor(out, desc), desc)
    if y.shape != expected.shape:
        fail(f"{desc}: output {shape_str(y)}, expected {shape_str(expected)}: H_out = (H + 2 padding - dilation "
             f"(kH - 1) - 1) // stride + 1, and the same for W with the second number of each pair")
    if not close(y, expected, atol=1e-9, rtol=1e-9):
        x, weight, bias, _ = conv_inputs(c)
        hint = ("add the bias, one number per output channel" if bias is not None and close(
            y, F.conv2d(x, weight, None, c["stride"], c["padding"], c["dilation"]), atol=1e-9) else
                "kernel taps are `dilation` apart: the tap (i, j) reads x_padded[i * dilation + stride * row, ...]"
                if _pair(c["dilation"]) != (1, 1) else "sum over input channels and kernel taps, stride apart")
        fail(f"{desc}: differs from F.conv2d by up to {max_diff(y, expected):.3g} ({_where(y, expected)}): {hint}")


def judge_forward(cases: list[dict], results: list) -> list[Check]:
    return [check(_conv_desc(c, "conv2d_forward"), _check_forward, c, r) for c, r in zip(cases, results)]


GRADIENT_HINTS = {
    "dx": "scatter dy times each kernel tap back to every input position that tap read (stride and dilation as in "
          "the forward, += where windows overlap), then cut the padding off",
    "dweight": "each tap's gradient is the sum over N, H_out and W_out of dy times the input it read",
    "dbias": "the bias gradient is dy summed over N, H_out and W_out (zeros when the layer has no bias)",
}


def _check_gradient(c: dict, result, name: str) -> None:
    desc = _conv_desc(c, f"conv2d_backward's {name}")
    out = ok(result, desc)
    own_work(result, desc)
    if not isinstance(out, dict) or name not in out:
        fail(f"{desc}: conv2d_backward must return (dx, dweight, dbias)")
    expected = conv_reference(c)[name]
    g = finite(tensor(out[name], desc), desc)
    if g.shape != expected.shape:
        fail(f"{desc}: shape {shape_str(g)}, expected {shape_str(expected)}: a gradient has the shape of what it "
             f"is the gradient of")
    if not close(g, expected, atol=1e-9, rtol=1e-9):
        fail(f"{desc}: differs from autograd's by up to {max_diff(g, expected):.3g} ({_where(g, expected)}): "
             f"{GRADIENT_HINTS[name]}")


def judge_backward(cases: list[dict], results: list) -> list[Check]:
    return [check(_conv_desc(c, f"conv2d_backward's {name}"), _check_gradient, c, r, name)
            for c, r in zip(cases, results) for name in ("dx", "dweight", "dbias")]


# ---- max pooling ------------------------------------------------------------------------------------------

def pool_cases(rng: random.Random) -> list[dict]:
    k = rng.randint(2, 4)
    drawn = dict(x=[rng.randint(1, 3), rng.randint(1, 4), rng.randint(k, 12), rng.randint(k, 12)], kernel_size=k,
                 stride=rng.choice([None, 1, 2, 3]), padding=rng.randint(0, k // 2), zeros=0.0)
    cases = [dict(x=[2, 3, 8, 8], kernel_size=2, stride=None, padding=0, zeros=0.0),
             dict(x=[1, 2, 9, 7], kernel_size=3, stride=2, padding=1, zeros=0.0),
             dict(x=[2, 2, 7, 7], kernel_size=3, stride=1, padding=0, zeros=0.0),  # overlapping windows
             dict(x=[1, 3, 8, 10], kernel_size=2, stride=2, padding=1, zeros=0.0),
             dict(x=[2, 2, 8, 8], kernel_size=2, stride=None, padding=0, zeros=0.6),  # ties, as after a ReLU
             drawn]
    return [dict(c, seed=rng.randrange(2**31)) for c in cases]


def pool_inputs(c: dict) -> tuple:
    x = rand(c["x"], c["seed"], low=-1.0, zeros=c["zeros"]).double()
    y = F.max_pool2d(x, c["kernel_size"], c["stride"], c["padding"])
    return x, rand(list(y.shape), c["seed"] + 1, low=-1.0).double()


def _pool_desc(c: dict) -> str:
    return (f"max pooling {c['kernel_size']}, stride={c['stride']}, padding={c['padding']} on {shape_str(c['x'])}"
            + (" with ties (zeros)" if c["zeros"] else ""))


def _check_pool(c: dict, result) -> None:
    desc = _pool_desc(c)
    out = ok(result, desc)
    own_work(result, desc)
    x, dy = pool_inputs(c)
    xg = x.clone().requires_grad_(True)
    expected = F.max_pool2d(xg, c["kernel_size"], c["stride"], c["padding"])
    expected.backward(dy)
    y = finite(tensor(out["y"], desc + ": maxpool2d_forward"), desc)
    if y.shape != expected.shape or not close(y, expected.detach(), atol=1e-12):
        fail(f"{desc}: maxpool2d_forward gives {shape_str(y)}"
             + (f", differs from F.max_pool2d by up to {max_diff(y, expected)}" if y.shape == expected.shape else
                f", expected {shape_str(expected)}")
             + ": stride defaults to kernel_size, and the padding counts as minus infinity (never the maximum)")
    dx = finite(tensor(out["dx"], desc + ": maxpool2d_backward"), desc)
    if dx.shape != x.shape:
        fail(f"{desc}: maxpool2d_backward gives {shape_str(dx)}, expected x's shape {shape_str(x)}")
    if not close(dx, xg.grad, atol=1e-12):
        untied = x != 0  # the inputs' zeros are the ties
        hint = ("in a window whose maximum appears more than once, route dy to the first maximum only (row by row), "
                "as PyTorch does" if c["zeros"] and close(dx[untied], xg.grad[untied], atol=1e-12) else
                "add up the gradients of overlapping windows (+=): one input can be the maximum of several"
                if (c["stride"] or c["kernel_size"]) < c["kernel_size"] else
                "each window's dy goes to the position of its maximum, nowhere else")
        fail(f"{desc}: maxpool2d_backward differs from autograd's by up to {max_diff(dx, xg.grad):.3g}: {hint}")


def judge_pool(cases: list[dict], results: list) -> list[Check]:
    return [check(_pool_desc(c), _check_pool, c, r) for c, r in zip(cases, results)]


# ---- the numerical gradient check ---------------------------------------------------------------------------

FUNCTIONS = {  # name -> a scalar function of a float64 tensor (the hidden cell defines the same ones)
    "tanh": lambda x: (torch.tanh(x) * torch.arange(x.numel(), dtype=x.dtype).reshape(x.shape).cos()).sum(),
    "cubic": lambda x: (x ** 3 - 2 * x * x.flip(-1)).sum(),
    "logsumexp": lambda x: torch.logsumexp(x.flatten() * 3, 0),
    "norm": lambda x: (x * x).sum().sqrt(),
    "sin": lambda x: (torch.sin(2 * x) * x.roll(1, -1)).sum(),
}
PLANTS = ("entry", "scale", "sign", "half", "shift")


def plant(grad: torch.Tensor, kind: str, index: int) -> torch.Tensor:
    """The gradient with a planted mistake: one entry off by 0.1% of the largest, all scaled by 1.001, the largest
    entry's sign flipped, the factor 2 of a square missed, or the entries shifted by one."""
    g = grad.clone().flatten()
    if kind == "entry":
        g[index % g.numel()] += 1e-3 * g.abs().max()
    elif kind == "scale":
        g = g * 1.001
    elif kind == "sign":
        g[g.abs().argmax()] *= -1
    elif kind == "half":
        g = g / 2
    elif kind == "shift":
        g = g.roll(1)
    return g.reshape(grad.shape)


def gradcheck_cases(rng: random.Random) -> list[dict]:
    names = list(FUNCTIONS)
    rng.shuffle(names)
    plants = list(PLANTS)
    rng.shuffle(plants)
    return [dict(f=name, x=[rng.randint(1, 3), rng.randint(2, 5), rng.randint(2, 4)], plant=kind,
                 index=rng.randrange(60), seed=rng.randrange(2**31)) for name, kind in zip(names, plants)]


def gradcheck_inputs(c: dict) -> tuple:
    x = rand(c["x"], c["seed"], low=-1.0).double()
    xg = x.clone().requires_grad_(True)
    FUNCTIONS[c["f"]](xg).backward()
    return x, xg.grad, plant(xg.grad, c["plant"], c["index"])


def _gradcheck_desc(c: dict) -> str:
    return f"the gradient check on f = {c['f']!r} at x of shape {shape_str(c['x'])}, with a planted {c['plant']!r} error"


def _check_gradcheck(c: dict, result) -> None:
    desc = _gradcheck_desc(c)
    out = ok(result, desc)
    own_work(result, desc)
    x, grad, _ = gradcheck_inputs(c)
    num = finite(tensor(out["numerical"], desc + ": numerical_gradient"), desc)
    if num.shape != x.shape or not close(num, grad, atol=1e-6, rtol=1e-6):
        fail(f"{desc}: numerical_gradient differs from the true gradient by up to "
             f"{max_diff(num, grad) if num.shape == x.shape else 'its shape'}: use central differences "
             f"(f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for every entry i, and put x back after each")
    right, wrong = out["right"], out["wrong"]
    if not (isinstance(right, list) and isinstance(wrong, list) and len(right) == 2 and len(wrong) == 2):
        fail(f"{desc}: gradient_check must return (passed, relative_error)")
    if right[0] is not True:
        fail(f"{desc}: gradient_check rejects the true gradient (relative error {right[1]}): the error of a correct "
             f"gradient in float64 is about 1e-10; compare it with tol")
    if wrong[0] is not False:
        fail(f"{desc}: gradient_check accepts a gradient with a planted {c['plant']!r} error (relative error "
             f"{wrong[1]}): the relative error is ||numerical - analytic|| / (||numerical|| + ||analytic||), "
             f"compared with tol=1e-6")


def judge_gradcheck(cases: list[dict], results: list) -> list[Check]:
    return [check(_gradcheck_desc(c), _check_gradcheck, c, r) for c, r in zip(cases, results)]


# ---- the gradient check, used ------------------------------------------------------------------------------

USED = ("conv dx", "conv dweight", "conv dbias", "pool dx")


def used_cases(rng: random.Random) -> list[dict]:
    return [dict(tol=1e-6)]


def _check_used(c: dict, result) -> None:
    out = ok(result, "`errors`")
    errors, again = out["errors"], out["again"]
    if not isinstance(errors, dict) or set(errors) != set(USED):
        fail(f"`errors` has the keys {sorted(errors) if isinstance(errors, dict) else errors!r}, expected {list(USED)}")
    for name in USED:
        e, a = errors[name], again.get(name)
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not isinstance(a, (int, float)):
            fail(f"errors[{name!r}] is {e!r}: the relative error your gradient_check returned")
        if not 0 <= e < c["tol"]:
            fail(f"errors[{name!r}] is {e:.3g}, not below {c['tol']}: the backward pass it checks is wrong")
        if abs(e - a) > 1e-3 * max(abs(a), 1e-30) + 1e-15:
            fail(f"errors[{name!r}] is {e:.6g}, but running your gradient_check on the same case gives {a:.6g}: "
                 f"report what your code measured")


def judge_used(cases: list[dict], results: list) -> list[Check]:
    return [check("your gradient check on your backward passes", _check_used, cases[0], results[0])]


CELLS = {
    "test_conv_forward": Cell(conv_cases, judge_forward),
    "test_conv_backward": Cell(conv_cases, judge_backward),
    "test_pool": Cell(pool_cases, judge_pool),
    "test_gradcheck": Cell(gradcheck_cases, judge_gradcheck),
    "test_gradcheck_used": Cell(used_cases, judge_used),
}
