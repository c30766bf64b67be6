"""ConvNeXt's modernisation roadmap (Liu et al. 2022, Figure 2) at Fashion-MNIST scale: a small ResNet turned
into a small ConvNeXt one design change at a time.

Each step of the roadmap is a frozen ``RoadmapConfig``, made from the step before it by ``dataclasses.replace``
of the fields that step changes (``ROADMAP``: step name -> config, in the paper's order), and one builder,
``roadmap_net(cfg)``, reads any of them. So two consecutive steps differ in exactly the fields their row names,
and nothing else (``tests/test_roadmap.py`` checks it). These networks are not torchvision twins and are not in
``lib.models.MODELS``; ``lib/experiments/convnext_roadmap.py`` trains them.

The baseline is ResNet-50's design at a quarter of its widths: a ResNet-style stem (here a 3x3 convolution and a
3x3 stride-2 max pooling, downsampling by 2 instead of 4 for 28x28 images), four stages of bottleneck blocks
(1x1 reduce, 3x3, 1x1 expand by 4, BN and ReLU after each but the last, ReLU after the sum, a 1x1 projection
shortcut where the shape changes, the stride on the 3x3 as torchvision's "v1.5"), global pooling and a linear
layer. The steps, with the paper's ImageNet-1K top-1 after each (Figure 2):

=====================  ==============================================================================  ======
step                   change                                                                           paper
=====================  ==============================================================================  ======
resnet                 bottleneck blocks (2, 3, 4, 2), widths (16, 32, 64, 128) x 4                  78.8
stage ratio            blocks (2, 2, 6, 2): ConvNeXt-T's 1:1:3:1 (the paper: (3, 4, 6, 3) -> (3, 3, 9, 3))  79.4
patchify stem          the stem becomes a 2x2 stride-2 convolution + norm (the paper: 4x4 stride 4)     79.5
depthwise conv         the 3x3 convolution is depthwise (groups = channels), as ResNeXt taken to the end 78.3
width                  widths x 1.5: (24, 48, 96, 192) (the paper: 64 -> 96 channels)                   80.5
inverted bottleneck    1x1 expand to 4C -> depthwise 3x3 -> 1x1 back to C; the residual stream is C     80.6
move up depthwise      the depthwise convolution comes first, on C channels (as attention before the MLP) 79.9
kernel 7               the depthwise kernel grows from 3x3 to 7x7                                       80.6
GELU                   every ReLU becomes a GELU                                                         80.6
fewer activations      one GELU per block, between the two 1x1 convolutions                              81.3
fewer norms            one norm per block, after the depthwise convolution                              81.4
LayerNorm              BatchNorm -> LayerNorm (over channels, at each pixel) everywhere                 81.5
separate downsampling  blocks keep their shape; a norm + 2x2 stride-2 convolution between stages, a norm 82.0
                       after the global pooling: ConvNeXt's layout
=====================  ==============================================================================  ======

The paper's other steps of Figure 2 (kernels 5, 9 and 11, tried besides 3 and 7) are left out to save training time;
its ``ResNet-50`` row is already trained with the modern recipe (76.1 with the original one). What the paper
adds beyond the roadmap, layer scale and stochastic depth, is part of its recipe, and is left out too, as is
every other part of that recipe (see the experiment's docstring).

Every network first pads the 28x28 image to 32x32 with the background value (``BACKGROUND``), so that the four
stages see 16x16, 8x8, 4x4 and 2x2 maps in every step (a 2x2 stride-2 convolution and a 3x3 stride-2 one with
padding 1 then give the same sizes). Shapes (N = batch), e.g. the ``resnet`` step and the last step:

    (N, 1, 28, 28) -> pad (N, 1, 32, 32) -> stem (N, 16, 16, 16) -> stage1 (N, 64, 16, 16) -> stage2 (N, 128, 8, 8)
    -> stage3 (N, 256, 4, 4) -> stage4 (N, 512, 2, 2) -> pool, linear (N, 10)
    last: stem (N, 24, 16, 16) -> stage1 (N, 24, 16, 16) -> ... -> stage4 (N, 192, 2, 2) -> pool, LN, linear (N, 10)

One initialisation for every step (Kaiming-normal fan_out convolutions with zero biases, norms the identity,
PyTorch's default for the linear layer), so that it is not one more difference between the steps.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lib.counting import count_macs, count_params
from lib.data import BACKGROUND
from lib.models.blocks import LayerNorm2d
from lib.models.base import ImageClassifier, init_weights, kaiming_fan_out, norm_identity

PAD_TO = 32


@dataclass(frozen=True)
class RoadmapConfig:
    """One step of the roadmap: every design choice Liu et al. 2022's Figure 2 changes, as a field."""

    depths: tuple[int, int, int, int] = (2, 3, 4, 2)  # blocks per stage
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)  # a bottleneck's inner width / an inverted block's C
    stem: str = "resnet"  # "resnet": 3x3 conv, norm, act, 3x3 stride-2 max pool; "patchify": 2x2 stride-2 conv, norm
    block: str = "bottleneck"  # "bottleneck": C_in -> w -> w -> 4w; "inverted": C_in -> 4C -> 4C -> C
    spatial_groups: str = "dense"  # the kxk convolution: "dense" (groups=1) or "depthwise" (groups=channels)
    spatial_first: bool = False  # the kxk convolution first in the block (on the narrow C), not in the middle
    kernel: int = 3  # of the kxk convolution
    act: str = "relu"  # "relu" or "gelu"
    activations: str = "all"  # "all": after the first two convolutions and after the sum; "one": after the second only
    norms: str = "all"  # "all": after every convolution; "one": after the kxk convolution only
    norm: str = "bn"  # "bn" (BatchNorm2d) or "ln" (LayerNorm over channels, at every pixel)
    downsampling: str = "in_block"  # "in_block": stride 2 in a stage's first block, projection shortcut;
    #                                  "separate": norm + 2x2 stride-2 conv between stages, blocks keep their shape

    def __post_init__(self):
        choices = {"stem": ("resnet", "patchify"), "block": ("bottleneck", "inverted"),
                   "spatial_groups": ("dense", "depthwise"), "act": ("relu", "gelu"), "activations": ("all", "one"),
                   "norms": ("all", "one"), "norm": ("bn", "ln"), "downsampling": ("in_block", "separate")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"RoadmapConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.kernel % 2 != 1:
            raise ValueError(f"RoadmapConfig.kernel must be odd (same padding), got {self.kernel}")
        if self.block == "bottleneck" and self.spatial_first:
            raise ValueError("RoadmapConfig: spatial_first moves the depthwise convolution of an inverted block")
        if self.downsampling == "separate" and self.block != "inverted":
            raise ValueError("RoadmapConfig: separate downsampling needs inverted blocks (whose stream width is C)")

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels between blocks in each stage: 4w for bottleneck blocks, C for inverted ones."""
        return tuple(4 * w for w in self.widths) if self.block == "bottleneck" else self.widths


def _steps() -> dict[str, tuple[RoadmapConfig, str]]:
    """The roadmap in the paper's order: step name -> (config, what the step changed)."""
    steps: dict[str, tuple[RoadmapConfig, str]] = {}
    cfg = RoadmapConfig()
    changes = [
        ("resnet", {}, "the baseline: a small ResNet-50-style network"),
        ("stage ratio", {"depths": (2, 2, 6, 2)}, "blocks per stage 2:3:4:2 -> 1:1:3:1"),
        ("patchify stem", {"stem": "patchify"}, "stem: 3x3 conv + max pool -> 2x2 stride-2 conv"),
        ("depthwise conv", {"spatial_groups": "depthwise"}, "the 3x3 convolution becomes depthwise"),
        ("width", {"widths": (24, 48, 96, 192)}, "widths x 1.5"),
        ("inverted bottleneck", {"block": "inverted"}, "narrow-wide-narrow -> wide in the middle"),
        ("move up depthwise", {"spatial_first": True}, "the depthwise conv moves to the front"),
        ("kernel 7", {"kernel": 7}, "depthwise kernel 3x3 -> 7x7"),
        ("GELU", {"act": "gelu"}, "ReLU -> GELU"),
        ("fewer activations", {"activations": "one"}, "one activation per block"),
        ("fewer norms", {"norms": "one"}, "one norm per block"),
        ("LayerNorm", {"norm": "ln"}, "BatchNorm -> LayerNorm"),
        ("separate downsampling", {"downsampling": "separate"}, "downsampling layers between the stages"),
    ]
    for name, change, text in changes:
        cfg = dataclasses.replace(cfg, **change)
        steps[name] = (cfg, text)
    return steps


_STEPS = _steps()
ROADMAP: dict[str, RoadmapConfig] = {name: cfg for name, (cfg, _) in _STEPS.items()}
CHANGES: dict[str, str] = {name: text for name, (_, text) in _STEPS.items()}

# Liu et al. 2022, Figure 2: ImageNet-1K top-1 (%) after the same steps (ResNet-50 scale, their 300-epoch recipe).
PAPER_TOP1: dict[str, float] = {
    "resnet": 78.8, "stage ratio": 79.4, "patchify stem": 79.5, "depthwise conv": 78.3, "width": 80.5,
    "inverted bottleneck": 80.6, "move up depthwise": 79.9, "kernel 7": 80.6, "GELU": 80.6,
    "fewer activations": 81.3, "fewer norms": 81.4, "LayerNorm": 81.5, "separate downsampling": 82.0,
}


def changed_fields(a: RoadmapConfig, b: RoadmapConfig) -> list[str]:
    """The fields in which two configs differ."""
    return [f.name for f in dataclasses.fields(RoadmapConfig) if getattr(a, f.name) != getattr(b, f.name)]


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------
def make_norm(cfg: RoadmapConfig, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if cfg.norm == "bn" else LayerNorm2d(channels, eps=1e-6)


def make_act(cfg: RoadmapConfig) -> nn.Module:
    return nn.ReLU(inplace=True) if cfg.act == "relu" else nn.GELU()


def _branch_convs(cfg: RoadmapConfig, c_in: int, c_out: int, stride: int) -> list[nn.Conv2d]:
    """The three convolutions of a block, in order (``c_out``: the block's output channels), without biases
    (``RoadmapBlock`` gives one to each convolution that no norm follows)."""
    k, pad = cfg.kernel, cfg.kernel // 2

    def spatial(c: int, s: int) -> nn.Conv2d:
        return nn.Conv2d(c, c, k, s, pad, groups=c if cfg.spatial_groups == "depthwise" else 1, bias=False)

    def pointwise(a: int, b: int) -> nn.Conv2d:
        return nn.Conv2d(a, b, 1, bias=False)

    if cfg.block == "bottleneck":  # c_in -> w -> w -> 4w
        w = c_out // 4
        return [pointwise(c_in, w), spatial(w, stride), pointwise(w, c_out)]
    hidden = 4 * c_out
    if cfg.spatial_first:  # c_in -> c_in (kxk) -> 4C -> C
        return [spatial(c_in, stride), pointwise(c_in, hidden), pointwise(hidden, c_out)]
    return [pointwise(c_in, hidden), spatial(hidden, stride), pointwise(hidden, c_out)]


def _with_bias(conv: nn.Conv2d) -> nn.Conv2d:
    """The same convolution with a bias (for one that no norm follows, whose bias a norm would cancel)."""
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     groups=conv.groups, bias=True)


class RoadmapBlock(nn.Module):
    """One residual block of any roadmap step: three convolutions, each followed by the norm and activation
    the config asks for (a convolution without a norm after it has a bias), plus the shortcut (a 1x1 projection
    with a norm where the shape changes).

    (N, c_in, H, W) -> (N, c_out, H / stride, W / stride)
    """

    def __init__(self, cfg: RoadmapConfig, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        convs = _branch_convs(cfg, c_in, c_out, stride)
        spatial_index = next(i for i, c in enumerate(convs) if c.kernel_size != (1, 1))
        layers: list[nn.Module] = []
        for i, conv in enumerate(convs):
            normed = cfg.norms == "all" or i == spatial_index
            layers.append(conv if normed else _with_bias(conv))
            if normed:
                layers.append(make_norm(cfg, conv.out_channels))
            if (cfg.activations == "all" and i < 2) or (cfg.activations == "one" and i == 1):
                layers.append(make_act(cfg))
        self.branch = nn.Sequential(*layers)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), make_norm(cfg, c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())
        self.out_act = make_act(cfg) if cfg.activations == "all" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.shortcut(x) + self.branch(x))


class RoadmapNet(ImageClassifier):
    """pad to 32x32 -> stem -> four stages (with the downsampling the config says) -> pooling -> [norm] -> linear.

    (N, in_channels, 28, 28) -> (N, num_classes); ``stages_[i]`` holds stage i + 1 (its downsampling layer first
    when downsampling is separate).
    """

    min_size = 16  # the stem and three downsamplings after the padding to 32x32

    def __init__(self, cfg: RoadmapConfig, *, num_classes: int = 10, in_channels: int = 1, name: str = "roadmap"):
        super().__init__()
        self.cfg, self.name, self.in_channels = cfg, name, in_channels
        c = cfg.widths[0]
        if cfg.stem == "resnet":
            stem = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), make_norm(cfg, c), make_act(cfg),
                    nn.MaxPool2d(3, 2, 1)]
        else:
            stem = [nn.Conv2d(in_channels, c, 2, 2, bias=False), make_norm(cfg, c)]
        self.stem = nn.Sequential(*stem)  # (N, widths[0], 16, 16)
        stages = []
        for i, (depth, c_out) in enumerate(zip(cfg.depths, cfg.stage_channels)):
            layers: list[nn.Module] = []
            stride = 1 if i == 0 else 2
            if cfg.downsampling == "separate" and stride == 2:
                layers += [make_norm(cfg, c), nn.Conv2d(c, c_out, 2, 2)]  # no norm after it: a bias
                c, stride = c_out, 1
            for _ in range(depth):
                layers.append(RoadmapBlock(cfg, c, c_out, stride))
                c, stride = c_out, 1
            stages.append(nn.Sequential(*layers))
        self.stages_ = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_norm = make_norm(cfg, c) if cfg.downsampling == "separate" else nn.Identity()
        self.fc = nn.Linear(c, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        init_weights(self, {nn.Conv2d: kaiming_fan_out, (nn.BatchNorm2d, nn.LayerNorm): norm_identity})

    @staticmethod
    def pad(x: torch.Tensor) -> torch.Tensor:
        """Pad an image smaller than 32x32 to 32x32 (centred) with the background value."""
        dh, dw = max(PAD_TO - x.shape[-2], 0), max(PAD_TO - x.shape[-1], 0)
        return nn.functional.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=BACKGROUND)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.pad(x)  # (N, C, 32, 32) from 28x28
        x = self.stem(x)  # (N, widths[0], 16, 16)
        for stage in self.stages_:
            x = stage(x)
        return x  # (N, stage_channels[-1], 2, 2)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.head_norm(self.pool(x)), 1))  # (N, num_classes)


def roadmap_net(step: str | RoadmapConfig, *, num_classes: int = 10, in_channels: int = 1) -> RoadmapNet:
    """The network of one roadmap step (a name of ``ROADMAP``, or any ``RoadmapConfig``)."""
    if isinstance(step, str):
        if step not in ROADMAP:
            raise KeyError(f"no roadmap step {step!r}; the steps are: {', '.join(ROADMAP)}")
        return RoadmapNet(ROADMAP[step], num_classes=num_classes, in_channels=in_channels, name=step)
    return RoadmapNet(step, num_classes=num_classes, in_channels=in_channels)


def roadmap_table(steps: Sequence[str] = tuple(ROADMAP), input_size=(1, 1, 28, 28)):
    """One row per step: what changed, parameters and MACs (counted by lib.analysis), the paper's top-1."""
    import pandas as pd

    rows, previous = [], None
    for step in steps:
        cfg = ROADMAP[step]
        with torch.device("meta"):
            model = roadmap_net(step)
        rows.append({"step": step, "change": CHANGES[step],
                     "fields changed": ", ".join(changed_fields(previous, cfg)) if previous else "-",
                     "params": count_params(model), "MMACs": count_macs(model, input_size) / 1e6,
                     "paper top-1": PAPER_TOP1[step]})
        previous = cfg
    return pd.DataFrame(rows).set_index("step")
