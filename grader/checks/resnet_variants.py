"""Hidden checks of assignment 3 (``resnet_variants``): the pre-activation block (He et al. 2016), wide ResNets
against the paper's parameter counts (Zagoruyko & Komodakis 2016), and bottlenecks and whole networks against
torchvision's (ResNeXt, Xie et al. 2017; wide_resnet50_2): same weights, same outputs, but the student's own
code (a class derived from torchvision's, or a builder returning torchvision's model, fails); the reported
comparison rows are trained again."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from grader.checks.base import (build, check_result_row, check_rows_retrained, close, fail, max_diff, output, quiet,
                                random_input, shape_str)
from grader.checks.integrity import assert_own_work, assert_untampered, reference  # noqa: F401 (the cells call it)
from lib.data import fashion_mnist_loaders
from lib.train import fit, seed_everything


# Zagoruyko & Komodakis 2016, Table 4: parameters (millions) of WRN-depth-k on CIFAR-10.
WRN_PARAMS_M = {(40, 1): 0.6, (40, 2): 2.2, (40, 4): 8.9, (40, 8): 35.7, (28, 10): 36.5, (28, 12): 52.5,
                (22, 8): 17.2, (22, 10): 26.8, (16, 8): 11.0, (16, 10): 17.1}


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm random statistics and affine parameters, so that a misplaced one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))


def _get(block: nn.Module, name: str, desc: str, names: str) -> nn.Module:
    if not hasattr(block, name):
        fail(f"{desc} has no `{name}`: name the layers {names}, so that tests and state_dicts find them")
    return getattr(block, name)


@reference
def preact_params(c_in: int, c_out: int, stride: int) -> int:
    """BN(c_in), 3x3 conv c_in -> c_out, BN(c_out), 3x3 conv c_out -> c_out, and a 1x1 projection (no bias,
    no BN) where the shape changes, as in the wide-ResNet code."""
    projection = c_in * c_out if (stride != 1 or c_in != c_out) else 0
    return 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + projection


@quiet
def check_preact_block(cls: type, *, c_in: int, c_out: int, stride: int = 1, hw: Sequence[int] = (8, 8),
                       seed: int = 0) -> None:
    """He et al. 2016's pre-activation block: ``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut``, where the
    shortcut is ``x`` or, when the shape changes, ``downsample(relu(bn1(x)))``; nothing after the sum."""
    desc = f"{getattr(cls, '__name__', 'PreActBlock')}({c_in}, {c_out}, stride={stride})"
    block = build(cls, desc, c_in, c_out, stride)
    assert_own_work(block, desc)
    names = "bn1, conv1, bn2, conv2 (and downsample)"
    bn1, conv1, bn2, conv2 = (_get(block, n, desc, names) for n in ("bn1", "conv1", "bn2", "conv2"))
    downsample = getattr(block, "downsample", None)
    if (stride != 1 or c_in != c_out) and downsample is None:
        fail(f"{desc}: the shape changes, so the shortcut needs a 1x1 convolution with stride {stride} (`downsample`)")
    if stride == 1 and c_in == c_out and downsample is not None:
        fail(f"{desc}: the shape is kept, so the shortcut is the identity: set downsample = None")
    if getattr(bn1, "num_features", c_in) != c_in:
        fail(f"{desc}: bn1 has {bn1.num_features} channels, expected {c_in}: in a pre-activation block the first "
              f"BatchNorm normalises the block's input, before conv1")
    n_params = sum(p.numel() for p in block.parameters())
    if n_params != preact_params(c_in, c_out, stride):
        fail(f"{desc} has {n_params:,} parameters, expected {preact_params(c_in, c_out, stride):,}: two 3x3 "
              f"convolutions without bias, BN({c_in}) and BN({c_out}), and a bias-free 1x1 projection without BN "
              f"only where the shape changes")
    _randomise_norms(block, seed)
    block.eval()
    x = random_input((2, c_in, *hw), seed, low=-1.0)  # negative values: a ReLU in the wrong place shows
    with torch.no_grad():
        y = output(block, x, desc)
        h_out, w_out = (hw[0] + 2 - 3) // stride + 1, (hw[1] + 2 - 3) // stride + 1
        if tuple(y.shape) != (2, c_out, h_out, w_out):
            fail(f"{desc}: output {shape_str(y)} for input {shape_str(x)}, expected {shape_str((2, c_out, h_out, w_out))}: "
                  f"check the stride of conv1 and of the shortcut, and the channels of conv1/conv2")
        pre = F.relu(bn1(x))
        branch = conv2(F.relu(bn2(conv1(pre))))
        expected = branch + (x if downsample is None else downsample(pre))
        if not close(y, expected, atol=1e-4):
            if close(y, F.relu(expected), atol=1e-4):
                hint = "remove the ReLU after the sum: pre-activation blocks leave x + F(x) as it is"
            elif downsample is not None and close(y, branch + downsample(x), atol=1e-4):
                hint = "the projection shortcut takes the pre-activated input relu(bn1(x)), as in the authors' code"
            else:
                hint = "the order is BN -> ReLU -> conv, twice, then add the shortcut"
            fail(f"{desc}: output differs from conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut by up to "
                  f"{max_diff(y, expected):.3g}: {hint}")
    block.train()
    output(block, x, desc).square().mean().backward()
    silent = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if silent:
        fail(f"{desc}: no gradient reaches {silent}: every layer must be on the path to the output")


@reference
def wrn_params(depth: int, k: int, *, num_classes: int = 10, in_channels: int = 3) -> int:
    """WRN-depth-k: a 3x3 stem to 16 channels, three stages of (depth-4)/6 pre-activation blocks (16k, 32k,
    64k channels), a final BN, and a linear classifier."""
    n = (depth - 4) // 6
    total, c = 9 * in_channels * 16, 16
    for width, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
        total += preact_params(c, width, stride) + (n - 1) * preact_params(width, width, 1)
        c = width
    return total + 2 * c + c * num_classes + num_classes


@quiet
def check_wide_resnet(cls: type, *, depth: int, k: int, num_classes: int = 10, in_channels: int = 3,
                      hw: Sequence[int] = (32, 32), forward: bool = True) -> None:
    """WRN-depth-k (Zagoruyko & Komodakis 2016): the parameter count of the paper's table (or of the design,
    for configurations it does not list), three stages named layer1..layer3 with (depth-4)/6 blocks each and
    outputs at H, H/2, H/4 with 16k, 32k, 64k channels."""
    desc = f"{getattr(cls, '__name__', 'WideResNet')}({depth}, {k}, num_classes={num_classes}, in_channels={in_channels})"
    model = build(cls, desc, depth, k, num_classes=num_classes, in_channels=in_channels)
    assert_own_work(model, desc)
    n_params = sum(p.numel() for p in model.parameters())
    expected = wrn_params(depth, k, num_classes=num_classes, in_channels=in_channels)
    if n_params != expected:
        published = WRN_PARAMS_M.get((depth, k))
        where = f" (the paper's Table 4: {published}M)" if published and num_classes == 10 and in_channels == 3 else ""
        hint = "three stages of (depth - 4) / 6 pre-activation blocks"
        if n_params - expected == 9 * in_channels * (16 * k - 16) + preact_params(16 * k, 16 * k, 1) - preact_params(16, 16 * k, 1):
            hint = "the stem convolution has 16 output channels, not 16k; the first block widens to 16k"
        elif n_params == expected - 2 * 64 * k:
            hint = "a pre-activation network ends with BN and ReLU before the pooling"
        fail(f"WRN-{depth}-{k} has {n_params:,} parameters, expected {expected:,}{where}: {hint}")
    n = (depth - 4) // 6
    stages = []
    for i in (1, 2, 3):
        stage = _get(model, f"layer{i}", desc, "layer1, layer2, layer3 (the three stages)")
        if len(stage) != n:
            fail(f"{desc}: layer{i} has {len(stage)} blocks, expected (depth - 4) / 6 = {n}")
        stages.append(stage)
    if not forward:
        return
    shapes: dict[int, tuple[int, ...]] = {}

    def record(i: int) -> Callable:
        def hook(module, args, out) -> None:  # returns None: a hook's return value would replace the output
            shapes.setdefault(i, tuple(out.shape))
        return hook

    hooks = [s.register_forward_hook(record(i)) for i, s in enumerate(stages, 1)]
    model.eval()
    with torch.no_grad():
        y = output(model, torch.randn(1, in_channels, *hw), desc)
    for h in hooks:
        h.remove()
    for i, (c, f) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 4)), 1):
        want = (1, c, -(-hw[0] // f), -(-hw[1] // f))
        got = shapes.get(i)
        if got is None:
            fail(f"{desc}: layer{i} did not run in forward")
        if got[1] != want[1]:
            fail(f"{desc}: stage {i} output has {got[1]} channels, expected {want[1]} ({[16, 32, 64][i - 1]}k)")
        if got[2:] != want[2:]:
            fail(f"{desc}: stage {i} output is {got[2]}x{got[3]}, expected {want[2]}x{want[3]}: "
                  f"check the shortcut stride (stages 2 and 3 halve the resolution in their first block)")
    if tuple(y.shape) != (1, num_classes):
        fail(f"{desc}: output {shape_str(y)}, expected {shape_str((1, num_classes))}")


def _diagnose_state_dict(model: nn.Module, reference: dict, desc: str, twin: str) -> None:
    mine = model.state_dict()
    missing = [k for k in reference if k not in mine]
    unexpected = [k for k in mine if k not in reference]
    if missing or unexpected:
        fail(f"{desc}: the state_dict keys differ from {twin}'s: missing {missing[:4]}, unexpected "
              f"{unexpected[:4]}: use torchvision's names conv1, bn1, conv2, bn2, conv3, bn3, downsample")
    for key, value in reference.items():
        if tuple(mine[key].shape) != tuple(value.shape):
            hint = ""
            if key.endswith("conv2.weight") and value.shape[1] != mine[key].shape[1]:
                hint = (f": a grouped 3x3 convolution has {value.shape[1]} input channels per group "
                        f"(groups = width / {value.shape[1]})")
            elif key.endswith("conv1.weight") or key.endswith("bn1.weight"):
                hint = ": check the bottleneck width (the channels of the 3x3 convolution)"
            fail(f"{desc}: {key} has shape {tuple(mine[key].shape)}, {twin} has {tuple(value.shape)}{hint}")


@quiet
def check_bottleneck_twin(cls: type, *, c_in: int, c_out: int, stride: int = 1, groups: int = 1,
                          base_width: int = 64, seed: int = 0, **block_kwargs) -> None:
    """``cls(c_in, c_out, stride, **block_kwargs)`` equals torchvision's ``Bottleneck(c_in, c_out // 4, stride,
    downsample, groups, base_width)``: its weights load and the outputs agree."""
    name = getattr(cls, "__name__", None) or getattr(getattr(cls, "func", None), "__name__", "block")
    options = dict(getattr(cls, "keywords", {}) or {}, **block_kwargs)
    desc = f"{name}({c_in}, {c_out}, stride={stride}" + "".join(f", {k}={v}" for k, v in options.items()) + ")"
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
    assert_own_work(cls, name, build_from="lib.models.blocks.Bottleneck")
    torch.manual_seed(seed)
    twin = torchvision.models.resnet.Bottleneck(c_in, c_out // 4, stride, downsample, groups, base_width)
    _randomise_norms(twin, seed)
    block = build(cls, desc, c_in, c_out, stride, **block_kwargs)
    assert_own_work(block, desc, build_from="lib.models.blocks.Bottleneck")
    if getattr(type(block), "expansion", None) != 4:
        fail(f"{desc}: a bottleneck block needs the class attribute expansion = 4 (ResNet reads it)")
    _diagnose_state_dict(block, twin.state_dict(), desc, "torchvision's Bottleneck")
    block.load_state_dict(twin.state_dict())
    block.eval(), twin.eval()
    x = random_input((2, c_in, 9, 9), seed, low=-1.0)
    with torch.no_grad():
        y, expected = output(block, x, desc), twin(x)
    if y.shape != expected.shape or not close(y, expected, atol=1e-4):
        fail(f"{desc}: with torchvision's weights the output differs from torchvision's Bottleneck"
              + (f" by up to {max_diff(y, expected):.3g}" if y.shape == expected.shape else f" in shape {shape_str(y)}")
              + ": conv1x1 -> BN -> ReLU -> grouped conv3x3 (stride) -> BN -> ReLU -> conv1x1 -> BN, + shortcut, ReLU")


def _build_without_init(builder: Callable, **kwargs) -> nn.Module:
    """Build on the meta device (no memory, no initialisation: the weights are loaded next), or normally
    if the builder cannot run there."""
    try:
        with torch.device("meta"):
            return builder(**kwargs)
    except Exception:
        return builder(**kwargs)


TWINS = {"wide_resnet50_2": "Wide_ResNet50_2_Weights", "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
         "wide_resnet101_2": "Wide_ResNet101_2_Weights", "resnext101_32x8d": "ResNeXt101_32X8D_Weights"}


@quiet
def check_torchvision_twin(builder: Callable, name: str, *, num_classes: int = 1000, hw: Sequence[int] = (32, 32),
                           seed: int = 0) -> None:
    """``builder(num_classes=...)`` has torchvision's ``name`` architecture: the parameter count of torchvision's
    weight metadata, its randomly initialised state_dict loads with strict=True, and the logits agree."""
    desc = f"{getattr(builder, '__name__', 'your builder')}(num_classes={num_classes})"
    torch.manual_seed(seed)
    twin = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)  # random weights, no download
    _randomise_norms(twin, seed)
    model = _build_without_init(builder, num_classes=num_classes)
    assert_own_work(model, desc, build_from="lib.models.resnet.ResNet and your blocks")
    n_params = sum(p.numel() for p in model.parameters())
    if num_classes == 1000:
        published = getattr(torchvision.models, TWINS[name]).IMAGENET1K_V1.meta["num_params"]
        if n_params != published:
            fail(f"{desc} has {n_params:,} parameters, torchvision's {name} has {published:,} (its weights' metadata)")
    _diagnose_state_dict(model, twin.state_dict(), desc, f"torchvision's {name}")
    model.load_state_dict(twin.state_dict(), strict=True, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = builder(num_classes=num_classes)  # something outside the state_dict: build it for real
        model.load_state_dict(twin.state_dict(), strict=True)
    model.eval(), twin.eval()
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y, expected = output(model, x, desc), twin(x)
    if y.shape != expected.shape or not close(y, expected, atol=1e-3, rtol=1e-3):
        fail(f"{desc}: with torchvision's weights the logits differ from {name}'s"
              + (f" by up to {max_diff(y, expected):.3g}" if y.shape == expected.shape else f" (shape {shape_str(y)})")
              + ": compare your block's forward with torchvision.models.resnet.Bottleneck")


def retrain_row(builder: Callable, *, train_subset: int, val_subset: int) -> dict:
    """The task's protocol for one row, run by the grader: seed 0, fresh loaders, one epoch of ``fit``."""
    seed_everything(0)
    train_loader, val_loader, _ = fashion_mnist_loaders(batch_size=64, test_subset=16, train_subset=train_subset,
                                                        val_subset=val_subset)
    model = builder()
    history = fit(model, train_loader, val_loader, epochs=1, progress=False)
    return {"acc": history.last("val_acc"), "params": sum(p.numel() for p in model.parameters())}


@quiet
def check_variant_comparison(results: dict, builders: dict, *, at_least: int = 2, retrain: dict | None = None) -> None:
    """``results[name] = {"acc", "seconds", "params"}`` for at least ``at_least`` of the ``builders``; with
    ``retrain`` (the subset sizes the notebook trained on) every reported row is trained again and compared."""
    trained = [n for n in builders if n in results]
    if len(trained) < at_least:
        fail(f"`results` has {len(trained)} of the variants {list(builders)}: train at least {at_least}")
    for name in trained:
        expected = sum(p.numel() for p in builders[name]().parameters())
        check_result_row(name, results[name], expected, "the variant has")
    if retrain is not None:
        check_rows_retrained(results, trained, lambda name: retrain_row(builders[name], **retrain),
                             protocol="seed_everything(0), loaders(), fit(model, ..., epochs=1)")
