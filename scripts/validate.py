#!/usr/bin/env python
"""A student's self-check: run a notebook's visible tests the way the grader runs them, exit 1 when one fails.

    python scripts/validate.py exercises/mixed_pooling/mixed_pooling.ipynb     (what `make validate NB=...` runs)

`nbgrader validate` exits 0 even when tests fail; this reads the results through nbgrader's Python API and
prints, per failed cell, the test's message. It needs nothing of the instructor's grader: the course's
nbgrader settings are read from `nbgrader_config.py` when there is one beside it, and nbgrader's defaults
(with the course's time limits) otherwise.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def course_config(root: Path = ROOT):
    """The course's nbgrader settings, or its time limits over nbgrader's defaults when there is no config."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    if (root / "nbgrader_config.py").is_file():
        return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    c = Config()
    c.Execute.timeout, c.Execute.startup_timeout, c.Execute.interrupt_on_timeout = 300, 120, True
    return c


def report(notebook: Path, results: dict) -> int:
    """Print what did not pass, one failed cell at a time; 0 when everything passed, else 1."""
    if not results:
        print(f"{notebook}: every test passed. Submit this file.")
        return 0
    for kind, cells in results.items():
        for cell in cells:
            lines = [line for line in cell["source"].strip().splitlines() if line.strip() and not line.startswith("#")]
            what = lines[0].strip() if lines else "(a cell)"
            error = re.sub(r"\x1b\[[0-9;]*m", "", cell.get("raw_error") or cell.get("error") or "").strip()
            last = error.splitlines()[-1] if error else ""
            print(f"{kind.upper()}: the cell starting `{what[:80]}`\n    {last}")
    print(f"{notebook}: {sum(len(v) for v in results.values())} cell(s) did not pass (see above).")
    return 1


def validate(notebook: Path, config=None, validator=None) -> int:
    """Run ``notebook``'s tests (with nbgrader's ``Validator``, or the class ``validator``) and report them."""
    from nbgrader.validator import Validator

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # small pieces of work: one thread is faster on a busy machine
    runner = (validator or Validator)(config=config if config is not None else course_config())
    return report(notebook, runner.validate(str(notebook)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python scripts/validate.py NOTEBOOK.ipynb", file=sys.stderr)
        return 2
    notebook = Path(args[0]).resolve()
    if not notebook.is_file():
        print(f"{notebook} does not exist: give the path of your exercise notebook", file=sys.stderr)
        return 2
    os.chdir(notebook.parent)
    return validate(notebook)


if __name__ == "__main__":
    sys.exit(main())
