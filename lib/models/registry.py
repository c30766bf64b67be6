"""Every model of ``lib`` by name: ``build("resnet50", num_classes=10)``, and which torchvision model it twins.

All builders take the keywords ``num_classes``, ``in_channels`` and ``small_input``. Models that only
exist for small images (the CIFAR ResNets, ``vit_*_28``, ``simple_cnn``) default to 10 classes and
``small_input=True`` and refuse ``small_input=False``.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lib.models import efficientnet, resnet, vgg, vit
from lib.models.simple import simple_cnn


def _simple_cnn(*, num_classes: int = 10, in_channels: int = 1, small_input: bool = True, **kwargs) -> nn.Module:
    """``lib.models.simple_cnn`` with the registry's common keywords (it only has a small-input form)."""
    if not small_input:
        raise ValueError("simple_cnn is a small-input model (28x28 images) and has no 224x224 form")
    return simple_cnn(num_classes=num_classes, in_channels=in_channels, **kwargs)


_FAMILIES = {
    vgg: tuple(f"{n}{bn}" for n in vgg.VGG_CONFIGS for bn in ("", "_bn")),
    resnet: (*resnet.RESNETS, *resnet.CIFAR_RESNETS),
    efficientnet: tuple(efficientnet.SCALINGS),
    vit: tuple(vit.VIT_CONFIGS),
}

MODELS: dict[str, Callable[..., nn.Module]] = {
    name: getattr(module, name) for module, names in _FAMILIES.items() for name in names
}
MODELS["simple_cnn"] = _simple_cnn

# lib name -> torchvision builder name (for torchvision.models.get_model); the names are the same.
TORCHVISION_TWINS: dict[str, str] = {
    name: name
    for name in (*_FAMILIES[vgg], *resnet.RESNETS, *efficientnet.SCALINGS, "vit_b_16", "vit_b_32", "vit_l_16")
}

# The models that only have a small-input form, and the image size their defaults expect.
SMALL_ONLY: dict[str, tuple[int, int, int]] = {
    **{n: (3, 32, 32) for n in resnet.CIFAR_RESNETS},
    "vit_tiny_28": (1, 28, 28), "vit_small_28": (1, 28, 28), "simple_cnn": (1, 28, 28),
}


def build(name: str, **kwargs) -> nn.Module:
    """Build a model by name, e.g. ``build("efficientnet_b0", num_classes=10, small_input=True)``."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; lib.models has: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def default_input_size(name: str, *, small_input: bool = False) -> tuple[int, int, int]:
    """(C, H, W) of the images that ``build(name, small_input=small_input)`` expects with its defaults:
    224x224 RGB for ImageNet models (EfficientNets: their paper resolution), 32x32 RGB for the small form
    of an ImageNet model, and the model's own size for small-only models."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; lib.models has: {', '.join(sorted(MODELS))}")
    if name in SMALL_ONLY:
        return SMALL_ONLY[name]
    if small_input:
        return (3, 32, 32)
    if name in efficientnet.SCALINGS:
        r = efficientnet.SCALINGS[name].resolution
        return (3, r, r)
    return (3, 224, 224)
