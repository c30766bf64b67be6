"""Training that survives being killed: ``fit_resumable`` saves its :class:`lib.train.TrainState` after every
epoch and, run again with the same ``state_path``, continues where it stopped, with the same result as an
uninterrupted run.

It is ``lib.train.fit`` called one epoch at a time with one optimizer and one per-step schedule (warm-up, then
cosine) over the whole run, exactly as ``fit(schedule="cosine", warmup_steps=...)`` does in one call.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader

from lib.train import History, TrainState, fit, make_optimizer, make_scheduler


def fit_resumable(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None, *, epochs: int,
                  lr: float, optimizer: str, weight_decay: float, state_path: Path, warmup_steps: int = 0,
                  loss_fn: nn.Module | None = None) -> History:
    """``fit(model, ..., epochs=epochs, schedule="cosine", warmup_steps=...)``, resumable from ``state_path``
    (deleted by the caller). A recording loss (degradation's ``batch_errors``) keeps its curve across resumes."""
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    sched = make_scheduler(opt, epochs * len(train_loader), schedule="cosine", warmup_steps=warmup_steps)
    state = TrainState(model, opt, sched, generator=train_loader.generator)
    if state.load(state_path) and hasattr(loss_fn, "batch_errors"):
        loss_fn.batch_errors[:] = state.extra.get("batch_errors", [])
    for epoch in range(len(state.history.epochs) + 1, epochs + 1):
        h = fit(model, train_loader, val_loader, epochs=1, optimizer=opt, scheduler=sched, progress=False,
                loss_fn=loss_fn)
        state.history.epochs.append(h.epochs[0] | {"epoch": epoch, "resumes": state.resumes})
        state.extra["batch_errors"] = list(getattr(loss_fn, "batch_errors", []))
        state.save(state_path)
    return state.history
