"""ViT vs CNN on 1k-55k Fashion-MNIST images: equal steps at every size, 3 seeds, learning rate tuned for each on validation; keeps one ViT.

The question: does a CNN's built-in locality buy more when data is scarce, so that a ViT's deficit
shrinks as the training set grows? Two models, ``vit_tiny_28`` (4 blocks, D=64, 4x4 patches) and
``simple_cnn(width=32)``, are trained on nested random subsets of the 55,000 training images with a
design that keeps the other causes of a shrinking gap out of it:

* **Equal optimiser steps at every size** (``FULL["steps"]`` batches of 64): the data size changes,
  the training length does not. A small set is therefore seen for many epochs and a large one for few;
  ``epochs_seen`` records how many, and the eval-mode training accuracy (on up to ``train_eval_images``
  training images) is recorded beside the validation and test accuracy, so the over- or under-fitting
  regime of every cell is visible.
* **Equal tuning**: the same recipe (AdamW, weight decay 0.05, a linear warm-up from a tenth of the
  rate, then a cosine decay, batch 64, no augmentation), with the learning rate chosen for each model
  separately from the same grid (``lr_grid``) by the accuracy on the 5,000-image validation split at one
  size (``tune_size``, seed ``tune_seed``); the choice is then used at every size. The tuning run of
  the chosen rate *is* the sweep's cell at that size and seed (same configuration), so it is reused.
* **3 seeds**: a seed sets the initial weights (``seed_everything``) and the order of the batches
  (``shuffle_seed``); the images, the validation split and the test set stay the same. The ViT and
  the CNN of one seed see the same batches in the same order, so their gap is paired by seed.

Every cell is tested on all 10,000 test images. The ViT trained on the largest set with the first
seed is saved as ``vit_tiny_fmnist.pt`` (an artifact, listed in ``results["artifacts"]``) for the
chapter's attention maps and position embeddings.

Each run trains in a worker process of one thread (``CNN_COURSE_WORKERS``, default: the number of CPU
cores, at most 4); results do not depend on the number of workers. Every finished run is kept under
``<out_dir>/vit_vs_cnn.parts/`` and the unfinished ones save their state every ``log_every`` steps, so
an interrupted run continues where it stopped (the folder is removed at the end). ``--quick`` trains
for 20 steps on 256 and 512 images with two seeds and a two-value grid.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from lib import analysis
from lib.data import fashion_mnist_loaders
from lib.experiments import _runner as runner
from lib.experiments._runner import Config, Part, config_key
from lib.models import build
from lib.train import TrainState, evaluate, fit, make_optimizer, make_scheduler, save_checkpoint, seed_everything

MODELS = {"vit_tiny_28": ("ViT (vit_tiny_28)", {}), "simple_cnn": ("CNN (simple_cnn, width 32)", {"width": 32})}
@dataclass(frozen=True)
class SweepRun(Config):
    sizes: tuple[int, ...] = (1_000, 4_000, 16_000, 55_000)  # nested random subsets of the 55,000 training images
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 1_200                          # optimiser steps of every run, whatever the size
    log_every: int = 100                        # running training loss and accuracy every 100 steps (and a saved state)
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    schedule: str = "cosine"
    warmup_steps: int = 120                     # linear warm-up from lr/10 over the first 10% of the steps
    lr_grid: tuple[float, ...] = (3e-4, 1e-3, 3e-3)  # the same three rates for both models
    tune_size: int = 4_000                      # where the rate is chosen, by validation accuracy
    tune_seed: int = 0
    val_subset: int | None = None               # the whole 5,000-image validation split
    test_subset: int | None = None              # all 10,000 test images
    train_eval_images: int = 5_000              # eval-mode training accuracy on the first min(n, 5,000) training images
    data_seed: int = 0                          # the subsets and the split (fixed); seeds change only init and order


FULL = SweepRun()
QUICK = replace(FULL, sizes=(256, 512), seeds=(0, 1), steps=20, log_every=10, warmup_steps=2, lr_grid=(1e-3, 3e-3),
                tune_size=256, val_subset=500, test_subset=500, train_eval_images=256)
CHECKPOINT = "vit_tiny_fmnist.pt"


def batch_order(n: int, steps: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """(steps, batch_size) indices into a training set of ``n`` images: one shuffled pass after another,
    cut into equal batches (a batch may straddle two passes), so every run takes exactly ``steps`` steps."""
    passes = -(-steps * batch_size // n)  # ceil
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
    return order[: steps * batch_size].view(steps, batch_size)


def train_steps(model: nn.Module, dataset: Dataset, order: torch.Tensor, *, lr: float, cfg: dict,
                state_path: Path | None = None, stop_after: int | None = None) -> list[dict]:
    """Train ``model`` on the batches ``order`` (one row per step) with ``lib.train.fit``, ``cfg["log_every"]``
    steps at a time, under one warm-up + cosine schedule over all ``len(order)`` steps.

    Returns one row per ``log_every`` steps: the running training loss and accuracy over those steps (train
    mode), their wall and CPU seconds. With ``state_path`` the state is saved after every row and a rerun
    continues from it; ``stop_after`` stops after that many steps of the same schedule (the chapter's live
    check trains the first steps of a recorded run).
    """
    steps, every = len(order), cfg["log_every"]
    end = steps if stop_after is None else stop_after
    if end % every or not 0 < end <= steps:
        raise ValueError(f"stop_after={stop_after} must be a multiple of log_every={every} within {steps} steps")
    opt = make_optimizer(model, cfg["optimizer"], lr, cfg["weight_decay"])
    sched = make_scheduler(opt, steps, schedule=cfg["schedule"], warmup_steps=cfg["warmup_steps"])
    state = TrainState(model, opt, sched)
    if state_path is not None:
        state.load(state_path)
    curve = state.history.epochs  # one row per log_every steps
    for start in range(len(curve) * every, end, every):
        batches = DataLoader(Subset(dataset, order[start:start + every].flatten().tolist()),
                             batch_size=order.shape[1], shuffle=False)  # exactly these batches, in this order
        cpu = time.process_time()
        row = fit(model, batches, None, epochs=1, lr=lr, optimizer=opt, scheduler=sched, progress=False).epochs[0]
        curve.append({"step": start + every, "train_loss": row["train_loss"], "train_acc": row["train_acc"],
                      "seconds": row["seconds"], "cpu_seconds": time.process_time() - cpu, "resumes": state.resumes})
        if state_path is not None:
            state.save(state_path)
    return curve


def train_one(arch: str, n: int, seed: int, lr: float, cfg: dict, *, state_path: Path | None = None,
              stop_after: int | None = None, threads: int | None = None) -> tuple[nn.Module, dict]:
    """Train one cell of the sweep as the experiment does: (model, its record).

    ``stop_after`` trains only the first steps of the cell's schedule and skips the final evaluation.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    label, kwargs = MODELS[arch]
    train_loader, val_loader, test_loader = fashion_mnist_loaders(
        batch_size=cfg["batch_size"], train_subset=n, val_subset=cfg["val_subset"], test_subset=cfg["test_subset"],
        seed=cfg["data_seed"], shuffle_seed=seed)
    seed_everything(seed)
    model = build(arch, **kwargs)
    order = batch_order(n, cfg["steps"], cfg["batch_size"], train_loader.generator)
    curve = train_steps(model, train_loader.dataset, order, lr=lr, cfg=cfg, state_path=state_path,
                        stop_after=stop_after)
    result = {"model": label, "arch": arch, "train_images": n, "seed": seed, "lr": lr, "steps": curve[-1]["step"],
              "epochs_seen": curve[-1]["step"] * cfg["batch_size"] / n, "params": analysis.count_params(model),
              "curve": curve, "train_seconds": sum(r["seconds"] for r in curve),
              "train_cpu_seconds": sum(r["cpu_seconds"] for r in curve),
              "resumes": max(r["resumes"] for r in curve)}
    result["images_per_s"] = result["steps"] * cfg["batch_size"] / result["train_seconds"]
    if stop_after is not None:
        return model, result
    seen = DataLoader(Subset(train_loader.dataset, range(min(n, cfg["train_eval_images"]))), batch_size=512)
    train_eval, val, test = evaluate(model, seen), evaluate(model, val_loader), evaluate(model, test_loader)
    test_images = len(test_loader.dataset)
    result |= {"train_acc": train_eval["acc"], "train_loss": train_eval["loss"], "train_acc_images": len(seen.dataset),
               "val_acc": val["acc"], "val_loss": val["loss"], "val_images": len(val_loader.dataset),
               "test_acc": test["acc"], "test_loss": test["loss"], "test_images": test_images,
               "test_correct": round(test["acc"] * test_images)}
    return model, result


def _key(job: tuple[str, int, int, float], cfg: dict) -> str:
    arch, n, seed, lr = job
    return f"{arch}-n{n}-seed{seed}-lr{lr:g}-{config_key(cfg)}"


def _part_path(parts: Path, job: tuple[str, int, int, float], cfg: dict) -> Path:
    return parts / f"{_key(job, cfg)}.json"


def _keeps_checkpoint(job: tuple[str, int, int, float], cfg: dict) -> bool:
    arch, n, seed, _ = job
    return arch == "vit_tiny_28" and n == max(cfg["sizes"]) and seed == cfg["seeds"][0]


def _train_cell(job: tuple[str, int, int, float], cfg: dict, checkpoint: Path | None, *, state_path: Path) -> dict:
    """One cell of the sweep, its model saved to ``checkpoint`` when there is one."""
    arch, n, seed, lr = job
    model, r = train_one(arch, n, seed, lr, cfg, state_path=state_path)
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, meta={
            "model": arch, "model_kwargs": MODELS[arch][1], "train_images": n, "seed": seed, "lr": lr,
            "steps": r["steps"], "epochs_seen": r["epochs_seen"], "test_acc": r["test_acc"],
            "test_correct": r["test_correct"], "test_images": r["test_images"],
            "made_by": "python -m lib.experiments vit_vs_cnn"})
    return r


def _run_cells(jobs: list[tuple[str, int, int, float]], cfg: dict, out_dir: Path) -> list[dict]:
    parts = []
    for job in jobs:
        checkpoint = Path(out_dir) / CHECKPOINT if _keeps_checkpoint(job, cfg) else None
        arch, n, seed, lr = job
        parts.append(Part(_key(job, cfg), _train_cell, (job, cfg, checkpoint), artifact=checkpoint,
                          label=f"{arch} n={n} seed {seed} lr {lr:g}"))
    return runner.run_parts("vit_vs_cnn", parts, out_dir)


def choose_lr(tuning: list[dict]) -> dict[str, float]:
    """Each model's learning rate with the best validation accuracy (the smaller rate on a tie)."""
    best = {}
    for arch in MODELS:
        rows = sorted((r for r in tuning if r["arch"] == arch), key=lambda r: (-r["val_acc"], r["lr"]))
        best[arch] = rows[0]["lr"]
    return best


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    out_dir = Path(out_dir)
    workers = runner.default_workers()
    # 1. The learning rate of each model, from the same grid, by validation accuracy at one size and seed.
    tuning = _run_cells([(arch, cfg["tune_size"], cfg["tune_seed"], lr) for arch in MODELS for lr in cfg["lr_grid"]],
                        cfg, out_dir)
    chosen = choose_lr(tuning)
    # 2. The sweep with the chosen rates; the tuning run of the chosen rate is the cell (tune_size, tune_seed).
    runs = _run_cells([(arch, n, seed, chosen[arch]) for n in sorted(cfg["sizes"], reverse=True)
                       for seed in cfg["seeds"] for arch in MODELS], cfg, out_dir)
    runner.remove_parts("vit_vs_cnn", out_dir)
    runs = sorted(runs, key=lambda r: (r["train_images"], list(MODELS).index(r["arch"]), r["seed"]))
    tuning = [{k: r[k] for k in ("model", "arch", "lr", "train_acc", "val_acc", "test_acc", "train_seconds")}
              for r in sorted(tuning, key=lambda r: (list(MODELS).index(r["arch"]), r["lr"]))]
    return {"config": cfg.plain(), "models": {arch: label for arch, (label, _) in MODELS.items()},
            "tuning": tuning, "chosen_lr": chosen, "runs": runs, "test_images": runs[0]["test_images"],
            "val_images": runs[0]["val_images"], "workers": workers, "threads_per_worker": 1,
            "checkpoint": CHECKPOINT, "artifacts": [CHECKPOINT]}
