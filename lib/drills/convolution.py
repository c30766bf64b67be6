"""Drills for the convolution chapter: output sizes, padding, parameters, MACs, receptive fields and memory of
convolutions, each key computed by the chapter's formulas (``lib.scratch.output_size``) and checked by torch on
a real ``nn.Conv2d`` (shapes and counts on the ``meta`` device, receptive fields by backpropagation).
"""
from __future__ import annotations

import random

import torch
from torch import nn

from lib.analysis import empirical_receptive_field
from lib.counting import count_macs, count_params
from lib.drills._core import Question, drill
from lib.scratch import output_size

CHANNELS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
SIZES = (7, 14, 28, 32, 56, 64, 112, 224)


def _side(module: nn.Module, c: int, n: int) -> int:
    """Height of ``module``'s output on a (1, c, n, n) input, computed on the meta device."""
    return module(torch.empty(1, c, n, n, device="meta")).shape[-1]


def _field(layers: list[nn.Module], n: int) -> int:
    """Measured receptive field (height, input pixels) of the centre unit of a stack of 1-channel layers."""
    return empirical_receptive_field(nn.Sequential(*layers), (1, 1, n, n), fit=True).size[0]


def _layers(ks: list[int], ss: list[int]) -> str:
    return ", ".join(f"{k}×{k}/{s}" for k, s in zip(ks, ss))


@drill("convolution", "Output size of a convolution with stride, padding and dilation")
def output_size_strided(rng: random.Random) -> Question:
    while True:
        n, k = rng.choice(SIZES + (27, 55, 227)), rng.choice([1, 3, 5, 7, 11])
        s, p, d = rng.choice([1, 2, 2, 4]), rng.randint(0, 3), rng.choice([1, 1, 1, 2, 3])
        if d * (k - 1) + 1 <= n + 2 * p:
            break
    out = output_size(n, k, s, p, d)
    return Question(
        prompt=f"A {k}×{k} convolution with stride {s}, padding {p} and dilation {d} is applied to a {n}×{n} "
               f"feature map. What is the output height, in pixels?",
        answer=out,
        steps=("n_out = ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1",
               f"= ⌊({n} + 2·{p} − {d}·({k} − 1) − 1) / {s}⌋ + 1 = ⌊{n + 2 * p - d * (k - 1) - 1} / {s}⌋ + 1",
               f"= {out}"),
        measure=lambda: _side(nn.Conv2d(1, 1, k, s, p, d, device="meta"), 1, n),
        unit="pixels")


def _padding_keeping(n: int, k: int, d: int) -> int | None:
    """The smallest padding for which torch's stride-1 convolution returns an n×n map."""
    for p in range(4 * k * d):
        try:
            if _side(nn.Conv2d(1, 1, k, padding=p, dilation=d, device="meta"), 1, n) == n:
                return p
        except RuntimeError:  # the kernel does not fit yet
            continue
    return None


@drill("convolution", "'Same' padding for a (dilated) kernel")
def same_padding(rng: random.Random) -> Question:
    n, k, d = rng.choice(SIZES[2:]), rng.choice([3, 5, 7]), rng.choice([1, 1, 2, 3, 4, 6])
    p = d * (k - 1) // 2
    return Question(
        prompt=f"A {k}×{k} convolution with dilation {d} and stride 1 runs on a {n}×{n} map. How many zeros of "
               f"padding on each side keep the output {n}×{n}?",
        answer=p,
        steps=("n_out = n + 2p − d(k − 1) with stride 1, so n_out = n needs p = d(k − 1) / 2",
               f"p = {d}·({k} − 1) / 2", f"= {p}"),
        measure=lambda: _padding_keeping(n, k, d),
        unit="pixels")


@drill("convolution", "Parameters of a convolution, bias or not")
def conv_params(rng: random.Random) -> Question:
    c_in, c_out = rng.choice((3,) + CHANNELS), rng.choice(CHANNELS)
    k, bias = rng.choice([1, 3, 3, 5, 7]), rng.random() < 0.5
    params = c_out * (c_in * k * k + bias)
    why = "with a bias per output channel" if bias else "without bias (a BatchNorm follows it)"
    return Question(
        prompt=f"A {k}×{k} convolution from {c_in} to {c_out} channels, {why}. How many parameters does it have?",
        answer=params,
        steps=("params = C_out·(C_in·k·k + b), b = 1 with a bias, 0 without",
               f"= {c_out}·({c_in}·{k}·{k} + {int(bias)})", f"= {params}"),
        measure=lambda: count_params(nn.Conv2d(c_in, c_out, k, bias=bias, device="meta")),
        unit="parameters")


@drill("convolution", "Parameters of a grouped convolution")
def grouped_params(rng: random.Random) -> Question:
    g = rng.choice([2, 4, 8, 32, "depthwise"])
    if g == "depthwise":
        c_in = c_out = g = rng.choice(CHANNELS)
        kind = f"a depthwise convolution (groups = {g})"
    else:
        c_in, c_out, kind = rng.choice(CHANNELS[3:]), rng.choice(CHANNELS[3:]), f"groups = {g}"
    k, bias = rng.choice([3, 5]), rng.random() < 0.5
    params = c_out * (c_in // g * k * k) + c_out * bias
    return Question(
        prompt=f"A {k}×{k} convolution from {c_in} to {c_out} channels with {kind}, "
               f"{'with' if bias else 'without'} bias. How many parameters does it have?",
        answer=params,
        steps=("each output channel sees only C_in / g input channels: params = C_out·(C_in/g)·k·k + C_out·b",
               f"= {c_out}·({c_in}/{g})·{k}·{k} + {c_out}·{int(bias)}", f"= {params}"),
        measure=lambda: count_params(nn.Conv2d(c_in, c_out, k, groups=g, bias=bias, device="meta")),
        unit="parameters")


@drill("convolution", "MACs of a convolution layer")
def conv_macs(rng: random.Random) -> Question:
    c_in, c_out, k = rng.choice((3,) + CHANNELS[:7]), rng.choice(CHANNELS[:7]), rng.choice([1, 3, 3, 5, 7])
    n, s = rng.choice(SIZES[2:]), rng.choice([1, 1, 2])
    out = output_size(n, k, s, k // 2)
    macs = c_out * out * out * c_in * k * k
    return Question(
        prompt=f"A {k}×{k} convolution, stride {s}, padding {k // 2}, no bias, maps a {c_in}×{n}×{n} input to "
               f"{c_out} channels. How many multiply-accumulates (MACs) does it do for one image?",
        answer=macs,
        steps=("MACs = C_out·H_out·W_out · C_in·k·k (one MAC per weight of a kernel, per output number)",
               f"H_out = ⌊({n} + 2·{k // 2} − {k}) / {s}⌋ + 1 = {out}; MACs = {c_out}·{out}·{out}·{c_in}·{k}·{k}",
               f"= {macs}"),
        measure=lambda: count_macs(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False, device="meta"),
                                   (1, c_in, n, n)),
        unit="MACs")


@drill("convolution", "Receptive field of a stack of convolutions")
def receptive_field_stack(rng: random.Random) -> Question:
    depth = rng.randint(2, 5)
    ks = [rng.choice([3, 3, 5, 7]) for _ in range(depth)]
    ss = [rng.choice([1, 1, 2]) for _ in range(depth)]
    jumps = [1]
    for s in ss[:-1]:
        jumps.append(jumps[-1] * s)  # j_i: input pixels between neighbouring inputs of layer i
    r = 1 + sum((k - 1) * j for k, j in zip(ks, jumps))
    return Question(
        prompt=f"Convolutions are stacked, written k×k/stride and each padded by k // 2: {_layers(ks, ss)}. "
               f"How wide, in input pixels, is the receptive field of one unit of the last layer?",
        answer=r,
        steps=("r = 1 + Σ (k_i − 1)·j_i, where j_i = product of the strides before layer i",
               f"j = {', '.join(map(str, jumps))}; r = 1 + " + " + ".join(f"{k - 1}·{j}" for k, j in zip(ks, jumps)),
               f"= {r}"),
        measure=lambda: _field([nn.Conv2d(1, 1, k, s, k // 2) for k, s in zip(ks, ss)], 2 * r + 8),
        unit="pixels")


@drill("convolution", "Effective kernel size of a dilated convolution")
def dilated_kernel(rng: random.Random) -> Question:
    k, d = rng.choice([3, 3, 5, 7]), rng.choice([2, 3, 4, 6, 8, 12])
    span = d * (k - 1) + 1
    return Question(
        prompt=f"A {k}×{k} convolution has dilation {d} (its taps are {d} pixels apart). How wide, in pixels, is "
               f"the window of input it covers (its effective kernel size)?",
        answer=span,
        steps=("k_eff = d·(k − 1) + 1", f"= {d}·({k} − 1) + 1",
               f"= {span}: {k * k} weights spread over a {span}×{span} window"),
        measure=lambda: _field([nn.Conv2d(1, 1, k, dilation=d)], span + 2),
        unit="pixels")


@drill("convolution", "Output size of a transposed convolution")
def transposed_output(rng: random.Random) -> Question:
    n, k, s = rng.choice([4, 7, 8, 14, 16, 28, 32]), rng.choice([2, 3, 4, 5]), rng.choice([1, 2, 2, 3])
    p, op = rng.randint(0, k // 2), rng.randint(0, s - 1)
    out = (n - 1) * s - 2 * p + (k - 1) + op + 1
    return Question(
        prompt=f"A transposed convolution (`nn.ConvTranspose2d`) with kernel {k}, stride {s}, padding {p} and "
               f"output_padding {op} takes a {n}×{n} map. What is the output height, in pixels?",
        answer=out,
        steps=("n_out = (n − 1)·s − 2p + (k − 1) + output_padding + 1",
               f"= ({n} − 1)·{s} − 2·{p} + ({k} − 1) + {op} + 1", f"= {out}"),
        measure=lambda: _side(nn.ConvTranspose2d(1, 1, k, s, p, op, device="meta"), 1, n),
        unit="pixels")


@drill("convolution", "Memory of a feature map in float32")
def activation_memory(rng: random.Random) -> Question:
    batch, c_in, c_out = rng.choice([8, 16, 32, 64, 128, 256]), rng.choice((3,) + CHANNELS[:5]), rng.choice(CHANNELS)
    n, s = rng.choice([28, 32, 56, 112, 224]), rng.choice([1, 2])
    out = output_size(n, 3, s, 1)
    mb = round(batch * c_out * out * out * 4 / 1e6, 2)
    return Question(
        prompt=f"A 3×3 convolution, stride {s}, padding 1, maps a batch of {batch} images of {c_in}×{n}×{n} to "
               f"{c_out} channels. How many MB does its output take in float32 (4 bytes; 1 MB = 10^6 bytes), "
               f"to two decimals?",
        answer=mb,
        steps=("bytes = N·C·H·W·4, with H = W = ⌊(n + 2 − 3) / s⌋ + 1",
               f"H = {out}; bytes = {batch}·{c_out}·{out}·{out}·4 = {batch * c_out * out * out * 4}",
               f"= {mb} MB"),
        measure=lambda: (lambda y: y.numel() * y.element_size() / 1e6)(
            nn.Conv2d(c_in, c_out, 3, s, 1, device="meta")(torch.empty(batch, c_in, n, n, device="meta"))),
        unit="MB", rel_tol=0.01)


@drill("convolution", "Cost of a 1×1 convolution")
def pointwise_macs(rng: random.Random) -> Question:
    c_in, n = rng.choice(CHANNELS[3:] + (1024, 2048)), rng.choice([7, 14, 28, 56])
    c_out = rng.choice([c for c in CHANNELS + (1024, 2048) if c != c_in])
    macs = n * n * c_in * c_out
    return Question(
        prompt=f"A 1×1 convolution (no bias) maps a {c_in}×{n}×{n} feature map to {c_out} channels. How many "
               f"multiply-accumulates (MACs) does it do for one image?",
        answer=macs,
        steps=("MACs = H·W·C_in·C_out (k = 1: a C_in → C_out matrix product at every pixel)",
               f"= {n}·{n}·{c_in}·{c_out}", f"= {macs}"),
        measure=lambda: count_macs(nn.Conv2d(c_in, c_out, 1, bias=False, device="meta"), (1, c_in, n, n)),
        unit="MACs")


@drill("convolution", "Depthwise-separable against standard convolution")
def separable_ratio(rng: random.Random) -> Question:
    c_in, c_out, k, n = rng.choice(CHANNELS), rng.choice(CHANNELS), rng.choice([3, 3, 5, 7]), rng.choice([14, 28, 56])
    ratio = round(k * k * c_out / (k * k + c_out), 2)
    standard = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False, device="meta")
    separable = nn.Sequential(nn.Conv2d(c_in, c_in, k, padding=k // 2, groups=c_in, bias=False, device="meta"),
                              nn.Conv2d(c_in, c_out, 1, bias=False, device="meta"))
    return Question(
        prompt=f"A standard {k}×{k} convolution from {c_in} to {c_out} channels (stride 1, 'same' padding, no bias) "
               f"on a {n}×{n} map is replaced by a {k}×{k} depthwise convolution followed by a 1×1 pointwise one. "
               f"How many times fewer MACs does the separable pair do, to two decimals?",
        answer=ratio,
        steps=("standard / separable = H·W·k²·C_in·C_out / (H·W·(k²·C_in + C_in·C_out)) = k²·C_out / (k² + C_out)",
               f"= {k * k}·{c_out} / ({k * k} + {c_out})", f"= {ratio}×"),
        measure=lambda: count_macs(standard, (1, c_in, n, n)) / count_macs(separable, (1, c_in, n, n)),
        unit="×", rel_tol=0.01)


@drill("convolution", "Stacked 3×3 convolutions against one large kernel")
def stacked_3x3_saving(rng: random.Random) -> Question:
    depth, c = rng.choice([2, 3]), rng.choice(CHANNELS)
    k = 2 * depth + 1  # the single kernel with the same receptive field
    saved = k * k * c * c - depth * 9 * c * c
    stack = nn.Sequential(*(nn.Conv2d(c, c, 3, padding=1, bias=False, device="meta") for _ in range(depth)))
    return Question(
        prompt=f"{depth} stacked 3×3 convolutions ({c} channels in and out, no bias) see the same {k}×{k} window "
               f"as one {k}×{k} convolution with {c} channels. How many parameters does the stack save?",
        answer=saved,
        steps=(f"saved = {k}²·C² − {depth}·3²·C² = {k * k - 9 * depth}·C²",
               f"= {k * k - 9 * depth}·{c}²",
               f"= {saved}: the stack keeps {9 * depth}/{k * k} = {9 * depth / (k * k):.0%} of the {k}×{k} weights, "
               f"and gains a ReLU per extra layer"),
        measure=lambda: count_params(nn.Conv2d(c, c, k, bias=False, device="meta")) - count_params(stack),
        unit="parameters")


@drill("convolution", "Parameters of a dense layer against a convolution")
def dense_equivalent(rng: random.Random) -> Question:
    c_in, c_out, n = rng.choice([1, 3]), rng.choice([8, 16, 32, 64]), rng.choice([8, 14, 16, 28, 32])
    n_in, n_out = c_in * n * n, c_out * n * n
    params = n_in * n_out + n_out
    return Question(
        prompt=f"A fully connected layer maps a flattened {c_in}×{n}×{n} image to {c_out} maps of {n}×{n} (the "
               f"output of a 3×3 'same' convolution), with a bias per output. How many parameters does it have?",
        answer=params,
        steps=("params = (C_in·H·W)·(C_out·H·W) + C_out·H·W",
               f"= {n_in}·{n_out} + {n_out}",
               f"= {params}, against {c_out * (c_in * 9 + 1)} for the 3×3 convolution"),
        measure=lambda: count_params(nn.Linear(n_in, n_out, device="meta")),
        unit="parameters")
