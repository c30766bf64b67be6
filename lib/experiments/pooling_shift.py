"""Pooling and shifts: five downsampling variants of SimpleCNN, each tuned on a grid of rates that brackets its best and trained over 3 seeds, then shift-tested on all 10,000 test images.

The pooling chapter asks whether pooling makes a network shift-invariant. One seed on a test subset
cannot rank the variants (the seed-to-seed spread is of the order of the differences), and a shift
that crops the image mixes occlusion with the shift. This experiment therefore:

* trains five networks that differ only in how they downsample (see :data:`VARIANTS`): 2x2 max pooling,
  2x2 average pooling, stride-2 convolutions, max pooling followed by a binomial blur (Zhang 2019's
  MaxBlurPool), and max pooling with a flatten head instead of global average pooling;
* gives every variant the same budget and the same tuning: Adam with a cosine schedule, the same
  images in the same order per seed, the same number of steps, and the learning rate chosen from the
  same grid by the mean *validation* accuracy over the seeds (the test set chooses nothing); a variant whose
  best rate sits at an edge of the grid gets the next rate past that edge, up to ``max_extensions`` times
  (``lib.tuning.tune_all``), so that the chosen rate lies inside the grid or the record says it does not;
* places every 28x28 image on a 36x36 canvas of background (4 pixels on each side), for training and
  testing alike, so that a shift of up to 4 pixels moves the garment inside the canvas and loses no
  pixel (:func:`place`; the run asserts it);
* shifts all 10,000 test images diagonally by 0-4 pixels (4 is one step of the networks' total
  subsampling factor) and records, per network and shift, the accuracy on the shifted images, the share
  of predictions unchanged from the unshifted image, and the cosine similarity of the classifier's
  input (the pooled vector, or the flattened map) to the unshifted one, with two baselines for the
  similarity: the mean similarity between *different* test images and between different images of the
  *same class*;
* saves the seed-0 weights of the five chosen networks (``pooling_shift.pt``) so that the chapter can
  re-measure one of the numbers.

Runs are one thread each, in ``CNN_COURSE_WORKERS`` worker processes (default: the CPU cores, at most 4;
45 short trainings, 3 more per extension, and 15 shift tests); every finished training and shift test is kept
under ``<out_dir>/pooling_shift.parts/`` until the end, so an interrupted run resumes where it stopped.
``--quick`` trains on 256 images for one epoch, two rates (and one extension) and two seeds, and tests 512 images.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lib.analysis import count_macs, count_params
from lib.data import BACKGROUND, fashion_mnist
from lib.experiments import _runner as runner
from lib.experiments._runner import Config, Part, config_key
from lib.models.simple import SimpleCNN
from lib.train import evaluate, fit, seed_everything
from lib.tuning import choose, tune_all

VARIANTS = ("max", "avg", "strided conv", "max + blur", "max (flatten head)")
PAD = 4                          # canvas margin on each side: 28 -> 36, and the largest lossless shift



@dataclass(frozen=True)
class ShiftRun(Config):
    variants: tuple[str, ...] = VARIANTS
    seeds: tuple[int, ...] = (0, 1, 2)           # initial weights and batch order; the images stay the same
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)  # the first grid every variant is tuned on (mean validation accuracy)
    max_extensions: int = 2                      # times a variant's grid is extended past an edge its best sits on
    train_subset: int | None = 12_000
    val_subset: int | None = None                # None: all 5,000 validation images
    test_subset: int | None = None               # None: all 10,000 test images
    epochs: int = 3
    batch_size: int = 64
    optimizer: str = "adam"
    schedule: str = "cosine"
    width: int = 16                              # SimpleCNN's base width
    pad: int = PAD
    shifts: tuple[int, ...] = (0, 1, 2, 3, 4)    # diagonal shifts of the test images, in pixels
    data_seed: int = 0


FULL = ShiftRun()
QUICK = replace(FULL, seeds=(0, 1), lrs=(1e-3, 3e-3), max_extensions=1, train_subset=256, val_subset=256,
                test_subset=512, epochs=1)


class BlurPool2d(nn.Module):
    """Max pooling 2x2 with stride 1, then a 3x3 binomial blur with stride 2 (Zhang 2019's MaxBlurPool).

    The blur is a fixed depthwise convolution with [1, 2, 1]/4 (x) [1, 2, 1]/4, after a 1-pixel reflected
    border, as in Zhang's code: (N, C, H, W) -> (N, C, H/2, W/2) for even H and W."""

    def __init__(self):
        super().__init__()
        b = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (b[:, None] * b[None, :] / 16)[None, None], persistent=False)  # (1, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                      # (N, C, H, W)
        x = F.max_pool2d(x, 2, stride=1)                                     # (N, C, H-1, W-1): no subsampling
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")                          # (N, C, H+1, W+1)
        blur = self.kernel.expand(x.shape[1], 1, 3, 3)                       # one binomial kernel per channel
        return F.conv2d(x, blur, stride=2, groups=x.shape[1])                # (N, C, H/2, W/2)


def variant(kind: str, *, width: int = 16, image_size: int = 28 + 2 * PAD) -> SimpleCNN:
    """SimpleCNN (conv-BN-ReLU x3, two 4x downsampling steps in all) with its downsampling replaced."""
    if kind not in VARIANTS:
        raise ValueError(f"unknown variant {kind!r}: use one of {VARIANTS}")
    model = SimpleCNN(width=width, pool="avg" if kind == "avg" else "max",
                      head="flatten" if kind == "max (flatten head)" else "gap", image_size=image_size)
    f = model.features  # [0] conv [1] BN [2] ReLU [3] pool [4] conv [5] BN [6] ReLU [7] pool [8] conv ...
    if kind == "strided conv":  # drop the pools, give the next convolutions stride 2
        f[3], f[7] = nn.Identity(), nn.Identity()
        f[4].stride, f[8].stride = (2, 2), (2, 2)
    if kind == "max + blur":
        f[3], f[7] = BlurPool2d(), BlurPool2d()
    return model


def place(x: torch.Tensor, dy: int = 0, dx: int = 0, *, pad: int = PAD) -> torch.Tensor:
    """Put 28x28 images on a (28 + 2 pad)-square canvas of background, moved ``dy`` down and ``dx`` right
    of the centre: (N, 1, 28, 28) -> (N, 1, 28 + 2 pad, 28 + 2 pad). Nothing is cropped while |d| <= pad."""
    if max(abs(dy), abs(dx)) > pad:
        raise ValueError(f"a shift of ({dy}, {dx}) would push the image off a canvas with a {pad}-pixel margin")
    return F.pad(x, (pad + dx, pad - dx, pad + dy, pad - dy), value=BACKGROUND)


def classifier_input(model: SimpleCNN, x: torch.Tensor) -> torch.Tensor:
    """What the linear classifier reads: the pooled (N, 4w) vector, or the flattened (N, 4w*9*9) map."""
    return model.pool(model.features(x)).flatten(1)


def splits(cfg: dict):
    """The same images for every variant and seed (``data_seed``); normalised 28x28 tensors."""
    s = fashion_mnist(seed=cfg["data_seed"], train_subset=cfg["train_subset"], val_subset=cfg["val_subset"],
                      test_subset=cfg["test_subset"])
    return {name: (getattr(s, name).images, getattr(s, name).labels) for name in ("train", "val", "test")}


def train_one(kind: str, lr: float, seed: int, cfg: dict) -> tuple[dict, dict]:
    """Train one variant at one rate and seed; return (its summary, its state dict)."""
    data = splits(cfg)
    pad = cfg["pad"]
    train_set = TensorDataset(place(data["train"][0], pad=pad), data["train"][1])
    val_set = TensorDataset(place(data["val"][0], pad=pad), data["val"][1])
    train_loader = DataLoader(train_set, batch_size=cfg["batch_size"], shuffle=True,
                              generator=torch.Generator().manual_seed(seed))  # the order changes with the seed
    seed_everything(seed)
    model = variant(kind, width=cfg["width"], image_size=28 + 2 * pad)
    steps = cfg["epochs"] * len(train_loader)
    try:
        history = fit(model, train_loader, None, epochs=cfg["epochs"], lr=lr, optimizer=cfg["optimizer"],
                      schedule=cfg["schedule"], device="cpu", progress=False)
    except FloatingPointError as e:  # a rate past the edge may diverge: it scores nothing and is never chosen
        return {"variant": kind, "lr": lr, "seed": seed, "val_accuracy": None, "diverged": str(e),
                "steps": steps}, model.state_dict()
    val = evaluate(model, DataLoader(val_set, batch_size=500))
    summary = {"variant": kind, "lr": lr, "seed": seed, "val_accuracy": round(val["acc"], 5),
               "train_accuracy_last_epoch": round(history.last("train_acc"), 5),
               "steps": steps, "train_seconds": round(history.seconds, 1)}
    return summary, model.state_dict()


@torch.no_grad()
def _features_and_predictions(model: SimpleCNN, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.cat([classifier_input(model, x[i:i + batch]) for i in range(0, len(x), batch)])
    return feats, model.fc(feats).argmax(1)


def _pairs(labels: torch.Tensor, *, same_class: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j), i != j: a random partner for every image, from any class or from its own."""
    g = torch.Generator().manual_seed(seed)
    groups = [torch.nonzero(labels == c).flatten() for c in labels.unique()] if same_class else [torch.arange(len(labels))]
    firsts, seconds = [], []
    for idx in groups:
        idx = idx[torch.randperm(len(idx), generator=g)]
        firsts.append(idx), seconds.append(idx.roll(1))  # each image's partner is the next one in a random order
    return torch.cat(firsts), torch.cat(seconds)


@torch.no_grad()
def shift_test(model: SimpleCNN, images: torch.Tensor, labels: torch.Tensor, shifts, *, pad: int = PAD) -> dict:
    """Accuracy, unchanged predictions and cosine similarity to the unshifted input, per diagonal shift."""
    model.eval()
    ref = place(images, pad=pad)
    ref_feats, ref_pred = _features_and_predictions(model, ref)
    foreground = (ref - BACKGROUND).abs().sum()
    rows = []
    for k in shifts:
        moved = place(images, k, k, pad=pad)
        assert torch.isclose((moved - BACKGROUND).abs().sum(), foreground), "the shift lost pixels"
        feats, pred = (ref_feats, ref_pred) if k == 0 else _features_and_predictions(model, moved)
        rows.append({"shift": k, "accuracy": round((pred == labels).float().mean().item(), 5),
                     "unchanged": round((pred == ref_pred).float().mean().item(), 5),
                     "cosine": round(F.cosine_similarity(feats, ref_feats).mean().item(), 5)})
    baselines = {}
    for name, same in (("cosine_different_images", False), ("cosine_same_class", True)):
        i, j = _pairs(labels, same_class=same)
        baselines[name] = round(F.cosine_similarity(ref_feats[i], ref_feats[j]).mean().item(), 5)
    return {"shifts": rows, **baselines}


def _name(kind: str, lr: float, seed: int) -> str:
    return f"{re.sub('[^a-z0-9]+', '_', kind.replace('+', 'plus')).strip('_')}-lr{lr:g}-seed{seed}"


def _weights(kind: str, lr: float, seed: int, cfg: dict, out_dir: Path) -> Path:
    """Where the trained weights of a grid part are kept, beside the part, until the run is complete."""
    return runner.parts_folder("pooling_shift", out_dir) / f"train-{_name(kind, lr, seed)}-{config_key(cfg)}.pt"


def _train_part(kind: str, lr: float, seed: int, cfg: dict, out_dir: Path) -> dict:
    summary, state = train_one(kind, lr, seed, cfg)
    torch.save(state, _weights(kind, lr, seed, cfg, out_dir))  # before the part's .json: complete when it exists
    return summary


def _shift_part(kind: str, lr: float, seed: int, cfg: dict, out_dir: Path) -> dict:
    model = variant(kind, width=cfg["width"], image_size=28 + 2 * cfg["pad"])
    model.load_state_dict(torch.load(_weights(kind, lr, seed, cfg, out_dir), map_location="cpu", weights_only=True))
    images, labels = splits(cfg)["test"]
    return {"variant": kind, "lr": lr, "seed": seed, "test_images": len(labels),
            **shift_test(model, images, labels, cfg["shifts"], pad=cfg["pad"])}


def _parts(stage: str, jobs: list[tuple[str, float, int]], cfg: dict, out_dir: Path) -> list[Part]:
    fn = _train_part if stage == "train" else _shift_part
    return [Part(f"{stage}-{_name(k, lr, s)}-{config_key(cfg)}", fn, (k, lr, s, cfg, out_dir), resumable=False,
                 label=f"{stage} {k} lr {lr:g} seed {s}",
                 artifact=_weights(k, lr, s, cfg, out_dir) if stage == "train" else None) for k, lr, s in jobs]


def mean_val(grid: list[dict], kind: str, lr: float) -> float | None:
    """The mean validation accuracy of ``kind`` at ``lr`` over the seeds; None if a seed diverged."""
    scores = [r["val_accuracy"] for r in grid if r["variant"] == kind and r["lr"] == lr]
    return None if not scores or None in scores else sum(scores) / len(scores)


def choose_lr(grid: list[dict], kind: str) -> float:
    """The rate of ``kind`` with the best mean validation accuracy over the seeds (ties: the smaller rate)."""
    return choose({r["lr"]: mean_val(grid, kind, r["lr"]) for r in grid if r["variant"] == kind}, name=kind).value


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    out_dir = Path(out_dir)
    workers = runner.default_workers()
    grid: list[dict] = []

    def train_round(pairs: list[tuple[str, float]]) -> dict[tuple[str, float], float | None]:
        jobs = [(k, lr, s) for k, lr in pairs for s in cfg["seeds"]]
        grid.extend(runner.run_parts("pooling_shift", _parts("train", jobs, cfg, out_dir), out_dir))
        return {(k, lr): mean_val(grid, k, lr) for k, lr in pairs}

    # the first grid for every variant, then the next rate past the edge for each variant whose best sits there
    choices = tune_all(train_round, list(cfg["variants"]), cfg["lrs"], max_extensions=cfg["max_extensions"])
    chosen = {k: c.value for k, c in choices.items()}
    tests = runner.run_parts("pooling_shift", _parts("shift", [(k, chosen[k], s) for k in cfg["variants"]
                                                              for s in cfg["seeds"]], cfg, out_dir), out_dir)

    size = 28 + 2 * cfg["pad"]
    networks = {}
    for k in cfg["variants"]:
        m = variant(k, width=cfg["width"], image_size=size)
        networks[k] = {"params": count_params(m), "macs": count_macs(m, (1, 1, size, size))}
    seed0 = {k: torch.load(_weights(k, chosen[k], cfg["seeds"][0], cfg, out_dir), map_location="cpu",
                           weights_only=True) for k in cfg["variants"]}
    torch.save({"variants": seed0, "lr": chosen, "seed": cfg["seeds"][0], "width": cfg["width"], "pad": cfg["pad"]},
               out_dir / "pooling_shift.pt")
    train_by = {(r["variant"], r["lr"], r["seed"]): r for r in grid}
    runs = [t | {"val_accuracy": train_by[(t["variant"], t["lr"], t["seed"])]["val_accuracy"],
                 "steps": train_by[(t["variant"], t["lr"], t["seed"])]["steps"]} for t in tests]
    runner.remove_parts("pooling_shift", out_dir)
    return {"config": {**cfg.plain(), "canvas": size, "background": BACKGROUND},
            "workers": workers, "threads_per_worker": 1, "networks": networks, "chosen_lr": chosen,
            "extended": {k: list(c.extended) for k, c in choices.items()},
            "stopped_at_edge": {k: c.stopped for k, c in choices.items() if c.stopped},
            "grid": grid, "runs": runs, "artifacts": ["pooling_shift.pt"]}
