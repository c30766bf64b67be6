"""MobileNetV2 (Sandler et al. 2018) and MobileNetV3 (Howard et al. 2019): stacks of inverted residuals,
read from the papers' tables.

* V2 is Table 2 of its paper (``MOBILENET_V2``): rows ``(t, c, n, s)``, the expansion factor, output
  channels, number of blocks and stride of the first block, between a 3x3 stride-2 stem of 32 channels
  and a 1x1 convolution to 1280. The block is ``lib.models.blocks.InvertedResidual`` (ReLU6).
* V3 is Tables 1 and 2 of its paper (``MOBILENET_V3``): one row per block, with its kernel, expanded
  width, output channels, squeeze-excitation, activation (ReLU or hard-swish) and stride. The block is
  ``lib.models.blocks.InvertedResidualV3``; BatchNorm uses eps 1e-3 and momentum 0.01, as torchvision.
  Table 2 marks squeeze-excitation on Small's last 1x1 convolution too; torchvision's model, and so this
  one, has none there.

Module names match torchvision (``features.0`` the stem, ``features.1`` .. one block each, the last
``features.N`` the final 1x1 convolution, ``classifier``), so its state_dicts load with ``strict=True``.
``stages()`` groups the blocks: by the rows of Table 2 for V2 (``stage1`` .. ``stage7``), by resolution
for V3 (a new stage at each stride-2 block), then ``last_conv`` and ``head``.

``small_input=True`` (28x28 or 32x32 images), as EfficientNet's small form: the stem keeps stride 1
instead of 2, so the network downsamples by 16 instead of 32 and a 32x32 image ends at 2x2:
V2 (N, C, 32, 32) -> stem (N, 32, 32, 32) -> stages -> (N, 320, 2, 2) -> last_conv (N, 1280, 2, 2).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lib.models.blocks import Act, ConvBNAct, InvertedResidual, InvertedResidualV3, Norm
from lib.models.registry import register_model
from lib.models.base import ImageClassifier, init_weights, kaiming_fan_out, normal, norm_identity


@dataclass(frozen=True)
class BottleneckRow:
    """One row of Sandler et al. 2018, Table 2: ``n`` inverted residual blocks."""

    t: int  # expansion factor: hidden channels = t * c_in
    c: int  # output channels
    n: int  # blocks
    s: int  # stride of the first block


# Sandler et al. 2018, Table 2 (input 224x224): the rows between the stem (conv2d 3x3, 32 channels, stride 2)
# and the last conv2d 1x1 (1280 channels).
MOBILENET_V2: tuple[BottleneckRow, ...] = (
    BottleneckRow(t=1, c=16, n=1, s=1),  # 112x112
    BottleneckRow(t=6, c=24, n=2, s=2),  # 112x112 -> 56x56
    BottleneckRow(t=6, c=32, n=3, s=2),  # -> 28x28
    BottleneckRow(t=6, c=64, n=4, s=2),  # -> 14x14
    BottleneckRow(t=6, c=96, n=3, s=1),  # 14x14
    BottleneckRow(t=6, c=160, n=3, s=2),  # -> 7x7
    BottleneckRow(t=6, c=320, n=1, s=1),  # 7x7
)


@dataclass(frozen=True)
class BneckRow:
    """One row of Howard et al. 2019, Table 1 or 2: a single ``bneck`` block."""

    kernel: int  # of the depthwise convolution
    exp: int  # "exp size": the expanded channels
    out: int  # "#out"
    se: bool  # squeeze-excitation
    nl: str  # "NL", the nonlinearity: "RE" (ReLU) or "HS" (hard-swish)
    s: int  # stride


@dataclass(frozen=True)
class MobileNetV3Config:
    stem: int  # channels of the 3x3 stride-2 stem (hard-swish)
    blocks: tuple[BneckRow, ...]
    last_conv: int  # channels of the final 1x1 convolution (6x the last block's)
    hidden: int  # width of the classifier's hidden layer (the paper's 1x1 "NBN" conv after pooling)


# Howard et al. 2019, Table 1 (Large) and Table 2 (Small); the comment is the block's input resolution.
MOBILENET_V3: dict[str, MobileNetV3Config] = {
    "mobilenet_v3_large": MobileNetV3Config(stem=16, last_conv=960, hidden=1280, blocks=(
        BneckRow(kernel=3, exp=16, out=16, se=False, nl="RE", s=1),  # 112x112
        BneckRow(kernel=3, exp=64, out=24, se=False, nl="RE", s=2),  # 112x112
        BneckRow(kernel=3, exp=72, out=24, se=False, nl="RE", s=1),  # 56x56
        BneckRow(kernel=5, exp=72, out=40, se=True, nl="RE", s=2),  # 56x56
        BneckRow(kernel=5, exp=120, out=40, se=True, nl="RE", s=1),  # 28x28
        BneckRow(kernel=5, exp=120, out=40, se=True, nl="RE", s=1),  # 28x28
        BneckRow(kernel=3, exp=240, out=80, se=False, nl="HS", s=2),  # 28x28
        BneckRow(kernel=3, exp=200, out=80, se=False, nl="HS", s=1),  # 14x14
        BneckRow(kernel=3, exp=184, out=80, se=False, nl="HS", s=1),  # 14x14
        BneckRow(kernel=3, exp=184, out=80, se=False, nl="HS", s=1),  # 14x14
        BneckRow(kernel=3, exp=480, out=112, se=True, nl="HS", s=1),  # 14x14
        BneckRow(kernel=3, exp=672, out=112, se=True, nl="HS", s=1),  # 14x14
        BneckRow(kernel=5, exp=672, out=160, se=True, nl="HS", s=2),  # 14x14
        BneckRow(kernel=5, exp=960, out=160, se=True, nl="HS", s=1),  # 7x7
        BneckRow(kernel=5, exp=960, out=160, se=True, nl="HS", s=1),  # 7x7
    )),
    "mobilenet_v3_small": MobileNetV3Config(stem=16, last_conv=576, hidden=1024, blocks=(
        BneckRow(kernel=3, exp=16, out=16, se=True, nl="RE", s=2),  # 112x112
        BneckRow(kernel=3, exp=72, out=24, se=False, nl="RE", s=2),  # 56x56
        BneckRow(kernel=3, exp=88, out=24, se=False, nl="RE", s=1),  # 28x28
        BneckRow(kernel=5, exp=96, out=40, se=True, nl="HS", s=2),  # 28x28
        BneckRow(kernel=5, exp=240, out=40, se=True, nl="HS", s=1),  # 14x14
        BneckRow(kernel=5, exp=240, out=40, se=True, nl="HS", s=1),  # 14x14
        BneckRow(kernel=5, exp=120, out=48, se=True, nl="HS", s=1),  # 14x14
        BneckRow(kernel=5, exp=144, out=48, se=True, nl="HS", s=1),  # 14x14
        BneckRow(kernel=5, exp=288, out=96, se=True, nl="HS", s=2),  # 14x14
        BneckRow(kernel=5, exp=576, out=96, se=True, nl="HS", s=1),  # 7x7
        BneckRow(kernel=5, exp=576, out=96, se=True, nl="HS", s=1),  # 7x7
    )),
}
NONLINEARITIES: dict[str, Act] = {"RE": nn.ReLU, "HS": nn.Hardswish}


class MobileNet(ImageClassifier):
    """``features`` (stem, one entry per block, last 1x1 convolution) -> global pooling -> ``classifier``.

    ``stage_ends``: the index in ``features`` of the last block of each stage (for ``stages()``);
    ``min_size``: the product of the strides. Built by ``make_mobilenet_v2`` and ``make_mobilenet_v3``.
    (N, C, H, W) -> forward_features -> (N, F, H/32, W/32) (H/16 with small_input) -> (N, num_classes).
    """

    def __init__(self, features: Sequence[nn.Module], classifier: nn.Sequential, *, stage_ends: Sequence[int],
                 min_size: int, in_channels: int, name: str):
        super().__init__()
        self.name, self.in_channels, self.min_size = name, in_channels, min_size
        self.stage_ends = tuple(stage_ends)
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's scheme for both: Kaiming-normal (fan_out) convolutions, BN = identity, N(0, 0.01) linear
        layers, zero biases."""
        init_weights(self, {nn.Conv2d: kaiming_fan_out, nn.BatchNorm2d: norm_identity, nn.Linear: normal(0.01)})

    def stages(self) -> dict[str, nn.Module]:
        """``stem``, ``stage1`` .. , ``last_conv``, ``head`` (see ``lib.models.registry``)."""
        starts = [1, *(e + 1 for e in self.stage_ends[:-1])]
        return {"stem": self.features[0],
                **{f"stage{k + 1}": self.features[a:e + 1] for k, (a, e) in enumerate(zip(starts, self.stage_ends))},
                "last_conv": self.features[-1],
                "head": nn.Sequential(self.avgpool, nn.Flatten(1), self.classifier)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)  # (N, F, H/32, W/32); H/16 with small_input

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))  # (N, num_classes)


def make_mobilenet_v2(rows: Sequence[BottleneckRow] = MOBILENET_V2, *, num_classes: int = 1000, in_channels: int = 3,
                       small_input: bool = False, dropout: float = 0.2, name: str = "MobileNetV2") -> MobileNet:
    """A MobileNetV2 from Table 2's rows: stem (32 channels) -> the rows' inverted residuals -> 1x1 conv to
    1280 -> pooling -> dropout -> linear."""
    c, stem_stride = 32, 1 if small_input else 2
    features: list[nn.Module] = [ConvBNAct(in_channels, c, 3, stem_stride, act=nn.ReLU6)]
    stage_ends = []
    for row in rows:
        for i in range(row.n):
            features.append(InvertedResidual(c, row.c, row.s if i == 0 else 1, expand_ratio=row.t))
            c = row.c
        stage_ends.append(len(features) - 1)
    features.append(ConvBNAct(c, 1280, 1, act=nn.ReLU6))
    classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(1280, num_classes))
    return MobileNet(features, classifier, stage_ends=stage_ends, min_size=stem_stride * math.prod(r.s for r in rows),
                     in_channels=in_channels, name=name)


def make_mobilenet_v3(cfg: MobileNetV3Config, *, num_classes: int = 1000, in_channels: int = 3,
                       small_input: bool = False, dropout: float = 0.2, name: str = "MobileNetV3") -> MobileNet:
    """A MobileNetV3 from its table: stem -> one ``InvertedResidualV3`` per row -> 1x1 conv -> pooling
    -> linear to ``hidden`` -> hard-swish -> dropout -> linear."""
    norm: Norm = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
    c, stem_stride = cfg.stem, 1 if small_input else 2
    features: list[nn.Module] = [ConvBNAct(in_channels, c, 3, stem_stride, norm=norm, act=nn.Hardswish)]
    stage_ends = []
    for row in cfg.blocks:
        if row.s > 1 and len(features) > 1:  # a stride-2 block starts a new stage
            stage_ends.append(len(features) - 1)
        features.append(InvertedResidualV3(c, row.out, row.s, expanded=row.exp, kernel_size=row.kernel,
                                           use_se=row.se, act=NONLINEARITIES[row.nl], norm=norm))
        c = row.out
    stage_ends.append(len(features) - 1)
    features.append(ConvBNAct(c, cfg.last_conv, 1, norm=norm, act=nn.Hardswish))
    classifier = nn.Sequential(nn.Linear(cfg.last_conv, cfg.hidden), nn.Hardswish(inplace=True),
                               nn.Dropout(p=dropout, inplace=True), nn.Linear(cfg.hidden, num_classes))
    return MobileNet(features, classifier, stage_ends=stage_ends,
                     min_size=stem_stride * math.prod(r.s for r in cfg.blocks), in_channels=in_channels, name=name)


@register_model(twin="mobilenet_v2")
def mobilenet_v2(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                 dropout: float = 0.2) -> MobileNet:
    """MobileNetV2 (Sandler et al. 2018, Table 2), width multiplier 1."""
    return make_mobilenet_v2(num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                              dropout=dropout, name="mobilenet_v2")


@register_model(twin="mobilenet_v3_large")
def mobilenet_v3_large(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                       dropout: float = 0.2) -> MobileNet:
    """MobileNetV3-Large (Howard et al. 2019, Table 1), width multiplier 1."""
    return make_mobilenet_v3(MOBILENET_V3["mobilenet_v3_large"], num_classes=num_classes, in_channels=in_channels,
                              small_input=small_input, dropout=dropout, name="mobilenet_v3_large")


@register_model(twin="mobilenet_v3_small")
def mobilenet_v3_small(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                       dropout: float = 0.2) -> MobileNet:
    """MobileNetV3-Small (Howard et al. 2019, Table 2), width multiplier 1."""
    return make_mobilenet_v3(MOBILENET_V3["mobilenet_v3_small"], num_classes=num_classes, in_channels=in_channels,
                              small_input=small_input, dropout=dropout, name="mobilenet_v3_small")
