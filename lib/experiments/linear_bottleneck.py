"""MobileNetV2's linear bottleneck: lib's MobileNetV2 on Fashion-MNIST with and without a ReLU6 after each projection, each version's learning rate tuned on validation, 3 paired seeds, tested once.

Sandler et al. (2018, section 3.2 and Figure 6a) argue that a ReLU on the *narrow* output of a block destroys
information that a low-dimensional representation cannot spare, so the 1x1 projection of the inverted residual
block is left linear; on ImageNet the linear version was the more accurate. Here the two networks differ only
in that: ``"relu6"`` appends a ReLU6 to the projection of every block (after its BatchNorm, before the residual
addition), which adds no parameters, so a seed gives both networks the same initial weights and the same batches
(a paired comparison).

The recipe is the roadmap's (``lib.experiments.convnext_roadmap.Recipe``: AdamW, warm-up and cosine decay,
weight decay 0.05, batch 64, the same 5,000 training images, no augmentation), trained four times longer than the
roadmap's 2 epochs (``epochs``: the first version of this record, at 158 steps, left both networks below
logistic regression on the same pixels, in early training). Each version's learning rate is chosen on the
validation split (all 5,000 held-out training images) from the grid ``lrs``, trained on ``tune_seed``; a best
rate at an edge of the grid gets the next rate past it, up to ``max_extensions`` times (``lib.tuning.tune_all``).
The three ``seeds`` then train each version at its chosen rate, and each final network is tested once on all
10,000 test images, which chose nothing. Parts (stage, variant, rate, seed) are resumable as in
``convnext_roadmap``: 6 tuning and 6 final parts of four to six minutes each (one core). ``--quick``: 2 seeds,
256 images, 512 test images, one epoch, two rates.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from lib.data import fashion_mnist_loaders
from lib.experiments import _runner as runner
from lib.experiments._runner import Part, config_key
from lib.experiments.convnext_roadmap import Recipe, train_network
from lib.models import mobilenet_v2
from lib.models.blocks import InvertedResidual
from lib.train import evaluate, seed_everything
from lib.tuning import tune_all

VARIANTS = ("linear", "relu6")  # the paper's block; a ReLU6 after the projection


@dataclass(frozen=True)
class BottleneckRun(Recipe):
    variants: tuple[str, ...] = VARIANTS
    epochs: int = 8                              # 632 steps: four times the roadmap's budget
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)  # the first grid each version's rate is tuned on
    max_extensions: int = 2
    tune_seed: int = 100                         # the tuning runs' seed: not one of the final seeds
    test_subset: int | None = None               # None: all 10,000 test images


FULL = BottleneckRun()
QUICK = replace(FULL, seeds=(0, 1), train_subset=256, val_subset=256, test_subset=512, epochs=1, lrs=(1e-3, 3e-3),
                max_extensions=1)


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


def train_variant(variant: str, lr: float, seed: int, cfg: dict, *, final: bool, state_path: Path) -> dict:
    """One network at one rate and seed (resumable); a final run is also tested once."""
    cfg = replace(cfg, lr=lr)
    seed_everything(seed)
    model = build(variant)
    result = train_network(model, seed, cfg, state_path=state_path) | {"variant": variant, "lr": lr}
    if final:
        *_, test_loader = fashion_mnist_loaders(batch_size=500, train_subset=cfg["train_subset"],
                                                val_subset=cfg["val_subset"], test_subset=cfg["test_subset"],
                                                seed=cfg["data_seed"])
        test = evaluate(model, test_loader)
        result |= {"test_acc": round(test["acc"], 5), "test_images": len(test_loader.dataset)}
    return result


def _parts(stage: str, jobs: list[tuple[str, float, int]], cfg: BottleneckRun) -> list[Part]:
    return [Part(f"{stage}-{v}-lr{lr:g}-seed{s}-{config_key(cfg)}", train_variant, (v, lr, s, cfg),
                 {"final": stage == "final"}, label=f"{stage} {v} lr {lr:g} seed {s}") for v, lr, s in jobs]


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    out_dir = Path(out_dir)
    tuning: list[dict] = []

    def tune_round(pairs: list[tuple[str, float]]) -> dict[tuple[str, float], float]:
        rows = runner.run_parts("linear_bottleneck", _parts("tune", [(v, lr, cfg.tune_seed) for v, lr in pairs], cfg),
                                out_dir)
        tuning.extend(rows)
        return {(r["variant"], r["lr"]): r["val_acc"] for r in rows}

    choices = tune_all(tune_round, list(cfg.variants), cfg.lrs, max_extensions=cfg.max_extensions)
    runs = runner.run_parts("linear_bottleneck", _parts("final", [(v, choices[v].value, s) for v in cfg.variants
                                                                  for s in cfg.seeds], cfg), out_dir)
    runner.remove_parts("linear_bottleneck", out_dir)
    return {"config": cfg.plain(),
            "model": "mobilenet_v2(num_classes=10, in_channels=1, small_input=True)",
            "blocks_changed": add_projection_relu(build("linear")), "threads_per_worker": 1,
            "workers": runner.default_workers(), "tuning": tuning,
            "chosen": {v: c.as_record() for v, c in choices.items()}, "runs": runs}
