"""The shared library of the CNN architectures course.

Submodules are imported on demand so that ``import lib`` stays cheap:

- ``lib.data``      Fashion-MNIST from offline or online sources, splits, loaders, class names
- ``lib.scratch``   convolution and pooling written from scratch (loop and vectorised)
- ``lib.train``     the shared training loop: fit, evaluate, checkpoints, seeding, devices
- ``lib.plot``      training curves, image grids, filters, feature maps
- ``lib.models``    VGG, ResNet, EfficientNet, ViT and small CNNs, as tables read by builders
- ``lib.analysis``  parameters, MACs, per-layer summaries, empirical receptive fields
- ``lib.drills``    interview drills per chapter: answers computed by lib, checked against torch
"""
from __future__ import annotations

import importlib

from lib._versions import warn_if_unsupported

__all__ = ["data", "scratch", "train", "plot", "models", "analysis", "checks", "counting", "records", "stats",
           "gradients", "leaderboard", "book", "transfer", "experiments", "tuning", "baseline", "explain", "drills"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'lib' has no attribute {name!r}")


warn_if_unsupported()  # outside the torch/torchvision releases lib supports: say so, and what to do
