"""The judge of assignment 3 (``resnet_variants``): the pre-activation block (He et al. 2016), wide ResNets against
the paper's parameter counts (Zagoruyko & Komodakis 2016), and bottlenecks and whole networks against
torchvision's (ResNeXt, Xie et al. 2017; wide_resnet50_2).

The test cells give the student's module the weights ``lib.report.fill`` draws from the case's seed (the same
numbers for the same names and shapes) and report its outputs; here the grader gives its own reference (its
pre-activation block, torchvision's modules) the same weights and compares. A module that is, derives from or
contains torchvision's implementation fails: the exercise asks for the student's own.
"""
from __future__ import annotations

import functools
import random

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from grader.checks.base import (check_result_row, check_rows_retrained, close, fail, finite, max_diff, ok, shape_str,
                                tensor)
from grader.judge import Cell, Check, check
from lib.report import fill, rand

# Zagoruyko & Komodakis 2016, Table 4: parameters (millions) of WRN-depth-k on CIFAR-10.
WRN_PARAMS_M = {(40, 1): 0.6, (40, 2): 2.2, (40, 4): 8.9, (40, 8): 35.7, (28, 10): 36.5, (28, 12): 52.5,
                (22, 8): 17.2, (22, 10): 26.8, (16, 8): 11.0, (16, 10): 17.1}


def preact_params(c_in: int, c_out: int, stride: int) -> int:
    """BN(c_in), 3x3 conv c_in -> c_out, BN(c_out), 3x3 conv c_out -> c_out, and a 1x1 projection (no bias,
    no BN) where the shape changes, as in the wide-ResNet code."""
    projection = c_in * c_out if (stride != 1 or c_in != c_out) else 0
    return 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + projection


def wrn_params(depth: int, k: int, *, num_classes: int = 10, in_channels: int = 3) -> int:
    """WRN-depth-k: a 3x3 stem to 16 channels, three stages of (depth-4)/6 pre-activation blocks (16k, 32k,
    64k channels), a final BN, and a linear classifier."""
    n = (depth - 4) // 6
    total, c = 9 * in_channels * 16, 16
    for width, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
        total += preact_params(c, width, stride) + (n - 1) * preact_params(width, width, 1)
        c = width
    return total + 2 * c + c * num_classes + num_classes


class PreActReference(nn.Module):
    """He et al. 2016's pre-activation block, the grader's: ``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut``."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.downsample = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor, *, shortcut_of_x: bool = False) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(x if shortcut_of_x else pre)
        return self.conv2(F.relu(self.bn2(self.conv1(pre)))) + shortcut


def _own_work(out: dict, desc: str, build_from: str) -> None:
    """Fail a module that is, derives from or contains torchvision's implementation."""
    found = [m for m in out.get("modules", []) + out.get("bases", []) if str(m).split(".")[0] == "torchvision"]
    if found:
        fail(f"{desc} uses torchvision's implementation ({found[0]}): build it from {build_from}")


def _state(out: dict, reference: nn.Module, desc: str, twin: str) -> None:
    """The reported state_dict names and shapes are the reference's."""
    mine, theirs = out["state"], {k: list(v.shape) for k, v in reference.state_dict().items()}
    missing, unexpected = [k for k in theirs if k not in mine], [k for k in mine if k not in theirs]
    if missing or unexpected:
        fail(f"{desc}: the state_dict keys differ from {twin}'s: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for key, shape in theirs.items():
        if mine[key] != shape:
            hint = ""
            if key.endswith("conv2.weight") and shape[1] != mine[key][1]:
                hint = f": a grouped 3x3 convolution has {shape[1]} input channels per group"
            elif key.endswith(("conv1.weight", "bn1.weight")):
                hint = ": check the bottleneck width (the channels of the 3x3 convolution)"
            fail(f"{desc}: {key} has shape {tuple(mine[key])}, {twin} has {tuple(shape)}{hint}")


def _same_output(out: dict, expected: torch.Tensor, desc: str, what: str, *, tol: float = 1e-4) -> torch.Tensor:
    y = finite(tensor(out["y"], desc), desc)
    if y.shape != expected.shape:
        fail(f"{desc}: output {shape_str(y)}, expected {shape_str(expected)}")
    if not close(y, expected, atol=tol, rtol=tol):
        fail(f"{desc}: with the same weights the output differs from {what} by up to {max_diff(y, expected):.3g}")
    return y


# ---- the pre-activation block -------------------------------------------------------------------------------

def preact_cases(rng: random.Random) -> list[dict]:
    drawn = dict(c_in=rng.randint(3, 12), c_out=rng.randint(3, 12), stride=rng.choice([1, 2]),
                 hw=(rng.randint(5, 10), rng.randint(5, 10)))
    cases = [dict(c_in=16, c_out=16, stride=1, hw=(8, 8)), dict(c_in=16, c_out=32, stride=2, hw=(8, 8)),
             dict(c_in=8, c_out=24, stride=1, hw=(7, 9)), dict(c_in=6, c_out=10, stride=2, hw=(9, 6)),
             dict(c_in=10, c_out=10, stride=2, hw=(8, 8)), drawn]
    return [dict(c, seed=rng.randrange(2**31)) for c in cases]


def _preact_desc(c: dict) -> str:
    return f"PreActBlock({c['c_in']}, {c['c_out']}, stride={c['stride']}) on {shape_str((2, c['c_in'], *c['hw']))}"


@functools.lru_cache(maxsize=64)
def _preact_expected(c_in: int, c_out: int, stride: int, hw: tuple, seed: int) -> tuple:
    block = fill(PreActReference(c_in, c_out, stride), seed).eval()
    x = rand((2, c_in, *hw), seed, low=-1.0).double()
    with torch.no_grad():
        block = block.double()
        return block(x), block(x, shortcut_of_x=True), block.float()


def _check_preact(c: dict, result) -> None:
    desc = _preact_desc(c)
    out = ok(result, desc)
    _own_work(out, desc, "torch.nn layers")
    c_in, c_out, stride = c["c_in"], c["c_out"], c["stride"]
    if out["params"] != preact_params(c_in, c_out, stride):
        fail(f"{desc} has {out['params']:,} parameters, expected {preact_params(c_in, c_out, stride):,}: two bias-free "
             f"3x3 convolutions, BN({c_in}) and BN({c_out}), and a bias-free 1x1 projection only where the shape changes")
    if out["downsample"] != (stride != 1 or c_in != c_out):
        fail(f"{desc}: " + ("the shape changes, so the shortcut needs a 1x1 convolution (`downsample`)"
                            if out["downsample"] is False else "the shape is kept: set downsample = None"))
    expected, other, reference = _preact_expected(c_in, c_out, stride, tuple(c["hw"]), c["seed"])
    _state(out, reference, desc, "the pre-activation block with layers bn1, conv1, bn2, conv2, downsample")
    y = finite(tensor(out["y"], desc), desc)
    if y.shape != expected.shape or not close(y, expected, atol=1e-4):
        hint = ("remove the ReLU after the sum: pre-activation blocks leave x + F(x) as it is"
                if close(y, F.relu(expected), atol=1e-4) else
                "the projection shortcut takes the pre-activated input relu(bn1(x)), as in the authors' code"
                if close(y, other, atol=1e-4) else "the order is BN -> ReLU -> conv, twice, then add the shortcut")
        fail(f"{desc}: output differs from conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut: {hint}")
    if out["silent"]:
        fail(f"{desc}: no gradient reaches {out['silent']}: every layer must be on the path to the output")


def judge_preact(cases: list[dict], results: list) -> list[Check]:
    return [check(_preact_desc(c), _check_preact, c, r) for c, r in zip(cases, results)]


# ---- wide ResNets -------------------------------------------------------------------------------------------

def wrn_cases(rng: random.Random) -> list[dict]:
    drawn = dict(depth=rng.choice([10, 16, 22]), k=rng.randint(1, 4), num_classes=rng.randint(2, 12),
                 in_channels=rng.choice([1, 3]), hw=(rng.randint(12, 33), rng.randint(12, 33)))
    return [dict(depth=28, k=10, num_classes=10, in_channels=3, hw=(8, 8)),
            dict(depth=16, k=2, num_classes=10, in_channels=3, hw=(32, 32)),
            dict(depth=40, k=4, num_classes=10, in_channels=3, hw=(16, 16)),
            dict(depth=22, k=8, num_classes=10, in_channels=3, hw=(12, 12)),
            dict(depth=10, k=3, num_classes=7, in_channels=1, hw=(28, 20)), drawn]


def _wrn_desc(c: dict) -> str:
    return f"WideResNet({c['depth']}, {c['k']}, num_classes={c['num_classes']}, in_channels={c['in_channels']})"


def _check_wrn(c: dict, result) -> None:
    desc = _wrn_desc(c)
    out = ok(result, desc)
    _own_work(out, desc, "your PreActBlock and make_stage")
    depth, k = c["depth"], c["k"]
    expected = wrn_params(depth, k, num_classes=c["num_classes"], in_channels=c["in_channels"])
    if out["params"] != expected:
        published = WRN_PARAMS_M.get((depth, k))
        where = f" (the paper's Table 4: {published}M)" if published and c["num_classes"] == 10 else ""
        fail(f"WRN-{depth}-{k} has {out['params']:,} parameters, expected {expected:,}{where}: three stages of "
             f"(depth - 4) / 6 pre-activation blocks, a 16-channel stem, a final BN and a linear layer")
    n = (depth - 4) // 6
    if out["blocks"] != [n, n, n]:
        fail(f"{desc}: layer1, layer2, layer3 have {out['blocks']} blocks, expected (depth - 4) / 6 = {n} each")
    h, w = c["hw"]
    for i, (channels, f) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 4))):
        want = [1, channels, -(-h // f), -(-w // f)]
        if out["stages"][i] != want:
            fail(f"{desc}: stage {i + 1} output is {out['stages'][i]} for input {shape_str((1, c['in_channels'], h, w))}, "
                 f"expected {want}: 16k, 32k, 64k channels; stages 2 and 3 halve the resolution in their first block")
    if out["logits"] != [1, c["num_classes"]]:
        fail(f"{desc}: logits of shape {out['logits']}, expected {[1, c['num_classes']]}")


def judge_wrn(cases: list[dict], results: list) -> list[Check]:
    return [check(_wrn_desc(c), _check_wrn, c, r) for c, r in zip(cases, results)]


# ---- bottlenecks against torchvision's ----------------------------------------------------------------------

def twin_block_cases(rng: random.Random) -> list[dict]:
    g = rng.choice([2, 4, 8])
    cases = [dict(block="ResNeXtBottleneck", options={}, c_in=64, c_out=256, stride=1, groups=32, base_width=4),
             dict(block="WideBottleneck", options={}, c_in=256, c_out=256, stride=1, groups=1, base_width=128),
             dict(block="ResNeXtBottleneck", options=dict(groups=8, width_per_group=16), c_in=128, c_out=256,
                  stride=2, groups=8, base_width=16),
             dict(block="ResNeXtBottleneck", options=dict(groups=g, width_per_group=8), c_in=64, c_out=128,
                  stride=rng.choice([1, 2]), groups=g, base_width=8),
             dict(block="WideBottleneck", options={}, c_in=64, c_out=128, stride=2, groups=1, base_width=128)]
    return [dict(c, seed=rng.randrange(2**31)) for c in cases]


def _block_desc(c: dict) -> str:
    return (f"{c['block']}({c['c_in']}, {c['c_out']}, stride={c['stride']}"
            + "".join(f", {k}={v}" for k, v in c["options"].items()) + ")")


@functools.lru_cache(maxsize=32)
def _twin_block(c_in: int, c_out: int, stride: int, groups: int, base_width: int, seed: int) -> tuple:
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
    twin = torchvision.models.resnet.Bottleneck(c_in, c_out // 4, stride, downsample, groups, base_width)
    fill(twin, seed).eval()
    with torch.no_grad():
        return twin, twin(rand((2, c_in, 9, 9), seed, low=-1.0)).double()


def _check_block(c: dict, result) -> None:
    desc = _block_desc(c)
    out = ok(result, desc)
    _own_work(out, desc, "lib.models.blocks.Bottleneck")
    if out["expansion"] != 4:
        fail(f"{desc}: a bottleneck block needs the class attribute expansion = 4 (ResNet reads it)")
    twin, expected = _twin_block(c["c_in"], c["c_out"], c["stride"], c["groups"], c["base_width"], c["seed"])
    _state(out, twin, desc, "torchvision's Bottleneck")
    _same_output(out, expected, desc, "torchvision's Bottleneck: conv1x1 -> BN -> ReLU -> grouped conv3x3 "
                 "(stride) -> BN -> ReLU -> conv1x1 -> BN, + shortcut, ReLU")


def judge_blocks(cases: list[dict], results: list) -> list[Check]:
    return [check(_block_desc(c), _check_block, c, r) for c, r in zip(cases, results)]


# ---- whole networks against torchvision's -------------------------------------------------------------------

TWINS = {"wide_resnet50_2": "Wide_ResNet50_2_Weights", "resnext50_32x4d": "ResNeXt50_32X4D_Weights"}


def twin_net_cases(rng: random.Random) -> list[dict]:
    cases = [dict(name="resnext50_32x4d", num_classes=1000, hw=(32, 32)),
             dict(name="wide_resnet50_2", num_classes=1000, hw=(32, 32)),
             dict(name="resnext50_32x4d", num_classes=rng.randint(2, 20), hw=(rng.randint(32, 40), rng.randint(32, 40))),
             dict(name="wide_resnet50_2", num_classes=rng.randint(2, 20), hw=(rng.randint(32, 40), rng.randint(32, 40)))]
    return [dict(c, seed=rng.randrange(2**31)) for c in cases]


def _net_desc(c: dict) -> str:
    return f"{c['name']}(num_classes={c['num_classes']}) on {shape_str((1, 3, *c['hw']))}"


@functools.lru_cache(maxsize=8)
def _twin_net(name: str, num_classes: int, hw: tuple, seed: int) -> tuple:
    with torch.device("meta"):
        twin = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    twin = fill(twin.to_empty(device="cpu"), seed).eval()
    with torch.no_grad():
        return twin, twin(rand((1, 3, *hw), seed, low=-1.0)).double()


def _check_net(c: dict, result) -> None:
    desc = _net_desc(c)
    out = ok(result, desc)
    _own_work(out, desc, "lib.models.resnet.ResNet and your blocks")
    if c["num_classes"] == 1000:
        published = getattr(torchvision.models, TWINS[c["name"]]).IMAGENET1K_V1.meta["num_params"]
        if out["params"] != published:
            fail(f"{desc} has {out['params']:,} parameters, torchvision's {c['name']} has {published:,} (its weights' metadata)")
    twin, expected = _twin_net(c["name"], c["num_classes"], tuple(c["hw"]), c["seed"])
    _state(out, twin, desc, f"torchvision's {c['name']}")
    _same_output(out, expected, desc, f"torchvision's {c['name']}: compare your block with "
                 f"torchvision.models.resnet.Bottleneck", tol=1e-3)


def judge_nets(cases: list[dict], results: list) -> list[Check]:
    return [check(_net_desc(c), _check_net, c, r) for c, r in zip(cases, results)]


# ---- the comparison -----------------------------------------------------------------------------------------

def comparison_cases(rng: random.Random) -> list[dict]:
    return [dict(retrain=dict(train_subset=64, val_subset=64))]


def _check_comparison(c: dict, result) -> None:
    out = ok(result, "the comparison")
    results = out["results"]
    if not isinstance(results, dict) or len(results) < 2:
        fail(f"`results` has {len(results) if isinstance(results, dict) else 0} of the variants: train at least two")
    for name, row in results.items():
        check_result_row(name, row, out["params"][name], "the variant has")
    check_rows_retrained(results, out["again"], protocol="seed_everything(0), loaders(), fit(model, ..., epochs=1)")


def judge_comparison(cases: list[dict], results: list) -> list[Check]:
    return [check("the results of at least two variants, trained again", _check_comparison, cases[0], results[0])]


CELLS = {
    "test_preact": Cell(preact_cases, judge_preact),
    "test_wrn": Cell(wrn_cases, judge_wrn),
    "test_blocks_twin": Cell(twin_block_cases, judge_blocks),
    "test_imagenet_twins": Cell(twin_net_cases, judge_nets),
    "test_comparison": Cell(comparison_cases, judge_comparison),
}
