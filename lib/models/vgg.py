"""VGG (Simonyan & Zisserman 2015): stacks of 3x3 convolutions and 2x2 max pooling, read from a table.

Each configuration is Table 1 of the paper written as data: an int is a 3x3 convolution (padding 1)
with that many output channels followed by ReLU, ``"M"`` is a 2x2 max pooling with stride 2.
Module names and indices match torchvision's (``features.N``, ``classifier.0/3/6``), so its
state_dicts load with ``strict=True``.

``small_input=True`` (28x28 or 32x32 images): the last ``"M"`` is dropped (four halvings:
28 -> 1, 32 -> 2), and the 7x7 pooling plus the 4096-4096 classifier (102M of VGG-16's 138M
parameters) become global average pooling and one dropout + linear layer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lib.models.registry import register_model
from lib.models.base import ImageClassifier, init_weights, kaiming_fan_out, normal, norm_identity

# Simonyan & Zisserman 2015, Table 1, columns A (11 layers), B (13), D (16), E (19).
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def make_features(config: Sequence[int | str], *, in_channels: int = 3, batch_norm: bool = False) -> nn.Sequential:
    """One flat ``Sequential`` (conv, [BN], ReLU, ..., maxpool), indexed exactly as torchvision's ``features``."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(c, v, kernel_size=3, padding=1))  # a bias even before BN, as torchvision
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        c = v
    return nn.Sequential(*layers)


class VGG(ImageClassifier):
    """``features`` -> ``avgpool`` -> ``classifier``.

    (N, C, 224, 224) -> features -> (N, 512, 7, 7) -> avgpool (7x7) -> flatten (N, 25088) -> classifier (N, classes)
    """

    def __init__(self, config: Sequence[int | str], *, batch_norm: bool = False, num_classes: int = 1000,
                 in_channels: int = 3, small_input: bool = False, dropout: float = 0.5, name: str = "VGG"):
        super().__init__()
        self.name, self.in_channels = name, in_channels
        if small_input and config[-1] == "M":
            config = config[:-1]
        self.min_size = 2 ** sum(v == "M" for v in config)  # every pooling halves the image
        self.features = make_features(config, in_channels=in_channels, batch_norm=batch_norm)
        c = [v for v in config if v != "M"][-1]
        if small_input:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(c * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(4096, num_classes),
            )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's scheme: Kaiming-normal (fan_out) convolutions, BN = identity, N(0, 0.01) linear layers."""
        init_weights(self, {nn.Conv2d: kaiming_fan_out, nn.BatchNorm2d: norm_identity, nn.Linear: normal(0.01)})

    def stages(self) -> dict[str, nn.Module]:
        """``conv1`` .. ``conv5`` (the paper's groups of 3x3 convolutions, each with the pooling that
        ends it), ``head`` (see ``lib.models.registry``)."""
        cuts = [i + 1 for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        if cuts[-1] != len(self.features):  # the small form's last group has no pooling
            cuts.append(len(self.features))
        starts = [0, *cuts[:-1]]
        return {**{f"conv{k + 1}": self.features[a:b] for k, (a, b) in enumerate(zip(starts, cuts))},
                "head": nn.Sequential(self.avgpool, nn.Flatten(1), self.classifier)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)  # (N, 512, H/32, W/32); H/16 with small_input

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, 512 * 7 * 7), or (N, 512) with small_input
        return self.classifier(x)  # (N, num_classes)


def _vgg(name: str, batch_norm: bool, num_classes: int, in_channels: int, small_input: bool) -> VGG:
    return VGG(VGG_CONFIGS[name], batch_norm=batch_norm, num_classes=num_classes, in_channels=in_channels,
               small_input=small_input, name=name + ("_bn" if batch_norm else ""))


@register_model(twin="vgg11")
def vgg11(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> VGG:
    """VGG-11 (Simonyan & Zisserman 2015, Table 1, column A)."""
    return _vgg("vgg11", False, num_classes, in_channels, small_input)


@register_model(twin="vgg11_bn")
def vgg11_bn(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> VGG:
    """VGG-11 with batch normalisation after every convolution."""
    return _vgg("vgg11", True, num_classes, in_channels, small_input)


@register_model(twin="vgg13")
def vgg13(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> VGG:
    """VGG-13 (Simonyan & Zisserman 2015, Table 1, column B)."""
    return _vgg("vgg13", False, num_classes, in_channels, small_input)


@register_model(twin="vgg13_bn")
def vgg13_bn(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> VGG:
    """VGG-13 with batch normalisation after every convolution."""
    return _vgg("vgg13", True, num_classes, in_channels, small_input)


@register_model(twin="vgg16")
def vgg16(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> VGG:
    """VGG-16 (Simonyan & Zisserman 2015, Table 1, column D)."""
    return _vgg("vgg16", False, num_classes, in_channels, small_input)


@register_model(twin="vgg16_bn")
def vgg16_bn(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> VGG:
    """VGG-16 with batch normalisation after every convolution."""
    return _vgg("vgg16", True, num_classes, in_channels, small_input)


@register_model(twin="vgg19")
def vgg19(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> VGG:
    """VGG-19 (Simonyan & Zisserman 2015, Table 1, column E)."""
    return _vgg("vgg19", False, num_classes, in_channels, small_input)


@register_model(twin="vgg19_bn")
def vgg19_bn(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> VGG:
    """VGG-19 with batch normalisation after every convolution."""
    return _vgg("vgg19", True, num_classes, in_channels, small_input)
