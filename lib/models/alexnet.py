"""AlexNet (Krizhevsky et al. 2012): five convolutions with ReLU, three max poolings, three fully connected layers.

The table ``ALEXNET_CONFIGS`` is the network's convolutions written as data, read like VGG's: a ``Conv``
is a convolution followed by ReLU, ``"M"`` a 3x3 max pooling with stride 2 (the paper's overlapping
pooling). The registered ``alexnet`` is torchvision's, which is the single-GPU variant of Krizhevsky
2014 ("One weird trick", section 3): 64, 192, 384, 256, 256 filters instead of the 2012 paper's
96, 256, 384, 384, 256 split over two GPUs, and no local response normalisation. Module names match
torchvision (``features.N``, ``classifier.1/4/6``), so its state_dicts load with ``strict=True``.

    (N, 3, 224, 224) -> conv1 11x11/4 -> (N, 64, 55, 55) -> pool -> (N, 64, 27, 27) -> conv2 5x5
    -> (N, 192, 27, 27) -> pool -> (N, 192, 13, 13) -> conv3..5 3x3 -> (N, 256, 13, 13) -> pool
    -> (N, 256, 6, 6) -> flatten (N, 9216) -> fc 4096 -> fc 4096 -> fc (N, num_classes)

An image must be at least 63x63 (each pooling needs a 3x3 window). ``small_input=True`` (28x28 or
32x32 images): the 11x11 stride-4 ``conv1`` becomes a 3x3 stride-1 convolution, so a 32x32 image
reaches the last pooling at 7x7 and leaves it at 3x3 (28x28: 6x6, then 2x2); as in VGG's small form, the
6x6 pooling and the 4096-4096 classifier (58.6M of the 61.1M parameters) become global average pooling
and one dropout + linear layer.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lib.models.registry import register_model
from lib.models.base import ImageClassifier


@dataclass(frozen=True)
class Conv:
    """One convolution of the table (followed by ReLU)."""

    c_out: int
    kernel_size: int
    stride: int = 1
    padding: int = 0


# Krizhevsky 2014, section 3 (as torchvision): conv1 .. conv5, "M" = 3x3 max pooling, stride 2.
ALEXNET_CONFIGS: dict[str, tuple[Conv | str, ...]] = {
    "alexnet": (Conv(64, kernel_size=11, stride=4, padding=2), "M",
                Conv(192, kernel_size=5, padding=2), "M",
                Conv(384, kernel_size=3, padding=1),
                Conv(256, kernel_size=3, padding=1),
                Conv(256, kernel_size=3, padding=1), "M"),
}
SMALL_CONV1 = Conv(64, kernel_size=3, stride=1, padding=1)  # replaces conv1 with small_input (its c_out is kept)


def make_features(config: Sequence[Conv | str], *, in_channels: int = 3) -> nn.Sequential:
    """One flat ``Sequential`` (conv, ReLU, [maxpool], ...), indexed exactly as torchvision's ``features``."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            continue
        layers += [nn.Conv2d(c, v.c_out, v.kernel_size, v.stride, v.padding), nn.ReLU(inplace=True)]
        c = v.c_out
    return nn.Sequential(*layers)


def output_size(config: Sequence[Conv | str], size: int) -> int:
    """The height (or width) of the last feature map for an input of ``size`` pixels; 0 if it is too small."""
    for v in config:
        k, s, p = (3, 2, 0) if v == "M" else (v.kernel_size, v.stride, v.padding)
        size = (size + 2 * p - k) // s + 1 if size + 2 * p >= k else 0
    return size


class AlexNet(ImageClassifier):
    """``features`` -> ``avgpool`` -> ``classifier`` (dropout and ReLU between the fully connected layers).

    PyTorch's default initialisation throughout, as torchvision (the 2012 paper drew the weights from
    N(0, 0.01) and set some biases to 1).
    """

    def __init__(self, config: Sequence[Conv | str], *, num_classes: int = 1000, in_channels: int = 3,
                 small_input: bool = False, dropout: float = 0.5, name: str = "AlexNet"):
        super().__init__()
        self.name, self.in_channels = name, in_channels
        if small_input:
            config = (dataclasses.replace(SMALL_CONV1, c_out=config[0].c_out), *config[1:])
        self.min_size = next(s for s in itertools.count(1) if output_size(config, s) >= 1)
        self.features = make_features(config, in_channels=in_channels)
        c = [v for v in config if v != "M"][-1].c_out
        if small_input:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(6)
            self.classifier = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(c * 6 * 6, 4096), nn.ReLU(inplace=True),
                nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes),
            )

    def stages(self) -> dict[str, nn.Module]:
        """``conv1`` .. ``conv5`` (each with its ReLU and the pooling after it), ``head`` (see
        ``lib.models.registry``)."""
        starts = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        ends = [*starts[1:], len(self.features)]
        return {**{f"conv{k + 1}": self.features[a:b] for k, (a, b) in enumerate(zip(starts, ends))},
                "head": nn.Sequential(self.avgpool, nn.Flatten(1), self.classifier)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)  # (N, 256, 6, 6) at 224x224; (N, 256, 3, 3) at 32x32 with small_input

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, 256 * 6 * 6), or (N, 256) with small_input
        return self.classifier(x)  # (N, num_classes)


@register_model(twin="alexnet")
def alexnet(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> AlexNet:
    """AlexNet (Krizhevsky et al. 2012, Fig. 2) in torchvision's single-GPU form (Krizhevsky 2014)."""
    return AlexNet(ALEXNET_CONFIGS["alexnet"], num_classes=num_classes, in_channels=in_channels,
                   small_input=small_input, name="alexnet")
