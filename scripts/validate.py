#!/usr/bin/env python
"""A student's self-check: run a notebook's visible tests the way the grader runs them, exit 1 when one fails.

    python scripts/validate.py exercises/mixed_pooling/mixed_pooling.ipynb     (what `make validate NB=...` runs)
    python scripts/validate.py exercises/mixed_pooling                          (a folder with one notebook)

It prints a summary first, one line per graded part in the notebook's order (its name, its points, and passed,
not written yet, or the failing check's message), then the details of each failure. JupyterLab's Validate
button shows the same summary (jupyter/course_lab.py). `nbgrader validate` exits 0 even when tests fail; this
reads the executed notebook through nbgrader's Python API. It needs nothing of the instructor's grader: the
course's nbgrader settings are read from `nbgrader_config.py` when there is one beside it, and nbgrader's
defaults (with the course's time limits) otherwise.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSED, NOT_WRITTEN, BY_HAND = "passed", "not written yet", "graded by hand"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Part:
    name: str        # the cell's grade_id
    points: float
    status: str      # PASSED, NOT_WRITTEN, BY_HAND, or the failing check's message
    source: str = ""
    details: str = ""  # the traceback, for a failure
    earned: float | None = None  # a test cell's points (partial credit from the grader's checks); None: all or none

    @property
    def failed(self) -> bool:
        return self.status not in (PASSED, BY_HAND) and not self.status.startswith(BY_HAND)


def course_config(root: Path = ROOT):
    """The course's nbgrader settings, or its time limits over nbgrader's defaults when there is no config."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    if (root / "nbgrader_config.py").is_file():
        return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    c = Config()
    c.Execute.timeout, c.Execute.startup_timeout, c.Execute.interrupt_on_timeout = 300, 120, True
    return c


def _failure(cell) -> tuple[str, str]:
    """(the message in one line, the whole traceback) of a test cell that failed; ("", "") when it passed."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = _ANSI.sub("", str(out.get("evalue", ""))).strip()
            first = value.splitlines()[0] if value else ""
            return f"{out.get('ename', 'Error')}: {first}"[:300], _ANSI.sub("", "\n".join(out.get("traceback", [])))
        if out.get("output_type") == "stream" and out.get("name") == "stderr" and _text(out.get("text", "")).strip():
            text = _ANSI.sub("", _text(out["text"])).strip()
            return f"wrote to stderr: {text.splitlines()[-1]}"[:300], text
    return "", ""


def _text(value) -> str:
    """An output's text: a notebook file stores it as one string or as a list of lines."""
    return "".join(value) if isinstance(value, list) else str(value)


def _partial(cell, points: float) -> float | None:
    """The points of a test cell that earned only part of them (nbgrader's partial credit: its execute_result
    holds the score, as the grader's judge writes it), else None."""
    import nbformat
    from nbgrader.utils import determine_grade

    score, _ = determine_grade(nbformat.from_dict(cell))
    return float(score) if score is not None and float(score) < points else None


def parts(nb) -> list[Part]:
    """Every graded cell of an executed notebook, in order, with what happened to it."""
    found, unanswered = [], []
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        source = "".join(cell.get("source", ""))
        if meta.get("solution") and cell["cell_type"] == "code" and "raise NotImplementedError" in source:
            unanswered.append(meta.get("grade_id", "?"))
        if not meta.get("grade"):
            continue
        name, points = meta.get("grade_id", "?"), float(meta.get("points", 0))
        if cell["cell_type"] == "markdown":
            written = "YOUR ANSWER HERE" not in source
            found.append(Part(name, points, BY_HAND if written else f"{BY_HAND} ({NOT_WRITTEN})", source))
            continue
        message, details = _failure(cell)
        earned = _partial(cell, points) if not message else None
        if earned is not None:  # the grader's checks gave part of the points: the failing checks say why
            checks = "".join(_text(o.get("text", "")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")
            failing = next((line.strip() for line in checks.splitlines() if line.strip().startswith("FAILED")),
                           "some checks failed")
            found.append(Part(name, points, f"{earned:g} of {points:g} points: {failing}"[:300], source, checks,
                              earned))
        elif not message:
            found.append(Part(name, points, PASSED, source))
        elif unanswered and message.split(":")[0] in ("NameError", "NotImplementedError"):
            status = f"{NOT_WRITTEN} (answer {', '.join(f'`{u}`' for u in unanswered)} above)"
            found.append(Part(name, points, status, source, details))
        else:
            found.append(Part(name, points, message, source, details))
    return found


def summary(name: str, found: list[Part]) -> list[str]:
    """The lines a student reads first: a verdict, then one line per part."""
    tests = [p for p in found if not p.status.startswith(BY_HAND)]
    earned = sum(p.earned if p.earned is not None else p.points if p.status == PASSED else 0.0 for p in tests)
    total = sum(p.points for p in tests)
    by_hand = sum(p.points for p in found if p.status.startswith(BY_HAND))
    passed = sum(p.status == PASSED for p in tests)
    head = f"{name}: {passed} of {len(tests)} tests pass ({earned:g} / {total:g} points)"
    if by_hand:
        head += f"; {by_hand:g} more points are graded by hand"
    width = max((len(p.name) for p in found), default=0)
    return [head] + [f"  {p.name:<{width}}  {p.points:>3g} pts  {p.status}" for p in found]


def report(notebook: Path, found: list[Part], note: str = "") -> int:
    """Print the summary, then each failure's source and traceback; 0 when every test passed, else 1."""
    print("\n".join(summary(notebook.name, found)))
    if note:
        print(note)
    failed = [p for p in found if p.failed]
    for p in failed:
        print(f"\n---- {p.name}: {p.status}\n{p.source.strip()}\n{p.details.strip()}")
    if failed:
        print(f"\n{notebook}: {len(failed)} test(s) did not pass: fix the first one listed at the top.")
        return 1
    print(f"{notebook}: every test passed.")
    return 0


class _KeepNotebook:
    """Mixed into nbgrader's Validator: keeps the executed notebook, which ``validate`` itself does not return."""
    executed = None

    def _preprocess(self, nb):
        self.executed = super()._preprocess(nb)
        return self.executed


def run(notebook: Path, config=None, validator=None):
    """Execute ``notebook``'s tests with nbgrader's ``Validator`` (or the class ``validator``): (results, notebook)."""
    from nbgrader.validator import Validator

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # small pieces of work: one thread is faster on a busy machine
    cls = type("PartsValidator", (_KeepNotebook, validator or Validator), {})
    runner = cls(config=config if config is not None else course_config())
    results = runner.validate(str(notebook))
    return results, runner.executed


def validate(notebook: Path, config=None, validator=None, note: str = "") -> int:
    """Run ``notebook``'s tests and report them, summary first."""
    results, executed = run(notebook, config, validator)
    if "changed" in results or "type_changed" in results or executed is None:
        print(f"{notebook}: a test cell was changed; get a fresh copy of it (its source is below):")
        for cell in results.get("changed", []) + results.get("type_changed", []):
            print(cell["source"])
        return 1
    return report(notebook, parts(executed), note)


def find_notebook(path: Path) -> tuple[Path | None, str]:
    """The notebook ``path`` names: itself, or the one notebook in a folder; else (None, what to pass)."""
    if path.is_file():
        return path, ""
    if path.is_dir():
        found = sorted(p for p in path.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        if len(found) == 1:
            return found[0], ""
        listed = ", ".join(p.name for p in found) or "no notebook"
        return None, f"{path} is a folder with {listed}: pass one notebook, e.g. NB={path}/<name>.ipynb"
    return None, f"{path} does not exist: give the path of your exercise notebook, e.g. exercises/mixed_pooling"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python scripts/validate.py NOTEBOOK.ipynb (or its folder)", file=sys.stderr)
        return 2
    notebook, problem = find_notebook(Path(args[0]).resolve())
    if notebook is None:
        print(problem, file=sys.stderr)
        return 2
    os.chdir(notebook.parent)
    return validate(notebook, note="(the visible tests only: the grader runs hidden ones on other cases too)")


if __name__ == "__main__":
    sys.exit(main())
