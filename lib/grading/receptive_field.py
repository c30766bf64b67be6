"""Checks of assignment 2 (``receptive_field``): the textbook recursion on random chains, branching networks
against ``lib.analysis.empirical_receptive_field``, and whole networks against published and measured fields."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Imported here, not inside the checks: a test cell loads a fresh copy of lib.grading and then gives the
# notebook its own modules back, so everything a check uses must be bound when the fresh copy loads.
from lib.analysis import empirical_receptive_field
from lib.grading.base import fail, quiet
from lib.models import efficientnet_b0, resnet50
from lib.models.blocks import SqueezeExcitation, make_shortcut
from lib.models.resnet import ResNet
from lib.models.vgg import VGG_CONFIGS, make_features


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
            fail(f"{desc} returned {type(result).__name__} without `{attr}`: return a Field(size=..., jump=..., "
                  f"centers=...)")
    size, jump = tuple(int(v) for v in result.size), tuple(int(v) for v in result.jump)
    if len(size) != 2 or len(jump) != 2 or len(result.centers) != 2:
        fail(f"{desc}: size, jump and centers must be (height, width) pairs, got size={result.size}, "
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


@quiet
def check_rf_chain(fn: Callable, model: nn.Sequential, input_size: Sequence[int], *, centers: bool = False) -> None:
    """``fn(model, input_size)`` on a chain of layers: size and jump (and with ``centers``, the centre of
    every output unit) equal the textbook recursion."""
    hw = tuple(input_size[-2:])
    expected = chain_field_reference(list(model), hw)
    described = ", ".join(repr(m) for m in model if _window_geometry(m) is not None)
    desc = f"compute_receptive_field on [{described}] with input {tuple(input_size)}"
    size, jump, (ys, xs) = _as_field(fn(model, tuple(input_size)), desc)
    if size != expected["size"]:
        fail(f"{desc}: size {size}, expected {expected['size']}: {_chain_hint(list(model), hw, size)}")
    if jump != expected["jump"]:
        fail(f"{desc}: jump {jump}, expected {expected['jump']}: the jump is the product of the strides "
              f"(per axis: a stride (1, 2) moves 1 pixel down and 2 across)")
    if not centers:
        return
    if (len(ys), len(xs)) != expected["n"]:
        with torch.no_grad():
            shape = model(torch.zeros(1, *input_size[-3:])).shape[-2:]
        fail(f"{desc}: {len(ys)}x{len(xs)} centres, but the output is {shape[0]}x{shape[1]}: one centre per "
              f"output row and column (mind ceil_mode)")
    for axis, got, start, step in (("row", ys, expected["start"][0], expected["jump"][0]),
                                   ("column", xs, expected["start"][1], expected["jump"][1])):
        want = [start + i * step for i in range(len(got))]
        if any(abs(a - b) > 1e-6 for a, b in zip(got, want)):
            offset = got[0] - want[0]
            hint = ("padding shifts the first centre back by p * jump" if offset != 0 and all(
                abs(a - b - offset) < 1e-6 for a, b in zip(got, want)) else
                "centre of unit i = start + i * jump, with start += ((d*(k-1))/2 - p) * jump at each layer")
            fail(f"{desc}: the {axis} centres start {[round(c, 2) for c in got[:3]]}, expected "
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


@quiet
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
        fail(f"{desc}: size {size}, but the gradient-based field (lib.analysis.empirical_receptive_field) "
              f"is {measured.size}: {hint}")
    if (len(ys), len(xs)) != out_hw:
        fail(f"{desc}: {len(ys)}x{len(xs)} centres, but the output is {out_hw[0]}x{out_hw[1]}")
    i, j = measured.unit
    got = (ys[i], xs[j])
    if any(abs(a - b) > 1e-6 for a, b in zip(got, measured.center)):
        fail(f"{desc}: unit {measured.unit} is centred at {got}, but its measured field is centred at "
              f"{measured.center}: check the start offsets (padding) on every path")
    if len(ys) > 1 and abs((ys[1] - ys[0]) - jump[0]) > 1e-6:
        fail(f"{desc}: neighbouring centres are {ys[1] - ys[0]} pixels apart but the jump is {jump[0]}")
    far = empirical_receptive_field(model, (1, *input_size[-3:]), unit=(i, min(j + 1, out_hw[1] - 1)))
    if not far.clipped and abs(xs[far.unit[1]] - far.center[1]) > 1e-6:
        fail(f"{desc}: unit {far.unit} is centred at x={xs[far.unit[1]]}, measured {far.center[1]}: "
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


@quiet
def check_rf_published(fn: Callable, name: str, *, input_size: Sequence[int] = (3, 224, 224)) -> None:
    """``fn`` reproduces the field of a whole network: Araujo et al.'s published values, or the measured ones."""
    expected = {**PUBLISHED_FIELDS, **MEASURED_FIELDS}[name]
    source = ("Araujo et al. 2019 publish" if name in PUBLISHED_FIELDS
              else "lib.analysis.empirical_receptive_field measures")
    desc = f"compute_receptive_field on {name}'s feature extractor at {tuple(input_size)}"
    size, jump, (ys, xs) = _as_field(fn(published_feature_extractor(name), tuple(input_size)), desc)
    if size != (expected, expected):
        fail(f"{desc}: size {size}, but {source} {expected}x{expected}"
              + (": where a residual branch and its shortcut meet, keep the larger field" if size[0] < expected else ""))
    if jump != (32, 32):
        fail(f"{desc}: jump {jump}, expected (32, 32): five stride-2 layers")
    n = input_size[-1] // 32
    if len(xs) != n:
        fail(f"{desc}: {len(xs)} column centres, expected {n} (the output is {n}x{n})")


@quiet
def check_rf_stages(fn: Callable, stage_fields: dict, *, input_size: Sequence[int] = (3, 224, 224)) -> None:
    """The per-stage analysis: for each network a dict stage name -> Field, in order, growing, ending at the
    published or measured field, and each entry what ``fn`` gives for that stage."""
    builders = {"VGG-16": (_VGGFeatures, "vgg16"), "ResNet-50": (resnet50, "resnet50"),
                "EfficientNet-B0": (efficientnet_b0, "efficientnet_b0")}
    missing = [k for k in builders if k not in stage_fields]
    if missing:
        fail(f"stage_fields has no entry for {missing}: analyse all three networks")
    for label, (build, key) in builders.items():
        stages = model_stages(build().eval())
        fields = stage_fields[label]
        if list(fields) != list(stages):
            fail(f"stage_fields[{label!r}] has the stages {list(fields)}, expected {list(stages)} "
                  f"(use model_stages)")
        sizes = [_as_field(f, f"stage_fields[{label!r}]")[0][0] for f in fields.values()]
        if any(b < a for a, b in zip(sizes, sizes[1:])):
            fail(f"stage_fields[{label!r}]: the field shrinks from one stage to the next ({sizes})")
        expected = {**PUBLISHED_FIELDS, **MEASURED_FIELDS}[key]
        if sizes[-1] != expected:
            fail(f"stage_fields[{label!r}] ends at {sizes[-1]}, expected {expected}")
        name, module = list(stages.items())[len(stages) // 2]
        direct = _as_field(fn(module, tuple(input_size)), label)[0]
        if tuple(fields[name].size) != direct:
            fail(f"stage_fields[{label!r}][{name!r}] is {tuple(fields[name].size)}, but compute_receptive_field "
                  f"gives {direct} for that stage: fill the table from your function")
