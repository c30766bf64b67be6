"""lib.analysis: MACs against torchvision's ``_ops`` and the convolution formula, per-layer summaries
that add up, and the empirical receptive field against analytic values (random conv/pool chains,
dilation, VGG-16's 212 at pool5, residual nets' longest path, squeeze-excitation's global path)."""
from __future__ import annotations

import random

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from lib.analysis import (compare_architectures, count_macs, count_params, empirical_receptive_field,
                          linearised_copy, summary, torchvision_meta)
from lib.models import TORCHVISION_TWINS, build
from lib.models.blocks import MBConv


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build(name, **kwargs)


# ---------------------------------------------------------------------------------------------
# Parameters and MACs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TORCHVISION_TWINS))
def test_macs_agree_with_torchvision_ops_within_one_percent(name):
    meta = torchvision_meta(TORCHVISION_TWINS[name])
    size = meta["crop_size"]
    macs = count_macs(meta_model(name), (1, 3, size, size))
    assert abs(macs / 1e9 - meta["ops"]) <= 0.01 * meta["ops"]


@pytest.mark.parametrize("seed", range(8))
def test_macs_equal_the_convolution_formula(seed):
    rng = random.Random(seed)
    groups = rng.choice([1, 2, 4])
    c_in, c_out = groups * rng.randint(1, 8), groups * rng.randint(1, 8)
    k, s, p, d = rng.choice([1, 3, 5]), rng.choice([1, 2, 3]), rng.randint(0, 2), rng.choice([1, 2])
    n, h, w, classes = rng.randint(1, 3), rng.randint(12, 30), rng.randint(12, 30), rng.randint(2, 9)
    conv = nn.Conv2d(c_in, c_out, k, s, p, dilation=d, groups=groups)
    ho, wo = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(c_out * ho * wo, classes))
    expected = n * c_out * ho * wo * (c_in // groups) * k * k + n * c_out * ho * wo * classes
    assert count_macs(model, (n, c_in, h, w)) == expected


def test_count_macs_keeps_the_training_mode_and_scales_with_batch():
    model = build("resnet20").train()
    one = count_macs(model, (1, 3, 32, 32))
    assert model.training and model.layer1[0].bn1.training
    assert count_macs(model, (3, 3, 32, 32)) == 3 * one
    assert count_macs(model, (3, 32, 32)) == one  # (C, H, W) means one image


def test_count_params_counts_trainable_and_shared_once():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model.append(model[0])  # shared: counted once
    assert count_params(model) == 4 * 3 + 3 + 3 * 2 + 2
    model[1].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 4 * 3 + 3 + 2


# ---------------------------------------------------------------------------------------------
# Per-layer summary
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, size", [("resnet18", (1, 3, 224, 224)), ("efficientnet_b0", (1, 3, 224, 224)),
                                        ("vit_tiny_28", (2, 1, 28, 28)), ("vgg11_bn", (1, 3, 64, 64))])
def test_summary_columns_add_up_to_the_totals(name, size):
    model = meta_model(name)
    table = summary(model, size)
    assert list(table.columns) == ["name", "type", "output_shape", "params", "macs"]
    assert table["params"].sum() == count_params(model)
    assert table["macs"].sum() == count_macs(model, size)


def test_summary_rows_follow_execution_with_shapes():
    table = summary(meta_model("resnet18"), (2, 3, 224, 224)).set_index("name")
    assert table.index[0] == "conv1" and table.index[-1] == "fc"
    assert table.loc["conv1", "output_shape"] == (2, 64, 112, 112)
    assert table.loc["maxpool", "output_shape"] == (2, 64, 56, 56)
    assert table.loc["layer4.1.conv2", "output_shape"] == (2, 512, 7, 7)
    assert table.loc["layer4.1.conv2", "params"] == 512 * 512 * 9
    assert table.loc["layer4.1.conv2", "macs"] == 2 * 512 * 7 * 7 * 512 * 9
    assert table.loc["fc", "type"] == "Linear"
    vit = summary(meta_model("vit_tiny_28"), (1, 1, 28, 28)).set_index("name")
    attn = vit.loc["encoder.layers.encoder_layer_0.self_attention"]
    assert attn["params"] == 3 * 64 * 64 + 3 * 64  # in_proj only: out_proj has its own row
    assert attn["macs"] == 50 * 64 * 3 * 64 + 2 * 50 * 50 * 64  # projections + QK^T and AV


# ---------------------------------------------------------------------------------------------
# Receptive field: analytic values
# ---------------------------------------------------------------------------------------------
def test_two_3x3_convolutions_see_5x5():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    rf = empirical_receptive_field(net, (1, 1, 15, 15))
    assert rf.size == (5, 5) and rf.box == (5, 5, 9, 9) and rf.center == (7.0, 7.0) and not rf.clipped
    assert rf.unit == (7, 7) and rf.input_size == (1, 1, 15, 15)
    assert abs(rf.grad.sum().item() - 1) < 1e-5 and rf.grad[7, 7] > rf.grad[5, 5] > 0


def _random_chain(seed: int):
    """A random stack of convolutions (dilated or strided), max and average pooling, BN and ReLU, with
    its analytic field: r = 1 + sum (k_eff - 1) * jump, box start = unit * jump - sum padding * jump."""
    rng = random.Random(seed)
    layers, c = [], 1
    r, jump, offset = 1, 1, 0
    for _ in range(rng.randint(2, 6)):
        kind = rng.choice(["conv", "conv", "max", "avg"])
        k, s = rng.choice([1, 2, 3, 5]), rng.choice([1, 1, 2])
        d = rng.choice([1, 2, 3]) if kind == "conv" else 1
        p = rng.randint(0, (d * (k - 1)) // 2)
        if kind == "conv":
            c_out = rng.choice([2, 3])
            layers += [nn.Conv2d(c, c_out, k, s, p, dilation=d), nn.BatchNorm2d(c_out), nn.ReLU()]
            c = c_out
        else:
            p = min(p, k // 2)
            layers.append((nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(k, s, p))
        r += d * (k - 1) * jump
        offset += p * jump
        jump *= s
    return nn.Sequential(*layers), c, r, jump, offset


@pytest.mark.parametrize("seed", range(16))
def test_field_of_random_conv_pool_chains_matches_the_formula(seed):
    net, _, r, jump, offset = _random_chain(seed)
    size = 2 * r + 4 * jump + 8
    rf = empirical_receptive_field(net.eval(), (1, 1, size, size))
    i, j = rf.unit
    assert rf.size == (r, r)
    assert rf.box[:2] == (i * jump - offset, j * jump - offset)
    assert not rf.clipped


@pytest.mark.parametrize("layers, expected", [
    ([(3, 2)], 5),  # one 3x3 convolution with dilation 2
    ([(3, 1), (3, 2)], 7),
    ([(3, 1), (3, 2), (3, 4)], 15),  # the context module of Yu & Koltun 2016: 2^(i+2) - 1
    ([(3, 1), (3, 2), (3, 4), (3, 8)], 31),
])
def test_dilated_convolutions(layers, expected):
    net = nn.Sequential(*[nn.Conv2d(1, 1, k, padding=d * (k - 1) // 2, dilation=d) for k, d in layers])
    assert empirical_receptive_field(net, (1, 1, 64, 64)).size == (expected, expected)


def test_max_pooling_counts_its_whole_window():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 1, 3))
    assert empirical_receptive_field(net, (1, 1, 40, 40)).size == (8, 8)  # 3 + 1 + 2 * 2
    # The plain gradient passes max pooling only at each window's maximum: on a ramp (and all-one weights)
    # that is the window's last row, so the pixels in the window's first row at the top are missed.
    for m in (net[0], net[3]):
        nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
    ramp = torch.arange(40.0)
    x = (ramp[:, None] + ramp[None, :]).expand(1, 1, 40, 40).clone().requires_grad_(True)
    net(x)[0, 0, 8, 8].backward()
    assert (x.grad[0, 0].sum(1) > 0).sum().item() == 7


@pytest.mark.slow
def test_vgg16_pool5_field_is_212():
    """Araujo, Norris & Sim, "Computing receptive fields of CNNs", Distill 2019: VGG-16 pool5 at 224x224."""
    model = meta_model("vgg16").to_empty(device="cpu")  # the probe overwrites every weight
    rf = empirical_receptive_field(model, (1, 3, 224, 224))
    assert rf.size == (212, 212) and rf.unit == (3, 3)
    assert rf.box == (6, 6, 217, 217) and not rf.clipped  # 3 * 32 - 90 .. + 211


def test_named_layer_and_resnet_longest_path():
    model = build("resnet18")
    # stem 7x7/2 (7) and max pool 3x3/2 (+2*2 = 11), then 3x3 convs at jump 4, 4, then one at stride 2 ...
    assert empirical_receptive_field(model, (1, 3, 128, 128), layer="maxpool").size == (11, 11)
    assert empirical_receptive_field(model, (1, 3, 128, 128), layer="layer1.0.conv1").size == (19, 19)
    assert empirical_receptive_field(model, (1, 3, 224, 224), layer="layer2").size == (99, 99)
    with pytest.raises(KeyError, match="no module named 'layer9'"):
        empirical_receptive_field(model, (1, 3, 64, 64), layer="layer9")


def test_cifar_resnet20_field_is_its_longest_path():
    # 3x3 stem (3), 6 convs at jump 1 (+12), 6 at jump 2 (one of them strided: +2 + 5*4), 6 at jump 4 (+4 + 5*8)
    rf = empirical_receptive_field(build("resnet20"), (1, 3, 128, 128))
    assert rf.size == (81, 81) and not rf.clipped


class _TwoPaths(nn.Module):
    """A residual block whose *shortcut* is the longer path: main 3x3 -> max pool 3x3/1, shortcut 9x9."""

    def __init__(self, shortcut: int):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                                  nn.MaxPool2d(3, 1, 1))
        self.shortcut = nn.Conv2d(1, 2, shortcut, padding=shortcut // 2)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.main(x) + self.shortcut(x))


@pytest.mark.parametrize("shortcut, expected", [(1, 5), (3, 5), (9, 9)])
def test_residual_field_is_the_longest_path(shortcut, expected):
    model = _TwoPaths(shortcut)
    for p in model.parameters():  # negative weights in the model must not cancel paths in the probe
        nn.init.normal_(p)
    rf = empirical_receptive_field(model.eval(), (1, 1, 21, 21))
    assert rf.size == (expected, expected)


def test_squeeze_excitation_global_path_is_excluded_by_default():
    net = nn.Sequential(nn.Conv2d(3, 8, 1), MBConv(8, 8, 1, expand_ratio=4, kernel_size=5))
    local = empirical_receptive_field(net, (1, 3, 33, 33))
    assert local.size == (5, 5) and not local.clipped
    everything = empirical_receptive_field(net, (1, 3, 33, 33), include_global=True)
    assert everything.size == (33, 33) and everything.clipped
    gate = linearised_copy(net, include_global=True)[1].block[2]  # kept, with its activations linearised
    assert isinstance(gate.se.activation, nn.Identity) and isinstance(gate.se.scale_activation, nn.Identity)


def test_torchvision_squeeze_excitation_is_recognised_too():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), torchvision.ops.SqueezeExcitation(4, 2))
    assert empirical_receptive_field(net, (1, 3, 17, 17)).size == (3, 3)
    assert empirical_receptive_field(net, (1, 3, 17, 17), include_global=True).size == (17, 17)


def test_clipped_field_and_fit():
    model = build("resnet20")
    small = empirical_receptive_field(model, (1, 3, 32, 32))
    assert small.clipped and small.size == (32, 32)
    fitted = empirical_receptive_field(model, (1, 3, 32, 32), fit=True)
    assert fitted.size == (81, 81) and not fitted.clipped and fitted.input_size[-1] > 81


def test_unit_choice_moves_the_box_by_the_stride():
    model = build("resnet20")  # total stride 4
    centre = empirical_receptive_field(model, (1, 3, 128, 128))
    moved = empirical_receptive_field(model, (1, 3, 128, 128), unit=(centre.unit[0] + 2, centre.unit[1] - 1))
    assert moved.size == centre.size
    assert moved.box[0] - centre.box[0] == 8 and moved.box[1] - centre.box[1] == -4
    with pytest.raises(ValueError, match="inside the"):
        empirical_receptive_field(model, (1, 3, 128, 128), unit=(40, 0))


def test_vit_class_token_sees_the_whole_image():
    rf = empirical_receptive_field(build("vit_tiny_28"), (1, 1, 28, 28))
    assert rf.unit == (0,) and rf.size == (28, 28) and rf.clipped


def test_the_model_itself_is_left_untouched():
    model = build("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = linearised_copy(model)
    assert probe.layer1[0].conv1.weight.dtype == torch.float64 and isinstance(probe.layer1[0].relu, nn.Identity)
    empirical_receptive_field(model, (1, 3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.layer1[0].relu, nn.ReLU) and model.conv1.weight.dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# Published numbers and the comparison table
# ---------------------------------------------------------------------------------------------
def test_torchvision_meta_reads_the_weights_enum():
    meta = torchvision_meta("vgg16")
    assert meta == {"weights": "VGG16_Weights.IMAGENET1K_V1", "params": 138_357_544, "ops": 15.47,
                    "acc@1": 71.592, "acc@5": 90.382, "crop_size": 224}
    assert torchvision_meta("efficientnet_b2")["crop_size"] == 288
    with pytest.raises(KeyError, match="torchvision has no model 'resnet20'"):
        torchvision_meta("resnet20")


def test_compare_architectures_table():
    table = compare_architectures(["resnet18", "resnet20", "vit_tiny_28"], input_size=None)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["resolution", "params", "tv_params", "gmacs", "tv_gmacs", "acc@1", "rf",
                                   "rf_clipped"]
    r18 = table.loc["resnet18"]
    assert r18["params"] == r18["tv_params"] == 11_689_512 and r18["acc@1"] == 69.758
    assert abs(r18["gmacs"] - r18["tv_gmacs"]) < 0.01 * r18["tv_gmacs"]
    assert r18["rf"] == 224 and r18["rf_clipped"]  # 435 > 224: the centre unit sees the whole image
    r20 = table.loc["resnet20"]
    assert r20["resolution"] == 32 and r20["params"] == 269_722 and pd.isna(r20["tv_params"])
    assert table.loc["vit_tiny_28", "resolution"] == 28
