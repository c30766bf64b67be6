"""Measuring a model: parameters, multiply-accumulates, a per-layer table, the receptive field, and the
same figures from torchvision's weight metadata to check them against.

* ``count_params``, ``count_macs``: MACs come from PyTorch's own ``FlopCounterMode`` (which counts
  2 FLOPs per multiply-accumulate of convolutions, matrix products and attention), not from rules
  written here. torchvision's ``_ops`` metadata (shown as "GFLOPS" in its docs) is the same quantity
  in GMACs. Both work on models built under ``torch.device("meta")``, which costs no memory or time.
* ``summary``: one row per layer call: name, type, output shape, parameters, MACs.
* ``empirical_receptive_field``: which input pixels can change one output unit, found by backprop
  through a linearised copy of the model (see its docstring); the reference for analytic calculators.
  ``empirical_receptive_fields``: the same for many units of one model in one forward pass.
* ``torchvision_meta``, ``compare_architectures``: published numbers beside measured ones.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib.counting import InputSize, _batch_size, _evaluating, _example_input, count_macs, count_params
from lib.models import TORCHVISION_TWINS, build, default_input_size
from lib.models.blocks import SqueezeExcitation

def summary(model: nn.Module, input_size: InputSize = (1, 3, 224, 224)) -> pd.DataFrame:
    """One row per call of a leaf module (and of any other module that owns parameters or does
    counted work itself, such as an attention block), in execution order.

    Columns: ``name`` (dotted path), ``type``, ``output_shape``, ``params`` (owned directly, counted
    at a module's first call), ``macs`` (done by the module itself, not its children). The column
    sums equal ``count_params`` (for modules that run) and ``count_macs``.
    """
    rows: list[dict | None] = []  # one slot per module call, reserved in call order
    stack: list[list[int]] = []  # per open call: [its row slot, flops at entry, flops of its children]
    seen: set[nn.Module] = set()
    counter = FlopCounterMode(display=False)
    names = {m: n for n, m in model.named_modules()}

    def pre_hook(module, args):
        stack.append([len(rows), counter.get_total_flops(), 0])
        rows.append(None)

    def post_hook(module, args, output):
        slot, start, children = stack.pop()
        inclusive = counter.get_total_flops() - start
        if stack:
            stack[-1][2] += inclusive
        own_macs = (inclusive - children) // 2
        own_params = 0 if module in seen else sum(p.numel() for p in module.parameters(recurse=False))
        seen.add(module)
        is_leaf = next(module.children(), None) is None
        if is_leaf or own_params or own_macs:
            out = output[0] if isinstance(output, (tuple, list)) else output
            rows[slot] = {"name": names[module] or type(model).__name__, "type": type(module).__name__,
                          "output_shape": tuple(out.shape) if isinstance(out, torch.Tensor) else None,
                          "params": own_params, "macs": own_macs}

    handles = []
    for m in names:
        handles += [m.register_forward_pre_hook(pre_hook), m.register_forward_hook(post_hook)]
    x = _example_input(model, input_size)
    try:
        with _evaluating(model), counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return pd.DataFrame([r for r in rows if r is not None], columns=["name", "type", "output_shape", "params", "macs"])


# ---------------------------------------------------------------------------------------------
# Receptive field
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReceptiveField:
    """The input region that can influence one output unit (pixel coordinates of ``input_size``)."""

    size: tuple[int, int]  # (height, width) of the region; a lower bound when clipped
    box: tuple[int, int, int, int]  # (top, left, bottom, right), inclusive
    center: tuple[float, float]  # (y, x), the centre of the box
    clipped: bool  # the region touches the image border, so the full field may reach beyond the image
    unit: tuple[int, ...]  # the unit measured: (i, j) on a feature map, (token,) for a token sequence
    input_size: tuple[int, ...]  # the input the field was measured on
    grad: torch.Tensor = field(repr=False, compare=False)  # (H, W) influence of each pixel, summing to 1


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
                nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm,
          nn.LocalResponseNorm)
_SE_GATES = (SqueezeExcitation, torchvision.ops.SqueezeExcitation)
_MAX_TO_AVG = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
_ADAPTIVE_MAX_TO_AVG = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                        nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}


class _UnitGate(nn.Module):
    """A squeeze-excitation block whose gate has value 1 but keeps its gradient (``s / s.detach()``)."""

    def __init__(self, se: nn.Module):
        super().__init__()
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.se.scale(x) if hasattr(self.se, "scale") else self.se._scale(x)  # lib's / torchvision's
        return x * (s / s.detach())


def _linear_stand_in(m: nn.Module, include_global: bool) -> nn.Module | None:
    """The module that replaces ``m`` in the linearised copy, or ``None`` to keep ``m``."""
    if isinstance(m, _ACTIVATIONS) or isinstance(m, _NORMS):
        return nn.Identity()
    if isinstance(m, _SE_GATES):
        # The gate is a positive per-channel scale: without global paths it is a constant (identity);
        # with them, its value is normalised to 1 so that stacked gates cannot overflow.
        return _UnitGate(m) if include_global else nn.Identity()
    if type(m) in _MAX_TO_AVG:
        if m.dilation not in (1, (1,), (1, 1), (1, 1, 1)):
            raise NotImplementedError(f"empirical_receptive_field: dilated max pooling ({m}) has no average-pool twin")
        return _MAX_TO_AVG[type(m)](m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
    if type(m) in _ADAPTIVE_MAX_TO_AVG:
        return _ADAPTIVE_MAX_TO_AVG[type(m)](m.output_size)
    return None


def linearised_copy(model: nn.Module, *, include_global: bool = False) -> nn.Module:
    """A float64 copy of ``model`` in eval mode in which every path from input to output carries a
    positive gradient, so the gradient's support is exactly the set of connected input pixels:

    * weights (every parameter with 2+ dimensions) ``1 / fan_in``, biases 0, other parameters 1;
    * normalisation layers -> identity (fixed per-channel scales, as BatchNorm is at evaluation);
    * max pooling -> average pooling with the same window (max pooling passes gradient to one pixel);
    * activations -> identity (ReLU passes gradient only where its input is positive);
    * squeeze-excitation gates -> identity unless ``include_global``: their global average pool would
      connect every pixel to every unit, and by convention the receptive field counts local paths.
    Only modules and parameters are changed: functional calls inside ``forward`` (``F.max_pool2d``,
    ``F.relu``) and branches combined by subtraction can still mask or cancel paths.
    """
    probe = copy.deepcopy(model).eval().double()
    for name, m in reversed(list(probe.named_modules())):  # children first: their paths stay valid
        stand_in = _linear_stand_in(m, include_global) if name else None
        if stand_in is not None:
            parent, _, child = name.rpartition(".")
            setattr(probe.get_submodule(parent), child, stand_in)
    with torch.no_grad():
        for name, p in probe.named_parameters():
            p.requires_grad_(False)  # only the input's gradient is needed
            if name.rpartition(".")[2].endswith("bias"):
                p.zero_()
            elif p.dim() >= 2:
                p.fill_(p.shape[0] / p.numel())  # 1 / fan_in
            else:
                p.fill_(1.0)
    return probe


class _Captured(Exception):
    def __init__(self, output: torch.Tensor):
        self.output = output


def _layer_output(probe: nn.Module, x: torch.Tensor, layer: str | None) -> torch.Tensor:
    if layer is None:
        return probe.forward_features(x) if hasattr(probe, "forward_features") else probe(x)
    try:
        module = probe.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in probe.named_modules() if n]
        raise KeyError(f"no module named {layer!r}; the model has e.g. {', '.join(names[:8])}, ...") from None

    def hook(module, args, output):
        raise _Captured(output[0] if isinstance(output, (tuple, list)) else output)

    handle = module.register_forward_hook(hook)
    try:
        probe(x)
    except _Captured as c:
        return c.output
    finally:
        handle.remove()
    raise RuntimeError(f"module {layer!r} did not run in the forward pass")


def _field_of(probe: nn.Module, size: tuple[int, ...], layer: str | None,
              unit: Sequence[int] | None) -> ReceptiveField:
    device = next(probe.parameters()).device
    x = torch.ones(size, dtype=torch.float64, device=device, requires_grad=True)
    out = _layer_output(probe, x, layer)
    unit = _unit_of(out, unit)
    _target(out, unit).sum().backward()
    return _support(x.grad[0].abs().sum(0), unit, size)


def _unit_of(out: torch.Tensor, unit: Sequence[int] | None) -> tuple[int, ...]:
    """The unit asked for, checked; by default the centre of a feature map, the class token (token 0) of a sequence."""
    if unit is None:
        unit = tuple((s - 1) // 2 for s in out.shape[2:]) if out.dim() == 4 else (0,) * (out.dim() - 2)
    unit = tuple(int(u) for u in unit)
    if out.dim() == 4:
        if len(unit) != 2 or not all(0 <= u < s for u, s in zip(unit, out.shape[2:])):
            raise ValueError(f"unit must be (i, j) inside the {tuple(out.shape[2:])} feature map, got {unit}")
    elif out.dim() == 3:
        if len(unit) != 1 or not 0 <= unit[0] < out.shape[1]:
            raise ValueError(f"unit must be (token,) with token < {out.shape[1]}, got {unit}")
    return unit


def _target(out: torch.Tensor, unit: tuple[int, ...]) -> torch.Tensor:
    if out.dim() == 4:
        return out[0, :, unit[0], unit[1]]
    return out[0, unit[0]] if out.dim() == 3 else out[0]


def _support(g: torch.Tensor, unit: tuple[int, ...], size: tuple[int, ...]) -> ReceptiveField:
    """The field of one unit from its (H, W) input gradient: the box of the pixels with a nonzero gradient."""
    if not torch.isfinite(g).all():
        raise RuntimeError("the linearised model's gradient overflowed; probe an earlier layer")
    rows, cols = (g.sum(1) > 0).nonzero().flatten(), (g.sum(0) > 0).nonzero().flatten()
    if rows.numel() == 0:
        raise RuntimeError("no input pixel influences this unit (is the output constant?)")
    top, bottom, left, right = rows[0].item(), rows[-1].item(), cols[0].item(), cols[-1].item()
    h, w = g.shape
    return ReceptiveField(size=(bottom - top + 1, right - left + 1), box=(top, left, bottom, right),
                          center=((top + bottom) / 2, (left + right) / 2),
                          clipped=top == 0 or left == 0 or bottom == h - 1 or right == w - 1,
                          unit=unit, input_size=size, grad=(g / g.sum()).float())


def empirical_receptive_field(model: nn.Module, input_size: InputSize = (1, 3, 224, 224), *, layer: str | None = None,
                              unit: Sequence[int] | None = None, include_global: bool = False, fit: bool = False,
                              max_size: int = 2048) -> ReceptiveField:
    """The receptive field of one unit, measured: the input pixels with a nonzero gradient of the unit's
    output (summed over channels) in ``linearised_copy(model)``, where no path can cancel or be masked.

    ``layer``: the output to probe; ``None`` means ``model.forward_features`` (the last feature map), a
    name such as ``"layer3.1.conv2"`` probes that module's output. ``unit``: ``(i, j)`` on a feature map
    (default: the centre, ``((H-1)//2, (W-1)//2)``) or ``(token,)`` on a (N, L, D) sequence (default 0).
    ``include_global``: let squeeze-excitation's global pooling count, which makes the field the whole image.

    If the region touches the border, ``clipped`` is True and ``size`` is only a lower bound; with
    ``fit=True`` (and the default unit) the input is doubled until the field fits (up to ``max_size``)
    and the result describes that larger input (see ``input_size`` of the result).
    """
    size = (1, *_batch_size(input_size)[1:])  # one image: the unit's field does not depend on the batch
    probe = linearised_copy(model, include_global=include_global)
    rf = _field_of(probe, size, layer, unit)
    while fit and rf.clipped and unit is None and 2 * max(size[2:]) <= max_size:
        size = (*size[:2], 2 * size[2], 2 * size[3])
        try:
            rf = _field_of(probe, size, layer, unit)
        except ValueError:  # the model cannot take a larger input (a ViT is built for one size)
            break
    return rf


def empirical_receptive_fields(model: nn.Module, input_size: InputSize, units: Mapping[str, Sequence[Sequence[int]]],
                               *, include_global: bool = False) -> dict[str, list[ReceptiveField]]:
    """``empirical_receptive_field`` for several units of several layers of one model at the cost of one linearised
    copy, one forward pass and one backward pass per unit: ``units`` maps a module name (its output at its last
    call is probed) to the ``(i, j)`` units to measure there; the result lists their fields in the same order."""
    size = (1, *_batch_size(input_size)[1:])
    probe = linearised_copy(model, include_global=include_global)
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for layer in units:
        def keep(module, args, output, layer=layer):
            outputs[layer] = output[0] if isinstance(output, (tuple, list)) else output
        handles.append(probe.get_submodule(layer).register_forward_hook(keep))
    x = torch.ones(size, dtype=torch.float64, device=next(probe.parameters()).device, requires_grad=True)
    try:
        probe(x)
    finally:
        for h in handles:
            h.remove()
    fields: dict[str, list[ReceptiveField]] = {}
    for layer, asked in units.items():
        fields[layer] = []
        for unit in asked:
            unit = _unit_of(outputs[layer], unit)
            (grad,) = torch.autograd.grad(_target(outputs[layer], unit).sum(), x, retain_graph=True)
            fields[layer].append(_support(grad[0].abs().sum(0), unit, size))
    return fields


def model_stages(model: nn.Module) -> dict[str, nn.Module]:
    """A ``lib`` model cut after each of its feature stages (``model.stages()`` without the head): stage name ->
    the module from the input to the end of that stage, which ``torch.fx`` can trace (``forward_features``
    checks its input with Python ``if``s, which symbolic tracing cannot follow). The last entry is the whole
    feature extractor, e.g. ``stem``, ``layer1`` .. ``layer4`` for a ResNet, ``conv1`` .. ``conv5`` for a VGG
    (each block ending with its pooling)."""
    if not hasattr(model, "stages"):
        raise TypeError(f"model_stages needs a lib model with stages(); {type(model).__name__} has none")
    features = [(name, m) for name, m in model.stages().items() if name != "head"]
    return {name: nn.Sequential(*(m for _, m in features[:k + 1])) for k, (name, _) in enumerate(features)}


# ---------------------------------------------------------------------------------------------
# torchvision's published numbers, and a table across architectures
# ---------------------------------------------------------------------------------------------
def torchvision_meta(name: str, weights: str = "IMAGENET1K_V1") -> dict:
    """Published figures of torchvision's ``name`` model (no download: they are in the weights enum).

    Keys: ``weights``, ``params`` (``num_params``), ``ops`` (``_ops``: GMACs at ``crop_size``, which
    torchvision's docs label GFLOPS), ``acc@1`` and ``acc@5`` (ImageNet-1K validation), ``crop_size``.
    The first (``IMAGENET1K_V1``) weights are the original recipe, closest to the papers.
    """
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise KeyError(f"torchvision has no model {name!r}; its classification models include "
                       f"{', '.join(sorted(torchvision.models.list_models(torchvision.models))[:12])}, ...") from None
    w = enum[weights]
    metrics = w.meta["_metrics"]["ImageNet-1K"]
    return {"weights": f"{type(w).__name__}.{w.name}", "params": w.meta["num_params"], "ops": w.meta["_ops"],
            "acc@1": metrics["acc@1"], "acc@5": metrics["acc@5"], "crop_size": w.transforms.keywords["crop_size"]}


def compare_architectures(names: Iterable[str], input_size: InputSize | None = None, *,
                          receptive_field: bool = True) -> pd.DataFrame:
    """One row per model: parameters and GMACs measured on ``lib``'s model beside torchvision's published
    ones, ImageNet top-1 of torchvision's V1 weights, and the centre unit's receptive field.

    ``input_size=None`` measures each model at its own resolution (torchvision's evaluation crop, or
    ``lib.models.default_input_size``). The receptive field is measured at that size and may be
    clipped by the image (``rf_clipped``): it is then at least the image size.
    """
    rows = []
    for name in names:
        tv = torchvision_meta(TORCHVISION_TWINS[name]) if name in TORCHVISION_TWINS else {}
        if input_size is not None:
            size = _batch_size(input_size)
        elif tv:
            size = (1, 3, tv["crop_size"], tv["crop_size"])
        else:
            size = (1, *default_input_size(name))
        with torch.device("meta"):
            model = build(name)
        row = {"model": name, "resolution": size[-1], "params": count_params(model),
               "tv_params": tv.get("params"), "gmacs": count_macs(model, size) / 1e9,
               "tv_gmacs": tv.get("ops"), "acc@1": tv.get("acc@1")}
        if receptive_field:
            model = model.to_empty(device="cpu")  # linearised_copy overwrites every weight
            rf = empirical_receptive_field(model, size)
            row.update(rf=rf.size[0], rf_clipped=rf.clipped)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")
