"""Submissions for the grader's tests, each with the outcome it must get.

Every submission starts from the committed student version (`exercises/`), fills some solution cells from
`solutions/`, and may then be broken on purpose. `expected` is the autograded score (the manually graded
answers are not part of it); a submission with `fails` set must be reported as failed with that text in its
reason, and keep no autograded score.

The points each partial submission deserves follow from which test cells depend on which solution cells
(`DEPENDS`): a test cell passes when every solution cell it depends on is solved.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

# test cell -> (points, the solution cells it needs)
DEPENDS = {
    "mixed_pooling": {
        "test_mixed_fixed": (2, {"mixed_pool"}),
        "test_mixed_learnable": (3, {"mixed_pool"}),
        "test_stochastic": (3, {"stochastic_pool"}),
        "test_lp": (2, {"lp_pool"}),
        "test_comparison": (2, {"mixed_pool", "stochastic_pool", "lp_pool", "make_net", "experiment"}),
    },
    "receptive_field": {
        "test_rf_chain": (3, {"calculator"}),
        "test_rf_centers": (2, {"calculator"}),
        "test_rf_graph": (3, {"calculator"}),
        "test_rf_published": (2, {"calculator"}),
        "test_rf_stages": (2, {"calculator", "stages"}),
    },
    "resnet_variants": {
        "test_preact": (3, {"preact"}),
        "test_wrn": (3, {"preact", "wrn"}),
        "test_blocks_twin": (2, {"resnext"}),
        "test_imagenet_twins": (2, {"resnext"}),
        "test_comparison": (1, {"preact", "wrn", "resnext", "experiment"}),
    },
}
MANUAL = {"mixed_pooling": 3, "receptive_field": 2, "resnet_variants": 2}


def full_marks(assignment: str) -> float:
    return float(sum(points for points, _ in DEPENDS[assignment].values()))


def deserved(assignment: str, solved: set[str], failing: set[str] = frozenset()) -> float:
    """Points of the test cells whose solution cells are all solved, minus the cells in ``failing``."""
    return float(sum(points for cell, (points, needs) in DEPENDS[assignment].items()
                     if needs <= solved and cell not in failing))


@dataclass
class Submission:
    student: str
    assignment: str
    what: str                                   # one line for the report
    notebook: dict | None = None
    raw: str | None = None                      # written as is instead of a notebook (broken files)
    extra_files: dict[str, str] = field(default_factory=dict)  # path in the submission folder -> text
    expected: float | None = None               # autograded score
    fails: str | None = None                    # the failure reason must contain this
    disabled: int = 0                           # cells the guard must disable

    def write(self, submitted: Path) -> None:
        folder = submitted / self.student / self.assignment
        folder.mkdir(parents=True, exist_ok=True)
        text = self.raw if self.raw is not None else json.dumps(self.notebook, indent=1)
        (folder / f"{self.assignment}.ipynb").write_text(text)
        for rel, content in self.extra_files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)


class Course:
    """The student version and the solutions of each assignment, read from a course directory."""

    def __init__(self, root: Path):
        self.root = root

    def _read(self, kind: str, assignment: str) -> dict:
        return json.loads((self.root / kind / assignment / f"{assignment}.ipynb").read_text())

    def exercise(self, assignment: str) -> dict:
        return self._read("exercises", assignment)

    def solution_sources(self, assignment: str) -> dict[str, str]:
        nb = self._read("solutions", assignment)
        return {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"]) for c in nb["cells"]
                if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code"}

    def solved(self, assignment: str, cells: set[str] | None = None, *, replace: dict[str, str] | None = None) -> dict:
        """The student version with ``cells`` (all, and the written answers too, if None) answered from the
        solutions; ``replace`` gives other answers for some cells."""
        nb = copy.deepcopy(self.exercise(assignment))
        answers = self.solution_sources(assignment)
        for cell in nb["cells"]:
            meta = cell["metadata"].get("nbgrader", {})
            grade_id = meta.get("grade_id")
            if replace and grade_id in replace:
                cell["source"] = replace[grade_id]
            elif grade_id in answers and (cells is None or grade_id in cells):
                cell["source"] = answers[grade_id]
            elif cells is None and meta.get("solution") and cell["cell_type"] == "markdown":
                cell["source"] = "1. An answer, to be graded by hand.\n2. Another.\n3. A third."
        return nb


def _code(source: str, cell_id: str) -> dict:
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "execution_count": None, "outputs": [],
            "source": source}


def _insert_after(nb: dict, grade_id: str, source: str, cell_id: str) -> dict:
    index = next(i for i, c in enumerate(nb["cells"]) if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    nb["cells"].insert(index + 1, _code(source, cell_id))
    return nb


def _find(nb: dict, grade_id: str) -> dict:
    return next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


# Answers that pass the visible tests and fail hidden ones.
MIXED_POOL_VISIBLE_ONLY = '''
class MixedPool2d(nn.Module):
    """Ignores stride and padding: right for the visible cases only."""

    def __init__(self, kernel_size, stride=None, padding=0, *, alpha=0.5, learnable=None, channels=None):
        super().__init__()
        self.k, self.learnable = kernel_size, learnable
        if learnable is None:
            self.fixed = alpha
        else:
            n = 1 if learnable == "layer" else channels
            self.logit = nn.Parameter(torch.full((n,), math.log(alpha / (1 - alpha))))

    @property
    def alpha(self):
        return self.fixed if self.learnable is None else torch.sigmoid(self.logit)

    def forward(self, x):
        a = self.alpha if self.learnable is None else self.alpha.view(1, -1, 1, 1)
        return a * F.max_pool2d(x, self.k) + (1 - a) * F.avg_pool2d(x, self.k)
'''

WRONG_LP = '''
class LPPool2d(nn.Module):
    """Wrong on purpose: the average, whatever p."""

    def __init__(self, p, kernel_size, stride=None):
        super().__init__()
        self.p, self.kernel_size, self.stride = p, kernel_size, stride or kernel_size

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride)
'''

PATCH_GRADING = '''
import lib.grading
for _name in dir(lib.grading):
    if _name.startswith("check_"):
        setattr(lib.grading, _name, lambda *args, **kwargs: None)
grading.check_mixed_pool_fixed = lambda *args, **kwargs: None
grading.assert_untampered = lambda: None
'''

PATCH_TORCH = '''
torch.allclose = lambda *args, **kwargs: True
torch.Tensor.all = lambda self, *args, **kwargs: torch.tensor(True)
F.max_pool2d = lambda x, *args, **kwargs: x
'''

FAKE_GRADING = '''
def assert_untampered():
    pass

def __getattr__(name):
    return lambda *args, **kwargs: None
'''


def build(course: Course) -> list[Submission]:
    subs: list[Submission] = []
    for a in DEPENDS:
        subs.append(Submission("reference", a, "every solution cell answered from solutions/",
                               course.solved(a), expected=full_marks(a)))
        subs.append(Submission("blank", a, "the student version, untouched", course.exercise(a), expected=0.0))
    partial = {"mixed_pooling": {"mixed_pool", "lp_pool"}, "receptive_field": {"calculator"},
               "resnet_variants": {"preact", "wrn"}}
    for a, cells in partial.items():
        subs.append(Submission("partial", a, f"only {sorted(cells)} answered", course.solved(a, cells),
                               expected=deserved(a, cells)))

    # Answers fitted to the visible tests: the hidden tests must take points away.
    rf = course.solution_sources("receptive_field")["calculator"]
    rf_square = (rf.replace("return tuple(v) if isinstance(v, (tuple, list)) else (v, v)",
                            "return (v[0], v[0]) if isinstance(v, (tuple, list)) else (v, v)")
                 .replace("_Axis(1, 1, 0.0, w))", "_Axis(1, 1, 0.0, h))"))
    assert rf_square != rf, "the receptive-field solution changed: update the visible-only variant"
    rv = course.solution_sources("resnet_variants")
    rv_wrn = rv["wrn"].replace("nn.Linear(64 * k, num_classes)", "nn.Linear(64 * k, 10)")
    rv_resnext = rv["resnext"].replace("num_classes=num_classes", "num_classes=1000")
    assert rv_wrn != rv["wrn"] and rv_resnext != rv["resnext"], "update the visible-only ResNet variant"
    visible_only = {
        "mixed_pooling": ({"mixed_pool": MIXED_POOL_VISIBLE_ONLY}, {"test_mixed_fixed", "test_mixed_learnable"},
                          "MixedPool2d ignores stride and padding"),
        "receptive_field": ({"calculator": rf_square},
                            {"test_rf_chain", "test_rf_centers", "test_rf_graph", "test_rf_published"},
                            "compute_receptive_field treats every kernel, stride and input as square"),
        "resnet_variants": ({"wrn": rv_wrn, "resnext": rv_resnext}, {"test_wrn", "test_imagenet_twins"},
                            "WideResNet and the ImageNet builders ignore num_classes"),
    }
    for a, (replace, failing, what) in visible_only.items():
        subs.append(Submission("visible-only", a, what + " (passes every visible test)",
                               course.solved(a, replace=replace), expected=deserved(a, all_solution_cells(a), failing)))

    # Hostile or broken submissions, on the quickest notebook. Most start from an answer worth 5 points
    # (MixedPool2d only) so that a defined score shows the rest of the notebook ran.
    a = "mixed_pooling"
    base = {"mixed_pool"}
    five = deserved(a, base)

    def on_base(cells=base, replace=None):
        return course.solved(a, cells, replace=replace)

    subs += [
        Submission("infinite-loop", a, "a cell that never ends (`while True: pass`)",
                   _insert_after(on_base(), "setup", "while True:\n    pass", "loop"), expected=five),
        Submission("loop-ignores-interrupt", a, "an endless loop that swallows the interrupt",
                   _insert_after(on_base(), "setup", "import time\nwhile True:\n    try:\n        time.sleep(0.5)\n"
                                 "    except BaseException:\n        pass", "loop"), fails="timed out"),
        Submission("exception-at-import", a, "the LPPool2d cell imports a module that does not exist",
                   on_base(base | {"lp_pool"}, replace={"lp_pool": "import a_module_that_does_not_exist\n"
                                                        + course.solution_sources(a)["lp_pool"]}), expected=five),
        Submission("edited-test-cell", a, "a wrong LPPool2d, and its test cell replaced by a print",
                   _edit(on_base(base | {"lp_pool"}, replace={"lp_pool": WRONG_LP}), "test_lp",
                         'print("LPPool2d: passed")'), expected=five),
        Submission("deleted-test-cell", a, "a wrong LPPool2d, and its test cell deleted",
                   _delete(on_base(base | {"lp_pool"}, replace={"lp_pool": WRONG_LP}), "test_lp"), expected=five),
        Submission("deleted-solution-cell", a, "the LPPool2d solution cell deleted",
                   _delete(on_base(base | {"lp_pool"}), "lp_pool"), expected=five),
        Submission("invalid-json", a, "a file that is not JSON", raw='{"cells": [ {"cell_type": "code", '
                   '"source": "oops"', fails="JSON"),
        Submission("prints-megabytes", a, "a cell that prints 6 MB",
                   _insert_after(on_base(), "setup", "print('x' * 5_000_000)\nfor i in range(100_000):\n    print(i)",
                                 "big"), expected=five),
        Submission("sys-exit", a, "a cell that calls sys.exit()",
                   _insert_after(on_base(), "mixed_pool", "import sys\nsys.exit('bye')", "exit"), expected=five),
        Submission("kills-kernel", a, "a cell that kills the kernel (os._exit)",
                   _insert_after(on_base(), "mixed_pool", "import os\nos._exit(0)", "exit"), expected=five,
                   disabled=1),
        Submission("patches-grading", a, "blank answers, and a cell that replaces lib.grading's checks by no-ops",
                   _insert_after(course.exercise(a), "setup", PATCH_GRADING, "patch"), expected=0.0, disabled=1),
        Submission("patches-torch", a, "blank answers, and a cell that makes torch.allclose always true",
                   _insert_after(course.exercise(a), "setup", PATCH_TORCH, "patch"), expected=0.0, disabled=1),
        Submission("rewrites-tests", a, "blank answers, and an IPython input transformer that empties every "
                   "later cell", _insert_after(course.exercise(a), "setup",
                                              "get_ipython().input_transformers_cleanup.append(lambda lines: "
                                              "['pass\\n'])", "patch"), expected=0.0, disabled=1),
        Submission("writes-lib", a, "blank answers, and a cell that writes a fake lib/grading.py next to the notebook",
                   _insert_after(course.exercise(a), "setup",
                                 "import os\nos.makedirs('lib', exist_ok=True)\n"
                                 f"open('lib/grading.py', 'w').write({FAKE_GRADING!r})\n"
                                 "open('lib/__init__.py', 'w').write('')", "patch"), expected=0.0, disabled=1),
        Submission("ships-lib", a, "blank answers, submitted with its own lib/grading.py and torch.py",
                   course.exercise(a), extra_files={"lib/__init__.py": "", "lib/grading.py": FAKE_GRADING,
                                                    "torch.py": "raise SystemExit('fake torch')"}, expected=0.0),
    ]
    return subs


def build_unguarded(course: Course) -> list[Submission]:
    """Attacks for a run with the guard off (`--GuardCells.enabled=False`): the run-time defences alone."""
    a = "mixed_pooling"
    return [
        Submission("unguarded-patches-grading", a, "as patches-grading, with the guard off",
                   _insert_after(course.exercise(a), "setup", PATCH_GRADING, "patch"), expected=0.0),
        Submission("unguarded-patches-torch", a, "as patches-torch, with the guard off",
                   _insert_after(course.exercise(a), "setup", PATCH_TORCH, "patch"), expected=0.0),
        Submission("unguarded-kills-kernel", a, "as kills-kernel, with the guard off",
                   _insert_after(course.solved(a, {"mixed_pool"}), "mixed_pool", "import os\nos._exit(0)", "exit"),
                   fails="died"),
    ]


def all_solution_cells(assignment: str) -> set[str]:
    return set().union(*(needs for _, needs in DEPENDS[assignment].values()))


def _edit(nb: dict, grade_id: str, source: str) -> dict:
    _find(nb, grade_id)["source"] = source
    return nb


def _delete(nb: dict, grade_id: str) -> dict:
    nb["cells"] = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") != grade_id]
    return nb
