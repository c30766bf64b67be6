"""ConvNeXt (Liu et al. 2022): a ResNet modernised step by step towards a vision transformer: a 4x4
"patchify" stem, four stages of ConvNeXt blocks (depthwise 7x7, LayerNorm, inverted MLP, layer scale,
stochastic depth) with a LayerNorm + 2x2 stride-2 convolution between stages, and a LayerNorm head.

Each size is a row of ``CONVNEXTS``: the channels ``C`` and block counts ``B`` of the four stages, as the
paper's section 3 lists them, and the stochastic-depth rate of its ImageNet-1K recipe (appendix A). The block is
``lib.models.blocks.ConvNeXtBlock``. Module names match torchvision (``features.0`` the stem,
``features.1, 3, 5, 7`` the stages, ``features.2, 4, 6`` the downsampling layers, ``classifier.0/2``),
so its state_dicts load with ``strict=True``.

Shapes of ConvNeXt-T (stages as ``stages()`` names them), ImageNet form and ``small_input=True``:

    stem     (N, C, 224, 224) -> (N, 96, 56, 56)      small: (N, C, 32, 32) -> (N, 96, 16, 16)
    stage1   -> (N, 96, 56, 56)                              -> (N, 96, 16, 16)
    stage2   -> (N, 192, 28, 28)  (downsampling, blocks)     -> (N, 192, 8, 8)
    stage3   -> (N, 384, 14, 14)                             -> (N, 384, 4, 4)
    stage4   -> (N, 768, 7, 7)                               -> (N, 768, 2, 2)
    head     -> global pooling -> LayerNorm -> (N, num_classes)

``small_input=True`` (28x28 or 32x32 images), as EfficientNet's small form: the stem cuts 2x2 patches
instead of 4x4, so the network downsamples by 16 instead of 32 and a 32x32 image ends at 2x2.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from lib.models.blocks import ConvNeXtBlock, LayerNorm2d
from lib.models.registry import register_model
from lib.models.base import ImageClassifier, init_weights, trunc_normal


@dataclass(frozen=True)
class ConvNeXtConfig:
    """One ConvNeXt size (Liu et al. 2022, section 3 and appendix A)."""

    widths: tuple[int, int, int, int]  # C: channels of the four stages
    depths: tuple[int, int, int, int]  # B: blocks in each stage
    stochastic_depth_prob: float  # the largest drop rate, reached by the last block (linear in the block index)


CONVNEXTS: dict[str, ConvNeXtConfig] = {
    "convnext_tiny": ConvNeXtConfig(widths=(96, 192, 384, 768), depths=(3, 3, 9, 3), stochastic_depth_prob=0.1),
    "convnext_small": ConvNeXtConfig(widths=(96, 192, 384, 768), depths=(3, 3, 27, 3), stochastic_depth_prob=0.4),
    "convnext_base": ConvNeXtConfig(widths=(128, 256, 512, 1024), depths=(3, 3, 27, 3), stochastic_depth_prob=0.5),
    "convnext_large": ConvNeXtConfig(widths=(192, 384, 768, 1536), depths=(3, 3, 27, 3), stochastic_depth_prob=0.5),
}

LayerNorm = functools.partial(LayerNorm2d, eps=1e-6)  # channels-first, as between the stages


class ConvNeXt(ImageClassifier):
    """stem (patchify + LayerNorm) -> [stage, downsampling] x 3 -> stage -> global pooling -> LayerNorm -> linear.

    (N, C, H, W) -> forward_features -> (N, widths[-1], H/32, W/32) (H/16 with small_input) -> (N, num_classes).
    """

    def __init__(self, cfg: ConvNeXtConfig, *, num_classes: int = 1000, in_channels: int = 3,
                 small_input: bool = False, stochastic_depth_prob: float | None = None, layer_scale: float = 1e-6,
                 name: str = "ConvNeXt"):
        super().__init__()
        self.cfg, self.name, self.in_channels = cfg, name, in_channels
        patch = 2 if small_input else 4
        self.min_size = patch * 2 ** (len(cfg.widths) - 1)
        sd = cfg.stochastic_depth_prob if stochastic_depth_prob is None else stochastic_depth_prob
        total, block_id = sum(cfg.depths), 0
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, cfg.widths[0], kernel_size=patch, stride=patch),
                                                 LayerNorm(cfg.widths[0]))]
        for i, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
            if i > 0:  # downsampling between stages
                layers.append(nn.Sequential(LayerNorm(cfg.widths[i - 1]),
                                            nn.Conv2d(cfg.widths[i - 1], width, kernel_size=2, stride=2)))
            blocks = []
            for _ in range(depth):
                blocks.append(ConvNeXtBlock(width, layer_scale=layer_scale, sd_prob=sd * block_id / (total - 1)))
                block_id += 1
            layers.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        c = cfg.widths[-1]
        self.classifier = nn.Sequential(LayerNorm(c), nn.Flatten(1), nn.Linear(c, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """The paper's (and torchvision's) scheme: convolutions and linear layers truncated-normal with
        std 0.02, zero biases; LayerNorm = identity; layer scale 1e-6 (set by the blocks)."""
        init_weights(self, {(nn.Conv2d, nn.Linear): trunc_normal(0.02)})

    def stages(self) -> dict[str, nn.Module]:
        """``stem``, ``stage1`` .. ``stage4`` (stages 2-4 begin with their downsampling layer), ``head``
        (see ``lib.models.registry``)."""
        f = self.features
        return {"stem": f[0], "stage1": f[1], **{f"stage{k}": f[2 * k - 2:2 * k] for k in range(2, len(f) // 2 + 1)},
                "head": nn.Sequential(self.avgpool, self.classifier)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)  # (N, widths[-1], H/32, W/32); H/16 with small_input

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(x))  # (N, C, 1, 1) -> LayerNorm, flatten -> (N, num_classes)


def _convnext(name: str, num_classes: int, in_channels: int, small_input: bool,
              stochastic_depth_prob: float | None) -> ConvNeXt:
    return ConvNeXt(CONVNEXTS[name], num_classes=num_classes, in_channels=in_channels, small_input=small_input,
                    stochastic_depth_prob=stochastic_depth_prob, name=name)


@register_model(twin="convnext_tiny")
def convnext_tiny(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                  stochastic_depth_prob: float | None = None) -> ConvNeXt:
    """ConvNeXt-T (Liu et al. 2022, section 3): C = (96, 192, 384, 768), B = (3, 3, 9, 3)."""
    return _convnext("convnext_tiny", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="convnext_small")
def convnext_small(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                   stochastic_depth_prob: float | None = None) -> ConvNeXt:
    """ConvNeXt-S (Liu et al. 2022, section 3): C = (96, 192, 384, 768), B = (3, 3, 27, 3)."""
    return _convnext("convnext_small", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="convnext_base")
def convnext_base(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                  stochastic_depth_prob: float | None = None) -> ConvNeXt:
    """ConvNeXt-B (Liu et al. 2022, section 3): C = (128, 256, 512, 1024), B = (3, 3, 27, 3)."""
    return _convnext("convnext_base", num_classes, in_channels, small_input, stochastic_depth_prob)


@register_model(twin="convnext_large")
def convnext_large(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                   stochastic_depth_prob: float | None = None) -> ConvNeXt:
    """ConvNeXt-L (Liu et al. 2022, section 3): C = (192, 384, 768, 1536), B = (3, 3, 27, 3)."""
    return _convnext("convnext_large", num_classes, in_channels, small_input, stochastic_depth_prob)
