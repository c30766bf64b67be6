"""The training loop every chapter shares: ``fit``, ``evaluate``, seeding, devices and checkpoints.

    history = fit(model, train_loader, val_loader, epochs=3, lr=1e-3)
    history.frame()          # one row per epoch: losses, accuracies, seconds, images/s
    evaluate(model, test_loader)

A run that must survive being killed keeps a :class:`TrainState` (model, optimizer, scheduler, random-number
state, history) and saves it after every piece of training; run again, it loads the state and goes on with
the same result as an uninterrupted run::

    state = TrainState(model, opt, sched, generator=train_loader.generator)
    state.load(path)                                       # a no-op on the first run
    for epoch in range(len(state.history.epochs), epochs):
        state.history.epochs += fit(model, train_loader, optimizer=opt, scheduler=sched).epochs
        state.save(path)
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so that a run repeats (on the same machine and library versions)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def get_device(prefer: str = "auto") -> torch.device:
    """``"auto"``: CUDA if present, then Apple's MPS, else the CPU."""
    if prefer != "auto":
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _progress(iterable, *, total: int, desc: str, enabled: bool | None):
    """tqdm's notebook bar in Jupyter, a text bar in a terminal. ``enabled=None`` means on, unless
    ``CNN_COURSE_PROGRESS=0`` (the book build sets it: a static page has no use for a moving bar)."""
    if enabled is None:
        enabled = os.environ.get("CNN_COURSE_PROGRESS", "1") != "0"
    if not enabled:
        return iterable
    if os.environ.get("CNN_COURSE_PLAIN_PROGRESS"):
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, leave=False, mininterval=5, ascii=True)
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


@dataclass
class History:
    """Per-epoch record of a ``fit`` run."""
    epochs: list[dict[str, float]] = field(default_factory=list)

    def frame(self):
        import pandas as pd
        return pd.DataFrame(self.epochs).set_index("epoch")

    @property
    def seconds(self) -> float:
        return sum(e["seconds"] for e in self.epochs)

    @property
    def images_per_second(self) -> float:
        images = sum(e["train_images"] for e in self.epochs)
        return images / max(self.seconds, 1e-9)

    def last(self, key: str) -> float:
        return self.epochs[-1][key]

    def report(self) -> str:
        e = self.epochs[-1]
        val = f", val acc {e['val_acc']:.3f}" if "val_acc" in e else ""
        return (f"{len(self.epochs)} epochs in {self.seconds:.1f} s ({self.images_per_second:,.0f} images/s): "
                f"train acc {e['train_acc']:.3f}{val}")


def _batches(loader: DataLoader, max_batches: int | None):
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            return
        yield batch


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, device: torch.device | str | None = None,
             loss_fn: nn.Module | None = None, max_batches: int | None = None) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``loader`` in eval mode (the mode is restored after)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in _batches(loader, max_batches):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total_loss += loss_fn(logits, y).item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate got an empty loader: check the dataset and the subset size")
    return {"loss": total_loss / seen, "acc": correct / seen}


def make_optimizer(model: nn.Module | list, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = model.parameters() if isinstance(model, nn.Module) else model  # a module, or parameter groups
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":  # Nesterov momentum
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    if name == "momentum":  # He et al. 2015's optimiser: SGD with (heavy-ball) momentum 0.9
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: use 'adam', 'adamw', 'sgd' (Nesterov), 'momentum' or pass a "
                     f"torch.optim.Optimizer")


def lr_factor(step: int, total: int, *, schedule: str | None = "cosine", warmup_steps: int = 0,
              warmup_factor: float = 0.1, warmup: str = "linear") -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total``, as a fraction of the base rate.

    During the first ``warmup_steps`` steps the rate rises linearly from ``warmup_factor`` to 1 (Goyal et al.
    2017's gradual warm-up), or with ``warmup="constant"`` stays at ``warmup_factor`` (He et al. 2015,
    section 4.2: ResNet-110 "warms up" at 0.01 for about 400 iterations before its 0.1); then ``"cosine"``
    anneals the rate from 1 to 0 over the remaining steps, and ``None`` keeps it constant.
    """
    if schedule not in (None, "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}: use None or 'cosine'")
    if warmup not in ("linear", "constant"):
        raise ValueError(f"unknown warm-up {warmup!r}: use 'linear' or 'constant'")
    if step < warmup_steps:
        if warmup == "constant":
            return warmup_factor
        return warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
    if schedule is None:
        return 1.0
    main = max(total - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, main) / main))


def make_scheduler(opt: torch.optim.Optimizer, total_steps: int, *, schedule: str | None = "cosine",
                   warmup_steps: int = 0, warmup_factor: float = 0.1,
                   warmup: str = "linear") -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-step scheduler following :func:`lr_factor` (``None`` when there is nothing to schedule)."""
    lr_factor(0, total_steps, schedule=schedule)  # rejects an unknown schedule now
    if schedule is None and not warmup_steps:
        return None
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} leaves none of the {total_steps} steps for training at "
                         f"the full rate: use fewer warm-up steps or more epochs")
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(
        step, total_steps, schedule=schedule, warmup_steps=warmup_steps, warmup_factor=warmup_factor, warmup=warmup))


def _train_epoch(model: nn.Module, batches, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler | None, loss_fn: nn.Module, device: torch.device, *,
                 epoch: int, lr: float) -> dict[str, float]:
    """One pass over ``batches`` in train mode, the scheduler stepped after every optimizer step: the epoch's row."""
    model.train()
    start = time.perf_counter()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = loss_fn(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss.item()} in epoch {epoch}: lower the "
                                     f"learning rate (lr={lr}) or check the inputs for NaN/inf")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
    seconds = time.perf_counter() - start
    if seen == 0:
        raise ValueError("fit got an empty training loader: check the dataset and the subset size")
    return {"epoch": epoch, "train_loss": total_loss / seen, "train_acc": correct / seen,
            "seconds": seconds, "train_images": seen, "images_per_s": seen / seconds}


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None = None, *, epochs: int = 1,
        lr: float = 1e-3, optimizer: str | torch.optim.Optimizer = "adam", weight_decay: float = 0.0,
        schedule: str | None = None, warmup_steps: int = 0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, device: torch.device | str | None = None,
        progress: bool | None = None, max_batches: int | None = None, loss_fn: nn.Module | None = None) -> History:
    """Train ``model`` for ``epochs`` and return its :class:`History`.

    ``optimizer`` is a name ('adam', 'adamw', 'sgd') or a ready optimizer (e.g. with per-stage parameter
    groups); ``schedule='cosine'`` anneals the learning rate to zero over all steps, after ``warmup_steps``
    steps that rise linearly from a tenth of ``lr`` (see :func:`lr_factor`). A ready ``scheduler`` (one that
    spans more than this call, e.g. of a resumed run) is stepped after every optimizer step instead.
    ``max_batches`` caps the batches per epoch (for quick checks). Validation runs after every epoch when a
    loader is given. ``progress``: a tqdm bar per epoch (default: on, unless ``CNN_COURSE_PROGRESS=0``).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if scheduler is not None and (schedule is not None or warmup_steps):
        raise ValueError("pass either a ready scheduler or schedule/warmup_steps, not both")
    device = get_device() if device is None else torch.device(device)
    model.to(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else make_optimizer(model, optimizer, lr, weight_decay)
    steps_per_epoch = len(train_loader) if max_batches is None else min(max_batches, len(train_loader))
    sched = scheduler if scheduler is not None else make_scheduler(opt, epochs * steps_per_epoch, schedule=schedule,
                                                                  warmup_steps=warmup_steps)
    history = History()
    for epoch in range(1, epochs + 1):
        bar = _progress(_batches(train_loader, max_batches), total=steps_per_epoch,
                        desc=f"epoch {epoch}/{epochs}", enabled=progress)
        row = _train_epoch(model, bar, opt, sched, loss_fn, device, epoch=epoch, lr=lr)
        if val_loader is not None:
            val = evaluate(model, val_loader, device=device, loss_fn=loss_fn)
            row |= {"val_loss": val["loss"], "val_acc": val["acc"]}
        history.epochs.append(row)
    return history


@dataclass
class TrainState:
    """Everything a training run needs to continue after a kill: the model, the optimizer, the scheduler,
    torch's random-number state and the training loader's shuffling ``generator``, the history so far, how
    often it was resumed, and any ``extra`` plain data the caller keeps with it (e.g. a per-batch curve)."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    generator: torch.Generator | None = None
    history: History = field(default_factory=History)
    resumes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write the state to ``path`` atomically (a kill mid-write leaves the previous state)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                    "torch_rng": torch.get_rng_state(),
                    "loader_rng": self.generator.get_state() if self.generator is not None else None,
                    "epochs": self.history.epochs, "resumes": self.resumes, "extra": self.extra}, tmp)
        tmp.replace(path)
        return path

    def load(self, path: str | Path) -> bool:
        """Restore the state saved at ``path``, if there is one (then ``resumes`` counts this resume)."""
        path = Path(path)
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if self.generator is not None:
            self.generator.set_state(state["loader_rng"])
        self.history = History(state["epochs"])
        self.resumes, self.extra = state["resumes"] + 1, state["extra"]
        return True


def save_checkpoint(path: str | Path, model: nn.Module, *, meta: dict[str, Any] | None = None,
                    history: History | None = None) -> Path:
    """Save the weights with a JSON-able ``meta`` (architecture name, arguments, provenance) beside them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": model.state_dict(), "meta": dict(meta or {}),
               "history": asdict(history) if history is not None else None}
    json.dumps(payload["meta"])  # fail now, not at load time, if meta is not plain data
    tmp = path.with_suffix(path.suffix + ".part")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, model: nn.Module | None = None, *, strict: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (into ``model`` if given); return its payload."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train one first (see the chapter's experiment command)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"{path} is not a checkpoint written by lib.train.save_checkpoint")
    if model is not None:
        model.load_state_dict(payload["state_dict"], strict=strict)
    return payload
