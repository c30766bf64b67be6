"""Input checks shared by ``lib``: one place that turns a wrong shape into a message naming the fix.

Every public function that takes a tensor calls one of these first, so a student who passes a
(28, 28) image where a (N, 1, 28, 28) batch is expected reads what was expected, what was given and
what to do, instead of a stack trace from deep inside ``torch``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def shape_str(x: torch.Tensor | Sequence[int]) -> str:
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(x)
    return "(" + ", ".join(str(s) for s in shape) + ")"


def expect_tensor(x, name: str = "input") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                        f"convert it with torch.as_tensor(...)")
    return x


def expect_rank(x: torch.Tensor, rank: int, name: str, layout: str) -> torch.Tensor:
    """Raise unless ``x`` has ``rank`` dimensions; ``layout`` names them, e.g. ``"(N, C, H, W)"``."""
    expect_tensor(x, name)
    if x.dim() != rank:
        hint = ""
        if x.dim() == rank - 1:
            hint = " For a single example add the batch dimension: x.unsqueeze(0)."
        elif rank == 4 and x.dim() == 2:
            hint = " For one grey image use x[None, None]."
        raise ValueError(f"{name} must be {rank}-D {layout}, got {x.dim()}-D with shape {shape_str(x)}.{hint}")
    return x


def check_image_batch(x: torch.Tensor, *, model: str, in_channels: int, min_size: int = 1) -> None:
    """The check every ``lib`` model runs at the top of ``forward``.

    ``min_size`` is the smallest height/width the network's downsampling can take (e.g. 32 for a
    network that halves the image five times).
    """
    expect_tensor(x, f"{model} input")
    if x.dim() != 4:
        extra = " For a single image add the batch dimension: x.unsqueeze(0)." if x.dim() == 3 else ""
        raise ValueError(f"{model} expects a batch of images (N, {in_channels}, H, W), "
                         f"got shape {shape_str(x)}.{extra}")
    if x.shape[1] != in_channels:
        fix = (f"build the model with in_channels={x.shape[1]}"
               if x.shape[1] in (1, 3) else "check the channel dimension (PyTorch is channels-first)")
        raise ValueError(f"{model} expects {in_channels} input channels, got {x.shape[1]} "
                         f"(input shape {shape_str(x)}): {fix}.")
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f"{model} needs images of at least {min_size}x{min_size} because of its downsampling, "
                         f"got {h}x{w} (input shape {shape_str(x)}): resize the input "
                         f"or use the model's small-input form.")
