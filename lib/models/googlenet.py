"""GoogLeNet, or Inception v1 (Szegedy et al. 2015): a stem of plain convolutions, nine Inception modules
in three groups separated by max pooling, global average pooling, dropout and one linear layer, and two
auxiliary classifiers that only run in training.

The Inception widths are the paper's Table 1 written as data (``INCEPTIONS``: one row per module, the
columns of the table as fields); the Inception module itself is ``lib.models.blocks.Inception``. Module
names, defaults and outputs are those of torchvision's ``googlenet(weights=None)``, so its state_dicts
load with ``strict=True``:

* ``aux_logits=True``: the auxiliary classifiers ``aux1`` (after inception4a) and ``aux2`` (after
  inception4d) exist, and in training mode the model returns ``GoogLeNetOutputs(logits, aux_logits2,
  aux_logits1)`` (the paper adds their losses with weight 0.3); in eval mode it returns the logits alone.
  torchvision's ImageNet weights come without them: ``aux_logits=False`` is the model of its ``num_params``.
* ``transform_input=False``: with ``True`` the input is taken to be ImageNet-normalised and is rescaled to
  the ``(x - 0.5) / 0.5`` of the weights ported from the original (torchvision sets it when it loads them).
* ``init_weights=True``: truncated-normal weights (std 0.01) and BN = identity; ``False`` keeps PyTorch's
  default initialisation.
* torchvision's ImageNet weights (``lib.transfer.load_torchvision_weights``) fit ``googlenet(transform_input=True)``
  as built by default otherwise: the file also holds (untrained) auxiliary classifiers.
* The "5x5" branch of every module is a 3x3 convolution, as in torchvision and its weights (a slip kept
  for the weights; ``blocks.Inception`` itself defaults to the paper's 5x5).

Shapes (stages as ``stages()`` names them), ImageNet form and ``small_input=True``:

    stem        (N, C, 224, 224) -> (N, 192, 28, 28)      small: (N, C, 32, 32) -> (N, 192, 16, 16)
    inception3  -> (N, 480, 14, 14)                              -> (N, 480, 8, 8)
    inception4  -> (N, 832, 7, 7)                                -> (N, 832, 4, 4)
    inception5  -> (N, 1024, 7, 7)                               -> (N, 1024, 4, 4)
    head        -> (N, num_classes)

``small_input=True`` (28x28 or 32x32 images), as ResNet's small form: ``conv1`` becomes a 3x3 stride-1
convolution and ``maxpool1`` goes, so the network downsamples by 8 instead of 32.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from lib.models.blocks import BasicConv2d, Inception, InceptionAux
from lib.models.registry import register_model
from lib.models.base import ImageClassifier, init_weights, norm_identity, trunc_normal


@dataclass(frozen=True)
class InceptionRow:
    """One Inception row of Szegedy et al. 2015, Table 1: the output channels of each branch."""

    c1x1: int  # "#1x1"
    c3x3_reduce: int  # "#3x3 reduce": the 1x1 convolution before the 3x3
    c3x3: int  # "#3x3"
    c5x5_reduce: int  # "#5x5 reduce"
    c5x5: int  # "#5x5"
    pool_proj: int  # "pool proj": the 1x1 convolution after the 3x3 max pooling

    @property
    def out_channels(self) -> int:
        return self.c1x1 + self.c3x3 + self.c5x5 + self.pool_proj


# Szegedy et al. 2015, Table 1. Max pooling (3x3, stride 2) follows inception3b; 2x2 follows inception4e.
INCEPTIONS: dict[str, InceptionRow] = {
    "inception3a": InceptionRow(c1x1=64, c3x3_reduce=96, c3x3=128, c5x5_reduce=16, c5x5=32, pool_proj=32),
    "inception3b": InceptionRow(c1x1=128, c3x3_reduce=128, c3x3=192, c5x5_reduce=32, c5x5=96, pool_proj=64),
    "inception4a": InceptionRow(c1x1=192, c3x3_reduce=96, c3x3=208, c5x5_reduce=16, c5x5=48, pool_proj=64),
    "inception4b": InceptionRow(c1x1=160, c3x3_reduce=112, c3x3=224, c5x5_reduce=24, c5x5=64, pool_proj=64),
    "inception4c": InceptionRow(c1x1=128, c3x3_reduce=128, c3x3=256, c5x5_reduce=24, c5x5=64, pool_proj=64),
    "inception4d": InceptionRow(c1x1=112, c3x3_reduce=144, c3x3=288, c5x5_reduce=32, c5x5=64, pool_proj=64),
    "inception4e": InceptionRow(c1x1=256, c3x3_reduce=160, c3x3=320, c5x5_reduce=32, c5x5=128, pool_proj=128),
    "inception5a": InceptionRow(c1x1=256, c3x3_reduce=160, c3x3=320, c5x5_reduce=32, c5x5=128, pool_proj=128),
    "inception5b": InceptionRow(c1x1=384, c3x3_reduce=192, c3x3=384, c5x5_reduce=48, c5x5=128, pool_proj=128),
}
FIVE_BY_FIVE = 3  # the kernel of the "5x5" branch in torchvision's GoogLeNet and its weights

# ImageNet's per-channel mean and std, which torchvision's transforms normalise with.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class GoogLeNetOutputs(NamedTuple):
    """What a GoogLeNet with auxiliary classifiers returns in training mode (torchvision's field order)."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor | None
    aux_logits1: torch.Tensor | None


def renormalize_input(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised RGB ``(x - mean) / std`` -> ``(x - 0.5) / 0.5``, channel by channel (N, 3, H, W)."""
    return torch.cat([x[:, i:i + 1] * (IMAGENET_STD[i] / 0.5) + (IMAGENET_MEAN[i] - 0.5) / 0.5 for i in range(3)], 1)


class RenormalizeInput(nn.Module):
    """``renormalize_input`` as the first module of the stem stage (when ``transform_input=True``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return renormalize_input(x)


class GoogLeNetHead(nn.Module):
    """The head stage: global average pooling -> dropout -> ``fc``. It also holds the auxiliary classifiers,
    which classify (from inside the network, in training only) and so belong with the heads, not the features."""

    def __init__(self, model: GoogLeNet):
        super().__init__()
        self.aux1, self.aux2 = model.aux1, model.aux2
        self.avgpool, self.dropout, self.fc = model.avgpool, model.dropout, model.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class GoogLeNet(ImageClassifier):
    """stem -> inception3a, 3b -> pool -> inception4a .. 4e -> pool -> inception5a, 5b -> avg pool -> dropout -> fc.

    (N, C, H, W) -> forward_features -> (N, 1024, H/32, W/32) (H/8 with small_input) -> (N, num_classes).
    """

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                 aux_logits: bool = True, transform_input: bool = False, init_weights: bool = True,
                 dropout: float = 0.2, dropout_aux: float = 0.7, name: str = "GoogLeNet"):
        super().__init__()
        if transform_input and in_channels != 3:
            raise ValueError(f"{name}: transform_input rescales ImageNet-normalised RGB images, "
                             f"but in_channels={in_channels}")
        self.name, self.in_channels = name, in_channels
        self.aux_logits, self.transform_input = aux_logits, transform_input
        self.min_size = 8 if small_input else 32
        if small_input:
            self.conv1 = BasicConv2d(in_channels, 64, 3, stride=1, padding=1)
            self.maxpool1: nn.Module = nn.Identity()
        else:
            self.conv1 = BasicConv2d(in_channels, 64, 7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        c = 192
        for module_name, row in INCEPTIONS.items():
            self.add_module(module_name, Inception(c, **dataclasses.asdict(row), k5x5=FIVE_BY_FIVE))
            c = row.out_channels
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.aux1 = InceptionAux(INCEPTIONS["inception4a"].out_channels, num_classes, dropout=dropout_aux) \
            if aux_logits else None
        self.aux2 = InceptionAux(INCEPTIONS["inception4d"].out_channels, num_classes, dropout=dropout_aux) \
            if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(c, num_classes)
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's scheme: convolutions and linear layers truncated-normal (std 0.01, cut at +-2),
        BN = identity."""
        init_weights(self, {(nn.Conv2d, nn.Linear): trunc_normal(0.01, bias=False), nn.BatchNorm2d: norm_identity})

    def stages(self) -> dict[str, nn.Module]:
        """``stem``, ``inception3`` .. ``inception5`` (each with the pooling after it), ``head`` (with the
        auxiliary classifiers; see ``lib.models.registry``)."""
        stem = [self.conv1, self.maxpool1, self.conv2, self.conv3, self.maxpool2]
        return {"stem": nn.Sequential(*([RenormalizeInput()] if self.transform_input else []), *stem),
                "inception3": nn.Sequential(self.inception3a, self.inception3b, self.maxpool3),
                "inception4": nn.Sequential(self.inception4a, self.inception4b, self.inception4c,
                                            self.inception4d, self.inception4e, self.maxpool4),
                "inception5": nn.Sequential(self.inception5a, self.inception5b),
                "head": GoogLeNetHead(self)}

    def _features(self, x: torch.Tensor, with_aux: bool):
        self.check_input(x)
        if self.transform_input:
            x = renormalize_input(x)
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))  # (N, 192, H/8, W/8)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (N, 480, H/16, W/16)
        x = self.inception4a(x)  # (N, 512, H/16, W/16)
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (N, 528, H/16, W/16)
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))  # (N, 832, H/32, W/32)
        x = self.inception5b(self.inception5a(x))  # (N, 1024, H/32, W/32)
        return x, aux1, aux2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x, with_aux=False)[0]  # (N, 1024, H/32, W/32); H/8 with small_input

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        with_aux = self.training and self.aux_logits
        x, aux1, aux2 = self._features(x, with_aux)
        logits = self.forward_head(x)
        return GoogLeNetOutputs(logits, aux2, aux1) if with_aux else logits


@register_model(twin="googlenet")
def googlenet(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, aux_logits: bool = True,
              transform_input: bool = False, init_weights: bool = True) -> GoogLeNet:
    """GoogLeNet (Szegedy et al. 2015, Table 1), with torchvision's defaults for a model without weights."""
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                     aux_logits=aux_logits, transform_input=transform_input, init_weights=init_weights,
                     name="googlenet")
