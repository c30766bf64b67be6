"""The Validate summary counts the grader's partial credit: a test cell that earned part of its points (the
judge's execute_result) is not "passed", and its line names the first failing check."""
from __future__ import annotations

from grader.cli import _student_validator

validate = _student_validator()  # scripts/validate.py, loaded as the instructor's validate loads it


def _cell(grade_id: str, points: float, outputs: list) -> dict:
    return {"cell_type": "code", "source": "checks()", "outputs": outputs,
            "metadata": {"nbgrader": {"grade": True, "solution": False, "points": points, "grade_id": grade_id}}}


def test_partial_credit_is_counted_and_explained():
    checks = "Hidden tests: 0.8 of 2 points\n  passed  a (0.4 points)\n  FAILED  b (0.4 points): shape (1, 1, 3, 3)\n"
    partial = _cell("test_fixed", 2, [{"output_type": "stream", "name": "stdout", "text": checks.splitlines(True)},
                                      {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                                       "data": {"text/plain": "0.8"}}])
    full = _cell("test_lp", 2, [{"output_type": "stream", "name": "stdout", "text": "ok\n"}])
    failed = _cell("test_comparison", 3, [{"output_type": "error", "ename": "AssertionError", "evalue": "no rows",
                                           "traceback": []}])
    found = validate.parts({"cells": [partial, full, failed]})
    assert found[0].status == "0.8 of 2 points: FAILED  b (0.4 points): shape (1, 1, 3, 3)" and found[0].failed
    assert found[1].status == validate.PASSED and found[2].status.startswith("AssertionError: no rows")
    assert validate.summary("nb.ipynb", found)[0] == "nb.ipynb: 1 of 3 tests pass (2.8 / 7 points)"
