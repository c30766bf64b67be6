"""grader.checks, the hidden tests behind the exercises' test cells, without nbgrader: they accept the reference
solutions, reject typical mistakes with a message that names the fix, and their reference numbers agree with
independent measurements. Also the grader's safety: the source scan, the tamper check, references only the
grader may call, the own-work checks, the guard, the output limit, feedback without hidden tests, and the
hidden tests' fresh import of the grader.
"""
from __future__ import annotations

import functools
import json
import math
import re
import os
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader import preprocessors, scan
from grader.checks import base, integrity
from grader.checks import pooling as P
from grader.checks import receptive_field as RF
from grader.checks import resnet_variants as RV
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
    saved = os.environ.get("NBGRADER_EXECUTION")
    os.environ["NBGRADER_EXECUTION"] = "validate"  # the notebooks' QUICK sizes; only while their cells run
    wanted = {"mixed_pooling": {"setup", "mixed_pool", "stochastic_pool", "lp_pool", "make_net"},
              "receptive_field": {"setup", "calculator"},
              "resnet_variants": {"setup", "preact", "wrn", "resnext"}}[assignment]
    ns: dict = {}
    for cell in _cells(assignment):
        if _grade_id(cell) in wanted:
            exec(compile("".join(cell["source"]), f"{assignment}:{_grade_id(cell)}", "exec"), ns)
    if saved is None:
        os.environ.pop("NBGRADER_EXECUTION")
    else:
        os.environ["NBGRADER_EXECUTION"] = saved
    return ns


def fails_with(fragment: str, check, *args, **kwargs) -> None:
    with pytest.raises(base.GradingError) as info:
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
    P.check_mixed_pool_fixed(ns["MixedPool2d"], shape=(3, 5, 13, 11), kernel_size=3, stride=2, padding=1, alpha=0.7)
    for mode in ("layer", "channel"):
        P.check_mixed_pool_learnable(ns["MixedPool2d"], mode=mode, shape=(2, 7, 9, 9), kernel_size=3, alpha=0.8)
    P.check_stochastic_pool(ns["StochasticPool2d"], shape=(2, 2, 10, 10), kernel_size=3, stride=2, seed=3)
    P.check_lp_pool(ns["LPPool2d"], p=4.5, shape=(1, 3, 11, 11), kernel_size=3, stride=2, zero_window=True)
    pools = {"max": lambda c: nn.MaxPool2d(2), "mixed": lambda c: ns["MixedPool2d"](2, learnable="channel", channels=c)}
    P.check_pooling_comparison(ns["make_net"], pools, None)


@pytest.mark.parametrize("fragment", MIXED_MISTAKES)
def test_mixed_pooling_mistakes_are_named(fragment):
    fails_with(fragment, P.check_mixed_pool_fixed, _mixed(MIXED_MISTAKES[fragment]),
               shape=(2, 3, 9, 9), kernel_size=3, stride=2, padding=1, alpha=0.3)


def test_fixed_alpha_must_not_be_a_parameter():
    cls = _mixed(lambda self, x: self.alpha * F.max_pool2d(x, self.k, self.s, self.p)
                 + (1 - self.alpha) * F.avg_pool2d(x, self.k, self.s, self.p), learnable_param=True)
    fails_with("must not be trained", P.check_mixed_pool_fixed, cls, shape=(2, 3, 8, 8), kernel_size=2, alpha=0.5)


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
    fails_with(fragment, P.check_mixed_pool_learnable, cls, mode="channel", shape=(2, 4, 8, 8), alpha=0.3)


def _stochastic(train_fn, eval_fn):
    class Stochastic(nn.Module):
        def __init__(self, kernel_size, stride=None):
            super().__init__()
            self.k, self.s = kernel_size, stride or kernel_size

        def forward(self, x):
            return (train_fn if self.training else eval_fn)(self, x)
    return Stochastic


def _eval_ok(self, x):  # the probability-weighted average, written here (the grader's reference is not for callers)
    num, den = F.avg_pool2d(x * x, self.k, self.s), F.avg_pool2d(x, self.k, self.s)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(den))


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
    fails_with(fragment, P.check_stochastic_pool, STOCHASTIC_MISTAKES[fragment], shape=(2, 3, 8, 8), kernel_size=2)


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
    fails_with(fragment, P.check_lp_pool, _lp(forward), p=3, shape=(2, 3, 9, 9), kernel_size=3,
               zero_window=zero_window)


# ---- receptive fields -----------------------------------------------------------------------------------

def _measure(model: nn.Module, input_size, field_size) -> tuple:
    """The measured field of the centre unit, on an input with room for it (a real copy of a meta model)."""
    real = RF.real_copy(model) if any(p.is_meta for p in model.parameters()) else model
    big = (1, input_size[0], input_size[1] + 2 * field_size[0], input_size[2] + 2 * field_size[1])
    return empirical_receptive_field(real, big), big


def test_hidden_chains_are_on_the_meta_device_and_the_reference_matches_the_measurement():
    """The recursion in grader.checks against lib.analysis's gradient-based measurement, on real copies."""
    for seed in range(12):
        chain, (c, h, w) = RF.random_chain(seed)
        assert all(p.is_meta for p in chain.parameters())
        ref = RF.chain_field_reference(list(chain), (h, w))
        measured, big = _measure(chain, (c, h, w), ref["size"])
        assert not measured.clipped
        assert measured.size == ref["size"], f"seed {seed}: {chain}"
        big_ref = RF.chain_field_reference(list(chain), big[2:])
        i, j = measured.unit
        assert measured.center == (big_ref["start"][0] + i * big_ref["jump"][0], big_ref["start"][1] + j * big_ref["jump"][1])


HIDDEN_GRAPHS = [("residual", dict(width=3, k=5, dilation=2), (48, 40)), ("inception", dict(dilation=3), (40, 36)),
                 ("dilated", dict(rates=(1, 3, 6)), (64, 60)), ("gated", dict(k=5), (30, 34)),
                 ("dense", dict(k=5), (33, 31)), ("asymmetric", dict(k=7), (29, 41))]


@pytest.mark.parametrize("kind, options, hw", HIDDEN_GRAPHS, ids=[k for k, _, _ in HIDDEN_GRAPHS])
def test_graph_reference_matches_the_measurement(kind, options, hw):
    """Every hidden branching network: the analytic reference equals what back-propagation measures on a real
    copy (size, and the centre of the measured unit)."""
    model = RF.hidden_model(kind, **options)
    assert all(p.is_meta for p in model.parameters())
    ref = RF.reference_field(model, (3, *hw))
    measured, big = _measure(model, (3, *hw), ref["size"])
    assert not measured.clipped and measured.size == ref["size"], (kind, measured.size, ref["size"])
    centers = RF.reference_field(model, (3, *big[2:]))["centers"]
    i, j = measured.unit
    assert (centers[0][i], centers[1][j]) == measured.center


@pytest.mark.slow
def test_receptive_field_reference_passes_the_hidden_cases():
    fn = solution("receptive_field")["compute_receptive_field"]
    for seed in range(300, 306):
        RF.check_rf_chain(fn, *RF.random_chain(seed), centers=True)
    for kind, options, hw in HIDDEN_GRAPHS:
        RF.check_rf_graph(fn, RF.hidden_model(kind, **options), (3, *hw), name=kind)
    for name in ("vgg16", "resnet50_v1", "resnet50", "efficientnet_b0", "vgg19", "resnet34"):
        RF.check_rf_published(fn, name)


def test_a_calculator_that_measures_fails_the_hidden_cases():
    """Wrapping lib.analysis.empirical_receptive_field passes the visible tests (real models) but not the hidden
    ones (meta models), and the message says why."""
    def measuring(model, input_size):
        rf = empirical_receptive_field(model, (1, *input_size))
        return types.SimpleNamespace(size=rf.size, jump=(1, 1), centers=((rf.center[0],), (rf.center[1],)))

    fails_with("meta device", RF.check_rf_chain, measuring, *RF.random_chain(5))
    fails_with("meta device", RF.check_rf_graph, measuring, RF.hidden_model("residual"), (3, 32, 32))
    fails_with("meta device", RF.check_rf_published, measuring, "vgg16")


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
    fails_with("times the jump", RF.check_rf_chain, no_jump, chain, (1, 32, 32))
    no_dilation = _rf_variant(**{"span = d * (k - 1) + 1": "span = k"})
    fails_with("dilated kernel spans", RF.check_rf_chain, no_dilation, chain, (1, 32, 32))
    no_padding = _rf_variant(**{"((span - 1) / 2 - p) * a.j": "((span - 1) / 2) * a.j"})
    fails_with("padding shifts", RF.check_rf_chain, no_padding,
               nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, 2, 1)), (1, 16, 16), centers=True)
    first_path = _rf_variant(**{"max(local, key=lambda f: f[0].r * f[1].r)": "local[0]"})
    fails_with("largest field", RF.check_rf_graph, first_path, RF.hidden_model("inception"), (3, 32, 32))
    with_global = _rf_variant(**{"local = [f for f in inputs if f is not GLOBAL]": "local = inputs"})
    with pytest.raises(base.GradingError):  # the global path reaches the output: an error or a wrong field
        RF.check_rf_graph(with_global, RF.hidden_model("gated"), (3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name, input_size", [("resnet50", 480), ("efficientnet_b0", 928), ("resnet18", 480),
                                              ("vgg19", 320)])
def test_whole_network_references_are_measured_again(name, input_size):
    """The hidden tests' expected fields of whole networks, from the analytic reference, equal lib.analysis's
    measurement at a size where they fit (and VGG-16 and ResNet-50 v1 equal Araujo et al.'s published values)."""
    rf = empirical_receptive_field(RF.real_copy(RF.published_feature_extractor(name)), (1, 3, input_size, input_size))
    assert not rf.clipped
    assert rf.size == RF.reference_field(RF.published_feature_extractor(name), (3, 224, 224))["size"]


def test_published_fields_are_what_the_reference_computes():
    fn = solution("receptive_field")["compute_receptive_field"]
    for name, size in RF.PUBLISHED_FIELDS.items():
        assert RF.reference_field(RF.published_feature_extractor(name), (3, 224, 224))["size"] == (size, size), name
        assert fn(RF.published_feature_extractor(name), (3, 224, 224)).size == (size, size), name


# ---- ResNet variants ------------------------------------------------------------------------------------

def test_wrn_table_matches_the_design():
    for (depth, k), millions in RV.WRN_PARAMS_M.items():
        assert round(RV.wrn_params(depth, k) / 1e6, 1) == millions, f"WRN-{depth}-{k}"
    ns = solution("resnet_variants")
    assert sum(p.numel() for p in ns["WideResNet"](28, 10).parameters()) == RV.wrn_params(28, 10)


@pytest.mark.slow
def test_resnet_variants_reference_passes():
    ns = solution("resnet_variants")
    RV.check_preact_block(ns["PreActBlock"], c_in=6, c_out=10, stride=2, hw=(9, 6))
    RV.check_wide_resnet(ns["WideResNet"], depth=10, k=3, num_classes=7, in_channels=1, hw=(28, 20))
    RV.check_bottleneck_twin(functools.partial(ns["ResNeXtBottleneck"], groups=8, width_per_group=16),
                                  c_in=128, c_out=256, stride=2, groups=8, base_width=16)
    RV.check_torchvision_twin(ns["resnext50_32x4d"], "resnext50_32x4d", num_classes=10)


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
    fails_with("remove the ReLU after the sum", RV.check_preact_block, relu_after, c_in=8, c_out=8)
    raw_shortcut = _preact_variant(**{"self.downsample(pre)": "self.downsample(x)"})["PreActBlock"]
    fails_with("pre-activated input", RV.check_preact_block, raw_shortcut, c_in=8, c_out=16, stride=2)
    bn_after = _preact_variant(**{"self.bn1 = nn.BatchNorm2d(c_in)": "self.bn1 = nn.BatchNorm2d(c_out)"})["PreActBlock"]
    fails_with("bn1 has", RV.check_preact_block, bn_after, c_in=8, c_out=16, stride=2)

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
    fails_with("stage 3 output is 16x16, expected 8x8: check the shortcut stride", RV.check_wide_resnet,
               no_stride, depth=16, k=2)
    wide_stem = wrn(**{"nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)": "nn.Conv2d(in_channels, 16 * k, 3, 1, 1, bias=False)",
                       "make_stage(PreActBlock, 16, 16 * k, n, 1)": "make_stage(PreActBlock, 16 * k, 16 * k, n, 1)"})
    fails_with("stem convolution has 16 output channels", RV.check_wide_resnet, wide_stem, depth=28, k=10,
               forward=False)

    class Ungrouped(ns["Bottleneck"]):
        expansion = 4

        def __init__(self, c_in, c_out, stride=1, *, groups=32, width_per_group=4):
            super().__init__(c_in, c_out, stride, width=int(c_out / 4 * width_per_group / 64) * groups)
    fails_with("input channels per group", RV.check_bottleneck_twin, Ungrouped, c_in=64, c_out=256,
               groups=32, base_width=4)


# ---- the grader's own safety ----------------------------------------------------------------------------

SETUP = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\nimport lib\nfrom lib import train\nimport os"
CLEAN = {
    "a layer": "class A(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.w = nn.Parameter(torch.zeros(3))",
    "magics and tables": "%matplotlib inline\nresults = {}\nresults['a'] = 1\n%time x = 1\nimport pandas as pd\n"
                         "df = pd.DataFrame(results, index=[0]).rename(columns={'a': 'b'})",
    "reading a file": "with open('notes.txt') as f:\n    text = f.read()",
    "sys.exit": "import sys\nsys.exit(0)",
}
FLAGGED = {
    "patching torch": "torch.allclose = lambda *a, **k: True",
    "patching lib": "train.fit = lambda *a, **k: None",
    "an alias": "t = torch\nt.equal = lambda *a: True",
    "setattr": "setattr(F, 'max_pool2d', lambda *a, **k: None)",
    "sys.modules": "import sys\nsys.modules['grader.checks.pooling'] = object()",
    "input transformers": "get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])",
    "events": "ip = get_ipython()\nip.events.register('pre_run_cell', print)",
    "exec": "exec('x = 1')",
    "killing the kernel": "os._exit(0)",
    "shell": "!rm -rf lib",
    "writing a file": "open('lib/train.py', 'w').write('x')",
    "builtins": "import builtins\nbuiltins.isinstance = lambda a, b: True",
    "importlib": "import importlib",
    "a critical name": "class X: pass\nx = X()\nx.allclose = 3",
    "a module dict": "F.__dict__['max_pool2d'] = None",
    "the grader": "from grader.checks.pooling import mixed_pool_reference",
    "the grader, by pkgutil": "import pkgutil\nref = pkgutil.resolve_name('grader.checks.pooling:mixed_pool_reference')",
    "the grader, by pickle": "import pickle\nref = pickle.loads(b'cgrader.checks.pooling\\nmixed_pool_reference\\n.')",
}


@pytest.mark.parametrize("name", CLEAN)
def test_scan_lets_ordinary_code_through(name):
    assert scan.scan_source(CLEAN[name], scan.imported_names([SETUP])) == []


@pytest.mark.parametrize("name", FLAGGED)
def test_scan_flags_changes_to_the_grading_environment(name):
    assert scan.scan_source(FLAGGED[name], scan.imported_names([SETUP])), name


def test_scan_flags_the_tools_an_answer_may_not_use():
    rules = scan.FORBIDDEN_CALLS["receptive_field"]["calculator"]
    wrapper = ("def compute_receptive_field(model, input_size):\n"
               "    rf = empirical_receptive_field(model, (1, *input_size))\n    return rf")
    renamed = "measure = lib.analysis.empirical_receptive_field\ndef compute_receptive_field(m, s):\n    return measure(m, s)"
    for source in (wrapper, renamed):
        findings = scan.scan_source(source, scan.imported_names([SETUP]), rules)
        assert findings and "empirical_receptive_field" in str(findings[0]) and "instead of computing" in str(findings[0])
    assert scan.scan_source(wrapper, scan.imported_names([SETUP])) == [], "elsewhere the tool is allowed"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_scan_passes_the_reference_solutions(assignment):
    cells = [c for c in _cells(assignment) if c["cell_type"] == "code"]
    foreign = scan.imported_names(["".join(c["source"]) for c in cells])
    rules = scan.FORBIDDEN_CALLS.get(assignment, {})
    for cell in cells:
        if not cell["metadata"].get("nbgrader", {}).get("locked"):
            assert scan.scan_source("".join(cell["source"]), foreign, rules.get(_grade_id(cell))) == [], _grade_id(cell)


def test_untampered_check_names_the_replaced_function(monkeypatch):
    integrity.assert_untampered()
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    fails_with("torch.allclose", integrity.assert_untampered)


def test_references_refuse_callers_outside_the_grader(monkeypatch):
    """Under nbgrader, a submission that reaches a reference (by any door) fails instead of earning the points;
    the grader's own checks still use it."""
    x = torch.rand(1, 2, 4, 4)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    P.mixed_pool_reference(x, 0.5, 2)  # outside nbgrader (tests, the instructor's scripts) it is a function
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    fails_with("called the grader's reference `mixed_pool_reference`", P.mixed_pool_reference, x, 0.5, 2)

    class Shortcut(nn.Module):
        def __init__(self, kernel_size, stride=None, padding=0, *, alpha=0.5, learnable=None, channels=None):
            super().__init__()
            self.args = kernel_size, stride, padding
            self.alpha = alpha

        def forward(self, x):
            return P.mixed_pool_reference(x, self.alpha, *self.args)
    fails_with("the points are for writing it yourself", P.check_mixed_pool_fixed, Shortcut, shape=(2, 3, 8, 8),
               kernel_size=2)
    ns = solution("mixed_pooling")
    P.check_mixed_pool_fixed(ns["MixedPool2d"], shape=(2, 3, 8, 8), kernel_size=2)  # the checks still work


def test_torchvision_implementations_are_not_the_students_work():
    import torchvision

    class Derived(torchvision.models.resnet.Bottleneck):
        expansion = 4

        def __init__(self, c_in, c_out, stride=1, *, groups=32, width_per_group=4):
            super().__init__(c_in, c_out // 4, stride, None, groups, width_per_group)
    fails_with("derives from torchvision.models.resnet.Bottleneck: build it from lib.models.blocks.Bottleneck",
               RV.check_bottleneck_twin, Derived, c_in=256, c_out=256, groups=32, base_width=4)

    def returns_torchvision(*, num_classes=1000):
        return torchvision.models.resnext50_32x4d(weights=None, num_classes=num_classes)
    fails_with("is torchvision's torchvision.models.resnet.ResNet", RV.check_torchvision_twin, returns_torchvision,
               "resnext50_32x4d")


def _config():
    from traitlets.config.loader import PyFileConfigLoader
    return PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()


def test_config_is_a_few_lines_that_call_the_grader():
    text = (ROOT / "nbgrader_config.py").read_text()
    code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", '"""'))]
    assert len(code) <= 8 and "from grader.config import configure" in text
    c = _config()
    assert preprocessors.GuardCells in c.Autograde.sanitize_preprocessors
    assert preprocessors.HideHiddenTests in c.GenerateFeedback.preprocessors


def test_guard_disables_only_untrusted_cells():
    guard = preprocessors.GuardCells()
    nb = nbformat.v4.new_notebook()
    trusted = nbformat.v4.new_code_cell("torch.allclose = None  # a locked cell, restored from the gradebook")
    trusted.metadata["nbgrader"] = {"grade_id": "setup", "locked": True, "grade": False, "solution": False}
    forged = nbformat.v4.new_code_cell("torch.allclose = None")
    forged.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False}  # grade_id removed by nbgrader
    student = nbformat.v4.new_code_cell("x = 1")
    calculator = nbformat.v4.new_code_cell("def compute_receptive_field(m, s):\n    return empirical_receptive_field(m, s)")
    calculator.metadata["nbgrader"] = {"grade_id": "calculator", "solution": True, "grade": False, "locked": False}
    nb.cells = [nbformat.v4.new_code_cell(SETUP), trusted, forged, student, calculator]
    nb, _ = guard.preprocess(nb, {"nbgrader": {"student": "s", "assignment": "receptive_field"}})
    assert nb.cells[1].source.startswith("torch.allclose = None")
    assert nb.cells[2].source.startswith("raise RuntimeError(") and "torch.allclose" in nb.cells[2].source
    assert nb.cells[3].source == "x = 1"
    assert nb.cells[4].source.startswith("raise RuntimeError(") and "instead of computing it" in nb.cells[4].source


def test_output_limit_cuts_text_and_drops_big_images():
    truncate = preprocessors.TruncateOutputs(max_chars=100)
    cell = nbformat.v4.new_code_cell("print")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 1000),
                    nbformat.v4.new_output("display_data", data={"image/png": "A" * 1000, "text/plain": "fig"}),
                    nbformat.v4.new_output("error", ename="E", evalue="e" * 1000, traceback=["t" * 1000])]
    cell, _ = truncate.preprocess_cell(cell, {}, 0)
    assert len(cell.outputs[0].text) < 200 and "truncated" in cell.outputs[0].text
    assert "image/png" not in cell.outputs[1].data and "removed" in cell.outputs[1].data["text/plain"]
    assert len(cell.outputs[2].evalue) < 200 and sum(map(len, cell.outputs[2].traceback)) < 200


def test_feedback_shows_no_hidden_test():
    """The feedback keeps a test cell's visible part and the failure's message; the hidden source and any
    traceback that quotes it are gone, so hidden cases cannot be read off the feedback."""
    source = "".join(next(c for c in _cells("receptive_field") if _grade_id(c) == "test_rf_chain")["source"])
    hidden_line = next(line for line in source.splitlines() if "random_chain(" in line)
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade_id": "test_rf_chain", "grade": True, "solution": False, "locked": True, "points": 3}
    cell.outputs = [nbformat.v4.new_output("error", ename="GradingError", evalue="size (5, 5), expected (7, 7)",
                                           traceback=["Cell In[6], line 20", "---> 20 " + hidden_line.strip(),
                                                      "GradingError: size (5, 5), expected (7, 7)"])]
    visible = nbformat.v4.new_code_cell("assert False, 'visible'")
    visible.metadata["nbgrader"] = {"grade_id": "test_x", "grade": True, "solution": False, "locked": True, "points": 1}
    visible.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="visible",
                                              traceback=["---> 1 assert False, 'visible'", "AssertionError: visible"])]
    hide = preprocessors.HideHiddenTests()
    cell, _ = hide.preprocess_cell(cell, {}, 0)
    assert "BEGIN HIDDEN" not in cell.source and "random_chain" not in cell.source and "hidden." not in cell.source
    assert "size 10" not in cell.source and "(10, 10)" in cell.source, "the visible tests stay"
    assert cell.outputs[0].traceback == ["GradingError: size (5, 5), expected (7, 7)"]
    visible, _ = hide.preprocess_cell(visible, {}, 1)
    assert len(visible.outputs[0].traceback) == 2, "a failure in the visible part keeps its traceback"


HIDDEN_PREAMBLE = 3  # lines after BEGIN HIDDEN TESTS that load the grader's checks


def _hidden_part(assignment: str, grade_id: str) -> str:
    source = "".join(next(c for c in _cells(assignment) if _grade_id(c) == grade_id)["source"])
    return source.split("### BEGIN HIDDEN TESTS", 1)[1]


def test_hidden_tests_use_a_fresh_grader_and_give_the_notebook_its_own_modules_back(monkeypatch, tmp_path):
    """A submission that patched the grader in memory, or put a fake grader/ in its folder, fails the hidden
    tests; the notebook's own modules survive."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grader" / "checks").mkdir(parents=True)
    (tmp_path / "grader" / "__init__.py").write_text("")
    (tmp_path / "grader" / "checks" / "__init__.py").write_text("")
    (tmp_path / "grader" / "checks" / "pooling.py").write_text(
        "def assert_untampered():\n    pass\n\ndef __getattr__(name):\n    return lambda *a, **k: None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    notebooks_pooling = P
    ns = dict(solution("mixed_pooling"))
    ns["MixedPool2d"] = _mixed(MIXED_MISTAKES["plain max pooling"])
    saved = {name: getattr(P, name) for name in dir(P) if name.startswith("check_")}
    try:
        for name in saved:  # what a hostile cell would do at run time
            setattr(P, name, lambda *a, **k: None)
        with pytest.raises(AssertionError):  # a GradingError of the fresh copy
            exec(compile(_hidden_part("mixed_pooling", "test_mixed_fixed"), "test_mixed_fixed", "exec"), ns)
        assert sys.modules["grader.checks.pooling"] is notebooks_pooling, "the notebook lost its own modules"
        assert ns["hidden"] is not notebooks_pooling, "the hidden tests did not load a fresh copy"
        assert Path(ns["hidden"].__file__).resolve().is_relative_to(ROOT), "the fake grader/ beside it was loaded"
    finally:
        for name, fn in saved.items():
            setattr(P, name, fn)


def test_every_test_cell_has_visible_tests_and_loads_the_grader_only_in_its_hidden_part():
    for assignment in ASSIGNMENTS:
        for cell in _cells(assignment):
            if cell["metadata"].get("nbgrader", {}).get("grade") and cell["cell_type"] == "code":
                source = "".join(cell["source"])
                visible, _, hidden = source.partition("### BEGIN HIDDEN TESTS")
                assert not re.search(r"\bgrader\b", visible), f"{assignment}:{_grade_id(cell)}: the visible part uses the grader"
                assert "assert " in visible, f"{assignment}:{_grade_id(cell)}: no visible test"
                lines = hidden.strip().splitlines()
                assert "hidden.assert_untampered()" in lines[HIDDEN_PREAMBLE], f"{assignment}:{_grade_id(cell)}"
                assert lines[-1].strip() == "### END HIDDEN TESTS"
