"""Transfer learning: reuse a trained network on a new task.

    model = resnet20(in_channels=1, num_classes=5)
    load_checkpoint(path, model)              # a backbone trained on the source task
    replace_head(model, num_classes=5)        # a new, untrained classifier for the target task
    freeze(model)                             # everything but the head: feature extraction
    unfreeze(model, ["layer3"])               # ... or one more stage: gradual unfreezing
    torch.optim.Adam(param_groups(model, lr=1e-3, decay=0.3))   # discriminative learning rates
    features, labels = extract_features(model, loader)          # the frozen backbone's outputs, once
    z, mean, std = standardize(features)                        # per-feature zero mean, unit variance
    recalibrate_batchnorm(model, loader)                        # BatchNorm statistics of the target images
    load_torchvision_weights(model, "resnet18")                 # ImageNet weights, where they can be downloaded

A model is cut into *stages*, input to output, the last one being the ``"head"`` (the final linear
layer): the model's own ``stages()``, which every ``lib`` model has (the contract is in
``lib.models.registry``), or, for other models, every top-level child that owns parameters.
``stages(model)`` lists each stage's parameters. Freezing a stage stops its gradients *and* keeps its
BatchNorm layers in evaluation mode (their running statistics stay those of the source task), which
is what "frozen" means for a network with BatchNorm. ``recalibrate_batchnorm`` replaces those statistics
by the target images' own (one pass in training mode, no gradients), e.g. for a randomly initialised
backbone, whose stored statistics (mean 0, variance 1) describe no image at all.

``class_task`` cuts a labelled dataset down to some classes (optionally ``per_class`` examples of
each) and relabels them 0..k-1: the course's source and target tasks are two halves of Fashion-MNIST.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lib import records
from lib.models import build
from lib.train import History, fit, load_checkpoint, make_scheduler

# The course's split of Fashion-MNIST (lib.data.CLASSES): pretrain on five kinds of clothing,
# transfer to sandals, shirts, sneakers, bags and ankle boots.
SOURCE_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)  # T-shirt/top, Trouser, Pullover, Dress, Coat
TARGET_CLASSES: tuple[int, ...] = (5, 6, 7, 8, 9)  # Sandal, Shirt, Sneaker, Bag, Ankle boot


# ---------------------------------------------------------------------------------------------
# Tasks: some classes of a dataset, relabelled
# ---------------------------------------------------------------------------------------------
class ClassTask(Dataset):
    """The examples of ``classes`` in ``dataset`` (which has a ``labels`` tensor), with label
    ``classes[k]`` renamed ``k``. ``per_class`` keeps a seeded random draw of that many per class.
    Items come from ``dataset[i]``, so its augmentation (if any) still applies."""

    def __init__(self, dataset: Dataset, classes: Sequence[int], *, per_class: int | None = None, seed: int = 0):
        labels = torch.as_tensor(dataset.labels)
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct, got {tuple(classes)}")
        g = torch.Generator().manual_seed(seed)
        keep = []
        for c in classes:
            idx = (labels == c).nonzero().flatten()
            if len(idx) == 0:
                raise ValueError(f"class {c} has no examples in this dataset")
            if per_class is not None:
                if per_class > len(idx):
                    raise ValueError(f"per_class={per_class} but class {c} has only {len(idx)} examples")
                idx = idx[torch.randperm(len(idx), generator=g)[:per_class]]
            keep.append(idx)
        self.dataset, self.classes = dataset, tuple(int(c) for c in classes)
        self.indices = torch.cat(keep).sort().values
        self._relabel = {c: k for k, c in enumerate(self.classes)}
        self.labels = torch.tensor([self._relabel[int(y)] for y in labels[self.indices]])  # (N,) in 0..k-1

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self.dataset[int(self.indices[i])]
        return x, self.labels[i]


def class_task(dataset: Dataset, classes: Sequence[int], *, per_class: int | None = None,
               seed: int = 0) -> ClassTask:
    """``ClassTask(dataset, classes, per_class=..., seed=...)``: some classes of a dataset, relabelled 0..k-1."""
    return ClassTask(dataset, classes, per_class=per_class, seed=seed)


# ---------------------------------------------------------------------------------------------
# Stages, heads, freezing
# ---------------------------------------------------------------------------------------------
def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The model's stages as modules, input to output, ending with ``"head"``: ``model.stages()`` for a
    ``lib`` model; for any other, every top-level child that owns parameters, the last one as the head."""
    if callable(getattr(model, "stages", None)):
        return dict(model.stages())
    owners = [(name, child) for name, child in model.named_children() if any(True for _ in child.parameters())]
    if not owners:
        raise ValueError(f"{type(model).__name__} has no child module with parameters to split into stages")
    return {**dict(owners[:-1]), "head": owners[-1][1]}


def stages(model: nn.Module) -> OrderedDict[str, list[tuple[str, nn.Parameter]]]:
    """The model's stages, input to output, each with its ``(name, parameter)`` pairs; the last is ``"head"``.
    Every parameter belongs to exactly one stage."""
    modules = stage_modules(model)
    owner: dict[int, list[str]] = {}
    for s, m in modules.items():
        for p in m.parameters():
            owner.setdefault(id(p), []).append(s)
    out: OrderedDict[str, list[tuple[str, nn.Parameter]]] = OrderedDict((s, []) for s in modules)
    for name, p in model.named_parameters():
        found = owner.get(id(p), [])
        if len(found) != 1:
            raise RuntimeError(f"parameter {name!r} belongs to {len(found)} stages of {type(model).__name__}")
        out[found[0]].append((name, p))
    return out


def stage_names(model: nn.Module) -> list[str]:
    """``list(stages(model))``: e.g. ``['stem', 'layer1', 'layer2', 'layer3', 'head']`` for ResNet-20."""
    return list(stage_modules(model))


def _check_stages(model: nn.Module, names: Iterable[str]) -> list[str]:
    known = stage_names(model)
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"{type(model).__name__} has no stage {unknown[0]!r}; its stages are {', '.join(known)}")
    return names


def _batchnorms(model: nn.Module, stage_list: Iterable[str]) -> list[nn.modules.batchnorm._BatchNorm]:
    modules = stage_modules(model)
    return [m for s in stage_list for m in modules[s].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _keep_in_eval(module: nn.Module, args) -> None:
    module.eval()  # a frozen BatchNorm normalises with its stored statistics, even when model.train() was called


def freeze(model: nn.Module, stage_list: Iterable[str] | None = None, *, train_bn: bool = False) -> nn.Module:
    """Stop training ``stage_list`` (default: every stage but the head): no gradients for their
    parameters, and (unless ``train_bn``) their BatchNorm layers stay in eval mode, keeping the source
    task's running statistics. Returns the model."""
    chosen = [s for s in stage_names(model) if s != "head"] if stage_list is None else _check_stages(model, stage_list)
    params = stages(model)
    for s in chosen:
        for _, p in params[s]:
            p.requires_grad_(False)
    if not train_bn:
        for bn in _batchnorms(model, chosen):
            if not hasattr(bn, "_frozen_hook"):
                bn._frozen_hook = bn.register_forward_pre_hook(_keep_in_eval)
                bn.eval()
    return model


def unfreeze(model: nn.Module, stage_list: Iterable[str] | None = None) -> nn.Module:
    """Train ``stage_list`` again (default: every stage): gradients on, BatchNorm back to following
    ``model.train()`` / ``model.eval()``. Returns the model."""
    chosen = stage_names(model) if stage_list is None else _check_stages(model, stage_list)
    params = stages(model)
    for s in chosen:
        for _, p in params[s]:
            p.requires_grad_(True)
    for bn in _batchnorms(model, chosen):
        if hasattr(bn, "_frozen_hook"):
            bn._frozen_hook.remove()
            del bn._frozen_hook
            bn.train(model.training)
    return model


def trainable_stages(model: nn.Module) -> list[str]:
    """The stages with at least one parameter that requires a gradient."""
    return [s for s, ps in stages(model).items() if any(p.requires_grad for _, p in ps)]


def head(model: nn.Module) -> nn.Linear:
    """The final linear layer (the head stage's last ``nn.Linear``)."""
    linears = [m for m in stage_modules(model)["head"].modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__}'s head stage has no nn.Linear to replace")
    return linears[-1]


def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Put a new, freshly initialised ``nn.Linear(features, num_classes)`` where the final linear layer
    was (same place, same name, so the model's ``forward`` uses it) and return it."""
    old = head(model)
    name = next(n for n, m in model.named_modules() if m is old)
    parent, _, child = name.rpartition(".")
    new = nn.Linear(old.in_features, num_classes).to(old.weight.device)
    setattr(model.get_submodule(parent), child, new)
    return new


# ---------------------------------------------------------------------------------------------
# Discriminative learning rates and gradual unfreezing (Howard & Ruder 2018, ULMFiT)
# ---------------------------------------------------------------------------------------------
def stage_learning_rates(model: nn.Module, lr: float, decay: float) -> OrderedDict[str, float]:
    """``lr`` for the head, ``lr * decay`` for the stage before it, ``lr * decay**2`` before that..."""
    names = stage_names(model)
    return OrderedDict((s, lr * decay ** (len(names) - 1 - i)) for i, s in enumerate(names))


def param_groups(model: nn.Module, lr: float, *, decay: float = 1.0,
                 lrs: dict[str, float] | None = None, trainable_only: bool = True) -> list[dict]:
    """Optimizer parameter groups, one per stage, each with its own learning rate: ``lrs[stage]`` if
    given, else ``stage_learning_rates(model, lr, decay)``. ``decay=1`` gives every stage ``lr``.
    Stages with nothing to train are left out (``trainable_only``). Pass the result to any
    ``torch.optim`` optimizer, then to ``lib.train.fit(..., optimizer=...)``."""
    rates = stage_learning_rates(model, lr, decay)
    if lrs is not None:
        rates.update({s: float(v) for s, v in lrs.items() if s in _check_stages(model, lrs)})
    groups = []
    for s, named in stages(model).items():
        params = [p for _, p in named if p.requires_grad or not trainable_only]
        if params:
            groups.append({"params": params, "lr": rates[s], "name": s})
    if not groups:
        raise ValueError("no trainable parameters: unfreeze at least the head")
    return groups


def fit_gradual_unfreezing(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None = None, *,
                           epochs_per_phase: int | Sequence[int], lr: float, decay: float = 1.0,
                           phases: int | None = None, weight_decay: float = 0.0, restarts: bool = False,
                           **fit_kwargs) -> History:
    """Train the head alone, then unfreeze one more stage (from the output backwards) per phase, with
    per-stage learning rates (``param_groups(model, lr, decay=decay)``). ``phases`` defaults to one per
    stage (the last trains everything).

    By default the whole run is *one* Adam optimizer and *one* cosine schedule over all phases' steps
    (``warmup_steps`` in ``fit_kwargs`` apply once, at the start): a stage unfrozen later joins at the
    learning rate the schedule has reached, with fresh Adam moments. ``restarts=True`` is the older
    variant: every phase a fresh ``lib.train.fit`` with a new Adam and its own cosine schedule, so the
    learning rate jumps back to ``lr`` at each phase (warm restarts) and the phases are not one schedule.
    Returns one ``History`` over all phases, with a ``phase``, ``unfrozen`` and ``trainable_params`` column.
    """
    order = list(reversed(stage_names(model)))  # head first
    phases = len(order) if phases is None else phases
    if not 1 <= phases <= len(order):
        raise ValueError(f"phases must be between 1 and {len(order)} (the number of stages), got {phases}")
    per_phase = [epochs_per_phase] * phases if isinstance(epochs_per_phase, int) else list(epochs_per_phase)
    if len(per_phase) != phases:
        raise ValueError(f"epochs_per_phase has {len(per_phase)} entries for {phases} phases")
    freeze(model, [s for s in order if s != "head"])
    unfreeze(model, ["head"])
    history = History()
    opt, sched = None, None
    if not restarts:  # every stage's group from the start: Adam skips a frozen stage (its gradients are None)
        opt = torch.optim.Adam(param_groups(model, lr, decay=decay, trainable_only=False), weight_decay=weight_decay)
        max_batches = fit_kwargs.get("max_batches")
        steps = len(train_loader) if max_batches is None else min(max_batches, len(train_loader))
        sched = make_scheduler(opt, sum(per_phase) * steps, schedule="cosine",
                               warmup_steps=fit_kwargs.pop("warmup_steps", 0))
    for k, epochs in enumerate(per_phase):
        unfreeze(model, order[:k + 1])
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if restarts:
            opt = torch.optim.Adam(param_groups(model, lr, decay=decay), weight_decay=weight_decay)
            h = fit(model, train_loader, val_loader, epochs=epochs, lr=lr, optimizer=opt, schedule="cosine",
                    **fit_kwargs)
        else:
            h = fit(model, train_loader, val_loader, epochs=epochs, lr=lr, optimizer=opt, scheduler=sched,
                    **fit_kwargs)
        for e in h.epochs:
            history.epochs.append(e | {"epoch": len(history.epochs) + 1, "phase": k + 1,
                                       "unfrozen": order[k], "trainable_params": trainable,
                                       "head_lr": opt.param_groups[-1]["lr"]})
    return history


# ---------------------------------------------------------------------------------------------
# Feature extraction
# ---------------------------------------------------------------------------------------------
def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the head sees: ``forward_features`` pooled to one vector per image, (N, F). A feature map
    (N, C, H, W) is averaged over H, W; a token sequence (N, L, D) gives its class token (token 0)."""
    f = model.forward_features(x)
    if f.dim() == 4:
        return f.mean(dim=(2, 3))  # (N, C)
    if f.dim() == 3:
        return f[:, 0]  # (N, D)
    return f.flatten(1)


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, *,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the backbone once over ``loader`` in eval mode: (features (N, F), labels (N,)) on the CPU.
    Training a head on these is "feature extraction": the backbone's cost is paid once, not per epoch."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for x, y in loader:
            feats.append(pooled_features(model, x.to(device)).cpu())
            labels.append(y)
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def standardize(features: torch.Tensor, mean: torch.Tensor | None = None,
                std: torch.Tensor | None = None, *, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``((features - mean) / std, mean, std)`` per feature, (N, F) -> (N, F). Without ``mean`` and ``std``
    they are the features' own (pass the training features' to standardise validation and test features
    the same way). A linear probe on standardised features sees every feature at the same scale, whatever
    the backbone: see :func:`fold_standardization` to put the probe back on the raw features."""
    if mean is None or std is None:
        mean, std = features.mean(0), features.std(0)
    return (features - mean) / (std + eps), mean, std


@torch.no_grad()
def fold_standardization(linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor, *, eps: float = 1e-6) -> nn.Linear:
    """Turn a head trained on ``standardize``-d features into the same head on raw features, in place:
    ``W z + b`` with ``z = (f - mean) / (std + eps)`` is ``(W / (std + eps)) f + (b - (W / (std + eps)) mean)``.
    The model then classifies images directly, as if the probe had been trained on its own features."""
    w = linear.weight / (std + eps)  # (classes, F)
    linear.bias.sub_(w @ mean)
    linear.weight.copy_(w)
    return linear


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: DataLoader, *,
                          device: torch.device | str | None = None) -> nn.Module:
    """Replace every BatchNorm layer's running mean and variance by those of the images in ``loader``:
    one pass in training mode, without gradients, each layer averaging over all batches (``momentum=None``)
    rather than keeping a running average. The weights do not change, only the statistics an eval-mode
    forward normalises with; frozen BatchNorm layers (see :func:`freeze`) are recalibrated too and stay
    frozen. Use it where the stored statistics do not describe the images: a randomly initialised network
    (mean 0, variance 1 in every layer) or a new domain (Li et al. 2016's AdaBN). Returns the model."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    was_training, saved = model.training, [(bn.momentum, getattr(bn, "_frozen_hook", None)) for bn in bns]
    for bn in bns:
        if hasattr(bn, "_frozen_hook"):
            bn._frozen_hook.remove()
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the pass
    try:
        model.train()
        for x, _ in loader:
            model(x.to(device))
    finally:
        model.train(was_training)
        for bn, (momentum, hook) in zip(bns, saved):
            bn.momentum = momentum
            if hook is not None:
                bn._frozen_hook = bn.register_forward_pre_hook(_keep_in_eval)
                bn.eval()
    return model


# ---------------------------------------------------------------------------------------------
# torchvision's ImageNet weights
# ---------------------------------------------------------------------------------------------
class WeightsUnavailableError(RuntimeError):
    """torchvision's pretrained weights could not be had (no network, no cached copy); the message says why
    and what to do."""


def _resolves(host: str, timeout: float) -> str | None:
    """None if ``host`` resolves within ``timeout`` seconds, else the reason (DNS can block past socket timeouts)."""
    result: list[str | None] = ["DNS lookup timed out"]

    def lookup():
        try:
            socket.getaddrinfo(host, 443)
            result[0] = None
        except OSError as e:
            result[0] = f"cannot resolve {host} ({e})"

    t = threading.Thread(target=lookup, daemon=True)
    t.start()
    t.join(timeout)
    return result[0]


def load_torchvision_weights(model: nn.Module, name: str | None = None, weights: str = "IMAGENET1K_V1", *,
                             progress: bool = False, timeout: float = 10.0) -> dict:
    """Load torchvision's pretrained ``weights`` for model ``name`` (default: the ``lib`` model's own
    name, e.g. ``"resnet18"``) into the ``lib`` model, whose parameter names are torchvision's.

    The file comes from torchvision's cache (``$TORCH_HOME/hub/checkpoints``) or is downloaded there.
    Two adaptations: a first convolution built for 1 input channel gets the sum of the RGB kernels
    (a grey image is R = G = B), and a head whose shape differs (``num_classes`` other than 1000) is
    left as it is, untrained. Anything else that does not fit raises. Offline and without a cached
    copy, raises :class:`WeightsUnavailableError` within about ``timeout`` seconds, saying what failed
    and what to do. Returns a report: the weights' name and the keys adapted and skipped.
    """
    import torchvision
    from torch.hub import get_dir

    name = name or getattr(model, "name", None)
    if not isinstance(name, str):
        raise ValueError("say which torchvision model's weights to load: load_torchvision_weights(model, 'resnet18')")
    try:
        w = torchvision.models.get_model_weights(name)[weights]
    except (ValueError, KeyError, TypeError):
        raise KeyError(f"torchvision has no weights {weights!r} for a model {name!r}; pass name= (e.g. 'resnet18') "
                       f"and weights= (e.g. 'IMAGENET1K_V1')") from None
    label = f"{type(w).__name__}.{w.name}"
    cached = Path(get_dir()) / "checkpoints" / os.path.basename(urlparse(w.url).path)
    if not cached.is_file():
        start = time.perf_counter()
        problem = _resolves(urlparse(w.url).hostname, timeout)
        if problem is None:
            old = socket.getdefaulttimeout()
            socket.setdefaulttimeout(timeout)
            try:
                state = w.get_state_dict(progress=progress, check_hash=True)
            except Exception as e:  # URLError, timeouts, HTTP errors, a bad hash: all mean "no weights"
                problem = f"{type(e).__name__}: {e}"
            finally:
                socket.setdefaulttimeout(old)
        if problem is not None:
            raise WeightsUnavailableError(
                f"could not download torchvision's {label} from {w.url} ({problem}; gave up after "
                f"{time.perf_counter() - start:.1f} s). This machine seems to be offline and has no cached "
                f"copy at {cached}. To use ImageNet weights: run this once on a machine with internet access "
                f"(the file is then cached there), or copy the file {cached.name} into {cached.parent} "
                f"(or point $TORCH_HOME elsewhere). Offline, start from the course's own pretrained backbone "
                f"instead: lib.transfer.load_pretrained_backbone().") from None
    else:
        state = w.get_state_dict(progress=progress)

    own = model.state_dict()
    head_keys = {n for n, _ in stages(model)["head"]}
    adapted, skipped, mismatched = [], [], []
    for key, value in list(state.items()):
        if key not in own or own[key].shape == value.shape:
            continue
        target = own[key].shape
        if value.dim() == 4 and value.shape[1] == 3 and target[1] == 1 and value.shape[0] == target[0] \
                and value.shape[2:] == target[2:]:
            state[key] = value.sum(dim=1, keepdim=True)  # grey input: one kernel, the sum of R, G and B
            adapted.append(key)
        elif key in head_keys:
            del state[key]  # a new head for another number of classes: keep the model's own
            skipped.append(key)
        else:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(target)}")
    if mismatched:
        hint = ""
        if "conv1.weight" in state and "conv1.weight" in own and state["conv1.weight"].shape[2:] != own["conv1.weight"].shape[2:]:
            hint = (f". Its first convolution is {tuple(own['conv1.weight'].shape[2:])}, the checkpoint's "
                    f"{tuple(state['conv1.weight'].shape[2:])}: build the model with torchvision's stem "
                    f"(small_input=False, e.g. models.resnet18(in_channels=1, num_classes=5)) and feed it images "
                    f"of at least {getattr(model, 'min_size', 32)} pixels")
        raise ValueError(f"{label} does not fit this model: " + "; ".join(mismatched) + hint)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - set(skipped):
        raise ValueError(f"{label} does not fit this model: missing {sorted(set(missing) - set(skipped))}, "
                         f"unexpected {sorted(unexpected)} (is it the right architecture?)")
    return {"weights": label, "adapted": adapted, "skipped": skipped}


# ---------------------------------------------------------------------------------------------
# The course's own pretrained backbone (no download needed)
# ---------------------------------------------------------------------------------------------
BACKBONE_CHECKPOINT = "backbone_fmnist_source.pt"


def load_pretrained_backbone(path: str | Path | None = None, *,
                             record: dict | None = None) -> tuple[nn.Module, dict]:
    """The course's ResNet-20 pretrained on Fashion-MNIST's ``SOURCE_CLASSES`` (made by
    ``python -m lib.experiments pretrain_backbone``): the model with its source-task head, and the
    checkpoint's metadata.

    Without ``path`` the file is the one the committed record ``results/pretrain_backbone.json`` describes
    (``$CNN_COURSE_RESULTS_DIR`` if set), and its sha256 is checked against that record through
    ``lib.records.artifact`` before it is loaded: a changed or truncated checkpoint raises
    ``ArtifactMismatchError``. With ``path`` (e.g. a ``--quick`` run's file) it is checked against
    ``record`` when one is given, and loaded as it is otherwise."""
    if path is None or record is not None:
        record = record if record is not None else records.load("pretrain_backbone")
        filename = Path(path).name if path is not None else record["results"]["checkpoint"]
        if filename not in record.get("artifacts", {}) and record["results"].get("checkpoint") == filename:
            # a record made before checkpoints were listed as artifacts: its results hold the sha256
            record = {**record, "artifacts": {filename: {"sha256": record["results"]["checkpoint_sha256"],
                                                         "bytes": record["results"]["checkpoint_bytes"]}}}
        path = records.artifact(record, filename, Path(path).parent if path is not None else None)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m lib.experiments pretrain_backbone` "
                                f"(from the repository root) to make it")
    meta = load_checkpoint(path)["meta"]
    model = build(meta["model"], **meta["model_kwargs"])
    load_checkpoint(path, model)
    return model, meta
