"""SE ablation: the EfficientNet chapter's tiny MBConv network trained with and without squeeze-excitation over 3 seeds.

The chapter asks what squeeze-and-excitation (Hu et al. 2018) does inside an MBConv network. One trained
network and its gates cannot answer that, so this experiment trains the chapter's three-stage MBConv network
(``TINY_STAGES``, about 51k parameters) twice per seed:

* **with SE**: every MBConv block has its gate, as in EfficientNet;
* **without SE**: the same network with every SE block replaced by the identity. The two are built from the
  same seed, so every weight they share starts equal (the SE weights are drawn and then dropped); they see
  the same images in the same order (``shuffle_seed`` = the seed) with the same dropout draws, for the same
  number of steps with the same recipe (Adam, lr 3e-3, cosine decay, no weight decay: the chapter's recipe
  for the SE network, tuned for neither variant).

For each SE network it then measures, on data it was not fitted on:

* **frozen gates**: every gate replaced by a constant, its mean over the *validation* images, scored on the
  10,000 *test* images against the image-dependent gates (accuracy per seed and the per-image McNemar counts);
  this measures how much the trained network relies on its gates being image-dependent (not what SE is worth:
  that is the comparison with the network trained without SE);
* **class specificity**: the share of the variance across test images that the class explains (eta squared),
  pooled over channels and averaged per channel, for the gates of every SE block, for the squeeze vector that
  feeds them (the block's input pooled per channel), and for the same squeeze vector of the network trained
  without SE; beside them the chance level (K-1)/(N-1) and a label-permutation estimate of it.

Each network is saved after every epoch under ``<out_dir>/se_ablation.parts/`` and kept there when finished,
so an interrupted run resumes (the folder is removed at the end). Networks train in ``CNN_COURSE_WORKERS``
worker processes (default: the CPU cores, at most 4) of one thread each; the results do not depend on the number of workers. The
seed-0 SE network's weights are kept as ``se_ablation_se_seed0.pt`` (about 0.3 MB) for the chapter's
figures. ``--quick`` trains on 512 images for one epoch and two seeds.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from lib.analysis import count_macs, count_params
from lib.data import fashion_mnist_loaders
from lib.experiments import _runner as runner
from lib.experiments._resume import fit_resumable
from lib.experiments._runner import Config, Part, config_key
from lib.models.blocks import SqueezeExcitation
from lib.models.efficientnet import EfficientNet, MBConvStage
from lib.stats import difference
from lib.train import save_checkpoint, seed_everything

# expand ratio, depthwise kernel, stride, channels in -> out, blocks; after B0's stride-2 stem: 14 -> 14 -> 7 -> 7
TINY_STAGES: tuple[MBConvStage, ...] = (
    MBConvStage(expand_ratio=1, kernel_size=3, stride=1, c_in=16, c_out=16, num_layers=1),
    MBConvStage(expand_ratio=4, kernel_size=3, stride=2, c_in=16, c_out=24, num_layers=2),
    MBConvStage(expand_ratio=4, kernel_size=5, stride=1, c_in=24, c_out=40, num_layers=2),
)



@dataclass(frozen=True)
class AblationRun(Config):
    """The chapter's recipe for the SE network, tuned for neither variant."""
    seeds: tuple[int, ...] = (0, 1, 2)   # initial weights, batch order, dropout draws; the images stay the same
    train_subset: int | None = 20_000
    val_subset: int | None = 2_000       # fits the frozen gates
    test_subset: int | None = None       # None: all 10,000 test images
    epochs: int = 3
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"
    dropout: float = 0.1                 # before the classifier
    data_seed: int = 0
    permutations: int = 20               # label shuffles for the chance level of eta squared


FULL = AblationRun()
QUICK = replace(FULL, seeds=(0, 1), train_subset=512, val_subset=256, test_subset=512, epochs=1, permutations=5)
CHECKPOINT = "se_ablation_se_seed0.pt"
NUM_CLASSES = 10


# ---------------------------------------------------------------------------------------------
# The two networks
# ---------------------------------------------------------------------------------------------
def se_names(model: nn.Module) -> list[str]:
    """The module names of the SE blocks (or of the identities that replaced them), in forward order."""
    return [name for name, m in model.named_modules() if isinstance(m, (SqueezeExcitation, NoGate))]


class NoGate(nn.Identity):
    """Where an SE block was: passes its input on unchanged (a named place for hooks)."""


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def build(*, se: bool, dropout: float = FULL["dropout"]) -> EfficientNet:
    """The chapter's tiny MBConv network for 28x28 grey images; ``se=False`` replaces every SE block by
    :class:`NoGate`. Built after the same seed, the two share every initial weight but the SE ones."""
    model = EfficientNet(TINY_STAGES, dropout=dropout, num_classes=NUM_CLASSES, in_channels=1,
                         stochastic_depth_prob=0.0, name="tiny MBConv net" + ("" if se else " (no SE)"))
    if not se:
        for name in se_names(model):
            _replace(model, name, NoGate())
    return model


class FixedGate(nn.Module):
    """A squeeze-excitation block whose gate is a constant per channel: the same for every image."""

    def __init__(self, gate: torch.Tensor):
        super().__init__()
        self.register_buffer("gate", gate.reshape(1, -1, 1, 1))  # (1, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate


def freeze_gates(model: nn.Module, means: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with each SE block ``name`` replaced by a :class:`FixedGate` of ``means[name]``."""
    frozen = copy.deepcopy(model)
    for name, gate in means.items():
        _replace(frozen, name, FixedGate(gate))
    return frozen


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def collect(model: nn.Module, loader) -> dict:
    """One pass in eval mode: labels, whether each prediction is right, and at every SE position the squeeze
    vector (the block's input averaged over the map, (N, C)) and, where there is a gate, the gate (N, C)."""
    names = se_names(model)
    found: dict[str, dict[str, list]] = {n: {"squeeze": [], "gate": []} for n in names}
    modules = dict(model.named_modules())

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]                                                  # (B, C, H, W)
            found[name]["squeeze"].append(x.mean(dim=(2, 3)))              # (B, C)
            if isinstance(module, SqueezeExcitation):
                found[name]["gate"].append(module.scale(x).flatten(1))     # (B, C), each in (0, 1)
        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    labels, correct = [], []
    try:
        for x, y in loader:
            correct.append(model(x).argmax(1) == y)
            labels.append(y)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {"labels": torch.cat(labels), "correct": torch.cat(correct),
            "features": {n: {k: torch.cat(v) for k, v in d.items() if v} for n, d in found.items()}}


def class_share(features: torch.Tensor, labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> dict[str, float]:
    """How much of the variance of ``features`` (N, C) across images the class explains (eta squared):
    ``pooled`` = between-class over total variance summed over channels (channels with a larger variance
    weigh more), ``per_channel`` = the mean of the channels' own shares (each channel weighs the same)."""
    features = features.double()
    grand = features.mean(0)                                                          # (C,)
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])  # (K, C)
    between = ((means[labels] - grand) ** 2).mean(0)                                  # (C,)
    total = ((features - grand) ** 2).mean(0)                                         # (C,)
    keep = total > 0
    return {"pooled": float(between.sum() / total.sum()),
            "per_channel": float((between[keep] / total[keep]).mean())}


def chance_share(n: int, num_classes: int = NUM_CLASSES) -> float:
    """The expected eta squared of a feature whose labels are shuffled: (K - 1) / (N - 1)."""
    return (num_classes - 1) / (n - 1)


def permuted_share(features: torch.Tensor, labels: torch.Tensor, permutations: int, seed: int) -> dict[str, float]:
    """:func:`class_share` with the labels shuffled, averaged over ``permutations`` shuffles."""
    g = torch.Generator().manual_seed(seed)
    shares = [class_share(features, labels[torch.randperm(len(labels), generator=g)]) for _ in range(permutations)]
    return {k: sum(s[k] for s in shares) / len(shares) for k in ("pooled", "per_channel")}


def mcnemar(correct_a: torch.Tensor, correct_b: torch.Tensor) -> dict:
    """The paired per-image comparison of two classifiers on the same images: the images only ``a`` gets right,
    only ``b`` gets right, and the exact two-sided McNemar p-value (a binomial test on the discordant pairs)."""
    from scipy.stats import binomtest

    a_only = int((correct_a & ~correct_b).sum())
    b_only = int((~correct_a & correct_b).sum())
    p = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def _bits(correct: torch.Tensor) -> str:
    return "".join("1" if c else "0" for c in correct.tolist())


def _unbits(bits: str) -> torch.Tensor:
    return torch.tensor([b == "1" for b in bits])


# ---------------------------------------------------------------------------------------------
# Training one network
# ---------------------------------------------------------------------------------------------
def loaders(cfg: dict, seed: int):
    """The same images for every network; ``seed`` changes only the order of the training batches."""
    return fashion_mnist_loaders(batch_size=cfg["batch_size"], train_subset=cfg["train_subset"],
                                 val_subset=cfg["val_subset"], test_subset=cfg["test_subset"],
                                 seed=cfg["data_seed"], shuffle_seed=seed)


def train_one(se: bool, seed: int, cfg: dict, *, state_path: Path, checkpoint: Path | None = None,
              threads: int | None = None) -> dict:
    """Train one network as the experiment does and measure it (see the module docstring)."""
    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(seed)
    model = build(se=se, dropout=cfg["dropout"])
    train_loader, val_loader, test_loader = loaders(cfg, seed)
    history = fit_resumable(model, train_loader, val_loader, epochs=cfg["epochs"], lr=cfg["lr"],
                            optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"],
                            warmup_steps=cfg["warmup_steps"], state_path=state_path)
    test = collect(model, test_loader)
    labels = test["labels"]
    result = {
        "se": se, "seed": seed, "params": count_params(model), "macs": count_macs(model, (1, 1, 28, 28)),
        "steps": len(train_loader) * cfg["epochs"],
        "epochs": [{"epoch": e["epoch"], "train_loss": round(e["train_loss"], 5), "train_acc": round(e["train_acc"], 5),
                    "val_loss": round(e["val_loss"], 5), "val_acc": round(e["val_acc"], 5),
                    "seconds": round(e["seconds"], 2), "images_per_s": round(e["images_per_s"], 1),
                    "resumes": e.get("resumes", 0)} for e in history.epochs],
        "train_seconds": round(history.seconds, 1), "images_per_s": round(history.images_per_second, 1),
        "val_accuracy": round(history.last("val_acc"), 5),
        "test_accuracy": round(test["correct"].float().mean().item(), 5), "test_images": len(labels),
        "test_correct": _bits(test["correct"]),
        "blocks": [],
    }
    for name, feats in test["features"].items():
        block = {"name": name, "channels": feats["squeeze"].shape[1],
                 "squeeze": class_share(feats["squeeze"], labels)}
        if "gate" in feats:
            block["gate"] = class_share(feats["gate"], labels)
            block["gate_mean"] = round(feats["gate"].mean().item(), 4)
            block["gate_sd_across_images"] = round(feats["gate"].std(0).mean().item(), 4)
        result["blocks"].append(block)
    last = list(test["features"])[-1]
    result["permuted_last_block"] = {
        kind: permuted_share(test["features"][last][kind], labels, cfg["permutations"], seed)
        for kind in ("squeeze", "gate") if kind in test["features"][last]}

    if se:  # frozen gates: means fitted on the validation images, scored on the test images
        fit_on = collect(model, val_loader)
        means = {n: f["gate"].mean(0) for n, f in fit_on["features"].items()}
        frozen = collect(freeze_gates(model, means), test_loader)
        result["frozen"] = {"fitted_on": "validation", "fit_images": len(fit_on["labels"]),
                            "test_accuracy": round(frozen["correct"].float().mean().item(), 5),
                            "test_correct": _bits(frozen["correct"]),
                            "mcnemar": mcnemar(test["correct"], frozen["correct"])}
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, meta={"se": se, "seed": seed, "dropout": cfg["dropout"],
                                                 "stages": [dataclasses.asdict(s) for s in TINY_STAGES],
                                                 "test_accuracy": result["test_accuracy"]})
    return result


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------
def _name(se: bool) -> str:
    return "SE" if se else "no SE"


def _key(se: bool, seed: int, cfg: dict) -> str:
    return f"{'se' if se else 'nose'}-seed{seed}-{config_key(cfg)}"


def _part_path(parts: Path, se: bool, seed: int, cfg: dict) -> Path:
    return parts / f"{_key(se, seed, cfg)}.json"


def _train_part(se: bool, seed: int, cfg: dict, checkpoint: Path | None, *, state_path: Path) -> dict:
    return train_one(se, seed, cfg, state_path=state_path, checkpoint=checkpoint)


def _part(se: bool, seed: int, cfg: dict, out_dir: Path) -> Part:
    checkpoint = Path(out_dir) / CHECKPOINT if (se and seed == cfg["seeds"][0]) else None
    return Part(_key(se, seed, cfg), _train_part, (se, seed, cfg, checkpoint), label=f"{_name(se)} seed {seed}",
                artifact=checkpoint)


def _estimate(e) -> dict:
    return {"mean": e.mean, "sd": e.sd, "n": e.n, "low": e.low, "high": e.high, "confidence": e.confidence}


def summarise(runs: list[dict], seeds) -> dict:
    """The paired comparisons over seeds (``lib.stats.difference(paired=True)``) and the per-image tests."""
    by = {(r["se"], r["seed"]): r for r in runs}
    se_acc = [by[True, s]["test_accuracy"] for s in seeds]
    no_acc = [by[False, s]["test_accuracy"] for s in seeds]
    frozen_acc = [by[True, s]["frozen"]["test_accuracy"] for s in seeds]
    se_vs_no = {"se": se_acc, "no_se": no_acc,
                "val_se": [by[True, s]["val_accuracy"] for s in seeds],
                "val_no_se": [by[False, s]["val_accuracy"] for s in seeds],
                "difference": _estimate(difference(se_acc, no_acc, paired=True)),
                "mcnemar": [{"seed": s, **mcnemar(_unbits(by[True, s]["test_correct"]),
                                                  _unbits(by[False, s]["test_correct"]))} for s in seeds]}
    frozen = {"fitted_on": "validation", "fit_images": by[True, seeds[0]]["frozen"]["fit_images"],
              "dynamic": se_acc, "frozen": frozen_acc,
              "difference": _estimate(difference(se_acc, frozen_acc, paired=True)),
              "mcnemar": [{"seed": s, **by[True, s]["frozen"]["mcnemar"]} for s in seeds]}
    n = by[True, seeds[0]]["test_images"]
    blocks = []
    for j, block in enumerate(by[True, seeds[0]]["blocks"]):
        row = {"name": block["name"], "channels": block["channels"]}
        for kind, se in (("gate", True), ("squeeze", True), ("no_se_squeeze", False)):
            source = "squeeze" if kind == "no_se_squeeze" else kind
            for stat in ("pooled", "per_channel"):
                row[f"{kind}_{stat}"] = [by[se, s]["blocks"][j][source][stat] for s in seeds]
        row["gate_minus_squeeze_per_channel"] = _estimate(difference(
            row["gate_per_channel"], row["squeeze_per_channel"], paired=True))
        blocks.append(row)
    specificity = {"test_images": n, "chance": chance_share(n), "blocks": blocks,
                   "permuted_last_block": [{"seed": s, **by[True, s]["permuted_last_block"]} for s in seeds]}
    return {"se_vs_no_se": se_vs_no, "frozen_gates": frozen, "class_specificity": specificity}


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    out_dir = Path(out_dir)
    done = runner.run_parts("se_ablation", [_part(se, seed, cfg, out_dir) for seed in cfg["seeds"]
                                            for se in (True, False)], out_dir)
    workers = runner.default_workers()
    summary = summarise(done, cfg["seeds"])
    runner.remove_parts("se_ablation", out_dir)
    runs = []
    for r in sorted(done, key=lambda r: (not r["se"], r["seed"])):  # SE seeds, then no-SE seeds
        r = {k: v for k, v in r.items() if k != "test_correct"}      # per-image results: summarised above
        if "frozen" in r:
            r["frozen"] = {k: v for k, v in r["frozen"].items() if k != "test_correct"}
        runs.append(r)
    d = summary["se_vs_no_se"]["difference"]
    print(f"SE minus no SE, test accuracy: {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] over "
          f"{len(cfg['seeds'])} seeds", flush=True)
    return {"config": cfg.plain(), "workers": workers, "threads_per_worker": 1,
            "stages": [dataclasses.asdict(s) for s in TINY_STAGES], "runs": runs, **summary,
            "artifacts": [CHECKPOINT]}
