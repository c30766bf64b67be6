"""EfficientNet B0-B7 (Tan & Le 2019): MBConv stages from the paper's Table 1, scaled by a pure function.

B0 is the table ``B0_STAGES``; B1-B7 multiply its widths and depths (``compound_scale``) and raise
the resolution and dropout (``SCALINGS``). Module names match torchvision (``features.0`` stem,
``features.1..7`` stages, ``features.8`` head convolution, ``classifier.1``), so its state_dicts load
with ``strict=True``.

``small_input=True`` (28x28 or 32x32 images): the stem convolution keeps stride 1 instead of 2, so
the network downsamples by 16 instead of 32 and a 32x32 image ends at 2x2 instead of 1x1.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lib.models.blocks import ConvBNAct, MBConv, Norm, make_divisible
from lib.models.registry import register_model
from lib.models.base import ImageClassifier, init_weights, kaiming_fan_out, norm_identity, uniform_fan_out


@dataclass(frozen=True)
class MBConvStage:
    """One MBConv row of Tan & Le 2019, Table 1 (EfficientNet-B0)."""

    expand_ratio: int  # MBConv1 or MBConv6: hidden channels = expand_ratio * c_in
    kernel_size: int  # of the depthwise convolution
    stride: int  # of the first block in the stage
    c_in: int
    c_out: int
    num_layers: int


# Tan & Le 2019, Table 1; the comment gives the paper's stage number and input resolution.
# Stage 1 is the 3x3 stride-2 stem (32 channels), stage 9 the 1x1 convolution to 1280 channels.
B0_STAGES: tuple[MBConvStage, ...] = (
    MBConvStage(expand_ratio=1, kernel_size=3, stride=1, c_in=32, c_out=16, num_layers=1),  # 2: 112x112
    MBConvStage(expand_ratio=6, kernel_size=3, stride=2, c_in=16, c_out=24, num_layers=2),  # 3: 112x112
    MBConvStage(expand_ratio=6, kernel_size=5, stride=2, c_in=24, c_out=40, num_layers=2),  # 4: 56x56
    MBConvStage(expand_ratio=6, kernel_size=3, stride=2, c_in=40, c_out=80, num_layers=3),  # 5: 28x28
    MBConvStage(expand_ratio=6, kernel_size=5, stride=1, c_in=80, c_out=112, num_layers=3),  # 6: 14x14
    MBConvStage(expand_ratio=6, kernel_size=5, stride=2, c_in=112, c_out=192, num_layers=4),  # 7: 14x14
    MBConvStage(expand_ratio=6, kernel_size=3, stride=1, c_in=192, c_out=320, num_layers=1),  # 8: 7x7
)


@dataclass(frozen=True)
class Scaling:
    """How far a member of the family is scaled up from B0 (the official EfficientNet code's table)."""

    width: float  # channel multiplier
    depth: float  # layer-count multiplier
    resolution: int  # training/evaluation image size in the paper
    dropout: float  # before the classifier
    # torchvision's B5-B7 weights were ported from TensorFlow, whose BatchNorm uses eps 1e-3 and keeps 99%
    # of the running statistics per step (PyTorch's momentum 0.01); the logits only match with the same eps.
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1


SCALINGS: dict[str, Scaling] = {
    "efficientnet_b0": Scaling(width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "efficientnet_b1": Scaling(width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "efficientnet_b2": Scaling(width=1.1, depth=1.2, resolution=260, dropout=0.3),
    "efficientnet_b3": Scaling(width=1.2, depth=1.4, resolution=300, dropout=0.3),
    "efficientnet_b4": Scaling(width=1.4, depth=1.8, resolution=380, dropout=0.4),
    "efficientnet_b5": Scaling(width=1.6, depth=2.2, resolution=456, dropout=0.4, bn_eps=1e-3, bn_momentum=0.01),
    "efficientnet_b6": Scaling(width=1.8, depth=2.6, resolution=528, dropout=0.5, bn_eps=1e-3, bn_momentum=0.01),
    "efficientnet_b7": Scaling(width=2.0, depth=3.1, resolution=600, dropout=0.5, bn_eps=1e-3, bn_momentum=0.01),
}


def compound_coefficients(phi: float, *, alpha: float = 1.2, beta: float = 1.1,
                          gamma: float = 1.15) -> tuple[float, float, float]:
    """Equation 3 of Tan & Le 2019: depth, width and resolution multipliers ``alpha**phi, beta**phi,
    gamma**phi`` for a FLOP budget of about ``2**phi`` (``alpha * beta**2 * gamma**2 ~= 2``).
    The released B1-B7 round these by hand, which is why ``SCALINGS`` is a table."""
    return alpha ** phi, beta ** phi, gamma ** phi


def compound_scale(stages: Sequence[MBConvStage], *, width: float, depth: float) -> tuple[MBConvStage, ...]:
    """Scale every stage's channels by ``width`` (rounded to multiples of 8) and its depth by ``depth``
    (rounded up). Pure: returns new rows, the input table is left as it is."""
    return tuple(
        dataclasses.replace(s, c_in=make_divisible(s.c_in * width), c_out=make_divisible(s.c_out * width),
                            num_layers=math.ceil(s.num_layers * depth))
        for s in stages
    )


class EfficientNet(ImageClassifier):
    """stem (3x3, stride 2) -> MBConv stages -> 1x1 conv to ``4 * c_last`` -> global pooling -> dropout -> linear.

    (N, C, H, W) -> features -> (N, 1280 * width, H/32, W/32) -> avgpool/flatten (N, 1280 * width) -> (N, classes)
    Stochastic depth grows linearly from 0 at the first block to ``stochastic_depth_prob`` at the last.
    """

    def __init__(self, stages: Sequence[MBConvStage], *, dropout: float, num_classes: int = 1000,
                 in_channels: int = 3, small_input: bool = False, stochastic_depth_prob: float = 0.2,
                 norm: Norm = nn.BatchNorm2d, name: str = "EfficientNet"):
        super().__init__()
        self.name, self.in_channels = name, in_channels
        stem_stride = 1 if small_input else 2
        self.min_size = stem_stride * math.prod(s.stride for s in stages)

        total_blocks = sum(s.num_layers for s in stages)
        layers: list[nn.Module] = [ConvBNAct(in_channels, stages[0].c_in, 3, stem_stride, norm=norm, act=nn.SiLU)]
        block_id = 0
        for s in stages:
            blocks = []
            for i in range(s.num_layers):
                sd_prob = stochastic_depth_prob * block_id / total_blocks
                blocks.append(MBConv(s.c_in if i == 0 else s.c_out, s.c_out, s.stride if i == 0 else 1,
                                     expand_ratio=s.expand_ratio, kernel_size=s.kernel_size, sd_prob=sd_prob,
                                     norm=norm))
                block_id += 1
            layers.append(nn.Sequential(*blocks))
        self.num_features = 4 * stages[-1].c_out
        layers.append(ConvBNAct(stages[-1].c_out, self.num_features, 1, norm=norm, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(self.num_features, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """The official scheme: Kaiming-normal (fan_out) convolutions, BN = identity, and the classifier
        uniform in +-1/sqrt(num_classes)."""
        init_weights(self, {nn.Conv2d: kaiming_fan_out, nn.BatchNorm2d: norm_identity, nn.Linear: uniform_fan_out})

    def stages(self) -> dict[str, nn.Module]:
        """``stem`` (``features.0``), ``features.1`` .. ``features.7`` (the MBConv stages of Table 1),
        ``features.8`` (the 1x1 convolution), ``head`` (see ``lib.models.registry``)."""
        return {"stem": self.features[0], **{f"features.{i}": self.features[i] for i in range(1, len(self.features))},
                "head": nn.Sequential(self.avgpool, nn.Flatten(1), self.classifier)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)  # (N, 1280 * width, H/32, W/32); H/16 with small_input

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))  # (N, num_classes)


def _size(name: str) -> tuple[int, int, int]:
    """The paper's resolution of ``name``, as (C, H, W)."""
    r = SCALINGS[name].resolution
    return (3, r, r)


def _efficientnet(name: str, num_classes: int, in_channels: int, small_input: bool,
                  stochastic_depth_prob: float) -> EfficientNet:
    sc = SCALINGS[name]
    norm = functools.partial(nn.BatchNorm2d, eps=sc.bn_eps, momentum=sc.bn_momentum)
    return EfficientNet(compound_scale(B0_STAGES, width=sc.width, depth=sc.depth), dropout=sc.dropout,
                        num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                        stochastic_depth_prob=stochastic_depth_prob, norm=norm, name=name)


@register_model(twin="efficientnet_b0", input_size=_size("efficientnet_b0"))
def efficientnet_b0(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B0 (Tan & Le 2019, Table 1): the searched baseline, 224x224."""
    return _efficientnet("efficientnet_b0", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="efficientnet_b1", input_size=_size("efficientnet_b1"))
def efficientnet_b1(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B1 (Tan & Le 2019): B0 with depth x1.1, 240x240."""
    return _efficientnet("efficientnet_b1", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="efficientnet_b2", input_size=_size("efficientnet_b2"))
def efficientnet_b2(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B2 (Tan & Le 2019): width x1.1, depth x1.2, 260x260."""
    return _efficientnet("efficientnet_b2", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="efficientnet_b3", input_size=_size("efficientnet_b3"))
def efficientnet_b3(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B3 (Tan & Le 2019): width x1.2, depth x1.4, 300x300."""
    return _efficientnet("efficientnet_b3", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="efficientnet_b4", input_size=_size("efficientnet_b4"))
def efficientnet_b4(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B4 (Tan & Le 2019): width x1.4, depth x1.8, 380x380."""
    return _efficientnet("efficientnet_b4", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="efficientnet_b5", input_size=_size("efficientnet_b5"))
def efficientnet_b5(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B5 (Tan & Le 2019): width x1.6, depth x2.2, 456x456."""
    return _efficientnet("efficientnet_b5", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="efficientnet_b6", input_size=_size("efficientnet_b6"))
def efficientnet_b6(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B6 (Tan & Le 2019): width x1.8, depth x2.6, 528x528."""
    return _efficientnet("efficientnet_b6", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="efficientnet_b7", input_size=_size("efficientnet_b7"))
def efficientnet_b7(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B7 (Tan & Le 2019): width x2.0, depth x3.1, 600x600."""
    return _efficientnet("efficientnet_b7", num_classes, in_channels, small_input, stochastic_depth_prob)
