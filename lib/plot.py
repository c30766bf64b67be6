"""Plots the chapters share. Each function returns the matplotlib Figure it drew, with a title and
labelled axes, so a notebook cell shows it and a script can ``fig.savefig(...)`` it."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from lib.checks import expect_rank, expect_tensor, shape_str
from lib.train import History


def _as_runs(histories: History | Mapping[str, History]) -> dict[str, History]:
    return {"": histories} if isinstance(histories, History) else dict(histories)


def plot_history(histories: History | Mapping[str, History], *, title: str = "Training curves",
                 metrics: Sequence[str] = ("loss", "acc")) -> plt.Figure:
    """Loss and accuracy per epoch, training (dashed) and validation (solid), for one or several runs."""
    runs = _as_runs(histories)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, (label, h) in enumerate(runs.items()):
            color = f"C{i}"
            epochs = [e["epoch"] for e in h.epochs]
            ax.plot(epochs, [e[f"train_{metric}"] for e in h.epochs], "--", color=color, marker=".",
                    label=f"{label} train".strip())
            if all(f"val_{metric}" in e for e in h.epochs):
                ax.plot(epochs, [e[f"val_{metric}"] for e in h.epochs], "-", color=color, marker="o",
                        label=f"{label} validation".strip())
        ax.set_xlabel("epoch")
        ax.set_ylabel({"loss": "cross-entropy loss", "acc": "accuracy (fraction correct)"}.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _to_image(x: torch.Tensor):
    """(C, H, W) or (H, W) tensor -> something imshow takes, with the colormap to use."""
    x = x.detach().cpu().float()
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    if x.dim() == 3:
        return x.permute(1, 2, 0).clamp(0, 1).numpy(), None
    return x.numpy(), "gray"


def show_images(images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None, *,
                predictions: Sequence[int] | torch.Tensor | None = None, class_names: Sequence[str] | None = None,
                ncols: int = 8, title: str = "Images", size: float = 1.6) -> plt.Figure:
    """A grid of images (N, C, H, W) or (N, H, W) with class names; a wrong prediction is titled in red."""
    expect_tensor(images, "images")
    if images.dim() not in (3, 4):
        raise ValueError(f"show_images takes (N, C, H, W) or (N, H, W), got shape {shape_str(images)}")
    n = len(images)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img, cmap = _to_image(images[i])
        ax.imshow(img, cmap=cmap)
        name = (lambda k: class_names[k] if class_names is not None else str(k))
        if labels is not None:
            label = int(labels[i])
            text, color = name(label), "black"
            if predictions is not None:
                pred = int(predictions[i])
                text, color = (f"{name(pred)}", "green") if pred == label else (f"{name(pred)}\n(is {name(label)})", "red")
            ax.set_title(text, fontsize=8, color=color)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_filters(weight: torch.Tensor, *, title: str = "Learned filters", ncols: int = 8,
                 size: float = 1.0) -> plt.Figure:
    """First-layer filters (C_out, C_in, kH, kW) as small images, each scaled to its own range
    (grey: one input channel; colour: three)."""
    expect_rank(expect_tensor(weight, "weight"), 4, "weight", "(C_out, C_in, kH, kW)")
    w = weight.detach().cpu().float()
    lo = w.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = w.flatten(1).amax(1).view(-1, 1, 1, 1)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    if w.shape[1] not in (1, 3):
        w = w.mean(1, keepdim=True)  # filters over many channels: show the channel average
    n = w.shape[0]
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img, cmap = _to_image(w[i])
            ax.imshow(img, cmap=cmap, interpolation="nearest")
    fig.suptitle(f"{title} ({weight.shape[0]} filters of {weight.shape[-2]}x{weight.shape[-1]}, "
                 f"dark = negative weight, light = positive)", fontsize=10)
    fig.tight_layout()
    return fig


def show_feature_maps(maps: torch.Tensor, *, title: str = "Feature maps", ncols: int = 8, max_maps: int = 32,
                      size: float = 1.3) -> plt.Figure:
    """The channels of one activation (C, H, W) (or (1, C, H, W)) as a grid of heat maps."""
    expect_tensor(maps, "maps")
    if maps.dim() == 4 and maps.shape[0] == 1:
        maps = maps[0]
    expect_rank(maps, 3, "maps", "(C, H, W)")
    maps = maps.detach().cpu().float()[:max_maps]
    n = maps.shape[0]
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(maps[i].numpy(), cmap="viridis")
            ax.set_title(f"ch {i}", fontsize=7)
    fig.suptitle(f"{title}: {n} channels of {maps.shape[-2]}x{maps.shape[-1]} (yellow = strong activation)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def show_kernel_responses(image: torch.Tensor, kernels: Mapping[str, torch.Tensor], *,
                          title: str = "Kernel responses", size: float = 2.6) -> plt.Figure:
    """Convolve one grey image (H, W) with each named kernel (k, k) and show the responses beside it."""
    expect_rank(expect_tensor(image, "image"), 2, "image", "(H, W) grey image")
    x = image.detach().float()[None, None]
    fig, axes = plt.subplots(1, len(kernels) + 1, figsize=(size * (len(kernels) + 1), size + 0.5))
    axes[0].imshow(x[0, 0].numpy(), cmap="gray")
    axes[0].set_title(f"input {image.shape[0]}x{image.shape[1]}", fontsize=9)
    for ax, (name, k) in zip(axes[1:], kernels.items()):
        k = k.detach().float()
        expect_rank(k, 2, f"kernel {name!r}", "(kH, kW)")
        out = F.conv2d(x, k[None, None], padding=(k.shape[0] // 2, k.shape[1] // 2))[0, 0]
        ax.imshow(out.numpy(), cmap="gray")
        ax.set_title(f"{name} ({k.shape[0]}x{k.shape[1]})", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def bar(values: Mapping[str, float], *, title: str, ylabel: str, log: bool = False,
        annotate: str = "{:,.0f}") -> plt.Figure:
    """A labelled bar chart of named values (parameter counts, times, accuracies)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(values) + 1.5), 3.6))
    names, vals = list(values), [float(v) for v in values.values()]
    bars = ax.bar(names, vals, color=[f"C{i}" for i in range(len(vals))])
    for b, v in zip(bars, vals):
        ax.annotate(annotate.format(v), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=20)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
