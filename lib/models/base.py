"""What every image classifier of ``lib.models`` shares: the input check, ``forward``, and one ``init_weights``.

A family's class derives from :class:`ImageClassifier`, sets ``name``, ``in_channels`` and ``min_size``, and
writes ``forward_features`` (image -> last feature map or tokens) and ``forward_head`` (features -> logits);
``forward`` is the two in order (timm's split). Its initialisation is one call of :func:`init_weights` with the
paper's scheme as a table ``layer type -> initialiser``, e.g. VGG's (torchvision's)::

    init_weights(self, {nn.Conv2d: kaiming_fan_out, nn.BatchNorm2d: norm_identity, nn.Linear: normal(0.01)})
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from lib.checks import check_image_batch

Init = Callable[[nn.Module], None]


class ImageClassifier(nn.Module):
    """(N, in_channels, H, W) -> ``forward_features`` -> ``forward_head`` -> (N, num_classes)."""

    name: str
    in_channels: int
    min_size: int  # the smallest image side the network's downsampling leaves at least one pixel of

    def check_input(self, x: torch.Tensor) -> None:
        """A 4-D float batch with ``in_channels`` channels and sides of at least ``min_size``, or an error
        that names the fix."""
        check_image_batch(x, model=self.name, in_channels=self.in_channels, min_size=self.min_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def init_weights(model: nn.Module, scheme: Mapping[type | tuple[type, ...], Init]) -> None:
    """One pass over ``model.modules()`` in order: each module of a type in ``scheme`` (the first that
    matches) is initialised by its entry; every other module keeps PyTorch's default."""
    for m in model.modules():
        for kinds, init in scheme.items():
            if isinstance(m, kinds):
                init(m)
                break


def _zero_bias(m: nn.Module) -> None:
    if getattr(m, "bias", None) is not None:
        nn.init.zeros_(m.bias)


def kaiming_fan_out(m: nn.Module) -> None:
    """He et al. 2015: normal with std sqrt(2 / fan_out) (ReLU gain), zero bias."""
    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    _zero_bias(m)


def kaiming_fan_in(m: nn.Module) -> None:
    """He et al. 2015 with fan_in (torchvision's DenseNet), zero bias."""
    nn.init.kaiming_normal_(m.weight)
    _zero_bias(m)


def norm_identity(m: nn.Module) -> None:
    """A normalisation layer that starts as the identity: weight 1, bias 0."""
    nn.init.ones_(m.weight)
    nn.init.zeros_(m.bias)


def zero_bias(m: nn.Module) -> None:
    """The weight as PyTorch made it, the bias zero."""
    _zero_bias(m)


def normal(std: float) -> Init:
    """Weights N(0, std^2), zero bias."""
    def init(m: nn.Module) -> None:
        nn.init.normal_(m.weight, 0, std)
        _zero_bias(m)
    return init


def trunc_normal(std: float, *, bias: bool = True) -> Init:
    """Weights normal with std ``std`` cut at +-2; the bias zeroed (``bias=True``) or left as it was."""
    def init(m: nn.Module) -> None:
        nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2, b=2)
        if bias:
            _zero_bias(m)
    return init


def uniform_fan_out(m: nn.Module) -> None:
    """Weights uniform in +-1/sqrt(out_features) (EfficientNet's classifier), zero bias."""
    r = 1.0 / math.sqrt(m.weight.shape[0])
    nn.init.uniform_(m.weight, -r, r)
    _zero_bias(m)
