"""Drills for the EfficientNet chapter: depthwise separable convolutions, the MBConv block with
squeeze-excitation, and compound scaling from B0 to B7.

Keys are computed by the formulas the steps show (``make_divisible`` and ``SCALINGS`` from
``lib.models``); ``measure`` counts on real modules built on the ``meta`` device: ``nn.Conv2d``,
``lib.models.blocks.MBConv`` and ``SqueezeExcitation``, and torchvision's ``efficientnet_b0..b7``.
"""
from __future__ import annotations

import functools
import math
import random

import torch
import torchvision
from torch import nn

from lib.counting import count_macs, count_params
from lib.drills._core import Question, drill
from lib.models.blocks import ConvBNAct, MBConv, SqueezeExcitation, make_divisible
from lib.models.efficientnet import B0_STAGES, SCALINGS

CHANNELS = (16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 256, 320, 384, 512)
SIZES = (7, 14, 28, 56, 112)
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # Tan & Le 2019, found by grid search on B0
BN_NOTE = "batch norm has 2 parameters per channel (its running statistics are buffers)"


def _meta(make):
    """Build a module on the ``meta`` device: shapes and parameter counts, no memory, no arithmetic."""
    with torch.device("meta"):
        return make()


def _out(n: int, k: int, s: int) -> int:
    """Output size of a k×k convolution with 'same' padding k // 2 and stride s: ⌈n / s⌉ for odd k."""
    return (n + 2 * (k // 2) - k) // s + 1


@functools.lru_cache(maxsize=None)
def _torchvision_b(i: int) -> nn.Module:
    """torchvision's EfficientNet-B``i`` on the meta device (built once; stage j is ``features[j]``)."""
    return _meta(getattr(torchvision.models, f"efficientnet_b{i}"))


def _separable(c_in: int, c_out: int, k: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_in, k, padding=k // 2, groups=c_in, bias=False),  # depthwise
                         nn.Conv2d(c_in, c_out, 1, bias=False))  # pointwise


def _mbconv_parts(c_in: int, c_out: int, t: int, k: int) -> tuple[int, int, tuple[int, int, int, int]]:
    """Hidden width h, SE squeeze width s, and the parameters of expand, depthwise, SE, project."""
    h, s = t * c_in, c_in // 4  # EfficientNet squeezes to a quarter of the block's *input* channels
    return h, s, (c_in * h + 2 * h, k * k * h + 2 * h, 2 * h * s + s + h, h * c_out + 2 * c_out)


@drill("efficientnet", "Parameters of a depthwise separable convolution")
def separable_params(rng: random.Random) -> Question:
    c_in, c_out, k = rng.choice(CHANNELS), rng.choice(CHANNELS), rng.choice([3, 5, 7])
    dw, pw = k * k * c_in, c_in * c_out
    standard = k * k * c_in * c_out
    return Question(
        prompt=f"A depthwise separable convolution from {c_in} to {c_out} channels: a {k}×{k} depthwise convolution "
               f"followed by a 1×1 pointwise one, both without bias. How many parameters?",
        answer=dw + pw,
        steps=("params = k²·C_in (depthwise) + C_in·C_out (pointwise)",
               f"= {k}²·{c_in} + {c_in}·{c_out} = {dw} + {pw}",
               f"= {dw + pw}",
               f"a standard {k}×{k} convolution would hold k²·C_in·C_out = {standard}, "
               f"{standard / (dw + pw):.1f}× more"),
        measure=lambda: count_params(_meta(lambda: _separable(c_in, c_out, k))),
        unit="parameters",
    )


@drill("efficientnet", "MACs of a depthwise separable convolution")
def separable_macs(rng: random.Random) -> Question:
    c_in, c_out, k, n = rng.choice(CHANNELS), rng.choice(CHANNELS), rng.choice([3, 5]), rng.choice(SIZES)
    dw, pw = k * k * c_in * n * n, c_in * c_out * n * n
    return Question(
        prompt=f"A {k}×{k} depthwise separable convolution from {c_in} to {c_out} channels (stride 1, 'same' padding) "
               f"on a {n}×{n} map, batch size 1. How many multiply-accumulates (MACs)?",
        answer=dw + pw,
        steps=("MACs = H·W·(k²·C_in + C_in·C_out): depthwise, then pointwise",
               f"= {n}·{n}·({k}²·{c_in} + {c_in}·{c_out}) = {dw} + {pw}",
               f"= {dw + pw}"),
        measure=lambda: count_macs(_meta(lambda: _separable(c_in, c_out, k)), (1, c_in, n, n)),
        unit="MACs",
    )


@drill("efficientnet", "Cost of a separable convolution relative to a standard one")
def separable_ratio(rng: random.Random) -> Question:
    c_in, c_out, k, n = rng.choice(CHANNELS), rng.choice(CHANNELS), rng.choice([3, 5, 7]), rng.choice(SIZES)
    ratio = 1 / c_out + 1 / k ** 2
    return Question(
        prompt=f"On a {n}×{n} map, a {k}×{k} convolution from {c_in} to {c_out} channels (stride 1, 'same' padding) is "
               f"replaced by a depthwise separable one. What fraction of the standard convolution's MACs does the "
               f"separable one need? Give it to three significant digits.",
        answer=ratio,
        steps=("(k²·C_in + C_in·C_out)·HW / (k²·C_in·C_out·HW) = 1/C_out + 1/k²",
               f"= 1/{c_out} + 1/{k * k} = {1 / c_out:.3g} + {1 / k ** 2:.3g}",
               f"= {ratio:.3g} (H, W and C_in cancel out)"),
        measure=lambda: (count_macs(_meta(lambda: _separable(c_in, c_out, k)), (1, c_in, n, n))
                         / count_macs(_meta(lambda: nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)),
                                      (1, c_in, n, n))),
        unit="×",
        rel_tol=0.01,
    )


@drill("efficientnet", "MACs of a depthwise convolution alone")
def depthwise_macs(rng: random.Random) -> Question:
    c, k, s, n = rng.choice(CHANNELS + (576, 672, 960, 1152)), rng.choice([3, 5]), rng.choice([1, 2]), rng.choice(SIZES)
    m = _out(n, k, s)
    macs = c * k * k * m * m
    return Question(
        prompt=f"A {k}×{k} depthwise convolution (groups = channels = {c}), stride {s}, padding {k // 2}, on a {n}×{n} "
               f"map, batch size 1. How many MACs?",
        answer=macs,
        steps=(f"out = ⌊(n + 2p − k)/s⌋ + 1 = ⌊({n} + {2 * (k // 2)} − {k})/{s}⌋ + 1 = {m}",
               "MACs = C·k²·out² (each output value uses one k×k filter of one channel)",
               f"= {c}·{k * k}·{m}² = {macs}"),
        measure=lambda: count_macs(_meta(lambda: nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False)), (1, c, n, n)),
        unit="MACs",
    )


@drill("efficientnet", "Hidden width of an MBConv block")
def mbconv_hidden(rng: random.Random) -> Question:
    c_in, t = rng.randint(10, 120), rng.choice([3, 4, 6])
    raw = c_in * t
    hidden = make_divisible(raw)
    return Question(
        prompt=f"An MBConv block with {c_in} input channels and expansion ratio t = {t}; as in torchvision, the "
               f"expanded width is rounded by `_make_divisible` (nearest multiple of 8, never more than 10% down). "
               f"How many channels does its depthwise convolution filter?",
        answer=hidden,
        steps=("hidden = make_divisible(t·C_in, 8) = 8·⌊(t·C_in + 4)/8⌋ (+8 if that is below 0.9·t·C_in)",
               f"t·C_in = {t}·{c_in} = {raw} → 8·⌊{raw + 4}/8⌋ = {8 * ((raw + 4) // 8)}",
               f"= {hidden} channels"),
        measure=lambda: _meta(lambda: MBConv(c_in, c_in, expand_ratio=t)).block[-3][0].out_channels,
        unit="channels",
    )


@drill("efficientnet", "Parameters of a squeeze-and-excitation block")
def se_params(rng: random.Random) -> Question:
    c, r = rng.choice([64, 96, 128, 144, 192, 240, 256, 384, 480, 512, 672, 1152]), rng.choice([4, 8, 16])
    s = c // r
    params = 2 * c * s + s + c
    return Question(
        prompt=f"A squeeze-and-excitation block on {c} channels with reduction r = {r}: global average pooling, a 1×1 "
               f"convolution to C/r channels, SiLU, a 1×1 convolution back to C, sigmoid; both convolutions with bias. "
               f"How many parameters?",
        answer=params,
        steps=("params = C·(C/r) + C/r (fc1) + (C/r)·C + C (fc2) = 2·C·s + s + C, s = C/r",
               f"s = {c}/{r} = {s}; 2·{c}·{s} + {s} + {c}",
               f"= {params}"),
        measure=lambda: count_params(_meta(lambda: SqueezeExcitation(c, s))),
        unit="parameters",
    )


@drill("efficientnet", "Parameters of an MBConv block")
def mbconv_params(rng: random.Random) -> Question:
    c_in, c_out = rng.choice(CHANNELS[:12]), rng.choice(CHANNELS[:12])
    t, k = rng.choice([4, 6]), rng.choice([3, 5])
    h, s, parts = _mbconv_parts(c_in, c_out, t, k)
    return Question(
        prompt=f"An MBConv block (EfficientNet, `lib.models.blocks.MBConv`) from {c_in} to {c_out} channels, expansion "
               f"t = {t}, {k}×{k} depthwise: 1×1 expand + BN, depthwise + BN, SE squeezing to C_in/4 channels (its two "
               f"1×1 convolutions with bias), 1×1 project + BN; convolutions otherwise without bias, {BN_NOTE}. "
               f"How many parameters?",
        answer=sum(parts),
        steps=("(C_in·h + 2h) + (k²·h + 2h) + (2·h·s + s + h) + (h·C_out + 2·C_out), h = t·C_in, s = C_in/4",
               f"h = {t}·{c_in} = {h}, s = {c_in}/4 = {s}",
               f"= {parts[0]} + {parts[1]} + {parts[2]} + {parts[3]}",
               f"= {sum(parts)}"),
        measure=lambda: count_params(_meta(lambda: MBConv(c_in, c_out, expand_ratio=t, kernel_size=k))),
        unit="parameters",
    )


@drill("efficientnet", "MACs of an MBConv block")
def mbconv_macs(rng: random.Random) -> Question:
    c_in, c_out = rng.choice(CHANNELS[:10]), rng.choice(CHANNELS[:10])
    t, k, st, n = rng.choice([4, 6]), rng.choice([3, 5]), rng.choice([1, 2]), rng.choice([14, 28, 56])
    h, s, m = t * c_in, c_in // 4, _out(n, k, st)
    parts = (n * n * c_in * h, m * m * k * k * h, 2 * h * s, m * m * h * c_out)
    return Question(
        prompt=f"An MBConv block from {c_in} to {c_out} channels, expansion t = {t}, {k}×{k} depthwise with stride "
               f"{st}, SE squeezing to C_in/4 channels, on a {n}×{n} input, batch size 1. How many MACs (convolutions "
               f"only: batch norm, activations, pooling and the gate's product are not counted)?",
        answer=sum(parts),
        steps=("H·W·C_in·h (expand) + H'·W'·k²·h (depthwise) + 2·h·s (SE) + H'·W'·h·C_out (project)",
               f"h = {h}, s = {s}, H' = {m}: {n}²·{c_in}·{h} + {m}²·{k * k}·{h} + 2·{h}·{s} + {m}²·{h}·{c_out}",
               f"= {parts[0]} + {parts[1]} + {parts[2]} + {parts[3]}",
               f"= {sum(parts)}"),
        measure=lambda: count_macs(_meta(lambda: MBConv(c_in, c_out, st, expand_ratio=t, kernel_size=k)),
                                   (1, c_in, n, n)),
        unit="MACs",
    )


@functools.lru_cache(maxsize=None)
def _conv_stack_macs(depth: float, width: float, resolution: float) -> int:
    """MACs of a plain stack of 1×1 convolutions, 100 layers × 1000 channels × 1000×1000 pixels at scale 1
    (large enough that rounding the scaled sizes to integers moves the count by under 0.4% for φ ≤ 7)."""
    d, c, r = round(100 * depth), round(1000 * width), round(1000 * resolution)
    conv = _meta(lambda: nn.Conv2d(c, c, 1, bias=False))
    return count_macs(nn.Sequential(*[conv] * d), (1, c, r, r))


@drill("efficientnet", "Compound scaling: growth of the MACs")
def compound_growth(rng: random.Random) -> Question:
    phi = rng.randint(5, 70) / 10
    base = ALPHA * BETA ** 2 * GAMMA ** 2
    growth = base ** phi
    return Question(
        prompt=f"Compound scaling with φ = {phi:g}: depth × α^φ, width × β^φ, resolution × γ^φ, with α = {ALPHA}, "
               f"β = {BETA}, γ = {GAMMA}. A convolutional network's MACs grow with depth · width² · resolution²: "
               f"by what factor do they grow? Give it to two decimals.",
        answer=growth,
        steps=("growth = α^φ · (β^φ)² · (γ^φ)² = (α·β²·γ²)^φ",
               f"= ({ALPHA} × {BETA}² × {GAMMA}²)^{phi:g} = {base:.4f}^{phi:g}",
               f"= {growth:.2f}× (the rule's 2^φ would say {2 ** phi:.2f}×)"),
        measure=lambda: (_conv_stack_macs(ALPHA ** phi, BETA ** phi, GAMMA ** phi) / _conv_stack_macs(1, 1, 1)),
        unit="×",
        rel_tol=0.01,
    )


@drill("efficientnet", "Channels after width scaling")
def scaled_channels(rng: random.Random) -> Question:
    i, j = rng.randint(1, 7), rng.randint(1, 7)
    w, c = SCALINGS[f"efficientnet_b{i}"].width, B0_STAGES[j - 1].c_out
    ans = make_divisible(c * w)
    return Question(
        prompt=f"EfficientNet-B{i} multiplies B0's widths by w = {w}, and rounds each to a multiple of 8 with "
               f"`_make_divisible` (nearest multiple of 8, +8 if that lost more than 10%). B0's stage {j + 1} outputs "
               f"{c} channels: how many does B{i}'s?",
        answer=ans,
        steps=("c' = 8·⌊(c·w + 4)/8⌋, +8 if that is below 0.9·c·w",
               f"c·w = {c} × {w} = {c * w:g} → 8·⌊{c * w + 4:g}/8⌋ = {8 * int((c * w + 4) // 8)}",
               f"= {ans} channels"),
        measure=lambda: _torchvision_b(i).features[j][-1].block[-1][0].out_channels,
        unit="channels",
    )


@drill("efficientnet", "Blocks per stage after depth scaling")
def scaled_depth(rng: random.Random) -> Question:
    i, j = rng.randint(1, 7), rng.randint(1, 7)
    d, n = SCALINGS[f"efficientnet_b{i}"].depth, B0_STAGES[j - 1].num_layers
    ans = math.ceil(n * d)
    return Question(
        prompt=f"EfficientNet-B{i} multiplies B0's depth by d = {d}, rounding each stage's block count up. B0's stage "
               f"{j + 1} has {n} MBConv block{'s' if n > 1 else ''}: how many does B{i}'s have?",
        answer=ans,
        steps=("n' = ⌈n·d⌉",
               f"= ⌈{n} × {d}⌉ = ⌈{n * d:g}⌉",
               f"= {ans} blocks"),
        measure=lambda: len(_torchvision_b(i).features[j]),
        unit="blocks",
    )


@drill("efficientnet", "Output size after the stem")
def stem_output(rng: random.Random) -> Question:
    n = rng.choice([rng.randint(28, 640), 224, 240, 260, 300, 380, 456, 528, 600])
    s = 2
    m = _out(n, 3, s)
    return Question(
        prompt=f"EfficientNet's stem is a 3×3 convolution with stride {s} and padding 1. What is the height of its "
               f"output for a {n}×{n} input?",
        answer=m,
        steps=("out = ⌊(n + 2p − k)/s⌋ + 1",
               f"= ⌊({n} + 2 − 3)/{s}⌋ + 1 = ⌊{n - 1}/{s}⌋ + 1",
               f"= {m} pixels (= ⌈n/2⌉)"),
        measure=lambda: _meta(lambda: ConvBNAct(3, 32, 3, s))(torch.empty(1, 3, n, n, device="meta")).shape[-1],
        unit="pixels",
    )


@drill("efficientnet", "MACs of the stem at a member's own resolution")
def stem_macs(rng: random.Random) -> Question:
    i, batch = rng.randint(0, 7), rng.choice([1, 8, 16, 32, 64])
    sc = SCALINGS[f"efficientnet_b{i}"]
    r, c = sc.resolution, make_divisible(32 * sc.width)
    m = _out(r, 3, 2)
    macs = batch * 3 * 9 * c * m * m
    return Question(
        prompt=f"EfficientNet-B{i} runs at its resolution from the chapter's table with width multiplier "
               f"{sc.width}: its stem is a 3×3 stride-2 convolution (padding 1) from 3 channels to 32·w rounded to a "
               f"multiple of 8. How many MACs does the stem do on a batch of {batch} image{'s' if batch > 1 else ''}?",
        answer=macs,
        steps=(f"resolution {r}; C = make_divisible(32 × {sc.width}) = {c}; out = ⌈{r}/2⌉ = {m}",
               "MACs = N·3·3²·C·out²",
               f"= {batch}·27·{c}·{m}² = {macs}"),
        measure=lambda: count_macs(_torchvision_b(i).features[0], (batch, 3, r, r)),
        unit="MACs",
    )
