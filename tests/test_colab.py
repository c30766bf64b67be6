"""Colab that works: every chapter's and every exercise's first code cell installs the course where `lib` is
missing, and does nothing where it is there (nor in the autograder, which blanks it).

The Colab case is played here without a network: a fresh virtual environment that has the course's packages
(torch, torchvision, ...) but not `lib`, a home folder of its own, the repository address pointed at a local
clone of this repository (for an exercise: at a local copy of the student release, as published), and the data
from the local cache. The install cell runs, then the notebook's next cells.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import colab_cells  # noqa: E402


def test_every_chapter_starts_with_the_install_cell_of_the_configured_repository():
    assert colab_cells.check() == [], "run `make colab-cells` after changing _config.yml's repository.url"
    assert len(colab_cells.exercises()) >= 3
    for path in colab_cells.chapters() + colab_cells.exercises():
        cells = json.loads(path.read_text())["cells"]
        first_code = next(c for c in cells if c["cell_type"] == "code")
        assert colab_cells.TAG in first_code["metadata"].get("tags", []), f"{path.name}: not the first code cell"


def test_the_exercises_install_cell_is_outside_grading():
    """An ordinary cell: no nbgrader metadata (so no checksum, no grade, nothing the release's rewrite could break)
    and no line of the solutions' notebooks, which do not have it (`make exercises` adds it)."""
    for path in colab_cells.exercises():
        cell = colab_cells._install_cell(json.loads(path.read_text()))
        assert "nbgrader" not in cell["metadata"] and set(cell["metadata"]) == {"tags"}, path.name
        solution = ROOT / "solutions" / path.parent.name / path.name
        assert colab_cells._install_cell(json.loads(solution.read_text())) is None


def test_the_autograder_blanks_the_install_cell_before_the_guard_reads_it():
    """SkipInstallCell (before GuardCells) empties the cell as the exercise gave it, for any repository or pinned
    commit: the grader has the course and no network. An edited install cell stays an ordinary cell, which the guard
    judges like any other (here: it disables it, naming subprocess)."""
    import nbformat

    from grader.preprocessors import GuardCells, SkipInstallCell

    exercise = nbformat.read(colab_cells.exercises()[0], as_version=4)
    released = nbformat.read(colab_cells.exercises()[0], as_version=4)
    colab_cells._install_cell(released).source = colab_cells.pin(colab_cells.cell_source("file:///x/y"), "ab12")
    edited = nbformat.read(colab_cells.exercises()[0], as_version=4)
    colab_cells._install_cell(edited).source += "\nprint('mine')"
    outcomes = []
    for nb in (exercise, released, edited):
        for step in (SkipInstallCell(), GuardCells()):
            nb, _ = step.preprocess(nb, {"nbgrader": {"assignment": "mixed_pooling", "student": "s"}})
        outcomes.append(colab_cells._install_cell(nb).source)
    assert outcomes[0] == outcomes[1] and "autograder does not run it" in outcomes[0]
    assert "subprocess" not in outcomes[0] and compile(outcomes[0], "cell", "exec")
    assert outcomes[2].startswith("raise RuntimeError(") and "subprocess" in outcomes[2] and "print('mine')" in outcomes[2]


def test_in_the_course_environment_the_cell_does_nothing_and_prints_nothing():
    source = colab_cells.cell_source("https://example.invalid/never-cloned.git")
    result = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


def _code_cells(chapter: Path, n: int) -> list[str]:
    cells = [c for c in json.loads(chapter.read_text())["cells"] if c["cell_type"] == "code"]
    return ["".join(c["source"]) for c in cells[:n]]


def _fake_distribution(folder: Path, name: str, version: str) -> Path:
    """Package metadata saying `name` is at `version` (importlib.metadata reads the first it finds on sys.path)."""
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def test_lib_warns_outside_the_torch_it_supports_and_says_what_to_do(tmp_path):
    fake = _fake_distribution(tmp_path / "fake", "torch", "2.99.0")
    env = dict(os.environ, PYTHONPATH=f"{fake}:{ROOT}")
    result = subprocess.run([sys.executable, "-W", "always", "-c", "import lib"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "UnsupportedVersionWarning" in result.stderr and "this environment has torch 2.99.0" in result.stderr
    from lib import _versions
    assert _versions.unsupported({"torch": "2.99.0", "torchvision": _versions.PINNED["torchvision"]}) in result.stderr
    assert f"pip install torch=={_versions.PINNED['torch']}" in result.stderr, result.stderr
    # the course's own pins are within the range, so the course environment hears nothing
    inside = subprocess.run([sys.executable, "-W", "error", "-c", "import lib"], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path, timeout=120)
    assert inside.returncode == 0 and inside.stderr == "", inside.stderr


def test_pinned_range_includes_the_pinned_versions():
    from lib import _versions
    pins = dict(line.strip().split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if line.startswith(("torch==", "torchvision==")))
    assert pins == _versions.PINNED, "lib/_versions.py's PINNED differs from requirements.txt"
    assert _versions.unsupported(pins) == ""
    assert _versions.unsupported({"torch": "1.13.1", "torchvision": "0.14.1"})
    assert _versions.unsupported({"torch": None, "torchvision": "0.29.2"})


@pytest.mark.book
def test_the_published_chapters_install_the_commit_the_book_was_built_from(built_book):
    """The book's build writes the commit it was built from into the install cell of every chapter and exercise
    it publishes (the download button's notebook); the repository's own cells name none."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert (built_book / "_static" / "build-commit.txt").read_text().strip() == head
    for path in colab_cells.chapters() + colab_cells.exercises():
        published = built_book / "_sources" / path.relative_to(ROOT)
        cell = colab_cells._install_cell(json.loads(published.read_text()))
        expected = colab_cells.pin(colab_cells.cell_source(colab_cells.repository_url()), head)
        assert "".join(cell["source"]) == expected, f"{published}: not pinned to {head}"
        html = (built_book / path.relative_to(ROOT).with_suffix(".html")).read_text()
        assert "COURSE_REPOSITORY" not in html, f"{path.name}: the book shows the install cell"


@pytest.mark.book
def test_the_colab_button_opens_the_published_copy_pinned_to_the_build(built_book, tmp_path):
    """Colab opens files of a GitHub repository only, and the repository's notebooks install its default branch: so
    each page's Colab button names the page's copy on the published branch, and `make publish-book` (ghp-import of
    the built site, here into a scratch repository) puts there a notebook whose install cell is pinned to the
    build's commit. Binder's button names the commit itself."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    site = tmp_path / "site"
    subprocess.run(["git", "init", "--quiet", str(site)], check=True)
    made = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-o", "book", "publish-book",
                           f"SITE_REPO={site}"], capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    url = colab_cells.repository_url().rstrip("/")
    org_repo = url.split("github.com/", 1)[1]
    for path in colab_cells.chapters() + colab_cells.exercises():
        html = (built_book / path.relative_to(ROOT).with_suffix(".html")).read_text()
        colab = re.findall(rf'href="https://colab\.research\.google\.com/github/{org_repo}/blob/([^/"]+)/([^"]+)"', html)
        assert len(colab) == 1, f"{path.name}: {len(colab)} Colab buttons"
        branch, file = colab[0]
        assert file == f"_sources/{path.relative_to(ROOT)}", f"{path.name}: Colab opens {file}"
        shown = subprocess.run(["git", "-C", str(site), "show", f"{branch}:{file}"], capture_output=True, text=True)
        assert shown.returncode == 0, f"{path.name}: {file} is not on the published branch {branch}: {shown.stderr}"
        cell = colab_cells._install_cell(json.loads(shown.stdout))
        assert f'COURSE_COMMIT = "{head}"' in "".join(cell["source"]), f"{file} on {branch}: not pinned to {head}"
        assert f"/v2/gh/{org_repo}/{head}?" in html, f"{path.name}: Binder does not open {head}"


@pytest.mark.slow
def test_the_cell_installs_the_pinned_commit_and_warns_of_an_unsupported_torch(tmp_path):
    """Colab, played offline. Steps: (1) a clone of this repository stands for the course's repository, and a
    later commit there breaks `import lib` (a tip the cell must not fetch); (2) a fresh virtual environment with
    the course's packages but not `lib`, whose torch says it is 2.99.0 (a Colab ahead of the course); (3) the
    resnet chapter's install cell, pinned as the book pins it, then the chapter's next cells; (4) checks: the
    checked-out commit is the pinned one, the warning says what to do, the chapter's cells ran."""
    timings = {}
    start = time.perf_counter()
    clone = tmp_path / "origin"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(clone)], check=True)
    pinned = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    (clone / "lib" / "__init__.py").write_text("raise ImportError('the tip of the branch, not the pinned commit')\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-am", "tip"],
                   cwd=clone, check=True)
    timings["1 repository with a later, broken tip"] = time.perf_counter() - start
    t = time.perf_counter()
    python, env, home = _fresh_environment(tmp_path, torch="2.99.0")
    timings["2 fresh environment"] = time.perf_counter() - t
    chapter = ROOT / "book" / "resnet.ipynb"
    install, *rest = _code_cells(chapter, 3)
    install = colab_cells.pin(install, pinned).replace(colab_cells.repository_url(), f"file://{clone}")
    script = tmp_path / "first_cells.py"
    script.write_text("import time\n_t = time.perf_counter()\n" + install
                      + "\nprint(f'INSTALLED in {time.perf_counter() - _t:.1f} s')\n" + "\n".join(rest)
                      + "\nprint('FIRST CELLS RAN')\n")
    t = time.perf_counter()
    result = subprocess.run([str(python), str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=1200)
    timings["3 install cell and the first cells"] = time.perf_counter() - t
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "INSTALLED" in result.stdout and "FIRST CELLS RAN" in result.stdout
    course = home / "cnn-course"
    checked_out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=course, capture_output=True, text=True).stdout
    assert checked_out.strip() == pinned, f"the cell installed {checked_out.strip()}, not the pinned {pinned}"
    assert "this environment has torch 2.99.0" in result.stderr and "pip install torch==" in result.stderr, \
        result.stderr[-2000:]
    assert (course / "results" / "degradation.json").is_file(), "the chapter's results came too"
    again = subprocess.run([str(python), "-c", "import lib, lib.experiments as e; print(lib.__file__, e.RESULTS_DIR)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert str(course) in again.stdout, again.stdout + again.stderr
    print("Colab test:", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def _fresh_environment(tmp_path: Path, torch: str | None = None) -> tuple[Path, dict, Path]:
    """Colab, offline: a new virtual environment with the course's packages but not `lib` (torch saying it is
    `torch` if given), a home folder of its own and the data from this machine's cache. (python, env, home)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the environment's own packages, as Colab has them, but not the course: a plain path, whose .pth files
    # (the course's editable install among them) are not read
    (site / "course_env_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if torch:
        _fake_distribution(site, "torch", torch)
    home = tmp_path / "home"
    home.mkdir()
    # nothing of this machine's environment (PYTHONPATH would put the course on the path)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
           "CNN_COURSE_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "FASHION_MNIST_DIR": os.environ.get("FASHION_MNIST_DIR") or str(_data_dir())}
    probe = subprocess.run([str(python), "-c", "import torch, torchvision; import lib"], capture_output=True, text=True,
                           cwd=tmp_path, env=env)
    assert "No module named 'lib'" in probe.stderr, probe.stderr[-500:]
    return python, env, home


@pytest.mark.slow
def test_an_exercise_installs_the_published_student_release(tmp_path):
    """Colab, played offline, for an exercise as students get it. Steps: (1) the student release, written with a
    local folder as its published address (STUDENT_REPO) and committed there as a repository; (2) a fresh
    environment without `lib`; (3) the released exercise's cells as they are (the install cell names the published
    repository), up to its first graded part's setup; (4) checks: the course came from the published repository,
    its data loads, and nothing of it names the instructor's repository."""
    from grader import release

    timings, t = {}, time.perf_counter()
    published = tmp_path / "course-student"
    assert release.student_release(ROOT, published, f"file://{published}") == 0
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(published)]
    subprocess.run(["git", "init", "--quiet", str(published)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "--quiet", "-m", "student release"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    timings["1 student release, published"] = time.perf_counter() - t
    t = time.perf_counter()
    python, env, home = _fresh_environment(tmp_path)
    timings["2 fresh environment"] = time.perf_counter() - t
    exercise = published / "exercises" / "mixed_pooling" / "mixed_pooling.ipynb"
    install, setup = _code_cells(exercise, 2)
    assert f'COURSE_REPOSITORY = "file://{published}"' in install, "the release did not name its own address"
    script = tmp_path / "first_cells.py"
    script.write_text("\n".join([install, setup, "import lib",
                                  "train, val, test = fashion_mnist_loaders(batch_size=4, train_subset=8)",
                                  "x, y = next(iter(train))",
                                  "print('FIRST CELLS RAN', tuple(x.shape), lib.__file__)"]) + "\n")
    t = time.perf_counter()
    result = subprocess.run([str(python), str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=1200)
    timings["3 install cell and the first cells"] = time.perf_counter() - t
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    course = home / "cnn-course"
    assert f"FIRST CELLS RAN (4, 1, 28, 28) {course / 'lib' / '__init__.py'}" in result.stdout, result.stdout[-2000:]
    checked_out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=course, capture_output=True, text=True).stdout
    assert checked_out.strip() == head, "the exercise installed something else than the published release"
    assert not (course / "solutions").exists() and not (course / "grader").exists()
    assert release.mentions(course, colab_cells.repository_url()) == []
    print("Colab exercise test:", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def _data_dir() -> Path:
    from lib.data import DEBIAN_DIR, cache_dir

    raw = cache_dir() / "FashionMNIST" / "raw"
    return raw if raw.is_dir() else DEBIAN_DIR
