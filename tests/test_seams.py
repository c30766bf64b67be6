"""The seams between the instructor's steps, in a scratch course graded once: feedback and grades that never
lie (nothing graded yet, written answers waiting for a hand grade, missing submissions), the LMS layouts, and
the feedback page as a student opens it (offline math, per-part scores) in a real browser.

The course: mixed_pooling graded for `reference` (its written answer not graded by hand yet), `blank` and
`partial`; `absent` is on the roster and handed nothing in; receptive_field and resnet_variants have nothing
graded."""
from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader import course
from grader.autograde import autograde

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow]


def _fixtures():
    path = ROOT / "tests" / "nbgrader_fixtures" / "submissions.py"
    spec = importlib.util.spec_from_file_location("nbgrader_submissions", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("nbgrader_submissions", module)
    spec.loader.exec_module(module)
    return module


fixtures = _fixtures()


@dataclass
class Graded:
    root: Path


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Graded:
    from nbgrader.api import Gradebook

    saved = dict(os.environ)
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    root = fixtures.make_course(tmp_path_factory.mktemp("seams") / "course")
    shutil.copytree(ROOT / "book" / "_static" / "mathjax", root / "book" / "_static" / "mathjax")
    here = Path.cwd()
    try:
        course.generate_exercises(root)
        c = fixtures.Course(root)
        wanted = {"reference", "blank", "partial"}
        for sub in fixtures.build(c):
            if sub.assignment == "mixed_pooling" and sub.student in wanted:
                sub.write(root / "submitted")
        outcomes = autograde(root, ["mixed_pooling"], students=sorted(wanted), quiet=True)
        assert all(o.ok for o in outcomes), [(o.student, o.reason) for o in outcomes]
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
            gb.update_or_create_student("absent", first_name="Ada", last_name="Absent")
        yield Graded(root)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)


def _grade_by_hand(root: Path, student: str, score: float, comment: str) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        nb = gb.find_submission("mixed_pooling", student).notebooks[0]
        for g in nb.grades:
            if g.cell.cell_type == "markdown":
                g.manual_score = score  # as test_nbgrader_flow does; the Formgrader also clears the flag
        for c in nb.comments:
            if c.name == "reflection":
                c.manual_comment = comment
        gb.db.commit()


# ---- feedback ---------------------------------------------------------------------------------------------
def test_feedback_skips_what_is_not_graded_and_marks_pending_answers(graded, capsys):
    assert course.feedback(graded.root) == 0
    out = capsys.readouterr().out
    assert "receptive_field: skipped, nothing graded yet" in out and "resnet_variants: skipped" in out
    assert "reference/mixed_pooling: reflection (3 points) not graded by hand yet" in out
    page = (graded.root / "feedback" / "reference" / "mixed_pooling" / "mixed_pooling.html").read_text()
    assert "provisional: 3.0 points of written answers are not graded yet" in page
    assert "not graded yet</span> / 3.0" in page and "Written response</a> (Score: 0.0" not in page
    assert 'src="../mathjax/tex-svg-full.js"' in page and "cdnjs" not in page
    assert "text/x-mathjax-config" not in page  # no inline script: a CSP of script-src 'self' holds
    assert (graded.root / "feedback" / "reference" / "mathjax" / "tex-svg-full.js").is_file()
    blank = (graded.root / "feedback" / "blank" / "mixed_pooling" / "mixed_pooling.html").read_text()
    assert 'class="provisional"' not in blank  # an untouched written answer scores 0 for real, not pending


# ---- grades -----------------------------------------------------------------------------------------------
def _csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_grades_csv_says_missing_and_provisional(graded, capsys):
    assert course.export(graded.root) == 0
    target = graded.root / "grades" / "grades.csv"
    assert target.is_file() and not (graded.root / "feedback" / "grades.csv").exists()
    rows = {(r["assignment"], r["student_id"]): r for r in csv.DictReader(target.open())}
    absent = rows["mixed_pooling", "absent"]
    assert absent["status"] == "missing" and absent["score"] == "missing"
    ref = rows["mixed_pooling", "reference"]
    assert ref["status"] == "provisional" and ref["pending"] == "reflection" and float(ref["score"]) == 12
    assert "reflection=pending/3" in ref["parts"] and "test_mixed_fixed=2/2" in ref["parts"]
    assert rows["mixed_pooling", "blank"]["status"] == "final" and float(rows["mixed_pooling", "blank"]["score"]) == 0
    assert "reference/mixed_pooling: reflection" in capsys.readouterr().out


def test_lms_layouts_refuse_provisional_totals(graded, capsys):
    for fmt in ("canvas", "moodle"):
        assert course.export(graded.root, fmt=fmt) == 1
        assert not (graded.root / "grades" / f"{fmt}.csv").exists()
        assert "PROVISIONAL=1" in capsys.readouterr().out
    assert course.export(graded.root, fmt="canvas", provisional=True) == 0


def test_lms_layouts_after_hand_grading(graded):
    _grade_by_hand(graded.root, "reference", 2.5, "Good comparison; name the window size.")
    for fmt in ("canvas", "moodle"):
        assert course.export(graded.root, fmt=fmt) == 0
    canvas = _csv(graded.root / "grades" / "canvas.csv")
    header, possible, body = canvas[0], canvas[1], {r[2]: r for r in canvas[2:]}
    assert header[:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    parts = [f"mixed_pooling: {p}" for p in fixtures.DEPENDS["mixed_pooling"]]
    assert header[5] == "mixed_pooling" and header[6:11] == parts and header[11] == "mixed_pooling: reflection"
    assert possible[0].strip() == "Points Possible" and possible[5:12] == ["15", "2", "3", "3", "2", "2", "3"]
    assert body["reference"][5:12] == ["14.5", "2", "3", "3", "2", "2", "2.5"]
    assert body["absent"][5] == "" and body["absent"][0] == "Absent, Ada"
    assert float(body["partial"][5]) == fixtures.deserved("mixed_pooling", {"mixed_pool", "lp_pool"})
    moodle = _csv(graded.root / "grades" / "moodle.csv")
    header, body = moodle[0], {r[2]: dict(zip(moodle[0], r)) for r in moodle[1:]}
    assert header[:4] == ["First name", "Last name", "ID number", "Email address"]
    assert header[-1] == "Feedback for mixed_pooling"  # nothing of the assignments nobody handed in
    assert not any("receptive_field" in h for h in header + canvas[0])
    assert body["reference"]["mixed_pooling"] == "14.5"
    assert body["reference"]["Feedback for mixed_pooling"] == "reflection: Good comparison; name the window size."
    assert body["absent"]["mixed_pooling"] == "-" and body["absent"]["Feedback for mixed_pooling"] == "missing"


# ---- validate ---------------------------------------------------------------------------------------------
def _student_validate():
    from grader.cli import _student_validator

    return _student_validator()


def test_validate_finds_the_notebook_in_a_folder_or_says_what_to_pass(tmp_path):
    v = _student_validate()
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "mixed_pooling (1).ipynb").write_text("{}")
    assert v.find_notebook(tmp_path / "one") == (tmp_path / "one" / "mixed_pooling (1).ipynb", "")
    (tmp_path / "one" / "other.ipynb").write_text("{}")
    found, problem = v.find_notebook(tmp_path / "one")
    assert found is None and "mixed_pooling (1).ipynb, other.ipynb" in problem and "NB=" in problem
    assert "does not exist" in v.find_notebook(tmp_path / "nowhere")[1]


def test_student_validate_prints_one_line_per_part_first(graded, capsys):
    v = _student_validate()
    assert v.main([str(graded.root / "submitted" / "partial" / "mixed_pooling")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mixed_pooling.ipynb: 3 of 5 tests pass (7 / 12 points); 3 more points are graded by hand"
    names = [line.split()[0] for line in lines[1:7]]
    assert names == [*fixtures.DEPENDS["mixed_pooling"], "reflection"]
    assert lines[1].endswith("2 pts  passed") and "not written yet (answer `stochastic_pool` above)" in lines[3]
    assert "visible tests only" in lines[7]


def test_instructor_validate_runs_the_hidden_tests(graded, capsys):
    """A notebook fitted to the visible tests: the instructor's validate scores it as autograde does, never
    'every test passed'."""
    from grader import cli

    sub = next(s for s in fixtures.build(fixtures.Course(graded.root))
               if s.assignment == "mixed_pooling" and s.student == "visible-only")
    sub.write(graded.root / "check")
    folder = graded.root / "check" / "visible-only" / "mixed_pooling"
    status = cli.main(["--root", str(graded.root), "validate", str(folder)])
    out = capsys.readouterr().out
    assert status == 1 and "passed." not in out.splitlines()[-1]
    assert out.splitlines()[0].startswith(f"mixed_pooling.ipynb: 3 of 5 tests pass ({sub.expected:g} / 12 points)")
    assert "hidden tests included" in out


# ---- the feedback page in a browser ----------------------------------------------------------------------
def test_feedback_page_in_a_browser_offline(graded, tmp_path):
    """The page a student opens from the folder they were handed: per-part scores, the written answer as not
    graded yet, and every formula typeset by the bundled MathJax, with the network cut off."""
    sys.path.insert(0, str(ROOT / "tests"))
    from browser_helpers import PHONE
    from test_seams_lab import in_own_thread
    sys.path.pop(0)

    assert course.feedback(graded.root, ["mixed_pooling"]) == 0
    handed = tmp_path / "partial"  # what the student gets: their own folder, nothing else
    shutil.copytree(graded.root / "feedback" / "partial", handed)
    blocked = []
    shot = graded.root / "feedback-partial.png"

    def look(browser):
        page = browser.new_page(viewport=PHONE)
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://")
                   else (blocked.append(r.request.url), r.abort()))
        page.goto((handed / "mixed_pooling" / "mixed_pooling.html").as_uri(), wait_until="load")
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30000)
        page.evaluate("MathJax.startup.promise")
        page.screenshot(path=str(shot), full_page=False)
        return (page.locator("mjx-container").count(), page.evaluate("document.body.innerText.includes('$\\\\alpha')"),
                page.locator("#parts li").all_inner_texts())
    typeset, raw_tex, parts = in_own_thread(look)
    print(f"screenshot: {shot}\n" + "\n".join(parts))
    assert not blocked, blocked
    assert typeset >= 5 and not raw_tex, f"{typeset} formulas typeset"
    assert parts[0].startswith("test_mixed_fixed (test):") and parts[0].endswith("2.0 / 2.0")
    assert any(t.startswith("test_stochastic") and t.endswith("0.0 / 3.0") for t in parts)


def test_formgrader_pages_load_the_course_mathjax(graded):
    """The Formgrader renders a submission with the course's settings: MathJax from /static/ (which `make lab`
    serves from the book's copy), no CDN, no inline MathJax configuration."""
    import re

    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    config.merge(Config({"HTMLExporter": {"template_name": "formgrade"}}))
    notebook = graded.root / "autograded" / "reference" / "mixed_pooling" / "mixed_pooling.ipynb"
    resources = {"base_url": "/", "index": 0, "total": 1, "notebook_id": "mixed_pooling", "submission_id": "x"}
    page, _ = HTMLExporter(config=config).from_filename(str(notebook), resources=resources)
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    assert "/static/mathjax-config.js" in scripts and "/static/tex-svg-full.js" in scripts, scripts
    assert "cdnjs" not in page and "x-mathjax-config" not in page
    server = {}
    exec((ROOT / "jupyter" / "jupyter_server_config.py").read_text(),  # what `make lab` loads
         {"__file__": str(ROOT / "jupyter" / "jupyter_server_config.py"), "get_config": lambda: _Recorder(server)})
    served = [Path(p) for p in server["ServerApp.extra_static_paths"]]
    assert any((p / "tex-svg-full.js").is_file() for p in served)
    assert any((p / "mathjax-config.js").is_file() for p in served)


class _Recorder:
    """A stand-in for traitlets' config object that records `c.Section.name = value` assignments."""

    def __init__(self, store: dict, prefix: str = ""):
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name):
        return _Recorder(self._store, f"{self._prefix}{name}.")

    def __setattr__(self, name, value):
        self._store[f"{self._prefix}{name}"] = value

    def update(self, *args, **kwargs):  # c.ServerApp.jpserver_extensions.update(...)
        pass
