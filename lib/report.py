"""What a hidden test cell hands the autograder: the answer's outputs on the hidden cases, as plain data.

The kernel runs the student; the grader judges. A hidden test cell builds the inputs of the cases the
autograder wrote into it (``rand``, ``fill``), runs the student's code on them (``attempt``) and shows the
results with :func:`report`, as JSON in one output of a course-specific MIME type. The autograder, in its own
process, computes the expected answers and decides every check (``grader/judge.py``); nothing here knows them.

Tensors travel as their values (a subclass of ``torch.Tensor`` arrives as plain numbers, whatever it overrides).
"""
from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

MIME = "application/vnd.cnn-course.report+json"


def plain(value):
    """``value`` as JSON data: tensors as {"tensor": dtype, "shape": [...], "data": flat list}, tuples as lists."""
    if isinstance(value, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():  # a subclass's overrides do not run: its values do
            t = torch.Tensor.detach(value).cpu()
            t = t.double() if t.is_floating_point() else t
            values = torch.Tensor.tolist(t.flatten())
        data = [v if isinstance(v, (bool, int)) or math.isfinite(v) else str(v) for v in values]
        return {"tensor": str(t.dtype), "shape": list(t.shape), "data": data}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    return f"<{type(value).__name__}>"


def attempt(fn: Callable, *args) -> dict:
    """``{"ok": fn(*args)}`` as plain data, or ``{"error": "TypeError: ..."}``: one case's failure is its own."""
    try:
        return {"ok": plain(fn(*args))}
    except Exception as e:  # noqa: BLE001 - any error of the student's code is that case's result
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def traced(fn: Callable, *args) -> dict:
    """:func:`attempt`, and the names of the torch functions and operators ``fn`` called on the way (``"calls"``):
    whatever name or route an answer reached them by, the grader can see that it ran torch's convolution or
    autograd. An error is that case's result, as in :func:`attempt`."""
    functions = _Calls()
    with functions, _Operators(functions.names):
        result = attempt(fn, *args)
    return dict(result, calls=sorted(functions.names))


def report(results) -> None:
    """Show ``results`` to the autograder (one output of type :data:`MIME` per test cell)."""
    from IPython.display import display

    display({MIME: json.loads(json.dumps(plain(results), allow_nan=False)),
             "text/plain": "(results for the autograder)"}, raw=True)


def rand(shape: Sequence[int], seed: int, *, low: float = 0.0, high: float = 1.0, zeros: float = 0.0) -> torch.Tensor:
    """A reproducible input in [low, high), with about a fraction ``zeros`` of its entries set to 0 (as after
    a ReLU); it neither reads nor changes the global random state."""
    g = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(*shape, generator=g)
    if zeros:
        x = torch.where(torch.rand(*shape, generator=g) < zeros, torch.zeros_like(x), x)
    return x


def fill(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every floating-point tensor of ``module.state_dict()`` values drawn from ``seed`` and its name, so
    that two modules with the same names and shapes hold the same numbers: convolution and linear weights
    uniform in +-1/sqrt(fan_in), BatchNorm scales and variances in [0.5, 1.5), biases and means in +-0.1."""
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                continue
            g = torch.Generator().manual_seed(seed ^ zlib.crc32(name.encode()))
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var" or (leaf == "weight" and t.dim() == 1):
                t.uniform_(0.5, 1.5, generator=g)
            elif t.dim() >= 2:
                bound = 1 / math.sqrt(t[0].numel())
                t.uniform_(-bound, bound, generator=g)
            else:
                t.uniform_(-0.1, 0.1, generator=g)
    return module


class _Calls(torch.overrides.TorchFunctionMode):
    """Records the names of the torch functions and Tensor methods called (autograd's entry points too)."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", type(func).__name__))
        return func(*args, **(kwargs or {}))


class _Operators(TorchDispatchMode):
    """Records the aten operators run, after autograd (what a function reached by any route finally does)."""

    def __init__(self, names: set[str]):
        super().__init__()
        self.names = names

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def called(fn: Callable, *args, **kwargs) -> tuple:
    """``(fn(*args, **kwargs), names)``: its result and the sorted names of the torch functions it called
    (``linear``, ``softmax``, ``scaled_dot_product_attention``, ...), as a ``TorchFunctionMode`` sees them; an
    error is raised, not reported (compare :func:`traced`)."""
    mode = _Calls()
    with mode:
        result = fn(*args, **kwargs)
    return result, sorted(mode.names)
