"""Model families, one file each; shared blocks live in ``blocks.py``; ``build(name)`` reaches them all.

Importing ``lib.models`` imports every family, and each family registers its builders in
``lib.models.registry`` (``@register_model``), so ``MODELS``, ``TORCHVISION_TWINS`` and ``SMALL_ONLY``
list them all. A new family is a new file, imported here, and its tests.

Every model has ``stages()``: an ordered dict ``name -> module``, stem to ``"head"``, whose modules run in
order are the model and own every parameter once (the contract is in ``lib.models.registry``).
"""
from __future__ import annotations

from lib.models.base import ImageClassifier, init_weights
from lib.models.registry import (MODELS, SMALL_ONLY, TORCHVISION_TWINS, build, default_input_size,
                                 register_model)

# The families: importing each registers its builders in MODELS.
from lib.models.alexnet import AlexNet
from lib.models.convnext import ConvNeXt
from lib.models.densenet import DenseNet
from lib.models.efficientnet import EfficientNet
from lib.models.googlenet import GoogLeNet, GoogLeNetOutputs
from lib.models.mobilenet import MobileNet
from lib.models.resnet import ResNet
from lib.models.simple import SimpleCNN
from lib.models.vgg import VGG
from lib.models.vit import VisionTransformer, attention_maps

globals().update(MODELS)  # every builder by its name: ``from lib.models import resnet18``

__all__ = ["MODELS", "TORCHVISION_TWINS", "SMALL_ONLY", "build", "default_input_size", "register_model",
           "ImageClassifier", "init_weights", "AlexNet", "ConvNeXt", "DenseNet", "EfficientNet", "GoogLeNet",
           "GoogLeNetOutputs", "MobileNet", "ResNet", "SimpleCNN", "VGG", "VisionTransformer", "attention_maps",
           *MODELS]
