"""The instructor's flow, end to end, through nbgrader's real API in a scratch copy of the course.

One course directory is graded once for the whole module (`graded`): the reference, blank, partial and
visible-only submissions of every assignment, and hostile or broken ones (see
tests/nbgrader_fixtures/submissions.py for each and the score it must get). The tests then read the
outcomes, the gradebook, the feedback and the CSV export. `nbgrader validate` exits 0 whatever happens, so
validation is checked through its Python API (`nbgrader.validator.Validator`).
"""
from __future__ import annotations

import csv
import html
import importlib.util
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader import course
from grader.course import assignments
from grader.autograde import autograde

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = tuple(assignments(ROOT))  # every assignment in solutions/
CELL_TIMEOUT = 45  # seconds: long enough for a busy CI machine, short enough for the infinite loops

pytestmark = [pytest.mark.slow]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fixtures = _load("nbgrader_submissions", ROOT / "tests" / "nbgrader_fixtures" / "submissions.py")


class grade:  # the grader's functions the tests drive, under one name
    generate_exercises, stale_exercises, collect = course.generate_exercises, course.stale_exercises, course.collect
    feedback, export, autograde = course.feedback, course.export, staticmethod(autograde)


def make_course(target: Path) -> Path:
    return fixtures.make_course(target, cell_timeout=CELL_TIMEOUT)


@pytest.fixture(scope="module")
def environment():
    """nbgrader starts `alembic` and the kernels from PATH; the grader sets the kernels' thread count."""
    saved = dict(os.environ)
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    yield
    os.environ.clear()
    os.environ.update(saved)


@dataclass
class Graded:
    root: Path
    submissions: dict
    outcomes: dict


@pytest.fixture(scope="module")
def graded(tmp_path_factory, environment) -> Graded:
    root = make_course(tmp_path_factory.mktemp("course"))
    grade.generate_exercises(root)
    course = fixtures.Course(root)
    guarded, unguarded = fixtures.build(course), fixtures.build_unguarded(course)
    for sub in guarded + unguarded:
        sub.write(root / "submitted")
    outcomes = {}
    for o in grade.autograde(root, students=sorted({s.student for s in guarded})):
        outcomes[o.assignment, o.student] = o
    for o in grade.autograde(root, students=[s.student for s in unguarded],
                             overrides={"GuardCells": {"enabled": False}}):
        outcomes[o.assignment, o.student] = o
    subs = {(s.assignment, s.student): s for s in guarded + unguarded}
    return Graded(root, subs, outcomes)


def _ids(subs):
    return [f"{s.assignment}:{s.student}" for s in subs]


def _all_submissions():
    course = fixtures.Course(ROOT)
    return fixtures.build(course) + fixtures.build_unguarded(course)


SUBMISSIONS = _all_submissions()


def test_config_names_the_course_layout():
    from traitlets.config.loader import PyFileConfigLoader

    c = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    assert c.CourseDirectory.source_directory == "solutions"
    assert c.CourseDirectory.release_directory == "exercises"
    assert c.ExecutePreprocessor.kernel_name == "python3" and c.Execute.kernel_name == "python3"
    assert c.Execute.timeout >= 120, "the full experiments need minutes: keep the cell timeout generous"
    assert c.OverwriteCells.add_missing_cells is True


def test_exercises_are_generated_from_the_solutions(environment):
    problems = grade.stale_exercises(ROOT)
    assert not problems, "\n".join(problems) + "\nRun `make exercises` and commit exercises/."


def test_exercises_have_no_outputs_and_no_solutions():
    for a in ASSIGNMENTS:
        for kind in ("exercises", "solutions"):
            nb = json.loads((ROOT / kind / a / f"{a}.ipynb").read_text())
            for cell in nb["cells"]:
                assert not cell.get("outputs") and cell.get("execution_count") is None, \
                    f"{kind}/{a}: commit notebooks without outputs"
        text = (ROOT / "exercises" / a / f"{a}.ipynb").read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "Marking guide"):
            assert marker not in text, f"exercises/{a} leaks {marker!r}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebooks_validate(assignment, environment, tmp_path):
    """Every test, visible and hidden, passes on the instructor's version."""
    results = _validate(ROOT / "solutions" / assignment / f"{assignment}.ipynb", tmp_path)
    assert results == {}, json.dumps(results, indent=1)[:3000]


def _cells_of(graded, student: str, assignment: str) -> list[dict]:
    path = graded.root / "autograded" / student / assignment / f"{assignment}.ipynb"
    return json.loads(path.read_text())["cells"]


def _summary(cell: dict) -> str:
    """The judge's list of checks in a test cell (what the feedback shows), or ''."""
    texts = ["".join(o["data"]["text/plain"]) for o in cell.get("outputs", []) if o["output_type"] == "display_data"]
    return next((t for t in texts if t.startswith("Hidden tests:")), "")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_hidden_tests_catch_answers_fitted_to_the_visible_ones(assignment, graded):
    """The visible-only answer loses points (test_scores), and only in hidden tests: every test cell ran its visible
    part without an error, and the cells that lost points list the failed checks, one message each."""
    lost = 0
    for cell in _cells_of(graded, "visible-only", assignment):
        meta = cell["metadata"].get("nbgrader", {})
        if not (meta.get("grade") and cell["cell_type"] == "code"):
            continue
        assert not [o for o in cell["outputs"] if o["output_type"] == "error"], f"{meta['grade_id']}: a visible test failed"
        summary = _summary(cell)
        assert summary.startswith("Hidden tests:"), meta["grade_id"]
        if "FAILED" in summary:
            lost += 1
            assert all(": " in line for line in summary.splitlines()[1:] if "FAILED" in line), summary
    assert lost, "the visible-only answer failed no test cell: the hidden tests add nothing"


def test_partial_credit_lists_every_check(graded):
    """A cell's points are the share of its named checks that passed, and its list says which failed and why."""
    cell = next(c for c in _cells_of(graded, "visible-only", "mixed_pooling")
                if c["metadata"].get("nbgrader", {}).get("grade_id") == "test_mixed_fixed")
    summary = _summary(cell)
    assert summary.startswith("Hidden tests: 0.8 of 2 points") and summary.count("passed") == 2, summary
    assert "FAILED  MixedPool2d(3, stride=2, padding=1, alpha=0.7) on (3, 5, 13, 11) (0.4 points): " in summary
    result = next(o for o in cell["outputs"] if o["output_type"] == "execute_result")
    assert float("".join(result["data"]["text/plain"])) == pytest.approx(0.8)


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _validate(notebook: Path, workdir: Path) -> dict:
    from nbgrader.validator import Validator
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    os.environ["OMP_NUM_THREADS"] = "1"
    return Validator(config=config).validate(str(notebook))


@pytest.mark.parametrize("sub", SUBMISSIONS, ids=_ids(SUBMISSIONS))
def test_scores(sub, graded):
    o = graded.outcomes[sub.assignment, sub.student]
    if sub.fails:
        assert not o.ok, f"{sub.student}: {sub.what}: expected a failure, got {o.auto}"
        assert sub.fails in o.reason, f"{sub.student}: the reason {o.reason!r} should mention {sub.fails!r}"
        return
    assert o.ok, f"{sub.student}: {sub.what}: autograding failed: {o.reason}"
    assert o.auto == pytest.approx(sub.expected), f"{sub.student} ({sub.what}): {o.auto} points, expected {sub.expected}"
    assert o.disabled_cells == sub.disabled, f"{sub.student}: {o.disabled_cells} cells disabled, expected {sub.disabled}"


def test_points_per_assignment(graded):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded.root / 'gradebook.db'}") as gb:
        for a in ASSIGNMENTS:
            auto = sum(c.max_score for nb in gb.find_assignment(a).notebooks for c in nb.grade_cells
                       if c.cell_type == "code")
            manual = sum(c.max_score for nb in gb.find_assignment(a).notebooks for c in nb.grade_cells
                         if c.cell_type == "markdown")
            assert auto == fixtures.full_marks(a) and manual == fixtures.MANUAL[a]


def test_huge_output_is_truncated(graded):
    path = graded.root / "autograded" / "prints-megabytes" / "mixed_pooling" / "mixed_pooling.ipynb"
    assert path.stat().st_size < 1_000_000, f"{path.stat().st_size:,} bytes: the output was not truncated"
    assert "truncated by the autograder" in path.read_text()


def test_disabled_cell_says_why(graded):
    nb = json.loads((graded.root / "autograded" / "patches-grading" / "mixed_pooling" / "mixed_pooling.ipynb").read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert any("did not run this cell" in e["evalue"] and "grader" in e["evalue"] for e in errors)


def test_shipped_files_are_not_copied(graded):
    folder = graded.root / "autograded" / "ships-grader" / "mixed_pooling"
    assert not (folder / "lib").exists() and not (folder / "grader").exists() and not (folder / "torch.py").exists()


def _messages(graded, student: str, assignment: str) -> list[str]:
    cells = _cells_of(graded, student, assignment)
    return ([f"{o['ename']}: {o['evalue']}" for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
            + [line for c in cells for line in _summary(c).splitlines() if "FAILED" in line])


def test_shortcuts_say_what_was_detected(graded):
    """Each shortcut's failed cells carry a message that names what was found (what the student reads)."""
    expected = {"shortcut-reference-import": "did not run this cell", "shortcut-reference-dotted": "pydoc",
                "shortcut-expectation": "pydoc", "shortcut-typed-results": "own run",
                "shortcut-measured-field": "instead of computing it", "shortcut-measured-helper": "meta device",
                "shortcut-field-reference": "pydoc", "shortcut-torchvision-blocks": "torchvision",
                "shortcut-torchvision-builders": "torchvision", "shortcut-typed-variants": "own run",
                "shortcut-conv2d": "`F.conv2d`", "shortcut-torch-grad": "torch.nn.grad",
                "shortcut-torch-pool": "`F.max_pool2d`", "shortcut-conv2d-getattr": "calls torch's convolution",
                "shortcut-autograd-helper": "calls autograd", "shortcut-gradcheck-autograd": "calls autograd",
                "shortcut-typed-errors": "report what your code measured"}
    assert set(expected) == set(fixtures.SHORTCUT_POINTS)
    rows = []
    for student, fragment in expected.items():
        a = fixtures.SHORTCUT_POINTS[student][0]
        messages = _messages(graded, student, a)
        assert any(fragment in m for m in messages), f"{student}: no message mentions {fragment!r}: {messages[:3]}"
        rows.append((student, next(m for m in messages if fragment in m)[:160]))
    print("\n".join(f"{s}: {m}" for s, m in rows))


def test_attacks_earn_nothing_and_say_why(graded):
    """Every attack on the hidden tests (test_scores has their points): the guard names the trick, or the judge
    found no result or a wrong one. Prints the table of the closing note."""
    rows = []
    for sub in SUBMISSIONS:
        if sub.student.removeprefix("unguarded-") in {s.student for s in fixtures.attacks(fixtures.Course(ROOT))}:
            o = graded.outcomes[sub.assignment, sub.student]
            messages = _messages(graded, sub.student, sub.assignment)
            assert o.ok and messages, sub.student
            rows.append(f"| {sub.student} | {o.auto} / {sub.expected} | {messages[0][:150]} |")
    assert len(rows) >= 12
    print("\n".join(rows))


def test_feedback_shows_no_hidden_test(graded):
    """The feedback the student reads has the visible tests and the checks' messages, but no hidden test: not its
    source, not this run's cases, not a traceback line quoting it, not a cell's print of `In`
    (leaks-hidden-tests)."""
    assert grade.feedback(graded.root) == 0
    hidden_lines, public = set(), set()  # lines only the hidden parts have (not `with torch.no_grad():`)
    for a in ASSIGNMENTS:
        for cell in json.loads((ROOT / "solutions" / a / f"{a}.ipynb").read_text())["cells"]:
            source = "".join(cell["source"])
            visible, _, part = source.partition("### BEGIN HIDDEN TESTS")
            public |= {line.strip() for line in visible.splitlines()}
            hidden_lines |= {line.strip() for line in part.split("### END HIDDEN TESTS")[0].splitlines()
                             if len(line.strip()) > 20}
    public_text = "\n".join(public)
    hidden_lines = {line for line in hidden_lines if line not in public_text}
    assert len(hidden_lines) > 30
    pages = list((graded.root / "feedback").glob("*/*/*.html"))
    assert len(pages) > 20
    for page in pages:
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        leaked = [line for line in hidden_lines if line in text]
        assert not leaked and "BEGIN HIDDEN" not in text and "CASES = [" not in text, f"{page}: {leaked[:2]}"
        assert str(fixtures.HIDDEN_SEED) not in text and "drawn by the autograder" not in text, page


def _grades(root: Path) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return {(a.name, s.student.id, g.name): (g.auto_score, g.manual_score)
                for a in gb.assignments for s in a.submissions for nb in s.notebooks for g in nb.grades}


def test_regrading_broken_submissions_leaves_other_grades_intact(graded):
    before = _grades(graded.root)
    broken = ["invalid-json", "unguarded-kills-kernel"]
    outcomes = grade.autograde(graded.root, ["mixed_pooling"], students=broken,
                               overrides={"GuardCells": {"enabled": False}}, quiet=True)
    assert [o.ok for o in outcomes] == [False] * len(broken)
    after = _grades(graded.root)
    others = {k: v for k, v in before.items() if k[1] not in broken}
    assert others and all(after[k] == v for k, v in others.items())
    for sub in SUBMISSIONS:  # and every graded student still has the score the tests expect
        if sub.expected is not None:
            scores = [v[0] or 0 for k, v in after.items() if k[:2] == (sub.assignment, sub.student)
                      and k[2].startswith("test_")]
            assert sum(scores) == pytest.approx(sub.expected), f"{sub.assignment}:{sub.student}"


def test_feedback_is_written_for_every_graded_submission(graded):
    assert grade.feedback(graded.root) == 0
    for (a, student), o in graded.outcomes.items():
        html = graded.root / "feedback" / student / a / f"{a}.html"
        if o.ok:
            text = html.read_text()
            assert html.stat().st_size < 2_000_000 and "Score" in text, html
        else:
            assert not html.exists()


def test_csv_export_has_every_student_and_assignment(graded):
    from nbgrader.api import Gradebook

    reference_manual = 0.0
    with Gradebook(f"sqlite:///{graded.root / 'gradebook.db'}") as gb:  # the instructor grades by hand
        for a in ASSIGNMENTS:
            for nb in gb.find_submission(a, "reference").notebooks:
                for g in nb.grades:
                    if g.cell.cell_type == "markdown":
                        g.manual_score = g.max_score
                        reference_manual += g.max_score
        gb.db.commit()
    out = graded.root / "feedback" / "grades.csv"
    assert grade.export(graded.root, str(out)) == 0
    rows = list(csv.DictReader(out.open()))
    students = {s.student for s in SUBMISSIONS}
    assert {(r["assignment"], r["student_id"]) for r in rows} == {(a, s) for a in ASSIGNMENTS for s in students}
    reference = {r["assignment"]: float(r["score"]) for r in rows if r["student_id"] == "reference"}
    assert reference == {a: fixtures.full_marks(a) + fixtures.MANUAL[a] for a in ASSIGNMENTS}
    blank = [float(r["score"]) for r in rows if r["student_id"] == "blank"]
    assert blank == [0.0] * len(ASSIGNMENTS)


def test_zip_of_downloads_is_collected(tmp_path, environment):
    root = make_course(tmp_path / "course")
    course = fixtures.Course(root)
    archive = tmp_path / "downloads.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("alice/mixed_pooling.ipynb", json.dumps(course.exercise("mixed_pooling")))
        z.writestr("bob-42/mixed_pooling.ipynb", json.dumps(course.solved("mixed_pooling")))
    assert grade.collect(root, "mixed_pooling", archive) == 0
    for student in ("alice", "bob-42"):
        assert (root / "submitted" / student / "mixed_pooling" / "mixed_pooling.ipynb").is_file()


def _solution_lines() -> set[str]:
    """Distinctive lines of code that only the solutions hold (inside the solution regions, and not given
    away by the task's text in the student version)."""
    lines = set()
    for a in ASSIGNMENTS:
        student_version = (ROOT / "exercises" / a / f"{a}.ipynb").read_text()
        for cell in json.loads((ROOT / "solutions" / a / f"{a}.ipynb").read_text())["cells"]:
            inside = False
            for line in "".join(cell["source"]).splitlines():
                if "BEGIN SOLUTION" in line:
                    inside = True
                elif "END SOLUTION" in line:
                    inside = False
                elif inside and len(line.strip()) > 40 and cell["cell_type"] == "code" \
                        and json.dumps(line.strip())[1:-1] not in student_version:
                    lines.add(line.strip())
    return lines


@pytest.mark.book
def test_the_built_book_publishes_no_solution(built_book):
    """The exercises' pages and downloads are the student versions: no line of a solution is anywhere."""
    secret = _solution_lines()
    assert len(secret) > 30
    for path in built_book.rglob("*"):
        if path.suffix in (".html", ".ipynb", ".txt", ".md", ".js") and path.is_file():
            text = path.read_text(errors="replace")
            if path.suffix == ".html":  # code is highlighted token by token: compare the text only
                text = html.unescape(re.sub(r"<[^>]+>", "", text))
            leaked = [line for line in secret if line in text]
            assert not leaked, f"{path.relative_to(built_book)} contains solution code: {leaked[:2]}"
