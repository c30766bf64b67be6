"""The instructor's commands around nbgrader, one per step (the Makefile's instructor targets call them).

    python -m grader exercises                 regenerate exercises/ from solutions/
    python -m grader check-exercises           fail if exercises/ is out of date (CI runs this, via tests/)
    python -m grader collect A downloads.zip   unpack a zip of downloads into submitted/<student>/A/ [--map ids.csv]
    python -m grader autograde [A ...]         grade every submission in submitted/, print a score table
    python -m grader feedback [A ...]          write feedback/<student>/<A>/<A>.html (skips what is not graded yet)
    python -m grader export [--format F] [TO]  grades/grades.csv, or F=canvas|moodle: grades/<F>.csv (LMS import)
    python -m grader similarity A              rank pairs of submissions by shared code: grades/similarity-A.html
    python -m grader validate NB.ipynb         grade a notebook as autograde does (hidden tests too); exit 1 on failure
    python -m grader student-release DIR --repository URL   write the tree a course publishes to its students (at URL)
    python -m grader sandbox                   check that the sandbox runs here; print its limits and command line
    python -m grader dask-certs DIR            make the Dask grading cluster's TLS certificates (CA and cluster's)

Every command runs in the course root (``--root``, default: the repository), where nbgrader_config.py is.
Each is registered below with its arguments and its handler (``@command``); :func:`main` only dispatches.
`nbgrader validate` exits 0 even when tests fail, and `nbgrader autograde` stops at nothing but reports
failures only in its log: these commands read the results through nbgrader's Python API instead and say,
per submission, what happened.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grader import course, sandbox
from grader.autograde import autograde, summary
from grader.course import REPO


@contextlib.contextmanager
def sandbox_banner():
    """With ``SANDBOX=off``, say so before and after; otherwise make sure the sandbox runs here, or stop
    with the message that names the fix."""
    if not sandbox.enabled():
        warning = ("SANDBOX=off: submissions run WITHOUT the sandbox, with your own rights (files, network, "
                   "processes). Use this only for trusted notebooks.")
        print(f"!!! {warning}", flush=True)
        try:
            yield
        finally:
            print(f"!!! {warning}", flush=True)
        return
    try:
        sandbox.check()
    except sandbox.SandboxUnavailable as e:
        raise SystemExit(f"The grader runs every submission in a sandbox, and the sandbox cannot run here: {e}") from None
    yield


def _student_validator():
    """scripts/validate.py, the students' self-check: the instructor's validate prints the same report."""
    spec = importlib.util.spec_from_file_location("course_validate", REPO / "scripts" / "validate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("course_validate", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _assignment_of(notebook: Path, root: Path) -> str | None:
    """The assignment a notebook is a copy of (its name, or its folder's: submitted/<student>/<a>/), if any."""
    for name in (notebook.stem, notebook.parent.name):
        if (root / "solutions" / name / f"{name}.ipynb").is_file():
            return name
    return None


def validate(notebook: Path, root: Path = REPO) -> int:
    """Grade a notebook as `make autograde` does (hidden tests included, in the sandbox, nothing written to the
    gradebook) and report it part by part, summary first; exit status 1 when a test fails. A notebook of no
    assignment in solutions/ runs its own (visible) tests, and the report says so."""
    from grader.worker import Task, grade, source_sha256

    course.single_threaded()
    student = _student_validator()
    assignment = _assignment_of(notebook, root)
    with sandbox_banner():
        if assignment is None:
            return student.validate(notebook, student.course_config(root), sandbox.SandboxedValidator,
                                    note=f"ONLY the visible tests ran: solutions/ has no assignment {notebook.stem}")
        task = Task(assignment, "validate", {f"{assignment}.ipynb": notebook.read_bytes()},
                    source_sha256(root, assignment))
        result = grade(task, root)
    if not result.ok:
        print(f"{notebook}: could not be graded: {result.reason}")
        return 1
    graded = json.loads(result.notebooks[assignment])
    return student.report(notebook, student.parts(graded),
                          note="(hidden tests included: graded as `make autograde` grades it, in the sandbox)")


def describe_sandbox() -> int:
    """What `make sandbox` prints: whether the sandbox runs here, its limits and the command it wraps a kernel in."""
    limits = sandbox.Limits.from_env()
    try:
        sandbox.check()
    except sandbox.SandboxUnavailable as e:
        print(f"the sandbox cannot run here: {e}")
        return 1
    box = sandbox.Sandbox(Path("<submission folder>"), Path("<connection file>"), limits)
    print(f"the sandbox runs here ({'as root: the kernel runs as its own user id' if box.as_root else 'as your user, in a user namespace'}).")
    print(f"limits: {limits.describe()}")
    print("a kernel starts as:\n  " + box.describe().replace(" --", " \\\n    --"))
    return 0


def dask_certs(folder: Path) -> int:
    """What `make dask-certs` runs: the cluster's certificates, and where each file goes."""
    from grader.cluster import make_certs

    try:
        files = make_certs(folder)
    except FileExistsError as e:
        print(e)
        return 1
    print("made " + ", ".join(str(f) for f in files))
    print(f"copy {files[0].name}, {files[2].name} and {files[3].name} to every machine of the cluster; "
          f"{files[1].name} signs them and stays here")
    return 0


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[argparse.Namespace, Path], int]
    arguments: tuple[tuple[tuple, dict], ...]
    in_course: bool  # run in the course root (course.enter), where nbgrader finds its config


COMMANDS: dict[str, Command] = {}


def arg(*flags, **options) -> tuple[tuple, dict]:
    """One argument of a command, as ``argparse.ArgumentParser.add_argument`` takes it."""
    return flags, options


def command(name: str, *arguments: tuple[tuple, dict], in_course: bool = True):
    """Register the decorated ``handler(args, root) -> exit status`` as ``python -m grader name``."""
    def register(handler: Callable[[argparse.Namespace, Path], int]):
        COMMANDS[name] = Command(name, handler, arguments, in_course)
        return handler
    return register


ASSIGNMENTS = arg("assignments", nargs="*")


@command("exercises", ASSIGNMENTS)
def _exercises(args, root: Path) -> int:
    course.generate_exercises(root, args.assignments or None)
    return 0


@command("check-exercises")
def _check_exercises(args, root: Path) -> int:
    problems = course.stale_exercises(root)
    for line in problems:
        print(line)
    if problems:
        print("exercises/ is out of date: run `make exercises` and commit the result")
        return 1
    print("exercises/ matches solutions/")
    return 0


@command("collect", arg("assignment"), arg("archive", type=Path),
         arg("--map", type=Path, default=None, help="a CSV of lms_id,student_id (Moodle's or Canvas's ids)"))
def _collect(args, root: Path) -> int:
    return course.collect(root, args.assignment, args.archive.resolve(), args.map)


@command("autograde", ASSIGNMENTS,
         arg("--student", action="append", help="only this student (repeatable)"),
         arg("--jobs", type=int, default=None, help="submissions graded at once (default: the number of cores)"),
         arg("--scheduler", default=None, help="a Dask scheduler's address, e.g. tls://host:8786"),
         arg("--certs", type=Path, default=None,
             help="the Dask cluster's certificates (default: DASK_CERTS, else .dask-certs in the course)"),
         arg("--force", action="store_true", help="regrade submissions that have not changed since last time"))
def _autograde(args, root: Path) -> int:
    with sandbox_banner():
        try:
            outcomes = autograde(root, args.assignments or None, students=args.student, jobs=args.jobs,
                                 scheduler=args.scheduler or None, force=args.force, certs=args.certs)
        except KeyboardInterrupt:
            return 130
    print(summary(outcomes))
    return 1 if any(not o.ok for o in outcomes) else 0


@command("feedback", ASSIGNMENTS)
def _feedback(args, root: Path) -> int:
    return course.feedback(root, args.assignments or None)


@command("export", arg("to", nargs="?", default=None, help="where to write (default: grades/<format>.csv, which git ignores)"),
         arg("--format", default="csv", choices=["csv", "canvas", "moodle"], help="the layout (default: csv)"),
         arg("--provisional", action="store_true",
             help="write the LMS layouts although some written answers are not graded by hand yet"))
def _export(args, root: Path) -> int:
    return course.export(root, args.to, args.format, args.provisional)


@command("similarity", arg("assignment"))
def _similarity(args, root: Path) -> int:
    from grader.similarity import similarity
    return similarity(root, args.assignment)


@command("validate", arg("notebook", type=Path), in_course=False)
def _validate(args, root: Path) -> int:
    notebook, problem = _student_validator().find_notebook(args.notebook.resolve())
    if notebook is None:
        print(problem)
        return 2
    course.enter(notebook.parent)
    return validate(notebook, root)


@command("student-release", arg("target", type=Path, help="an empty or new folder"),
         arg("--repository", default="", help="the address the release is published at (STUDENT_REPO)"), in_course=False)
def _student_release(args, root: Path) -> int:
    from grader.release import student_release
    return student_release(root, args.target.resolve(), args.repository)


@command("sandbox", in_course=False)
def _sandbox(args, root: Path) -> int:
    return describe_sandbox()


@command("dask-certs", arg("folder", type=Path, nargs="?", default=Path(".dask-certs")), in_course=False)
def _dask_certs(args, root: Path) -> int:
    return dask_certs(args.folder)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m grader", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=REPO, help="the course directory (default: the repository)")
    sub = p.add_subparsers(dest="command", required=True)
    for c in COMMANDS.values():
        one = sub.add_parser(c.name)
        for flags, options in c.arguments:
            one.add_argument(*flags, **options)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    found, root = COMMANDS[args.command], args.root.resolve()
    if found.in_course:
        course.enter(root)
    return found.handler(args, root)
