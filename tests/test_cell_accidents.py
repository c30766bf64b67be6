"""A copied, renamed or deleted nbgrader cell, and odd student ids, through `autograde` (issue #19, item 7).

Before grader/cells.py each of these submissions failed as a whole (`KeyError: 'grade_id'`,
`KeyError: 'table'`), and an id with a glob character or a newline failed with "No notebooks were matched".
Each submission here solves MixedPool2d and nothing else, so it deserves the points of the cells that
depend on MixedPool2d alone; the accident must cost nothing more, and be named where the student reads it.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest

from grader import course
from grader.autograde import autograde

sys.path.insert(0, str(Path(__file__).resolve().parent / "nbgrader_fixtures"))
import submissions as fixtures  # noqa: E402

pytestmark = [pytest.mark.slow]
A = "mixed_pooling"
FIVE = fixtures.deserved(A, {"mixed_pool"})


def _copied(nb: dict, grade_id: str) -> dict:
    index = next(i for i, c in enumerate(nb["cells"]) if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    twin = copy.deepcopy(nb["cells"][index])
    twin["id"] = "copied"
    nb["cells"].insert(index + 1, twin)
    return nb


def _renamed(nb: dict, grade_id: str) -> dict:
    fixtures._find(nb, grade_id)["metadata"]["nbgrader"]["grade_id"] = "my_test"
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    root = fixtures.make_course(tmp_path_factory.mktemp("accidents") / "course", cell_timeout=60)
    c = fixtures.Course(root)
    base = lambda: c.solved(A, {"mixed_pool"})  # noqa: E731
    subs = {"copied-solution": _copied(base(), "mixed_pool"), "copied-test": _copied(base(), "test_lp"),
            "renamed-test": _renamed(base(), "test_lp"),
            "deleted-test-after-table": fixtures._delete(base(), "test_comparison"),
            **{student: base() for student in ODD}}
    for student, nb in subs.items():
        fixtures.Submission(student, A, student, nb).write(root / "submitted")
    outcomes = {o.student: o for o in autograde(root, [A], jobs=2, quiet=True)}
    return root, outcomes


@pytest.mark.parametrize("student", ["copied-solution", "copied-test", "renamed-test", "deleted-test-after-table"])
def test_an_accident_with_nbgrader_cells_costs_nothing_else(graded, student):
    root, outcomes = graded
    assert outcomes[student].ok, outcomes[student].reason
    assert outcomes[student].auto == FIVE
    nb = json.loads((root / "autograded" / student / A / f"{A}.ipynb").read_text())
    ids = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in nb["cells"]]
    assert ids.count("test_comparison") == ids.count("test_lp") == ids.count("mixed_pool") == 1
    text = json.dumps(nb)
    assert "the autograder does not run it" in text and "COURSE_REPOSITORY" not in text, "the install cell ran"
    if student != "deleted-test-after-table":
        assert "(The autograder: " in text and "it ran as an ordinary cell and is not graded" in text
    else:
        assert "was missing from the submission" in text


ODD = ("glob*id", "new\nline", "<img src=x onerror=alert(1)>")


def test_odd_student_ids_are_not_graded(graded):
    _, outcomes = graded
    assert not set(ODD) & set(outcomes) and set(outcomes) == {"copied-solution", "copied-test", "renamed-test",
                                                              "deleted-test-after-table"}


@pytest.mark.parametrize("student, why", [("glob*id", "the student id has glob characters"),
                                          ("new\nline", "the student id has a newline"),
                                          ("<img src=x onerror=alert(1)>", "the student id has characters that mean something in HTML")])
def test_odd_student_ids_are_refused_by_name(tmp_path, capsys, student, why):
    (tmp_path / "solutions" / A).mkdir(parents=True)
    (tmp_path / "solutions" / A / f"{A}.ipynb").write_text("{}")
    (tmp_path / "submitted" / student / A).mkdir(parents=True)
    (tmp_path / "submitted" / "alice" / A).mkdir(parents=True)
    assert course.submissions(tmp_path) == [(A, "alice")]
    assert f"submitted/{student!r}: not graded: {why}" in capsys.readouterr().out
