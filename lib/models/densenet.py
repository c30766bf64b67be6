"""DenseNet-BC (Huang et al. 2017): dense blocks, in which every layer receives the feature maps of all
the layers before it, joined by transitions that halve the channels and the resolution.

Each network is a row of the paper's Table 1 (``DENSENETS``): the growth rate ``k`` (channels each layer
adds), the number of layers in each of the four dense blocks, and the stem's width. The dense layer,
dense block and transition are ``lib.models.blocks.DenseLayer``, ``DenseBlock`` and ``Transition``.
Module names match torchvision (``features.conv0`` .. ``features.denseblock1.denselayer1.norm1`` ..
``features.norm5``, ``classifier``), so its state_dicts load with ``strict=True``.

Shapes of DenseNet-121 (stages as ``stages()`` names them), ImageNet form and ``small_input=True``:

    stem          (N, C, 224, 224) -> (N, 64, 56, 56)     small: (N, C, 32, 32) -> (N, 64, 32, 32)
    denseblock1   -> (N, 64 + 6k = 256, 56, 56)                  -> (N, 256, 32, 32)
    transition1   -> (N, 128, 28, 28)                            -> (N, 128, 16, 16)
    denseblock2   -> (N, 512, 28, 28),  transition2 -> (N, 256, 14, 14)    (16x16; 8x8)
    denseblock3   -> (N, 1024, 14, 14), transition3 -> (N, 512, 7, 7)      (8x8; 4x4)
    denseblock4   -> (N, 1024, 7, 7) (then BN and ReLU)                    (4x4)
    head          -> global average pooling -> (N, 1024) -> (N, num_classes)

``small_input=True`` (28x28 or 32x32 images), as ResNet's small form: the 7x7 stride-2 ``conv0`` becomes
a 3x3 stride-1 convolution and ``pool0`` goes, so the network downsamples by 8 instead of 32.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lib.models.blocks import DenseBlock, Transition
from lib.models.registry import register_model
from lib.models.base import ImageClassifier, init_weights, kaiming_fan_in, norm_identity, zero_bias


@dataclass(frozen=True)
class DenseNetConfig:
    """One column of Huang et al. 2017, Table 1 (DenseNet-BC: bottleneck layers, compression 0.5)."""

    growth_rate: int  # k: the channels each dense layer adds
    block_layers: tuple[int, int, int, int]  # dense layers in blocks 1-4
    init_features: int = 64  # the stem's channels, 2k


# Huang et al. 2017, Table 1 (DenseNet-161: k = 48, as in the paper's released ImageNet models).
DENSENETS: dict[str, DenseNetConfig] = {
    "densenet121": DenseNetConfig(growth_rate=32, block_layers=(6, 12, 24, 16)),
    "densenet161": DenseNetConfig(growth_rate=48, block_layers=(6, 12, 36, 24), init_features=96),
    "densenet169": DenseNetConfig(growth_rate=32, block_layers=(6, 12, 32, 32)),
    "densenet201": DenseNetConfig(growth_rate=32, block_layers=(6, 12, 48, 32)),
}


class DenseNet(ImageClassifier):
    """``features`` (stem, dense blocks and transitions, final BN) -> ReLU -> global pooling -> ``classifier``.

    (N, C, H, W) -> forward_features -> (N, F, H/32, W/32) (H/8 with small_input) -> (N, num_classes).
    """

    def __init__(self, cfg: DenseNetConfig, *, num_classes: int = 1000, in_channels: int = 3,
                 small_input: bool = False, bn_size: int = 4, drop_rate: float = 0.0, name: str = "DenseNet"):
        super().__init__()
        self.cfg, self.name, self.in_channels = cfg, name, in_channels
        self.min_size = 2 ** (len(cfg.block_layers) - 1) * (1 if small_input else 4)
        c = cfg.init_features
        if small_input:
            stem = [("conv0", nn.Conv2d(in_channels, c, kernel_size=3, stride=1, padding=1, bias=False)),
                    ("norm0", nn.BatchNorm2d(c)), ("relu0", nn.ReLU(inplace=True)), ("pool0", nn.Identity())]
        else:
            stem = [("conv0", nn.Conv2d(in_channels, c, kernel_size=7, stride=2, padding=3, bias=False)),
                    ("norm0", nn.BatchNorm2d(c)), ("relu0", nn.ReLU(inplace=True)),
                    ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))]
        self.features = nn.Sequential(OrderedDict(stem))
        for i, n in enumerate(cfg.block_layers, start=1):
            block = DenseBlock(n, c, cfg.growth_rate, bn_size=bn_size, drop_rate=drop_rate)
            self.features.add_module(f"denseblock{i}", block)
            c = block.out_channels
            if i < len(cfg.block_layers):
                self.features.add_module(f"transition{i}", Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.num_features = c
        self.classifier = nn.Linear(c, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's scheme: Kaiming-normal (fan_in) convolutions, BN = identity, zero classifier bias."""
        init_weights(self, {nn.Conv2d: kaiming_fan_in, nn.BatchNorm2d: norm_identity, nn.Linear: zero_bias})

    def stages(self) -> dict[str, nn.Module]:
        """``stem``, ``denseblock1``, ``transition1``, ..., ``denseblock4`` (with the final BN and ReLU),
        ``head`` (see ``lib.models.registry``): the rows of the paper's Table 1."""
        f = self.features
        out: dict[str, nn.Module] = {"stem": nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)}
        for name, module in f.named_children():
            if name.startswith(("denseblock", "transition")):
                out[name] = module
        last = f"denseblock{len(self.cfg.block_layers)}"
        out[last] = nn.Sequential(out[last], f.norm5, nn.ReLU(inplace=True))
        out["head"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), self.classifier)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return F.relu(self.features(x), inplace=True)  # (N, F, H/32, W/32); H/8 with small_input

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))  # (N, F) -> (N, num_classes)


def _densenet(name: str, num_classes: int, in_channels: int, small_input: bool, drop_rate: float) -> DenseNet:
    return DenseNet(DENSENETS[name], num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                    drop_rate=drop_rate, name=name)


@register_model(twin="densenet121")
def densenet121(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-121 (Huang et al. 2017, Table 1): k = 32, dense blocks of 6, 12, 24, 16 layers."""
    return _densenet("densenet121", num_classes, in_channels, small_input, drop_rate)


@register_model(twin="densenet161")
def densenet161(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-161 (Huang et al. 2017, Table 1): k = 48, dense blocks of 6, 12, 36, 24 layers."""
    return _densenet("densenet161", num_classes, in_channels, small_input, drop_rate)


@register_model(twin="densenet169")
def densenet169(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-169 (Huang et al. 2017, Table 1): k = 32, dense blocks of 6, 12, 32, 32 layers."""
    return _densenet("densenet169", num_classes, in_channels, small_input, drop_rate)


@register_model(twin="densenet201")
def densenet201(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-201 (Huang et al. 2017, Table 1): k = 32, dense blocks of 6, 12, 48, 32 layers."""
    return _densenet("densenet201", num_classes, in_channels, small_input, drop_rate)
