"""Assignment `conv_backward`: a convolution's and max pooling's backward pass, and a numerical gradient check, from
scratch. The judge (grader/checks/conv_backward.py) accepts the reference solution on many draws of hidden cases,
names the usual mistakes, and fails answers that ran torch's convolution, pooling or autograd whatever route they
took; the source scan flags the named ones. Then the assignment's submissions of
tests/nbgrader_fixtures/submissions.py (reference, blank, partial, visible-only and every conv_backward shortcut)
go through the grader's real autograde, each with the score it must get, under 15 s a notebook.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import judge_helpers as H
import lib.report
from grader import judge, scan
from grader.checks import conv_backward as CB

ROOT = Path(__file__).resolve().parents[1]
A = "conv_backward"
ANSWERS = ("setup", "conv_forward", "conv_backward", "pool", "gradcheck", "used_case", "gradcheck_used")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fixtures = _load("nbgrader_submissions", ROOT / "tests" / "nbgrader_fixtures" / "submissions.py")


_sources = functools.partial(H.sources, A)
SOURCES = _sources()


def namespace(**answers: str) -> dict:
    """The solution notebook's namespace after its answer cells, with some cells' sources replaced."""
    ns: dict = {}
    for grade_id in ANSWERS:
        exec(compile(answers.get(grade_id, SOURCES[grade_id]), f"{A}:{grade_id}", "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def solved() -> dict:
    return namespace()


def judged(grade_id: str, ns: dict, seed: int = 7) -> list:
    """The checks of one test cell: its hidden part run in ``ns`` on this seed's cases, its report judged."""
    return H.judged(A, grade_id, SOURCES[grade_id], ns, seed)


failed = H.failed


# ---- the judge ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reference_passes_every_hidden_check(solved, seed):
    for grade_id in judge.cells_of(A):
        checks = judged(grade_id, solved, seed)
        assert checks and failed(checks) == [], grade_id


def test_hidden_cases_cover_what_the_task_names():
    """Strides, paddings and dilations above 1 and different along height and width, layers without bias, 1x1
    kernels; pooling with overlapping windows, padding and ties; every planted mistake; drawn anew per seed."""
    conv = judge.draw_cases(CB.CELLS["test_conv_backward"], 5, "test_conv_backward")
    for key in ("stride", "padding", "dilation"):
        assert any(CB._pair(c[key])[0] > 1 for c in conv) and any(len(set(CB._pair(c[key]))) == 2 for c in conv), key
    assert any(not c["bias"] for c in conv) and any(c["weight"][2:] == [1, 1] for c in conv)
    pool = judge.draw_cases(CB.CELLS["test_pool"], 5, "test_pool")
    assert any(c["padding"] for c in pool) and any(c["zeros"] for c in pool)
    assert any((c["stride"] or c["kernel_size"]) < c["kernel_size"] for c in pool)
    assert sorted(c["plant"] for c in judge.draw_cases(CB.CELLS["test_gradcheck"], 5, "test_gradcheck")) == sorted(CB.PLANTS)
    assert conv != judge.draw_cases(CB.CELLS["test_conv_backward"], 6, "test_conv_backward")


def test_the_references_agree_with_a_loop_over_the_definition():
    """The judge's expected output (F.conv2d) is the definition, summed entry by entry, on a hidden case."""
    c = next(c for c in judge.draw_cases(CB.CELLS["test_conv_forward"], 3, "test_conv_forward") if c["stride"] == (2, 3))
    x, weight, bias, _ = CB.conv_inputs(c)
    (sh, sw), (ph, pw), (dh, dw) = (CB._pair(c[k]) for k in ("stride", "padding", "dilation"))
    xp = F.pad(x, (pw, pw, ph, ph))
    y = CB.conv_reference(c)["y"]
    n, o, r, s = (d - 1 for d in y.shape)  # the last output: it reads the bottom right of the input
    value = bias[o] + sum(weight[o, ci, i, j] * xp[n, ci, r * sh + i * dh, s * sw + j * dw]
                          for ci in range(x.shape[1]) for i in range(weight.shape[2]) for j in range(weight.shape[3]))
    assert torch.isclose(y[n, o, r, s], value, atol=1e-12)


def _variant(cell: str, old: str, new: str) -> dict:
    assert old in SOURCES[cell], old
    return namespace(**{cell: SOURCES[cell].replace(old, new)})


MISTAKES = {  # the mistake, as an edit of the solution -> the test cell and the hint its message must give
    "no dilation": (("conv_forward", "i * dh:i * dh", "i:i"), "test_conv_forward", "taps are `dilation` apart"),
    "no bias": (("conv_forward", "y += bias.view(1, -1, 1, 1)", "pass"), "test_conv_forward", "add the bias"),
    "= instead of +=": (("conv_backward", "dx_pad[:, :, rows, cols] +=", "dx_pad[:, :, rows, cols] ="),
                        "test_conv_backward", "+= where windows overlap"),
    "bias gradient averaged": (("conv_backward", "dy.sum(dim=(0, 2, 3))", "dy.mean(dim=(0, 2, 3))"),
                               "test_conv_backward", "dy summed over N, H_out and W_out"),
    "the last maximum on ties": (("pool", "better = value > best", "better = value >= best"), "test_pool",
                      "route dy to the first maximum only"),
    "one-sided differences": (("gradcheck", "(plus - minus) / (2 * eps)", "(plus - float(f(x))) / eps"),
                              "test_gradcheck", "use central differences"),
    "no tolerance": (("gradcheck", "return error < tol, error", "return True, error"), "test_gradcheck",
                     "accepts a gradient with a planted"),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_mistakes_fail_with_a_message_that_names_the_fix(name):
    (cell, old, new), grade_id, hint = MISTAKES[name]
    messages = failed(judged(grade_id, _variant(cell, old, new), seed=11))
    assert messages and any(hint in m for m in messages), messages


def test_a_wrong_gradient_loses_only_its_own_checks():
    """dx, dweight and dbias are separate checks: a wrong bias gradient keeps the points of the other two."""
    checks = judged("test_conv_backward", _variant("conv_backward", "dy.sum(dim=(0, 2, 3))", "0 * dy.sum(dim=(0, 2, 3))"))
    assert [c.passed for c in checks] == [name != "dbias" for _ in range(len(checks) // 3) for name in ("dx", "dweight", "dbias")]


def test_torch_functions_reached_by_any_route_fail_their_cases(solved):
    """The kernel reports the torch functions and operators an answer called: F.conv2d through a computed name,
    autograd in a helper defined elsewhere, torch.func.grad, F.max_pool2d's indices; each fails every case."""
    cases = {
        "test_conv_forward": ({"conv_forward": fixtures.CONV_VIA_GETATTR}, "torch's convolution"),
        "test_conv_backward": ({"conv_forward": SOURCES["conv_forward"] + fixtures.AUTOGRAD_HELPER,
                                "conv_backward": fixtures.BACKWARD_VIA_HELPER}, "calls autograd"),
        "test_pool": ({"pool": fixtures.POOL_VIA_TORCH}, "torch's max pooling"),
        "test_gradcheck": ({"gradcheck": fixtures.GRADCHECK_VIA_FUNC}, "calls autograd"),
    }
    for grade_id, (answers, what) in cases.items():
        checks = judged(grade_id, namespace(**answers))
        assert not any(c.passed for c in checks) and all(what in c.message for c in checks), (grade_id, failed(checks))

    def im2col(x, weight, bias=None, stride=1, padding=0, dilation=1):  # the textbook's fast convolution
        y = solved["conv2d_forward"](x, weight, bias, stride, padding, dilation)  # for the output's shape only
        cols = F.unfold(x, weight.shape[2:], dilation, padding, stride)  # (N, C_in kH kW, L)
        return (weight.flatten(1) @ cols).view(y.shape) + (0 if bias is None else bias.view(1, -1, 1, 1))
    unfold = judged("test_conv_forward", dict(solved, conv2d_forward=im2col))
    assert all("calls F.unfold" in c.message for c in unfold), failed(unfold)


def test_typed_in_errors_fail_and_measured_ones_pass(solved):
    typed = namespace(gradcheck_used=fixtures.TYPED_ERRORS)
    assert failed(judged("test_gradcheck_used", typed)) and "report what your code measured" in failed(
        judged("test_gradcheck_used", typed))[0]
    assert failed(judged("test_gradcheck_used", solved)) == []


def test_reports_are_read_as_hostile_input(solved):
    cell = CB.CELLS["test_conv_forward"]
    cases = judge.draw_cases(cell, 7, "test_conv_forward")
    assert all(not c.passed for c in cell.judge(cases, [{"ok": {"tensor": "x", "shape": [10**9], "data": []}}] * 7))
    assert all(not c.passed for c in cell.judge(cases, [{"ok": 1, "calls": ["x"] * 10**4}] * 7))
    honest = [{"ok": lib.report.plain(CB.conv_reference(c)["y"])} for c in cases]  # no "calls": not trusted
    assert all("did not report which torch functions" in c.message for c in cell.judge(cases, honest))
    assert all(c.passed for c in cell.judge(cases, [dict(r, calls=["add", "einsum"]) for r in honest]))


# ---- the source scan ---------------------------------------------------------------------------------------

FLAGGED = {  # answer cell -> a source the guard must disable
    "conv_forward": [fixtures.CONV_VIA_TORCH, "from lib.scratch import conv2d\nconv2d_forward = conv2d",
                     "def conv2d_forward(x, w, b=None, s=1, p=0, d=1):\n    return lib.scratch.conv2d(x, w, b, s, p, d)",
                     "def conv2d_forward(x, w, b=None, s=1, p=0, d=1):\n    cols = F.unfold(x, w.shape[2:])"],
    "conv_backward": [fixtures.BACKWARD_VIA_TORCH_GRAD, fixtures.AUTOGRAD_HELPER],
    "pool": [fixtures.POOL_VIA_TORCH, "def maxpool2d_forward(x, k, s=None, p=0):\n    return torch.nn.MaxPool2d(k, s, p)(x)"],
    "gradcheck": ["def numerical_gradient(f, x, eps=1e-6):\n    return torch.autograd.functional.jacobian(f, x)"],
}


def test_scan_flags_torch_inside_the_answers_and_passes_the_solution():
    cells = json.loads((ROOT / "solutions" / A / f"{A}.ipynb").read_text())["cells"]
    foreign = scan.imported_names(["".join(c["source"]) for c in cells if c["cell_type"] == "code"])
    rules = scan.FORBIDDEN_CALLS[A]
    for cell, sources in FLAGGED.items():
        assert scan.scan_source(SOURCES[cell], foreign, rules[cell]) == [], cell
        for source in sources:
            findings = scan.scan_source(source, foreign, rules[cell])
            assert findings and "is not allowed in an answer" in str(findings[0]), (cell, source)
    assert scan.scan_source(fixtures.AUTOGRAD_HELPER, foreign) == [], "outside the answer cells autograd is allowed"


# ---- graded by the real pipeline ---------------------------------------------------------------------------

SUBMISSIONS = [s for s in fixtures.build(fixtures.Course(ROOT)) if s.assignment == A]
STUDENTS = {s.student for s in SUBMISSIONS}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The course graded once, JOBS=1 (a notebook's own time), and the load average when it started."""
    from grader.autograde import autograde

    load = os.getloadavg()[0]
    saved = dict(os.environ)
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    try:
        root = fixtures.make_course(tmp_path_factory.mktemp("course"))
        for sub in SUBMISSIONS:
            sub.write(root / "submitted")
        outcomes = {o.student: o for o in autograde(root, [A], students=sorted(STUDENTS), jobs=1, quiet=True)}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return root, outcomes, load


def test_the_assignment_has_every_kind_of_submission():
    assert {"reference", "blank", "partial", "visible-only"} <= STUDENTS
    assert {s for s in STUDENTS if s.startswith("shortcut-")} == {
        name for name, (a, _, _) in fixtures.SHORTCUT_POINTS.items() if a == A}
    assert fixtures.full_marks(A) == 12 and len(STUDENTS) >= 11


@pytest.mark.slow
@pytest.mark.parametrize("sub", SUBMISSIONS, ids=[s.student for s in SUBMISSIONS])
def test_scores(sub, graded):
    o = graded[1][sub.student]
    assert o.ok, f"{sub.student}: {sub.what}: autograding failed: {o.reason}"
    assert o.auto == pytest.approx(sub.expected), f"{sub.student} ({sub.what}): {o.auto} points, expected {sub.expected}"
    assert o.disabled_cells == sub.disabled, f"{sub.student}: {o.disabled_cells} cells disabled, expected {sub.disabled}"


@pytest.mark.slow
def test_shortcuts_score_zero_on_the_cells_they_target_and_full_marks_elsewhere(graded):
    root = graded[0]
    for name, (a, cut, _) in fixtures.SHORTCUT_POINTS.items():
        if a != A:
            continue
        cells = json.loads((root / "autograded" / name / A / f"{A}.ipynb").read_text())["cells"]
        for cell in cells:
            meta = cell["metadata"].get("nbgrader", {})
            if not (meta.get("grade") and cell["cell_type"] == "code"):
                continue
            points = [float("".join(o["data"]["text/plain"])) for o in cell["outputs"] if o["output_type"] == "execute_result"]
            expected = 0.0 if meta["grade_id"] in cut else float(meta["points"])
            assert points == [expected], f"{name}: {meta['grade_id']} scored {points}, expected {expected}"


@pytest.mark.slow
def test_grading_takes_under_15_seconds_a_notebook(graded):
    """Wall seconds per notebook, one at a time. On shared cores they measure the other jobs too: the limit grows
    with the load average beyond the core count when grading started (on an idle machine it is 15 s)."""
    seconds = [o.seconds for o in graded[1].values()]
    limit = 15 * max(1.0, graded[2] / (os.cpu_count() or 1))
    assert statistics.mean(seconds) < limit, (f"mean {statistics.mean(seconds):.1f} s a notebook (limit {limit:.0f} s "
                                              f"at load {graded[2]:.1f}): {sorted(round(s, 1) for s in seconds)}")
