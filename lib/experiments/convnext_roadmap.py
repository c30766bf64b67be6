"""ConvNeXt's roadmap at small scale (Liu et al. 2022, Fig. 2): a small ResNet made a small ConvNeXt one change at a time, 13 steps x 3 seeds on Fashion-MNIST, one fixed recipe.

The networks are ``lib.models.roadmap.ROADMAP``: thirteen configurations, each the one before it with one design
change (stage ratio, patchify stem, depthwise convolution, width, inverted bottleneck, depthwise convolution
moved up, 7x7 kernel, GELU, fewer activations, fewer norms, LayerNorm, separate downsampling layers).

The recipe is the same for every step, and was not tuned for any of them (``FULL``): AdamW (the paper's
optimiser), learning rate 2e-3 with a linear warm-up over the first 5% of the steps and a cosine decay, weight
decay 0.05 (the paper's), batch 64, the same 5,000 training images for 2 epochs (158 optimizer steps), no
augmentation, no label smoothing, no stochastic depth, no layer scale, no EMA of the weights. The paper's recipe
(300 epochs on ImageNet-1K with AdamW, RandAugment, Mixup, CutMix, random erasing, label smoothing, stochastic
depth and layer scale, Liu et al. 2022, appendix A.1) is far out of reach on a CPU: each step here is ranked after
a short training on a small, easy data set, which rewards what trains fast as much as what generalises.

Seeds change the initial weights and the order of the batches; the images and the validation set (all 5,000
held-out training images, never the test set) stay the same, so each step is compared with the one before it
seed by seed (a paired difference). Every (step, seed) is one part, trained in a worker process of one thread
(``CNN_COURSE_WORKERS``, default: the CPU cores, at most 4), kept under ``<out_dir>/convnext_roadmap.parts/``
when finished and saved after every epoch while it trains, so an interrupted run resumes where it stopped (the
folder is removed at the end). The full run is 39 parts of half a minute to a minute each: about 20-35 minutes of one
core in all (5,000 images rather than 10,000, so that every experiment of the course fits one working
session on 2 cores), so about half that with two workers. ``--quick``: every step,
2 seeds, 256 images, one epoch.

The part runner (``run_parts``) is shared with ``linear_bottleneck``.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from lib.analysis import count_macs, count_params
from lib.data import fashion_mnist_loaders
from lib.experiments import _runner as runner
from lib.experiments._resume import fit_resumable
from lib.experiments._runner import Config, Part, config_key
from lib.models.roadmap import CHANGES, PAPER_TOP1, ROADMAP, changed_fields, roadmap_net
from lib.train import evaluate, seed_everything

@dataclass(frozen=True)
class Recipe(Config):
    """The one recipe every network of the roadmap (and of ``linear_bottleneck``) trains with."""
    seeds: tuple[int, ...] = (0, 1, 2)   # initial weights and batch order; the images stay the same
    train_subset: int = 5_000            # training images (a fixed draw, data_seed)
    val_subset: int | None = None        # validation images (None: all 5,000 of the split)
    epochs: int = 2
    batch_size: int = 64
    optimizer: str = "adamw"             # the paper's
    lr: float = 2e-3
    weight_decay: float = 0.05           # the paper's
    warmup_fraction: float = 0.05        # linear warm-up over the first 5% of the steps, then ...
    schedule: str = "cosine"             # ... a cosine decay to zero
    augment: bool = False
    data_seed: int = 0


@dataclass(frozen=True)
class RoadmapRun(Recipe):
    steps: tuple[str, ...] = tuple(ROADMAP)  # the networks, in the roadmap's order


FULL = RoadmapRun()
QUICK = replace(FULL, seeds=(0, 1), train_subset=256, val_subset=256, epochs=1)

Train = Callable[..., dict]


# ---------------------------------------------------------------------------------------------
# One network, and the resumable parts (shared with linear_bottleneck)
# ---------------------------------------------------------------------------------------------
def train_network(model: nn.Module, seed: int, cfg: dict, *, state_path: Path) -> dict:
    """Train ``model`` (built right after ``seed_everything(seed)``) with the recipe in ``cfg``, resumably, and
    measure it on the validation set once at the end. Fresh loaders: every network of one seed sees the same
    batches in the same order."""
    train_loader, val_loader, _ = fashion_mnist_loaders(
        batch_size=cfg["batch_size"], train_subset=cfg["train_subset"], val_subset=cfg["val_subset"],
        augment=cfg["augment"], seed=cfg["data_seed"], shuffle_seed=seed)
    steps = cfg["epochs"] * len(train_loader)
    cpu = time.process_time()
    history = fit_resumable(model, train_loader, None, epochs=cfg["epochs"], lr=cfg["lr"],
                            optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"],
                            warmup_steps=max(1, round(cfg["warmup_fraction"] * steps)), state_path=state_path)
    val = evaluate(model, val_loader)
    n_val = len(val_loader.dataset)
    return {"seed": seed, "params": count_params(model), "macs": count_macs(model, (1, 1, 28, 28)),
            "val_acc": round(val["acc"], 5), "val_correct": round(val["acc"] * n_val), "val_images": n_val,
            "val_loss": round(val["loss"], 5), "steps": steps, "train_images": len(train_loader.dataset),
            "epochs": [{"epoch": e["epoch"], "train_loss": round(e["train_loss"], 5),
                        "train_acc": round(e["train_acc"], 5), "seconds": round(e["seconds"], 2),
                        "resumes": e.get("resumes", 0)} for e in history.epochs],
            "train_seconds": round(history.seconds, 1), "images_per_s": round(history.images_per_second, 1),
            "cpu_seconds_this_session": round(time.process_time() - cpu, 1)}


def part_path(parts: Path, variant: str, seed: int, cfg: dict) -> Path:
    """Where one finished (variant, seed) is kept until the whole run is done; the name pins the configuration."""
    return parts / f"{part_key(variant, seed, cfg)}.json"


def part_key(variant: str, seed: int, cfg: dict) -> str:
    return f"{re.sub(r'[^a-z0-9]+', '_', variant.lower())}-seed{seed}-{config_key(cfg)}"


def _train_part(train: Train, variant: str, seed: int, cfg: dict, *, state_path: Path) -> dict:
    return train(variant, seed, cfg, state_path=state_path) | {"variant": variant}


def run_parts(name: str, train: Train, variants: Sequence[str], cfg: dict, out_dir: Path) -> list[dict]:
    """Train every (variant, seed) of ``cfg["seeds"]`` with ``train(variant, seed, cfg, state_path=...)`` as
    parts of ``lib.experiments._runner``; return them in the order (variant, seed), the parts removed."""
    done = runner.run_parts(name, [Part(part_key(v, s, cfg), _train_part, (train, v, s, cfg), label=f"{v} seed {s}")
                                   for v in variants for s in cfg["seeds"]], out_dir)
    runner.remove_parts(name, out_dir)
    return done


# ---------------------------------------------------------------------------------------------
# This experiment
# ---------------------------------------------------------------------------------------------
def train_step(step: str, seed: int, cfg: dict, *, state_path: Path) -> dict:
    """Train the network of one roadmap step."""
    seed_everything(seed)
    model = roadmap_net(step)
    return train_network(model, seed, cfg, state_path=state_path) | {"step": step}


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    runs = run_parts("convnext_roadmap", train_step, cfg["steps"], cfg, out_dir)
    steps = list(cfg["steps"])
    return {"config": cfg.plain(),
            "workers": runner.default_workers(),
            "threads_per_worker": 1,
            "steps": [{"step": s, "change": CHANGES[s], "paper_top1": PAPER_TOP1[s],
                       "fields_changed": changed_fields(ROADMAP[steps[i - 1]], ROADMAP[s]) if i else []}
                      for i, s in enumerate(steps)],
            "runs": runs}
