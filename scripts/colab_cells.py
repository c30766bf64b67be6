#!/usr/bin/env python
"""The first code cell of every chapter and every exercise: outside the course's environment (Colab, a bare
Jupyter) it fetches the course from its repository and installs it; inside, it does nothing and prints nothing.

The repository is named once, in _config.yml (``repository.url``); a notebook opened in Colab has nothing
but its own cells, so the URL is written into each notebook's cell by this script:

    python scripts/colab_cells.py            # (re)write the cell in every chapter and exercise from _config.yml
    python scripts/colab_cells.py --check    # exit 1 if a notebook's cell is missing or names another URL

A fork changes ``repository.url`` in _config.yml and runs ``make colab-cells``; the tests run ``--check``.
The exercises get their cell when they are generated (``make exercises``: grader.preprocessors.InstallCell, an
ordinary cell outside nbgrader's checksums, which the autograder blanks); the student release names the
published repository in both (``set_repository``, called by grader/release.py).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TAG = "course-install"
HIDE = "remove-cell"  # the book leaves the cell out of its pages (it does nothing there); the notebook keeps it
COMMIT_LINE = 'COURSE_COMMIT = "{commit}"'
URL_LINE = re.compile(r"^(repository:\n(?:[ \t]+.*\n)*?[ \t]+url:[ \t]*)\S.*$", re.M)  # in _config.yml

TEMPLATE = '''# Outside the course's own environment (Colab, a fresh Jupyter), fetch the course and install it; inside it,
# this cell does nothing. The address comes from the course's _config.yml (`make colab-cells` writes it here);
# the book's build writes the commit it was built from into the copy of this notebook that the book publishes.
import importlib.util, subprocess, sys
from pathlib import Path

COURSE_REPOSITORY = "{url}"
COURSE_COMMIT = "{commit}"  # "" in the repository: its default branch
if importlib.util.find_spec("lib") is None:
    course = Path.home() / "cnn-course"
    if not course.exists():
        git = ["git", "-C", str(course)]
        subprocess.run(["git", "init", "--quiet", str(course)], check=True)
        subprocess.run(git + ["fetch", "--quiet", "--depth", "1", COURSE_REPOSITORY, COURSE_COMMIT or "HEAD"], check=True)
        subprocess.run(git + ["checkout", "--quiet", "FETCH_HEAD"], check=True)
    # --no-deps: use the environment's own torch, torchvision, numpy, pandas, matplotlib, scikit-image
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(course)], check=True)
    sys.path.insert(0, str(course))  # this kernel sees it at once
    import lib  # warns, saying what to do, where torch or torchvision is outside the releases lib supports
    subprocess.run([sys.executable, "-m", "lib.data", "prepare", "--download"], cwd=course, check=True)'''


def repository_url(root: Path = ROOT) -> str:
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]


def cell_source(url: str, commit: str = "") -> str:
    return TEMPLATE.format(url=url, commit=commit)


def is_install_source(source: str) -> bool:
    """Whether ``source`` is the install cell as written here, for any repository and commit."""
    pattern = re.escape(TEMPLATE).replace(re.escape("{url}"), r'[^"\n]*').replace(re.escape("{commit}"), "[0-9a-f]*")
    return re.fullmatch(pattern, source.strip()) is not None


def pin(source: str, commit: str) -> str:
    """The install cell's source with COURSE_COMMIT set to `commit` (what the book's build does to the copies
    of the chapters it publishes: book/_ext/course_pages.py)."""
    return source.replace(COMMIT_LINE.format(commit=""), COMMIT_LINE.format(commit=commit), 1)


def chapters(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book").glob("*.ipynb"))


def exercises(root: Path = ROOT) -> list[Path]:
    """The student versions (exercises/<a>/<a>.ipynb), which `make exercises` generates with the cell."""
    return sorted(p for p in (root / "exercises").glob("*/*.ipynb") if p.stem == p.parent.name)


def _install_cell(nb: dict) -> dict | None:
    return next((c for c in nb["cells"] if TAG in c.get("metadata", {}).get("tags", [])), None)


def with_install_cell(nb: dict, source: str) -> bool:
    """Put the install cell with ``source`` into ``nb`` (before its first code cell, or in place of the one it has);
    True if ``nb`` changed. The cell is an ordinary one: no nbgrader metadata, so no nbgrader checksum."""
    cell = _install_cell(nb)
    if cell is None:
        first_code = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
        cell = {"cell_type": "code", "execution_count": None, "id": TAG, "metadata": {"tags": [TAG]},
                "outputs": [], "source": ""}
        nb["cells"].insert(first_code, cell)
    lines = source.split("\n")
    new = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    tags = cell["metadata"].setdefault("tags", [])
    if cell["source"] == new and HIDE in tags:
        return False
    cell["source"] = new
    tags[:] = [TAG, HIDE]
    return True


def write(root: Path = ROOT) -> list[str]:
    changed = []
    source = cell_source(repository_url(root))
    for path in chapters(root) + exercises(root):
        nb = json.loads(path.read_text())
        if with_install_cell(nb, source):
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path.name)
    return changed


def set_repository(root: Path, url: str) -> list[str]:
    """Name ``url`` in the course at ``root``: _config.yml's repository.url (the book's launch and repository
    buttons) and every install cell. The student release calls it on the tree it writes."""
    config = root / "_config.yml"
    new, found = URL_LINE.subn(lambda m: m.group(1) + url, config.read_text(), count=1)
    if not found:
        raise ValueError(f"{config}: no `url:` line under `repository:` to set")
    config.write_text(new)
    if repository_url(root) != url:
        raise ValueError(f"{config}: repository.url reads {repository_url(root)!r} after writing {url!r}")
    return write(root)


def check(root: Path = ROOT) -> list[str]:
    source, problems = cell_source(repository_url(root)), []
    for path in chapters(root) + exercises(root):
        cell = _install_cell(json.loads(path.read_text()))
        if cell is None:
            fix = " (run `make exercises`)" if path.parent.parent.name == "exercises" else ""
            problems.append(f"{path.name}: no install cell (tagged {TAG!r}){fix}")
        elif "".join(cell["source"]) != source:
            problems.append(f"{path.name}: its install cell is not the one _config.yml's repository.url gives")
        elif HIDE not in cell["metadata"].get("tags", []):
            problems.append(f"{path.name}: its install cell is not tagged {HIDE!r} (the book would show it)")
    return problems


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        found = check()
        print("\n".join(found) or "every chapter's and exercise's install cell names _config.yml's repository")
        sys.exit(1 if found else 0)
    names = write()
    print(f"install cell written in {len(names)} notebook(s): {', '.join(names) or 'none needed'}")
