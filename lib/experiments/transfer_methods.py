"""Transfer methods compared fairly: six ways to learn five new classes from 100 labels each, tuned on a validation split, 3 seeds.

The transfer chapter's target task: Fashion-MNIST's Sandal, Shirt, Sneaker, Bag and Ankle boot
(``lib.transfer.TARGET_CLASSES``), 100 labelled training images per class, starting from the course's
ResNet-20 pretrained on the other five classes (``pretrain_backbone``; its checkpoint's sha256 is checked).
Methods (``METHODS``):

* **from scratch**: the same ResNet-20, randomly initialised, every layer trained;
* **feature extraction**: the pretrained backbone frozen (BatchNorm in eval mode with the source task's
  statistics), a linear head trained on its pooled 64 features, standardised with the training images'
  mean and standard deviation;
* **fine-tuning**: the pretrained backbone and a new head, everything trained at one learning rate;
* **discriminative LRs**: the same, the head at the learning rate ``lr`` and each earlier stage ``DECAY``
  times slower (Howard & Ruder 2018);
* **gradual unfreezing**: the head alone first, then one more stage per phase (five phases of equal
  length), discriminative rates, with *one* Adam and *one* cosine schedule over all phases
  (``lib.transfer.fit_gradual_unfreezing``'s default; the chapter's earlier version restarted both at
  every phase);
* **random-backbone probe**: a linear head on the standardised features of the *randomly initialised*
  ResNet-20 (the very weights "from scratch" starts from), after its BatchNorm statistics are recalibrated
  on the training images (one pass in training mode, no gradients): what the architecture alone gives.

Besides these, every linear probe of ``PROBE_VARIANTS`` (pretrained or random backbone x stored or
recalibrated BatchNorm statistics x raw or standardised features) is trained the same way; they are cheap.

Fairness. A **validation split of the target task**: 100 images per class from the course's validation
split (held out of the 60,000 training images; never the test set, and disjoint from every training
draw). **Equal tuning effort**: every method gets the same grid of four Adam learning rates (``LRS``,
weight decay 0, cosine schedule), trained on draw ``TUNE_SEED``; the rate with the best validation
accuracy at the end of training is chosen, and a method whose best rate sits at an edge of the grid gets the
next rate past it, up to ``max_extensions`` times (``lib.tuning.tune_all``; the record marks a choice still at
an edge). **Equal
budget**: every method takes the same number of optimizer steps (``EPOCHS`` epochs of 16 batches of
32: equal steps rather than training each to
convergence, because convergence needs a stopping rule tuned per method, and equal steps is the budget
a reader can reproduce; the final runs record the validation accuracy after every epoch, so the chapter
shows whether each method had levelled off). Gradual unfreezing's early phases and the probes cost less
per step; ``train_seconds`` records it. **3 seeds** at each method's chosen rate: seed ``s`` draws the
100 images per class, the batch order and the initial weights of the new head (or of the whole network),
the same for every method, so methods can be compared pairwise per seed. The seeds are not the tuning
seed, and the **test set** (all 5,000 target test images) is used once per final run, at the end.
Each final run of a method that changes the pretrained backbone also records its accuracy on the
*source* classes' test images with the source head put back: how much of the old task it forgot.

Cost: 16 tuning network runs and 12 final ones (gradual unfreezing's cheaper per step), 48 probe runs and
their feature extraction, and the runs of each extended grid: a half to three quarters of an hour on one
core, depending on the machine's load (the record's provenance has the wall time, ``train_seconds_total`` the training time). Every run
is kept under ``<out_dir>/transfer_methods.parts/`` as soon as it finishes: an interrupted run
continues with the runs still missing (the folder is removed at the end). One torch thread.
``--quick`` uses 16 images per class, 8 validation and 40 test images per class, 5 epochs and 2 seeds.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lib import data, train, transfer
from lib.experiments import _runner as runner
from lib.experiments._runner import Config, Part, config_key
from lib.models import build
from lib.records import code_state, load
from lib.tuning import tune_all

MODEL, MODEL_KWARGS = "resnet20", {"in_channels": 1, "num_classes": len(transfer.TARGET_CLASSES)}
LRS = (3e-4, 1e-3, 3e-3, 1e-2)  # half-decades around Adam's usual 1e-3
DECAY, EPOCHS, BATCH_SIZE, TUNE_SEED, SEEDS = 0.3, 35, 32, 0, (1, 2, 3)  # 35 epochs: 560 steps, 5 phases of 7


@dataclass(frozen=True)
class MethodsRun(Config):
    labels_per_class: int = 100            # the labelled training images of each target class (a draw per seed)
    val_per_class: int | None = 100        # the target task's validation split
    test_per_class: int | None = None      # None: all 1,000 test images of each target class
    batch_size: int = BATCH_SIZE
    epochs: int = EPOCHS                   # equal optimizer steps for every method
    lrs: tuple[float, ...] = LRS           # the first grid every method is tuned on
    max_extensions: int = 4                # times a method's grid is extended past an edge its best sits on
    decay: float = DECAY                   # discriminative rates: each earlier stage this much slower
    tune_seed: int = TUNE_SEED
    seeds: tuple[int, ...] = SEEDS
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "cosine"
    data_seed: int = 0


FULL = MethodsRun()
QUICK = replace(FULL, labels_per_class=16, val_per_class=8, test_per_class=40, epochs=5, seeds=(1, 2), max_extensions=1)

NETWORKS = ("from scratch", "fine-tuning", "discriminative LRs", "gradual unfreezing")
PROBE_VARIANTS = {f"probe: {b} backbone, {bn} BN, {f} features": (b, bn, f)
                  for b in ("pretrained", "random") for bn in ("stored", "recalibrated") for f in ("raw", "standardised")}
PROBES = {"feature extraction": "probe: pretrained backbone, stored BN, standardised features",
          "random-backbone probe": "probe: random backbone, recalibrated BN, standardised features"}
METHODS = ("from scratch", "feature extraction", "fine-tuning", "discriminative LRs", "gradual unfreezing",
           "random-backbone probe")


# ---------------------------------------------------------------------------------------------
# The target task
# ---------------------------------------------------------------------------------------------
def target_sets(cfg: dict, splits: data.Splits) -> dict[str, Dataset]:
    """The fixed validation and test sets of the target classes (the training draws depend on the seed)."""
    return {"val": transfer.class_task(splits.val, transfer.TARGET_CLASSES, per_class=cfg["val_per_class"],
                                       seed=cfg["data_seed"]),
            "test": transfer.class_task(splits.test, transfer.TARGET_CLASSES, per_class=cfg["test_per_class"],
                                        seed=cfg["data_seed"]),
            "source_test": transfer.class_task(splits.test, transfer.SOURCE_CLASSES, per_class=cfg["test_per_class"],
                                               seed=cfg["data_seed"])}


def training_draw(cfg: dict, splits: data.Splits, seed: int) -> Dataset:
    """Seed ``seed``'s labelled images: ``labels_per_class`` of each target class from the training split."""
    return transfer.class_task(splits.train, transfer.TARGET_CLASSES, per_class=cfg["labels_per_class"], seed=seed)


def batches(dataset: Dataset, cfg: dict, seed: int) -> DataLoader:
    """The training batches of seed ``seed``: the same order for every method (images or their features)."""
    return DataLoader(dataset, batch_size=cfg["batch_size"], shuffle=True, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# The methods
# ---------------------------------------------------------------------------------------------
def new_network(method: str, backbone: nn.Module, seed: int) -> nn.Module:
    """The network a method starts from: random weights (seeded) for "from scratch", else a copy of the
    pretrained backbone with a new, seeded 5-class head."""
    train.seed_everything(seed)
    if method == "from scratch":
        return build(MODEL, **MODEL_KWARGS)
    model = copy.deepcopy(backbone)
    transfer.replace_head(model, num_classes=MODEL_KWARGS["num_classes"])
    return model


def train_network(method: str, model: nn.Module, loader: DataLoader, val_loader: DataLoader | None, *,
                  lr: float, cfg: dict) -> train.History:
    """One network method for ``cfg["epochs"]`` epochs: Adam, cosine schedule, the same steps for all."""
    epochs, wd = cfg["epochs"], cfg["weight_decay"]
    if method in ("from scratch", "fine-tuning"):
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    elif method == "discriminative LRs":
        opt = torch.optim.Adam(transfer.param_groups(model, lr, decay=cfg["decay"]), weight_decay=wd)
    elif method == "gradual unfreezing":
        phases = len(transfer.stage_names(model))  # stem, layer1-3, head: five phases of equal length
        if epochs % phases:
            raise ValueError(f"gradual unfreezing splits {epochs} epochs into {phases} equal phases: use a multiple")
        return transfer.fit_gradual_unfreezing(model, loader, val_loader, epochs_per_phase=epochs // phases, lr=lr,
                                               decay=cfg["decay"], weight_decay=wd, progress=False)
    else:
        raise KeyError(f"no network method {method!r}; there are {NETWORKS}")
    return train.fit(model, loader, val_loader, epochs=epochs, optimizer=opt, schedule="cosine", progress=False)


def probe_backbone(backbone_kind: str, bn: str, backbone: nn.Module, train_set: Dataset, seed: int) -> nn.Module:
    """The frozen network a probe reads: the pretrained backbone, or the random initialisation of seed
    ``seed`` (the one "from scratch" starts from), with its BatchNorm statistics as stored or
    recalibrated on the training images."""
    model = new_network("from scratch", backbone, seed) if backbone_kind == "random" else copy.deepcopy(backbone)
    if bn == "recalibrated":
        transfer.recalibrate_batchnorm(model, DataLoader(train_set, batch_size=len(train_set)))
    return transfer.freeze(model)


def features_of(model: nn.Module, sets: dict[str, Dataset]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{name: (features (N, 64), labels (N,))}`` of each set, in eval mode."""
    return {name: transfer.extract_features(model, DataLoader(ds, batch_size=500)) for name, ds in sets.items()}


def train_probe(feats: dict[str, tuple[torch.Tensor, torch.Tensor]], features: str, *, lr: float, seed: int,
                cfg: dict, with_val_curve: bool) -> tuple[nn.Linear, dict[str, DataLoader], train.History]:
    """A linear head on ``feats["train"]`` (standardised with the training features' statistics, or raw),
    trained like the networks: same batches, steps, optimizer and schedule."""
    f_train, y_train = feats["train"]
    mean, std = f_train.mean(0), f_train.std(0)

    def prepare(f: torch.Tensor) -> torch.Tensor:
        return transfer.standardize(f, mean, std)[0] if features == "standardised" else f

    loaders = {name: DataLoader(TensorDataset(prepare(f), y), batch_size=500) for name, (f, y) in feats.items()
               if name != "train"}
    train.seed_everything(seed)
    head = nn.Linear(f_train.shape[1], MODEL_KWARGS["num_classes"])  # as transfer.replace_head makes it
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=cfg["weight_decay"])
    h = train.fit(head, batches(TensorDataset(prepare(f_train), y_train), cfg, seed),
                  loaders["val"] if with_val_curve else None, epochs=cfg["epochs"], optimizer=opt,
                  schedule="cosine", progress=False)
    return head, loaders, h


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def test_accuracy(model: nn.Module, loader: DataLoader) -> dict:
    """Accuracy, the number correct, and the accuracy of each target class, in eval mode."""
    model.eval()
    preds, labels = [], []
    for x, y in loader:
        preds.append(model(x).argmax(1))
        labels.append(y)
    pred, y = torch.cat(preds), torch.cat(labels)
    names = [data.CLASSES[c] for c in transfer.TARGET_CLASSES]
    return {"test_acc": (pred == y).float().mean().item(), "test_correct": int((pred == y).sum()),
            "test_images": len(y),
            "per_class_test_acc": {n: (pred[y == k] == k).float().mean().item() for k, n in enumerate(names)}}


def _epochs(history: train.History) -> list[dict]:
    keep = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "phase", "unfrozen", "head_lr")
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in e.items() if k in keep} for e in history.epochs]


# ---------------------------------------------------------------------------------------------
# The run: tuning on seed TUNE_SEED, then the chosen rates on SEEDS; every run kept as a part
# ---------------------------------------------------------------------------------------------
def _slug(method: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in method).strip("-")


class Parts:
    """Finished runs, kept by ``lib.experiments._runner`` one JSON file each, named by stage, method, learning
    rate, seed and the configuration's hash."""

    def __init__(self, folder: Path, cfg: dict, commit: str):
        self.folder, self.config_key, self.commit = folder, config_key(cfg), commit
        folder.mkdir(parents=True, exist_ok=True)

    def key(self, stage: str, method: str, lr: float, seed: int) -> str:
        return f"{stage}-{_slug(method)}-lr{lr:g}-seed{seed}-{self.config_key}"

    def path(self, stage: str, method: str, lr: float, seed: int) -> Path:
        return self.folder / f"{self.key(stage, method, lr, seed)}.json"

    def get(self, stage: str, method: str, lr: float, seed: int) -> dict | None:
        return runner.finished(self.folder, self.key(stage, method, lr, seed))

    def put(self, stage: str, method: str, lr: float, seed: int, result: dict) -> dict:
        result = {"stage": stage, "method": method, "lr": lr, "seed": seed, **result, "trained_at_commit": self.commit}
        return runner.keep(self.folder, self.key(stage, method, lr, seed), result)


def _network_part(stage: str, method: str, lr: float, seed: int, common: dict) -> dict:
    return {"stage": stage, "method": method, "lr": lr, "seed": seed,
            **_network_run(method, lr, seed, final=stage == "final", **common)}


def _networks(stage: str, todo: list[tuple[str, float, int]], parts: Parts, common: dict) -> list[dict]:
    """The network runs ``todo`` (method, lr, seed), one after another in this process (they share the data
    and the backbone), as parts of ``lib.experiments._runner``."""
    return runner.run_parts("transfer_methods", [
        Part(parts.key(stage, m, lr, seed), _network_part, (stage, m, lr, seed, common), resumable=False,
             threads=None, label=f"{stage} {m} lr {lr:g} seed {seed}") for m, lr, seed in todo],
        parts.folder.parent, workers=1)


def _network_run(method: str, lr: float, seed: int, *, final: bool, cfg: dict, splits: data.Splits,
                 sets: dict[str, Dataset], backbone: nn.Module) -> dict:
    train_set = training_draw(cfg, splits, seed)
    val_loader = DataLoader(sets["val"], batch_size=500)
    model = new_network(method, backbone, seed)
    loader = batches(train_set, cfg, seed)
    try:
        h = train_network(method, model, loader, val_loader if final else None, lr=lr, cfg=cfg)
    except FloatingPointError as e:
        if final:
            raise
        return {"diverged": str(e), "val_acc": None}
    val = train.evaluate(model, val_loader)
    result = {"val_acc": val["acc"], "val_loss": val["loss"], "train_loss": h.last("train_loss"),
              "train_acc": h.last("train_acc"), "train_seconds": round(h.seconds, 2),
              "steps": len(loader) * cfg["epochs"], "steps_per_epoch": len(loader),
              "trainable_params_final": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if final:
        result |= {"epochs": _epochs(h), **test_accuracy(model, DataLoader(sets["test"], batch_size=500))}
        if method != "from scratch":
            result["source_test_acc_after"] = source_accuracy_after(model, backbone, sets["source_test"])
    return result


def source_accuracy_after(model: nn.Module, backbone: nn.Module, source_test: Dataset) -> float:
    """Catastrophic forgetting, measured: the fine-tuned network with the source task's own head put back,
    on the source classes' test images (the pretrained backbone's own is ``results["backbone"]["source_test_acc"]``)."""
    old = copy.deepcopy(model)
    transfer.replace_head(old, num_classes=len(transfer.SOURCE_CLASSES))
    transfer.head(old).load_state_dict(transfer.head(backbone).state_dict())
    return train.evaluate(old, DataLoader(source_test, batch_size=500))["acc"]


def _probe_runs(todo: list[tuple[str, float]], seed: int, *, final: bool, cfg: dict, splits: data.Splits,
                sets: dict[str, Dataset], backbone: nn.Module, parts: Parts) -> list[dict]:
    """The probe runs ``todo`` (variant, lr) of one seed; each backbone's features are extracted once."""
    stage, out = ("final" if final else "tune"), []
    train_set = training_draw(cfg, splits, seed)
    wanted = {"train": train_set, "val": sets["val"], **({"test": sets["test"]} if final else {})}
    cache: dict[tuple[str, str], dict] = {}
    for variant, lr in todo:
        done = parts.get(stage, variant, lr, seed)
        if done is None:
            kind, bn, features = PROBE_VARIANTS[variant]
            if (kind, bn) not in cache:
                start = time.perf_counter()
                feats = features_of(probe_backbone(kind, bn, backbone, train_set, seed), wanted)
                cache[(kind, bn)] = {"feats": feats, "seconds": time.perf_counter() - start}
            feats = cache[(kind, bn)]["feats"]
            try:
                head, loaders, h = train_probe(feats, features, lr=lr, seed=seed, cfg=cfg, with_val_curve=final)
            except FloatingPointError as e:
                if final:
                    raise
                done = parts.put(stage, variant, lr, seed, {"diverged": str(e), "val_acc": None})
                out.append(done)
                continue
            val = train.evaluate(head, loaders["val"])
            f_train = feats["train"][0]
            result = {"val_acc": val["acc"], "val_loss": val["loss"], "train_loss": h.last("train_loss"),
                      "train_acc": h.last("train_acc"),
                      "train_seconds": round(h.seconds + cache[(kind, bn)]["seconds"], 2),
                      "extract_seconds": round(cache[(kind, bn)]["seconds"], 2),
                      "steps": math.ceil(len(f_train) / cfg["batch_size"]) * cfg["epochs"],
                      "trainable_params_final": sum(p.numel() for p in head.parameters()),
                      # the scale the head meets: the mean over features of their standard deviation
                      "raw_feature_sd": round(f_train.std(0).mean().item(), 6),
                      "raw_feature_mean_abs": round(f_train.abs().mean().item(), 6)}
            if final:
                result |= {"epochs": _epochs(h), **test_accuracy(head, loaders["test"])}
            done = parts.put(stage, variant, lr, seed, result)
            print(f"  {variant} lr {lr:g} seed {seed}: val {result['val_acc']:.3f}"
                  + (f", test {result['test_acc']:.3f}" if final else ""), flush=True)
        out.append(done)
    return out


def run(*, quick: bool, out_dir: Path) -> dict:
    cfg = QUICK if quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(cfg, Parts(Path(out_dir) / "transfer_methods.parts", cfg, code_state()["commit"]), load)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: dict, parts: Parts, load) -> dict:
    splits = data.fashion_mnist(seed=cfg["data_seed"])
    sets = target_sets(cfg, splits)
    record = load("pretrain_backbone")
    backbone, meta = transfer.load_pretrained_backbone(record=record)  # sha256 checked against the record
    common = dict(cfg=cfg, splits=splits, sets=sets, backbone=backbone)
    lrs, s0 = cfg["lrs"], cfg["tune_seed"]

    print(f"tuning on seed {s0}: {len(lrs)} learning rates per method, then more past an edge", flush=True)
    tuning: list[dict] = []

    def tune_round(pairs: list[tuple[str, float]]) -> dict[tuple[str, float], float | None]:
        rows = _probe_runs([(m, lr) for m, lr in pairs if m in PROBE_VARIANTS], s0, final=False, parts=parts, **common)
        rows += _networks("tune", [(m, lr, s0) for m, lr in pairs if m in NETWORKS], parts, common)
        tuning.extend(rows)
        return {(r["method"], r["lr"]): r.get("val_acc") for r in rows}

    choices = tune_all(tune_round, [*NETWORKS, *PROBE_VARIANTS], lrs, max_extensions=cfg["max_extensions"])
    chosen = {m: c.as_record() for m, c in choices.items()}

    print(f"final runs on seeds {cfg['seeds']} at the chosen rates", flush=True)
    runs = []
    for seed in cfg["seeds"]:
        runs += _probe_runs([(v, chosen[v]["lr"]) for v in PROBE_VARIANTS], seed, final=True, parts=parts, **common)
        runs += _networks("final", [(m, chosen[m]["lr"], seed) for m in NETWORKS], parts, common)
    runner.remove_parts("transfer_methods", parts.folder.parent)

    names = {m: PROBES.get(m, m) for m in METHODS}  # the two headline probes are variants by another name
    net_steps = [r["train_seconds"] / r["steps"] for r in runs if r["method"] == "fine-tuning"]
    return {
        "config": dict(cfg),  # tuples are written as lists
        "target": {"classes": list(transfer.TARGET_CLASSES),
                   "class_names": [data.CLASSES[c] for c in transfer.TARGET_CLASSES],
                   "train_images": len(training_draw(cfg, splits, s0)), "val_images": len(sets["val"]),
                   "test_images": len(sets["test"]),
                   "val_source": "the course's validation split (held out of the 60,000 training images)",
                   "steps_per_epoch": runs[0]["steps"] // cfg["epochs"], "steps": runs[0]["steps"]},
        "backbone": {"record": "pretrain_backbone", "checkpoint": record["results"]["checkpoint"],
                     "checkpoint_sha256": record["results"]["checkpoint_sha256"], "model": meta["model"],
                     "source_class_names": meta["source_class_names"],
                     "source_test_acc": train.evaluate(backbone, DataLoader(sets["source_test"], batch_size=500))["acc"],
                     "source_test_images": len(sets["source_test"])},
        "methods": names, "probe_variants": {v: dict(zip(("backbone", "bn", "features"), k))
                                             for v, k in PROBE_VARIANTS.items()},
        "tuning": tuning, "chosen": chosen, "runs": runs,
        "fine_tuning_seconds_per_step": sum(net_steps) / len(net_steps),
        "train_seconds_total": round(sum(r.get("train_seconds", 0) for r in tuning + runs), 1), "threads": 1,
    }
