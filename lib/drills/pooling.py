"""Drills for the pooling chapter: output sizes of pooling (ceil_mode included), sizes through pooling stages and
through AlexNet, receptive field and jump of conv + pool stacks, what global average pooling saves, adaptive and
pyramid pooling, downsampling factors. Keys come from the formulas (``lib.scratch.output_size``,
``lib.models.alexnet.output_size``); torch checks them on real layers and on the course's ``simple_cnn``.
"""
from __future__ import annotations

import math
import random

import torch
from torch import nn

from lib.analysis import empirical_receptive_field
from lib.counting import count_params
from lib.drills._core import Question, drill
from lib.models import simple_cnn
from lib.models.alexnet import ALEXNET_CONFIGS, make_features
from lib.models.alexnet import output_size as alexnet_output_size
from lib.scratch import output_size

CHANNELS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
SIZES = (7, 14, 27, 28, 32, 55, 56, 64, 112, 224)
Layer = tuple[str, int, int, int]  # (kind "conv" | "max", kernel, stride, padding)


def _side(module: nn.Module, n: int, c: int = 1) -> int:
    """Height of ``module``'s output on a (1, c, n, n) input, computed on the meta device."""
    return module.to("meta")(torch.empty(1, c, n, n, device="meta")).shape[-1]


def _build(layers: list[Layer]) -> nn.Sequential:
    """One-channel modules for a stack written as (kind, kernel, stride, padding)."""
    return nn.Sequential(*(nn.Conv2d(1, 1, k, s, p) if kind == "conv" else nn.MaxPool2d(k, s, p)
                           for kind, k, s, p in layers))


def _draw_stack(rng: random.Random) -> list[Layer]:
    """A conv + pool stack of 3 to 6 layers with at least one convolution and one pooling, total stride <= 16."""
    menu: list[Layer] = [("conv", 3, 1, 1), ("conv", 3, 1, 1), ("conv", 5, 1, 2), ("conv", 3, 2, 1),
                         ("max", 2, 2, 0), ("max", 3, 2, 1)]
    while True:
        layers = [rng.choice(menu) for _ in range(rng.randint(2, 5))]
        layers.insert(rng.randint(0, len(layers)), rng.choice(menu[4:]))
        if any(kind == "conv" for kind, *_ in layers) and math.prod(s for _, _, s, _ in layers) <= 16:
            return layers  # a jump of at most 16 keeps torch's measurement small


def _describe(layers: list[Layer]) -> str:
    return ", ".join(f"{'conv' if kind == 'conv' else 'max pool'} {k}×{k}/{s}" for kind, k, s, _ in layers)


def _field_and_jumps(layers: list[Layer]) -> tuple[int, list[int]]:
    """Receptive field after the stack and the jump before each layer (r += (k − 1)·j, then j *= s)."""
    r, jumps = 1, [1]
    for _, k, s, _ in layers:
        r += (k - 1) * jumps[-1]
        jumps.append(jumps[-1] * s)
    return r, jumps


@drill("pooling", "Output size of max pooling")
def pool_output(rng: random.Random) -> Question:
    n, (k, s) = rng.choice(SIZES + (13, 15, 100)), rng.choice([(2, 2), (3, 2), (3, 1), (3, 3), (4, 4), (5, 2)])
    p = rng.randint(0, k // 2)
    out = output_size(n, k, s, p)
    return Question(
        prompt=f"`nn.MaxPool2d(kernel_size={k}, stride={s}, padding={p})` is applied to a {n}×{n} feature map. "
               f"What is the output height, in pixels?",
        answer=out,
        steps=("n_out = ⌊(n + 2p − k) / s⌋ + 1", f"= ⌊({n} + 2·{p} − {k}) / {s}⌋ + 1 = ⌊{n + 2 * p - k} / {s}⌋ + 1",
               f"= {out}"),
        measure=lambda: _side(nn.MaxPool2d(k, s, p), n),
        unit="pixels")


@drill("pooling", "Max pooling with ceil_mode=True")
def ceil_mode_output(rng: random.Random) -> Question:
    n, (k, s) = rng.choice([7, 9, 13, 15, 25, 27, 55, 57, 111, 113]), rng.choice([(2, 2), (3, 2), (3, 3)])
    p = rng.choice([0, 0, 1]) if k == 3 else 0
    out, floor_out = output_size(n, k, s, p, ceil_mode=True), output_size(n, k, s, p)
    return Question(
        prompt=f"`nn.MaxPool2d({k}, stride={s}, padding={p}, ceil_mode=True)` is applied to a {n}×{n} map. What is "
               f"the output height, in pixels? (PyTorch drops a last window that would start in the right padding.)",
        answer=out,
        steps=("n_out = ⌈(n + 2p − k) / s⌉ + 1, minus 1 if the last window starts at or beyond n + p",
               f"= ⌈({n} + 2·{p} − {k}) / {s}⌉ + 1 = ⌈{n + 2 * p - k} / {s}⌉ + 1",
               f"= {out} (floor mode would give {floor_out})"),
        measure=lambda: _side(nn.MaxPool2d(k, s, p, ceil_mode=True), n),
        unit="pixels")


@drill("pooling", "Spatial size after several pooling stages")
def size_after_stages(rng: random.Random) -> Question:
    n = rng.choice([28, 30, 32, 48, 50, 64, 100, 150, 224, 225, 227, 299])
    stages = rng.randint(2, min(5, n.bit_length() - 1))  # the last map keeps at least one pixel
    sizes = [n]
    for _ in range(stages):
        sizes.append(sizes[-1] // 2)
    return Question(
        prompt=f"A {n}×{n} feature map goes through {stages} stages, each ending with a 2×2 max pooling of stride 2 "
               f"(the convolutions keep the size). What is the side of the last map, in pixels?",
        answer=sizes[-1],
        steps=("each pooling: n → ⌊n / 2⌋ (an odd row or column is dropped)",
               " → ".join(map(str, sizes)), f"= {sizes[-1]}"),
        measure=lambda: _side(nn.Sequential(*(nn.MaxPool2d(2) for _ in range(stages))), n),
        unit="pixels")


@drill("pooling", "Receptive field of a conv + pool stack")
def receptive_field_stack(rng: random.Random) -> Question:
    layers = _draw_stack(rng)
    r, jumps = _field_and_jumps(layers)
    return Question(
        prompt=f"A stack of layers, written k×k/stride (convolutions padded by k // 2): {_describe(layers)}. "
               f"How wide, in input pixels, is the receptive field of one unit after the last layer?",
        answer=r,
        steps=("r = 1 + Σ (k_i − 1)·j_i, where the jump j_i = product of the strides before layer i",
               f"j = {', '.join(map(str, jumps[:-1]))}; r = 1 + "
               + " + ".join(f"{k - 1}·{j}" for (_, k, _, _), j in zip(layers, jumps)),
               f"= {r}"),
        measure=lambda: empirical_receptive_field(_build(layers), (1, 1, 2 * r + 16, 2 * r + 16), fit=True).size[0],
        unit="pixels")


def _measured_jump(layers: list[Layer], n: int) -> int | None:
    """Input pixels between the fields of two horizontally neighbouring units of the last map."""
    model, c = _build(layers), (_side(_build(layers), n) - 1) // 2
    a, b = (empirical_receptive_field(model, (1, 1, n, n), unit=(c, c + dc)) for dc in (0, 1))
    return None if a.clipped or b.clipped else b.box[1] - a.box[1]


@drill("pooling", "Jump (effective stride) after a conv + pool stack")
def jump_stack(rng: random.Random) -> Question:
    layers = _draw_stack(rng)
    r, jumps = _field_and_jumps(layers)
    return Question(
        prompt=f"A stack of layers, written k×k/stride: {_describe(layers)}. Two neighbouring units of the last "
               f"map are how many input pixels apart (the jump, or effective stride)?",
        answer=jumps[-1],
        steps=("jump = product of all the strides", " · ".join(str(s) for _, _, s, _ in layers),
               f"= {jumps[-1]}"),
        measure=lambda: _measured_jump(layers, 2 * r + 4 * jumps[-1] + 16),
        unit="pixels")


@drill("pooling", "Parameters saved by global average pooling")
def gap_saving(rng: random.Random) -> Question:
    c, side, f = rng.choice(CHANNELS[3:]), rng.choice([4, 6, 7, 8, 14]), rng.choice([10, 100, 1000, 4096])
    flatten, gap = c * side * side * f + f, c * f + f
    return Question(
        prompt=f"The last feature map is {c}×{side}×{side}. A fully connected layer to {f} outputs (with bias) reads "
               f"either the flattened map or its global average (one number per channel). How many parameters does "
               f"global average pooling save?",
        answer=flatten - gap,
        steps=("saved = (C·H·W·F + F) − (C·F + F) = C·F·(H·W − 1)", f"= {c}·{f}·({side}·{side} − 1)",
               f"= {flatten - gap} ({1 - gap / flatten:.1%} of the flatten layer)"),
        measure=lambda: count_params(nn.Linear(c * side * side, f, device="meta"))
        - count_params(nn.Linear(c, f, device="meta")),
        unit="parameters")


@drill("pooling", "Parameters of SimpleCNN's head, GAP or flatten")
def simple_cnn_head(rng: random.Random) -> Question:
    w, n, head = rng.choice([8, 16, 32, 64]), rng.choice([28, 32, 36, 40, 64]), rng.choice(["gap", "flatten"])
    features = 4 * w * (1 if head == "gap" else (n // 2 // 2) ** 2)
    params = features * 10 + 10
    reads = "its global average (4w numbers)" if head == "gap" else "the flattened last map (4w × n/4 × n/4 numbers)"
    return Question(
        prompt=f"The chapter's `simple_cnn(width={w}, head='{head}', image_size={n})` ends with a 4w-channel map "
               f"after two 2×2 poolings; its classifier `fc` reads {reads} and gives 10 classes. How many parameters "
               f"does `fc` have, bias included?",
        answer=params,
        steps=("params = in_features·10 + 10, in_features = 4w·(⌊⌊n/2⌋/2⌋)² (flatten) or 4w (GAP)",
               f"in_features = 4·{w}" + ("" if head == "gap" else f"·{n // 4}²") + f" = {features}",
               f"params = {features}·10 + 10 = {params}"),
        measure=lambda: count_params(simple_cnn(width=w, head=head, image_size=n).fc),
        unit="parameters")


def _with_strided_convs(w: int, k: int) -> nn.Module:
    """simple_cnn(width=w) with both 2×2 poolings replaced by k×k stride-2 convolutions (no bias)."""
    model = simple_cnn(width=w)
    model.features[3] = nn.Conv2d(w, w, k, 2, (k - 1) // 2, bias=False)  # halves the map, as the pooling did
    model.features[7] = nn.Conv2d(2 * w, 2 * w, k, 2, (k - 1) // 2, bias=False)
    return model


def _gain(w: int, k: int) -> int | None:
    """Parameters gained by the replacement, if the new network's last map has the old one's shape."""
    with torch.device("meta"):
        new, old = _with_strided_convs(w, k), simple_cnn(width=w)
        x = torch.empty(1, 1, 28, 28)
        same = new.features(x).shape == old.features(x).shape  # (1, 4w, 7, 7)
    return count_params(new) - count_params(old) if same else None


@drill("pooling", "Parameters of strided convolutions replacing the poolings")
def strided_conv_params(rng: random.Random) -> Question:
    w, k = rng.choice([8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128]), rng.choice([2, 3])
    added = k * k * w * w + k * k * (2 * w) ** 2
    return Question(
        prompt=f"In `simple_cnn(width={w})` both 2×2 max poolings (after the {w}- and the {2 * w}-channel stages) are "
               f"replaced by {k}×{k} convolutions of stride 2, padding {(k - 1) // 2}, no bias, keeping the channels. "
               f"How many parameters does the network gain?",
        answer=added,
        steps=(f"a pooling has 0 parameters; a C → C {k}×{k} conv has {k * k}·C²: gained = {k * k}·w² + {k * k}·(2w)²",
               f"= {k * k}·{w}² + {k * k}·{2 * w}²", f"= {added}"),
        measure=lambda: _gain(w, k),
        unit="parameters")


def _window_rows(n: int, o: int, i: int) -> int:
    """Input rows that reach output row i of AdaptiveAvgPool2d(o) on an n×n map (by backpropagation)."""
    x = torch.ones(1, 1, n, n, requires_grad=True)
    nn.AdaptiveAvgPool2d(o)(x)[0, 0, i, 0].backward()
    return int((x.grad[0, 0, :, 0] != 0).sum())


@drill("pooling", "Window of an adaptive average pooling")
def adaptive_window(rng: random.Random) -> Question:
    o = rng.choice([1, 2, 3, 4, 6, 7])
    n, i = rng.choice([s for s in range(max(o, 5), 65) if s % o or s in (7, 14, 28, 56)]), rng.randrange(o)
    start, end = i * n // o, math.ceil((i + 1) * n / o)
    return Question(
        prompt=f"`nn.AdaptiveAvgPool2d({o})` is applied to a {n}×{n} map. How many input rows does the window of "
               f"output row {i} (counting from 0) average over?",
        answer=end - start,
        steps=("row i averages rows ⌊i·n/o⌋ to ⌈(i + 1)·n/o⌉ − 1 (kernel n/o when o divides n)",
               f"⌊{i}·{n}/{o}⌋ = {start}, ⌈{i + 1}·{n}/{o}⌉ = {end}", f"= {end - start} rows"),
        measure=lambda: _window_rows(n, o, i),
        unit="rows")


@drill("pooling", "Map sizes through AlexNet's overlapping poolings")
def alexnet_sizes(rng: random.Random) -> Question:
    n = rng.choice([rng.randint(63, 400), 128, 224, 227, 256, 299, 384])
    config = ALEXNET_CONFIGS["alexnet"]
    chain = [n]
    for v in config:
        k, s, p = (3, 2, 0) if v == "M" else (v.kernel_size, v.stride, v.padding)
        chain.append(output_size(chain[-1], k, s, p))
    return Question(
        prompt=f"The course's AlexNet (conv1 11×11/4 pad 2, then 3×3/2 overlapping max poolings after conv1, conv2 "
               f"(5×5 pad 2) and conv5, the 3×3 convs padded by 1) gets a {n}×{n} image. What is the side of its last "
               f"feature map, in pixels?",
        answer=alexnet_output_size(config, n),
        steps=("conv1: ⌊(n + 4 − 11)/4⌋ + 1; each pool: ⌊(n − 3)/2⌋ + 1; the padded convs keep the size",
               "conv1 → pool → conv2 → pool → conv3..5 → pool: " + " → ".join(map(str, chain[:5] + chain[-1:])),
               f"= {chain[-1]}"),
        measure=lambda: _side(make_features(config), n, 3),
        unit="pixels")


_DOWN: dict[str, Layer] = {"conv 7×7/2": ("conv", 7, 2, 3), "conv 3×3/2": ("conv", 3, 2, 1),
                           "max pool 3×3/2": ("max", 3, 2, 1), "max pool 2×2/2": ("max", 2, 2, 0),
                           "conv 3×3/1": ("conv", 3, 1, 1), "conv 4×4/4 (patchify)": ("conv", 4, 4, 0)}


@drill("pooling", "Downsampling factor of a network")
def downsampling_factor(rng: random.Random) -> Question:
    names = [rng.choice(list(_DOWN)) for _ in range(rng.randint(3, 6))]
    strides = [_DOWN[m][2] for m in names]
    factor = math.prod(strides)
    return Question(
        prompt=f"A network's layers, in order, padded to keep sizes exact: {', '.join(names)}. By what factor is "
               f"the last map smaller than the input along each side (its output stride)?",
        answer=factor,
        steps=("output stride = product of the strides", " · ".join(map(str, strides)),
               f"= {factor}: a {7 * factor}×{7 * factor} image ends as a 7×7 map"),
        measure=lambda: 7 * factor / _side(_build([_DOWN[m] for m in names]), 7 * factor),
        unit="×")


@drill("pooling", "Values a 2×2 max pooling discards")
def discarded_values(rng: random.Random) -> Question:
    c, h, w = rng.choice(CHANNELS), rng.choice([7, 14, 15, 28, 55, 56, 112]), rng.choice([7, 14, 15, 28, 55, 56])
    kept = c * (h // 2) * (w // 2)
    return Question(
        prompt=f"A 2×2 max pooling with stride 2 reduces a {c}×{h}×{w} feature map. How many of its values are not "
               f"passed on to the next layer?",
        answer=c * h * w - kept,
        steps=("discarded = C·H·W − C·⌊H/2⌋·⌊W/2⌋ (3 of every 4, plus an odd last row or column)",
               f"= {c}·{h}·{w} − {c}·{h // 2}·{w // 2} = {c * h * w} − {kept}", f"= {c * h * w - kept}"),
        measure=lambda: (lambda x: x.numel() - nn.MaxPool2d(2)(x).numel())(torch.empty(1, c, h, w, device="meta")),
        unit="values")


@drill("pooling", "Output length of spatial pyramid pooling")
def pyramid_length(rng: random.Random) -> Question:
    c, n = rng.choice(CHANNELS), rng.choice([7, 13, 14, 19, 28])
    levels = rng.choice([(1, 2, 4), (1, 2, 3, 6), (1, 3, 6), (1, 2), (1, 4, 7)])
    length = c * sum(o * o for o in levels)
    return Question(
        prompt=f"Spatial pyramid pooling max-pools a {c}×{n}×{n} map to grids of "
               f"{', '.join(f'{o}×{o}' for o in levels)} (adaptive pooling) and concatenates the flattened results. "
               f"How long is the vector it gives?",
        answer=length,
        steps=("length = C·Σ o² (independent of the input size)",
               f"= {c}·(" + " + ".join(f"{o}²" for o in levels) + ")", f"= {length}"),
        measure=lambda: sum(nn.AdaptiveMaxPool2d(o)(torch.empty(1, c, n, n, device="meta")).numel() for o in levels),
        unit="values")
