"""lib.explain against published receptive fields, the measured (empirical) field, and lib.analysis's counts."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lib.analysis import count_macs, count_params, empirical_receptive_field
from lib.explain import ExplainError, explain


def _last(table, name):
    return table[table["name"] == name].iloc[-1]


def test_published_fields_of_torchvision_models():
    # Araujo, Norris & Sim (2019), "Computing Receptive Fields of Convolutional Neural Networks", Distill:
    # VGG-16's last pooling 212 pixels; ResNet-18's last block 435; both with a jump of 32.
    with torch.device("meta"):
        vgg, resnet = torchvision.models.vgg16(), torchvision.models.resnet18()
    t = explain(vgg, (3, 224, 224), figure=False)
    assert (_last(t, "features.30")["field"], _last(t, "features.30")["jump"]) == (212, 32)
    t = explain(resnet, (3, 224, 224), figure=False)
    assert (_last(t, "layer4.1.relu")["field"], _last(t, "layer4.1.relu")["jump"]) == (435, 32)
    assert _last(t, "avgpool")["field"] == float("inf"), "a global pooling sees every pixel"


def _random_stack(rng: random.Random) -> nn.Sequential:
    layers, c = [], 1
    for _ in range(rng.randint(2, 5)):
        k, s, d = rng.choice([1, 3, 5]), rng.choice([1, 1, 2]), rng.choice([1, 1, 2])
        if rng.random() < 0.3:
            layers.append(nn.MaxPool2d(rng.choice([2, 3]), stride=rng.choice([1, 2]), padding=0))
        else:
            layers += [nn.Conv2d(c, 4, k, s, padding=d * (k // 2), dilation=d), nn.ReLU()]
            c = 4
    return nn.Sequential(*layers, nn.Conv2d(c, 2, 1))


@pytest.mark.parametrize("seed", range(12))
def test_the_traced_field_is_the_measured_one(seed):
    model = _random_stack(random.Random(seed))
    t = explain(model, (1, 96, 96), figure=False)
    rf = empirical_receptive_field(model, (1, 1, 96, 96), layer=str(len(model) - 1))
    assert not rf.clipped, "the test input is large enough to hold the field"
    assert t.iloc[-1]["field"] == rf.size[0], f"{model}: traced {t.iloc[-1]['field']}, measured {rf.size}"
    # where the field sits: the centre unit's field is centred on start + i * jump
    assert rf.center[0] == t.iloc[-1]["start"] + rf.unit[0] * t.iloc[-1]["jump"], f"{model}: {rf}"


class _Residual(nn.Module):
    """Functional calls and an addition inside forward: what module hooks alone would miss."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 5, padding=2)

    def forward(self, x):
        y = F.max_pool2d(self.a(x), 2)          # field 3 + 1 = 4, jump 2
        return self.b(y) + F.relu(y)           # the branch: 4 + 4 * 2 = 12; the sum takes the wider


def test_functional_calls_and_residual_sums_are_traced():
    t = explain(_Residual(), (1, 32, 32), figure=False)
    assert (_last(t, "b")["field"], _last(t, "b")["jump"]) == (12, 2)
    assert t["params"].sum() == count_params(_Residual())
    m = torchvision.models.resnet18(num_classes=10)
    table = explain(m, (3, 64, 64))
    assert table["macs"].sum() == count_macs(m, (1, 3, 64, 64)) and table["params"].sum() == count_params(m)
    assert table.attrs["figure"].axes[1].get_yscale() == "log"


def test_what_cannot_be_traced_is_named():
    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2)

    with pytest.raises(ExplainError, match="interpolate"):
        explain(nn.Sequential(nn.Conv2d(1, 1, 3), Up()), (1, 16, 16), figure=False)
    assert "field" not in explain(nn.Sequential(nn.Conv2d(1, 1, 3), Up()), (1, 16, 16), receptive_field=False,
                                  figure=False)
    with pytest.raises(ExplainError, match="input of shape"):
        explain(nn.Conv2d(3, 1, 3), (1, 16, 16), figure=False)
    with pytest.raises(TypeError, match="nn.Module"):
        explain(lambda x: x, (1, 8, 8))
