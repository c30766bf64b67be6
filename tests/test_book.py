"""The book: it builds with every chapter executed, a failing cell fails the build, a rebuild re-executes
nothing, and notebooks are stored without outputs."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from browser_helpers import executed_chapters, source_of, toc_entries
from conftest import BUILD_LOG, ROOT, build_book

pytestmark = pytest.mark.book


def test_every_book_page_is_in_the_toc():
    listed = {source_of(e) for e in toc_entries()}
    pages = {p for p in (ROOT / "book").rglob("*") if p.suffix in (".ipynb", ".md") and ".ipynb_checkpoints" not in p.parts}
    assert pages - listed == set(), f"pages missing from _toc.yml: {sorted(map(str, pages - listed))}"


def test_notebooks_are_stored_without_outputs():
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert tracked, "no notebooks tracked?"
    dirty = []
    for path in tracked:
        nb = json.loads((ROOT / path).read_text())
        if any(c.get("outputs") or c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"):
            dirty.append(path)
    assert not dirty, f"notebooks committed with outputs (clear them): {dirty}"


def test_book_builds_with_every_chapter_executed(built_book):
    for entry in toc_entries():
        assert (built_book / f"{entry}.html").is_file(), f"{entry}.html was not built"
    for entry in executed_chapters():
        html = (built_book / f"{entry}.html").read_text()
        outputs = html.split('class="cell_output')[1:]     # each piece starts inside one cell's output
        figures = [o for o in outputs if re.search(r'<img[^>]+src="[^"]+\.(png|svg)"', o.split('class="cell ')[0])]
        assert figures, f"{entry}: no figure among the cell outputs (was the inline backend replaced?)"
        assert "cell_output" in html, f"{entry}: no executed outputs"
        for marker in ("Traceback (most recent call last)", "output traceback", "output error"):
            assert marker not in html, f"{entry}: an error output ({marker!r}) is in the built page"


def test_rebuild_with_no_changes_executes_nothing(built_book):
    result = build_book()
    log = BUILD_LOG.read_text(errors="replace")
    assert result.returncode == 0, log[-3000:]
    assert "Executing notebook" not in log, "a rebuild with no changes re-executed a notebook"


def test_a_failing_cell_fails_the_build(tmp_path):
    """Our _config.yml, a book of one notebook whose cell raises: the build must fail and name the error."""
    book = tmp_path / "book"
    book.mkdir()
    shutil.copy(ROOT / "_config.yml", book / "_config.yml")
    shutil.copytree(ROOT / "book" / "_ext", book / "book" / "_ext")  # the local extension _config.yml loads
    (book / "_toc.yml").write_text("format: jb-book\nroot: broken\n")
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "raise ValueError('deliberately broken cell')",
                     "outputs": [], "execution_count": None, "id": "c0"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (book / "broken.ipynb").write_text(json.dumps(nb))
    jb = shutil.which("jupyter-book", path=str(ROOT / ".venv" / "bin")) or "jupyter-book"
    result = subprocess.run([jb, "build", str(book), "--warningiserror"], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0, "the build passed although a cell raised"
    assert "deliberately broken cell" in result.stdout + result.stderr
