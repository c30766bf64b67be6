"""The kernel runs the student; the grader judges. Two preprocessors around nbgrader's Execute:

- :class:`HiddenCases` (before the notebook runs) writes into each test cell the hidden cases of this grading
  run, drawn from a seed chosen now (``CASES = []`` becomes ``CASES = [{...}, ...]``): reading a notebook's
  hidden tests or an old feedback page does not give the inputs, let alone the expected answers;
- :class:`JudgeReports` (after it ran, in the grader's process) reads the one report each test cell showed
  (``lib.report``: the answer's outputs on those cases, as plain JSON), parses it as hostile input (size,
  schema, no code), computes the expected answers itself (``grader.checks.<assignment>``), decides every named
  check, and rewrites the cell's outputs for nbgrader: a list of the checks and the points as the cell's
  result, which nbgrader's partial credit reads. A cell that reports nothing earns nothing.

Nothing of this, the references included, is bound into the sandbox: whatever a submission changes in its own
kernel changes only what it reports.
"""
from __future__ import annotations

import importlib
import json
import random
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from nbformat.v4 import new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import is_grade
from traitlets import Integer

from lib.report import MIME

DELIMITER = "### BEGIN HIDDEN TESTS"
_CASES_LINE = re.compile(r"^CASES = \[\].*$", re.MULTILINE)
_MODULES = {"mixed_pooling": "pooling"}  # assignment -> its module in grader.checks
_RUN_SEED = secrets.randbits(31)  # one per grading process: its references are computed once


class GradingError(AssertionError):
    """A check failed; the message names the expected value, the value found and the likely fix."""


def fail(message: str) -> None:
    raise GradingError(message)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    message: str = ""


class Cell(NamedTuple):
    """A test cell's hidden part: its cases drawn from a random generator, and the judge of its report."""
    cases: Callable[[random.Random], list[dict]]
    judge: Callable[[list[dict], list], list[Check]]


def check(name: str, fn: Callable, *args) -> Check:
    """Run one named check: passed, or failed with the check's message (or why its data was unreadable)."""
    try:
        fn(*args)
    except GradingError as e:
        message = str(e)
        return Check(name, False, message[len(name) + 2:] if message.startswith(name + ": ") else message)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        return Check(name, False, f"the cell's results could not be read ({type(e).__name__}: {str(e)[:120]})")
    return Check(name, True)


def ok(result, desc: str):
    """The value a case returned; a case that raised, or reported nothing, fails with the reason."""
    if isinstance(result, dict) and "ok" in result:
        return result["ok"]
    if isinstance(result, dict) and isinstance(result.get("error"), str):
        fail(f"{desc} raised {result['error'][:300]}")
    fail(f"{desc}: {result.get('missing') if isinstance(result, dict) else 'no result'}")


def cells_of(assignment: str) -> dict[str, Cell]:
    """The hidden parts the grader judges in ``assignment`` (none for an assignment without a module)."""
    try:
        module = importlib.import_module(f"grader.checks.{_MODULES.get(assignment, assignment)}")
    except ModuleNotFoundError:
        return {}
    return getattr(module, "CELLS", {})


def draw_cases(cell: Cell, seed: int, grade_id: str) -> list[dict]:
    return cell.cases(random.Random(f"{seed}:{grade_id}"))


def _assignment(resources) -> str:
    return resources.get("nbgrader", {}).get("assignment", "")


class HiddenCases(NbGraderPreprocessor):
    """Write this run's hidden cases into the test cells, before the notebook runs."""

    seed = Integer(None, allow_none=True, help="The hidden cases' seed (default: drawn at grading time)").tag(config=True)

    def preprocess(self, nb, resources):
        seed = _RUN_SEED if self.seed is None else self.seed
        cells = cells_of(_assignment(resources))
        drawn = {}
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if cell.cell_type == "code" and is_grade(cell) and grade_id in cells and DELIMITER in cell.source:
                drawn[grade_id] = draw_cases(cells[grade_id], seed, grade_id)
                literal = "CASES = " + repr(drawn[grade_id]) + "  # drawn by the autograder for this run"
                cell.source = _CASES_LINE.sub(lambda _, text=literal: text, cell.source, count=1)
        resources["hidden_cases"] = drawn
        return nb, resources


def read_report(outputs, n_cases: int, limit: int) -> list:
    """The one report among a cell's outputs, checked: a list of ``n_cases`` results, at most ``limit`` characters
    of JSON. Anything else gives every case a ``missing`` reason."""
    reports = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")
               and MIME in o.get("data", {})]
    reason = None
    if not reports:
        reason = "the cell reported no results (its hidden tests did not run to the end)"
    elif len(reports) > 1:
        reason = f"the cell reported {len(reports)} times instead of once"
    else:
        data = reports[0]["data"][MIME]
        text = data if isinstance(data, str) else json.dumps(data)
        if len(text) > limit:
            reason = f"the cell's report has {len(text):,} characters, more than the {limit:,} allowed"
        else:
            data = _json(text) if isinstance(data, str) else data
            if not isinstance(data, list) or len(data) != n_cases:
                reason = "the cell's report is not one result per hidden case"
            else:
                return data
    return [{"missing": reason}] * n_cases


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def summary(checks: list[Check], points: float, max_points: float) -> str:
    lines = [f"Hidden tests: {points:g} of {max_points:g} points"]
    share = max_points / len(checks)
    for c in checks:
        lines.append(f"  {'passed' if c.passed else 'FAILED'}  {c.name} ({share:.3g} points)"
                     + ("" if c.passed else f": {c.message}"))
    return "\n".join(lines)


class JudgeReports(NbGraderPreprocessor):
    """Decide every test cell from its report, in the grader's process, and write its points for nbgrader."""

    max_report_chars = Integer(2_000_000, help="Characters of JSON one test cell may report").tag(config=True)

    def preprocess(self, nb, resources):
        cells = cells_of(_assignment(resources))
        drawn = resources.get("hidden_cases", {})
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if cell.cell_type == "code" and grade_id in drawn:
                self.judge_cell(cell, cells[grade_id], drawn[grade_id])
        return nb, resources

    def judge_cell(self, cell, spec: Cell, cases: list[dict]) -> None:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        results = read_report(cell.outputs, len(cases), self.max_report_chars)
        if errors:
            results = [{"missing": f"the cell stopped with {errors[0].ename}"}] * len(cases)
        checks = spec.judge(cases, results)
        max_points = float(cell.metadata["nbgrader"]["points"])
        points = round(max_points * sum(c.passed for c in checks) / len(checks), 4)
        kept = [o for o in cell.outputs if o.output_type in ("stream", "error")]
        for o in kept:
            if o.output_type == "stream":
                o.name = "stdout"  # nbgrader gives 0 to a cell that wrote to stderr; the checks decide here
        kept.append(new_output("display_data", data={"text/plain": summary(checks, points, max_points)}))
        kept.append(new_output("execute_result", data={"text/plain": repr(points)},
                               execution_count=cell.get("execution_count")))
        cell.outputs = kept
