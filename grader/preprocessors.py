"""The course's nbgrader preprocessors, beside nbgrader's own (``grader.config`` puts them in order).

- :class:`GuardCells` (autograde, before anything runs) disables the submitted cells that the own-work rules
  do not allow (``grader.scan``); the hidden tests themselves are judged outside the kernel (``grader.judge``);
- :class:`TruncateOutputs` (autograde, after the run) caps what a cell may print;
- :class:`HideHiddenTests` (feedback) removes the hidden tests from what the student sees: their source, and
  every output that quotes it (a traceback, or a cell that printed ``In``), so hidden cases cannot be read off
  the feedback;
- :class:`InstallCell` (generate_assignment) gives each student version the chapters' install cell (Colab,
  Binder), and :class:`SkipInstallCell` (autograde, before GuardCells) blanks it: the grader never installs.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import nbformat
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from nbgrader.utils import is_grade, is_locked
from nbformat.v4 import new_output
from traitlets import Integer, Unicode

from grader.scan import FORBIDDEN_CALLS, imported_names, scan_source

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def colab_cells():
    """scripts/colab_cells.py, which writes the install cell of the chapters (it ships in the student release,
    where the grader is not)."""
    spec = importlib.util.spec_from_file_location("colab_cells", REPO / "scripts" / "colab_cells.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InstallCell(NbGraderPreprocessor):
    """The student version's first code cell installs the course where ``lib`` is missing (Colab, a bare
    Jupyter), as every chapter's does (scripts/colab_cells.py). Added last, as an ordinary cell: nbgrader does
    not lock, checksum or save it, so the student release can name its own repository in it."""

    repository_url = Unicode("", help="The repository the cell installs from (_config.yml's repository.url)"
                             ).tag(config=True)

    def preprocess(self, nb, resources):
        if not self.repository_url:
            raise ValueError("InstallCell.repository_url is not set: grader/config.py reads it from the course's "
                             "_config.yml (repository.url), which is missing")
        cells = colab_cells()
        cells.with_install_cell(nb, cells.cell_source(self.repository_url))
        nb.cells = [nbformat.from_dict(cell) for cell in nb.cells]
        install = cells._install_cell(nb)
        install.source = "".join(install.source)
        return nb, resources


class SkipInstallCell(NbGraderPreprocessor):
    """The install cell, as the exercise gave it, is blanked before anything runs: the grader's kernel has the
    course and no network, and the cell's own tools (subprocess, sys.path) would otherwise be flagged by
    GuardCells. An install cell the student edited stays an ordinary cell, judged like any other."""

    def preprocess_cell(self, cell, resources, index):
        meta = cell.metadata
        if (cell.cell_type == "code" and "nbgrader" not in meta and colab_cells().TAG in meta.get("tags", [])
                and colab_cells().is_install_source(cell.source)):
            cell.source = "# The course's install cell (for Colab): the autograder does not run it."
        return cell, resources


class GuardCells(NbGraderPreprocessor):
    """Disable the submitted cells that the own-work rules do not allow, before the notebook runs.

    :func:`grader.scan.scan_source` reads every cell a student could edit (cells nbgrader does not restore
    from the gradebook), magics' bodies included, and finds the dynamic tricks (computed imports, ``exec``,
    import hooks, input transformers, replaced attributes of torch or builtins) and the tools a solution cell
    may not use (:data:`grader.scan.FORBIDDEN_CALLS`). Each flagged cell is replaced by one that raises an
    error naming the lines, so it scores nothing through the tests that need it, the rest of the notebook
    still runs, and the student reads why in the feedback. Advisory: the judge decides from the results.
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
                self.log.warning("Disabling a cell of %s: %s", student, "; ".join(map(str, findings)))
                message = ("The autograder did not run this cell: " + "; ".join(map(str, findings))
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
    """Feedback shows a test cell's visible part only, and no output that quotes a hidden test.

    nbgrader's feedback copies the autograded notebook, hidden tests included, and this run's hidden cases are
    written in them (``grader.judge.HiddenCases``). An IPython traceback quotes the lines around a failure, and
    a cell can print ``In`` (every cell's source); so every output of every cell that contains a line of a
    hidden test is replaced by a note. The judge's list of checks (its own output) stays.
    """

    min_secret_chars = Integer(20, help="Lines of hidden tests at least this long are looked for in outputs").tag(config=True)

    def preprocess(self, nb, resources):
        code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
        public = "\n".join(source.split(self.begin_test_delimeter, 1)[0] for source in code)  # what the student has
        self._secret = {line.strip() for source in code if self.begin_test_delimeter in source
                        for line in source.split(self.begin_test_delimeter, 1)[1].splitlines()
                        if len(line.strip()) >= self.min_secret_chars and line.strip() not in public}
        return super().preprocess(nb, resources)

    def _quotes(self, out) -> bool:
        texts = [out.get("text", ""), out.get("evalue", ""), "\n".join(out.get("traceback", []))]
        texts += [v for v in out.get("data", {}).values() if isinstance(v, str)]
        text = _ANSI.sub("", "\n".join(t if isinstance(t, str) else "".join(t) for t in texts))
        return any(line in text for line in self._secret)

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code" and is_grade(cell) and self.begin_test_delimeter in cell.source:
            cell, resources = super().preprocess_cell(cell, resources, cell_index)
            cell.source = cell.source.rstrip() + "\n# (hidden tests ran here; they are not shown)"
        else:
            cell, resources = super().preprocess_cell(cell, resources, cell_index)
        for i, out in enumerate(cell.get("outputs", [])):
            if out.output_type == "error" and self._quotes(out):
                out.traceback = [f"{out.ename}: {_ANSI.sub('', out.evalue)}"]
            if self._quotes(out):
                cell.outputs[i] = new_output("stream", name="stdout",
                                             text="[output removed by the autograder: it quoted the hidden tests]\n")
        return cell, resources
