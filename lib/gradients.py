"""How the gradient reaches each layer: per-layer gradient norms of a model on a batch.

    norms = layer_gradient_norms(model, images, labels)   # one row per weighted layer, input to output
    norms.plot(x="depth", y="grad_norm", logy=True)

Used by the ResNet chapter to compare plain and residual networks at initialisation: in a plain
network every layer's gradient has to pass through all the layers above it; a residual block adds an
identity path, so ``d(x + F(x))/dx = 1 + dF/dx`` and some gradient always arrives unchanged.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

WEIGHTED = (nn.Conv2d, nn.Linear)


def layer_gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                         loss_fn: nn.Module | None = None, train_mode: bool = True) -> pd.DataFrame:
    """Gradient of the loss on ``(x, y)`` with respect to every convolution and linear weight.

    One row per weighted layer in the order the forward pass runs it (``depth`` 1 is the first):
    ``name``, ``type``, ``params``, ``grad_norm`` (Frobenius norm of the weight's gradient),
    ``grad_rms`` (the same divided by sqrt(params), comparable across layer sizes) and ``weight_norm``.
    ``train_mode=True`` (the default) measures what the first training step sees: BatchNorm uses the
    batch's statistics. The model's parameters' ``.grad`` are left as they were; its mode is restored.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []

    def hook(module, args):
        if module not in order:
            order.append(module)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, WEIGHTED)]
    was_training = model.training
    saved = {p: p.grad for p in model.parameters()}
    try:
        model.train(train_mode)
        weights = [m.weight for m in model.modules() if isinstance(m, WEIGHTED)]
        loss = loss_fn(model(x), y)
        grads = dict(zip(weights, torch.autograd.grad(loss, weights)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        for p, g in saved.items():
            p.grad = g
    rows = []
    for depth, m in enumerate(order, start=1):
        g = grads[m.weight]
        rows.append({"depth": depth, "name": names[m], "type": type(m).__name__, "params": m.weight.numel(),
                     "grad_norm": g.norm().item(), "grad_rms": g.norm().item() / m.weight.numel() ** 0.5,
                     "weight_norm": m.weight.detach().norm().item()})
    return pd.DataFrame(rows)
