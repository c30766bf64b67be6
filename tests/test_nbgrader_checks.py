"""The hidden tests without nbgrader: each test cell's hidden part runs here on the solution's code (as the kernel
would) and the grader's judge decides its report. The judges accept the reference solutions, reject typical
mistakes with a message that names the fix, read reports as hostile input, and their references agree with
independent measurements. Also the grader's other safety: the source scan (linear, magics included), the
guard, the output limit, feedback without hidden tests, and a sandbox that binds nothing of the grader.
"""
from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lib.report
from grader import judge, preprocessors, scan
from grader.course import assignments
from grader.checks import pooling as P
from grader.checks import receptive_field as RF
from grader.checks import resnet_variants as RV
from lib.analysis import empirical_receptive_field

import judge_helpers as H

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = tuple(assignments(ROOT))  # every assignment in solutions/


_cells, _grade_id, failed = H.cells, H.grade_id, H.failed


def _source(assignment: str, grade_id: str) -> str:
    return H.sources(assignment)[grade_id]


@functools.cache
def solution(assignment: str) -> dict:
    """The namespace of a solution notebook after its setup and definition cells (no tests, no training)."""
    wanted = {"mixed_pooling": {"setup", "mixed_pool", "stochastic_pool", "lp_pool", "make_net"},
              "receptive_field": {"setup", "calculator"},
              "resnet_variants": {"setup", "preact", "wrn", "resnext"}}[assignment]
    ns: dict = {}
    with H.quick_sizes():
        for cell in _cells(assignment):
            if _grade_id(cell) in wanted:
                exec(compile("".join(cell["source"]), f"{assignment}:{_grade_id(cell)}", "exec"), ns)
    return ns


def kernel_report(assignment: str, grade_id: str, namespace: dict, cases: list[dict]):
    """What the cell's hidden part reports when it runs in ``namespace`` on ``cases`` (as the kernel would)."""
    return H.kernel_report(assignment, grade_id, _source(assignment, grade_id), namespace, cases)


def judged(assignment: str, grade_id: str, namespace: dict | None = None, seed: int = 7, **replace) -> list:
    """The checks of one test cell, for the solution's namespace with ``replace``d names."""
    ns = dict(solution(assignment) if namespace is None else namespace, **replace)
    return H.judged(assignment, grade_id, _source(assignment, grade_id), ns, seed)


# ---- the protocol: hidden cases, reports, the judge's decision --------------------------------------------

def test_cases_are_drawn_per_run_and_reproducible_within_one():
    cell = P.CELLS["test_mixed_fixed"]
    assert judge.draw_cases(cell, 1, "test_mixed_fixed") == judge.draw_cases(cell, 1, "test_mixed_fixed")
    assert judge.draw_cases(cell, 1, "test_mixed_fixed") != judge.draw_cases(cell, 2, "test_mixed_fixed")


def _test_cell(assignment: str, grade_id: str, outputs: list) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(_source(assignment, grade_id))
    cell.metadata["nbgrader"] = {"grade_id": grade_id, "grade": True, "solution": False, "locked": True, "points": 2}
    cell.outputs = outputs
    return cell


def _report(data) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data={lib.report.MIME: data, "text/plain": "..."})


def _judge_cell(cell, cases) -> tuple[float, str]:
    judge.JudgeReports(max_report_chars=200_000).judge_cell(cell, P.CELLS["test_lp"], cases)
    result = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert len(result) == 1 and lib.report.MIME not in json.dumps(cell.outputs)
    summary = next(o for o in cell.outputs if o.output_type == "display_data").data["text/plain"]
    return float(result[0].data["text/plain"]), summary


def test_reports_are_hostile_input_and_a_cell_that_reports_nothing_earns_nothing():
    cases = judge.draw_cases(P.CELLS["test_lp"], 3, "test_lp")
    good = kernel_report("mixed_pooling", "test_lp", solution("mixed_pooling"), cases)
    assert _judge_cell(_test_cell("mixed_pooling", "test_lp", [_report(good)]), cases)[0] == 2.0
    bad = {
        "nothing": [],
        "twice": [_report(good), _report(good)],
        "too big": [_report(good + ["x" * 300_000])],
        "not a list": [_report({"ok": 1})],
        "a string that is not JSON": [_report("{'__reduce__': 1")],
        "an error after it": [_report(good), nbformat.v4.new_output("error", ename="E", evalue="", traceback=[])],
    }
    for what, outputs in bad.items():
        points, summary = _judge_cell(_test_cell("mixed_pooling", "test_lp", outputs), cases)
        assert points == 0.0, what
        assert "FAILED" in summary and "passed" not in summary, what
    forged = json.loads(json.dumps(good))
    forged[0]["ok"]["y"] = {"tensor": "torch.float64", "shape": [10**9], "data": [0.0]}
    assert _judge_cell(_test_cell("mixed_pooling", "test_lp", [_report(forged)]), cases)[0] == pytest.approx(1.6)


def test_partial_credit_is_the_share_of_checks_passed_with_one_message_each():
    cases = judge.draw_cases(P.CELLS["test_lp"], 3, "test_lp")
    mean_only = _lp(lambda self, x: F.avg_pool2d(x, self.kernel_size, self.stride))
    report = kernel_report("mixed_pooling", "test_lp", dict(solution("mixed_pooling"), LPPool2d=mean_only), cases)
    points, summary = _judge_cell(_test_cell("mixed_pooling", "test_lp", [_report(report)]), cases)
    assert points == pytest.approx(2.0 * sum(c["p"] == 1 for c in cases) / len(cases))
    assert summary.count("FAILED") == sum(c["p"] != 1 for c in cases) and "take the 1/p-th root" not in summary
    assert "LPPool2d(p=3, kernel_size=3, stride=None) on (3, 2, 9, 9) (0.4 points): " in summary


def test_a_tensor_subclass_arrives_as_its_values():
    class Agreeable(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            result = super().__torch_function__(func, types, args, kwargs or {})
            return True if func in (torch.allclose, torch.equal, torch.Tensor.__eq__) else result

    fake = torch.zeros(2, 2).as_subclass(Agreeable)
    assert lib.report.plain(fake) == {"tensor": "torch.float64", "shape": [2, 2], "data": [0.0] * 4}
    assert lib.report.plain(torch.tensor([float("nan"), 1.0]))["data"] == ["nan", 1.0]


# ---- mixed pooling ----------------------------------------------------------------------------------------

def _mixed(forward):
    """A MixedPool2d with a fixed alpha whose forward is ``forward(self, x)``."""
    class Mixed(nn.Module):
        def __init__(self, kernel_size, stride=None, padding=0, *, alpha=0.5, learnable=None, channels=None):
            super().__init__()
            self.k, self.s, self.p, self.alpha = kernel_size, stride, padding, alpha

        def forward(self, x):
            return forward(self, x)
    return Mixed


MIXED_MISTAKES = {
    "alpha weights the average": lambda self, x: ((1 - self.alpha) * F.max_pool2d(x, self.k, self.s, self.p)
                                                  + self.alpha * F.avg_pool2d(x, self.k, self.s, self.p)),
    "plain max pooling": lambda self, x: F.max_pool2d(x, self.k, self.s, self.p),
    "leaves the zero padding out": lambda self, x: (self.alpha * F.max_pool2d(x, self.k, self.s, self.p) + (1 - self.alpha)
                                                    * F.avg_pool2d(x, self.k, self.s, self.p, count_include_pad=False)),
    "pass kernel_size, stride and padding": lambda self, x: (self.alpha * F.max_pool2d(x, self.k)
                                                             + (1 - self.alpha) * F.avg_pool2d(x, self.k)),
}


def test_mixed_pooling_reference_passes():
    for grade_id in ("test_mixed_fixed", "test_mixed_learnable", "test_stochastic", "test_lp"):
        assert failed(judged("mixed_pooling", grade_id)) == [], grade_id


@pytest.mark.parametrize("fragment", MIXED_MISTAKES)
def test_mixed_pooling_mistakes_are_named(fragment):
    messages = failed(judged("mixed_pooling", "test_mixed_fixed", MixedPool2d=_mixed(MIXED_MISTAKES[fragment])))
    assert messages and any(fragment in m for m in messages), messages


def test_learned_alpha_outside_its_range_is_named():
    class Unbounded(nn.Module):
        def __init__(self, kernel_size, stride=None, padding=0, *, alpha=0.5, learnable=None, channels=None):
            super().__init__()
            self.k, self.s = kernel_size, stride
            self.alpha = nn.Parameter(torch.full((1 if learnable == "layer" else channels,), alpha))

        def forward(self, x):
            a = self.alpha.view(1, -1, 1, 1)
            return a * F.max_pool2d(x, self.k, self.s) + (1 - a) * F.avg_pool2d(x, self.k, self.s)
    messages = failed(judged("mixed_pooling", "test_mixed_learnable", MixedPool2d=Unbounded))
    assert len(messages) == 5 and any("outside [0, 1]: keep it in range" in m for m in messages), messages


def _lp(forward):
    class LP(nn.Module):
        def __init__(self, p, kernel_size, stride=None):
            super().__init__()
            self.p, self.kernel_size, self.stride = p, kernel_size, stride or kernel_size

        def forward(self, x):
            return forward(self, x)
    return LP


def test_stochastic_and_lp_mistakes_are_named():
    uniform = type("Uniform", (nn.Module,), {
        "__init__": lambda self, k, stride=None: (nn.Module.__init__(self), setattr(self, "k", k),
                                                  setattr(self, "s", stride or k))[0],
        "forward": lambda self, x: F.avg_pool2d(x, self.k, self.s)})
    assert all("this is the plain average" in m for m in failed(judged("mixed_pooling", "test_stochastic",
                                                                       StochasticPool2d=uniform)))
    torch_sum = _lp(lambda self, x: F.lp_pool2d(x, self.p, self.kernel_size, self.stride))
    assert any("sums over the window" in m for m in failed(judged("mixed_pooling", "test_lp", LPPool2d=torch_sum)))
    no_clamp = _lp(lambda self, x: F.avg_pool2d(x.pow(self.p), self.kernel_size, self.stride).pow(1 / self.p))
    assert any("clamp the mean" in m for m in failed(judged("mixed_pooling", "test_lp", seed=1, LPPool2d=no_clamp)))


# ---- receptive fields -------------------------------------------------------------------------------------

def _build(source: str) -> nn.Module:
    """A hidden case's model, built for real on the CPU (the kernel builds it on the meta device)."""
    namespace = {"torch": torch, "nn": nn, "F": F}
    exec(compile(source, "<case>", "exec"), namespace)
    return namespace["model"].eval()


def _measure(model: nn.Module, input_size, field_size) -> tuple:
    """The measured field of the centre unit, on an input with room for it."""
    big = (1, input_size[0], input_size[1] + 2 * field_size[0], input_size[2] + 2 * field_size[1])
    return empirical_receptive_field(model, big), big


@pytest.mark.parametrize("grade_id", ["test_rf_chain", "test_rf_graph"])
def test_the_hidden_models_references_match_the_measurement(grade_id):
    """The analytic reference in grader.checks against lib.analysis's gradient-based measurement, on real copies
    of this run's hidden models."""
    for case in judge.draw_cases(RF.CELLS[grade_id], 11, grade_id):
        model, size = _build(case["build"]), tuple(case["input_size"])
        ref = RF.expected_field(case["build"], size)
        measured, big = _measure(model, size, ref["size"])
        assert not measured.clipped and measured.size == ref["size"], case["name"]
        centers = RF.expected_field(case["build"], tuple(big[1:]))["centers"]
        i, j = measured.unit
        assert (centers[0][i], centers[1][j]) == measured.center, case["name"]


def test_receptive_field_reference_passes_the_hidden_cases():
    for grade_id in ("test_rf_chain", "test_rf_centers", "test_rf_graph", "test_rf_published"):
        assert failed(judged("receptive_field", grade_id)) == [], grade_id


def test_a_calculator_that_measures_fails_the_hidden_cases():
    """Wrapping lib.analysis.empirical_receptive_field passes the visible tests (real models) but not the hidden
    ones (meta models), and the message says why."""
    def measuring(model, input_size):
        return empirical_receptive_field(model, (1, *input_size))
    for grade_id in ("test_rf_chain", "test_rf_graph"):
        messages = failed(judged("receptive_field", grade_id, compute_receptive_field=measuring))
        assert messages and all("meta device" in m for m in messages), messages


def _rf_variant(**changes):
    """The reference calculator with one idea removed, to see the check name it."""
    ns = dict(solution("receptive_field"))
    source = _source("receptive_field", "calculator")
    for old, new in changes.items():
        assert old in source, old
        source = source.replace(old, new)
    exec(compile(source, "variant", "exec"), ns)
    return ns["compute_receptive_field"]


def test_receptive_field_mistakes_are_named():
    no_jump = _rf_variant(**{"a.r + (span - 1) * a.j": "a.r + (span - 1)"})
    assert any("r += d*(k-1)*j" in m for m in failed(judged("receptive_field", "test_rf_chain",
                                                            compute_receptive_field=no_jump)))
    no_padding = _rf_variant(**{"((span - 1) / 2 - p) * a.j": "((span - 1) / 2) * a.j"})
    assert any("padding shifts" in m for m in failed(judged("receptive_field", "test_rf_centers",
                                                            compute_receptive_field=no_padding)))
    first_path = _rf_variant(**{"max(local, key=lambda f: f[0].r * f[1].r)": "local[0]"})
    assert any("largest field" in m for m in failed(judged("receptive_field", "test_rf_graph",
                                                           compute_receptive_field=first_path)))


def test_published_fields_are_what_the_reference_computes():
    for name, size in RF.PUBLISHED_FIELDS.items():
        assert RF.expected_field(RF.network_source(name), (3, 224, 224))["size"] == (size, size), name


@pytest.mark.slow
@pytest.mark.parametrize("name, input_size", [("resnet50", 480), ("vgg19", 320)])
def test_whole_network_references_are_measured_again(name, input_size):
    rf = empirical_receptive_field(_build(RF.network_source(name)), (1, 3, input_size, input_size))
    assert not rf.clipped and rf.size == RF.expected_field(RF.network_source(name), (3, 224, 224))["size"]


# ---- ResNet variants --------------------------------------------------------------------------------------

def test_wrn_table_matches_the_design():
    for (depth, k), millions in RV.WRN_PARAMS_M.items():
        assert round(RV.wrn_params(depth, k) / 1e6, 1) == millions, f"WRN-{depth}-{k}"


def test_resnet_variants_reference_passes():
    for grade_id in ("test_preact", "test_wrn", "test_blocks_twin"):
        assert failed(judged("resnet_variants", grade_id)) == [], grade_id


def test_resnet_variant_mistakes_are_named():
    ns = solution("resnet_variants")
    relu_after = type("ReluAfter", (ns["PreActBlock"],), {"forward": lambda self, x: F.relu(ns["PreActBlock"].forward(self, x))})
    assert all("remove the ReLU after the sum" in m for m in failed(judged("resnet_variants", "test_preact",
                                                                           PreActBlock=relu_after)))
    import torchvision

    class Derived(torchvision.models.resnet.Bottleneck):
        expansion = 4

        def __init__(self, c_in, c_out, stride=1, *, groups=32, width_per_group=4):
            downsample = None if stride == 1 and c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            super().__init__(c_in, c_out // 4, stride, downsample, groups, width_per_group)
    messages = failed(judged("resnet_variants", "test_blocks_twin", ResNeXtBottleneck=Derived))
    assert messages and all("torchvision's implementation" in m for m in messages if "ResNeXt" in m)


# ---- the source scan --------------------------------------------------------------------------------------

SETUP = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\nimport lib\nfrom lib import train\nimport os"
CLEAN = {
    "a layer": "class A(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.w = nn.Parameter(torch.zeros(3))",
    "magics and tables": "%matplotlib inline\nresults = {}\nresults['a'] = 1\n%time x = 1\nimport pandas as pd\n"
                         "df = pd.DataFrame(results, index=[0]).rename(columns={'a': 'b'})",
    "a timed cell": "%%time\nfor name in ['a']:\n    y = torch.zeros(3)",
    "reading a file": "with open('notes.txt') as f:\n    text = f.read()",
    "paths": "path = os.path.join('a', 'b')",
    "sys.exit": "import sys\nsys.exit(0)",
}
FLAGGED = {
    "patching torch": "torch.allclose = lambda *a, **k: True",
    "patching lib": "train.fit = lambda *a, **k: None",
    "an alias": "t = torch\nt.equal = lambda *a: True",
    "setattr": "setattr(F, 'max_pool2d', lambda *a, **k: None)",
    "sys.modules": "import sys\nsys.modules['lib.report'] = object()",
    "sys.path": "import sys\nsys.path.insert(0, '/tmp/fake')",
    "input transformers": "get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])",
    "events": "ip = get_ipython()\nip.events.register('pre_run_cell', print)",
    "exec": "exec('x = 1')",
    "a computed import": "m = __import__('impo' + 'rtlib')",
    "settrace": "import sys\nsys.settrace(lambda *a: None)",
    "killing the kernel": "os._exit(0)",
    "shell": "!rm -rf lib",
    "another cell magic": "%%bash\nrm -rf lib",
    "writing a file": "open('lib/train.py', 'w').write('x')",
    "builtins": "import builtins\nbuiltins.isinstance = lambda a, b: True",
    "importlib": "import importlib",
    "a critical name": "class X: pass\nx = X()\nx.allclose = 3",
    "a module dict": "F.__dict__['max_pool2d'] = None",
    "__wrapped__": "ref = some_function.__wrapped__",
    "a dispatch override": "class T(torch.Tensor):\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n        return True",
    "the trick inside %%time": "%%time\ntorch.allclose = lambda *a, **k: True",
    "the trick inside %time": "%time get_ipython().input_transformers_cleanup.append(len)",
    "pydoc": "from pydoc import locate",
}


@pytest.mark.parametrize("name", CLEAN)
def test_scan_lets_ordinary_code_through(name):
    assert scan.scan_source(CLEAN[name], scan.imported_names([SETUP])) == []


@pytest.mark.parametrize("name", FLAGGED)
def test_scan_flags_dynamic_tricks_with_the_line(name):
    findings = scan.scan_source(FLAGGED[name], scan.imported_names([SETUP]))
    assert findings and "is not allowed in an answer: write the computation directly" in str(findings[0]), name


def test_scan_names_the_line_inside_a_cell_magic():
    findings = scan.scan_source("%%time\nx = 1\ny = 2\ntorch.allclose = None", scan.imported_names([SETUP]))
    assert [f.line for f in findings] == [4]


def test_scan_flags_the_tools_an_answer_may_not_use():
    rules = scan.FORBIDDEN_CALLS["receptive_field"]["calculator"]
    wrapper = ("def compute_receptive_field(model, input_size):\n"
               "    rf = empirical_receptive_field(model, (1, *input_size))\n    return rf")
    renamed = "measure = lib.analysis.empirical_receptive_field\ndef compute_receptive_field(m, s):\n    return measure(m, s)"
    for source in (wrapper, renamed):
        findings = scan.scan_source(source, scan.imported_names([SETUP]), rules)
        assert findings and "empirical_receptive_field" in str(findings[0]) and "instead of computing" in str(findings[0])
    assert scan.scan_source(wrapper, scan.imported_names([SETUP])) == [], "elsewhere the tool is allowed"
    torchvision_rules = scan.FORBIDDEN_CALLS["resnet_variants"]["resnext"]
    assert scan.scan_source("class B(torchvision.models.resnet.Bottleneck):\n    pass", set(), torchvision_rules)


def test_scan_is_linear_in_the_size_of_a_cell():
    """A 178 KB cell of get_ipython() calls took 412 s with nested walks; one pass takes a fraction of a second."""
    line = "get_ipython().run_line_magic('time', 'x = torch.zeros(3) + 1')\n"
    cell = line * (178_000 // len(line))
    start = time.process_time()
    assert scan.scan_source(cell, scan.imported_names([SETUP])) == []
    assert time.process_time() - start < 1.0


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_scan_passes_the_reference_solutions(assignment):
    cells = [c for c in _cells(assignment) if c["cell_type"] == "code"]
    foreign = scan.imported_names(["".join(c["source"]) for c in cells])
    rules = scan.FORBIDDEN_CALLS.get(assignment, {})
    for cell in cells:
        if not cell["metadata"].get("nbgrader", {}).get("locked"):
            assert scan.scan_source("".join(cell["source"]), foreign, rules.get(_grade_id(cell))) == [], _grade_id(cell)


# ---- the pipeline's other parts ---------------------------------------------------------------------------

def _config():
    from traitlets.config.loader import PyFileConfigLoader
    return PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()


def test_config_judges_outside_the_kernel():
    text = (ROOT / "nbgrader_config.py").read_text()
    code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", '"""'))]
    assert len(code) <= 8 and "from grader.config import configure" in text
    c = _config()
    steps = [p.__name__ for p in c.Autograde.autograde_preprocessors]
    assert steps.index("HiddenCases") < steps.index("SandboxedExecute") < steps.index("JudgeReports") \
        < steps.index("TruncateOutputs") < steps.index("SaveAutoGrades")
    assert preprocessors.GuardCells in c.Autograde.sanitize_preprocessors
    assert preprocessors.HideHiddenTests in c.GenerateFeedback.preprocessors


def test_the_sandbox_binds_nothing_of_the_grader():
    from grader import sandbox
    box = sandbox.Sandbox.__new__(sandbox.Sandbox)  # what it binds and sets needs no submission
    paths = [str(p) for p in box._read_only()]
    assert not any(p == str(ROOT) or p.startswith(str(ROOT / "grader")) for p in paths), paths
    assert box.environment()["PYTHONPATH"] == str(ROOT) and not (ROOT / "lib" / "grader").exists()
    assert "/opt/grader" not in Path(sandbox.__file__).read_text()


def test_every_test_cell_has_visible_tests_and_a_hidden_part_that_only_reports():
    for assignment in ASSIGNMENTS:
        cells = judge.cells_of(assignment)
        for cell in _cells(assignment):
            if cell["metadata"].get("nbgrader", {}).get("grade") and cell["cell_type"] == "code":
                visible, _, hidden = "".join(cell["source"]).partition(judge.DELIMITER)
                where = f"{assignment}:{_grade_id(cell)}"
                assert "assert " in visible and not re.search(r"\bgrader\b", visible + hidden), where
                assert _grade_id(cell) in cells and "\nCASES = []" in hidden and "report(" in hidden, where


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_assignment_is_wired_into_the_course(assignment):
    """An assignment in solutions/ is graded everywhere without another list to edit: its test cells' points and
    written answers are in the grader's test fixtures (which the flow, sandbox, Dask, release and benchmark tests
    read), and the students' page, the book's table of contents and the instructors' points table name it."""
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("submissions_wiring", ROOT / "tests" / "nbgrader_fixtures" / "submissions.py")
    fixtures = sys.modules["submissions_wiring"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    graded = {_grade_id(c): c["metadata"]["nbgrader"]["points"] for c in _cells(assignment)
              if c["metadata"].get("nbgrader", {}).get("grade")}
    tests = {k: v for k, v in graded.items() if k in judge.cells_of(assignment)}
    assert {k: p for k, (p, _) in fixtures.DEPENDS.get(assignment, {}).items()} == tests, \
        f"tests/nbgrader_fixtures/submissions.py: DEPENDS[{assignment!r}] must list its test cells and points {tests}"
    assert fixtures.MANUAL.get(assignment) == sum(graded.values()) - sum(tests.values()), "MANUAL: its hand-graded points"
    assert fixtures.partial_cells(assignment) < fixtures.all_solution_cells(assignment)
    assert f"exercises/{assignment}/{assignment}" in (ROOT / "_toc.yml").read_text()
    assert f"</exercises/{assignment}/{assignment}>`" in (ROOT / "book" / "students.md").read_text()
    assert f"| `{assignment}` |" in (ROOT / "book" / "instructors.md").read_text()


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


def test_feedback_shows_no_hidden_test_whatever_a_cell_printed():
    """The feedback keeps a test cell's visible part and the judge's list of checks; the hidden source, this
    run's cases, and any output that quotes them (a traceback, a cell that printed `In`) are gone."""
    cases = judge.draw_cases(RF.CELLS["test_rf_chain"], 5, "test_rf_chain")
    source = _source("receptive_field", "test_rf_chain").replace("CASES = []", "CASES = " + repr(cases))
    cell = _test_cell("receptive_field", "test_rf_chain", [
        nbformat.v4.new_output("display_data", data={"text/plain": "Hidden tests: 3 of 3 points"})])
    cell.source = source
    leak = nbformat.v4.new_code_cell("print(In)")
    leak.outputs = [nbformat.v4.new_output("stream", name="stdout", text=str([SETUP, source]))]
    visible = nbformat.v4.new_code_cell("assert False, 'visible'")
    visible.metadata["nbgrader"] = {"grade_id": "test_x", "grade": True, "solution": False, "locked": True, "points": 1}
    visible.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="visible",
                                              traceback=["---> 1 assert False, 'visible'", "AssertionError: visible"])]
    nb = nbformat.v4.new_notebook()
    nb.cells = [cell, leak, visible]
    nb, _ = preprocessors.HideHiddenTests().preprocess(nb, {})
    text = json.dumps(nb)
    assert "BEGIN HIDDEN" not in text and "random chain" not in text and str(cases[1]["input_size"]) not in text
    assert "(10, 10)" in nb.cells[0].source, "the visible tests stay"
    assert "Hidden tests: 3 of 3 points" in text and "quoted the hidden tests" in nb.cells[1].outputs[0].text
    assert len(nb.cells[2].outputs[0].traceback) == 2, "a failure in the visible part keeps its traceback"


def test_a_results_table_without_a_row_fails_with_the_row_named():
    from grader.checks.base import result_table
    from grader.judge import GradingError

    assert result_table({"results": {"a": 1, "b": 2}}, ["a", "b"], "model per method") == {"a": 1, "b": 2}
    for results in ({"a": 1}, "typed in", None):
        with pytest.raises(GradingError, match=r"no row for \['b'\]: train one model per method"):
            result_table({"results": results}, ["b"], "model per method")
