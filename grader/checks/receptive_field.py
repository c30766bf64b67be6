"""Hidden checks of assignment 2 (``receptive_field``): the textbook recursion on random chains, branching
networks and whole networks against the grader's analytic reference.

The hidden cases are built on PyTorch's meta device (shapes, no values), so a ``compute_receptive_field``
that measures the field by back-propagation (``lib.analysis.empirical_receptive_field``) instead of
computing it cannot pass them. ``tests/test_nbgrader_checks.py`` checks the reference against that
measurement on real copies of every hidden case.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

# Imported here, not inside the checks: a hidden test loads a fresh copy of grader.checks and then gives the
# notebook its own modules back, so everything a check uses must be bound when the fresh copy loads.
from grader.checks.base import fail, quiet
from grader.checks.integrity import assert_untampered, reference  # noqa: F401 (the cells call it)
from lib.analysis import model_stages
from lib.models import efficientnet_b0, resnet18, resnet34, resnet50, vgg11, vgg16, vgg19
from lib.models.blocks import make_shortcut
from lib.models.branching import branching_model
from lib.models.resnet import ResNet
from lib.scratch import output_size, pair

# Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019, Table 1:
# the field of the last feature map at 224x224. ResNet-50 "v1" has the stride on the first 1x1 of a bottleneck.
PUBLISHED_FIELDS = {"vgg16": 212, "resnet50_v1": 483}


# ---- the reference -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Axis:
    r: int         # field so far
    j: int         # jump
    start: float   # centre of the first unit, in input pixels
    n: int         # units along the axis


_GLOBAL = "global"  # a node that has seen the whole image through global pooling


def _window_geometry(m: nn.Module):
    """(kernel, stride, padding, dilation) as (h, w) pairs, and ceil_mode, of a sliding-window module."""
    if isinstance(m, nn.Conv2d):
        k, d = pair(m.kernel_size), pair(m.dilation)
        p = {"same": tuple(di * (ki - 1) // 2 for ki, di in zip(k, d)), "valid": (0, 0)}.get(m.padding, m.padding)
        return k, pair(m.stride), pair(p), d, False
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return (pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding),
                pair(getattr(m, "dilation", 1)), m.ceil_mode)
    return None


def _function_geometry(node: fx.Node):
    args = {**dict(zip(("input", "kernel_size", "stride", "padding"), node.args)), **node.kwargs}
    k = pair(args["kernel_size"])
    return (k, pair(args.get("stride") or args["kernel_size"]), pair(args.get("padding", 0)),
            pair(args.get("dilation", 1)), bool(args.get("ceil_mode", False)))


def _through(a: _Axis, k: int, s: int, p: int, d: int, ceil_mode: bool) -> _Axis:
    span = d * (k - 1) + 1
    return _Axis(a.r + (span - 1) * a.j, a.j * s, a.start + ((span - 1) / 2 - p) * a.j,
                 output_size(a.n, k, s, p, d, ceil_mode))


@reference
def chain_field_reference(layers: Sequence[nn.Module], input_hw: Sequence[int]) -> dict:
    """The textbook recursion over a chain of layers, per axis (Araujo et al. 2019, eqs. 1-3 written forward):
    ``r += (d(k-1)) * j``, ``start += (d(k-1)/2 - p) * j``, ``j *= s``; layers without a window keep the field.
    Returns ``size``, ``jump``, ``start`` and ``n`` (units per axis), each an (h, w) pair."""
    axes = [_Axis(1, 1, 0.0, n) for n in input_hw]
    for m in layers:
        g = _window_geometry(m)
        if g is not None:
            k, s, p, d, ceil = g
            axes = [_through(axes[a], k[a], s[a], p[a], d[a], ceil) for a in range(2)]
    return {"size": tuple(a.r for a in axes), "jump": tuple(a.j for a in axes),
            "start": tuple(a.start for a in axes), "n": tuple(a.n for a in axes)}


_POOL_FUNCTIONS = (F.max_pool2d, F.avg_pool2d)
_GLOBAL_FUNCTIONS = (F.adaptive_avg_pool2d, F.adaptive_max_pool2d)
_GLOBAL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)


@reference
def reference_field(model: nn.Module, input_size: Sequence[int]) -> dict:
    """The field of ``model``'s output for inputs ``(C, H, W)``, from its traced graph: the recursion through
    every convolution and pooling, the largest field where paths meet, global paths (squeeze-excitation)
    left out where they meet local ones. Works on the meta device: nothing is run."""
    *_, h, w = input_size
    was_training = model.training
    model.eval()
    try:
        graph = fx.symbolic_trace(model).graph
    finally:
        model.train(was_training)
    modules = dict(model.named_modules())
    fields: dict[fx.Node, object] = {}
    out = None
    for node in graph.nodes:
        if node.op == "placeholder":
            fields[node] = (_Axis(1, 1, 0.0, h), _Axis(1, 1, 0.0, w))
            continue
        if node.op == "output":
            out = fields[node.args[0]]
            break
        inputs = [fields[a] for a in node.all_input_nodes if fields.get(a) is not None]
        local = [f for f in inputs if f is not _GLOBAL]
        geometry = None
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, _GLOBAL_MODULES):
                fields[node] = _GLOBAL
                continue
            geometry = _window_geometry(m)
        elif node.op == "call_function" and node.target in _POOL_FUNCTIONS:
            geometry = _function_geometry(node)
        elif (node.op == "call_function" and node.target in _GLOBAL_FUNCTIONS) or \
                (node.op == "call_method" and node.target == "mean"):
            fields[node] = _GLOBAL
            continue
        if not local:
            fields[node] = _GLOBAL if inputs else None
        elif geometry is not None:
            k, s, p, d, ceil = geometry
            fields[node] = tuple(_through(local[0][a], k[a], s[a], p[a], d[a], ceil) for a in range(2))
        else:
            fields[node] = max(local, key=lambda f: f[0].r * f[1].r)
    if out is None or out is _GLOBAL:
        raise ValueError("the model's output has no spatial layout")
    return {"size": (out[0].r, out[1].r), "jump": (out[0].j, out[1].j),
            "centers": (tuple(out[0].start + i * out[0].j for i in range(out[0].n)),
                        tuple(out[1].start + i * out[1].j for i in range(out[1].n)))}


# ---- hidden cases --------------------------------------------------------------------------------------

def random_chain(seed: int, *, channels: int = 2, device: str = "meta") -> tuple[nn.Sequential, tuple[int, int, int]]:
    """A random chain of convolutions and poolings (kernels, strides, paddings, dilations, non-square ones,
    ceil_mode) and an input size it accepts, on ``device`` (meta: shapes, no values)."""
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    for _ in range(100):  # draw until the chain accepts its input (no window larger than its padded input)
        layers, size = _draw_chain(pick, g, channels)
        try:
            chain_field_reference(layers, size[1:])
        except ValueError:
            continue
        with torch.device(device):
            return nn.Sequential(*[_rebuild(m) for m in layers]), size
    raise RuntimeError(f"random_chain({seed}) found no valid chain")  # pragma: no cover


def _rebuild(m: nn.Module) -> nn.Module:
    """The same layer, built on the current default device."""
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return type(m)(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
    return type(m)()


def _draw_chain(pick: Callable, g: torch.Generator, channels: int) -> tuple[list[nn.Module], tuple[int, int, int]]:
    layers: list[nn.Module] = []
    for _ in range(int(torch.randint(3, 7, (1,), generator=g))):
        kind = pick(["conv", "conv", "conv", "max", "avg"])
        if kind == "conv":
            k = pick([1, 2, 3, 3, 5, (1, 3), (3, 1), (5, 3)])
            kh, kw = pair(k)
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
    return layers, (channels, h, w)


class _DenseNet(nn.Module):
    """Dense connectivity (Huang et al. 2017): each layer reads the concatenation of all before it; a strided
    transition, then a functional average pooling that is not a module."""

    def __init__(self, width: int, k: int):
        super().__init__()
        self.l1 = nn.Conv2d(3, width, k, padding=k // 2)
        self.l2 = nn.Conv2d(3 + width, width, 3, padding=1)
        self.transition = nn.Conv2d(3 + 2 * width, width, 1, stride=2)
        self.l3 = nn.Conv2d(width, width, 3, padding=2, dilation=2)

    def forward(self, x):
        x = torch.cat([x, F.relu(self.l1(x))], 1)
        x = torch.cat([x, F.relu(self.l2(x))], 1)
        x = self.transition(x)
        x = torch.cat([x, self.l3(x)], 1)
        return F.avg_pool2d(x, 3, stride=2, padding=1)


class _Asymmetric(nn.Module):
    """Inception-v3-style factorised kernels: a (1, k) then (k, 1) branch beside a strided (3, 1) one."""

    def __init__(self, width: int, k: int):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, width, (1, k), stride=(1, 2), padding=(0, k // 2)),
                               nn.Conv2d(width, width, (k, 1), padding=(k // 2, 0)))
        self.b = nn.Conv2d(3, width, (3, 1), stride=(1, 2), padding=(1, 0))

    def forward(self, x):
        return self.a(x) * torch.sigmoid(self.b(x))


def hidden_model(kind: str, **options) -> nn.Module:
    """A branching network for the hidden tests, on the meta device: ``branching_model``'s kinds with other
    options, and two the notebook never shows (``dense``, ``asymmetric``)."""
    builders = {"dense": lambda width=2, k=5: _DenseNet(width, k),
                "asymmetric": lambda width=2, k=7: _Asymmetric(width, k)}
    with torch.device("meta"):
        model = builders[kind](**options) if kind in builders else branching_model(kind, **options)
    return model.eval()


def real_copy(model: nn.Module) -> nn.Module:
    """A model built on the meta device, materialised on the CPU with random weights (for tests/)."""
    return model.to_empty(device="cpu").apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)


# ---- the checks ----------------------------------------------------------------------------------------

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


def _call(fn: Callable, model: nn.Module, input_size: Sequence[int], desc: str):
    """The student's function on a (meta-device) model; a failure there says why hidden cases have no values."""
    try:
        return fn(model, tuple(input_size))
    except Exception as e:  # noqa: BLE001 - any error of the student's code is a failed case
        meta = any(p.is_meta for p in model.parameters())
        why = (": the hidden tests use models on PyTorch's meta device (shapes, no values), so compute the field "
               "from the layers' kernel sizes, strides, paddings and dilations; do not run the model or measure "
               "gradients (for shapes, run it on torch.empty(..., device='meta'))" if meta else "")
        fail(f"{desc} raised {type(e).__name__}: {str(e)[:200]}{why}")


def _chain_hint(layers: Sequence[nn.Module], input_hw, size) -> str:
    """Name the usual mistake by recomputing the chain with it."""
    r = [1, 1]  # forgetting the jump: every layer adds d(k - 1)
    undilated = [1, 1]
    j = [1, 1]
    for m in layers:
        g = _window_geometry(m)
        if g:
            k, s, _, d, _ = g
            for a in range(2):
                r[a] += d[a] * (k[a] - 1)
                undilated[a] += (k[a] - 1) * j[a]
                j[a] *= s[a]
    if tuple(size) == tuple(r):
        return "each layer adds (k - 1) input pixels times the jump (the product of the strides before it)"
    if tuple(size) == tuple(undilated):
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
    size, jump, (ys, xs) = _as_field(_call(fn, model, input_size, desc), desc)
    if size != expected["size"]:
        fail(f"{desc}: size {size}, expected {expected['size']}: {_chain_hint(list(model), hw, size)}")
    if jump != expected["jump"]:
        fail(f"{desc}: jump {jump}, expected {expected['jump']}: the jump is the product of the strides "
             f"(per axis: a stride (1, 2) moves 1 pixel down and 2 across)")
    if not centers:
        return
    if (len(ys), len(xs)) != expected["n"]:
        fail(f"{desc}: {len(ys)}x{len(xs)} centres, but the output is {expected['n'][0]}x{expected['n'][1]}: one "
             f"centre per output row and column (mind ceil_mode)")
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


@quiet
def check_rf_graph(fn: Callable, model: nn.Module, input_size: Sequence[int], *, name: str = "model") -> None:
    """``fn`` on a branching network: size, jump and the centre of every output unit equal the reference."""
    desc = f"compute_receptive_field on the {name} network with input {tuple(input_size)}"
    expected = reference_field(model, input_size)
    size, jump, (ys, xs) = _as_field(_call(fn, model, input_size, desc), desc)
    if size != expected["size"]:
        if size[0] >= input_size[-2] > expected["size"][0]:
            hint = ("the field covers the whole input: a squeeze-excitation gate's global pooling does not count "
                    "(skip the inputs that come from global pooling where paths meet)")
        elif size < expected["size"]:
            hint = ("where paths meet (+, *, torch.cat) keep the largest field over all incoming paths, and "
                    "follow functional calls such as F.avg_pool2d and F.max_pool2d too")
        else:
            hint = "a layer counts only on the paths that go through it"
        fail(f"{desc}: size {size}, expected {expected['size']}: {hint}")
    if jump != expected["jump"]:
        fail(f"{desc}: jump {jump}, expected {expected['jump']}: the jump is the product of the strides on a path")
    want_ys, want_xs = expected["centers"]
    if (len(ys), len(xs)) != (len(want_ys), len(want_xs)):
        fail(f"{desc}: {len(ys)}x{len(xs)} centres, but the output is {len(want_ys)}x{len(want_xs)}")
    for axis, got, want in (("row", ys, want_ys), ("column", xs, want_xs)):
        if any(abs(a - b) > 1e-6 for a, b in zip(got, want)):
            fail(f"{desc}: the {axis} centres start {[round(c, 2) for c in got[:3]]}, expected "
                 f"{[round(c, 2) for c in want[:3]]}: check the start offsets (padding) on every path")


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


_FEATURE_EXTRACTORS = {
    "vgg16": vgg16, "vgg11": vgg11, "vgg19": vgg19, "resnet50": resnet50, "resnet18": resnet18, "resnet34": resnet34,
    "efficientnet_b0": efficientnet_b0, "resnet50_v1": lambda: ResNet(_BottleneckV1, (3, 4, 6, 3)),
}


def published_feature_extractor(name: str, *, device: str = "meta") -> nn.Module:
    """The whole feature extractor of a named network (the last of ``model_stages``), on ``device`` (the meta
    device by default: VGG's 124M-parameter classifier then costs nothing)."""
    with torch.device(device):
        model = _FEATURE_EXTRACTORS[name]().eval()
    return list(model_stages(model).values())[-1]


@quiet
def check_rf_published(fn: Callable, name: str, *, input_size: Sequence[int] = (3, 224, 224)) -> None:
    """``fn`` on a whole network's feature extractor: the field that Araujo et al. publish where they do
    (VGG-16, ResNet-50 v1), and the reference's elsewhere."""
    model = published_feature_extractor(name)
    expected = reference_field(model, input_size)
    if name in PUBLISHED_FIELDS and expected["size"] != (PUBLISHED_FIELDS[name],) * 2:  # pragma: no cover
        raise AssertionError(f"the reference gives {expected['size']} for {name}, Araujo et al. publish "
                             f"{PUBLISHED_FIELDS[name]}")
    source = "Araujo et al. 2019 publish" if name in PUBLISHED_FIELDS else "the field is"
    desc = f"compute_receptive_field on {name}'s feature extractor at {tuple(input_size)}"
    size, jump, (ys, xs) = _as_field(_call(fn, model, input_size, desc), desc)
    if size != expected["size"]:
        fail(f"{desc}: size {size}, but {source} {expected['size'][0]}x{expected['size'][1]}"
             + (": where a residual branch and its shortcut meet, keep the larger field"
                if size[0] < expected["size"][0] else ""))
    if jump != expected["jump"]:
        fail(f"{desc}: jump {jump}, expected {expected['jump']}: five stride-2 layers")
    if len(xs) != len(expected["centers"][1]) or len(ys) != len(expected["centers"][0]):
        fail(f"{desc}: {len(ys)}x{len(xs)} centres, expected {len(expected['centers'][0])}x"
             f"{len(expected['centers'][1])} (one per output row and column)")


@quiet
def check_rf_stages(fn: Callable, stage_fields: dict, *, input_size: Sequence[int] = (3, 224, 224)) -> None:
    """The per-stage analysis: for each network a dict stage name -> Field, in order, each entry what the
    reference gives for that stage (so each is what ``fn`` should give)."""
    builders = {"VGG-16": vgg16, "ResNet-50": resnet50, "EfficientNet-B0": efficientnet_b0}
    missing = [k for k in builders if k not in stage_fields]
    if missing:
        fail(f"stage_fields has no entry for {missing}: analyse all three networks")
    for label, build in builders.items():
        with torch.device("meta"):
            stages = model_stages(build().eval())
        fields = stage_fields[label]
        if list(fields) != list(stages):
            fail(f"stage_fields[{label!r}] has the stages {list(fields)}, expected {list(stages)} "
                 f"(use model_stages)")
        for name, module in stages.items():
            size = _as_field(fields[name], f"stage_fields[{label!r}][{name!r}]")[0]
            expected = reference_field(module, input_size)["size"]
            if size != expected:
                fail(f"stage_fields[{label!r}][{name!r}] has size {size}, expected {expected}: fill the table from "
                     f"your compute_receptive_field, stage by stage")
        name, module = list(stages.items())[len(stages) // 2]
        direct = _as_field(_call(fn, module, input_size, label), label)[0]
        if direct != reference_field(module, input_size)["size"]:
            fail(f"compute_receptive_field gives {direct} for {label}'s stage {name!r}, but the field is "
                 f"{reference_field(module, input_size)['size']}")
