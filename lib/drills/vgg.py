"""Drills for the VGG chapter: stacks of 3×3 convolutions, the configuration table, where the parameters,
the MACs and the activation memory sit.

Keys come from the formulas in the steps (the table read by ``stage_rows``); ``measure`` builds the layers
with ``torch.nn``, ``lib.models.vgg`` or torchvision (on the ``meta`` device where only counts are needed)."""
from __future__ import annotations

import random

import torch
import torchvision
from torch import nn

from lib import analysis, counting, models
from lib.drills._core import Question, drill
from lib.models.vgg import VGG, VGG_CONFIGS, make_features

# The paper's Table 1, columns A to E, as (kernel, channels) per stage. Column C puts a 1×1 convolution last in
# stages 3-5; lib builds A, B, D, E (``VGG_CONFIGS``), C is written out here.
PAPER_TABLE: dict[str, tuple[tuple[tuple[int, int], ...], ...]] = {
    "A": (((3, 64),), ((3, 128),), ((3, 256),) * 2, ((3, 512),) * 2, ((3, 512),) * 2),
    "B": (((3, 64),) * 2, ((3, 128),) * 2, ((3, 256),) * 2, ((3, 512),) * 2, ((3, 512),) * 2),
    "C": (((3, 64),) * 2, ((3, 128),) * 2, ((3, 256),) * 2 + ((1, 256),), ((3, 512),) * 2 + ((1, 512),),
          ((3, 512),) * 2 + ((1, 512),)),
    "D": (((3, 64),) * 2, ((3, 128),) * 2, ((3, 256),) * 3, ((3, 512),) * 3, ((3, 512),) * 3),
    "E": (((3, 64),) * 2, ((3, 128),) * 2, ((3, 256),) * 4, ((3, 512),) * 4, ((3, 512),) * 4),
}
COLUMN = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
MB = 10**6
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen")


def stage_rows(config: tuple[int | str, ...]) -> list[list[int]]:
    """(64, 64, "M", 128, ...) -> [[64, 64], [128, ...], ...]: the output channels of each stage's convolutions."""
    out, current = [], []
    for v in config:
        if v == "M":
            out.append(current)
            current = []
        else:
            current.append(v)
    return out + ([current] if current else [])


def conv_params(config: tuple[int | str, ...], c_in: int = 3, batch_norm: bool = False) -> int:
    """Parameters of ``make_features(config)``: 9·c_in·c_out + c_out per 3×3 convolution (+ 2·c_out with BN)."""
    total = 0
    for c in (v for v in config if v != "M"):
        total += 9 * c_in * c + c + (2 * c if batch_norm else 0)
        c_in = c
    return total


def head_params(c: int, num_classes: int) -> int:
    """The ImageNet head: fc6 (c·7·7 -> 4096), fc7 (4096 -> 4096), fc8 (4096 -> num_classes), biases included."""
    return (c * 49 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * num_classes + num_classes)


def until_stage(config: tuple[int | str, ...], k: int) -> tuple[int | str, ...]:
    """The configuration up to and including the k-th pooling."""
    cuts = [i for i, v in enumerate(config) if v == "M"]
    return config[:cuts[k - 1] + 1]


def on_meta(build, *args, **kwargs) -> nn.Module:
    """``build(*args, **kwargs)`` on the meta device: shapes and counts without memory or initialisation."""
    with torch.device("meta"):
        return build(*args, **kwargs)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def stack(k: int, n: int, channels: int) -> nn.Sequential:
    """n convolutions k×k ("same" padding, bias), each followed by a ReLU, on the meta device."""
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [nn.Conv2d(channels, channels, k, padding=k // 2, device="meta"), nn.ReLU()]
    return nn.Sequential(*layers)


@drill("vgg", "Parameters: a stack of 3×3 convolutions against one large kernel")
def stack_vs_large_kernel(rng: random.Random) -> Question:
    n, c = rng.randint(2, 4), rng.choice([32, 64, 128, 256, 512])
    k = 2 * n + 1
    big, small = k * k * c * c + c, n * (9 * c * c + c)
    return Question(
        prompt=f"One {k}×{k} convolution and a stack of {WORDS[n]} 3×3 convolutions (stride 1) see the same {k}×{k} "
               f"window; all have {c} input and {c} output channels and biases. How many more parameters has "
               f"the single {k}×{k} layer than the stack?",
        answer=big - small,
        steps=("one k×k layer: k²C² + C; n 3×3 layers: n(9C² + C), with k = 2n + 1",
               f"{k}²·{c}² + {c} = {big:,}; {n}·(9·{c}² + {c}) = {small:,}",
               f"{big:,} − {small:,} = {big - small}",
               f"the stack has {small / big:.0%} of the large layer's weights, and {n} ReLUs instead of 1"),
        measure=lambda: n_params(stack(k, 1, c)) - n_params(stack(3, n, c)),
        unit="parameters")


@drill("vgg", "Receptive field of stacked 3×3 convolutions")
def stacked_receptive_field(rng: random.Random) -> Question:
    n = rng.randint(2, 12)
    rf = 2 * n + 1
    return Question(
        prompt=f"{WORDS[n].capitalize()} 3×3 convolutions (stride 1, padding 1) are stacked. How wide is the receptive field of one "
               f"output unit, in input pixels?",
        answer=rf,
        steps=("each 3×3 layer at stride 1 widens the field by k − 1 = 2: r = 1 + 2n",
               f"r = 1 + 2·{n}", f"= {rf}"),
        measure=lambda: analysis.empirical_receptive_field(
            nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=1) for _ in range(n))), (1, 1, 4 * n + 9, 4 * n + 9)).size[0],
        unit="pixels")


@drill("vgg", "Receptive field of a VGG network after a stage")
def stage_receptive_field(rng: random.Random) -> Question:
    name, k = rng.choice(list(VGG_CONFIGS)), rng.randint(1, 5)
    rows = stage_rows(VGG_CONFIGS[name])[:k]
    r, j, terms = 1, 1, []
    for row in rows:
        r += 2 * j * len(row) + j     # each 3×3 conv adds 2·jump; the 2×2 pooling adds (2 − 1)·jump, then doubles it
        terms.append(f"{len(row)}·2·{j} + {j}")
        j *= 2
    return Question(
        prompt=f"In `{name}` (stages of 3×3 convolutions, stride 1, each stage ending with a 2×2 max pooling of "
               f"stride 2), how wide is the receptive field of one unit at the output of stage {k}, its pooling "
               f"included, in input pixels?",
        answer=r,
        steps=("r grows by (k − 1)·j per layer, j the product of the earlier strides: 2j per 3×3 conv, j per pooling",
               f"convolutions per stage {[len(x) for x in rows]}: r = 1 + " + " + ".join(terms), f"= {r}"),
        measure=lambda: analysis.empirical_receptive_field(
            make_features(tuple(1 if v != "M" else v for v in until_stage(VGG_CONFIGS[name], k)), in_channels=1),
            (1, 1, 2 ** (k + 4), 2 ** (k + 4)), fit=True).size[0],
        unit="pixels")


@drill("vgg", "Spatial size after k VGG stages")
def spatial_size(rng: random.Random) -> Question:
    size, k = rng.choice([32, 64, 96, 100, 128, 150, 160, 192, 224, 227, 256, 299, 320]), rng.randint(1, 5)
    name = rng.choice(list(VGG_CONFIGS))
    chain = [size]
    for _ in range(k):
        chain.append(chain[-1] // 2)
    out = chain[-1]
    return Question(
        prompt=f"A {size}×{size} image enters `{name}`. Its 3×3 convolutions have padding 1, stride 1; each stage "
               f"ends with a 2×2 max pooling of stride 2. What is the height of the feature map after stage {k}?",
        answer=out,
        steps=("a 'same' 3×3 conv keeps H; a 2×2 pooling of stride 2 gives ⌊(H − 2)/2⌋ + 1 = ⌊H/2⌋, k times",
               " → ".join(map(str, chain)), f"= {out}"),
        measure=lambda: on_meta(make_features, until_stage(VGG_CONFIGS[name], k))(
            torch.empty(1, 3, size, size, device="meta")).shape[-1],
        unit="pixels")


@drill("vgg", "MACs of one VGG stage")
def stage_macs(rng: random.Random) -> Question:
    name, k, size = rng.choice(list(VGG_CONFIGS)), rng.randint(1, 5), rng.choice([224, 256, 192, 160, 128, 64])
    config = VGG_CONFIGS[name]
    h = size // 2 ** (k - 1)
    c_in = ([3] + [row[-1] for row in stage_rows(config)])[k - 1]
    row = stage_rows(config)[k - 1]
    pairs = list(zip([c_in, *row[:-1]], row))
    macs = sum(9 * a * b * h * h for a, b in pairs)
    return Question(
        prompt=f"At a {size}×{size} input, stage {k} of `{name}` works at {h}×{h} with 3×3 convolutions "
               f"(padding 1) of channels {c_in} → {' → '.join(map(str, row))}. How many multiply-accumulates "
               f"(MACs) do its convolutions do on one image (biases, ReLU and pooling not counted)?",
        answer=macs,
        steps=("MACs = Σ 9·c_in·c_out·H·W over the stage's convolutions",
               " + ".join(f"9·{a}·{b}·{h}²" for a, b in pairs), f"= {macs}"),
        measure=lambda: counting.count_macs(on_meta(make_features, tuple(row), in_channels=c_in), (1, c_in, h, h)),
        unit="MACs")


@drill("vgg", "Parameters of a stage of the paper's table")
def table_stage_params(rng: random.Random) -> Question:
    column, k = rng.choice("ABCDE"), rng.randint(1, 5)
    rows = PAPER_TABLE[column]
    c_in = ([3] + [row[-1][1] for row in rows])[k - 1]
    layers = list(rows[k - 1])
    ins = [c_in] + [c for _, c in layers[:-1]]
    total = sum(kk * kk * a * c + c for a, (kk, c) in zip(ins, layers))
    names = ", ".join(f"conv{kk}-{c}" for kk, c in layers)
    return Question(
        prompt=f"Column {column} of VGG's Table 1 has, in stage {k}, the layers {names} (convK-C: a K×K "
               f"convolution with C output channels and a bias), fed by {c_in} channels. How many parameters "
               f"has the stage?",
        answer=total,
        steps=("Σ (K²·c_in·c_out + c_out) over the stage's convolutions (pooling has none)",
               " + ".join(f"({kk}²·{a}·{c} + {c})" for a, (kk, c) in zip(ins, layers)), f"= {total}"),
        measure=lambda: n_params(nn.Sequential(*(nn.Conv2d(a, c, kk, padding=kk // 2, device="meta")
                                                 for a, (kk, c) in zip(ins, layers)))),
        unit="parameters")


@drill("vgg", "Where VGG's parameters sit")
def parameter_share(rng: random.Random) -> Question:
    name, classes = rng.choice(list(VGG_CONFIGS)), rng.choice([1000, 10, 100, 200])
    part = rng.choice(["fc6", "fc7", "fc8", "the convolutions"])
    conv = conv_params(VGG_CONFIGS[name])
    parts = {"fc6": 512 * 49 * 4096 + 4096, "fc7": 4096 * 4096 + 4096, "fc8": 4096 * classes + classes,
             "the convolutions": conv}
    total = conv + head_params(512, classes)
    share = float(f"{100 * parts[part] / total:.3g}")

    def measure() -> float:
        with torch.device("meta"):
            m = getattr(torchvision.models, name)(num_classes=classes)
        sub = {"fc6": m.classifier[0], "fc7": m.classifier[3], "fc8": m.classifier[6], "the convolutions": m.features}
        return 100 * n_params(sub[part]) / n_params(m)
    return Question(
        prompt=f"torchvision's `{name}` with {classes} classes: fc6 maps 7·7·512 inputs to 4096, fc7 4096 to 4096, "
               f"fc8 4096 to {classes}, biases included. What percentage of all its parameters are in {part}? "
               f"(three significant figures)",
        answer=share,
        steps=("share = part / (convolutions + fc6 + fc7 + fc8)",
               f"{parts[part]:,} / ({conv:,} + {parts['fc6']:,} + {parts['fc7']:,} + {parts['fc8']:,})",
               f"= {share} %"),
        measure=measure, unit="%", rel_tol=0.01)


@drill("vgg", "A GAP head against a flattening head")
def gap_vs_flatten(rng: random.Random) -> Question:
    c, s, classes = rng.choice([64, 128, 256, 512]), rng.choice([2, 3, 4, 7]), rng.choice([10, 100, 1000])
    flat, gap = c * s * s * classes + classes, c * classes + classes
    return Question(
        prompt=f"The last feature map is {c}×{s}×{s}. Head 1 flattens it into one linear layer to {classes} "
               f"classes; head 2 averages each channel (global average pooling) first. How many parameters does "
               f"GAP save (biases included)?",
        answer=flat - gap,
        steps=("flatten: C·s²·K + K; GAP: C·K + K; saved (s² − 1)·C·K",
               f"({s}² − 1)·{c}·{classes}", f"= {flat - gap}",
               f"the flattening head is {s * s}× larger: every position gets its own weights"),
        measure=lambda: n_params(nn.Linear(c * s * s, classes, device="meta")) - n_params(
            nn.Linear(c, classes, device="meta")),
        unit="parameters")


@drill("vgg", "Activation memory of a stage's output")
def activation_memory(rng: random.Random) -> Question:
    name, k = rng.choice(list(VGG_CONFIGS)), rng.randint(1, 5)
    size, batch = rng.choice([224, 256, 192, 128]), rng.choice([1, 8, 16, 32, 64, 128])
    c, h = stage_rows(VGG_CONFIGS[name])[k - 1][-1], size // 2 ** k
    mb = batch * c * h * h * 4 / MB

    def measure() -> float:
        x = on_meta(make_features, until_stage(VGG_CONFIGS[name], k))(torch.empty(batch, 3, size, size, device="meta"))
        return x.numel() * x.element_size() / MB
    return Question(
        prompt=f"A batch of {batch} images of {size}×{size} goes through `{name}` in float32 (4 bytes). How many MB "
               f"(1 MB = 10^6 bytes) does the output of stage {k} (after its pooling) take? (three significant figures)",
        answer=float(f"{mb:.3g}"),
        steps=("bytes = N·C·H·W·4, with H = W = size / 2^k after k poolings",
               f"{batch}·{c}·{h}·{h}·4 = {batch * c * h * h * 4:,} bytes", f"= {float(f'{mb:.3g}')} MB"),
        measure=measure, unit="MB", rel_tol=0.01)


@drill("vgg", "Parameters of a small VGG-style network (lib.models.VGG)")
def small_vgg_params(rng: random.Random) -> Question:
    width, n_stages, per_stage = rng.choice([8, 16, 32, 64]), rng.randint(2, 4), rng.randint(1, 2)
    c_in, classes = rng.choice([1, 3]), rng.choice([10, 100])
    config = tuple(v for s in range(n_stages) for v in [width * 2**s] * per_stage + ["M"])
    conv, head = conv_params(config, c_in), config[-2] * classes + classes
    return Question(
        prompt=f"`lib.models.VGG({config}, in_channels={c_in}, num_classes={classes}, small_input=True)`: 3×3 "
               f"convolutions with biases, and a head of global average pooling, dropout and one linear layer. "
               f"How many parameters?",
        answer=conv + head,
        steps=("Σ (9·c_in·c_out + c_out) over the convolutions + (C_last·K + K) for the linear layer",
               f"{conv:,} + ({config[-2]}·{classes} + {classes})", f"= {conv + head}"),
        measure=lambda: n_params(on_meta(VGG, config, in_channels=c_in, num_classes=classes, small_input=True)),
        unit="parameters")


@drill("vgg", "Parameters of a VGG configuration")
def config_params(rng: random.Random) -> Question:
    name, classes, bn = rng.choice(list(VGG_CONFIGS)), rng.choice([1000, 10, 100, 200]), rng.random() < 0.5
    conv, head = conv_params(VGG_CONFIGS[name], 3, bn), head_params(512, classes)
    n_conv = sum(v != "M" for v in VGG_CONFIGS[name])
    built = name + ("_bn" if bn else "")
    return Question(
        prompt=f"`lib.models.{built}(num_classes={classes})`: column {COLUMN[name]} of Table 1 ({WORDS[n_conv]} 3×3 "
               f"convolutions with biases{', each followed by BatchNorm (weight and bias)' if bn else ''}), the "
               f"7×7 pooling and fc6-fc8 (25088 → 4096 → 4096 → {classes}). How many parameters?",
        answer=conv + head,
        steps=("Σ (9·c_in·c_out + c_out" + (" + 2·c_out" if bn else "") + ") + (25088·4096 + 4096) + "
               "(4096² + 4096) + (4096·K + K)",
               f"{conv:,} + {head:,}", f"= {conv + head}"),
        measure=lambda: n_params(on_meta(getattr(models, built), num_classes=classes)),
        unit="parameters")


@drill("vgg", "Non-linearities gained by stacking")
def relus_gained(rng: random.Random) -> Question:
    k, m, c = rng.choice([5, 7, 9, 11, 13]), rng.randint(1, 4), rng.choice([64, 128])
    n = (k - 1) // 2

    def relus(kernel: int, layers: int) -> int:
        net = nn.Sequential(*(stack(kernel, layers, c) for _ in range(m)))
        return sum(isinstance(x, nn.ReLU) for x in net.modules())
    return Question(
        prompt=f"A network has {WORDS[m]} {k}×{k} convolution{'s' if m > 1 else ''} (stride 1), each followed by a ReLU. Each is replaced by "
               f"the stack of 3×3 convolutions with the same receptive field, a ReLU after every one. How many "
               f"ReLUs does the network gain?",
        answer=m * (n - 1),
        steps=("n 3×3 layers see (2n + 1)²: n = (k − 1)/2 per large layer, each with its ReLU; gain m·(n − 1)",
               f"n = ({k} − 1)/2 = {n}; {m}·({n} − 1)", f"= {m * (n - 1)}"),
        measure=lambda: relus(3, n) - relus(k, 1),
        unit="ReLUs")


@drill("vgg", "fc6 of VGG-16 at another input size")
def fc6_at_size(rng: random.Random) -> Question:
    size = rng.choice([128, 160, 192, 224, 256, 288, 320, 384, 448, 512])
    s = size // 32
    fc6 = 512 * s * s * 4096 + 4096

    def measure() -> int:
        x = on_meta(make_features, VGG_CONFIGS["vgg16"])(torch.empty(1, 3, size, size, device="meta"))
        return n_params(nn.Linear(x[0].numel(), 4096, device="meta"))
    return Question(
        prompt=f"VGG-16 without its adaptive 7×7 pooling: the 512-channel map after the five 2×2 poolings is "
               f"flattened straight into fc6 (4096 outputs, bias). At a {size}×{size} input, how many parameters "
               f"has fc6?",
        answer=fc6,
        steps=("five halvings: s = size / 32; fc6 = 512·s²·4096 + 4096",
               f"s = {size}/32 = {s}; 512·{s}²·4096 + 4096", f"= {fc6}"),
        measure=measure, unit="parameters")
