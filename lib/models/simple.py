"""A small CNN that trains on Fashion-MNIST in about a minute on a laptop CPU (the convolution chapter's model)."""
from __future__ import annotations

import torch
from torch import nn

from lib.checks import check_image_batch


class SimpleCNN(nn.Module):
    """Two conv-BN-ReLU-maxpool stages, then global average pooling and a linear classifier.

    (N, C, 28, 28) -> conv 3x3 -> (N, w, 28, 28) -> pool -> (N, w, 14, 14)
                   -> conv 3x3 -> (N, 2w, 14, 14) -> pool -> (N, 2w, 7, 7) -> GAP -> (N, 2w) -> fc
    """

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10, width: int = 32, pool: str = "max"):
        super().__init__()
        self.in_channels = in_channels
        Pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            Pool(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            Pool(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, model="SimpleCNN", in_channels=self.in_channels, min_size=4)
        return self.features(x)  # (N, 2w, H/4, W/4)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def simple_cnn(*, in_channels: int = 1, num_classes: int = 10, width: int = 32, pool: str = "max") -> SimpleCNN:
    """The course's baseline: a two-stage CNN with global average pooling."""
    return SimpleCNN(in_channels=in_channels, num_classes=num_classes, width=width, pool=pool)
