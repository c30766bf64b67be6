"""Building blocks shared by every model family: each idea written once.

| block                 | used by                      | torchvision twin (same state_dict keys)            |
|-----------------------|------------------------------|----------------------------------------------------|
| ``ConvBNAct``         | EfficientNet, MobileNets, your own nets | ``torchvision.ops.Conv2dNormActivation`` |
| ``SqueezeExcitation`` | MBConv, MobileNetV3          | ``torchvision.ops.SqueezeExcitation``              |
| ``StochasticDepth``   | MBConv, ConvNeXt             | ``torchvision.ops.StochasticDepth(p, "row")``      |
| ``MLP``               | ViT encoder blocks           | ``torchvision.models.vision_transformer.MLPBlock`` |
| ``BasicBlock``, ``Bottleneck`` | ResNet              | ``torchvision.models.resnet`` blocks               |
| ``BasicConv2d``, ``Inception``, ``InceptionAux`` | GoogLeNet | ``torchvision.models.googlenet`` blocks   |
| ``DenseLayer``, ``DenseBlock``, ``Transition`` | DenseNet | ``torchvision.models.densenet`` blocks       |
| ``InvertedResidual``  | MobileNetV2                  | ``torchvision.models.mobilenetv2.InvertedResidual`` |
| ``InvertedResidualV3`` | MobileNetV3                 | ``torchvision.models.mobilenetv3.InvertedResidual`` |
| ``MBConv``            | EfficientNet                 | ``torchvision.models.efficientnet.MBConv``         |
| ``LayerNorm2d``, ``ConvNeXtBlock`` | ConvNeXt        | ``torchvision.models.convnext`` ``LayerNorm2d``, ``CNBlock`` |
| ``MultiheadSelfAttention``, ``EncoderBlock`` | ViT   | ``nn.MultiheadAttention``, ViT ``EncoderBlock``    |

Stages are built by the pure function ``make_stage(block, c_in, c_out, n, stride)``: it calls
``block(c_in, c_out, stride)`` once, then ``block(c_out, c_out, 1)`` ``n - 1`` times.

Writing your own residual block (the exercises)
-----------------------------------------------
``make_stage`` and ``lib.models.resnet.ResNet`` accept any class whose constructor takes
``(c_in, c_out, stride)`` positionally (extra options go after a ``*`` or through ``functools.partial``)
and whose class attribute ``expansion`` says how many times wider the block's output is than the
stage's nominal width: ``ResNet`` gives stage ``i`` the output channels ``widths[i] * block.expansion``
(``BasicBlock.expansion == 1``, ``Bottleneck.expansion == 4``). Keep torchvision's attribute names
(``conv1, bn1, conv2, bn2, conv3, bn3, downsample``) and torchvision's state_dicts load unchanged.

* **Pre-activation** (He et al. 2016, "Identity mappings"): move each BatchNorm and ReLU *before* its
  convolution (BN-ReLU-conv), leave the sum ``x + F(x)`` un-activated, and add one BN-ReLU after the
  last stage. The shortcut stays the same ``downsample``.
* **Wide** (Zagoruyko & Komodakis 2016; torchvision's ``wide_resnet50_2``): the same bottleneck with
  more channels inside: subclass ``Bottleneck`` and pass it a larger ``width`` (the 3x3 convolution's
  channels; ``c_out // expansion`` by default).
* **Grouped / ResNeXt** (Xie et al. 2017; ``resnext50_32x4d``): a bottleneck whose 3x3 convolution is
  split into ``groups`` groups of ``width_per_group`` channels each (scaled with the stage's width);
  subclass ``Bottleneck`` and replace its ``conv2``.

Passing such a class to ``ResNet(block, [3, 4, 6, 3])`` is all it takes to load torchvision's weights.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Act = Callable[..., nn.Module]
Norm = Callable[[int], nn.Module]

# Activations that can overwrite their input: saves one tensor per layer, as torchvision does.
_INPLACE_ACTS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Mish)


def make_act(act: Act) -> nn.Module:
    """Instantiate an activation class, in place where the class allows it."""
    return act(inplace=True) if act in _INPLACE_ACTS else act()


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never losing more than 10%.

    The rounding rule of MobileNet and EfficientNet (and torchvision's ``_make_divisible``).
    """
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


# ---------------------------------------------------------------------------------------------
# Convolution, squeeze-excitation, stochastic depth, MLP
# ---------------------------------------------------------------------------------------------
class ConvBNAct(nn.Sequential):
    """Conv2d -> norm -> activation, with "same" padding ``dilation * (k - 1) // 2``.

    A ``Sequential`` so its state_dict keys are ``0.weight``, ``1.weight``, ... exactly like
    torchvision's ``Conv2dNormActivation``. ``norm=None`` gives the convolution a bias;
    ``act=None`` leaves the output linear (the projection of an MBConv block).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, *, groups: int = 1,
                 dilation: int = 1, norm: Norm | None = nn.BatchNorm2d, act: Act | None = nn.ReLU):
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size, stride, padding, dilation=dilation,
                                             groups=groups, bias=norm is None)]
        if norm is not None:
            layers.append(norm(c_out))
        if act is not None:
            layers.append(make_act(act))
        super().__init__(*layers)
        self.out_channels = c_out


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018, Fig. 1): rescale each channel by a gate computed from
    the global average of all channels. Attribute names follow ``torchvision.ops.SqueezeExcitation``.

    (N, C, H, W) -> avgpool -> (N, C, 1, 1) -> fc1 -> (N, S, 1, 1) -> act -> fc2 -> gate -> (N, C, 1, 1)
    """

    def __init__(self, channels: int, squeeze_channels: int, act: Act = nn.SiLU, gate: Act = nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = make_act(act)
        self.scale_activation = gate()  # sigmoid; MobileNetV3's cheaper hard sigmoid

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate, (N, C, 1, 1), in (0, 1)."""
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x) * x


class StochasticDepth(nn.Module):
    """Drop a whole residual branch for a random subset of the batch while training (Huang et al. 2016).

    "Row" mode: each example keeps the branch with probability ``1 - p``; kept branches are scaled by
    ``1 / (1 - p)`` so the expected output is unchanged and evaluation needs no rescaling.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"StochasticDepth: drop probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (N, 1, 1, 1)
        if keep > 0.0:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Sequential):
    """Linear -> act -> dropout -> linear -> dropout: the transformer's feed-forward block.

    Indices 0 and 3 hold the weights, as in torchvision's ``MLPBlock`` (keys ``0.weight``, ``3.weight``).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None, *, act: Act = nn.GELU,
                 dropout: float = 0.0):
        out_dim = in_dim if out_dim is None else out_dim
        super().__init__(nn.Linear(in_dim, hidden_dim), make_act(act), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, out_dim), nn.Dropout(dropout))


# ---------------------------------------------------------------------------------------------
# Residual blocks (He et al. 2015) and their stages
# ---------------------------------------------------------------------------------------------
class ZeroPadShortcut(nn.Module):
    """He et al. 2015's shortcut option A: subsample by ``stride`` and append zero channels; no parameters.

    (N, c_in, H, W) -> (N, c_in, ceil(H/s), ceil(W/s)) -> (N, c_out, ceil(H/s), ceil(W/s))
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        if c_out < c_in:
            raise ValueError(f"ZeroPadShortcut cannot reduce channels ({c_in} -> {c_out}); use shortcut='B'")
        self.extra, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra}, stride={self.stride}"


def make_shortcut(c_in: int, c_out: int, stride: int, kind: str = "B") -> nn.Module | None:
    """The ``downsample`` branch of a residual block, or ``None`` where the identity fits.

    ``"B"`` (torchvision): a strided 1x1 convolution + BN where the shape changes.
    ``"A"`` (He et al. 2015, CIFAR): parameter-free subsampling + zero channels.
    """
    if stride == 1 and c_in == c_out:
        return None
    if kind == "A":
        return ZeroPadShortcut(c_in, c_out, stride)
    if kind == "B":
        return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
    raise ValueError(f"shortcut must be 'A' (zero padding) or 'B' (projection), got {kind!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut (He et al. 2015, Fig. 2; ResNet-18/34 and CIFAR nets).

    (N, c_in, H, W) -> (N, c_out, H/stride, W/stride)
    """

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = make_shortcut(c_in, c_out, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand, with the stride on the 3x3 ("ResNet v1.5", as torchvision).

    ``width`` is the channel count of the 3x3 convolution, ``c_out // 4`` by default (He et al. 2015, Table 1).
    (N, c_in, H, W) -> (N, width, H, W) -> (N, width, H/stride, W/stride) -> (N, c_out, H/stride, W/stride)
    """

    expansion = 4

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, width: int | None = None):
        super().__init__()
        width = c_out // self.expansion if width is None else width
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(c_in, c_out, stride, "B")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def block_expansion(block: Callable[..., nn.Module]) -> int:
    """A block class's ``expansion`` (1 if it has none), looking through ``functools.partial``."""
    while isinstance(block, functools.partial):
        block = block.func
    return getattr(block, "expansion", 1)


def make_stage(block: Callable[..., nn.Module], c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
    """``n`` blocks in a row: the first changes ``c_in -> c_out`` and takes the stride, the rest keep the shape."""
    if n < 1:
        raise ValueError(f"make_stage needs at least one block, got n={n}")
    return nn.Sequential(block(c_in, c_out, stride), *(block(c_out, c_out, 1) for _ in range(n - 1)))


# ---------------------------------------------------------------------------------------------
# Inception (Szegedy et al. 2015, GoogLeNet)
# ---------------------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """Conv2d (no bias) -> BatchNorm (eps 1e-3) -> ReLU: GoogLeNet's convolution, with torchvision's
    names ``conv`` and ``bn``. (N, c_in, H, W) -> (N, c_out, H', W')"""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """The Inception module (Szegedy et al. 2015, Fig. 2b): four branches side by side, concatenated.

    branch1: 1x1 | branch2: 1x1 reduce -> 3x3 | branch3: 1x1 reduce -> 5x5 | branch4: 3x3 max pool -> 1x1
    (N, c_in, H, W) -> (N, c1x1 + c3x3 + c5x5 + pool_proj, H, W)

    The keywords are the columns of the paper's Table 1. ``k5x5`` is the kernel of the "5x5" branch:
    torchvision's GoogLeNet (and the weights ported to it) uses 3x3 there, a known slip kept for its weights.
    """

    def __init__(self, c_in: int, *, c1x1: int, c3x3_reduce: int, c3x3: int, c5x5_reduce: int, c5x5: int,
                 pool_proj: int, k5x5: int = 5):
        super().__init__()
        self.branch1 = BasicConv2d(c_in, c1x1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(c_in, c3x3_reduce, 1), BasicConv2d(c3x3_reduce, c3x3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(c_in, c5x5_reduce, 1),
                                     BasicConv2d(c5x5_reduce, c5x5, k5x5, padding=k5x5 // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(c_in, pool_proj, 1))
        self.out_channels = c1x1 + c3x3 + c5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """GoogLeNet's auxiliary classifier (Szegedy et al. 2015, section 5), which only runs in training:
    (N, C, H, W) -> avg pool -> (N, C, 4, 4) -> 1x1 conv -> (N, 128, 4, 4) -> flatten (N, 2048) -> fc1
    -> (N, 1024) -> ReLU -> dropout -> fc2 -> (N, num_classes). torchvision's names and layout."""

    def __init__(self, c_in: int, num_classes: int, *, dropout: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(c_in, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))  # (N, 128, 4, 4): the paper's 5x5 pooling, any size
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)  # (N, 1024)
        return self.fc2(self.dropout(x))  # (N, num_classes)


# ---------------------------------------------------------------------------------------------
# Dense connectivity (Huang et al. 2017, DenseNet-BC)
# ---------------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (to ``bn_size * growth_rate`` channels) -> BN-ReLU-3x3 conv (to ``growth_rate``):
    Huang et al. 2017's "bottleneck" layer, fed the concatenation of every earlier output of its block.

    [(N, c_1, H, W), (N, c_2, H, W), ...] -> concat (N, c_in, H, W) -> (N, growth_rate, H, W)
    """

    def __init__(self, c_in: int, growth_rate: int, *, bn_size: int = 4, drop_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, bn_size * growth_rate, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, features: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x = torch.cat(features if isinstance(features, list) else [features], 1)  # (N, c_in, H, W)
        x = self.conv1(self.relu1(self.norm1(x)))  # (N, bn_size * k, H, W)
        x = self.conv2(self.relu2(self.norm2(x)))  # (N, k, H, W)
        return F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate > 0 else x


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers, each seeing all the block's earlier feature maps; the output is all of
    them concatenated: (N, c_in, H, W) -> (N, c_in + num_layers * growth_rate, H, W). A ``ModuleDict``
    keyed ``denselayer1``, ``denselayer2``, ... as torchvision's."""

    def __init__(self, num_layers: int, c_in: int, growth_rate: int, *, bn_size: int = 4, drop_rate: float = 0.0):
        super().__init__({f"denselayer{i + 1}": DenseLayer(c_in + i * growth_rate, growth_rate, bn_size=bn_size,
                                                            drop_rate=drop_rate)
                          for i in range(num_layers)})
        self.out_channels = c_in + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """Between two dense blocks: BN-ReLU-1x1 conv (compression to ``c_out``, half the channels in
    DenseNet-BC) -> 2x2 average pooling. (N, c_in, H, W) -> (N, c_out, H/2, W/2)"""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(OrderedDict(norm=nn.BatchNorm2d(c_in), relu=nn.ReLU(inplace=True),
                                     conv=nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
                                     pool=nn.AvgPool2d(kernel_size=2, stride=2)))


# ---------------------------------------------------------------------------------------------
# Inverted residuals (MobileNetV2, MobileNetV3, EfficientNet)
# ---------------------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    """MobileNetV2's block (Sandler et al. 2018, Table 1): expand 1x1 (ReLU6) -> depthwise 3x3 (ReLU6)
    -> project 1x1 (linear: no activation on the narrow output), plus ``x`` where the shape is kept.

    (N, c_in, H, W) -> (N, t*c_in, H, W) -> (N, t*c_in, H/s, W/s) -> (N, c_out, H/s, W/s)
    Names follow torchvision (``conv.0`` .. ``conv.3``; no expansion layer when ``t == 1``).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, expand_ratio: float = 6,
                 norm: Norm = nn.BatchNorm2d):
        super().__init__()
        hidden = int(round(c_in * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(c_in, hidden, 1, norm=norm, act=nn.ReLU6))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden, norm=norm, act=nn.ReLU6),
                   nn.Conv2d(hidden, c_out, 1, bias=False), norm(c_out)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and c_in == c_out
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class InvertedResidualV3(nn.Module):
    """MobileNetV3's block (Howard et al. 2019, Fig. 4): MobileNetV2's inverted residual with a chosen
    activation (ReLU or hard-swish), an explicit expanded width and, on some blocks, squeeze-excitation
    with a hard-sigmoid gate and ``expanded / 4`` channels (rounded to a multiple of 8).

    (N, c_in, H, W) -> (N, expanded, H, W) -> (N, expanded, H/s, W/s) -> (N, c_out, H/s, W/s)
    Names follow torchvision (``block.0`` .. ``block.3``).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, expanded: int, kernel_size: int = 3,
                 use_se: bool = False, act: Act = nn.ReLU, norm: Norm = nn.BatchNorm2d):
        super().__init__()
        layers: list[nn.Module] = []
        if expanded != c_in:
            layers.append(ConvBNAct(c_in, expanded, 1, norm=norm, act=act))
        layers.append(ConvBNAct(expanded, expanded, kernel_size, stride, groups=expanded, norm=norm, act=act))
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4, 8), act=nn.ReLU,
                                            gate=nn.Hardsigmoid))
        layers.append(ConvBNAct(expanded, c_out, 1, norm=norm, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and c_in == c_out
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out += x
        return out


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018; Tan & Le 2019): expand 1x1 -> depthwise kxk -> SE
    -> project 1x1 (linear), with a residual connection and stochastic depth where the shape is kept.

    (N, c_in, H, W) -> (N, e*c_in, H, W) -> (N, e*c_in, H/s, W/s) -> (N, c_out, H/s, W/s)
    Names follow torchvision (``block.0``..``block.3``, ``stochastic_depth``).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, expand_ratio: float = 6, kernel_size: int = 3,
                 se_ratio: float = 0.25, sd_prob: float = 0.0, norm: Norm = nn.BatchNorm2d):
        super().__init__()
        expanded = make_divisible(c_in * expand_ratio, 8)
        layers: list[nn.Module] = []
        if expanded != c_in:
            layers.append(ConvBNAct(c_in, expanded, 1, norm=norm, act=nn.SiLU))
        layers += [
            ConvBNAct(expanded, expanded, kernel_size, stride, groups=expanded, norm=norm, act=nn.SiLU),
            SqueezeExcitation(expanded, max(1, int(c_in * se_ratio)), act=nn.SiLU),
            ConvBNAct(expanded, c_out, 1, norm=norm, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and c_in == c_out
        self.stochastic_depth = StochasticDepth(sd_prob)
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out)
            out += x
        return out


# ---------------------------------------------------------------------------------------------
# ConvNeXt (Liu et al. 2022)
# ---------------------------------------------------------------------------------------------
class Permute(nn.Module):
    """``x.permute(*dims)`` as a module, to switch between (N, C, H, W) and channels-last (N, H, W, C)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map, at every pixel (ConvNeXt's stem, downsampling
    layers and head). Same parameters as ``nn.LayerNorm(C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (N, C, H, W)


class ConvNeXtBlock(nn.Module):
    """The ConvNeXt block (Liu et al. 2022, Fig. 4): depthwise 7x7 -> LayerNorm -> 1x1 to 4C -> GELU
    -> 1x1 back to C (an inverted MLP), scaled per channel by a learned ``layer_scale`` (initially 1e-6),
    dropped by stochastic depth in training, plus ``x``.

    (N, C, H, W) -> dwconv -> permute (N, H, W, C) -> LN, Linear (N, H, W, 4C), GELU, Linear (N, H, W, C)
    -> permute (N, C, H, W). The 1x1 convolutions are ``nn.Linear`` on channels-last maps, as torchvision
    (names ``block.0``, ``block.2``, ``block.3``, ``block.5``, ``layer_scale``).
    """

    def __init__(self, dim: int, *, layer_scale: float = 1e-6, sd_prob: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim),
            Permute(0, 2, 3, 1),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute(0, 3, 1, 2),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))  # (C, 1, 1)
        self.stochastic_depth = StochasticDepth(sd_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stochastic_depth(self.layer_scale * self.block(x))
        out += x
        return out


# ---------------------------------------------------------------------------------------------
# Transformer encoder (Vaswani et al. 2017; pre-norm as in ViT, Dosovitskiy et al. 2021)
# ---------------------------------------------------------------------------------------------
class MultiheadSelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), so torchvision's ViT weights load unchanged.

    Fast path: ``F.scaled_dot_product_attention``. Set ``store_attention = True`` to compute the
    softmax explicitly and keep it in ``self.attention`` (N, heads, L, L), detached, for plotting.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MultiheadSelfAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim, self.dropout = num_heads, dim // num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.store_attention = False
        self.attention: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.MultiheadAttention``'s initialisation: Xavier-uniform projections, zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        self.out_proj.reset_parameters()
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape  # (N, L, D)
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (N, L, 3D)
        q, k, v = qkv.view(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        # q, k, v: (N, heads, L, D/heads)
        p = self.dropout if self.training else 0.0
        if self.store_attention:
            attn = (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(dim=-1)  # (N, heads, L, L)
            self.attention = attn.detach()
            out = F.dropout(attn, p, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        out = out.transpose(1, 2).reshape(n, length, dim)  # (N, L, D)
        return self.out_proj(out)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(.))``. torchvision's names."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, dropout: float = 0.0,
                 attention_dropout: float = 0.0, norm: Norm = functools.partial(nn.LayerNorm, eps=1e-6)):
        super().__init__()
        self.ln_1 = norm(dim)
        self.self_attention = MultiheadSelfAttention(dim, num_heads, dropout=attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = norm(dim)
        self.mlp = MLP(dim, mlp_dim, act=nn.GELU, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D) -> (N, L, D)
        x = x + self.dropout(self.self_attention(self.ln_1(x)))
        return x + self.mlp(self.ln_2(x))
