"""Counting a model's parameters and multiply-accumulates (the first two columns of every comparison).

MACs come from PyTorch's own ``FlopCounterMode`` (2 FLOPs per multiply-accumulate of convolutions, matrix
products and attention), not from rules written here; torchvision's ``_ops`` metadata is the same quantity in
GMACs. Both work on models built under ``torch.device("meta")``. ``lib.analysis`` builds its tables on these;
they live at the bottom of ``lib`` so that a model family can count its own variants.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

InputSize = Sequence[int]


def _batch_size(input_size: InputSize) -> tuple[int, ...]:
    """``(C, H, W)`` becomes ``(1, C, H, W)``; a full ``(N, C, H, W)`` is kept."""
    size = tuple(int(s) for s in input_size)
    if len(size) == 3:
        return (1, *size)
    if len(size) != 4:
        raise ValueError(f"input_size must be (N, C, H, W) or (C, H, W), got {size}")
    return size


def _example_input(model: nn.Module, input_size: InputSize) -> torch.Tensor:
    p = next(model.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    return torch.zeros(_batch_size(input_size), device=device, dtype=dtype)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no autograd for the duration; the model's train/eval flags are restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: InputSize = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass in eval mode on a batch of ``input_size``, as counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (its FLOPs / 2). Element-wise work (activations,
    normalisation, additions) is not counted, as in torchvision's ``_ops`` and most papers."""
    x = _example_input(model, input_size)
    with _evaluating(model), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2
