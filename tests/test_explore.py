"""lib.explore, the data behind the book's explorables, against torch: every output size against the shape of a
real nn.Conv2d / nn.MaxPool2d output, each unit's window against the field lib.analysis measures, the theoretical
fields against the published ones, and the measured boxes of a real network against the theoretical ones."""
from __future__ import annotations

import base64
import itertools
import json
import random
import re

import pytest
import torch
from torch import nn

from lib import explore
from lib.analysis import empirical_receptive_field

pytestmark = pytest.mark.usefixtures("one_thread")
N = 28
IMAGE = torch.arange(N * N).reshape(N, N) % 256  # any (28, 28) image: the values are only drawn


@pytest.fixture(scope="module")
def conv():
    return explore.sliding_window_explorable(IMAGE)


@pytest.fixture(scope="module")
def pool():
    return explore.sliding_window_explorable(IMAGE, pool=True)


def _module(setting: dict, pool: bool) -> nn.Module:
    if pool:
        return nn.MaxPool2d(setting["kernel"], setting["stride"], setting["padding"])
    return nn.Conv2d(1, 1, setting["kernel"], setting["stride"], setting["padding"], setting["dilation"])


@pytest.mark.parametrize("kind", ["conv", "pool"])
def test_every_output_size_is_the_shape_of_torchs_output(kind, request):
    """Every setting the page offers: the size it shows is that of the real module's output on a 28 x 28 image (a
    setting torch refuses is one the page says is not allowed)."""
    explorable = request.getfixturevalue(kind)
    ranges = explore.POOL if kind == "pool" else explore.CONV
    settings = explorable.data["settings"]
    assert len(settings) == len(list(itertools.product(*ranges.values())))
    refused = 0
    for k, entry in settings.items():
        setting = dict(zip(ranges, map(int, k.split(","))))
        try:
            shape = _module(setting, kind == "pool")(torch.zeros(1, 1, N, N)).shape
        except RuntimeError:
            assert "error" in entry, f"{setting}: torch refuses it, the page offers it"
            refused += 1
            continue
        assert entry["out"] == shape[-1] == shape[-2], f"{setting}: the page says {entry['out']}, torch {tuple(shape)}"
        assert len(entry["taps"]) == entry["out"]
    assert refused == (6 if kind == "pool" else 0)  # pooling: padding 2 with kernels 2 and 3, any stride


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("kind", ["conv", "pool"])
def test_a_units_window_is_the_field_lib_analysis_measures(kind, seed, request):
    """The input pixels the page outlines for a unit (its taps inside the image) are exactly those with a nonzero
    gradient of that unit (lib.analysis.empirical_receptive_field on the real module), for random settings and
    units; dilated windows included, whose taps have gaps."""
    explorable = request.getfixturevalue(kind)
    ranges = explore.POOL if kind == "pool" else explore.CONV
    rng = random.Random(seed)
    allowed = [k for k, e in explorable.data["settings"].items() if "error" not in e]
    k = rng.choice(allowed)
    entry, setting = explorable.data["settings"][k], dict(zip(ranges, map(int, k.split(","))))
    i, j = rng.randrange(entry["out"]), rng.randrange(entry["out"])
    probe = nn.Sequential(nn.Conv2d(1, 1, 1), _module(setting, kind == "pool"))  # a 1x1 conv: a parameter to probe
    rf = empirical_receptive_field(probe, (1, 1, N, N), layer="1", unit=(i, j))
    rows = {r for r in entry["taps"][i] if 0 <= r < N}
    cols = {c for c in entry["taps"][j] if 0 <= c < N}
    measured = rf.grad > 0
    assert set(measured.any(1).nonzero().flatten().tolist()) == rows, f"{setting}, unit {(i, j)}: rows"
    assert set(measured.any(0).nonzero().flatten().tolist()) == cols, f"{setting}, unit {(i, j)}: columns"
    assert int(measured.sum()) == len(rows) * len(cols)


def test_the_text_and_data_of_the_html_agree(conv):
    html = conv._repr_html_()
    data = json.loads(re.search(r'class="explorable-data">(.*?)</script>', html, re.S).group(1))
    assert data["settings"] == conv.data["settings"]
    size = conv.data["settings"][explore.key(explore.CONV_FIRST)]["out"]
    assert f'<span data-value="out">{size}</span>' in html
    assert 'aria-live="polite"' in html and '<label for="explore-conv-kernel">' in html


def test_theoretical_fields_are_the_published_ones():
    # Araujo, Norris & Sim (2019), Distill: VGG-16's last pooling 212 pixels, ResNet-18's last block 435, jump 32
    # (the values tests/test_explain.py pins for lib.explain).
    for name, layer, field in (("vgg16", "features.30", 212), ("resnet18", "layer4", 435)):
        stages = {s["layer"]: s for s in explore.stage_fields(name)[1]}
        assert (stages[layer]["field"], stages[layer]["jump"], stages[layer]["map"]) == (field, 32, 7)


def test_measured_boxes_are_the_theoretical_ones_cut_by_the_image():
    """ResNet-18 at 224 px: for every stage and unit the explorer shows, the pixels with a nonzero gradient fill
    exactly the theoretical square (lib.explain's field, jump and start) cut to the image; 95% of the gradient is
    inside it, and the gradient map sent to the page is 56 x 56 bins."""
    data = explore.receptive_field_data("resnet18")
    assert [s["layer"] for s in data["stages"]] == ["maxpool", "layer1", "layer2", "layer3", "layer4"]
    for stage in data["stages"]:
        for unit in stage["units"]:
            t = unit["theory"]
            clipped = [max(0, t[0]), max(0, t[1]), min(223, t[2]), min(223, t[3])]
            assert unit["box"] == clipped, f"{stage['layer']} {unit['unit']}: measured {unit['box']}, theory {t}"
            e = unit["effective"]
            assert clipped[0] <= e[0] <= e[2] <= clipped[2] and clipped[1] <= e[1] <= e[3] <= clipped[3]
            assert len(base64.b64decode(unit["grad"])) == (224 // explore.GRAD_BIN) ** 2
