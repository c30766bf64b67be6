"""Plain networks (He et al. 2015, section 4.2): the CIFAR ResNets with every shortcut removed.

The degradation experiment compares ``plain20`` with ``resnet20`` and ``plain56`` with ``resnet56``:
same stem, same 16/32/64-channel stages of ``n`` two-convolution blocks, same number of weighted
layers (``6n + 2``) and the same parameters (the CIFAR ResNets' option-A shortcuts have none), so the
only difference is the ``+ x`` in every block.

    plain20 = plain_cifar(20)                  # n = 3
    resnet20 = resnet_cifar(20)                # the same network with shortcuts (= lib.models.resnet20())
"""
from __future__ import annotations

import torch
from torch import nn

from lib.models.resnet import CIFAR_WIDTHS, ResNet, cifar_blocks_per_stage, resnet_cifar

__all__ = ["PlainBlock", "plain_cifar", "resnet_cifar"]


class PlainBlock(nn.Module):
    """``BasicBlock`` without its shortcut: conv3x3-BN-ReLU-conv3x3-BN-ReLU.

    (N, c_in, H, W) -> (N, c_out, H/stride, W/stride). Attribute names follow ``BasicBlock`` so the
    two can be compared layer by layer (and ``ResNet(zero_init_residual=...)`` finds ``bn2``).
    """

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))  # no "+ x": this is what makes it plain


def plain_cifar(depth: int, *, num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """A plain CIFAR network of ``depth = 6n + 2`` weighted layers (He et al. 2015, Fig. 6, left)."""
    n = cifar_blocks_per_stage(depth)
    return ResNet(PlainBlock, (n, n, n), widths=CIFAR_WIDTHS, num_classes=num_classes, in_channels=in_channels,
                  stem="cifar", name=f"plain{depth}")
