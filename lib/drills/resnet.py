"""Drills for the ResNet chapter: basic and bottleneck blocks, the two shortcuts, the CIFAR and ImageNet
families as tables, and how shape and receptive field change stage by stage.

Keys come from the formulas in the steps (and ``lib.models.resnet``'s tables); ``measure`` builds the blocks
of ``lib.models.blocks``, ``lib.models.resnet_cifar`` or torchvision's ResNets (on ``meta`` where only shapes
and counts are needed)."""
from __future__ import annotations

import functools
import random

import torch
import torchvision
from torch import nn

from lib import analysis, counting, models
from lib.drills._core import Question, drill
from lib.models.blocks import BasicBlock, Bottleneck, ZeroPadShortcut, make_stage
from lib.models.resnet import CIFAR_WIDTHS, RESNETS, resnet_cifar

IMAGENET_WIDTHS = (64, 128, 256, 512)
DEPTHS = tuple(RESNETS)  # resnet18 .. resnet152


@functools.lru_cache(maxsize=None)
def torchvision_resnet(name: str) -> nn.Module:
    """torchvision's ``name`` on the meta device, built once (its structure is all a drill reads)."""
    with torch.device("meta"):
        return getattr(torchvision.models, name)().eval()


def on_meta(build, *args, **kwargs) -> nn.Module:
    """``build(*args, **kwargs)`` on the meta device: shapes and counts without memory or initialisation."""
    with torch.device("meta"):
        return build(*args, **kwargs)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def half(h: int) -> int:
    """A 3×3 convolution of stride 2, padding 1: ⌊(h + 2 − 3)/2⌋ + 1 = ⌈h/2⌉."""
    return (h + 2 - 3) // 2 + 1


def basic_params(c_in: int, c_out: int, stride: int) -> int:
    """Two 3×3 convolutions (no bias) with BN (weight, bias) each, plus the option-B projection where needed."""
    projection = c_in * c_out + 2 * c_out if stride != 1 or c_in != c_out else 0
    return 9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out + projection


def bottleneck_params(c_in: int, c_out: int, stride: int) -> int:
    """1×1 c_in→w, 3×3 w→w, 1×1 w→c_out (w = c_out/4, no biases), three BNs, and the projection where needed."""
    w = c_out // 4
    projection = c_in * c_out + 2 * c_out if stride != 1 or c_in != c_out else 0
    return c_in * w + 9 * w * w + w * c_out + 2 * (w + w + c_out) + projection


@functools.lru_cache(maxsize=None)
def imagenet_stem() -> nn.Module:
    """``lib.models.resnet18``'s stem (7×7 stride-2 convolution, BN, ReLU, 3×3 stride-2 max pooling) on meta."""
    return on_meta(models.resnet18).stages()["stem"]


def stage_output(name: str, k: int, size: int) -> torch.Size:
    """torchvision's ``name`` run on meta up to ``layer{k}``: the output shape for one size×size image."""
    m = torchvision_resnet(name)
    with torch.device("meta"):
        x = m.maxpool(m.relu(m.bn1(m.conv1(torch.empty(1, 3, size, size)))))
        for i in range(1, k + 1):
            x = getattr(m, f"layer{i}")(x)
    return x.shape


@drill("resnet", "Output of a basic block with stride 2")
def block_output(rng: random.Random) -> Question:
    c_in, h = rng.choice([16, 32, 64, 128, 256]), rng.choice([7, 14, 15, 28, 31, 32, 56, 57, 112])
    c_out, ho = 2 * c_in, half(h)
    return Question(
        prompt=f"A basic block (3×3 convolutions, padding 1; the first with stride 2) takes a {c_in}×{h}×{h} "
               f"input and has {c_out} output channels. How many values does its output hold per image (C·H·W)?",
        answer=c_out * ho * ho,
        steps=("H' = ⌊(H + 2·1 − 3)/2⌋ + 1 = ⌈H/2⌉; C' = c_out; the second 3×3 (stride 1) keeps H'",
               f"H' = ⌊({h} − 1)/2⌋ + 1 = {ho}: output {c_out}×{ho}×{ho}", f"{c_out}·{ho}·{ho} = {c_out * ho * ho}"),
        measure=lambda: on_meta(BasicBlock, c_in, c_out, 2)(torch.empty(1, c_in, h, h, device="meta"))[0].numel(),
        unit="values")


@drill("resnet", "Option A shortcut: the zero-padded channels")
def option_a_zeros(rng: random.Random) -> Question:
    c_in, h = rng.choice([16, 32, 64, 128]), rng.choice([8, 16, 28, 32, 33, 56])
    c_out, ho = 2 * c_in, (h + 1) // 2

    def measure() -> int:
        out = ZeroPadShortcut(c_in, c_out, 2)(torch.ones(1, c_in, h, h))
        return int((out == 0).sum())
    return Question(
        prompt=f"An option-A shortcut (subsample with stride 2, append zero channels; no parameters) takes a "
               f"{c_in}×{h}×{h} input of ones to {c_out} channels. How many of its output values are zeros?",
        answer=(c_out - c_in) * ho * ho,
        steps=("x[:, :, ::2, ::2] keeps ⌈H/2⌉ rows and columns; c_out − c_in channels are zeros",
               f"({c_out} − {c_in})·⌈{h}/2⌉² = {c_out - c_in}·{ho}²", f"= {(c_out - c_in) * ho * ho}"),
        measure=measure, unit="values")


@drill("resnet", "Option B shortcut: the projection's parameters")
def option_b_params(rng: random.Random) -> Question:
    c_in = rng.choice([16, 24, 32, 48, 64, 96, 128, 192, 256, 320, 384, 512])
    c_out = 2 * c_in
    proj = c_in * c_out + 2 * c_out
    return Question(
        prompt=f"A basic block goes from {c_in} to {c_out} channels with stride 2. Option A pads the shortcut "
               f"with zeros; option B uses a 1×1 convolution (stride 2, no bias) and BatchNorm (weight and bias). "
               f"How many more parameters has the block with option B?",
        answer=proj,
        steps=("option A: 0; option B: c_in·c_out (1×1 weights) + 2·c_out (BN)",
               f"{c_in}·{c_out} + 2·{c_out}", f"= {proj}"),
        measure=lambda: n_params(on_meta(BasicBlock, c_in, c_out, 2, shortcut="B"))
        - n_params(on_meta(BasicBlock, c_in, c_out, 2, shortcut="A")),
        unit="parameters")


@drill("resnet", "Parameters of a basic block")
def basic_block_params(rng: random.Random) -> Question:
    c, first = rng.choice([16, 32, 64, 128, 256, 512]), rng.random() < 0.5
    c_in, stride = (c // 2, 2) if first else (c, 1)
    total = basic_params(c_in, c, stride)
    proj = f" + ({c_in}·{c} + 2·{c})" if first else ""
    return Question(
        prompt=f"A basic block ({c_in} → {c} channels, stride {stride}): two 3×3 convolutions without bias, each "
               f"followed by BatchNorm (weight and bias)"
               + (", and a 1×1 projection shortcut with BatchNorm (option B)" if first else ", identity shortcut")
               + ". How many parameters?",
        answer=total,
        steps=("9·c_in·c_out + 9·c_out² + 2·2·c_out" + (" + (c_in·c_out + 2·c_out) for the projection" if first else ""),
               f"9·{c_in}·{c} + 9·{c}² + 4·{c}{proj}", f"= {total}"),
        measure=lambda: n_params(on_meta(BasicBlock, c_in, c, stride)),
        unit="parameters")


@drill("resnet", "Parameters of a bottleneck block")
def bottleneck_block_params(rng: random.Random) -> Question:
    w = rng.choice([16, 32, 64, 128, 256, 512])
    c_out = 4 * w
    c_in, stride = rng.choice([(c_out, 1), (c_out // 2, 2), (w, 1)])
    total = bottleneck_params(c_in, c_out, stride)
    has_proj = stride != 1 or c_in != c_out
    return Question(
        prompt=f"A bottleneck block (expansion 4) takes {c_in} channels to {c_out} with stride {stride}: 1×1 to "
               f"{w}, 3×3, 1×1 to {c_out}, no biases, each convolution followed by BatchNorm (weight and bias)"
               + (", and a 1×1 projection shortcut with BatchNorm" if has_proj else ", identity shortcut")
               + ". How many parameters?",
        answer=total,
        steps=("c_in·w + 9·w² + w·4w + 2·(w + w + 4w)" + (" + (c_in·4w + 2·4w)" if has_proj else ""),
               f"{c_in}·{w} + 9·{w}² + {w}·{c_out} + 2·({w} + {w} + {c_out})"
               + (f" + ({c_in}·{c_out} + 2·{c_out})" if has_proj else ""), f"= {total}"),
        measure=lambda: n_params(on_meta(Bottleneck, c_in, c_out, stride)),
        unit="parameters")


@drill("resnet", "MACs of a bottleneck block")
def bottleneck_macs(rng: random.Random) -> Question:
    w, h = rng.choice([16, 32, 64, 128, 256, 512]), rng.choice([7, 14, 28, 56])
    c = 4 * w
    macs = (c * w + 9 * w * w + w * c) * h * h
    return Question(
        prompt=f"A bottleneck block on {c} channels at {h}×{h} (1×1 to {w}, 3×3 at {w}, 1×1 back to {c}; stride 1, "
               f"identity shortcut). How many multiply-accumulates (MACs) per image (BN, ReLU and the addition "
               f"not counted)?",
        answer=macs,
        steps=("H²·(4w·w + 9·w² + w·4w) = 17·w²·H²",
               f"17·{w}²·{h}²", f"= {macs}"),
        measure=lambda: counting.count_macs(on_meta(Bottleneck, c, c, 1), (1, c, h, h)),
        unit="MACs")


@drill("resnet", "Bottleneck against two 3×3 convolutions at the same width")
def bottleneck_saving(rng: random.Random) -> Question:
    w, h = rng.choice([16, 32, 64, 128, 256]), rng.choice([7, 14, 28, 56])
    c = 4 * w
    basic, bottle = 2 * 9 * c * c * h * h, 17 * w * w * h * h
    return Question(
        prompt=f"On {c} channels at {h}×{h}, stride 1: two 3×3 convolutions {c} → {c} (a basic block) or a "
               f"bottleneck {c} → {w} → {w} → {c} (1×1, 3×3, 1×1). How many MACs per image does the bottleneck "
               f"save?",
        answer=basic - bottle,
        steps=("two 3×3: 2·9·C²·H²; bottleneck: 17·w²·H² with C = 4w; saved (288 − 17)·w²·H²",
               f"271·{w}²·{h}²", f"= {basic - bottle}",
               "the bottleneck costs 17/288 ≈ 1/17 of the two 3×3 layers at the same width"),
        measure=lambda: counting.count_macs(on_meta(BasicBlock, c, c, 1), (1, c, h, h))
        - counting.count_macs(on_meta(Bottleneck, c, c, 1), (1, c, h, h)),
        unit="MACs")


@drill("resnet", "Residual blocks of a CIFAR ResNet of depth 6n + 2")
def cifar_blocks(rng: random.Random) -> Question:
    n = rng.randint(1, 18)
    depth = 6 * n + 2
    return Question(
        prompt=f"A CIFAR ResNet (He et al. section 4.2: a 3×3 stem, three stages of n basic blocks, a linear "
               f"layer) has {depth} weighted layers. How many basic blocks does it have?",
        answer=3 * n,
        steps=("depth = 6n + 2 (2 convolutions per block, 3 stages, + stem + fc): blocks = 3n = (depth − 2)/2",
               f"n = ({depth} − 2)/6 = {n}; 3·{n}", f"= {3 * n}"),
        measure=lambda: sum(isinstance(m, BasicBlock) for m in on_meta(resnet_cifar, depth).modules()),
        unit="blocks")


@drill("resnet", "Parameters of a CIFAR ResNet (lib.models.resnet_cifar)")
def cifar_params(rng: random.Random) -> Question:
    n, c_in, classes = rng.randint(1, 18), rng.choice([1, 3]), rng.choice([10, 100])
    depth = 6 * n + 2
    stem = 9 * c_in * 16 + 2 * 16
    stages = [9 * a * b + 9 * b * b + 4 * b + (n - 1) * basic_params(b, b, 1) for a, b in zip((16, 16, 32), CIFAR_WIDTHS)]
    fc = 64 * classes + classes
    total = stem + sum(stages) + fc
    return Question(
        prompt=f"`lib.models.resnet_cifar({depth}, in_channels={c_in}, num_classes={classes})`: a 3×3 stem to 16 "
               f"channels, three stages of {n} basic blocks at 16/32/64 channels (convolutions without bias, "
               f"BatchNorm with weight and bias, option-A shortcuts), global average pooling and a linear layer. "
               f"How many parameters?",
        answer=total,
        steps=("stem 9·c_in·16 + 32; per block 9·c_in·c + 9·c² + 4c; fc 64·K + K",
               f"{stem} + {' + '.join(f'{s:,}' for s in stages)} + {fc}", f"= {total}"),
        measure=lambda: n_params(on_meta(resnet_cifar, depth, in_channels=c_in, num_classes=classes)),
        unit="parameters")


@drill("resnet", "Spatial size after the ImageNet stem")
def stem_size(rng: random.Random) -> Question:
    h = rng.choice([64, 96, 112, 128, 160, 192, 200, 224, 225, 227, 256, 299, 320, 384, 480, 512])
    h1 = (h + 2 * 3 - 7) // 2 + 1
    h2 = (h1 + 2 * 1 - 3) // 2 + 1
    return Question(
        prompt=f"A {h}×{h} image enters a ResNet's ImageNet stem: a 7×7 convolution with stride 2 and padding 3, "
               f"then a 3×3 max pooling with stride 2 and padding 1. What is the height of the feature map "
               f"after the stem?",
        answer=h2,
        steps=("out = ⌊(H + 2p − k)/s⌋ + 1, applied twice",
               f"conv: ⌊({h} + 6 − 7)/2⌋ + 1 = {h1}; pool: ⌊({h1} + 2 − 3)/2⌋ + 1", f"= {h2}"),
        measure=lambda: imagenet_stem()(torch.empty(1, 3, h, h, device="meta")).shape[-1],
        unit="pixels")


@drill("resnet", "Blocks per stage of the ImageNet ResNets")
def blocks_per_stage(rng: random.Random) -> Question:
    name, k = rng.choice(DEPTHS), rng.randint(1, 4)
    block, layers = RESNETS[name]
    per_block = 2 if block is BasicBlock else 3
    return Question(
        prompt=f"torchvision's `{name}` ({block.__name__} blocks of {per_block} convolutions; depth = "
               f"{per_block}·blocks + 2). How many blocks has stage {k} (`layer{k}`)?",
        answer=layers[k - 1],
        steps=(f"He et al. Table 1: {name} has {list(layers)} blocks per stage",
               f"check: {per_block}·{sum(layers)} + 2 = {per_block * sum(layers) + 2}",
               f"layer{k}: {layers[k - 1]}"),
        measure=lambda: len(getattr(torchvision_resnet(name), f"layer{k}")),
        unit="blocks")


@drill("resnet", "Output channels of a ResNet stage")
def stage_channels(rng: random.Random) -> Question:
    name, k = rng.choice(DEPTHS), rng.randint(1, 4)
    e = 1 if RESNETS[name][0] is BasicBlock else 4
    c = IMAGENET_WIDTHS[k - 1] * e
    return Question(
        prompt=f"How many channels does stage {k} (`layer{k}`) of torchvision's `{name}` output?",
        answer=c,
        steps=("C_k = 64·2^(k − 1)·expansion; expansion 1 for basic blocks, 4 for bottlenecks",
               f"64·2^{k - 1}·{e}", f"= {c}"),
        measure=lambda: stage_output(name, k, 64)[1],
        unit="channels")


@drill("resnet", "Size of a ResNet stage's output")
def stage_output_values(rng: random.Random) -> Question:
    name, k, size = rng.choice(DEPTHS[:3]), rng.randint(1, 4), rng.choice([128, 160, 192, 224, 256, 320])
    e = 1 if RESNETS[name][0] is BasicBlock else 4
    c, h = IMAGENET_WIDTHS[k - 1] * e, size // 4 // 2 ** (k - 1)
    return Question(
        prompt=f"A {size}×{size} image goes through torchvision's `{name}` (the stem divides the size by 4, every "
               f"stage after the first by 2). How many values does the output of `layer{k}` hold (C·H·W)?",
        answer=c * h * h,
        steps=("C = 64·2^(k − 1)·expansion, H = size / 4 / 2^(k − 1)",
               f"C = {c}, H = {size}/4/2^{k - 1} = {h}: {c}·{h}·{h}", f"= {c * h * h}"),
        measure=lambda: stage_output(name, k, size)[1:].numel(),
        unit="values")


@drill("resnet", "Receptive field growth of a ResNet stage")
def stage_rf_growth(rng: random.Random) -> Question:
    n, k = rng.randint(1, 9), rng.randint(1, 3)
    j_in, j_out = 2 ** max(k - 2, 0), 2 ** (k - 1)  # jump (product of the earlier strides) before and after
    growth = 2 * j_in + 2 * j_out + 4 * (n - 1) * j_out

    def measure() -> int:
        # resnet_cifar's stage k as lib builds it (make_stage), at widths 1/2/4 instead of 16/32/64: the widths do
        # not change the field, and few channels keep the probe cheap
        c_in, c_out = (1, 1, 2)[k - 1], (1, 2, 4)[k - 1]
        block = make_stage(functools.partial(BasicBlock, shortcut="A"), c_in, c_out, n, stride=1 if k == 1 else 2)
        stage = analysis.empirical_receptive_field(block, (1, c_in, 8 * n + 16, 8 * n + 16), fit=True)
        return (stage.size[0] - 1) * j_in  # the stage's own field, in its input's units, times their spacing
    return Question(
        prompt=f"In `resnet_cifar({6 * n + 2})` ({n} basic block{'s' if n > 1 else ''} of two 3×3 convolutions "
               f"per stage; stages 2 and 3 have stride 2 in their first convolution), stage {k}'s input units are "
               f"{j_in} pixel{'s' if j_in > 1 else ''} apart. By how many input pixels does stage {k} widen the "
               f"receptive field?",
        answer=growth,
        steps=("each 3×3 conv adds 2·j, j = spacing of its input units: the first conv sees j_in = "
               f"{j_in}, the other 2n − 1 see j_out = j_in·stride = {j_out}",
               f"2·{j_in} + (2·{n} − 1)·2·{j_out}", f"= {growth}"),
        measure=measure, unit="pixels")
