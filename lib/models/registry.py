"""Every model of ``lib`` by name, filled in by the model families themselves.

Each family file registers its builders with a decorator (as timm does), so a new family is a new file
(imported in ``lib/models/__init__.py``) and its tests, with no table to edit here::

    @register_model(twin="resnet50")
    def resnet50(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> ResNet:
        ...  # a one-line docstring naming the paper and table, then one call of the family's class

    build("resnet50", num_classes=10, small_input=True)     # by name
    MODELS["resnet50"]                                       # the builder itself
    TORCHVISION_TWINS["resnet50"]                            # the torchvision model it twins
    default_input_size("resnet50")                           # (3, 224, 224)

What a registered builder promises
----------------------------------
* It is keyword-only and takes at least ``num_classes``, ``in_channels`` and ``small_input``. Models that
  only exist for small images (``small_only=True``: the CIFAR ResNets, ``vit_*_28``, ``simple_cnn``)
  default to 10 classes and ``small_input=True`` and refuse ``small_input=False``.
* A twin (``twin="name"``) has torchvision's module names: torchvision's ``state_dict`` loads with
  ``strict=True`` and gives the same logits in eval mode (``tests/test_models.py`` checks both).
* The model it returns has a ``name``, ``forward_features(x)`` (the last feature map or token sequence),
  ``forward_head(features)`` and ``stages()``.

The stages contract
-------------------
``model.stages()`` returns a dict ``stage name -> nn.Module``, input to output: the stem (or the
embedding of a ViT), the feature stages, and ``"head"`` last. Its modules are the model's own (not
copies), wrapped afresh on every call, so they add nothing to the state_dict, and

* run in order they are the model: in eval mode, ``for m in stages.values(): x = m(x)`` gives
  ``model(x)``, and all but the head give ``forward_features(x)`` (outputs that exist only in training,
  such as GoogLeNet's auxiliary logits, aside: their classifiers belong to the head);
* every parameter of the model belongs to exactly one stage (``lib.transfer`` freezes, unfreezes and
  gives learning rates by stage);
* they hold no input checks, so ``nn.Sequential(*list(stages.values())[:k])``, the model cut after its
  ``k``-th stage, can be traced by ``torch.fx``.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

Builder = Callable[..., nn.Module]
ImageSize = tuple[int, int, int]  # (C, H, W)

MODELS: dict[str, Builder] = {}
TORCHVISION_TWINS: dict[str, str] = {}  # lib name -> torchvision name (for torchvision.models.get_model)
SMALL_ONLY: dict[str, ImageSize] = {}  # models with only a small-input form -> the images their defaults expect
INPUT_SIZES: dict[str, ImageSize] = {}  # the other models -> their full-size images (224x224, or the paper's)

SMALL_INPUT_SIZE: ImageSize = (3, 32, 32)  # what ``small_input=True`` forms of ImageNet models are tested on


def register_model(*, twin: str | None = None, small_only: bool = False,
                   input_size: ImageSize = (3, 224, 224)) -> Callable[[Builder], Builder]:
    """Add the decorated builder to ``MODELS`` under its function name, and return it unchanged.

    ``twin``: the torchvision model whose state_dict it loads. ``small_only``: the model has no
    ImageNet form. ``input_size``: (C, H, W) of the images its defaults expect.
    """
    def add(builder: Builder) -> Builder:
        name = builder.__name__
        old = MODELS.get(name)
        if old is not None and old.__module__ != builder.__module__:  # re-running a family's module is fine
            raise ValueError(f"two models named {name!r}: in {old.__module__} and in {builder.__module__}")
        MODELS[name] = builder
        for table in (TORCHVISION_TWINS, SMALL_ONLY, INPUT_SIZES):
            table.pop(name, None)
        if twin is not None:
            TORCHVISION_TWINS[name] = twin
        (SMALL_ONLY if small_only else INPUT_SIZES)[name] = tuple(input_size)
        return builder

    return add


def require_small_input(name: str, small_input: bool, instead: str) -> None:
    """The check of every small-only builder: ``small_input=False`` raises, naming the models to use instead."""
    if not small_input:
        raise ValueError(f"{name} is a small-input model (28x28 or 32x32 images) and has no 224x224 form; "
                         f"use {instead} for ImageNet-sized images")


def _known(name: str) -> None:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; lib.models has: {', '.join(sorted(MODELS))}")


def build(name: str, **kwargs) -> nn.Module:
    """Build a model by name, e.g. ``build("efficientnet_b0", num_classes=10, small_input=True)``."""
    _known(name)
    return MODELS[name](**kwargs)


def default_input_size(name: str, *, small_input: bool = False) -> ImageSize:
    """(C, H, W) of the images that ``build(name, small_input=small_input)`` expects with its defaults:
    224x224 RGB for ImageNet models (EfficientNets: their paper resolution), 32x32 RGB for the small form
    of an ImageNet model, and the model's own size for small-only models."""
    _known(name)
    if name in SMALL_ONLY:
        return SMALL_ONLY[name]
    return SMALL_INPUT_SIZE if small_input else INPUT_SIZES[name]
