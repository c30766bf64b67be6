"""Degradation: plain-20/56 versus ResNet-20/56 (CIFAR style) on Fashion-MNIST over 3 seeds, training error per step and epoch.

He et al. (2015, Fig. 1 and Fig. 6) showed that a deeper *plain* network has a *higher training error*
than a shallower one (so it is not overfitting: it is harder to optimise), and that adding identity
shortcuts removes the effect. This experiment repeats the comparison on a Fashion-MNIST subset with the
paper's recipe where this CPU allows it:

* the paper's optimiser: SGD with momentum 0.9 (not Nesterov), weight decay 1e-4, batch 128, lr 0.1,
  after a warm-up from 0.01 (He et al. warm up ResNet-110 at a constant 0.01; here the rate rises
  linearly over the first two epochs, as in Goyal et al. 2017, for every network so that all four share
  one recipe: a pilot with the constant warm-up sent ResNet-56's training error from 49% back up to 62%
  when the rate jumped to 0.1); then a cosine decay instead of the paper's steps at 32k and 48k
  iterations, because the run is far shorter (see ``FULL``: 20,000 images for 6 epochs, about 940 steps;
  a pilot on 8,000 images for 16 epochs ended with both residual networks below 0.2% training error, i.e.
  memorised, which can rank nothing; more images at the same cost keep the training error informative);
* the paper's initialisation: He (Kaiming) normal for every convolution, BatchNorm as the identity;
* the same images in the same order for the four networks of one seed; seeds change the initial
  weights and the order (the images and the validation set stay the same).

For every network and seed it records the training error of every batch (in training mode, as the
paper's curves), per-epoch training and validation error, the final training error in evaluation mode,
the test accuracy, parameters, training time and images/s.

Networks train in parallel worker processes of one thread each (``CNN_COURSE_WORKERS``, default: the
number of CPU cores, at most 4), the deepest first; results do not depend on the number of workers.
Each network saves its state after every epoch under ``<out_dir>/degradation.parts/``, so an interrupted
run resumes mid-network (the folder is removed at the end). ``--quick`` trains 8- and 14-layer networks
on 256 images for one epoch and one seed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from lib.data import fashion_mnist_loaders
from lib.experiments import _runner as runner
from lib.experiments._resume import fit_resumable
from lib.experiments._runner import Config, Part, config_key
from lib.models.plain import plain_cifar, resnet_cifar
from lib.train import evaluate, seed_everything



@dataclass(frozen=True)
class DegradationRun(Config):
    depths: tuple[int, ...] = (20, 56)        # plain-d and ResNet-d for each d
    seeds: tuple[int, ...] = (0, 1, 2)        # initial weights and batch order; the images stay the same
    train_subset: int | None = 20_000
    val_subset: int | None = 1_000
    test_subset: int | None = None            # None: all 10,000 test images
    epochs: int = 6
    batch_size: int = 128                     # the paper's
    lr: float = 0.1                           # the paper's, after the warm-up
    weight_decay: float = 1e-4                # the paper's
    optimizer: str = "momentum"
    optimizer_text: str = "SGD, momentum 0.9 (He et al. 2015)"
    warmup_steps: int = 125                   # about two epochs, linear ...
    warmup_from_lr: float = 0.01              # ... from a tenth of the rate (lib.train's warm-up)
    warmup: str = "linear"
    schedule: str = "cosine"
    data_seed: int = 0


FULL = DegradationRun()
QUICK = replace(FULL, depths=(8, 14), seeds=(0, 1), train_subset=256, val_subset=128, test_subset=256, epochs=1,
                batch_size=64, warmup_steps=2)


class RecordingCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy that also keeps the error rate of every training batch.

    ``fit`` calls its loss on each training batch with autograd on, and ``evaluate`` calls it under
    ``torch.no_grad()``; only the former is recorded, so ``batch_errors`` is the training curve.
    """

    def __init__(self):
        super().__init__()
        self.batch_errors: list[float] = []

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.batch_errors.append((logits.argmax(1) != target).float().mean().item())
        return super().forward(logits, target)


def build(kind: str, depth: int) -> nn.Module:
    """``("plain", 20)`` -> plain-20; ``("resnet", 56)`` -> ResNet-56 (option-A shortcuts), for 1-channel images."""
    return (plain_cifar if kind == "plain" else resnet_cifar)(depth, in_channels=1)


def train_one(kind: str, depth: int, seed: int, cfg: dict, *, state_path: Path, threads: int | None = None) -> dict:
    """Train one network as the experiment does; ``threads`` sets torch's CPU threads in this process."""
    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(seed)
    model = build(kind, depth)
    # Fresh loaders per network: every network of one seed sees the same batches in the same order.
    train_loader, val_loader, test_loader = fashion_mnist_loaders(
        batch_size=cfg["batch_size"], train_subset=cfg["train_subset"], val_subset=cfg["val_subset"],
        test_subset=cfg["test_subset"], seed=cfg["data_seed"], shuffle_seed=seed)
    loss_fn = RecordingCrossEntropy()
    assert abs(cfg["warmup_from_lr"] / cfg["lr"] - 0.1) < 1e-12, "lib.train's warm-up starts at a tenth of the rate"
    history = fit_resumable(model, train_loader, val_loader, epochs=cfg["epochs"], lr=cfg["lr"],
                            optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"],
                            warmup_steps=cfg["warmup_steps"], loss_fn=loss_fn, state_path=state_path)
    train_eval = evaluate(model, train_loader)
    test = evaluate(model, test_loader)
    return {
        "kind": kind, "depth": depth, "seed": seed, "name": f"{kind}-{depth}",
        "params": sum(p.numel() for p in model.parameters()), "steps_per_epoch": len(train_loader),
        "batch_train_error": [round(e, 4) for e in loss_fn.batch_errors],
        "epochs": [{"epoch": e["epoch"], "train_loss": round(e["train_loss"], 5), "train_error": round(1 - e["train_acc"], 5),
                    "val_loss": round(e["val_loss"], 5), "val_error": round(1 - e["val_acc"], 5),
                    "seconds": round(e["seconds"], 2), "images_per_s": round(e["images_per_s"], 1),
                    "resumes": e.get("resumes", 0)}
                   for e in history.epochs],
        "final_train_error_eval_mode": round(1 - train_eval["acc"], 5),
        "test_accuracy": round(test["acc"], 5), "test_images": len(test_loader.dataset),
        "train_seconds": round(history.seconds, 1), "images_per_s": round(history.images_per_second, 1),
    }


def _key(kind: str, depth: int, seed: int, cfg: dict) -> str:
    return f"{kind}-{depth}-seed{seed}-{config_key(cfg)}"


def _part_path(parts: Path, kind: str, depth: int, seed: int, cfg: dict) -> Path:
    """Where one finished network is kept until the whole run is done; the name pins the configuration."""
    return parts / f"{_key(kind, depth, seed, cfg)}.json"


def _train_part(kind: str, depth: int, seed: int, cfg: dict, *, state_path: Path) -> dict:
    return train_one(kind, depth, seed, cfg, state_path=state_path)


def run(*, quick: bool, out_dir: Path) -> dict:
    return run_config(QUICK if quick else FULL, out_dir, parts_name="degradation.parts")


def run_config(cfg: dict, out_dir: Path, *, parts_name: str) -> dict:
    """Train every (kind, depth, seed) of ``cfg``; finished networks are kept under ``out_dir/parts_name``."""
    name = parts_name.removesuffix(".parts")
    parts = [Part(_key(kind, depth, seed, cfg), _train_part, (kind, depth, seed, cfg), label=f"{kind}-{depth} seed {seed}")
             for depth in sorted(cfg["depths"], reverse=True) for seed in cfg["seeds"] for kind in ("plain", "resnet")]
    done = runner.run_parts(name, parts, out_dir)  # the deepest first
    runner.remove_parts(name, out_dir)
    workers = runner.default_workers()
    runs = sorted(done, key=lambda r: (r["depth"], r["kind"], r["seed"]))  # plain-20 seeds, resnet-20 seeds, ...
    return {"config": cfg.plain(), "workers": workers,
            "threads_per_worker": 1, "runs": runs}
