"""The judge without nbgrader, for the assignments' fast tests: a test cell's hidden part runs here on a namespace
(as the kernel would run it on the student's), and what it reports goes to the grader's judge.

Used by tests/test_nbgrader_checks.py and the per-assignment test files (test_conv_backward, test_vit_attention,
test_transfer_finetune).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import lib.report
from grader import judge

ROOT = Path(__file__).resolve().parents[1]


def cells(assignment: str, kind: str = "solutions") -> list[dict]:
    """The notebook's cells: ``kind`` is solutions/ (the source) or exercises/ (the student version)."""
    return json.loads((ROOT / kind / assignment / f"{assignment}.ipynb").read_text())["cells"]


def grade_id(cell: dict) -> str | None:
    return cell["metadata"].get("nbgrader", {}).get("grade_id")


def sources(assignment: str, kind: str = "solutions") -> dict[str, str]:
    """grade_id -> source, of every cell nbgrader tracks."""
    return {grade_id(c): "".join(c["source"]) for c in cells(assignment, kind) if grade_id(c)}


@contextmanager
def quick_sizes():
    """NBGRADER_EXECUTION=validate while a notebook's cells run here: its QUICK sizes, as under nbgrader."""
    saved = os.environ.get("NBGRADER_EXECUTION")
    os.environ["NBGRADER_EXECUTION"] = "validate"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("NBGRADER_EXECUTION")
        else:
            os.environ["NBGRADER_EXECUTION"] = saved


def kernel_report(assignment: str, grade_id: str, source: str, namespace: dict, cases: list[dict]):
    """What the test cell's hidden part (in ``source``) reports when it runs in a copy of ``namespace`` on ``cases``,
    as plain data (what reaches the grader)."""
    code = source.split(judge.DELIMITER, 1)[1].replace("CASES = []", "CASES = " + repr(cases), 1)
    shown: list = []
    saved, lib.report.report = lib.report.report, shown.append
    try:
        exec(compile(code, f"{assignment}:{grade_id}", "exec"), dict(namespace))
    finally:
        lib.report.report = saved
    assert len(shown) == 1, f"{assignment}:{grade_id} reported {len(shown)} times"
    return json.loads(json.dumps(lib.report.plain(shown[0]), allow_nan=False))


def judged(assignment: str, grade_id: str, source: str, namespace: dict, seed: int = 7) -> list[judge.Check]:
    """The checks of one test cell: its hidden part run in ``namespace`` on this seed's cases, its report judged."""
    cell = judge.cells_of(assignment)[grade_id]
    cases = judge.draw_cases(cell, seed, grade_id)
    return cell.judge(cases, kernel_report(assignment, grade_id, source, namespace, cases))


def failed(checks) -> list[str]:
    return [f"{c.name}: {c.message}" for c in checks if not c.passed]
