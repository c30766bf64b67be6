"""The student's side holds no grading: `lib` reaches no reference or hidden case, and the student release
(`make student-release`) has no solutions, grader or hidden tests, yet builds the book, starts JupyterLab and
validates the exercises' visible tests."""
from __future__ import annotations

import ast
import importlib
import json
import os
import pkgutil
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import lib
from grader import release

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ("mixed_pooling", "receptive_field", "resnet_variants", "transfer_finetune")


def _grader_names() -> set[str]:
    """What the assignments' hidden checks define at their top level: references, hidden-case generators,
    checks, constants (not the generic helpers of grader/checks/base.py)."""
    names = set()
    for path in (ROOT / "grader" / "checks").glob("*.py"):
        if path.name in ("__init__.py", "base.py"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def test_lib_reaches_no_reference_or_hidden_case():
    """Every module of lib, imported: no grading module, no name the grader's checks define, no line of a
    solution or hidden test in its source, and nothing of the grader imported along the way."""
    before = {m for m in sys.modules if m.split(".")[0] == "grader"}
    modules = [lib] + [importlib.import_module(m.name) for m in pkgutil.walk_packages(lib.__path__, "lib.")
                       if m.name != "lib.experiments.__main__"]
    assert len(modules) > 20
    assert not any("grading" in m.__name__ for m in modules)
    defined = {n for m in modules for n in vars(m) if not n.startswith("_")}
    grader_names = _grader_names() - {"GRADER_DIR"}
    assert len(grader_names) > 25 and {"mixed_pool_reference", "random_chain", "reference_field"} <= grader_names
    shared = grader_names & defined
    assert not shared, f"lib defines what the grader's checks define: {sorted(shared)}"
    solved = {}  # every function and class a solution cell defines, as its syntax tree
    for a in ASSIGNMENTS:
        for cell in json.loads((ROOT / "solutions" / a / f"{a}.ipynb").read_text())["cells"]:
            if cell["metadata"].get("nbgrader", {}).get("solution") and cell["cell_type"] == "code":
                for node in ast.parse("".join(cell["source"])).body:
                    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                        solved[ast.dump(node, include_attributes=False)] = f"{a}:{node.name}"
    assert len(solved) > 10
    for m in modules:
        for node in ast.walk(ast.parse(Path(m.__file__).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found = solved.get(ast.dump(node, include_attributes=False))
                assert found is None, f"{m.__name__}.{node.name} is the solution {found}"
    hidden = [line for line in release.secrets(ROOT) if 'c["' in line or "CASES" in line]  # a hidden test's case
    assert len(hidden) > 20
    for m in modules:
        source = Path(m.__file__).read_text()
        assert not [line for line in hidden if line in source], f"{m.__name__} holds a hidden test"
    assert {m for m in sys.modules if m.split(".")[0] == "grader"} == before, "importing lib imported the grader"


@pytest.fixture(scope="module")
def student_tree(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("release") / "course"
    result = subprocess.run([sys.executable, "-m", "grader", "student-release", str(target)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)
    return target


def test_student_release_leaves_out_everything_of_grading(student_tree):
    for left_out in ("grader", "solutions", "tests", "benchmarks", ".ci"):
        assert not (student_tree / left_out).exists(), left_out
    for a in ASSIGNMENTS:
        assert (student_tree / "exercises" / a / f"{a}.ipynb").is_file()
    makefile = (student_tree / "Makefile").read_text()
    assert "#@instructor" not in makefile and "-m grader" not in makefile and "autograde" not in makefile
    assert "validate:" in makefile and "lab:" in makefile and "book:" in makefile
    assert "import" not in (student_tree / "nbgrader_config.py").read_text(), "the students' config imports nothing"
    assert release.leaks(student_tree, release.secrets(ROOT)) == []
    text = "\n".join(p.read_text(errors="replace") for p in student_tree.rglob("*.ipynb"))
    for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "Marking guide", "grader.checks", "random_chain"):
        assert marker not in text, marker


def test_student_release_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    assert release.student_release(ROOT, tmp_path) == 2
    assert (tmp_path / "keep.txt").read_text() == "mine", "nothing of the folder is lost"


def _make(tree: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """The release's own Makefile, with the course's environment (no second install)."""
    env = dict(os.environ, PYTHONPATH="", CNN_COURSE_PROGRESS="0")
    env.pop("NBGRADER_EXECUTION", None)
    return subprocess.run(["make", "--no-print-directory", "-C", str(tree), *_with_our_venv(), *args],
                          capture_output=True, text=True, env=env, **kwargs)


def _with_our_venv() -> list[str]:
    """Make arguments: the course's .venv, and never its setup step (which would reinstall lib from the tree)."""
    venv = ROOT / ".venv"
    return [f"VENV={venv}", "-o", str(venv / ".installed")]


def _solved(tree: Path, assignment: str) -> Path:
    """The release's exercise with every solution cell answered from the instructor's solutions."""
    sys.path.insert(0, str(ROOT / "tests" / "nbgrader_fixtures"))
    try:
        from submissions import Course
    finally:
        sys.path.pop(0)
    nb = Course(ROOT).solved(assignment)
    path = tree / "exercises" / assignment / f"solved-{assignment}.ipynb"
    path.write_text(json.dumps(nb))
    return path


@pytest.mark.slow
def test_student_release_validates_the_visible_tests_without_the_grader(student_tree):
    probe = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", "import grader"], cwd=student_tree,
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(student_tree)))
    assert probe.returncode != 0 and "No module named 'grader'" in probe.stderr
    a = "mixed_pooling"
    blank = _make(student_tree, "validate", f"NB=exercises/{a}/{a}.ipynb", timeout=600)
    assert blank.returncode != 0 and "did not pass" in blank.stdout, blank.stdout[-2000:]
    solved = _solved(student_tree, a)
    done = _make(student_tree, "validate", f"NB={solved.relative_to(student_tree)}", timeout=600)
    assert done.returncode == 0 and "every test passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.book
def test_student_release_builds_the_book_and_starts_jupyterlab(student_tree, built_book):
    # The chapters are the instructor's, byte for byte: the build's execution cache serves them.
    shutil.copytree(ROOT / "_build" / ".jupyter_cache", student_tree / "_build" / ".jupyter_cache")
    book = _make(student_tree, "book", timeout=1800)
    assert book.returncode == 0, book.stdout[-3000:] + book.stderr[-2000:]
    pages = {p.name for p in (student_tree / "_build" / "html").rglob("*.html")}
    assert {"intro.html", "resnet.html", "mixed_pooling.html"} <= pages
    port = _free_port()
    args = f"LAB_ARGS=--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 " \
           f"--IdentityProvider.token="
    lab = subprocess.Popen(["make", "--no-print-directory", "-C", str(student_tree), *_with_our_venv(), "lab", args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                           env=dict(os.environ, PYTHONPATH="", JUPYTER_RUNTIME_DIR=str(student_tree / ".runtime")))
    try:
        deadline, status = time.time() + 180, None
        while time.time() < deadline and status is None:
            time.sleep(2)
            try:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
                with opener.open(f"http://127.0.0.1:{port}/lab", timeout=5) as r:
                    status = r.status
            except OSError:
                continue
        assert status == 200, "`make lab` did not serve JupyterLab within three minutes"
    finally:
        os.killpg(lab.pid, 15)
        lab.wait(timeout=30)


def test_student_release_shows_only_what_works_there(student_tree):
    """No instructors' page, no `make test`, no citation of a file the tree lacks, nbgrader's JupyterLab tools off
    except Validate, no news prompt, the set-up's time and size said before the first `make lab`, and exercises
    that carry the kernel's language_info (JupyterLab marks a notebook modified when it has to add it)."""
    assert not (student_tree / "book" / "instructors.md").exists()
    assert "instructors" not in (student_tree / "_toc.yml").read_text()
    assert "make test" not in (student_tree / "Makefile").read_text()
    cited = [str(p.relative_to(student_tree)) for p in student_tree.rglob("*") if p.suffix in (".md", ".ipynb", ".py")
             and release.CITED.search(p.read_text())]
    assert not cited, cited
    readme = (student_tree / "README.md").read_text()
    assert readme.index("6.5 GB") < readme.index("make lab     #")  # before the command block
    page = json.loads((student_tree / "jupyter" / "labconfig" / "page_config.json").read_text())["disabledExtensions"]
    assert page["@jupyter/nbgrader:formgrader"] and page["@jupyter/nbgrader:assignment-list"]
    assert "@jupyter/nbgrader:validate-assignment" not in page
    server = (student_tree / "jupyter" / "jupyter_server_config.py").read_text()
    assert '"course_lab": True' in server and "formgrader" in server
    news = json.loads((student_tree / "jupyter" / "lab" / "settings" / "overrides.json").read_text())
    assert news["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    for a in ASSIGNMENTS:
        info = json.loads((student_tree / "exercises" / a / f"{a}.ipynb").read_text())["metadata"]["language_info"]
        assert info["mimetype"] == "text/x-python" and info["version"] == sys.version.split()[0]
