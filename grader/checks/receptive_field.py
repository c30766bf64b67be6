"""The judge of assignment 2 (``receptive_field``): the textbook recursion on random chains, branching
networks and whole networks against the grader's analytic reference.

Every hidden case is a model given by the few lines of source that build it (``build``), which the test cell
runs on PyTorch's meta device (shapes, no values) before calling the student's ``compute_receptive_field``;
the grader builds the same model here and computes the expected field. On the meta device a calculator
that measures the field by back-propagation (``lib.analysis.empirical_receptive_field``) instead of computing
it fails. ``tests/test_nbgrader_checks.py`` checks the reference against that measurement on real copies.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from grader.checks.base import fail, ok
from grader.judge import Cell, Check, check
from lib.analysis import model_stages
from lib.models.blocks import make_shortcut
from lib.scratch import output_size, pair

# Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019, Table 1:
# the field of the last feature map at 224x224. ResNet-50 "v1" has the stride on the first 1x1 of a bottleneck.
PUBLISHED_FIELDS = {"vgg16": 212, "resnet50_v1": 483}  # tests/ check that the reference gives them


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
        elif node.op == "output":
            out = fields[node.args[0]]
            break
        else:
            fields[node] = _node_field(node, modules, [fields[a] for a in node.all_input_nodes
                                                       if fields.get(a) is not None])
    if out is None or out is _GLOBAL:
        raise ValueError("the model's output has no spatial layout")
    return {"size": (out[0].r, out[1].r), "jump": (out[0].j, out[1].j),
            "centers": (tuple(out[0].start + i * out[0].j for i in range(out[0].n)),
                        tuple(out[1].start + i * out[1].j for i in range(out[1].n)))}


def _node_field(node: fx.Node, modules: dict[str, nn.Module], inputs: list) -> object:
    """One node's field from its inputs' fields: through its window (a convolution or a pooling), global (a
    global pooling, a mean, a linear layer), or the largest local input's where paths meet."""
    geometry = None
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, _GLOBAL_MODULES):
            return _GLOBAL
        geometry = _window_geometry(m)
    elif node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        geometry = _function_geometry(node)
    elif (node.op == "call_function" and node.target in _GLOBAL_FUNCTIONS) or \
            (node.op == "call_method" and node.target == "mean"):
        return _GLOBAL
    local = [f for f in inputs if f is not _GLOBAL]
    if not local:
        return _GLOBAL if inputs else None
    if geometry is not None:
        k, s, p, d, ceil = geometry
        return tuple(_through(local[0][a], k[a], s[a], p[a], d[a], ceil) for a in range(2))
    return max(local, key=lambda f: f[0].r * f[1].r)


# ---- hidden cases: models given by their source ------------------------------------------------------------

def _layer_source(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return (f"nn.Conv2d({m.in_channels}, {m.out_channels}, {m.kernel_size}, stride={m.stride}, "
                f"padding={m.padding}, dilation={m.dilation})")
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return f"nn.{type(m).__name__}({m.kernel_size}, stride={m.stride}, padding={m.padding}, ceil_mode={m.ceil_mode})"
    return f"nn.{type(m).__name__}()"


def random_chain(seed: int, *, channels: int = 2) -> tuple[str, tuple[int, int, int]]:
    """The source of a random chain of convolutions and poolings (kernels, strides, paddings, dilations,
    non-square ones, ceil_mode), and an input size it accepts."""
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    for _ in range(100):  # draw until the chain accepts its input (no window larger than its padded input)
        layers, size = _draw_chain(pick, g, channels)
        try:
            chain_field_reference(layers, size[1:])
        except ValueError:
            continue
        return "model = nn.Sequential(\n" + "".join(f"    {_layer_source(m)},\n" for m in layers) + ")", size
    raise RuntimeError(f"random_chain({seed}) found no valid chain")  # pragma: no cover


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

    def __init__(self, width, k):
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

    def __init__(self, width, k):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, width, (1, k), stride=(1, 2), padding=(0, k // 2)),
                               nn.Conv2d(width, width, (k, 1), padding=(k // 2, 0)))
        self.b = nn.Conv2d(3, width, (3, 1), stride=(1, 2), padding=(1, 0))

    def forward(self, x):
        return self.a(x) * torch.sigmoid(self.b(x))


class _BottleneckV1(nn.Module):
    """ResNet v1's bottleneck: the stride on the first 1x1 (He et al. 2015; TF-slim's resnet_v1_50)."""

    expansion = 4

    def __init__(self, c_in, c_out, stride=1):
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


def graph_source(kind: str, **options) -> str:
    """A branching network: ``branching_model``'s kinds with other options, and two the notebook never shows."""
    if kind in ("dense", "asymmetric"):
        cls = {"dense": _DenseNet, "asymmetric": _Asymmetric}[kind]
        return inspect.getsource(cls) + f"\n\nmodel = {cls.__name__}({options['width']}, {options['k']})"
    args = "".join(f", {k}={v!r}" for k, v in options.items())
    return f"from lib.models.branching import branching_model\nmodel = branching_model({kind!r}{args})"


def network_source(name: str, stage: int = -1) -> str:
    """A named network's feature extractor (or its ``stage``-th stage, from ``model_stages``)."""
    build = f"from lib.models import {name}\nnet = {name}()"
    if name == "resnet50_v1":
        build = (inspect.getsource(_BottleneckV1) + "\n\nfrom lib.models.blocks import make_shortcut\n"
                 "from lib.models.resnet import ResNet\nnet = ResNet(_BottleneckV1, (3, 4, 6, 3))")
    return build + f"\nfrom lib.analysis import model_stages\nmodel = list(model_stages(net.eval()).values())[{stage}]"


@functools.lru_cache(maxsize=256)
def expected_field(source: str, input_size: tuple[int, int, int]) -> dict:
    """The reference field of the model ``source`` builds (on the meta device), computed once per process."""
    namespace = {"torch": torch, "nn": nn, "F": F}
    with torch.device("meta"):
        exec(compile(source, "<hidden case>", "exec"), namespace)  # the grader's own source, never a report
    return reference_field(namespace["model"].eval(), input_size)


# ---- the judges --------------------------------------------------------------------------------------------

def _as_field(out, desc: str) -> tuple:
    if not isinstance(out, dict) or not all(k in out for k in ("size", "jump", "centers")):
        fail(f"{desc} returned {out!r:.60} without size, jump and centers: return a Field(size=..., jump=..., centers=...)")
    size, jump, centers = out["size"], out["jump"], out["centers"]
    if not (isinstance(size, list) and isinstance(jump, list) and isinstance(centers, list)) or \
            len(size) != 2 or len(jump) != 2 or len(centers) != 2 or not all(isinstance(c, list) for c in centers):
        fail(f"{desc}: size, jump and centers must be (height, width) pairs")
    return tuple(size), tuple(jump), (tuple(centers[0]), tuple(centers[1]))


def _meta_hint(error: str) -> str:
    return (": the hidden tests use models on PyTorch's meta device (shapes, no values), so compute the field "
            "from the layers' kernel sizes, strides, paddings and dilations; do not run the model or measure "
            "gradients (for shapes, run it on torch.empty(..., device='meta'))")


def _field_of(result, desc: str) -> tuple:
    if isinstance(result, dict) and isinstance(result.get("error"), str):
        fail(f"{desc} raised {result['error'][:200]}{_meta_hint(result['error'])}")
    return _as_field(ok(result, desc), desc)


def _check_centers(desc: str, ys, xs, expected: dict) -> None:
    want_ys, want_xs = expected["centers"]
    if (len(ys), len(xs)) != (len(want_ys), len(want_xs)):
        fail(f"{desc}: {len(ys)}x{len(xs)} centres, but the output is {len(want_ys)}x{len(want_xs)}: one centre per "
             f"output row and column (mind ceil_mode)")
    for axis, got, want in (("row", ys, want_ys), ("column", xs, want_xs)):
        if any(abs(a - b) > 1e-6 for a, b in zip(got, want)):
            offset = got[0] - want[0]
            hint = ("padding shifts the first centre back by p * jump" if offset != 0 and all(
                abs(a - b - offset) < 1e-6 for a, b in zip(got, want)) else
                "centre of unit i = start + i * jump, with start += ((d*(k-1))/2 - p) * jump at each layer")
            fail(f"{desc}: the {axis} centres start {[round(c, 2) for c in got[:3]]}, expected "
                 f"{[round(c, 2) for c in want[:3]]} (pixel i of the input is centred at i): {hint}")


def _check_field(c: dict, result) -> None:
    """Size and jump (and with ``centers``, the centre of every output unit) equal the reference's."""
    desc = f"{c['name']} at {tuple(c['input_size'])}"
    expected = expected_field(c["build"], tuple(c["input_size"]))
    size, jump, (ys, xs) = _field_of(result, desc)
    if size != expected["size"]:
        hint = c.get("hint") or "walk the layers in order: r += d*(k-1)*j, then j *= s"
        fail(f"{desc}: size {size}, expected {expected['size']}: {hint}")
    if jump != expected["jump"]:
        fail(f"{desc}: jump {jump}, expected {expected['jump']}: the jump is the product of the strides "
             f"(per axis: a stride (1, 2) moves 1 pixel down and 2 across)")
    if c.get("centers"):
        _check_centers(desc, ys, xs, expected)


def judge_fields(cases: list[dict], results: list) -> list[Check]:
    return [check(f"{c['name']} at {tuple(c['input_size'])}", _check_field, c, r) for c, r in zip(cases, results)]


HAND_WRITTEN_CHAINS = {  # cases the random ones may miss: non-square kernels and strides, ceil_mode in both poolings
    False: [([nn.Conv2d(1, 1, (1, 5), stride=(2, 1)), nn.AvgPool2d(3, 2), nn.Conv2d(1, 1, (3, 1), dilation=(1, 3))],
             (1, 30, 26))],
    True: [([nn.Conv2d(1, 1, 4, stride=2, padding=1), nn.MaxPool2d(3, 2, 1, ceil_mode=True)], (1, 21, 18)),
           ([nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.AvgPool2d(3, 2, 1, ceil_mode=True)], (1, 20, 17))],
}


def chain_cases(rng: random.Random, *, n: int, centers: bool) -> list[dict]:
    cases = []
    for layers, size in HAND_WRITTEN_CHAINS[centers]:
        described = ", ".join(_layer_source(m) for m in layers)
        cases.append(dict(name=f"the chain {described}", input_size=size, build=f"model = nn.Sequential({described})"))
    for i in range(n):
        build, size = random_chain(rng.randrange(2**31))
        cases.append(dict(name=f"random chain {i + 1}", build=build, input_size=size))
    return [dict(c, centers=centers) for c in cases]


def graph_cases(rng: random.Random) -> list[dict]:
    def hw(low: int, high: int) -> tuple[int, int, int]:
        return (3, rng.randint(low, high), rng.randint(low, high))
    hint = ("where paths meet (+, *, torch.cat) keep the largest field over the incoming paths (a squeeze-"
            "excitation gate's global pooling does not count), and follow functional calls such as F.avg_pool2d")
    models = [("residual", dict(width=3, k=rng.choice([3, 5]), dilation=rng.choice([1, 2])), hw(40, 52)),
              ("inception", dict(dilation=rng.choice([2, 3])), hw(36, 44)),
              ("dilated", dict(rates=rng.choice([(1, 3, 6), (1, 2, 5), (2, 3, 4)])), hw(56, 64)),
              ("gated", dict(k=rng.choice([3, 5])), hw(28, 36)),
              ("dense", dict(width=2, k=rng.choice([3, 5])), hw(28, 36)),
              ("asymmetric", dict(width=2, k=rng.choice([5, 7])), hw(28, 42))]
    return [dict(name=f"the {kind} network", build=graph_source(kind, **options), input_size=size, centers=True,
                 hint=hint) for kind, options, size in models]


PUBLISHED_SOURCES = {"vgg16": "Araujo et al. 2019 publish 212", "resnet50_v1": "Araujo et al. 2019 publish 483"}


def published_cases(rng: random.Random) -> list[dict]:
    hint = "where a residual branch and its shortcut meet, keep the larger field; follow every stride"
    drawn = rng.choice([("vgg19", (3, 256, 320)), ("resnet34", (3, 192, 160)), ("resnet50", (3, 224, 224)),
                        ("resnet18", (3, 160, 192))])
    return [dict(name=f"{name}'s feature extractor", build=network_source(name), input_size=size, hint=hint)
            for name, size in [("vgg16", (3, 224, 224)), ("resnet50_v1", (3, 224, 224)),
                               ("efficientnet_b0", (3, 224, 224)), drawn]]


STAGE_NETWORKS = {"VGG-16": "vgg16", "ResNet-50": "resnet50", "EfficientNet-B0": "efficientnet_b0"}


def stages_cases(rng: random.Random) -> list[dict]:
    name = rng.choice(list(STAGE_NETWORKS.values()))
    stage = rng.randint(1, 3)
    size = (3, rng.randint(160, 256), rng.randint(160, 256))
    return [dict(name=f"stage {stage} of {name}", build=network_source(name, stage), input_size=size)]


@functools.lru_cache(maxsize=8)
def _stage_sizes(name: str) -> dict:
    with torch.device("meta"):
        stages = model_stages(getattr(importlib.import_module("lib.models"), name)().eval())
    return {stage: list(reference_field(module, (3, 224, 224))["size"]) for stage, module in stages.items()}


def _check_table(label: str, result) -> None:
    tables = ok(result, "the per-stage analysis")["tables"]
    if not isinstance(tables, dict) or label not in tables:
        fail(f"stage_fields has no entry {label!r}: analyse all three networks")
    expected, got = _stage_sizes(STAGE_NETWORKS[label]), tables[label]
    if not isinstance(got, dict) or list(got) != list(expected):
        fail(f"stage_fields[{label!r}] has the stages {list(got)[:8] if isinstance(got, dict) else got!r:.60}, "
             f"expected {list(expected)} (use model_stages)")
    for stage, size in expected.items():
        if got[stage] != size:
            fail(f"stage_fields[{label!r}][{stage!r}] has size {got[stage]}, expected {size}: fill the table from "
                 f"your compute_receptive_field, stage by stage")


def judge_stages(cases: list[dict], results: list) -> list[Check]:
    c, result = cases[0], results[0]
    direct = result  # the error, or the reason it is missing
    if isinstance(result, dict) and isinstance(result.get("ok"), dict):
        direct = {"ok": result["ok"].get("direct")}
    checks = [check(f"stage_fields[{label!r}]", _check_table, label, result) for label in STAGE_NETWORKS]
    return checks + [check(f"{c['name']} at {tuple(c['input_size'])}", _check_field, c, direct)]


CELLS = {
    "test_rf_chain": Cell(functools.partial(chain_cases, n=5, centers=False), judge_fields),
    "test_rf_centers": Cell(functools.partial(chain_cases, n=2, centers=True), judge_fields),
    "test_rf_graph": Cell(graph_cases, judge_fields),
    "test_rf_published": Cell(published_cases, judge_fields),
    "test_rf_stages": Cell(stages_cases, judge_stages),
}
