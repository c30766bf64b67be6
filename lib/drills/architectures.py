"""Drills for "What each idea bought": Inception's 1×1 reductions, DenseNet's growth and its memory, MobileNetV2's
inverted residual, ConvNeXt's block and patchify stem, grouped convolutions.

Every key is the formula of its worked solution; ``measure`` builds the module (``lib.models.blocks``,
``lib.models``' DenseNets, ``nn.Conv2d``) on the meta device and counts it.
"""
from __future__ import annotations

import dataclasses
import functools
import random

import torch
from torch import nn

from lib import models
from lib.counting import count_macs
from lib.drills._core import Question, drill
from lib.models.blocks import ConvNeXtBlock, DenseBlock, Inception, InvertedResidual
from lib.models.densenet import DENSENETS
from lib.models.googlenet import INCEPTIONS

WIDE = (128, 192, 256, 384, 480, 512, 528, 832)  # inputs of GoogLeNet's modules and their like
NARROW = (16, 24, 32, 48, 64, 96, 128)  # reductions
GROWTH = (12, 24, 32, 48)  # DenseNet growth rates k (k = 32 in DenseNet-121)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta(build):
    with torch.device("meta"):
        return build()


def _sig(x: float, digits: int = 3) -> float:
    """``x`` rounded to ``digits`` significant figures (the key of a question that asks for them)."""
    return float(f"{x:.{digits}g}")


@functools.lru_cache(maxsize=None)
def _densenet(name: str) -> nn.Module:
    """A DenseNet of ``lib.models`` on the meta device, built once per name (drawn again and again)."""
    return _meta(lambda: getattr(models, name)())


def _inception_inputs() -> dict[str, int]:
    """Input channels of each GoogLeNet module (192 from the stem, then the previous module's output)."""
    out, c = {}, 192
    for name, row in INCEPTIONS.items():
        out[name], c = c, row.out_channels
    return out


@drill("architectures", "MACs saved by an Inception 1×1 reduction")
def inception_reduction_saving(rng: random.Random) -> Question:
    c_in, k, h = rng.choice(WIDE), rng.choice([3, 5]), rng.choice([7, 14, 28])
    r, c_out = rng.choice([c for c in NARROW if c < c_in // 2]), rng.choice([32, 64, 96, 128, 192, 208, 256, 320])
    direct = k * k * c_in * c_out * h * h
    reduced = c_in * r * h * h + k * k * r * c_out * h * h
    saved = direct - reduced

    def measure():
        big = _meta(lambda: nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False))
        small = _meta(lambda: nn.Sequential(nn.Conv2d(c_in, r, 1, bias=False),
                                            nn.Conv2d(r, c_out, k, padding=k // 2, bias=False)))
        return count_macs(big, (1, c_in, h, h)) - count_macs(small, (1, c_in, h, h))
    return Question(
        prompt=(f"A {k}×{k} convolution ('same' padding, stride 1) maps {c_in} channels to {c_out} on a {h}×{h} map. "
                f"How many MACs (multiply-accumulates, batch 1) does a 1×1 reduction to {r} channels in front of it "
                "save?"),
        answer=saved,
        steps=("saved = k²·C_in·C_out·HW − (C_in·r·HW + k²·r·C_out·HW)",
               f"= {k * k}·{c_in}·{c_out}·{h * h} − ({c_in}·{r}·{h * h} + {k * k}·{r}·{c_out}·{h * h})",
               f"= {direct} − {reduced} = {saved} MACs (the reduced branch costs {direct / reduced:.1f}× less)"),
        measure=measure, unit="MACs")


@drill("architectures", "Parameters of an Inception branch")
def inception_branch_params(rng: random.Random) -> Question:
    name, branch = rng.choice(list(INCEPTIONS)), rng.choice(["1×1", "3×3", "5×5", "pooling"])
    row, c_in = INCEPTIONS[name], _inception_inputs()[name]
    convs = {"1×1": [(c_in, row.c1x1, 1)], "pooling": [(c_in, row.pool_proj, 1)],  # (C_in, C_out, k) of each conv
             "3×3": [(c_in, row.c3x3_reduce, 1), (row.c3x3_reduce, row.c3x3, 3)],
             "5×5": [(c_in, row.c5x5_reduce, 1), (row.c5x5_reduce, row.c5x5, 5)]}[branch]
    total = sum(k * k * a * b + 2 * b for a, b, k in convs)
    what = " then ".join(f"a {k}×{k} `BasicConv2d` {a} → {b}" for a, b, k in convs)
    index = ["1×1", "3×3", "5×5", "pooling"].index(branch) + 1

    def measure():
        module = _meta(lambda: Inception(c_in, **dataclasses.asdict(row), k5x5=5))  # the paper's 5×5
        return _params(getattr(module, f"branch{index}"))
    return Question(
        prompt=(f"GoogLeNet's {name} (Table 1) takes {c_in} channels; its {branch} branch is "
                f"{'a 3×3 max pooling, then ' if branch == 'pooling' else ''}{what} (each `BasicConv2d`: convolution "
                "without bias, BatchNorm with γ and β, ReLU). How many parameters does the branch have?"),
        answer=total,
        steps=("params = Σ over its convolutions (k²·C_in·C_out + 2·C_out); pooling has none",
               "= " + " + ".join(f"({k * k}·{a}·{b} + 2·{b})" for a, b, k in convs),
               f"= {total} parameters"),
        measure=measure, unit="parameters")


@drill("architectures", "Channels after a dense block")
def dense_block_channels(rng: random.Random) -> Question:
    c0, k, n = rng.choice([64, 96, 128, 160, 256, 512]), rng.choice(GROWTH), rng.choice([4, 6, 8, 12, 16])
    c = c0 + n * k
    measure = lambda: _meta(lambda: DenseBlock(n, c0, k)).eval()(torch.empty(1, c0, 8, 8, device="meta")).shape[1]  # noqa: E731
    return Question(
        prompt=(f"A dense block of {n} layers with growth rate k = {k} receives {c0} channels. How many channels "
                "does it output (the concatenation of its input and every layer's output)?"),
        answer=c,
        steps=("C = k₀ + L·k", f"= {c0} + {n}·{k}",
               f"= {c} channels (its last layer reads k₀ + (L − 1)·k = {c0 + (n - 1) * k} of them)"),
        measure=measure, unit="channels")


@drill("architectures", "Parameters of a DenseNet bottleneck layer")
def dense_layer_params(rng: random.Random) -> Question:
    c0, k, ell = rng.choice([64, 128, 256, 512]), rng.choice(GROWTH), rng.randint(1, 24)
    c_in = c0 + (ell - 1) * k
    total = 2 * c_in + c_in * 4 * k + 2 * 4 * k + 9 * 4 * k * k
    measure = lambda: _params(_meta(lambda: DenseBlock(ell, c0, k))[f"denselayer{ell}"])  # noqa: E731
    return Question(
        prompt=(f"Layer {ell} of a DenseNet-BC dense block (growth rate k = {k}, the block starts with {c0} "
                "channels) is BN-ReLU-1×1 conv to 4k channels, then BN-ReLU-3×3 conv to k (convolutions without "
                "bias). How many parameters does it have (BN's γ and β count, running statistics do not)?"),
        answer=total,
        steps=("C_in = k₀ + (ℓ − 1)·k;  params = 2·C_in + C_in·4k + 2·4k + 9·4k·k",
               f"C_in = {c0} + {ell - 1}·{k} = {c_in};  = 2·{c_in} + {c_in}·{4 * k} + 2·{4 * k} + 9·{4 * k}·{k}",
               f"= {total} parameters"),
        measure=measure, unit="parameters")


@drill("architectures", "Channels through DenseNet's blocks and transitions")
def densenet_channels(rng: random.Random) -> Question:
    name, block, where = rng.choice(list(DENSENETS)), rng.randint(1, 4), rng.choice(["out of", "into"])
    cfg = DENSENETS[name]
    block = max(block, 2) if where == "into" else block
    c, terms = cfg.init_features, [str(cfg.init_features)]
    for i, n in enumerate(cfg.block_layers[:block], start=1):
        if i == block and where == "into":
            break
        c += n * cfg.growth_rate
        terms.append(f"+ {n}·{cfg.growth_rate}")
        if i < block:
            c //= 2
            terms = [f"⌊({' '.join(terms)}) / 2⌋"]
    def measure():  # the width of the BatchNorm that reads the block's input, or of the one after it
        features = _densenet(name).features
        if where == "into":
            return features.get_submodule(f"denseblock{block}.denselayer1.norm1").weight.shape[0]
        after = f"transition{block}.norm" if block < 4 else "norm5"
        return features.get_submodule(after).weight.shape[0]
    return Question(
        prompt=(f"{name}: stem {cfg.init_features} channels, growth rate k = {cfg.growth_rate}, dense blocks of "
                f"{cfg.block_layers} layers, and a transition halving the channels (compression 0.5, rounded down) "
                f"after every block but the last. How many channels go {where} dense block {block}?"),
        answer=c,
        steps=("each block adds L·k channels; each transition keeps ⌊C / 2⌋",
               f"C = {' '.join(terms)}", f"= {c} channels"),
        measure=measure, unit="channels")


@drill("architectures", "Memory of DenseNet's concatenated features")
def dense_block_memory(rng: random.Random) -> Question:
    c0, k, n, h = rng.choice([64, 128, 256, 512]), rng.choice(GROWTH), rng.choice([4, 6, 8, 12, 16]), rng.choice([7, 14, 28, 56])
    channels = n * c0 + k * n * (n - 1) // 2
    mb = _sig(channels * h * h * 4 / 1e6)
    out_values = (c0 + n * k) * h * h
    stored = []

    def measure():
        dense = _meta(lambda: DenseBlock(n, c0, k)).eval()  # eval: the same shapes, faster on meta
        hooks = [layer.norm1.register_forward_hook(lambda m, i, o: stored.append(i[0].numel() * i[0].element_size()))
                 for layer in dense.values()]
        dense(torch.empty(1, c0, h, h, device="meta"))
        for hook in hooks:
            hook.remove()
        return sum(stored) / 1e6
    return Question(
        prompt=(f"A dense block of {n} layers (growth rate {k}) starts with {c0} channels at {h}×{h}. For the backward "
                "pass, every layer's first BatchNorm keeps its input, the concatenation of all earlier maps. How "
                "many MB do these inputs take together for one image in float32 (4 bytes, 1 MB = 10^6 bytes; three "
                "significant figures)?"),
        answer=mb,
        steps=("Σ_ℓ (k₀ + (ℓ − 1)·k) = L·k₀ + k·L(L − 1)/2 channels;  bytes = channels·HW·4",
               f"= ({n}·{c0} + {k}·{n}·{n - 1}/2)·{h * h}·4 = {channels}·{h * h}·4 bytes",
               f"= {mb:g} MB: {channels / (c0 + n * k):.1f}× the block's own output ({out_values * 4 / 1e6:.3g} MB), "
               "quadratic in L"),
        measure=measure, unit="MB", rel_tol=0.01)


@drill("architectures", "Parameters of a MobileNetV2 inverted residual")
def inverted_residual_params(rng: random.Random) -> Question:
    c_in, c_out = rng.choice([16, 24, 32, 64, 96, 160]), rng.choice([24, 32, 64, 96, 160, 320])
    h = 6 * c_in
    total = c_in * h + 2 * h + 9 * h + 2 * h + h * c_out + 2 * c_out
    measure = lambda: _params(_meta(lambda: InvertedResidual(c_in, c_out, 1, expand_ratio=6)))  # noqa: E731
    return Question(
        prompt=(f"A MobileNetV2 inverted residual from {c_in} to {c_out} channels, expansion t = 6: 1×1 expansion, "
                "3×3 depthwise, 1×1 linear projection, each convolution without bias and followed by BatchNorm (γ, β). "
                "How many parameters?"),
        answer=total,
        steps=("h = t·C_in;  params = C_in·h + 2h (expand) + 9h + 2h (depthwise) + h·C_out + 2·C_out (project)",
               f"h = {h};  = {c_in}·{h} + 2·{h} + 9·{h} + 2·{h} + {h}·{c_out} + 2·{c_out}",
               f"= {total} parameters (the depthwise 3×3 holds only {9 * h} of them)"),
        measure=measure, unit="parameters")


@drill("architectures", "MACs of a MobileNetV2 inverted residual")
def inverted_residual_macs(rng: random.Random) -> Question:
    c_in, c_out, s = rng.choice([16, 24, 32, 64, 96]), rng.choice([24, 32, 64, 96, 160]), rng.choice([1, 2])
    n = rng.choice([14, 28, 56, 112])
    h, m = 6 * c_in, n // s
    macs = n * n * c_in * h + m * m * 9 * h + m * m * h * c_out
    measure = lambda: count_macs(_meta(lambda: InvertedResidual(c_in, c_out, s, expand_ratio=6)), (1, c_in, n, n))  # noqa: E731
    return Question(
        prompt=(f"A MobileNetV2 inverted residual (t = 6) from {c_in} to {c_out} channels, stride {s}, on a {n}×{n} "
                "input: 1×1 expansion, 3×3 depthwise (stride on it, padding 1), 1×1 projection. How many MACs "
                "(multiply-accumulates, batch 1, BN and the shortcut not counted)?"),
        answer=macs,
        steps=("h = t·C_in, m = n / s;  MACs = n²·C_in·h + m²·9h + m²·h·C_out",
               f"h = {h}, m = {m};  = {n * n}·{c_in}·{h} + {m * m}·9·{h} + {m * m}·{h}·{c_out}",
               f"= {macs} MACs"),
        measure=measure, unit="MACs")


@drill("architectures", "Parameters of a ConvNeXt block")
def convnext_block_params(rng: random.Random) -> Question:
    c = rng.choice([32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024, 1536])
    total = 8 * c * c + 58 * c
    measure = lambda: _params(_meta(lambda: ConvNeXtBlock(c)))  # noqa: E731
    return Question(
        prompt=(f"A ConvNeXt block on {c} channels: 7×7 depthwise convolution (with bias), LayerNorm (γ, β), "
                f"Linear {c} → {4 * c} and Linear {4 * c} → {c} (with biases, the 1×1 convolutions), and a "
                "per-channel layer scale. How many parameters?"),
        answer=total,
        steps=("params = (49C + C) + 2C + (4C² + 4C) + (4C² + C) + C = 8C² + 58C",
               f"= 8·{c}² + 58·{c}",
               f"= {total} parameters (the 7×7 depthwise holds {50 * c / total:.1%}; the MLP nearly all the rest)"),
        measure=measure, unit="parameters")


@drill("architectures", "Output of a patchify stem")
def patchify_stem(rng: random.Random) -> Question:
    s, p, c = rng.choice([28, 32, 64, 96, 100, 128, 160, 224, 256, 384]), rng.choice([2, 4, 8, 16]), rng.choice([64, 96, 128, 192])
    side = s // p
    values = c * side * side
    measure = lambda: _meta(lambda: nn.Conv2d(3, c, p, stride=p))(torch.empty(1, 3, s, s, device="meta"))[0].numel()  # noqa: E731
    return Question(
        prompt=(f"A patchify stem, {'an' if p == 8 else 'a'} {p}×{p} convolution with stride {p} (no padding) from 3 to {c} channels, on a "
                f"{s}×{s} image. How many values (C × H' × W') does it output per image?"),
        answer=values,
        steps=("H' = ⌊(H − p) / p⌋ + 1 = ⌊H / p⌋;  values = C·H'²",
               f"H' = ⌊{s} / {p}⌋ = {side};  = {c}·{side}²", f"= {values} values"),
        measure=measure, unit="values")


@drill("architectures", "Parameters of a grouped convolution (ResNeXt)")
def grouped_conv_params(rng: random.Random) -> Question:
    g, d, stage = rng.choice([8, 16, 32, 64]), rng.choice([2, 4, 8]), rng.randint(0, 3)
    w = g * d * 2 ** stage
    total = 9 * w * (w // g)
    measure = lambda: _params(_meta(lambda: nn.Conv2d(w, w, 3, padding=1, groups=g, bias=False)))  # noqa: E731
    return Question(
        prompt=(f"The 3×3 convolution of a ResNeXt bottleneck (cardinality {g}, {w // g} channels per group) maps "
                f"{w} channels to {w} with groups = {g}, without bias. How many parameters?"),
        answer=total,
        steps=("params = k²·(C_in / g)·C_out", f"= 9·({w} / {g})·{w}",
               f"= {total} parameters (a dense 3×3 would hold {g}× as many, {9 * w * w})"),
        measure=measure, unit="parameters")


@drill("architectures", "Cost of dense against grouped 1×1 convolutions")
def grouped_unit_ratio(rng: random.Random) -> Question:
    c, g, n = rng.choice([192, 240, 384, 480, 768, 960]), rng.choice([2, 3, 4, 8]), rng.choice([7, 14, 28])
    m = c // 4
    dense, grouped = 2 * c * m + 9 * m, 2 * c * m // g + 9 * m
    ratio = _sig(dense / grouped)

    def measure():
        def unit(groups):
            return _meta(lambda: nn.Sequential(nn.Conv2d(c, m, 1, groups=groups, bias=False), nn.ChannelShuffle(groups),
                                               nn.Conv2d(m, m, 3, padding=1, groups=m, bias=False),
                                               nn.Conv2d(m, c, 1, groups=groups, bias=False)))
        return count_macs(unit(1), (1, c, n, n)) / count_macs(unit(g), (1, c, n, n))
    return Question(
        prompt=(f"A ShuffleNet-style unit on a {n}×{n} map: 1×1 convolution {c} → {m}, channel shuffle, 3×3 depthwise "
                f"on {m}, 1×1 convolution {m} → {c}. How many times more MACs does it cost with dense 1×1 convolutions "
                f"than with groups = {g} in both (three significant figures)?"),
        answer=ratio,
        steps=("per pixel: dense 2·C·m + 9m, grouped 2·C·m/g + 9m (the shuffle costs no MACs)",
               f"= (2·{c}·{m} + 9·{m}) / (2·{c}·{m}/{g} + 9·{m}) = {dense} / {grouped}",
               f"= {ratio:g}× (less than g = {g}: the depthwise part does not shrink)"),
        measure=measure, unit="×", rel_tol=0.01)


@drill("architectures", "MACs of a ConvNeXt block")
def convnext_block_macs(rng: random.Random) -> Question:
    c, n = rng.choice([96, 128, 192, 256, 384, 512, 768]), rng.choice([7, 14, 28, 56])
    macs = n * n * (49 * c + 8 * c * c)
    measure = lambda: count_macs(_meta(lambda: ConvNeXtBlock(c)), (1, c, n, n))  # noqa: E731
    return Question(
        prompt=(f"A ConvNeXt block on a {c}-channel {n}×{n} map: 7×7 depthwise convolution, LayerNorm, Linear "
                f"{c} → {4 * c}, GELU, Linear {4 * c} → {c}. How many MACs (multiply-accumulates, batch 1; "
                "normalisation, activation, biases and the residual not counted)?"),
        answer=macs,
        steps=("MACs = HW·(49C + C·4C + 4C·C) = HW·(49C + 8C²)",
               f"= {n * n}·(49·{c} + 8·{c}²)",
               f"= {macs} MACs (the depthwise 7×7 does {49 * c / (49 * c + 8 * c * c):.1%} of them)"),
        measure=measure, unit="MACs")
