"""The book's explorables: every value they show is computed here, at build time, by torch and ``lib``; the page
only looks values up (book/_static/explorable.js draws them with plotly.js, which the book serves itself).

* ``window``: the output size of a convolution or max pooling and the input pixels each output unit reads,
  both measured on torch's own modules.
* ``sliding_window_explorable``: kernel, stride, padding (and dilation) as controls over a Fashion-MNIST image:
  the output grid, the output size and the window of a chosen output unit, for every allowed setting.
* ``receptive_field_explorer``: VGG-16, ResNet-18 and ResNet-50 at 224 px: for a stage and a unit, the
  theoretical field and jump (``lib.explain``) and the measured one, the gradient map
  (``lib.analysis.empirical_receptive_fields``).

An ``Explorable`` is an HTML block (native controls, a plotly figure, and a text that says what the figure shows
and is read out as it changes), with its data as JSON; in a notebook without the book's scripts its text is shown.

    display(sliding_window_explorable(image))           # image: (28, 28) uint8
"""
from __future__ import annotations

import base64
import html
import itertools
import json
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lib.analysis import empirical_receptive_fields
from lib.explain import explain

# The settings a reader can choose (every combination is precomputed).
CONV = {"kernel": (1, 2, 3, 5, 7), "stride": (1, 2, 3), "padding": (0, 1, 2, 3), "dilation": (1, 2, 3)}
POOL = {"kernel": (2, 3, 4, 5), "stride": (1, 2, 3), "padding": (0, 1, 2)}
CONV_FIRST = {"kernel": 3, "stride": 2, "padding": 1, "dilation": 1}
POOL_FIRST = {"kernel": 3, "stride": 2, "padding": 1}

# The stages of the receptive-field explorer: (label, module whose output ends the stage), torchvision's names.
RF_MODELS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "resnet50": ("ResNet-50", (("stem (after max pooling)", "maxpool"), ("layer1", "layer1"), ("layer2", "layer2"),
                               ("layer3", "layer3"), ("layer4", "layer4"))),
    "resnet18": ("ResNet-18", (("stem (after max pooling)", "maxpool"), ("layer1", "layer1"), ("layer2", "layer2"),
                               ("layer3", "layer3"), ("layer4", "layer4"))),
    "vgg16": ("VGG-16", tuple((f"block {i} (after its pooling)", f"features.{n}")
                              for i, n in enumerate((4, 9, 16, 23, 30), start=1))),
}
RF_SIZE = 224
GRAD_BIN = 4  # the gradient map is shown in 4 x 4 pixel bins: 56 x 56 values per unit


def key(setting: dict) -> str:
    """The key of a setting in the explorable's data: its values in the order of the controls, "3,2,1,1"."""
    return ",".join(str(v) for v in setting.values())


def window(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1, *,
           pool: bool = False) -> tuple[int, list[list[int]]]:
    """(output size, taps) of an n x n input through ``nn.Conv2d(1, 1, kernel, stride, padding, dilation)``, or
    ``nn.MaxPool2d(kernel, stride, padding)`` with ``pool``. ``taps[i]``: the input coordinates that output row (or
    column) ``i`` reads, negative or ``>= n`` where they fall in the padding. The size is the module's output shape;
    the taps are found by sending one-hot inputs (one per position of the padded input) through the same window."""
    module = nn.MaxPool2d(kernel, stride, padding) if pool else nn.Conv2d(1, 1, kernel, stride, padding, dilation)
    with torch.no_grad():
        size = module(torch.zeros(1, 1, n, n)).shape[-1]
        side = n + 2 * padding
        one_hot = torch.eye(side).reshape(side, 1, 1, side)  # input b lights padded position b
        if pool:
            reach = F.max_pool2d(one_hot, (1, kernel), (1, stride))
        else:
            reach = F.conv2d(one_hot, torch.ones(1, 1, 1, kernel), stride=(1, stride), dilation=(1, dilation))
    reach = reach[:, 0, 0, :]  # (side, size): 1 where padded position b is read by output i
    taps = [(reach[:, i].nonzero().flatten() - padding).tolist() for i in range(reach.shape[1])]
    if len(taps) != size:
        raise AssertionError(f"{module}: {size} outputs, but the one-hot inputs reached {len(taps)}")
    return size, taps


@dataclass
class Explorable:
    """An explorable as HTML: ``kind`` names the drawing in book/_static/explorable.js, ``data`` is its JSON,
    ``controls`` the HTML of its controls, ``text`` what it shows in its default state (the text alternative)."""
    kind: str
    ident: str
    title: str
    controls: str
    text: str
    data: dict
    summary: str  # one sentence: what the figure is, for its aria-label

    def _repr_html_(self) -> str:
        payload = json.dumps(self.data, separators=(",", ":")).replace("</", "<\\/")
        return (f'<div class="course-explorable" id="{self.ident}" data-kind="{self.kind}">'
                f'<p class="explorable-title"><strong>{html.escape(self.title)}</strong></p>'
                f'<div class="explorable-controls" role="group" aria-label="{html.escape(self.title)}: settings">'
                f'{self.controls}</div>'
                f'<div class="explorable-plot" role="img" aria-label="{html.escape(self.summary)}"></div>'
                f'<p class="explorable-text" aria-live="polite">{self.text}</p>'
                f'<script type="application/json" class="explorable-data">{payload}</script></div>')

    def __repr__(self) -> str:
        return f"{self.title}: {html.unescape(_strip_tags(self.text))}"


def _strip_tags(s: str) -> str:
    return re.sub(r"<[^>]+>", "", s)


def _select(ident: str, name: str, label: str, options: list[tuple[str, str]], default: str) -> str:
    opts = "".join(f'<option value="{html.escape(v)}"{" selected" if v == default else ""}>{html.escape(t)}</option>'
                   for v, t in options)
    return (f'<label for="{ident}-{name}">{html.escape(label)}</label>'
            f'<select id="{ident}-{name}" data-control="{name}">{opts}</select>')


def _range(ident: str, name: str, label: str, top: int, value: int) -> str:
    return (f'<label for="{ident}-{name}">{html.escape(label)}</label>'
            f'<input type="range" id="{ident}-{name}" data-control="{name}" min="0" max="{top}" step="1" '
            f'value="{value}"><output for="{ident}-{name}" data-show="{name}">{value}</output>')


def _span(name: str, value) -> str:
    return f'<span data-value="{name}">{html.escape(str(value))}</span>'


# ---- convolution and pooling arithmetic ---------------------------------------------------------------------
def window_text(setting: dict, n: int, size: int, taps: list[list[int]], row: int, col: int, *, pool: bool) -> str:
    """The explorable's text for one setting and unit (explorable.js writes the same sentence)."""
    rows, cols = taps[row], taps[col]
    inside = sum(0 <= r < n and 0 <= c < n for r in rows for c in cols)
    what = ", ".join(f"{name} {_span(name, v)}" for name, v in setting.items())
    return (f"{'Max pooling' if pool else 'Convolution'} with {what} on the {n} × {n} image: the output is "
            f"{_span('out', size)} × {size}. Output unit (row {_span('row', row)}, column {_span('col', col)}) "
            f"reads input rows {_span('rows', f'{rows[0]} to {rows[-1]}')} and columns "
            f"{_span('cols', f'{cols[0]} to {cols[-1]}')}: {_span('taps', len(rows) * len(cols))} pixels in a window "
            f"{_span('span', rows[-1] - rows[0] + 1)} pixels wide, {_span('inside', inside)} of them inside the image "
            f"(the rest are padding).")


def sliding_window_explorable(image: torch.Tensor, *, pool: bool = False, ident: str | None = None) -> Explorable:
    """The convolution (or, with ``pool``, max pooling) arithmetic explorable over ``image`` ((H, W), square): for
    every setting in ``CONV`` (``POOL``), the output size and each output unit's taps, from ``window``. Pooling
    settings torch refuses (padding more than half the kernel) are listed as not allowed."""
    ranges, default = (POOL, POOL_FIRST) if pool else (CONV, CONV_FIRST)
    ident = ident or ("explore-pool" if pool else "explore-conv")
    image = torch.as_tensor(image)
    n = int(image.shape[-1])
    settings = {}
    for values in itertools.product(*ranges.values()):
        setting = dict(zip(ranges, values))
        try:
            size, taps = window(n, **setting, pool=pool)
        except RuntimeError as e:  # torch: "pad should be at most half of effective kernel size"
            settings[key(setting)] = {"error": str(e).split("\n")[0]}
            continue
        settings[key(setting)] = {"out": size, "taps": taps}
    first = settings[key(default)]
    row = col = (first["out"] - 1) // 2
    controls = "".join(_select(ident, name, name, [(str(v), str(v)) for v in values], str(default[name]))
                       for name, values in ranges.items())
    controls += _range(ident, "row", "output row", first["out"] - 1, row)
    controls += _range(ident, "col", "output column", first["out"] - 1, col)
    what = "max pooling" if pool else "a convolution"
    return Explorable(
        kind="window", ident=ident, title=f"Explore {'max pooling' if pool else 'convolution'} arithmetic",
        controls=controls, text=window_text(default, n, first["out"], first["taps"], row, col, pool=pool),
        summary=f"A {n} by {n} Fashion-MNIST image with the output grid of {what} drawn over it as dots, and the "
                f"input pixels one output unit reads outlined; the text below gives the values.",
        data={"n": n, "pool": pool, "controls": list(ranges), "image": image.to(torch.uint8).tolist(),
              "pad_max": max(ranges["padding"]), "settings": settings})


# ---- receptive fields of real models ------------------------------------------------------------------------
def _stage_row(table, layer: str):
    """explain()'s row for the output of ``layer``: its own row, or the last row inside it (a stage's last op)."""
    rows = table[(table["name"] == layer) | table["name"].str.startswith(layer + ".")]
    return rows.iloc[-1]


def _units(side: int) -> list[tuple[str, tuple[int, int]]]:
    a, b = (side - 1) // 4, (side - 1) // 2
    return [("centre", (b, b)), ("between corner and centre", (a, a)), ("corner", (0, 0))]


def _encode(grad: torch.Tensor) -> tuple[str, float]:
    """The (H, W) gradient map in GRAD_BIN-pixel bins, scaled to its peak, as base64 bytes (0-255), and the peak
    bin's share of the influence."""
    binned = F.avg_pool2d(grad[None, None].double(), GRAD_BIN)[0, 0] * GRAD_BIN ** 2  # share per bin
    peak = float(binned.max())
    scaled = torch.round(binned / peak * 255).to(torch.uint8).numpy()
    return base64.b64encode(scaled.tobytes()).decode(), peak


def _effective_box(grad: torch.Tensor, share: float = 0.95) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the rows and columns that hold the middle ``share`` of the influence."""
    g = grad.double()
    cut = (1 - share) / 2

    def span(marginal):
        c = torch.cumsum(marginal / marginal.sum(), 0)
        return int((c < cut).sum()), int((c < 1 - cut).sum())
    (top, bottom), (left, right) = span(g.sum(1)), span(g.sum(0))
    return top, left, bottom, right


def stage_fields(name: str) -> tuple[str, list[dict]]:
    """(label, stages) of torchvision's ``name`` at 224 px, from ``lib.explain`` on the model built on the meta
    device (no weights, no time): for each stage of ``RF_MODELS`` its label, module, map size, theoretical field,
    jump and start (the centre of unit 0's field)."""
    label, stages = RF_MODELS[name]
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    table = explain(model, (3, RF_SIZE, RF_SIZE), figure=False)
    rows = [(stage, layer, _stage_row(table, layer)) for stage, layer in stages]
    return label, [{"label": stage, "layer": layer, "map": int(row["output_shape"][-1]), "field": float(row["field"]),
                    "jump": float(row["jump"]), "start": float(row["start"])} for stage, layer, row in rows]


def theory_box(stage: dict, unit: tuple[int, int]) -> list[float]:
    """(top, left, bottom, right) of the unit's theoretical field, in input pixels (beyond the image where it is)."""
    half = (stage["field"] - 1) / 2
    cy, cx = (stage["start"] + u * stage["jump"] for u in unit)
    return [cy - half, cx - half, cy + half, cx + half]


def receptive_field_data(name: str) -> dict:
    """For torchvision's ``name``, ``stage_fields`` and, for three units of each stage, the theoretical box, the
    measured box (``lib.analysis.empirical_receptive_fields``), the box of 95% of the influence and the gradient
    map. The model is built without pretrained weights: the measured field does not depend on them (the
    linearised copy replaces every weight)."""
    label, stages = stage_fields(name)
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    model = model.to_empty(device="cpu")  # uninitialised: every weight is overwritten by the linearised copy
    probed, prefix = (model.features, "features.") if name.startswith("vgg") else (model, "")
    units = {s["layer"]: _units(s["map"]) for s in stages}
    fields = empirical_receptive_fields(probed, (1, 3, RF_SIZE, RF_SIZE),
                                        {layer.removeprefix(prefix): [u for _, u in us] for layer, us in units.items()})
    for stage in stages:
        stage["units"] = []
        for (where, unit), rf in zip(units[stage["layer"]], fields[stage["layer"].removeprefix(prefix)]):
            grad, peak = _encode(rf.grad)
            stage["units"].append({"label": f"{where} {unit}", "unit": list(unit), "theory": theory_box(stage, unit),
                                   "box": list(rf.box), "size": list(rf.size), "clipped": rf.clipped,
                                   "effective": list(_effective_box(rf.grad)), "grad": grad, "peak": peak})
    return {"label": label, "stages": stages}


def rf_text(model: dict, stage: dict, unit: dict) -> str:
    """The explorer's text for one model, stage and unit (explorable.js writes the same sentence)."""
    t, b, e = unit["theory"], unit["box"], unit["effective"]
    measured = f"{unit['size'][0]} × {unit['size'][1]}"
    return (f"{_span('model', model['label'])}, {_span('stage', stage['label'])} ({stage['map']} × {stage['map']} "
            f"map), unit {_span('unit', tuple(unit['unit']))}: theoretical field {_span('field', _num(stage['field']))} "
            f"pixels, jump {_span('jump', _num(stage['jump']))} pixels; its square spans rows "
            f"{_num(t[0])} to {_num(t[2])} and columns {_num(t[1])} to {_num(t[3])} of the 224-pixel input. Measured: "
            f"pixels with a nonzero gradient fill rows {_span('rows', f'{b[0]} to {b[2]}')} and columns "
            f"{_span('cols', f'{b[1]} to {b[3]}')} ({_span('measured', measured)}"
            f"{', cut by the image border' if unit['clipped'] else ''}); 95% of the gradient lies in "
            f"{_span('effective', f'{e[2] - e[0] + 1} × {e[3] - e[1] + 1}')} pixels.")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def receptive_field_explorer(image: torch.Tensor, names: tuple[str, ...] = ("resnet50", "resnet18", "vgg16"), *,
                             ident: str = "explore-rf") -> Explorable:
    """The receptive-field explorer: ``receptive_field_data`` of each model in ``names`` over ``image`` (a (28, 28)
    Fashion-MNIST image, drawn scaled to 224 pixels)."""
    models = {name: receptive_field_data(name) for name in names}
    first = models[names[0]]
    stage = first["stages"][-1]
    controls = _select(ident, "model", "model", [(n, m["label"]) for n, m in models.items()], names[0])
    controls += _select(ident, "stage", "stage", [(str(i), s["label"]) for i, s in enumerate(first["stages"])],
                        str(len(first["stages"]) - 1))
    controls += _select(ident, "unit", "unit", [(str(i), u["label"]) for i, u in enumerate(stage["units"])], "0")
    image = torch.as_tensor(image)
    return Explorable(
        kind="rf", ident=ident, title="Explore receptive fields of real networks", controls=controls,
        text=rf_text(first, stage, stage["units"][0]),
        summary="A Fashion-MNIST image scaled to 224 pixels, with one unit's theoretical receptive field drawn as a "
                "dashed square, the pixels that measurably influence it shaded, and their extent as a solid square; "
                "the text below gives the values.",
        data={"size": RF_SIZE, "bin": GRAD_BIN, "image": image.to(torch.uint8).tolist(), "models": models})


