"""lib.grading, the checks behind the exercises' test cells, without nbgrader: they accept the reference
solutions, reject typical mistakes with a message that names the fix, and their reference numbers agree with
independent measurements. Also the grader's safety: the source scan, the tamper check, the guard and the
output limit of nbgrader_config.py, and the test cells' fresh import of lib.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib import grading
from lib.analysis import empirical_receptive_field

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ("mixed_pooling", "receptive_field", "resnet_variants")


def _cells(assignment: str, kind: str = "solutions") -> list[dict]:
    return json.loads((ROOT / kind / assignment / f"{assignment}.ipynb").read_text())["cells"]


def _grade_id(cell: dict) -> str | None:
    return cell["metadata"].get("nbgrader", {}).get("grade_id")


@functools.cache
def solution(assignment: str) -> dict:
    """The namespace of a solution notebook after its setup and definition cells (no tests, no training)."""
    os.environ.setdefault("NBGRADER_EXECUTION", "validate")
    wanted = {"mixed_pooling": {"setup", "mixed_pool", "stochastic_pool", "lp_pool", "make_net"},
              "receptive_field": {"setup", "calculator"},
              "resnet_variants": {"setup", "preact", "wrn", "resnext"}}[assignment]
    ns: dict = {}
    for cell in _cells(assignment):
        if _grade_id(cell) in wanted:
            exec(compile("".join(cell["source"]), f"{assignment}:{_grade_id(cell)}", "exec"), ns)
    return ns


def fails_with(fragment: str, check, *args, **kwargs) -> None:
    with pytest.raises(grading.GradingError) as info:
        check(*args, **kwargs)
    assert fragment in str(info.value), str(info.value)


# ---- mixed pooling --------------------------------------------------------------------------------------

def _mixed(impl, *, learnable_param=False):
    """A MixedPool2d with a fixed alpha whose forward is ``impl(self, x)``."""
    class Mixed(nn.Module):
        def __init__(self, kernel_size, stride=None, padding=0, *, alpha=0.5, learnable=None, channels=None):
            super().__init__()
            self.k, self.s, self.p, self.alpha = kernel_size, stride, padding, alpha
            if learnable_param:
                self.w = nn.Parameter(torch.tensor(alpha))

        def forward(self, x):
            return impl(self, x)
    return Mixed


MIXED_MISTAKES = {
    "alpha weights the average": lambda self, x: ((1 - self.alpha) * F.max_pool2d(x, self.k, self.s, self.p)
                                                  + self.alpha * F.avg_pool2d(x, self.k, self.s, self.p)),
    "plain max pooling": lambda self, x: F.max_pool2d(x, self.k, self.s, self.p),
    "pass kernel_size, stride and padding": lambda self, x: (self.alpha * F.max_pool2d(x, self.k)
                                                             + (1 - self.alpha) * F.avg_pool2d(x, self.k)),
    "count_include_pad=True": lambda self, x: (self.alpha * F.max_pool2d(x, self.k, self.s, self.p) + (1 - self.alpha)
                                               * F.avg_pool2d(x, self.k, self.s, self.p, count_include_pad=False)),
}


def test_mixed_pooling_reference_passes():
    ns = solution("mixed_pooling")
    grading.check_mixed_pool_fixed(ns["MixedPool2d"], shape=(3, 5, 13, 11), kernel_size=3, stride=2, padding=1, alpha=0.7)
    for mode in ("layer", "channel"):
        grading.check_mixed_pool_learnable(ns["MixedPool2d"], mode=mode, shape=(2, 7, 9, 9), kernel_size=3, alpha=0.8)
    grading.check_stochastic_pool(ns["StochasticPool2d"], shape=(2, 2, 10, 10), kernel_size=3, stride=2, seed=3)
    grading.check_lp_pool(ns["LPPool2d"], p=4.5, shape=(1, 3, 11, 11), kernel_size=3, stride=2, zero_window=True)
    pools = {"max": lambda c: nn.MaxPool2d(2), "mixed": lambda c: ns["MixedPool2d"](2, learnable="channel", channels=c)}
    grading.check_pooling_comparison(ns["make_net"], pools, None)


@pytest.mark.parametrize("fragment", MIXED_MISTAKES)
def test_mixed_pooling_mistakes_are_named(fragment):
    fails_with(fragment, grading.check_mixed_pool_fixed, _mixed(MIXED_MISTAKES[fragment]),
               shape=(2, 3, 9, 9), kernel_size=3, stride=2, padding=1, alpha=0.3)


def test_fixed_alpha_must_not_be_a_parameter():
    cls = _mixed(lambda self, x: self.alpha * F.max_pool2d(x, self.k, self.s, self.p)
                 + (1 - self.alpha) * F.avg_pool2d(x, self.k, self.s, self.p), learnable_param=True)
    fails_with("must not be trained", grading.check_mixed_pool_fixed, cls, shape=(2, 3, 8, 8), kernel_size=2, alpha=0.5)


class _Learnable(nn.Module):
    """A learned-alpha MixedPool2d with a switchable mistake."""
    mistake = None

    def __init__(self, kernel_size, stride=None, padding=0, *, alpha=0.5, learnable=None, channels=None):
        super().__init__()
        self.k, self.s = kernel_size, stride
        n = 1 if learnable == "layer" or self.mistake == "shared" else channels
        start = alpha if self.mistake in ("raw", "init") else math.log(alpha / (1 - alpha))
        self.param = nn.Parameter(torch.full((n,), float(start)))

    @property
    def alpha(self):
        a = self.param if self.mistake == "raw" else torch.sigmoid(self.param)
        return a.detach() if self.mistake == "detach" else a

    def forward(self, x):
        a = self.alpha.view(1, -1, 1, 1)
        return a * F.max_pool2d(x, self.k, self.s) + (1 - a) * F.avg_pool2d(x, self.k, self.s)


@pytest.mark.parametrize("mistake, fragment", [("raw", "outside [0, 1]"), ("shared", "expected 4"),
                                               ("detach", "gets no gradient"), ("init", "starts at")])
def test_learned_alpha_mistakes_are_named(mistake, fragment):
    cls = type(f"Learnable_{mistake}", (_Learnable,), {"mistake": mistake})
    fails_with(fragment, grading.check_mixed_pool_learnable, cls, mode="channel", shape=(2, 4, 8, 8), alpha=0.3)


def _stochastic(train_fn, eval_fn):
    class Stochastic(nn.Module):
        def __init__(self, kernel_size, stride=None):
            super().__init__()
            self.k, self.s = kernel_size, stride or kernel_size

        def forward(self, x):
            return (train_fn if self.training else eval_fn)(self, x)
    return Stochastic


def _eval_ok(self, x):
    return grading.stochastic_pool_expectation(x, self.k, self.s)


def _sample(self, x, weights):
    n, c, h, w = x.shape
    win = F.unfold(x, self.k, stride=self.s).view(n, c, self.k * self.k, -1).transpose(2, 3)
    probs = weights(win)
    idx = torch.multinomial(probs.reshape(-1, self.k * self.k), 1)
    out = win.reshape(-1, self.k * self.k).gather(1, idx)
    return out.view(n, c, (h - self.k) // self.s + 1, (w - self.k) // self.s + 1)


STOCHASTIC_MISTAKES = {
    "always picks the maximum": _stochastic(lambda self, x: F.max_pool2d(x, self.k, self.s), _eval_ok),
    "uniformly": _stochastic(lambda self, x: _sample(self, x, lambda w: torch.ones_like(w)), _eval_ok),
    "softmax": _stochastic(lambda self, x: _sample(self, x, lambda w: w.softmax(-1)), _eval_ok),
    "plain average": _stochastic(lambda self, x: _sample(self, x, lambda w: w + 1e-12),
                                 lambda self, x: F.avg_pool2d(x, self.k, self.s)),
    "NaN": _stochastic(lambda self, x: _sample(self, x, lambda w: w + 1e-12),
                       lambda self, x: F.avg_pool2d(x * x, self.k, self.s) / F.avg_pool2d(x, self.k, self.s)),
}


@pytest.mark.parametrize("fragment", STOCHASTIC_MISTAKES)
def test_stochastic_pooling_mistakes_are_named(fragment):
    fails_with(fragment, grading.check_stochastic_pool, STOCHASTIC_MISTAKES[fragment], shape=(2, 3, 8, 8), kernel_size=2)


def _lp(forward):
    class LP(nn.Module):
        def __init__(self, p, kernel_size, stride=None):
            super().__init__()
            self.p, self.k, self.s = p, kernel_size, stride or kernel_size

        def forward(self, x):
            return forward(self, x)
    return LP


@pytest.mark.parametrize("fragment, forward, zero_window", [
    ("sums over the window", lambda self, x: F.lp_pool2d(x, self.p, self.k, self.s), False),
    ("take the 1/p-th root", lambda self, x: F.avg_pool2d(x.pow(self.p), self.k, self.s), False),
    ("clamp the mean away from zero", lambda self, x: F.avg_pool2d(x.pow(self.p), self.k, self.s).pow(1 / self.p), True),
])
def test_lp_pooling_mistakes_are_named(fragment, forward, zero_window):
    fails_with(fragment, grading.check_lp_pool, _lp(forward), p=3, shape=(2, 3, 9, 9), kernel_size=3,
               zero_window=zero_window)


# ---- receptive fields -----------------------------------------------------------------------------------

def test_chain_reference_matches_the_measured_field():
    """The textbook recursion in lib.grading against lib.analysis's gradient-based measurement."""
    for seed in range(12):
        chain, (c, h, w) = grading.random_chain(seed)
        ref = grading.chain_field_reference(list(chain), (h, w))
        big = (1, c, h + 2 * ref["size"][0], w + 2 * ref["size"][1])  # room for the centre unit's field
        measured = empirical_receptive_field(chain, big)
        assert not measured.clipped
        assert measured.size == ref["size"], f"seed {seed}: {chain}"
        big_ref = grading.chain_field_reference(list(chain), big[2:])
        i, j = measured.unit
        assert measured.center == (big_ref["start"][0] + i * big_ref["jump"][0], big_ref["start"][1] + j * big_ref["jump"][1])


@pytest.mark.slow
def test_receptive_field_reference_passes():
    fn = solution("receptive_field")["compute_receptive_field"]
    for seed in range(300, 306):
        grading.check_rf_chain(fn, *grading.random_chain(seed), centers=True)
    for kind in ("residual", "inception", "dilated", "gated"):
        grading.check_rf_graph(fn, grading.branching_model(kind), (3, 40, 36), name=kind)
    for name in ("vgg16", "resnet50_v1"):
        grading.check_rf_published(fn, name)


def _rf_variant(**changes):
    """The reference calculator with one idea removed, to see the check name it."""
    ns = dict(solution("receptive_field"))
    source = "".join(next(c for c in _cells("receptive_field") if _grade_id(c) == "calculator")["source"])
    for old, new in changes.items():
        assert old in source, old
        source = source.replace(old, new)
    exec(compile(source, "variant", "exec"), ns)
    return ns["compute_receptive_field"]


def test_receptive_field_mistakes_are_named():
    chain = nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, 3))
    no_jump = _rf_variant(**{"a.r + (span - 1) * a.j": "a.r + (span - 1)"})
    fails_with("times the jump", grading.check_rf_chain, no_jump, chain, (1, 32, 32))
    no_dilation = _rf_variant(**{"span = d * (k - 1) + 1": "span = k"})
    fails_with("dilated kernel spans", grading.check_rf_chain, no_dilation, chain, (1, 32, 32))
    no_padding = _rf_variant(**{"((span - 1) / 2 - p) * a.j": "((span - 1) / 2) * a.j"})
    fails_with("padding shifts", grading.check_rf_chain, no_padding,
               nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, 2, 1)), (1, 16, 16), centers=True)
    first_path = _rf_variant(**{"max(local, key=lambda f: f[0].r * f[1].r)": "local[0]"})
    fails_with("largest field", grading.check_rf_graph, first_path, grading.branching_model("inception"), (3, 32, 32))
    with_global = _rf_variant(**{"local = [f for f in inputs if f is not GLOBAL]": "local = inputs"})
    with pytest.raises(Exception):  # the global path reaches the output: an error or a wrong field
        grading.check_rf_graph(with_global, grading.branching_model("gated"), (3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name, input_size", [("resnet50", 480), ("efficientnet_b0", 928)])
def test_measured_fields_are_measured_again(name, input_size):
    """MEASURED_FIELDS, the hidden tests' expected values, from lib.analysis at a size where they fit."""
    from lib.models import efficientnet_b0, resnet50

    model = {"resnet50": resnet50, "efficientnet_b0": efficientnet_b0}[name]()
    rf = empirical_receptive_field(model, (1, 3, input_size, input_size))
    assert not rf.clipped and rf.size == (grading.MEASURED_FIELDS[name],) * 2


def test_published_fields_are_what_the_reference_computes():
    fn = solution("receptive_field")["compute_receptive_field"]
    for name, size in {**grading.PUBLISHED_FIELDS, **grading.MEASURED_FIELDS}.items():
        assert fn(grading.published_feature_extractor(name), (3, 224, 224)).size == (size, size), name


# ---- ResNet variants ------------------------------------------------------------------------------------

def test_wrn_table_matches_the_design():
    for (depth, k), millions in grading.WRN_PARAMS_M.items():
        assert round(grading.wrn_params(depth, k) / 1e6, 1) == millions, f"WRN-{depth}-{k}"
    ns = solution("resnet_variants")
    assert sum(p.numel() for p in ns["WideResNet"](28, 10).parameters()) == grading.wrn_params(28, 10)


@pytest.mark.slow
def test_resnet_variants_reference_passes():
    ns = solution("resnet_variants")
    grading.check_preact_block(ns["PreActBlock"], c_in=6, c_out=10, stride=2, hw=(9, 6))
    grading.check_wide_resnet(ns["WideResNet"], depth=10, k=3, num_classes=7, in_channels=1, hw=(28, 20))
    grading.check_bottleneck_twin(functools.partial(ns["ResNeXtBottleneck"], groups=8, width_per_group=16),
                                  c_in=128, c_out=256, stride=2, groups=8, base_width=16)
    grading.check_torchvision_twin(ns["resnext50_32x4d"], "resnext50_32x4d", num_classes=10)


def _preact_variant(**changes):
    ns = dict(solution("resnet_variants"))
    source = "".join(next(c for c in _cells("resnet_variants") if _grade_id(c) == "preact")["source"])
    for old, new in changes.items():
        assert old in source, old
        source = source.replace(old, new)
    exec(compile(source, "variant", "exec"), ns)
    return ns


def test_resnet_variant_mistakes_are_named():
    relu_after = _preact_variant(**{"return out + shortcut": "return F.relu(out + shortcut)"})["PreActBlock"]
    fails_with("remove the ReLU after the sum", grading.check_preact_block, relu_after, c_in=8, c_out=8)
    raw_shortcut = _preact_variant(**{"self.downsample(pre)": "self.downsample(x)"})["PreActBlock"]
    fails_with("pre-activated input", grading.check_preact_block, raw_shortcut, c_in=8, c_out=16, stride=2)
    bn_after = _preact_variant(**{"self.bn1 = nn.BatchNorm2d(c_in)": "self.bn1 = nn.BatchNorm2d(c_out)"})["PreActBlock"]
    fails_with("bn1 has", grading.check_preact_block, bn_after, c_in=8, c_out=16, stride=2)

    ns = solution("resnet_variants")
    wrn_source = "".join(next(c for c in _cells("resnet_variants") if _grade_id(c) == "wrn")["source"])

    def wrn(**changes):
        source = wrn_source
        for old, new in changes.items():
            assert old in source, old
            source = source.replace(old, new)
        variant = dict(ns)
        exec(compile(source, "variant", "exec"), variant)
        return variant["WideResNet"]

    no_stride = wrn(**{"make_stage(PreActBlock, 32 * k, 64 * k, n, 2)": "make_stage(PreActBlock, 32 * k, 64 * k, n, 1)"})
    fails_with("stage 3 output is 16x16, expected 8x8: check the shortcut stride", grading.check_wide_resnet,
               no_stride, depth=16, k=2)
    wide_stem = wrn(**{"nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)": "nn.Conv2d(in_channels, 16 * k, 3, 1, 1, bias=False)",
                       "make_stage(PreActBlock, 16, 16 * k, n, 1)": "make_stage(PreActBlock, 16 * k, 16 * k, n, 1)"})
    fails_with("stem convolution has 16 output channels", grading.check_wide_resnet, wide_stem, depth=28, k=10,
               forward=False)

    class Ungrouped(ns["Bottleneck"]):
        expansion = 4

        def __init__(self, c_in, c_out, stride=1, *, groups=32, width_per_group=4):
            super().__init__(c_in, c_out, stride, width=int(c_out / 4 * width_per_group / 64) * groups)
    fails_with("input channels per group", grading.check_bottleneck_twin, Ungrouped, c_in=64, c_out=256,
               groups=32, base_width=4)


# ---- the grader's own safety ----------------------------------------------------------------------------

SETUP = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\nimport lib\nfrom lib import grading\nimport os"
CLEAN = {
    "a layer": "class A(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.w = nn.Parameter(torch.zeros(3))",
    "magics and tables": "%matplotlib inline\nresults = {}\nresults['a'] = 1\n%time x = 1\nimport pandas as pd\n"
                         "df = pd.DataFrame(results, index=[0]).rename(columns={'a': 'b'})",
    "reading a file": "with open('notes.txt') as f:\n    text = f.read()",
    "sys.exit": "import sys\nsys.exit(0)",
}
FLAGGED = {
    "patching torch": "torch.allclose = lambda *a, **k: True",
    "patching grading": "grading.check_lp_pool = lambda *a, **k: None",
    "an alias": "t = torch\nt.equal = lambda *a: True",
    "setattr": "setattr(F, 'max_pool2d', lambda *a, **k: None)",
    "sys.modules": "import sys\nsys.modules['lib.grading'] = object()",
    "input transformers": "get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])",
    "events": "ip = get_ipython()\nip.events.register('pre_run_cell', print)",
    "exec": "exec('x = 1')",
    "killing the kernel": "os._exit(0)",
    "shell": "!rm -rf lib",
    "writing a file": "open('lib/grading.py', 'w').write('x')",
    "builtins": "import builtins\nbuiltins.isinstance = lambda a, b: True",
    "importlib": "import importlib",
    "a critical name": "class X: pass\nx = X()\nx.allclose = 3",
    "a module dict": "F.__dict__['max_pool2d'] = None",
}


@pytest.mark.parametrize("name", CLEAN)
def test_scan_lets_ordinary_code_through(name):
    assert grading.scan_source(CLEAN[name], grading.imported_names([SETUP])) == []


@pytest.mark.parametrize("name", FLAGGED)
def test_scan_flags_changes_to_the_grading_environment(name):
    assert grading.scan_source(FLAGGED[name], grading.imported_names([SETUP])), name


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_scan_passes_the_reference_solutions(assignment):
    cells = [c for c in _cells(assignment) if c["cell_type"] == "code"]
    foreign = grading.imported_names(["".join(c["source"]) for c in cells])
    for cell in cells:
        if not cell["metadata"].get("nbgrader", {}).get("locked"):
            assert grading.scan_source("".join(cell["source"]), foreign) == [], _grade_id(cell)


def test_untampered_check_names_the_replaced_function(monkeypatch):
    grading.assert_untampered()
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    fails_with("torch.allclose", grading.assert_untampered)


def _config_namespace() -> dict:
    from traitlets.config import Config

    ns = {"get_config": lambda: Config()}
    exec(compile((ROOT / "nbgrader_config.py").read_text(), "nbgrader_config.py", "exec"), ns)
    return ns


def test_guard_disables_only_untrusted_cells():
    guard = _config_namespace()["GuardCells"]()
    nb = nbformat.v4.new_notebook()
    trusted = nbformat.v4.new_code_cell("torch.allclose = None  # a locked cell, restored from the gradebook")
    trusted.metadata["nbgrader"] = {"grade_id": "setup", "locked": True, "grade": False, "solution": False}
    forged = nbformat.v4.new_code_cell("torch.allclose = None")
    forged.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False}  # grade_id removed by nbgrader
    student = nbformat.v4.new_code_cell("x = 1")
    nb.cells = [nbformat.v4.new_code_cell(SETUP), trusted, forged, student]
    nb, _ = guard.preprocess(nb, {"nbgrader": {"student": "s"}})
    assert nb.cells[1].source.startswith("torch.allclose = None")
    assert nb.cells[2].source.startswith("raise RuntimeError(") and "torch.allclose" in nb.cells[2].source
    assert nb.cells[3].source == "x = 1"


def test_output_limit_cuts_text_and_drops_big_images():
    truncate = _config_namespace()["TruncateOutputs"](max_chars=100)
    cell = nbformat.v4.new_code_cell("print")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 1000),
                    nbformat.v4.new_output("display_data", data={"image/png": "A" * 1000, "text/plain": "fig"}),
                    nbformat.v4.new_output("error", ename="E", evalue="e" * 1000, traceback=["t" * 1000])]
    cell, _ = truncate.preprocess_cell(cell, {}, 0)
    assert len(cell.outputs[0].text) < 200 and "truncated" in cell.outputs[0].text
    assert "image/png" not in cell.outputs[1].data and "removed" in cell.outputs[1].data["text/plain"]
    assert len(cell.outputs[2].evalue) < 200 and sum(map(len, cell.outputs[2].traceback)) < 200


def _first_test_cell(assignment: str) -> str:
    return "".join(next(c for c in _cells(assignment) if _grade_id(c) == "test_mixed_fixed")["source"])


def test_test_cells_use_a_fresh_lib_and_give_the_notebook_its_own_back():
    """A submission that patched lib.grading in memory fails the test cell; the notebook's modules survive."""
    import lib.grading as notebooks_grading

    ns = dict(solution("mixed_pooling"))
    ns["MixedPool2d"] = _mixed(MIXED_MISTAKES["plain max pooling"])
    saved = {name: getattr(notebooks_grading, name) for name in dir(notebooks_grading) if name.startswith("check_")}
    try:
        for name in saved:  # what a hostile cell would do at run time
            setattr(notebooks_grading, name, lambda *a, **k: None)
        with pytest.raises(AssertionError):  # a GradingError of the fresh copy
            exec(compile(_first_test_cell("mixed_pooling"), "test_mixed_fixed", "exec"), ns)
        assert sys.modules["lib.grading"] is notebooks_grading, "the notebook lost its own lib.grading"
        assert ns["grading"] is not notebooks_grading, "the test cell did not load a fresh copy"
    finally:
        for name, fn in saved.items():
            setattr(notebooks_grading, name, fn)


def test_every_test_cell_starts_with_the_fresh_import():
    for assignment in ASSIGNMENTS:
        for cell in _cells(assignment):
            if cell["metadata"].get("nbgrader", {}).get("grade") and cell["cell_type"] == "code":
                source = "".join(cell["source"])
                assert source.startswith("import sys") and "grading.assert_untampered()" in source.splitlines()[2], \
                    f"{assignment}:{_grade_id(cell)} must start with the fresh-import bootstrap"
