"""Drills for "Transfer learning": what a frozen backbone leaves to train, what it keeps, what its features cost.

Every key is the formula of its worked solution, with the feature widths and the ImageNet parameter counts of
torchvision's weight metadata; ``measure`` builds the torchvision (or ``lib``) model on the meta device and
freezes, unfreezes or replaces its head with ``lib.transfer``, as the chapter does, then counts.
"""
from __future__ import annotations

import copy
import functools
import math
import random

import torch
from torch import nn
from torch.utils.data import DataLoader

from lib import models, transfer
from lib.drills._core import Question, drill
from lib.models.resnet import resnet_cifar

# Width of the pooled features the head reads (the in_features of torchvision's last nn.Linear).
POOLED_FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "densenet121": 1024,
            "mobilenet_v2": 1280, "efficientnet_b0": 1280}
# torchvision's ResNets: block type and blocks per stage (He et al. 2015, Table 1); stage i has width 64·2^i.
RESNETS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
           "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3))}
CLASSES = (2, 5, 10, 20, 37, 100, 102, 200)  # binary, the chapter's 5, CIFAR-10, Pets, Flowers, CUB...


def _sig(x: float, digits: int = 3) -> float:
    """``x`` rounded to ``digits`` significant figures (the key of a question that asks for them)."""
    return float(f"{x:.{digits}g}")


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@functools.lru_cache(maxsize=None)
def _imagenet(name: str) -> nn.Module:
    """torchvision's ``name`` with its 1000-class head, on the meta device, built once (copy it to change it)."""
    import torchvision  # here, not at the top: importing lib.drills (every chapter's widget) stays light

    with torch.device("meta"):
        return getattr(torchvision.models, name)()


def _with_head(name: str, k: int) -> nn.Module:
    """A copy of the ImageNet model whose head ``lib.transfer.replace_head`` swapped for a ``k``-class one."""
    model = copy.deepcopy(_imagenet(name))
    with torch.device("meta"):
        transfer.replace_head(model, k)
    return model


def _imagenet_params(name: str) -> int:
    """Parameters of torchvision's ImageNet model, from its weight metadata."""
    import torchvision  # see _imagenet

    return torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta["num_params"]


def _resnet_stage(name: str, i: int) -> tuple[int, int, str]:
    """Parameters, BatchNorm channels and the parameter formula of stage ``layer{i+1}`` of torchvision's ResNet."""
    kind, blocks = RESNETS[name]
    n, w = blocks[i], 64 * 2 ** i
    if kind == "basic":
        c_in = 64 if i == 0 else w // 2
        down = c_in * w + 2 * w if i > 0 else 0
        params = 9 * c_in * w + 9 * w * w + 4 * w + down + (n - 1) * (18 * w * w + 4 * w)
        text = f"(9·{c_in}·{w} + 9·{w}² + 4·{w}{f' + {c_in}·{w} + 2·{w}' if down else ''}) + {n - 1}·(18·{w}² + 4·{w})"
        return params, 2 * w * n + (w if down else 0), text
    c_in = 64 if i == 0 else 2 * w
    params = c_in * w + 13 * w * w + 4 * c_in * w + 20 * w + (n - 1) * (17 * w * w + 12 * w)
    text = f"({c_in}·{w} + 13·{w}² + 4·{c_in}·{w} + 20·{w}) + {n - 1}·(17·{w}² + 12·{w})"
    return params, 6 * w * n + 4 * w, text


@drill("transfer", "Trainable parameters of a linear probe")
def linear_probe_params(rng: random.Random) -> Question:
    name, k = rng.choice(list(POOLED_FEATURES)), rng.choice(CLASSES)
    d = POOLED_FEATURES[name]
    total = d * k + k

    def measure():
        return _trainable(transfer.freeze(_with_head(name, k)))
    return Question(
        prompt=(f"Feature extraction on torchvision's `{name}`: the backbone is frozen and a new linear head maps its "
                f"{d} pooled features to {k} classes. How many parameters are trained, biases included?"),
        answer=total,
        steps=("params = d·k + k", f"= {d}·{k} + {k}", f"= {total} parameters"),
        measure=measure, unit="parameters")


@drill("transfer", "Trainable parameters with the last stages unfrozen")
def unfreeze_last_stages(rng: random.Random) -> Question:
    name, k, last = rng.choice(list(RESNETS)), rng.choice(CLASSES), rng.choice([1, 2])
    d, stages = POOLED_FEATURES[name], [f"layer{i}" for i in range(5 - last, 5)]
    counted = [_resnet_stage(name, i - 1) for i in range(5 - last, 5)]
    total = sum(p for p, _, _ in counted) + d * k + k

    def measure():
        return _trainable(transfer.unfreeze(transfer.freeze(_with_head(name, k)), stages))
    return Question(
        prompt=(f"Fine-tuning torchvision's `{name}` with a new {k}-class `fc`: everything is frozen but "
                f"{', '.join(f'`{s}`' for s in stages)} and `fc` (BatchNorm's γ and β count, running statistics "
                "do not). How many parameters are trained?"),
        answer=total,
        steps=(("per basic block 9·C_in·w + 9w² + 4w (+ C_in·w + 2w for the 1×1 shortcut); fc d·k + k"
                if RESNETS[name][0] == "basic" else
                "per bottleneck C_in·w + 9w² + 4w² + 12w (+ C_in·4w + 8w for the shortcut); fc d·k + k"),
               " + ".join(f"{s} {t}" for s, (_, _, t) in zip(stages, counted)) + f" + fc {d}·{k} + {k}",
               " + ".join(str(p) for p, _, _ in counted) + f" + {d * k + k} = {total} parameters"),
        measure=measure, unit="parameters")


@drill("transfer", "Fraction of the parameters a new head trains")
def head_fraction(rng: random.Random) -> Question:
    name, k = rng.choice(list(POOLED_FEATURES)), rng.choice(CLASSES)
    d, imagenet = POOLED_FEATURES[name], _imagenet_params(name)
    total = imagenet - (d * 1000 + 1000) + d * k + k
    pct = _sig(100 * (d * k + k) / total)

    def measure():
        model = transfer.freeze(_with_head(name, k))
        return 100 * _trainable(model) / sum(p.numel() for p in model.parameters())
    return Question(
        prompt=(f"torchvision's `{name}` has {imagenet} parameters with its 1000-class head ({d} features). You "
                f"replace the head by a {k}-class linear layer and train only that. What percentage of the model's "
                "parameters is trained (three significant figures)?"),
        answer=pct,
        steps=("P = P_ImageNet − (1000d + 1000) + (dk + k);  % = 100·(dk + k) / P",
               f"P = {imagenet} − {d * 1000 + 1000} + {d * k + k} = {total};  % = 100·{d * k + k} / {total}",
               f"= {pct:g} %"),
        measure=measure, unit="%", rel_tol=0.01)


@drill("transfer", "Running statistics a frozen BatchNorm keeps")
def bn_running_stats(rng: random.Random) -> Question:
    name, i = rng.choice(list(RESNETS)), rng.randint(0, 3)
    _, channels, _ = _resnet_stage(name, i)
    kind, blocks = RESNETS[name]
    per_block = "2 BN of w" if kind == "basic" else "3 BN of w, w, 4w"
    stats = 2 * channels

    def measure():
        buffers = _imagenet(name).get_submodule(f"layer{i + 1}").named_buffers()
        return sum(b.numel() for n, b in buffers if n.endswith(("running_mean", "running_var")))
    return Question(
        prompt=(f"Frozen with `lib.transfer.freeze`, the BatchNorm layers of `layer{i + 1}` in torchvision's `{name}` "
                f"({blocks[i]} {kind} blocks, width w = {64 * 2 ** i}) normalise with their stored running mean and "
                "variance. How many values do these running statistics hold (num_batches_tracked not counted)?"),
        answer=stats,
        steps=(f"{per_block} per block, plus the shortcut's BN where it has one: ΣC = {channels} channels",
               f"running_mean + running_var = 2·ΣC = 2·{channels}",
               f"= {stats} values (γ and β are {stats} more: a frozen BN keeps 4·ΣC = {2 * stats} values fixed)"),
        measure=measure, unit="values")


@functools.lru_cache(maxsize=None)
def _feature_width_and_bytes(name: str) -> tuple[int, int]:
    """What torch says the head of ``name`` receives: the width of the pooled features and bytes per value."""
    model = copy.deepcopy(_imagenet(name)).eval()
    head = transfer.head(model)
    parent, _, child = next(n for n, m in model.named_modules() if m is head).rpartition(".")
    setattr(model.get_submodule(parent), child, nn.Identity())
    features = model(torch.empty(1, 3, 224, 224, device="meta"))  # (1, d)
    return features.shape[1], features.element_size()


@drill("transfer", "Size of a cached feature matrix")
def cached_features_mb(rng: random.Random) -> Question:
    name, n = rng.choice(list(POOLED_FEATURES)), rng.choice([1000, 2500, 5000, 10000, 25000, 50000, 60000, 1281167])
    d = POOLED_FEATURES[name]
    mb = _sig(n * d * 4 / 1e6)

    def measure():
        width, nbytes = _feature_width_and_bytes(name)
        return n * width * nbytes / 1e6
    return Question(
        prompt=(f"Feature extraction caches the pooled features of torchvision's `{name}` ({d} per image) for {n} "
                "images, in float32 (4 bytes). How many MB does the feature matrix take (1 MB = 10^6 bytes; three "
                "significant figures)?"),
        answer=mb,
        steps=("bytes = N·d·4", f"= {n}·{d}·4 = {n * d * 4} bytes", f"= {mb:g} MB"),
        measure=measure, unit="MB", rel_tol=0.01)


@drill("transfer", "Parameters removed by a new head")
def replace_head_saving(rng: random.Random) -> Question:
    name, k = rng.choice(list(POOLED_FEATURES)), rng.choice(CLASSES)
    d = POOLED_FEATURES[name]
    saved = (1000 - k) * (d + 1)

    def measure():
        before = sum(p.numel() for p in _imagenet(name).parameters())
        return before - sum(p.numel() for p in _with_head(name, k).parameters())
    return Question(
        prompt=(f"`lib.transfer.replace_head` swaps the 1000-class linear head of torchvision's `{name}` ({d} "
                f"features in) for a {k}-class one. By how many parameters does the model shrink (biases included)?"),
        answer=saved,
        steps=("saved = (1000 − k)·(d + 1)", f"= (1000 − {k})·({d} + 1)", f"= {saved} parameters"),
        measure=measure, unit="parameters")


@functools.lru_cache(maxsize=None)
def _lib_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return getattr(models, name)(num_classes=5, in_channels=1)


@drill("transfer", "Discriminative learning rates per stage")
def discriminative_lr(rng: random.Random) -> Question:
    name = rng.choice(["resnet18", "resnet20"])
    stages = ["stem", "layer1", "layer2", "layer3", "layer4", "head"] if name == "resnet18" else \
        ["stem", "layer1", "layer2", "layer3", "head"]
    lr, f, stage = rng.choice([3e-4, 5e-4, 1e-3, 3e-3, 1e-2]), rng.choice([2, 2.6, 3, 4, 10]), rng.choice(stages[:-1])
    depth = len(stages) - 1 - stages.index(stage)
    rate = _sig(lr / f ** depth)

    def measure():
        groups = transfer.param_groups(_lib_model(name), lr, decay=1 / f, trainable_only=False)
        return next(g["lr"] for g in groups if g["name"] == stage)
    return Question(
        prompt=(f"`lib`'s `{name}` has the stages {', '.join(stages)}. The head trains at {lr:g}, and each stage at "
                f"the rate of the stage after it divided by {f}. What is the learning rate of `{stage}` (three "
                "significant figures)?"),
        answer=rate,
        steps=("lr(stage) = lr_head / f^(stages between it and the head)",
               f"= {lr:g} / {f}^{depth}", f"= {rate:g}"),
        measure=measure, unit="", rel_tol=0.01)


@drill("transfer", "Optimiser steps of a training run")
def optimizer_steps(rng: random.Random) -> Question:
    c, per_class = rng.choice([2, 5, 10, 37, 100]), rng.choice([10, 20, 50, 100, 250, 600])
    batch, epochs = rng.choice([16, 32, 64, 100, 128, 256]), rng.choice([1, 5, 10, 20, 30])
    n = c * per_class
    steps = math.ceil(n / batch) * epochs
    measure = lambda: len(DataLoader(range(n), batch_size=batch)) * epochs  # noqa: E731
    return Question(
        prompt=(f"A target task of {c} classes with {per_class} labelled images each, batch size {batch}, "
                f"{epochs} epochs; the last, smaller batch of each epoch is kept (drop_last=False). How many "
                "optimiser steps?"),
        answer=steps,
        steps=("steps = ⌈N / B⌉·E, N = classes·images per class", f"= ⌈{n} / {batch}⌉·{epochs}",
               f"= {math.ceil(n / batch)}·{epochs} = {steps} steps"),
        measure=measure, unit="steps")


@functools.lru_cache(maxsize=None)
def _body(name: str) -> nn.Module:
    """torchvision's ResNet up to ``layer4``: no pooling, no ``fc``."""
    return nn.Sequential(*list(_imagenet(name).children())[:-2]).eval()


@drill("transfer", "Feature map at a ResNet's last stage")
def last_stage_size(rng: random.Random) -> Question:
    name = rng.choice(["resnet18", "resnet34", "resnet50"])
    h, w = rng.choice([64, 96, 128, 160, 200, 224, 256, 288, 300, 320, 384]), rng.choice([96, 128, 224, 256, 320, 500])
    c, fh, fw = POOLED_FEATURES[name], math.ceil(h / 32), math.ceil(w / 32)
    values = c * fh * fw

    def measure():
        return _body(name)(torch.empty(1, 3, h, w, device="meta"))[0].numel()
    return Question(
        prompt=(f"torchvision's `{name}` gets a {h}×{w} image (height × width). How many values (C × H' × W') does "
                "`layer4` output per image? Its five stride-2 steps (stem convolution, max pooling, layer2-4) are "
                "padded, so an odd side rounds up."),
        answer=values,
        steps=("H' = ⌈H / 32⌉, W' = ⌈W / 32⌉ (five halvings, each ⌈n / 2⌉);  values = C·H'·W'",
               f"H' = ⌈{h} / 32⌉ = {fh}, W' = ⌈{w} / 32⌉ = {fw};  = {c}·{fh}·{fw}",
               f"= {values} values"),
        measure=measure, unit="values")


@drill("transfer", "Parameters of a two-layer MLP head")
def mlp_head_params(rng: random.Random) -> Question:
    name, hidden, k, bn = rng.choice(list(POOLED_FEATURES)), rng.choice([128, 256, 512, 1024]), rng.choice(CLASSES), rng.random() < 0.5
    d = POOLED_FEATURES[name]
    total = d * hidden + hidden + (2 * hidden if bn else 0) + hidden * k + k
    norm = " + 2h (BatchNorm)" if bn else ""

    def measure():
        with torch.device("meta"):
            head = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden) if bn else nn.Identity(), nn.ReLU(),
                                 nn.Dropout(0.5), nn.Linear(hidden, k))
        return sum(p.numel() for p in head.parameters())
    return Question(
        prompt=(f"On the {d} pooled features of a frozen `{name}`, a head Linear({d}, {hidden}) → "
                f"{'BatchNorm1d → ' if bn else ''}ReLU → Dropout(0.5) → Linear({hidden}, {k}). How many trainable "
                "parameters, biases included?"),
        answer=total,
        steps=(f"params = d·h + h{norm} + h·k + k",
               f"= {d}·{hidden} + {hidden}{f' + 2·{hidden}' if bn else ''} + {hidden}·{k} + {k}",
               f"= {total} parameters"),
        measure=measure, unit="parameters")


@drill("transfer", "Trainable parameters during gradual unfreezing")
def gradual_unfreezing(rng: random.Random) -> Question:
    n, c, k, phase = rng.choice([3, 5, 7, 9]), rng.choice([1, 3]), rng.choice([5, 10, 100]), rng.randint(1, 5)
    sizes = {"head": 64 * k + k,
             "layer3": 9 * 32 * 64 + 9 * 64 * 64 + 4 * 64 + (n - 1) * (18 * 64 * 64 + 4 * 64),
             "layer2": 9 * 16 * 32 + 9 * 32 * 32 + 4 * 32 + (n - 1) * (18 * 32 * 32 + 4 * 32),
             "layer1": n * (18 * 16 * 16 + 4 * 16), "stem": 9 * c * 16 + 2 * 16}
    unfrozen = list(sizes)[:phase]
    total = sum(sizes[s] for s in unfrozen)

    def measure():
        with torch.device("meta"):
            model = resnet_cifar(6 * n + 2, num_classes=k, in_channels=c)
        order = list(reversed(transfer.stage_names(model)))  # head first, as fit_gradual_unfreezing
        transfer.freeze(model, [s for s in order if s != "head"])
        return _trainable(transfer.unfreeze(model, order[:phase]))
    return Question(
        prompt=(f"`lib.transfer.fit_gradual_unfreezing` trains `lib`'s resnet{6 * n + 2} ({n} basic blocks per stage, "
                f"widths 16, 32, 64, parameter-free shortcuts, {c} input channel{'s' if c > 1 else ''}, {k} classes): "
                "the head alone in phase 1, then one more stage per phase from the output backwards. How many "
                f"parameters are trainable in phase {phase}?"),
        answer=total,
        steps=("head 64k + k; a stage's blocks 9·C_in·w + 9w² + 4w each; stem 9·c·16 + 32",
               " + ".join(f"{s} {sizes[s]}" for s in unfrozen),
               f"= {total} parameters"),
        measure=measure, unit="parameters")


@drill("transfer", "Training memory of weights, gradients and Adam")
def adam_memory(rng: random.Random) -> Question:
    name, k, what = rng.choice(list(RESNETS)), rng.choice(CLASSES), rng.choice(["fc", "layer4 and fc", "everything"])
    d = POOLED_FEATURES[name]
    params = _imagenet_params(name) - (d * 1000 + 1000) + d * k + k
    trained = {"fc": d * k + k, "layer4 and fc": _resnet_stage(name, 3)[0] + d * k + k, "everything": params}[what]
    mb = _sig((4 * params + 12 * trained) / 1e6)

    def measure():
        model = _with_head(name, k)
        if what != "everything":
            transfer.unfreeze(transfer.freeze(model), ["layer4"] if what == "layer4 and fc" else [])
        return sum(p.numel() * p.element_size() * (4 if p.requires_grad else 1) for p in model.parameters()) / 1e6
    return Question(
        prompt=(f"Fine-tuning torchvision's `{name}` ({params} parameters with a {k}-class head) with Adam, training "
                f"{what}: every parameter is stored in float32, and each trained one also has a gradient and Adam's "
                "two moments (float32). How many MB (10^6 bytes; activations not counted; three significant figures)?"),
        answer=mb,
        steps=("bytes = 4·P + (4 + 4 + 4)·T, T = trained parameters",
               f"T = {trained};  = 4·{params} + 12·{trained}",
               f"= {4 * params + 12 * trained} bytes = {mb:g} MB"),
        measure=measure, unit="MB", rel_tol=0.01)
