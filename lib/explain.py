"""``explain(model, input_size)``: a per-layer table of any ``nn.Module`` (a reader's own, a torchvision model,
a student's answer): output shape, parameters, MACs, and the theoretical receptive field and jump of every
layer's output, with a compact figure.

Parameters and MACs come from :func:`lib.analysis.summary` (PyTorch's own FLOP counter). The receptive field is
traced through *every* operation of one forward pass, functional calls and residual additions included, with a
``TorchFunctionMode``: each tensor carries ``(field, jump)``, its receptive field in input pixels and the
distance in input pixels between neighbouring positions of its grid, and ``start``, the input coordinate of the
centre of the first unit's field. A convolution or pooling window of size ``k``, stride ``s``, padding ``p`` and
dilation ``d`` maps ``(r, j, c)`` to ``(r + (k - 1) d j, j s, c + ((k - 1) d / 2 - p) j)`` (Araujo et al., 2019); an
operation that combines tensors (an addition, a concatenation) takes the largest field; a global or adaptive
pooling, or anything after the grid is flattened, sees the whole image. An operation that changes the grid in a
way this table cannot follow (an interpolation, an unfold) stops with an error that names it.

    from lib.explain import explain
    table = explain(torchvision.models.resnet18(), (3, 224, 224))      # a pandas DataFrame
    table.attrs["figure"]                                              # matplotlib figure of the same table
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from lib.analysis import _batch_size, summary

WHOLE = math.inf  # the field of an output that sees the whole image


class ExplainError(RuntimeError):
    """``explain`` cannot trace this model; the message names the operation and what to do."""


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


_POOLS = {"max_pool2d": 4, "_max_pool2d": 4, "max_pool2d_with_indices": 4, "avg_pool2d": None, "lp_pool2d": None}
_GLOBAL = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"}
_RESIZE = {"interpolate", "upsample", "unfold", "fold", "pixel_shuffle", "pixel_unshuffle", "grid_sample",
           "conv_transpose2d", "max_unpool2d"}


def _window(name: str, args, kwargs) -> tuple[int, int, int, float] | None:
    """(kernel, stride, dilation, padding) along the height of a sliding-window operation, else None. Functions
    are matched by name: ``F.max_pool2d`` reaches a mode as one of several private wrappers."""
    def arg(i, key, default):
        return kwargs.get(key, args[i] if len(args) > i else default)

    if name == "conv2d":  # conv2d(input, weight, bias, stride, padding, dilation, groups)
        k, d = int(args[1].shape[-2]), _pair(arg(5, "dilation", 1))[0]
        padding = arg(4, "padding", 0)
        pad = {"valid": 0, "same": (k - 1) * d / 2}[padding] if isinstance(padding, str) else _pair(padding)[0]
        return k, _pair(arg(3, "stride", 1))[0], d, pad
    if name == "lp_pool2d":  # lp_pool2d(input, norm_type, kernel_size, stride)
        k = _pair(arg(2, "kernel_size", 1))[0]
        return k, _pair(arg(3, "stride", None) or k)[0], 1, 0
    if name in _POOLS:  # (input, kernel_size, stride, padding[, dilation])
        k = _pair(arg(1, "kernel_size", 1))[0]
        dilation = arg(_POOLS[name], "dilation", 1) if _POOLS[name] else 1
        return k, _pair(arg(2, "stride", None) or k)[0], _pair(dilation)[0], _pair(arg(3, "padding", 0))[0]
    return None


def _adaptive_window(x: torch.Tensor, y: torch.Tensor):
    """An adaptive pooling as a window: the whole map when it pools to one position, nothing when it keeps the
    size, else the window and stride it uses on an evenly divided map."""
    h_in, h_out = x.shape[-2], y.shape[-2]
    if h_out == 1:
        return "whole"
    if h_out == h_in:
        return None
    return math.ceil(h_in / h_out), h_in // h_out, 1, 0


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


class _FieldTrace(TorchFunctionMode):
    """Carries (field, jump, start) from the input through every torch function of one forward pass."""

    def __init__(self, image: torch.Tensor, size: int):
        super().__init__()
        self.size = size
        self.meta: dict[int, tuple[float, float, float]] = {id(image): (1.0, 1.0, 0.0)}
        self.alive: list[torch.Tensor] = [image]  # keeps ids unique while the pass runs

    def field(self, t: torch.Tensor) -> tuple[float, float, float] | None:
        return self.meta.get(id(t))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in _tensors((args, kwargs)) if id(t) in self.meta]
        if not inputs:
            return out
        known = [self.meta[id(t)] for t in inputs]
        name = getattr(func, "__name__", "")
        if name in _RESIZE:
            raise ExplainError(f"explain() cannot trace a receptive field through {name} (it resizes or rearranges "
                               f"the grid); call explain(..., receptive_field=False) for the other columns")
        # a sum or a concatenation: the widest
        field, _, start = max(known, key=lambda m: -1 if math.isnan(m[0]) else m[0])
        jump = max(j for _, j, _ in known)
        window = _window(name, args, kwargs)
        if name in _GLOBAL:
            window = _adaptive_window(args[0], _tensors(out)[0])
        if window == "whole":
            field, start = WHOLE, (self.size - 1) / 2
        elif window is not None:
            k, s, d, p = window
            field, jump, start = field + (k - 1) * d * jump, jump * s, start + ((k - 1) * d / 2 - p) * jump
        grids = [t.shape[-2] for t in inputs if t.dim() == 4]
        for t in _tensors(out):
            if t.dim() == 4 or field == WHOLE or math.isnan(field):
                f = field
            elif t.dim() <= 2 and grids:  # a grid flattened into a vector: what reads it sees every position
                f = field + (max(grids) - 1) * jump
            else:  # a token sequence: which positions an operation mixes is not known here
                f = math.nan
            self.meta[id(t)] = (f, jump, start)
            self.alive.append(t)
        return out


def _fields(model: nn.Module, size: tuple[int, ...]) -> list[tuple[str, float, float, float]]:
    """(module name, field, jump, start) of each leaf module's output, in call order."""
    names = {m: n for n, m in model.named_modules()}
    rows: list[tuple[str, float, float, float]] = []
    x = torch.zeros(size, device=next(model.parameters(), torch.zeros(())).device)
    with torch.no_grad():
        trace = _FieldTrace(x, size[-2])

        def hook(module, args, output):
            first = _tensors(output)[:1]
            got = trace.field(first[0]) if first else None
            if got is not None and next(module.children(), None) is None:
                rows.append((names[module], *got))

        handles = [m.register_forward_hook(hook) for m in names]
        was = model.training
        model.eval()
        try:
            with trace:
                model(x)
        finally:
            model.train(was)
            for h in handles:
                h.remove()
    return rows


def explain(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), *, receptive_field: bool = True,
            figure: bool = True) -> pd.DataFrame:
    """One row per layer call: ``name``, ``type``, ``output_shape``, ``params``, ``macs`` and, with
    ``receptive_field``, ``field`` (the side, in input pixels, of the square a unit of that output can see: the
    theoretical field, which may exceed the image; ``inf`` after a global pooling, which sees every pixel; NaN
    off the grid, in a token sequence or a vector, where which positions an operation mixes is not known) and
    ``jump`` (input pixels between neighbouring units) and ``start`` (the input coordinate, in pixels from the
    top-left pixel's centre, of the centre of the first unit's field; unit ``i``'s is ``start + i * jump``, and
    it is negative where padding centres it outside the image). ``table.attrs["figure"]`` holds a
    two-panel figure (where the parameters and MACs are; how the field grows), unless ``figure=False``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"explain() takes an nn.Module, got {type(model).__name__}")
    size = _batch_size(input_size)
    try:
        table = summary(model, size)
    except Exception as e:  # noqa: BLE001 - any failure of the model's own forward pass
        raise ExplainError(f"the model's forward pass failed on an input of shape {size}: {type(e).__name__}: {e}. "
                           f"Check input_size (channels first: (C, H, W))") from e
    if receptive_field:
        if len(size) != 4:
            raise ExplainError("a receptive field needs an image input (C, H, W)")
        found, seen = {}, {}
        for name, *traced in _fields(model, size):
            seen[name] = seen.get(name, -1) + 1
            found[(name, seen[name])] = traced
        occurrence = table.groupby("name").cumcount()
        for i, column in enumerate(("field", "jump", "start")):
            table[column] = [found.get((n, k), (math.nan,) * 3)[i] for n, k in zip(table["name"], occurrence)]
    if figure:
        table.attrs["figure"] = _figure(table, model, size)
    return table


def _figure(table: pd.DataFrame, model: nn.Module, size: tuple[int, ...]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    x = range(len(table))
    axes[0].bar(x, table["macs"] / max(1, table["macs"].sum()), label="MACs", alpha=0.7)
    axes[0].bar(x, table["params"] / max(1, table["params"].sum()), label="parameters", alpha=0.7)
    axes[0].set(xlabel="layer (in call order)", ylabel="share of the model's total",
                title="Where the parameters and MACs are")
    axes[0].legend()
    if "field" in table:
        axes[1].step(x, table["field"], where="post", label="receptive field (pixels)")
        axes[1].step(x, table["jump"], where="post", label="jump (pixels between units)")
        axes[1].axhline(max(size[-2:]), color="gray", ls=":", label=f"input size ({size[-2]}x{size[-1]})")
        axes[1].set(yscale="log", xlabel="layer (in call order)", ylabel="input pixels",
                    title="How far each layer's units see")
        axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{type(model).__name__} on a {tuple(size[1:])} input: {table['params'].sum():,} parameters, "
                 f"{table['macs'].sum() / 1e6:,.1f} MMACs")
    fig.tight_layout()
    plt.close(fig)
    return fig
