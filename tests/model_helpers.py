"""Helpers shared by tests/test_models.py and benchmarks/bench_models.py (which puts tests/ on sys.path):
random weights that make a wiring mistake visible, and a lib model beside its torchvision twin."""
from __future__ import annotations

import itertools

import torch
import torchvision
from torch import nn

from lib.models import TORCHVISION_TWINS, build

# Builder keywords both sides get: torchvision's GoogLeNet warns unless init_weights is given (its default
# for a model without weights is True, as lib's).
TWIN_KWARGS: dict[str, dict] = {"googlenet": {"init_weights": True}}
# The models that torchvision's weights (and their num_params) describe: its GoogLeNet weights come without
# the auxiliary classifiers (torchvision drops them after loading the file).
WEIGHTS_KWARGS: dict[str, dict] = {"googlenet": {"aux_logits": False}}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every floating-point parameter and buffer with random values of a sensible scale (weights
    N(0, 1/fan_in), biases and means N(0, 0.05), BatchNorm variances log-uniform in [1e-3, 1] with scales
    about their square root), so that a wrongly wired layer or a wrong eps changes the logits (torchvision's
    ViT starts with a zero head, which would make every logit 0 and a comparison empty). Integer buffers
    (BatchNorm's ``num_batches_tracked``) are set to 0. Works on a model fresh from ``to_empty``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
            if not t.is_floating_point():
                t.zero_()
                continue
            last = name.rpartition(".")[2]
            if last == "running_var" or (t.dim() == 1 and "weight" in last):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif t.dim() >= 2:
                t.copy_(torch.randn(t.shape, generator=g) * t[0].numel() ** -0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
        for m in model.modules():  # variances from 1e-3 to 1, so that BatchNorm's eps matters
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_var.copy_(10 ** (-3 * torch.rand(m.running_var.shape, generator=g)))
                if m.weight is not None:
                    m.weight.copy_(m.running_var.sqrt() * (torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75))
    return model


def twins(name: str, *, share: bool = True, **kwargs) -> tuple[nn.Module, nn.Module]:
    """(lib model, torchvision model) in eval mode with the same random weights.

    Both are built under ``torch.device("meta")`` (no memory, no initialisation time); torchvision's is
    given random weights and lib's takes them with ``load_state_dict(strict=True, assign=True)``: one shared
    copy (``share=True``), or a copy of its own (for timing, so that neither reads the other's cached weights).
    """
    kwargs = {**TWIN_KWARGS.get(name, {}), **kwargs}
    with torch.device("meta"):
        tv = torchvision.models.get_model(TORCHVISION_TWINS[name], **kwargs)
        lib = build(name, **kwargs)
    tv = randomize_(tv.to_empty(device="cpu")).eval()
    state = tv.state_dict() if share else {k: v.clone() for k, v in tv.state_dict().items()}
    lib.load_state_dict(state, strict=True, assign=True)
    return lib.eval(), tv


def max_logit_diff(lib: nn.Module, tv: nn.Module, x: torch.Tensor) -> float:
    """The largest absolute difference of the two models' eval-mode logits on ``x`` (1000 classes each)."""
    with torch.inference_mode():
        a, b = lib(x), tv(x)
    assert a.shape == b.shape == (x.shape[0], 1000)
    assert b.abs().max() > 1e-2, "degenerate comparison: torchvision's logits are all about zero"
    return (a - b).abs().max().item()
