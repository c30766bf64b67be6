"""A small CNN that trains on Fashion-MNIST in about a minute on a laptop CPU (the convolution chapter's model)."""
from __future__ import annotations

import torch
from torch import nn

from lib.models.registry import register_model, require_small_input
from lib.models.base import ImageClassifier


class SimpleCNN(ImageClassifier):
    """Three conv-BN-ReLU stages (the first two followed by 2x2 pooling), global average pooling, a linear classifier.

    (N, C, 28, 28) -> conv 3x3 -> (N, w, 28, 28)   -> pool -> (N, w, 14, 14)
                   -> conv 3x3 -> (N, 2w, 14, 14)  -> pool -> (N, 2w, 7, 7)
                   -> conv 3x3 -> (N, 4w, 7, 7)    -> GAP  -> (N, 4w) -> fc -> (N, num_classes)
    """

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10, width: int = 32, pool: str = "max",
                 head: str = "gap", image_size: int = 28):
        super().__init__()
        if pool not in ("max", "avg") or head not in ("gap", "flatten"):
            raise ValueError(f"SimpleCNN takes pool='max'|'avg' and head='gap'|'flatten', got {pool!r}, {head!r}")
        self.name, self.in_channels, self.min_size = "simple_cnn", in_channels, 4  # two 2x2 poolings
        Pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            Pool(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            Pool(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False), nn.BatchNorm2d(4 * width), nn.ReLU(inplace=True),
        )
        # "gap": average each of the 4w maps to one number; "flatten": keep all 4w * (H/4) * (W/4) numbers
        side = image_size // 4
        self.pool = nn.AdaptiveAvgPool2d(1) if head == "gap" else nn.Identity()
        self.fc = nn.Linear(4 * width * (1 if head == "gap" else side * side), num_classes)

    def stages(self) -> dict[str, nn.Module]:
        """``stage1`` .. ``stage3`` (conv-BN-ReLU, and the pooling after the first two), ``head``
        (see ``lib.models.registry``)."""
        f = self.features
        return {"stage1": f[0:4], "stage2": f[4:8], "stage3": f[8:],
                "head": nn.Sequential(self.pool, nn.Flatten(1), self.fc)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)  # (N, 4w, H/4, W/4)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))  # (N, num_classes)


@register_model(small_only=True, input_size=(1, 28, 28))
def simple_cnn(*, num_classes: int = 10, in_channels: int = 1, small_input: bool = True, width: int = 32,
               pool: str = "max", head: str = "gap", image_size: int = 28) -> SimpleCNN:
    """The course's baseline: a three-stage CNN with a global-average-pooling (or flatten) head."""
    require_small_input("simple_cnn", small_input, "resnet18 or vgg11")
    return SimpleCNN(in_channels=in_channels, num_classes=num_classes, width=width, pool=pool, head=head,
                     image_size=image_size)
