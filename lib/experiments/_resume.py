"""Training that survives being killed: ``fit_resumable`` saves its state after every epoch and, run again
with the same ``state_path``, continues where it stopped, with the same result as an uninterrupted run.

It is ``lib.train.fit`` called one epoch at a time, with the optimizer and the per-step schedule (warm-up, then cosine)
kept outside (the schedule advances after every optimizer step, exactly as ``fit(schedule="cosine", warmup_steps=...)``
does over the whole run), and with the random-number state (torch's, and the training loader's
shuffling generator) saved beside the weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from lib.train import History, fit, make_optimizer, make_scheduler


def fit_resumable(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None, *, epochs: int,
                  lr: float, optimizer: str, weight_decay: float, state_path: Path, warmup_steps: int = 0,
                  loss_fn: nn.Module | None = None) -> History:
    """``fit(model, ..., epochs=epochs, schedule="cosine", warmup_steps=...)``, resumable from ``state_path``
    (deleted by the caller)."""
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    sched = make_scheduler(opt, epochs * len(train_loader), schedule="cosine", warmup_steps=warmup_steps)
    opt.register_step_post_hook(lambda *args: sched.step())
    history, resumes = History(), 0
    state_path = Path(state_path)
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history.epochs, resumes = state["epochs"], state["resumes"] + 1
        if hasattr(loss_fn, "batch_errors"):  # a recording loss (degradation's) keeps its curve across resumes
            loss_fn.batch_errors[:] = state.get("batch_errors") or []
        torch.set_rng_state(state["torch_rng"])
        if train_loader.generator is not None:
            train_loader.generator.set_state(state["loader_rng"])
    for epoch in range(len(history.epochs) + 1, epochs + 1):
        h = fit(model, train_loader, val_loader, epochs=1, optimizer=opt, schedule=None, progress=False,
                loss_fn=loss_fn)
        history.epochs.append(h.epochs[0] | {"epoch": epoch, "resumes": resumes})
        state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_suffix(".part")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "epochs": history.epochs, "resumes": resumes, "torch_rng": torch.get_rng_state(),
                    "loader_rng": train_loader.generator.get_state() if train_loader.generator is not None else None,
                    "batch_errors": list(getattr(loss_fn, "batch_errors", []))},
                   tmp)
        tmp.replace(state_path)
    return history
