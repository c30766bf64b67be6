"""MobileNetV2's linear bottleneck: lib's MobileNetV2 on Fashion-MNIST with and without a ReLU6 after each projection, 3 paired seeds, one fixed recipe.

Sandler et al. (2018, section 3.2 and Figure 6a) argue that a ReLU on the *narrow* output of a block destroys
information that a low-dimensional representation cannot spare, so the 1x1 projection of the inverted residual
block is left linear; on ImageNet the linear version was the more accurate. Here the two networks differ only
in that: ``"relu6"`` appends a ReLU6 to the projection of every block (after its BatchNorm, before the residual
addition), which adds no parameters, so a seed gives both networks the same initial weights and the same batches
(a paired comparison).

The recipe is the roadmap's (``lib.experiments.convnext_roadmap.FULL``, not tuned for either network): AdamW,
learning rate 2e-3 with warm-up and cosine decay, weight decay 0.05, batch 64, the same 5,000 training images,
validation on the 5,000 held-out training images once at the end. Parts (variant, seed) are resumable as in
``convnext_roadmap``; the full run is 6 parts of about one to one and a half minutes each (one core). ``--quick``: 2 seeds,
256 images, one epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lib.experiments.convnext_roadmap import QUICK as ROADMAP_QUICK
from lib.experiments.convnext_roadmap import Recipe, run_parts, train_network
from lib.models import mobilenet_v2
from lib.models.blocks import InvertedResidual
from lib.train import seed_everything

VARIANTS = ("linear", "relu6")  # the paper's block; a ReLU6 after the projection


@dataclass(frozen=True)
class BottleneckRun(Recipe):
    variants: tuple[str, ...] = VARIANTS


FULL = BottleneckRun()
QUICK = BottleneckRun(**{k: v for k, v in ROADMAP_QUICK.items() if k != "steps"})


def add_projection_relu(model: nn.Module) -> int:
    """Append a ReLU6 to the 1x1 projection (``conv``'s last layer, a BatchNorm) of every ``InvertedResidual``;
    return how many blocks were changed."""
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    for block in blocks:
        block.conv.append(nn.ReLU6())
    return len(blocks)


def build(variant: str) -> nn.Module:
    """``mobilenet_v2(small_input=True)`` for 1-channel 28x28 images and 10 classes, linear or not."""
    if variant not in VARIANTS:
        raise KeyError(f"no variant {variant!r}; the variants are {VARIANTS}")
    model = mobilenet_v2(num_classes=10, in_channels=1, small_input=True)
    if variant == "relu6":
        add_projection_relu(model)
    return model


def train_variant(variant: str, seed: int, cfg: dict, *, state_path: Path) -> dict:
    seed_everything(seed)
    return train_network(build(variant), seed, cfg, state_path=state_path)


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    runs = run_parts("linear_bottleneck", train_variant, cfg["variants"], cfg, out_dir)
    return {"config": cfg.plain(),
            "model": "mobilenet_v2(num_classes=10, in_channels=1, small_input=True)",
            "blocks_changed": add_projection_relu(build("linear")), "threads_per_worker": 1, "runs": runs}
