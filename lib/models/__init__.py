"""Model families, one file each; shared blocks live in ``blocks.py``; ``build(name)`` reaches them all.

Importing ``lib.models`` imports every family, and each family registers its builders in
``lib.models.registry`` (``@register_model``), so ``MODELS``, ``TORCHVISION_TWINS`` and ``SMALL_ONLY``
list them all. A new family is a new file, imported here, and its tests.

Every model has ``stages()``: an ordered dict ``name -> module``, stem to ``"head"``, whose modules run in
order are the model and own every parameter once (the contract is in ``lib.models.registry``).
"""
from __future__ import annotations

from lib.models.registry import (MODELS, SMALL_ONLY, TORCHVISION_TWINS, build, default_input_size,
                                 register_model)
from lib.models.alexnet import AlexNet, alexnet
from lib.models.convnext import ConvNeXt, convnext_base, convnext_large, convnext_small, convnext_tiny
from lib.models.densenet import DenseNet, densenet121, densenet161, densenet169, densenet201
from lib.models.efficientnet import (EfficientNet, efficientnet_b0, efficientnet_b1, efficientnet_b2,
                                     efficientnet_b3, efficientnet_b4, efficientnet_b5, efficientnet_b6,
                                     efficientnet_b7)
from lib.models.googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from lib.models.mobilenet import MobileNet, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small
from lib.models.resnet import (ResNet, resnet18, resnet20, resnet32, resnet34, resnet44, resnet50, resnet56,
                               resnet101, resnet110, resnet152)
from lib.models.simple import SimpleCNN, simple_cnn
from lib.models.vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn
from lib.models.vit import VisionTransformer, attention_maps, vit_b_16, vit_b_32, vit_l_16, vit_small_28, vit_tiny_28

__all__ = [
    "MODELS", "TORCHVISION_TWINS", "SMALL_ONLY", "build", "default_input_size", "register_model",
    "SimpleCNN", "simple_cnn",
    "AlexNet", "alexnet",
    "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "GoogLeNet", "GoogLeNetOutputs", "googlenet",
    "ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "DenseNet", "densenet121", "densenet161", "densenet169", "densenet201",
    "MobileNet", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "EfficientNet", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "ConvNeXt", "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
    "VisionTransformer", "attention_maps", "vit_b_16", "vit_b_32", "vit_l_16", "vit_tiny_28", "vit_small_28",
]
