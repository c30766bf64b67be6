"""Small networks whose paths meet, for the receptive-field exercise and chapter: a residual pair, an
Inception-like module, parallel dilated convolutions and a squeeze-and-excitation gate.

    model = branching_model("residual", width=4, k=3, dilation=1)   # eval mode, random weights

Their fields can be measured with ``lib.analysis.empirical_receptive_field`` and computed by hand; they are
not registered models (``lib.models.build`` does not list them).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lib.models.blocks import SqueezeExcitation


class _ResidualNet(nn.Module):
    """stem -> residual block (identity) -> residual block with a strided branch and a 1x1 shortcut."""

    def __init__(self, width: int, k: int, dilation: int):
        super().__init__()
        p = dilation * (k - 1) // 2
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.a1 = nn.Conv2d(width, width, k, padding=p, dilation=dilation)
        self.a2 = nn.Conv2d(width, width, 3, padding=1)
        self.b1 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.b2 = nn.Conv2d(width, width, k, padding=p, dilation=dilation)
        self.shortcut = nn.Conv2d(width, width, 1, stride=2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.a2(F.relu(self.a1(x))))
        return F.relu(self.shortcut(x) + self.b2(F.relu(self.b1(x))))


class _InceptionNet(nn.Module):
    """Four concatenated branches (1x1; 3x3; two 3x3; 3x3 max pooling then 1x1), a functional average pooling,
    and a second, dilated module: the field is the largest over the branches."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.b1 = nn.Conv2d(3, width, 1)
        self.b2 = nn.Conv2d(3, width, 3, padding=1)
        self.b3 = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(3, width, 1))
        self.c1 = nn.Conv2d(4 * width, width, 3, padding=dilation, dilation=dilation)
        self.c2 = nn.Conv2d(4 * width, width, 1)

    def forward(self, x):
        x = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)
        x = F.avg_pool2d(x, 2)
        return torch.cat([self.c1(x), self.c2(x)], 1)


class _GatedNet(nn.Module):
    """Convolutions with a squeeze-and-excitation gate: the gate's global pooling does not count."""

    def __init__(self, width: int, k: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, k, stride=2, padding=k // 2)
        self.se = SqueezeExcitation(width, max(1, width // 4))
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.se(F.relu(self.conv1(x))))


class _DilatedSum(nn.Module):
    """Parallel dilated 3x3 convolutions, summed (as in DeepLab's atrous spatial pyramid)."""

    def __init__(self, width: int, rates: Sequence[int]):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.branches = nn.ModuleList(nn.Conv2d(width, width, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x):
        x = self.stem(x)
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


def branching_model(kind: str, **options) -> nn.Module:
    """The branching networks the tests trace: ``residual`` (width, k, dilation), ``inception`` (width,
    dilation), ``gated`` (width, k: squeeze-excitation), ``dilated`` (width, rates)."""
    builders = {"residual": lambda width=4, k=3, dilation=1: _ResidualNet(width, k, dilation),
                "inception": lambda width=2, dilation=2: _InceptionNet(width, dilation),
                "gated": lambda width=4, k=3: _GatedNet(width, k),
                "dilated": lambda width=2, rates=(1, 2, 4): _DilatedSum(width, rates)}
    return builders[kind](**options).eval()
