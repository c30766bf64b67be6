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

    course._single_threaded()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO, help="the course directory (default: the repository)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("exercises").add_argument("assignments", nargs="*")
    sub.add_parser("check-exercises")
    p = sub.add_parser("collect")
    p.add_argument("assignment")
    p.add_argument("archive", type=Path)
    p.add_argument("--map", type=Path, default=None, help="a CSV of lms_id,student_id (Moodle's or Canvas's ids)")
    p = sub.add_parser("autograde")
    p.add_argument("assignments", nargs="*")
    p.add_argument("--student", action="append", help="only this student (repeatable)")
    p.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: the number of cores)")
    p.add_argument("--scheduler", default=None, help="a Dask scheduler's address, e.g. tls://host:8786")
    p.add_argument("--certs", type=Path, default=None,
                   help="the Dask cluster's certificates (default: DASK_CERTS, else .dask-certs in the course)")
    p.add_argument("--force", action="store_true", help="regrade submissions that have not changed since last time")
    sub.add_parser("feedback").add_argument("assignments", nargs="*")
    p = sub.add_parser("export")
    p.add_argument("to", nargs="?", default=None,
                   help="where to write (default: grades/<format>.csv, which git ignores)")
    p.add_argument("--format", default="csv", choices=["csv", "canvas", "moodle"], help="the layout (default: csv)")
    p.add_argument("--provisional", action="store_true",
                   help="write the LMS layouts although some written answers are not graded by hand yet")
    sub.add_parser("similarity").add_argument("assignment")
    sub.add_parser("validate").add_argument("notebook", type=Path)
    release = sub.add_parser("student-release")
    release.add_argument("target", type=Path, help="an empty or new folder")
    release.add_argument("--repository", default="", help="the address the release is published at (STUDENT_REPO)")
    sub.add_parser("sandbox")
    sub.add_parser("dask-certs").add_argument("folder", type=Path, nargs="?", default=Path(".dask-certs"))
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.command == "validate":
        notebook, problem = _student_validator().find_notebook(args.notebook.resolve())
        if notebook is None:
            print(problem)
            return 2
        course._env(notebook.parent)
        return validate(notebook, root)
    if args.command == "sandbox":
        return describe_sandbox()
    if args.command == "dask-certs":
        return dask_certs(args.folder)
    if args.command == "student-release":
        from grader.release import student_release
        return student_release(root, args.target.resolve(), args.repository)
    course._env(root)
    if args.command == "exercises":
        course.generate_exercises(root, args.assignments or None)
        return 0
    if args.command == "check-exercises":
        problems = course.stale_exercises(root)
        for line in problems:
            print(line)
        if problems:
            print("exercises/ is out of date: run `make exercises` and commit the result")
            return 1
        print("exercises/ matches solutions/")
        return 0
    if args.command == "collect":
        return course.collect(root, args.assignment, args.archive.resolve(), args.map)
    if args.command == "autograde":
        with sandbox_banner():
            try:
                outcomes = autograde(root, args.assignments or None, students=args.student, jobs=args.jobs,
                                     scheduler=args.scheduler or None, force=args.force, certs=args.certs)
            except KeyboardInterrupt:
                return 130
        print(summary(outcomes))
        return 1 if any(not o.ok for o in outcomes) else 0
    if args.command == "feedback":
        return course.feedback(root, args.assignments or None)
    if args.command == "similarity":
        from grader.similarity import similarity
        return similarity(root, args.assignment)
    if args.command == "export":
        return course.export(root, args.to, args.format, args.provisional)
    return 2  # pragma: no cover
