"""Logistic regression on the raw pixels of nested subsets of the 55,000 training images: the linear bar for vit_vs_cnn and vgg_fashion.

A network below a linear classifier trained on the same images is in early training: its accuracy says how fast it
learns, not what its architecture can reach (``lib.baseline``). Experiments that train on all or part of the
55,000 training images (``vit_vs_cnn``: nested random subsets of 1,000 to 55,000 with data seed 0; ``vgg_fashion``:
all 55,000) need that bar at each of their sizes, and fitting it on 55,000 images takes about two minutes, too
long for a page. One part per size: the same subset and split as theirs (``lib.data.fashion_mnist`` with the same
``train_subset`` and ``seed``), ``lib.baseline.logistic_regression`` with its L2 penalty chosen on the 5,000
validation images by ``lib.tuning.tune`` (which extends the grid past an edge), then tested on all 10,000 test
images. ``--quick``: 256 and 512 images, 500 validation and test images.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from lib import baseline
from lib.data import fashion_mnist
from lib.experiments import _runner as runner
from lib.experiments._runner import Config, Part, config_key


@dataclass(frozen=True)
class BaselineRun(Config):
    sizes: tuple[int, ...] = (1_000, 4_000, 16_000, 55_000)  # vit_vs_cnn's sizes; 55,000 is vgg_fashion's too
    data_seed: int = 0                                         # their subsets and split
    penalties: tuple[float, ...] = (1e-4, 1e-3, 1e-2)          # the first grid; tune() extends it past an edge
    val_subset: int | None = None                              # the whole 5,000-image validation split
    test_subset: int | None = None                             # all 10,000 test images


FULL = BaselineRun()
QUICK = replace(FULL, sizes=(256, 512), val_subset=500, test_subset=500)


def fit_size(n: int, cfg: dict) -> dict:
    """Logistic regression on the first experiment's ``n`` training images: its validation and test accuracy."""
    splits = fashion_mnist(seed=cfg["data_seed"], train_subset=n, val_subset=cfg["val_subset"],
                           test_subset=cfg["test_subset"])
    fit = baseline.logistic_regression(splits.train, splits.val, splits.test, penalties=cfg["penalties"])
    return {"train_images": fit.train_images, "val_acc": fit.val_acc, "val_images": fit.val_images,
            "test_acc": fit.test_acc, "test_images": fit.test_images, "penalty": fit.penalty.value,
            "penalty_scores": {f"{k:g}": v for k, v in fit.penalty.scores.items()},
            "penalty_edge": fit.penalty.edge, "seconds": round(fit.seconds, 1)}


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    parts = [Part(f"n{n}-{config_key(cfg)}", fit_size, (n, cfg.plain()), label=f"{n:,} images", resumable=False)
             for n in cfg["sizes"]]
    rows = runner.run_parts("linear_baseline", parts, Path(out_dir))
    return {"config": cfg.plain(), "model": "logistic regression on the raw (normalised) pixels, full-batch L-BFGS",
            "threads_per_worker": 1, "runs": rows}
