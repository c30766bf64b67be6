"""An attacker's submission, graded and opened as the instructor and the student would (issue #19, items 1, 3).

One scratch course is graded once for the module: an honest student (one part solved, the essay graded by
hand), an attacker whose outputs and markdown answer carry script (`display(HTML(<script>))`, an `onerror`
handler, `application/javascript`, a `<script>` in the answer) that would rewrite every grade through the
formgrader's API and write a file through Jupyter's, a student who prints 10,000 outputs, and a control: the
same attack graded with the sanitiser switched off (what autograde did before), to show that the browser
checks below can see a script run.

The browser tests open the pages in Chromium (Playwright, as tests/test_browser.py): the formgrader served by
`jupyter server` as `make lab` serves it to the instructor (with grader/formgrader_csp.py), and the feedback
page as a student opens it. They assert that no script ran, no grade changed and no file was written.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from grader import course
from grader.autograde import autograde

sys.path.insert(0, str(Path(__file__).resolve().parent / "nbgrader_fixtures"))
import submissions as fixtures  # noqa: E402

pytestmark = [pytest.mark.slow]
A = "mixed_pooling"
# What the attacker's script does with the instructor's session: every grade to 0 through the formgrader's API,
# and a file in the course root through Jupyter's contents API.
ATTACK = """(async () => {
  window.__pwned = (window.__pwned || 0) + 1;
  const x = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1];
  const h = {"X-XSRFToken": x, "Content-Type": "application/json"};
  const subs = await (await fetch("/formgrader/api/submitted_notebooks/mixed_pooling/mixed_pooling", {headers: h})).json();
  for (const sub of subs) {
    const grades = await (await fetch("/formgrader/api/grades?submission_id=" + sub.id, {headers: h})).json();
    for (const g of grades) {
      await fetch("/formgrader/api/grade/" + g.id, {method: "PUT", headers: h, body: JSON.stringify({manual_score: 0})});
    }
  }
  await fetch("/api/contents/pwned.txt", {method: "PUT", headers: h,
    body: JSON.stringify({type: "file", format: "text", content: "pwned"})});
  window.__done = 1;
})();"""
ATTACK_CELL = f"""from IPython.display import HTML, Javascript, display
ATTACK = {ATTACK!r}
display(HTML("<script>" + ATTACK + "</script><b>harmless bold</b>"))
display(HTML('<img src="x" onerror="window.__pwned_img = 1">'))
display(Javascript("window.__pwned_js = 1"))
"""
ANSWER = "My reflection. <script>window.__pwned_md = 1</script> <img src=x onerror='window.__pwned_md = 2'>"
FLOOD_CELL = "for i in range(10_000):\n    display(i)"
ACTIVE = re.compile(r"<\s*(?:script|iframe|svg)\b|<[^>]*\son\w+\s*=|href\s*=\s*[\"']?\s*javascript:", re.IGNORECASE)


def _attacker(c: fixtures.Course) -> dict:
    nb = fixtures._insert_after(c.exercise(A), "setup", ATTACK_CELL, "attack")
    fixtures._find(nb, "reflection")["source"] = ANSWER
    return nb


def _manual_scores(root: Path) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return {(s.student.id, g.name): (g.auto_score, g.manual_score) for s in gb.assignment_submissions(A)
                for nb in s.notebooks for g in nb.grades}


def _course_config():
    from traitlets.config import Config

    from grader import config

    c = Config()
    config.configure(c)
    return c


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    root = fixtures.make_course(tmp_path_factory.mktemp("hostile") / "course", cell_timeout=60)
    c = fixtures.Course(root)
    subs = {"honest": c.solved(A, {"mixed_pool"}), "attacker": _attacker(c), "control": _attacker(c),
            "flood": fixtures._insert_after(c.exercise(A), "setup", FLOOD_CELL, "flood")}
    for student, nb in subs.items():
        fixtures.Submission(student, A, student, nb).write(root / "submitted")
    unguarded = {"GuardCells": {"enabled": False}}  # the guard would disable the attack cell: the outputs are tested
    outcomes = {o.student: o for o in autograde(root, [A], students=["honest", "attacker", "flood"], jobs=2,
                                                 quiet=True, overrides=unguarded)}
    before = [p for p in _course_config().Autograde.autograde_preprocessors
              if p.__name__ not in ("CapOutputs", "InertOutputs")]  # the control: graded as before, unsanitised
    outcomes.update({o.student: o for o in autograde(root, [A], students=["control"], jobs=1, quiet=True,
                                                      overrides={**unguarded,
                                                                 "Autograde": {"autograde_preprocessors": before}})})
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:  # the instructor grades the honest essay
        for nb in gb.find_submission(A, "honest").notebooks:
            for g in nb.grades:
                if g.cell.cell_type == "markdown":
                    g.manual_score = 3.0
        gb.db.commit()
    assert course.feedback(root, [A]) == 0
    return {"root": root, "outcomes": outcomes}


def _graded_notebook(root: Path, student: str) -> dict:
    return json.loads((root / "autograded" / student / A / f"{A}.ipynb").read_text())


def test_everyone_is_graded_and_the_honest_grade_is_right(graded):
    outcomes = graded["outcomes"]
    assert all(o.ok for o in outcomes.values()), {s: o.reason for s, o in outcomes.items()}
    assert outcomes["honest"].auto == fixtures.deserved(A, {"mixed_pool"})
    assert outcomes["attacker"].auto == outcomes["flood"].auto == 0.0


def test_the_graded_notebook_holds_no_active_content(graded):
    nb = _graded_notebook(graded["root"], "attacker")
    outputs = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    answer = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "reflection")
    assert not ACTIVE.findall(outputs.replace("\\", "")) and not ACTIVE.findall("".join(answer["source"]))
    assert "application/javascript" not in outputs and "harmless bold" in outputs
    assert "My reflection." in "".join(answer["source"])
    control = json.dumps([c.get("outputs", []) for c in _graded_notebook(graded["root"], "control")["cells"]])
    assert "<script>" in control and "application/javascript" in control  # the attack as it was kept before


def test_ten_thousand_outputs_are_capped(graded):
    root = graded["root"]
    size = (root / "autograded" / "flood" / A / f"{A}.ipynb").stat().st_size
    page = (root / "feedback" / "flood" / A / f"{A}.html").stat().st_size
    assert size < 3_000_000 and page < 4_000_000, (size, page)
    flood = next(c for c in _graded_notebook(root, "flood")["cells"] if "range(10_000)" in "".join(c["source"]))
    assert len(flood["outputs"]) <= 101 and "removed by the autograder" in "".join(flood["outputs"][-1]["text"])


def test_feedback_pages_carry_a_policy_and_no_active_content(graded):
    page = (graded["root"] / "feedback" / "attacker" / A / f"{A}.html").read_text()
    head = page[:page.index("</head>")]
    assert head.index('http-equiv="Content-Security-Policy"') < head.index("<script")
    scripts = head.split("script-src")[1].split(";")[0]  # the template's own scripts: by hash, or files ('self')
    assert ("'sha256-" in scripts or "'self'" in scripts) and "'unsafe-inline'" not in scripts
    assert not ACTIVE.findall(page[page.index("<body"):])


# ---- in a browser -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium(browser):
    """The session's Chromium (conftest.py): Playwright's sync API allows one per thread."""
    return browser


def _ran(page) -> dict:
    return page.evaluate("() => ({main: window.__pwned || 0, img: window.__pwned_img || 0, "
                         "js: window.__pwned_js || 0, md: window.__pwned_md || 0})")


def test_feedback_runs_no_script_in_a_browser(graded, chromium, tmp_path):
    """The attacker's feedback page, and the same page with the attack put back into it (a sanitiser that
    missed it): no script runs. Without the policy the put-back attack runs (the check can fail)."""
    page_file = graded["root"] / "feedback" / "attacker" / A / f"{A}.html"
    text = page_file.read_text()
    planted = text.replace("</body>", f"<script>{ATTACK}</script><img src=x onerror='window.__pwned_img = 1'></body>")
    unprotected = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", planted)
    results = {}
    for name, html in {"feedback": text, "planted": planted, "unprotected": unprotected}.items():
        (tmp_path / f"{name}.html").write_text(html)
        page = chromium.new_page()
        page.goto((tmp_path / f"{name}.html").as_uri())
        page.wait_for_timeout(500)
        results[name] = _ran(page)
        page.close()
    assert results["feedback"] == results["planted"] == {"main": 0, "img": 0, "js": 0, "md": 0}, results
    assert results["unprotected"]["main"] >= 1 and results["unprotected"]["img"] == 1, results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _formgrader(root: Path, extension: bool):
    """`jupyter server` on the course, as the instructor's `make lab` starts it (token auth, loopback)."""
    port, token = _free_port(), secrets.token_hex(16)
    args = [sys.executable, "-m", "jupyter", "server", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root"]
    if extension:
        args.append("--ServerApp.jpserver_extensions={'grader.formgrader_csp': True}")
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            return proc, url, token
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"jupyter server did not start: {proc.stderr.read()[-2000:]}")


def _open_submission(browser, url: str, token: str, student: str) -> dict:
    page = browser.new_page()
    page.goto(f"{url}/formgrader?token={token}")
    subs = page.evaluate("async () => (await (await fetch('/formgrader/api/submitted_notebooks/mixed_pooling/"
                         "mixed_pooling')).json())")
    sub = next(s for s in subs if s["student"] == student)
    page.goto(f"{url}/formgrader/submissions/{sub['id']}/")
    page.wait_for_timeout(3000)  # the attack's requests, if it runs
    ran = _ran(page)
    page.close()
    return ran


@pytest.mark.browser
def test_formgrader_runs_no_script_of_a_submission(graded, chromium):
    """As the instructor: the attacker's submission (sanitised) and the control (the attack kept, as autograde
    kept it before) open in the formgrader with grader.formgrader_csp: no script runs, no grade changes, no
    file is written. Without the extension the control's attack runs: grades change and the file appears."""
    root = graded["root"]
    before = _manual_scores(root)
    proc, url, token = _formgrader(root, extension=True)
    try:
        ran = {s: _open_submission(chromium, url, token, s) for s in ("attacker", "control")}
    finally:
        proc.terminate()
        proc.wait(30)
    assert ran == {s: {"main": 0, "img": 0, "js": 0, "md": 0} for s in ran}, ran
    assert _manual_scores(root) == before and not (root / "pwned.txt").exists()

    proc, url, token = _formgrader(root, extension=False)  # the same page before: the check can fail
    try:
        ran = _open_submission(chromium, url, token, "control")
    finally:
        proc.terminate()
        proc.wait(30)
    assert ran["main"] == 1 and (root / "pwned.txt").exists(), ran
    assert _manual_scores(root) != before  # what the attack did to the class's grades
