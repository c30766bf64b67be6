"""ResNet (He et al. 2015): a stem, stages of residual blocks, global average pooling, one linear layer.

Two families, each a table:

* ImageNet ResNets (Table 1 of the paper): ``(block, blocks per stage)``, widths 64/128/256/512,
  a 7x7 stride-2 stem and a 3x3 max pooling; the bottleneck carries its stride on the 3x3
  convolution ("v1.5", as torchvision). Names match torchvision (``conv1, bn1, layer1..4, fc``).
* CIFAR ResNets (section 4.2): ``6n + 2`` layers, three stages of ``n`` basic blocks with 16/32/64
  channels, a 3x3 stem and parameter-free zero-padding shortcuts (option A): 0.27M parameters for
  ResNet-20 up to 1.7M for ResNet-110.

``ResNet`` is generic over the block: any class taking ``(c_in, c_out, stride)`` with a class attribute
``expansion`` fits (see ``lib.models.blocks`` for how to write a pre-activation, wide or grouped one).

``small_input=True`` for the ImageNet ResNets replaces the stem by the CIFAR stem (3x3 stride-1
convolution, no max pooling), so a 32x32 image reaches the last stage at 4x4 instead of 1x1.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from lib.models.blocks import BasicBlock, Bottleneck, block_expansion, make_stage
from lib.models.registry import register_model, require_small_input
from lib.models.base import ImageClassifier, init_weights, kaiming_fan_out, norm_identity

# He et al. 2015, Table 1: the block and the number of blocks in each of the four stages.
RESNETS: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}

# He et al. 2015, section 4.2 and Table 6: n basic blocks per stage, 6n + 2 weighted layers.
CIFAR_RESNETS: dict[str, int] = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
CIFAR_WIDTHS = (16, 32, 64)

STEMS = ("imagenet", "cifar", "small")  # "small" is another name for the CIFAR stem


class ResNet(ImageClassifier):
    """stem -> ``layer1`` .. ``layerK`` -> global average pooling -> ``fc``.

    Stage ``i`` has ``layers[i]`` blocks and ``widths[i] * block.expansion`` output channels; every stage
    but the first halves the resolution. ImageNet stem: (N, C, H, W) -> (N, 64, H/4, W/4);
    CIFAR/small stem: (N, C, H, W) -> (N, widths[0], H, W).
    """

    def __init__(self, block: Callable[..., nn.Module], layers: Sequence[int], *,
                 widths: Sequence[int] = (64, 128, 256, 512), num_classes: int = 1000, in_channels: int = 3,
                 stem: str = "imagenet", zero_init_residual: bool = False, name: str = "ResNet"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"{name}: stem must be one of {STEMS}, got {stem!r}")
        if len(layers) != len(widths):
            raise ValueError(f"{name}: {len(layers)} stage depths but {len(widths)} widths")
        self.name, self.in_channels = name, in_channels
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.min_size = (4 if stem == "imagenet" else 1) * 2 ** (len(layers) - 1)

        expansion = block_expansion(block)
        c_in = widths[0]
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(layers)))
        for i, (name_i, n, width) in enumerate(zip(self.stage_names, layers, widths)):
            c_out = width * expansion
            self.add_module(name_i, make_stage(block, c_in, c_out, n, stride=1 if i == 0 else 2))
            c_in = c_out
        self.num_features = c_in
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """He et al.'s scheme: Kaiming-normal (fan_out) convolutions, BN = identity; optionally the last BN
        of every residual branch starts at zero (Goyal et al. 2017), so each block starts as the identity.
        The ``fc`` layer keeps PyTorch's default initialisation, as in torchvision."""
        init_weights(self, {nn.Conv2d: kaiming_fan_out, (nn.BatchNorm2d, nn.GroupNorm): norm_identity})
        if zero_init_residual:
            for name in self.stage_names:
                for blk in getattr(self, name):
                    last_bn = getattr(blk, "bn3", None)
                    last_bn = getattr(blk, "bn2", None) if last_bn is None else last_bn
                    if last_bn is None:
                        raise ValueError(f"{self.name}: zero_init_residual needs blocks with a bn3 or bn2")
                    nn.init.zeros_(last_bn.weight)

    def stages(self) -> dict[str, nn.Module]:
        """``stem``, ``layer1`` .. ``layerK``, ``head`` (see ``lib.models.registry``)."""
        return {"stem": nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool),
                **{name: getattr(self, name) for name in self.stage_names},
                "head": nn.Sequential(self.avgpool, nn.Flatten(1), self.fc)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4), or (N, widths[0], H, W)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x  # (N, widths[-1] * expansion, H/32, W/32) for the ImageNet stem

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (N, C) -> (N, num_classes)


def _resnet(name: str, num_classes: int, in_channels: int, small_input: bool, zero_init_residual: bool) -> ResNet:
    block, layers = RESNETS[name]
    return ResNet(block, layers, num_classes=num_classes, in_channels=in_channels,
                  stem="small" if small_input else "imagenet", zero_init_residual=zero_init_residual, name=name)


@register_model(twin="resnet18")
def resnet18(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (He et al. 2015, Table 1): basic blocks [2, 2, 2, 2]."""
    return _resnet("resnet18", num_classes, in_channels, small_input, zero_init_residual)


@register_model(twin="resnet34")
def resnet34(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-34 (He et al. 2015, Table 1): basic blocks [3, 4, 6, 3]."""
    return _resnet("resnet34", num_classes, in_channels, small_input, zero_init_residual)


@register_model(twin="resnet50")
def resnet50(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 (He et al. 2015, Table 1): bottleneck blocks [3, 4, 6, 3]."""
    return _resnet("resnet50", num_classes, in_channels, small_input, zero_init_residual)


@register_model(twin="resnet101")
def resnet101(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
              zero_init_residual: bool = False) -> ResNet:
    """ResNet-101 (He et al. 2015, Table 1): bottleneck blocks [3, 4, 23, 3]."""
    return _resnet("resnet101", num_classes, in_channels, small_input, zero_init_residual)


@register_model(twin="resnet152")
def resnet152(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
              zero_init_residual: bool = False) -> ResNet:
    """ResNet-152 (He et al. 2015, Table 1): bottleneck blocks [3, 8, 36, 3]."""
    return _resnet("resnet152", num_classes, in_channels, small_input, zero_init_residual)


def cifar_blocks_per_stage(depth: int) -> int:
    """``n`` of a CIFAR-style network of ``depth = 6n + 2`` weighted layers."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR-style network has 6n + 2 layers (8, 14, 20, 26, ..., 56, 110), got {depth}")
    return (depth - 2) // 6


def resnet_cifar(depth: int, *, num_classes: int = 10, in_channels: int = 3,
                 zero_init_residual: bool = False) -> ResNet:
    """A CIFAR ResNet of any depth ``6n + 2`` (He et al. 2015, section 4.2; option-A shortcuts):
    ``resnet_cifar(20)`` is ``resnet20()``."""
    n = cifar_blocks_per_stage(depth)
    return ResNet(functools.partial(BasicBlock, shortcut="A"), (n, n, n), widths=CIFAR_WIDTHS,
                  num_classes=num_classes, in_channels=in_channels, stem="cifar",
                  zero_init_residual=zero_init_residual, name=f"resnet{depth}")


def _cifar_resnet(name: str, num_classes: int, in_channels: int, small_input: bool,
                  zero_init_residual: bool) -> ResNet:
    require_small_input(name, small_input, "resnet18 .. resnet152")
    return resnet_cifar(6 * CIFAR_RESNETS[name] + 2, num_classes=num_classes, in_channels=in_channels,
                        zero_init_residual=zero_init_residual)


@register_model(small_only=True, input_size=(3, 32, 32))
def resnet20(*, num_classes: int = 10, in_channels: int = 3, small_input: bool = True,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-20 for CIFAR (He et al. 2015, section 4.2, n=3): 0.27M parameters."""
    return _cifar_resnet("resnet20", num_classes, in_channels, small_input, zero_init_residual)


@register_model(small_only=True, input_size=(3, 32, 32))
def resnet32(*, num_classes: int = 10, in_channels: int = 3, small_input: bool = True,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-32 for CIFAR (He et al. 2015, section 4.2, n=5): 0.46M parameters."""
    return _cifar_resnet("resnet32", num_classes, in_channels, small_input, zero_init_residual)


@register_model(small_only=True, input_size=(3, 32, 32))
def resnet44(*, num_classes: int = 10, in_channels: int = 3, small_input: bool = True,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-44 for CIFAR (He et al. 2015, section 4.2, n=7): 0.66M parameters."""
    return _cifar_resnet("resnet44", num_classes, in_channels, small_input, zero_init_residual)


@register_model(small_only=True, input_size=(3, 32, 32))
def resnet56(*, num_classes: int = 10, in_channels: int = 3, small_input: bool = True,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-56 for CIFAR (He et al. 2015, section 4.2, n=9): 0.85M parameters."""
    return _cifar_resnet("resnet56", num_classes, in_channels, small_input, zero_init_residual)


@register_model(small_only=True, input_size=(3, 32, 32))
def resnet110(*, num_classes: int = 10, in_channels: int = 3, small_input: bool = True,
              zero_init_residual: bool = False) -> ResNet:
    """ResNet-110 for CIFAR (He et al. 2015, section 4.2, n=18): 1.7M parameters."""
    return _cifar_resnet("resnet110", num_classes, in_channels, small_input, zero_init_residual)
