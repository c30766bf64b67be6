"""A VGG-style network (3x3 conv pairs, BN, 2x2 max pooling, global average pooling) on all of Fashion-MNIST.

The VGG chapter trains a narrow VGG-style network on a subset live; the published Fashion-MNIST
baselines (Xiao et al. 2017 and the benchmark table of its repository) train on all 60,000 images.
This experiment gives the fair comparison: a wider network of the same design trained on the 55,000
training images (5,000 held out for validation, as in every chapter) with light augmentation, tested
once on the 10,000 test images. It writes the per-epoch history, the test accuracy overall and per class,
and the weights (``results/vgg_fashion.pt``, about 1 MB) so that the chapter can re-test them.

A full run (5 epochs) takes about 10-15 minutes on a 2-core laptop CPU; ``--quick`` trains on 512 images.
"""
from __future__ import annotations

from pathlib import Path

import torch

from lib.data import CLASSES, fashion_mnist_loaders
from lib.models.vgg import VGG
from lib.train import evaluate, fit, save_checkpoint, seed_everything

# Two 3x3 convolutions per stage, as VGG's deeper columns; 28 -> 14 -> 7 (small_input drops the last pooling).
CONFIG: tuple[int | str, ...] = (32, 32, "M", 64, 64, "M", 128, 128, "M")

FULL = {"config": CONFIG, "batch_norm": True, "train_subset": None, "val_subset": None, "test_subset": None,
        "augment": True, "epochs": 5, "batch_size": 128, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine",
        "seed": 0}
QUICK = {**FULL, "train_subset": 512, "val_subset": 256, "test_subset": 256, "epochs": 1}


def build(cfg: dict) -> VGG:
    return VGG(cfg["config"], batch_norm=cfg["batch_norm"], num_classes=10, in_channels=1, small_input=True,
               name="vgg_fashion")


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    seed_everything(cfg["seed"])
    model = build(cfg)
    train_loader, val_loader, test_loader = fashion_mnist_loaders(
        batch_size=cfg["batch_size"], train_subset=cfg["train_subset"], val_subset=cfg["val_subset"],
        test_subset=cfg["test_subset"], augment=cfg["augment"], seed=cfg["seed"])
    history = fit(model, train_loader, val_loader, epochs=cfg["epochs"], lr=cfg["lr"], optimizer=cfg["optimizer"],
                  schedule=cfg["schedule"], device="cpu")
    test = evaluate(model, test_loader)
    model.eval()
    correct, total = torch.zeros(10), torch.zeros(10)
    with torch.no_grad():
        for x, y in test_loader:
            hit = (model(x).argmax(1) == y).float()
            correct.index_add_(0, y, hit)
            total.index_add_(0, y, torch.ones_like(hit))
    checkpoint = save_checkpoint(out_dir / "vgg_fashion.pt", model,
                                 meta={"config": list(cfg["config"]), "batch_norm": cfg["batch_norm"],
                                       "test_accuracy": test["acc"]})
    print(history.report(), f"test acc {test['acc']:.4f}", flush=True)
    return {
        "config": {**cfg, "config": list(cfg["config"])},
        "params": sum(p.numel() for p in model.parameters()),
        "train_images": len(train_loader.dataset), "test_images": len(test_loader.dataset),
        "epochs": [{k: round(v, 5) if isinstance(v, float) else v for k, v in e.items()} for e in history.epochs],
        "train_seconds": round(history.seconds, 1), "images_per_s": round(history.images_per_second, 1),
        "test_accuracy": round(test["acc"], 5), "test_loss": round(test["loss"], 5),
        "per_class_test_accuracy": {c: round((correct[i] / total[i].clamp_min(1)).item(), 4)
                                    for i, c in enumerate(CLASSES)},
        "checkpoint": checkpoint.name,
    }
