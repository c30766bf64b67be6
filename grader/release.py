"""The tree a course publishes to its students: ``make student-release DIR=path``.

The instructor's repository holds the solutions, the hidden tests (in ``solutions/`` and in the gradebook the
autograder fills from them), the grader and the tests that exercise it; it stays private. The student release
is what students clone or what Binder builds: the book, ``lib``, the exercises (student versions), the
committed results, and a Makefile whose ``make book``, ``make lab`` and ``make validate`` need nothing of the
grader. It is written from the files git tracks, minus:

* ``solutions/`` and ``grader/`` (solutions, references, hidden-case generators, the source scan);
* ``tests/``, ``benchmarks/``, ``.ci/`` (they grade the reference solutions and attack the grader);
* the Makefile's instructor targets (between ``#@instructor`` and ``#@end-instructor``), the instructors'
  ``nbgrader_config.py`` (replaced by one with the students' time limits only), and the README (replaced
  by one for students).

It names the repository it is published at (the instructor's ``STUDENT_REPO``) where the instructor's tree names
its own: _config.yml's ``repository.url`` (the book's launch buttons) and every chapter's and exercise's install
cell (what Colab installs from).

Before it finishes, it searches every file it wrote for a line of a solution or of a hidden test, and for the
instructor's repository address, and fails if it finds one.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from grader.preprocessors import colab_cells

LEFT_OUT = ("solutions/", "grader/", "tests/", "benchmarks/", ".ci/", "book/instructors.md")
# Where the published text cites an instructor-only file (``tests/test_scratch.py``), it names the check instead.
CITED = re.compile(r"(?<![\w/])(`{0,2})(?:tests|grader|benchmarks)/(\w[\w/.]*\w)\1")
# Measured: `make setup` + `make data` took 96 s (results/course-benchmark.json, setup_s); .venv is 6.4 GB (du -sh).
SETUP_NOTE = ("The first `make book` or `make lab` sets everything up: a few minutes (96 s on the course's test "
              "machine; longer on a slow connection) and about 6.5 GB of disk, mostly PyTorch.")
NBGRADER_LAB_PLUGINS_OFF = ("assignment-list", "course-list", "create-assignment", "formgrader", "menu")
INSTRUCTOR_BLOCK = re.compile(r"^#@instructor\n.*?^#@end-instructor\n", re.S | re.M)

STUDENT_CONFIG = '''"""nbgrader's settings for students: the course's time limits for `make validate` and JupyterLab's Validate button.

Grading happens on the instructor's side; nothing here knows the hidden tests.
"""
c = get_config()  # noqa: F821 (provided by traitlets when it runs this file)
c.Execute.timeout = 300           # seconds per cell
c.Execute.startup_timeout = 120   # seconds for the kernel to start on a loaded machine
c.Execute.interrupt_on_timeout = True
'''

STUDENT_README = '''# CNN Architectures — a measured course (student edition)

SETUP_NOTE_HERE

```bash
make book    # set up everything (virtual env, pinned packages, data) and build the book: _build/html/index.html
make lab     # JupyterLab on the course: the chapters and the exercises, `import lib` from every notebook
```

Given `python3` (3.11), `python3-venv`, `make` and `git` on Debian/Ubuntu. The first run creates `.venv/`
from `requirements.txt` + `constraints.txt` and checks the Fashion-MNIST data (see `lib/data.py` for where it
is looked for).

## Exercises

The graded exercises are in `exercises/<name>/<name>.ipynb`. Solve them in JupyterLab and check yourself:

```bash
make validate NB=exercises/mixed_pooling/mixed_pooling.ipynb   # runs the visible tests; exits 1 when one fails
```

Your instructor grades the notebook you submit with further, hidden tests on other cases: write general code,
not code fitted to the visible examples. The book's page *Exercises* explains the workflow.

## Layout

| path | what |
|---|---|
| `book/` | the chapters (notebooks without outputs; the build executes them) |
| `lib/` | the course's package: `import lib` from anywhere once set up |
| `exercises/` | the exercises to solve |
| `results/` | results of the long experiments the chapters load, with their provenance |
'''


def _tracked(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f]


def secrets(root: Path) -> set[str]:
    """Distinctive lines that only the instructor's side holds: solution code and hidden tests (a line that lib
    also has, such as ``self.relu = nn.ReLU(inplace=True)``, is not a secret; tests/test_release.py checks
    that no function of lib is a solution's)."""
    cells_holding: dict[str, int] = {}
    for path in sorted((root / "solutions").glob("*/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            found = set()
            for region in re.findall(r"### BEGIN (?:SOLUTION|HIDDEN TESTS)\n(.*?)### END (?:SOLUTION|HIDDEN TESTS)",
                                     source, re.S):
                found |= {line.strip() for line in region.splitlines() if len(line.strip()) > 30}
            for line in found:
                cells_holding[line] = cells_holding.get(line, 0) + 1
    # A line in several cells is boilerplate (the hidden tests' import preamble, which book/instructors.md
    # shows), not a solution or a hidden case.
    lines = {line for line, n in cells_holding.items() if n == 1}
    exercises = "".join(p.read_text() for p in (root / "exercises").glob("*/*.ipynb"))
    public = "".join(p.read_text() for p in (root / "lib").rglob("*.py"))  # lib's own layers look alike
    return {line for line in lines if json.dumps(line)[1:-1] not in exercises  # not given away by the task
            and line not in public}


def leaks(tree: Path, secret: set[str]) -> list[str]:
    """Files under ``tree`` that contain a secret line, each with the first one found."""
    found = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        text = text + "\n" + text.replace('\\"', '"')  # lines as they stand inside a notebook's JSON
        hit = next((line for line in secret if line in text), None)
        if hit:
            found.append(f"{path.relative_to(tree)}: {hit[:80]}")
    return found


def student_makefile(makefile: str) -> str:
    """The Makefile without the instructor targets, and without a word of `make test` (the tests are not there)."""
    text = INSTRUCTOR_BLOCK.sub("", makefile)
    text = text.replace("`make book` and `make test` set everything up on first use.",
                        "`make book` and `make lab` set everything up on first use.")
    return "".join(line for line in text.splitlines(keepends=True) if "make test" not in line)


def _student_tree(target: Path) -> None:
    """What only the student tree has: no instructors' page in the table of contents, no citation of a file it
    lacks, and JupyterLab without nbgrader's instructor panels (only Validate stays)."""
    toc = target / "_toc.yml"
    toc.write_text("".join(line for line in toc.read_text().splitlines(keepends=True)
                           if line.strip() != "- file: book/instructors"))
    for path in sorted(p for p in target.rglob("*") if p.suffix in (".md", ".ipynb", ".py") and p.is_file()):
        text = path.read_text()
        cited = CITED.sub(lambda m: f"the instructors' test `{Path(m.group(2)).name}`", text)
        if cited != text:
            path.write_text(cited)
    for path in sorted((target / "exercises").glob("*/*.ipynb")):
        _with_language_info(path)
    page_config = target / "jupyter" / "labconfig" / "page_config.json"
    page_config.parent.mkdir(parents=True, exist_ok=True)
    off = {f"@jupyter/nbgrader:{name}": True for name in NBGRADER_LAB_PLUGINS_OFF}
    page_config.write_text(json.dumps({"disabledExtensions": off}, indent=2) + "\n")


def _with_language_info(path: Path) -> None:
    """Store the kernel's full language_info (what ipykernel reports in the course's environment): JupyterLab
    writes it into a notebook when the kernel starts, so a notebook without it opens marked modified."""
    from ipykernel.ipkernel import IPythonKernel

    nb = json.loads(path.read_text())
    nb["metadata"]["language_info"] = dict(IPythonKernel.language_info)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


NO_ADDRESS = ("The student release names the repository it is published at: Colab's and Binder's launch buttons and "
              "every notebook's install cell fetch the course from there ({private}, this repository's address in "
              "_config.yml, is private). Give it: make student-release DIR={target} "
              "STUDENT_REPO=https://github.com/<org>/<course>-student")


def _address(url: str) -> str:
    return url.strip().rstrip("/").removesuffix(".git")


def mentions(tree: Path, url: str) -> list[str]:
    """Files under ``tree`` that name the repository ``url`` (with or without ``.git``; not ``url-student``)."""
    named, found = re.compile(re.escape(_address(url)) + r"(?:\.git)?(?![\w.-])"), []
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        try:
            if named.search(path.read_text()):
                found.append(str(path.relative_to(tree)))
        except (UnicodeDecodeError, OSError):
            continue
    return found


def _refused(root: Path, target: Path, private: str) -> str:
    """Why the tree written in ``target`` must not be published ("" if nothing is wrong)."""
    found = leaks(target, secrets(root))
    if found:
        return "the release would publish solution or hidden-test lines; nothing was written:\n  " + "\n  ".join(found)
    named = mentions(target, private)
    if named:
        return f"the release would name the private repository {private}; nothing was written:\n  " + "\n  ".join(named)
    return ""


def student_release(root: Path, target: Path, repository: str = "") -> int:
    """Write the student release of the course at ``root`` into ``target`` (new, or an empty folder), published
    at the address ``repository``."""
    private = colab_cells().repository_url(root)
    if not repository.strip() or _address(repository) == _address(private):
        print(NO_ADDRESS.format(private=private, target=target))
        return 2
    if target.exists() and any(target.iterdir()):
        print(f"{target} is not empty: give a new or empty folder (the release is written from scratch)")
        return 2
    if target.resolve().is_relative_to(root.resolve()):
        print(f"{target} is inside the course repository: write the release outside it (e.g. ../course-release)")
        return 2
    files = [f for f in _tracked(root) if not f.startswith(LEFT_OUT)]
    for rel in files:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest)
    makefile = (root / "Makefile").read_text()
    if "#@instructor" not in makefile:
        raise RuntimeError("the Makefile has no #@instructor block: the release cannot strip the instructor targets")
    (target / "Makefile").write_text(student_makefile(makefile))
    (target / "nbgrader_config.py").write_text(STUDENT_CONFIG)
    (target / "README.md").write_text(STUDENT_README.replace("SETUP_NOTE_HERE", SETUP_NOTE))
    _student_tree(target)
    colab_cells().set_repository(target, repository.strip())
    refused = _refused(root, target, private)
    if refused:
        shutil.rmtree(target)
        print(refused)
        return 1
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"student release: {len(files)} files, {size / 1e6:.1f} MB in {target}, published at {repository.strip()} "
          f"(left out: {', '.join(LEFT_OUT)}; instructor targets, config and README replaced)")
    return 0
