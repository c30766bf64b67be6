"""Degradation: plain-20/56 versus ResNet-20/56 (CIFAR style) on Fashion-MNIST, training error per step and epoch.

He et al. (2015, Fig. 1 and Fig. 6) showed that a deeper *plain* network has a *higher training error*
than a shallower one (so it is not overfitting: it is harder to optimise), and that adding identity
shortcuts removes the effect. This experiment repeats the comparison on a Fashion-MNIST subset:
four networks, the same data in the same order, the same optimiser (the paper's SGD, lr 0.1, momentum
0.9, weight decay 1e-4, batch 128, here with a cosine schedule over a few epochs), and records

* the training error of every batch (measured in training mode, as the paper's curves) and per epoch,
* the validation error per epoch, the final training error in evaluation mode, the test accuracy,
* parameters, training time and images/s.

The four networks train in parallel worker processes of one thread each (``CNN_COURSE_WORKERS``,
default: the number of CPU cores, at most 4), the deepest first; the results do not depend on the
number of workers. Each finished network is saved at once under ``<out_dir>/degradation.parts/``, so a
run that is interrupted resumes with the networks still missing (the folder is removed at the end). A full run (8,000 training images, 8 epochs) takes about 20 minutes on an idle
2-core laptop CPU; ``--quick`` trains 8- and 14-layer networks on 256 images for one epoch.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from lib.data import fashion_mnist_loaders
from lib.models.plain import plain_cifar, resnet_cifar
from lib.train import evaluate, fit, seed_everything

FULL = {"depths": (20, 56), "train_subset": 8_000, "val_subset": 1_000, "test_subset": None, "epochs": 8,
        "batch_size": 128, "lr": 0.1, "weight_decay": 1e-4, "optimizer": "sgd (momentum 0.9, Nesterov)",
        "schedule": "cosine", "seed": 0}
QUICK = {**FULL, "depths": (8, 14), "train_subset": 256, "val_subset": 128, "test_subset": 256, "epochs": 1,
         "batch_size": 64}


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


def train_one(kind: str, depth: int, cfg: dict, threads: int | None = None) -> dict:
    """Train one network as the experiment does; ``threads`` sets torch's CPU threads in this process."""
    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(cfg["seed"])
    model = build(kind, depth)
    # Fresh loaders per network, so that every network sees the same batches in the same order.
    train_loader, val_loader, test_loader = fashion_mnist_loaders(
        batch_size=cfg["batch_size"], train_subset=cfg["train_subset"], val_subset=cfg["val_subset"],
        test_subset=cfg["test_subset"], seed=cfg["seed"])
    loss_fn = RecordingCrossEntropy()
    history = fit(model, train_loader, val_loader, epochs=cfg["epochs"], lr=cfg["lr"], optimizer="sgd",
                  weight_decay=cfg["weight_decay"], schedule="cosine", loss_fn=loss_fn, device="cpu")
    train_eval = evaluate(model, train_loader)
    test = evaluate(model, test_loader)
    return {
        "kind": kind, "depth": depth, "name": f"{kind}-{depth}", "params": sum(p.numel() for p in model.parameters()),
        "steps_per_epoch": len(train_loader),
        "batch_train_error": [round(e, 4) for e in loss_fn.batch_errors],
        "epochs": [{"epoch": e["epoch"], "train_loss": round(e["train_loss"], 5), "train_error": round(1 - e["train_acc"], 5),
                    "val_loss": round(e["val_loss"], 5), "val_error": round(1 - e["val_acc"], 5),
                    "seconds": round(e["seconds"], 2), "images_per_s": round(e["images_per_s"], 1)}
                   for e in history.epochs],
        "final_train_error_eval_mode": round(1 - train_eval["acc"], 5),
        "test_accuracy": round(test["acc"], 5), "test_images": len(test_loader.dataset),
        "train_seconds": round(history.seconds, 1), "images_per_s": round(history.images_per_second, 1),
    }


def _part_path(parts: Path, kind: str, depth: int, cfg: dict) -> Path:
    """Where one finished network is kept until the whole run is done; the name pins the configuration."""
    key = hashlib.sha1(json.dumps(cfg, sort_keys=True, default=list).encode()).hexdigest()[:12]
    return parts / f"{kind}-{depth}-{key}.json"


def _train_job(job: tuple[str, int, dict, Path]) -> dict:
    kind, depth, cfg, parts = job
    path = _part_path(parts, kind, depth, cfg)
    if path.is_file():
        r = json.loads(path.read_text())
        print(f"{r['name']:>10}: resumed from {path}", flush=True)
        return r
    r = train_one(kind, depth, cfg, threads=1)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(r))
    tmp.replace(path)
    print(f"{r['name']:>10}: train error {r['epochs'][-1]['train_error']:.3f}, test acc {r['test_accuracy']:.3f}, "
          f"{r['train_seconds']:.0f} s ({r['images_per_s']:.0f} images/s)", flush=True)
    return r


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    parts = Path(out_dir) / "degradation.parts"
    parts.mkdir(parents=True, exist_ok=True)
    jobs = [(kind, depth, cfg, parts) for depth in sorted(cfg["depths"], reverse=True) for kind in ("plain", "resnet")]
    workers = int(os.environ.get("CNN_COURSE_WORKERS", min(4, os.cpu_count() or 1)))
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            done = pool.map(_train_job, jobs, chunksize=1)
    else:
        done = [_train_job(job) for job in jobs]
    shutil.rmtree(parts)
    runs = sorted(done, key=lambda r: (r["depth"], r["kind"]))  # plain-20, resnet-20, plain-56, resnet-56
    return {"config": {**cfg, "depths": list(cfg["depths"])}, "workers": workers, "threads_per_worker": 1,
            "runs": runs}
