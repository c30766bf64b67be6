#!/usr/bin/env python
"""The instructor's commands around nbgrader, one per step (the Makefile's `# ---- instructors` targets call them).

    python scripts/grade.py exercises              regenerate exercises/ from solutions/
    python scripts/grade.py check-exercises        fail if exercises/ is out of date (CI runs this, via tests/)
    python scripts/grade.py collect A downloads.zip  unpack a zip of downloads into submitted/<student>/A/
    python scripts/grade.py autograde [A ...]      grade every submission in submitted/, print a score table
    python scripts/grade.py feedback [A ...]       write feedback/<student>/<A>/<A>.html
    python scripts/grade.py export [CSV]           one CSV row per student and assignment (feedback/grades.csv)
    python scripts/grade.py validate NB.ipynb      a student's self-check; exits 1 when a test fails

Every command runs in the course root (`--root`, default: the repository), where nbgrader_config.py is.
`nbgrader validate` exits 0 even when tests fail, and `nbgrader autograde` stops at nothing but reports
failures only in its log: these commands read the results through nbgrader's Python API instead and say,
per submission, what happened.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _single_threaded() -> None:
    """Autograded notebooks do small pieces of work; one thread per kernel is faster than two on a busy
    machine (OpenMP threads wait for each other when the cores are shared). AUTOGRADE_THREADS overrides."""
    os.environ["OMP_NUM_THREADS"] = os.environ.get("AUTOGRADE_THREADS", "1")


def _quiet_nbgrader() -> None:
    """SQLAlchemy's and nbformat's warnings about nbgrader's own internals are noise for the instructor."""
    warnings.filterwarnings("ignore", message=".*not in session.*")
    warnings.filterwarnings("ignore", message=".*missing an id field.*")


def _env(root: Path) -> None:
    """nbgrader starts `alembic` and kernels as subprocesses: the venv's bin must be on PATH."""
    _quiet_nbgrader()
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.chdir(root)


def _api(root: Path, overrides: dict | None = None):
    """nbgrader's Python API on the course in ``root``; ``overrides`` are config sections, e.g.
    ``{"Execute": {"timeout": 60}}``, applied over nbgrader_config.py."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.merge(Config(overrides or {}))
    coursedir = CourseDirectory(config=config, root=str(root))
    return NbGraderAPI(coursedir, config=config)


def assignments(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (root / "solutions").glob("*/*.ipynb") if p.parent.name == p.stem)


def _run_app(app_cls, argv: list[str]) -> int:
    """Run an nbgrader app in-process, as its command line would (returns its exit status)."""
    app = app_cls.instance()
    try:
        app.initialize(argv)
        app.start()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        app_cls.clear_instance()
    return 0


# ---- exercises ------------------------------------------------------------------------------------------

def generate_exercises(root: Path, names: list[str] | None = None) -> None:
    """`nbgrader generate_assignment` for each assignment: student versions into exercises/."""
    api = _api(root)
    for name in names or assignments(root):
        result = api.generate_assignment(name, force=True, create=True)
        if not result["success"]:
            raise SystemExit(f"generate_assignment {name} failed:\n{result.get('log', '')}\n{result.get('error', '')}")
        print(f"exercises/{name}/ regenerated from solutions/{name}/")


def _normalised(path: Path) -> str:
    return json.dumps(json.loads(path.read_text()), sort_keys=True, indent=1)


def stale_exercises(root: Path) -> list[str]:
    """Regenerate the exercises in a scratch copy of the course and list what differs from exercises/."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        shutil.copytree(root / "solutions", scratch / "solutions")
        shutil.copy(root / "nbgrader_config.py", scratch)
        here = Path.cwd()
        try:
            os.chdir(scratch)
            generate_exercises(scratch)
        finally:
            os.chdir(here)
        fresh, committed = scratch / "exercises", root / "exercises"
        fresh_files = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        committed_files = {p.relative_to(committed) for p in committed.rglob("*")
                           if p.is_file() and ".ipynb_checkpoints" not in p.parts and p.name != ".gitkeep"}
        for rel in sorted(fresh_files - committed_files):
            problems.append(f"exercises/{rel} is missing")
        for rel in sorted(committed_files - fresh_files):
            problems.append(f"exercises/{rel} has no source in solutions/")
        for rel in sorted(fresh_files & committed_files):
            a, b = fresh / rel, committed / rel
            same = _normalised(a) == _normalised(b) if rel.suffix == ".ipynb" else filecmp.cmp(a, b, shallow=False)
            if not same:
                problems.append(f"exercises/{rel} differs from what solutions/ generates")
    return problems


# ---- collecting, grading, feedback, export --------------------------------------------------------------

def collect(root: Path, assignment: str, archive: Path) -> int:
    """Copy a zip of downloads (one folder per student id, holding the notebook) into submitted/."""
    from nbgrader.apps.zipcollectapp import ZipCollectApp

    target = root / "downloaded" / assignment / "archive"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(archive, target / Path(archive).name)
    return _run_app(ZipCollectApp, [assignment, "--force", "--log-level=WARN", f"--CourseDirectory.root={root}"])


@dataclass
class Outcome:
    assignment: str
    student: str
    ok: bool
    seconds: float
    cpu_seconds: float = 0.0  # the grader's and the kernel's CPU time: what the wall time is on an idle machine
    auto: float | None = None
    auto_max: float = 0.0
    manual_max: float = 0.0
    reason: str = ""
    disabled_cells: int = 0


_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit))(?::\s*(.*))?$")


def _reason(result: dict) -> str:
    """The exception that stopped nbgrader, in one line: its class and message, from the log's tracebacks."""
    text = (result.get("error") or "") + "\n" + (result.get("log") or "")
    found = [m for m in (_EXCEPTION_LINE.match(line.strip()) for line in text.splitlines()) if m]
    if not found:
        return "see nbgrader's log above"
    name, message = found[-1].group(1), (found[-1].group(2) or "").strip()
    if name == "NbGraderException" and len(found) > 1:  # the summary; the cause came before it
        name, message = found[-2].group(1), (found[-2].group(2) or "").strip()
    return f"{name}: {message}"[:200]


def submissions(root: Path, names: list[str] | None = None) -> list[tuple[str, str]]:
    wanted = set(names or assignments(root))
    found = []
    for d in sorted((root / "submitted").glob("*/*")):
        if d.is_dir() and d.name in wanted:
            found.append((d.name, d.parent.name))
    return sorted(found)


def autograde(root: Path, names: list[str] | None = None, *, students: list[str] | None = None,
              quiet: bool = False, overrides: dict | None = None) -> list[Outcome]:
    """Autograde each submission separately, so that one broken notebook stops nothing else."""
    from nbgrader.api import Gradebook

    _single_threaded()
    _quiet_nbgrader()
    api = _api(root, overrides)
    outcomes = []
    found = submissions(root, names)
    with Gradebook(api.coursedir.db_url) as gb:
        known = {a.name for a in gb.assignments}
    for assignment in sorted({a for a, _ in found} - known):  # a fresh clone has no gradebook yet
        print(f"{assignment} is not in the gradebook yet: generating it from solutions/{assignment}/")
        generate_exercises(root, [assignment])
    for assignment, student in found:
        if students and student not in students:
            continue
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        result = api.autograde(assignment, student, force=True, create=True)
        seconds = time.perf_counter() - start
        outcome = Outcome(assignment, student, bool(result["success"]), seconds, _cpu_seconds() - cpu_start)
        log = result.get("log") or ""
        outcome.disabled_cells = log.count("Disabling a cell of")
        with Gradebook(api.coursedir.db_url) as gb:
            for nb in gb.find_assignment(assignment).notebooks:
                for cell in nb.grade_cells:
                    if cell.cell_type == "code":
                        outcome.auto_max += cell.max_score
                    else:
                        outcome.manual_max += cell.max_score
            if outcome.ok:
                sub = gb.find_submission(assignment, student)
                outcome.auto = sum(g.auto_score or 0.0 for nb in sub.notebooks for g in nb.grades
                                   if g.cell.cell_type == "code")
        if not outcome.ok:
            outcome.reason = _reason(result)
        outcomes.append(outcome)
        if not quiet:
            _print_row(outcome)
    return outcomes


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the kernels), user and system."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _print_row(o: Outcome) -> None:
    score = f"{o.auto:5.1f} / {o.auto_max:<5.1f}" if o.auto is not None else f"    - / {o.auto_max:<5.1f}"
    status = f"ok (CPU {o.cpu_seconds:.1f} s)" if o.ok else f"FAILED: {o.reason}"
    if o.ok and o.disabled_cells:
        status += f" ({o.disabled_cells} cell(s) disabled: they modify the grading environment)"
    if o.ok and o.manual_max:
        status += f"; {o.manual_max:g} point(s) to grade by hand"
    print(f"{o.assignment:18s} {o.student:20s} {score}  {o.seconds:6.1f} s  {status}", flush=True)


def feedback(root: Path, names: list[str] | None = None) -> int:
    api = _api(root)
    failures = 0
    for assignment in names or assignments(root):
        result = api.generate_feedback(assignment, force=True)
        if not result["success"]:
            failures += 1
            print(f"feedback for {assignment}: FAILED: {_reason(result)}")
    count = len(list((root / "feedback").glob("*/*/*.html")))
    print(f"{count} feedback file(s) in feedback/<student>/<assignment>/")
    return 1 if failures else 0


def export(root: Path, to: str = "feedback/grades.csv") -> int:
    from nbgrader.apps import ExportApp

    target = root / to  # `to` may be absolute
    target.parent.mkdir(parents=True, exist_ok=True)
    status = _run_app(ExportApp, [f"--to={target}", "--log-level=WARN", f"--CourseDirectory.root={root}"])
    if not status:
        print(f"grades written to {target}")
    return status


def validate(notebook: Path, root: Path = REPO) -> int:
    """Run a notebook's tests like `nbgrader validate` (with the course's settings), but exit 1 when one fails."""
    from nbgrader.validator import Validator
    from traitlets.config.loader import PyFileConfigLoader

    _single_threaded()
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    results = Validator(config=config).validate(str(notebook))
    if not results:
        print(f"{notebook}: every test passed. Submit this file.")
        return 0
    for kind, cells in results.items():
        for cell in cells:
            lines = cell["source"].strip().splitlines() or [""]
            what = next((line for line in lines if "grading.check_" in line), lines[0]).strip()
            error = re.sub(r"\x1b\[[0-9;]*m", "", cell.get("raw_error") or cell.get("error") or "").strip()
            last = error.splitlines()[-1] if error else ""
            print(f"{kind.upper()}: {what}\n    {last}")
    print(f"{notebook}: {sum(len(v) for v in results.values())} cell(s) did not pass (see above).")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/grade.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO, help="the course directory (default: the repository)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("exercises").add_argument("assignments", nargs="*")
    sub.add_parser("check-exercises")
    p = sub.add_parser("collect")
    p.add_argument("assignment")
    p.add_argument("archive", type=Path)
    p = sub.add_parser("autograde")
    p.add_argument("assignments", nargs="*")
    p.add_argument("--student", action="append", help="only this student (repeatable)")
    sub.add_parser("feedback").add_argument("assignments", nargs="*")
    sub.add_parser("export").add_argument("to", nargs="?", default="feedback/grades.csv",
                                         help="where to write (default: feedback/, which git ignores)")
    sub.add_parser("validate").add_argument("notebook", type=Path)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.command == "validate":
        notebook = args.notebook.resolve()
        _env(notebook.parent)
        return validate(notebook, root)
    _env(root)
    if args.command == "exercises":
        generate_exercises(root, args.assignments or None)
        return 0
    if args.command == "check-exercises":
        problems = stale_exercises(root)
        for line in problems:
            print(line)
        if problems:
            print("exercises/ is out of date: run `make exercises` and commit the result")
            return 1
        print("exercises/ matches solutions/")
        return 0
    if args.command == "collect":
        return collect(root, args.assignment, args.archive.resolve())
    if args.command == "autograde":
        outcomes = autograde(root, args.assignments or None, students=args.student)
        failed = [o for o in outcomes if not o.ok]
        print(f"{len(outcomes)} submission(s) graded, {len(failed)} failed"
              + (": their grades need a look in the formgrader" if failed else ""))
        return 1 if failed else 0
    if args.command == "feedback":
        return feedback(root, args.assignments or None)
    if args.command == "export":
        return export(root, args.to)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
