"""The course directory through nbgrader's Python API: assignments, submissions, the student versions,
collecting downloads, feedback and the CSV export.

Every function takes the course root (where ``nbgrader_config.py`` is). nbgrader reports failures in its
log rather than in exit codes, so these read the results through its API and say what happened.
"""
from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def single_threaded() -> None:
    """Autograded notebooks do small pieces of work; one thread per kernel is faster than two on a busy
    machine (OpenMP threads wait for each other when the cores are shared). AUTOGRADE_THREADS overrides."""
    os.environ["OMP_NUM_THREADS"] = os.environ.get("AUTOGRADE_THREADS", "1")


def prepare_nbgrader() -> None:
    """Before nbgrader runs: SQLAlchemy's and nbformat's warnings about nbgrader's own internals are noise for the
    instructor; nbgrader starts kernels (and `alembic`) as subprocesses, so the environment's bin must be on PATH;
    and a new gradebook's schema revision is read in this process rather than by a subprocess."""
    warnings.filterwarnings("ignore", message=".*not in session.*")
    warnings.filterwarnings("ignore", message=".*missing an id field.*")
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    _alembic_head_in_process()


def alembic_head() -> str:
    """The newest revision of nbgrader's gradebook schema, read from its migration scripts in this process."""
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import ALEMBIC_DIR

    return ScriptDirectory(ALEMBIC_DIR).get_current_head()


def _alembic_head_in_process() -> None:
    """nbgrader stamps every new gradebook with ``alembic heads``, run as a subprocess that imports nbgrader
    again: 6 s of CPU here, paid by every scratch gradebook a grading worker makes. The same answer read in this
    process costs 0.2 s; tests/test_autograde_plan.py checks that both give the same revision."""
    import functools

    import nbgrader.api

    if not getattr(nbgrader.api.get_alembic_version, "_in_process", False):
        head = functools.cache(alembic_head)
        head._in_process = True
        nbgrader.api.get_alembic_version = head


def enter(root: Path) -> None:
    """Work in the course at ``root`` (nbgrader reads nbgrader_config.py from the working directory)."""
    prepare_nbgrader()
    os.chdir(root)


def nbgrader_api(root: Path, overrides: dict | None = None):
    """nbgrader's Python API on the course in ``root``; ``overrides`` are config sections, e.g.
    ``{"Execute": {"timeout": 60}}``, applied over nbgrader_config.py."""
    prepare_nbgrader()  # nbgrader runs `alembic` from PATH: `.venv/bin/python -m grader ...` works unactivated
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
    api = nbgrader_api(root)
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


# ---- collecting, feedback, export ---------------------------------------------------------------------

def collect(root: Path, assignment: str, archive: Path, mapping: Path | None = None) -> int:
    """Unpack the class's archive of downloads into submitted/, trusting nothing in it (grader.collect)."""
    from grader.collect import collect as collect_archive

    return collect_archive(root, assignment, Path(archive), mapping)


_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit))(?::\s*(.*))?$")


def reason(result: dict) -> str:
    """The exception that stopped nbgrader, in one line: its class and message, from the log's tracebacks."""
    text = (result.get("error") or "") + "\n" + (result.get("log") or "")
    found = [m for m in (_EXCEPTION_LINE.match(line.strip()) for line in text.splitlines()) if m]
    if not found:
        return "see nbgrader's log above"
    name, message = found[-1].group(1), (found[-1].group(2) or "").strip()
    if name == "NbGraderException" and len(found) > 1:  # the summary; the cause came before it
        name, message = found[-2].group(1), (found[-2].group(2) or "").strip()
    return f"{name}: {message}"[:200]


def _odd(student: str) -> str:
    """Why nbgrader cannot grade a student id (it finds notebooks with glob patterns), or ''."""
    if any(ch in student for ch in "*?[]"):
        return "the student id has glob characters (* ? [ ]), which nbgrader reads as patterns"
    if not student.isprintable() or student.startswith("."):
        return "the student id has a newline or another unprintable character, or starts with a dot"
    if any(ch in student for ch in "<>&\"'`"):
        return "the student id has characters that mean something in HTML (< > & \" ' `), where the formgrader shows it"
    return ""


def submissions(root: Path, names: list[str] | None = None) -> list[tuple[str, str]]:
    """(assignment, student) for every folder submitted/<student>/<assignment>/ (all assignments, or ``names``)."""
    wanted = set(names or assignments(root))
    found = []
    for d in sorted((root / "submitted").glob("*/*")):
        if d.name not in wanted:
            continue
        if d.is_symlink() or d.parent.is_symlink():  # never graded through a link: it could point anywhere
            print(f"{d.relative_to(root)}: a symbolic link, not graded (copy the folder itself)", flush=True)
        elif _odd(d.parent.name):
            print(f"submitted/{d.parent.name!r}: not graded: {_odd(d.parent.name)}; rename the folder", flush=True)
        elif d.is_dir():
            found.append((d.name, d.parent.name))
    return sorted(found)


def feedback(root: Path, names: list[str] | None = None) -> int:
    """Feedback pages for every graded submission (grader/feedback.py); an assignment with nothing graded yet is
    skipped and said so; the submissions whose written answers wait for a hand grade are listed (provisional)."""
    from grader import feedback as pages

    api = nbgrader_api(root, pages.template_settings())
    failures = 0
    for assignment in names or assignments(root):
        if not pages.graded(root, assignment):
            print(f"feedback for {assignment}: skipped, nothing graded yet (run `make autograde` first)")
            continue
        result = api.generate_feedback(assignment, force=True)
        if not result["success"]:
            failures += 1
            print(f"feedback for {assignment}: FAILED: {reason(result)}")
    if (root / "feedback").is_dir():
        pages.bundle_mathjax(root)
    html = list((root / "feedback").glob("*/*/*.html"))
    _protect(api, html)
    _print_pending(api.coursedir.db_url, root, names)
    print(f"{len(html)} feedback file(s) in feedback/<student>/<assignment>/")
    return 1 if failures else 0


def _protect(api, html: list[Path]) -> None:
    """Every feedback page gets a Content Security Policy: only its template's scripts run (grader.sanitize)."""
    from grader.sanitize import feedback_policy, protect_feedback

    if html:
        csp = feedback_policy(api.config)
        for page in html:
            protect_feedback(page, csp)


def _print_pending(db_url: str, root: Path, names: list[str] | None) -> None:
    from nbgrader.api import Gradebook

    from grader.grades import describe_pending, read

    with Gradebook(db_url) as gb:
        pending = describe_pending(read(gb, root, names))
    if pending:
        print("provisional (the pages say so; their written answers show as not graded yet):\n" + "\n".join(pending))


def export(root: Path, to: str | None = None, fmt: str = "csv", provisional: bool = False) -> int:
    """Grades through the course's nbgrader export plugins (grader/export.py): ``fmt`` is csv, canvas or moodle;
    the file goes to grades/ (outside feedback/, which is handed to students) unless ``to`` says otherwise."""
    from nbgrader.apps import ExportApp

    from grader.export import FORMATS

    plugin = FORMATS[fmt]
    target = root / (to or plugin.default_to)  # `to` may be absolute
    return _run_app(ExportApp, [f"--exporter={plugin.__module__}.{plugin.__name__}", f"--to={target}",
                                f"--{plugin.__name__}.provisional={provisional}", "--log-level=WARN",
                                f"--CourseDirectory.root={root}"])
