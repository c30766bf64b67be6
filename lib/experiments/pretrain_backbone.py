"""Pretrain the transfer chapter's backbone: ResNet-20 on Fashion-MNIST's five clothing classes 0-4.

Source task: T-shirt/top, Trouser, Pullover, Dress, Coat (``lib.transfer.SOURCE_CLASSES``), all their
images in the course's training split (the validation split's images of these classes validate each
epoch; its target-class images are never used), with light augmentation (random horizontal flips and
shifts of up to 2 pixels). Recipe: ``EPOCHS`` epochs of SGD with Nesterov momentum 0.9, learning rate
``LR`` annealed by a cosine schedule, weight decay ``WEIGHT_DECAY``, batch ``BATCH_SIZE``, seed ``SEED``.
The target classes 5-9 are never seen.

Writes the weights to ``<out_dir>/backbone_fmnist_source.pt`` (``results/`` for a full run, about 1 MB),
listed in ``results["artifacts"]`` so that its sha256 goes into the record and is checked on every load
(``lib.transfer.load_pretrained_backbone``), and the record to ``<out_dir>/pretrain_backbone.json``. The
state is saved after every epoch (``<out_dir>/pretrain_backbone.parts/``): run the command again after an
interruption and it continues; ``train_seconds`` counts the epochs' own time, ``resumes`` how often it was
restarted. ``--quick`` trains one epoch on 64 images per class.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lib import analysis, data, train, transfer
from lib.experiments._resume import fit_resumable
from lib.models import build

MODEL, MODEL_KWARGS = "resnet20", {"in_channels": 1, "num_classes": len(transfer.SOURCE_CLASSES)}
EPOCHS, BATCH_SIZE, LR, WEIGHT_DECAY, SEED = 8, 128, 0.1, 5e-4, 0


def run(*, quick: bool, out_dir: Path) -> dict:
    train.seed_everything(SEED)
    splits = data.fashion_mnist(augment=True, seed=SEED)
    source = {name: transfer.class_task(getattr(splits, name), transfer.SOURCE_CLASSES,
                                        per_class=(64 if quick else None), seed=SEED)
              for name in ("train", "val", "test")}
    train_loader = DataLoader(source["train"], batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(SEED))
    val_loader = DataLoader(source["val"], batch_size=512)
    test_loader = DataLoader(source["test"], batch_size=512)

    model = build(MODEL, **MODEL_KWARGS)
    epochs = 1 if quick else EPOCHS
    parts = Path(out_dir) / "pretrain_backbone.parts"  # the state after each epoch: a killed run resumes
    history = fit_resumable(model, train_loader, val_loader, epochs=epochs, lr=LR, optimizer="sgd",
                            weight_decay=WEIGHT_DECAY, state_path=parts / "state.pt")
    test = train.evaluate(model, test_loader)

    meta = {"model": MODEL, "model_kwargs": MODEL_KWARGS, "source_classes": list(transfer.SOURCE_CLASSES),
            "source_class_names": [data.CLASSES[c] for c in transfer.SOURCE_CLASSES],
            "made_by": "python -m lib.experiments pretrain_backbone", "epochs": epochs,
            "source_test_acc": test["acc"]}
    path = train.save_checkpoint(Path(out_dir) / transfer.BACKBONE_CHECKPOINT, model, meta=meta, history=history)
    shutil.rmtree(parts)
    return {
        "model": MODEL, "model_kwargs": MODEL_KWARGS, "params": analysis.count_params(model),
        "source_classes": list(transfer.SOURCE_CLASSES),
        "source_class_names": [data.CLASSES[c] for c in transfer.SOURCE_CLASSES],
        "train_images": len(source["train"]), "val_images": len(source["val"]), "test_images": len(source["test"]),
        "recipe": {"epochs": epochs, "batch_size": BATCH_SIZE, "optimizer": "sgd (momentum 0.9, nesterov)", "lr": LR,
                   "weight_decay": WEIGHT_DECAY, "schedule": "cosine", "augment": "flip + 2-pixel shift",
                   "seed": SEED},
        "history": history.epochs,
        "train_seconds": history.seconds,
        "source_test_acc": test["acc"], "source_test_loss": test["loss"],
        "checkpoint": path.name, "checkpoint_bytes": path.stat().st_size,
        "checkpoint_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "artifacts": [path.name],
        "resumes": max(e["resumes"] for e in history.epochs),
    }
