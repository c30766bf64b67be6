"""Submission folders are read as hostile input: the grader never follows a link (issue #19, item 2).

A student's folder can hold symbolic links (they arrive with `cp -a`, `rsync -a`, `tar x` or a git clone): the
grader reads the folder, with its own rights, before any sandbox. Here a submission links to the gradebook,
another student's notebook, the solutions and a private file outside the course; after `autograde` and
`feedback`, none of them is in autograded/ or in the feedback, and the run names what it skipped.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from grader import course
from grader.autograde import autograde
from grader.intake import read_folder

sys.path.insert(0, str(Path(__file__).resolve().parent / "nbgrader_fixtures"))
import submissions as fixtures  # noqa: E402

A = "mixed_pooling"
SECRET = "private-marker-7c1d"


def _plant_links(root: Path, outside: Path) -> Path:
    folder = root / "submitted" / "mallory" / A
    links = {"gradebook.db": root / "gradebook.db",
             "bob.ipynb": root / "submitted" / "bob" / A / f"{A}.ipynb",
             "solutions": root / "solutions",
             "notes.txt": outside,
             "timestamp.txt": outside}
    for name, target in links.items():
        os.symlink(target, folder / name)
    return folder


def test_read_folder_takes_regular_files_only(tmp_path):
    folder = tmp_path / "sub"
    (folder / "data").mkdir(parents=True)
    (folder / "a.ipynb").write_text("{}")
    (folder / "data" / "b.csv").write_text("1,2")
    (tmp_path / "secret").write_text(SECRET)
    os.symlink(tmp_path / "secret", folder / "link.txt")
    os.symlink(tmp_path, folder / "data" / "up")
    os.mkfifo(folder / "pipe")
    files, skipped = read_folder(folder, ["*.py"])
    assert set(files) == {"a.ipynb", "data/b.csv"}
    assert SECRET.encode() not in b"".join(files.values())
    assert sorted(skipped) == ["data/up: a symbolic link, not read", "link.txt: a symbolic link, not read",
                               "pipe: not a regular file, not read"]


def test_a_linked_submission_folder_is_not_graded(tmp_path, capsys):
    root = tmp_path / "course"
    (root / "solutions" / A).mkdir(parents=True)
    (root / "solutions" / A / f"{A}.ipynb").write_text("{}")
    (root / "submitted" / "bob" / A).mkdir(parents=True)
    (root / "submitted" / "mallory").mkdir()
    os.symlink(root / "submitted" / "bob" / A, root / "submitted" / "mallory" / A)
    os.symlink(root / "submitted" / "bob", root / "submitted" / "eve")
    assert course.submissions(root) == [(A, "bob")]
    out = capsys.readouterr().out
    assert f"submitted/mallory/{A}: a symbolic link, not graded" in out
    assert f"submitted/eve/{A}: a symbolic link, not graded" in out


@pytest.mark.slow
def test_links_in_a_submission_reach_nothing(tmp_path, capsys):
    """Through `autograde` and `feedback`: what the links point at is nowhere in autograded/ or feedback/."""
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    root = fixtures.make_course(tmp_path / "course", cell_timeout=60)
    outside = tmp_path / "instructor-notes.txt"
    outside.write_text(f"the instructor's private notes {SECRET}")
    c = fixtures.Course(root)
    bob = fixtures._insert_after(c.exercise(A), "setup", f"BOB = 'bob-{SECRET}'", "bob")
    fixtures.Submission("bob", A, "another student", bob).write(root / "submitted")
    fixtures.Submission("mallory", A, "links to what is not hers", c.exercise(A)).write(root / "submitted")
    course.generate_exercises(root, [A])  # the gradebook exists: the link to it resolves
    _plant_links(root, outside)
    outcomes = autograde(root, [A], students=["mallory"], jobs=1, quiet=True)
    printed = capsys.readouterr().out
    assert outcomes[0].ok, outcomes[0].reason
    for name in ("gradebook.db", "bob.ipynb", "solutions", "notes.txt", "timestamp.txt"):
        assert f"{A}/mallory: {name}: a symbolic link, not read" in printed
    assert course.feedback(root, [A]) == 0
    produced = [p for d in ("autograded", "feedback") for p in (root / d).rglob("*") if "mathjax" not in p.parts]
    assert sorted(p.name for p in produced if p.is_file()) == [f"{A}.html", f"{A}.ipynb"]  # and the bundled MathJax
    for path in produced:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert SECRET not in text and "SQLite format" not in text, path
            assert "BEGIN HIDDEN TESTS" not in text or path.suffix == ".ipynb", path
    assert json.loads((root / "autograded" / "mallory" / A / f"{A}.ipynb").read_text())["cells"]
