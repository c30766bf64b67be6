"""The course's nbgrader preprocessors, beside nbgrader's own (``grader.config`` puts them in order).

- :class:`GuardCells` (autograde, before anything runs) disables the submitted cells that modify the grading
  environment or use a tool their answer may not use;
- :class:`TruncateOutputs` (autograde, after the run) caps what a cell may print;
- :class:`HideHiddenTests` (feedback) removes the hidden tests from what the student sees: their source, and
  the lines of tracebacks that quote it, so hidden cases cannot be read off the feedback.
"""
from __future__ import annotations

import re

from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from nbgrader.utils import is_grade, is_locked
from traitlets import Integer

from grader.scan import FORBIDDEN_CALLS, imported_names, scan_source


class GuardCells(NbGraderPreprocessor):
    """Disable the submitted cells that modify the grading environment, before the notebook runs.

    A submission runs in the same kernel as the tests that grade it, so it could patch them: replace a
    check, redefine ``torch.allclose``, or rewrite the test cells' code with IPython's input transformers
    before they run. :func:`grader.scan.scan_source` reads every cell a student could edit (cells nbgrader
    does not restore from the gradebook) and finds such code, and the tools a solution cell may not use for
    its answer (:data:`grader.scan.FORBIDDEN_CALLS`); this preprocessor replaces each flagged cell by one that
    raises an error naming the lines, so the notebook still runs, the student keeps the points of everything
    else, and the instructor reads why in the feedback.
    """

    def preprocess(self, nb, resources):  # `--GuardCells.enabled=False` turns it off (to test the other defences)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        foreign = imported_names([cell.source for cell in code])
        rules = FORBIDDEN_CALLS.get(resources.get("nbgrader", {}).get("assignment", ""), {})
        for cell in code:
            meta = cell.metadata.get("nbgrader", {})
            trusted = is_locked(cell) and "grade_id" in meta  # restored by OverwriteCells
            findings = [] if trusted else scan_source(cell.source, foreign, rules.get(meta.get("grade_id")))
            if findings:
                student = resources.get("nbgrader", {}).get("student", "?")
                self.log.warning("Disabling a cell of %s that modifies the grading environment: %s",
                                 student, "; ".join(map(str, findings)))
                message = ("The autograder did not run this cell because it modifies the grading environment "
                           "or uses a tool its answer may not use: " + "; ".join(map(str, findings))
                           + ". Ask your instructor if you think this is a mistake.")
                original = "\n".join("# " + line for line in cell.source.splitlines())
                cell.source = f"raise RuntimeError({message!r})\n\n# The cell as submitted:\n{original}"
        return nb, resources


class TruncateOutputs(NbGraderPreprocessor):
    """Cap each output at `max_chars` characters (LimitOutput counts lines; one line can be megabytes),
    and replace images larger than that by a note, so feedback stays readable and the disk stays free."""

    max_chars = Integer(20_000, help="Characters kept of each text output").tag(config=True)

    def _cut(self, text):
        text = "".join(text) if isinstance(text, list) else text
        if len(text) <= self.max_chars:
            return text
        return text[: self.max_chars] + f"\n... output truncated by the autograder ({len(text):,} characters) ...\n"

    def preprocess_cell(self, cell, resources, index):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                out.text = self._cut(out.text)
            elif out.output_type == "error":
                if sum(len(line) for line in out.traceback) > self.max_chars:
                    out.traceback = [self._cut("\n".join(out.traceback))]
                out.evalue = self._cut(out.evalue)
            elif "data" in out:
                for mime, value in list(out.data.items()):
                    size = len(value) if isinstance(value, str) else len(str(value))
                    if size <= self.max_chars:
                        continue
                    if mime.startswith("text/"):
                        out.data[mime] = self._cut(value)
                    else:
                        del out.data[mime]
                        out.data["text/plain"] = f"[{mime} output of {size:,} characters removed by the autograder]"
        return cell, resources


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class HideHiddenTests(ClearHiddenTests):
    """Feedback shows a test cell's visible part only, and a failed test by its message alone.

    nbgrader's feedback copies the autograded notebook, hidden tests included; an IPython traceback quotes
    the lines around the failure, so even with the source removed the hidden cases (shapes, seeds) would be
    readable. This keeps the error's name and message, which the checks write for the student.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code" or not is_grade(cell) or self.begin_test_delimeter not in cell.source:
            return super().preprocess_cell(cell, resources, cell_index)
        visible = set(cell.source.split(self.begin_test_delimeter, 1)[0].splitlines())
        secret = [line.strip() for line in cell.source.splitlines()
                  if line.strip() and line not in visible and len(line.strip()) > 3]
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        cell.source = cell.source.rstrip() + "\n# (hidden tests ran here; they are not shown)"
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                text = _ANSI.sub("", "\n".join(out.traceback))
                if any(line in text for line in secret):  # the traceback quotes the hidden tests
                    out.traceback = [f"{out.ename}: {_ANSI.sub('', out.evalue)}"]
        return cell, resources
