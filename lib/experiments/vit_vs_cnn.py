"""A small ViT and a small CNN on growing subsets of Fashion-MNIST, same budget; keeps the largest ViT.

For each training-set size, ``vit_tiny_28`` (4 blocks, D=64, 4x4 patches) and ``simple_cnn(width=32)``
are trained with the same recipe (AdamW, cosine schedule, batch 64, the same images in the same
order, no augmentation) for the same number of epochs, validated on 1,000 held-out images after
every epoch and tested on all 10,000 test images. The ViT
trained on the largest set is saved to ``results/vit_tiny_fmnist.pt`` for the chapter's attention
maps and position embeddings. Each finished run is kept in ``results/vit_vs_cnn.parts/`` and the
unfinished one's state after every epoch: run the command again after an interruption and it continues.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lib import analysis, data, train
from lib.experiments._resume import fit_resumable
from lib.models import build

SIZES = (1_000, 4_000, 16_000, 55_000)
EPOCHS = {1_000: 20, 4_000: 8, 16_000: 4, 55_000: 3}  # at least 300 steps of 64 images; CPU-sized
MODELS = {"ViT (vit_tiny_28)": ("vit_tiny_28", {}), "CNN (simple_cnn, width 32)": ("simple_cnn", {"width": 32})}
RECIPE = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "schedule": "cosine", "batch_size": 64}
SEED = 0
CHECKPOINT = "vit_tiny_fmnist.pt"


def run(*, quick: bool, out_dir: Path) -> dict:
    sizes = (500, 1_000) if quick else SIZES
    parts = Path(out_dir) / "vit_vs_cnn.parts"  # each finished run, and the state of the unfinished one
    parts.mkdir(parents=True, exist_ok=True)
    runs = []
    for n in sizes:
        epochs = 1 if quick else EPOCHS[n]
        for label, (name, kwargs) in MODELS.items():
            done = parts / f"{name}-{n}.json"
            if done.is_file():  # finished before an interruption
                runs.append(json.loads(done.read_text()))
                continue
            # fresh loaders per model: the same images, shuffled in the same order, for both
            loaders = data.fashion_mnist_loaders(batch_size=RECIPE["batch_size"], train_subset=n, seed=SEED,
                                                 val_subset=500 if quick else 1_000,
                                                 test_subset=500 if quick else None)
            train.seed_everything(SEED)
            model = build(name, **kwargs)
            history = fit_resumable(model, loaders[0], loaders[1], epochs=epochs, lr=RECIPE["lr"],
                                    optimizer=RECIPE["optimizer"], weight_decay=RECIPE["weight_decay"],
                                    state_path=parts / f"{name}-{n}.pt")
            test = train.evaluate(model, loaders[2])
            result = {"model": label, "arch": name, "train_images": n, "epochs": epochs,
                      "params": analysis.count_params(model), "test_acc": test["acc"], "test_loss": test["loss"],
                      "test_images": len(loaders[2].dataset),
                      "train_acc": history.last("train_acc"), "val_acc": history.last("val_acc"),
                      "train_seconds": history.seconds, "images_per_s": history.images_per_second,
                      "resumes": max(e["resumes"] for e in history.epochs), "history": history.epochs}
            if name == "vit_tiny_28" and n == sizes[-1]:
                train.save_checkpoint(
                    Path(out_dir) / CHECKPOINT, model, history=history,
                    meta={"model": name, "model_kwargs": kwargs, "train_images": n, "epochs": epochs,
                          "recipe": RECIPE, "test_acc": test["acc"], "made_by": "python -m lib.experiments vit_vs_cnn"})
            done.write_text(json.dumps(result))
            (parts / f"{name}-{n}.pt").unlink()
            runs.append(result)
    shutil.rmtree(parts)
    saved = Path(out_dir) / CHECKPOINT
    return {"sizes": list(sizes), "recipe": RECIPE, "seed": SEED, "test_images": runs[0]["test_images"],
            "runs": runs, "checkpoint": saved.name, "checkpoint_bytes": saved.stat().st_size,
            "threads": torch.get_num_threads()}
