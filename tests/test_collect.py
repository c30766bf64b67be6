"""`make collect` trusts nothing in the class's archive (issues #19 item 4, #20 item 4).

Each test builds the archive an LMS (or an attacker among the students) would hand the instructor, runs the
course's command (`python -m grader collect`, in-process through grader.cli) and reads submitted/.
"""
from __future__ import annotations

import io
import json
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from grader import cli

A = "mixed_pooling"
ROOT = Path(__file__).resolve().parents[1]


def notebook(marker: str) -> bytes:
    return json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": marker}], "metadata": {},
                       "nbformat": 4, "nbformat_minor": 5}).encode()


def make_zip(path: Path, entries: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            z.writestr(info, data)
    return path


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def course(tmp_path):
    root = tmp_path / "course"
    (root / "solutions" / A).mkdir(parents=True)
    return root


def collect(root: Path, archive: Path, *extra: str) -> int:
    return cli.main(["--root", str(root), "collect", A, str(archive), *extra])


def submitted(root: Path) -> dict[str, bytes]:
    return {p.parent.parent.name: p.read_bytes() for p in (root / "submitted").glob(f"*/{A}/*.ipynb")}


def test_one_notebook_per_folder_whatever_its_name(course, tmp_path, capsys):
    archive = make_zip(tmp_path / "all.zip", {"alice/mixed_pooling (1).ipynb": notebook("alice"),
                                              "bob-42/Copy of exercise.ipynb": notebook("bob"),
                                              "__MACOSX/bob-42/._Copy of exercise.ipynb": b"junk"})
    assert collect(course, archive) == 0
    assert submitted(course) == {"alice": notebook("alice"), "bob-42": notebook("bob")}
    assert (course / "submitted" / "alice" / A / f"{A}.ipynb").is_file()
    assert "collected 2 submission(s) of mixed_pooling into submitted/: alice, bob-42" in capsys.readouterr().out


def test_more_than_one_notebook_or_none_is_an_error_naming_the_files(course, tmp_path, capsys):
    archive = make_zip(tmp_path / "all.zip", {"carol/a.ipynb": notebook("1"), "carol/b.ipynb": notebook("2"),
                                              "dave/answers.pdf": b"%PDF", "erin/mixed_pooling.ipynb": notebook("e")})
    assert collect(course, archive) == 1
    assert set(submitted(course)) == {"erin"}
    out = capsys.readouterr().out
    assert "carol: 2 notebooks (a.ipynb, b.ipynb): keep exactly one" in out
    assert "dave: no notebook in the upload" in out and "dave: answers.pdf: not a notebook" in out
    assert "NOT collected (2)" in out


def test_moodle_and_canvas_layouts_give_lms_ids_or_mapped_ids(course, tmp_path, capsys):
    archive = make_zip(tmp_path / "moodle.zip", {
        "Ada Lovelace_123456_assignsubmission_file_/mixed_pooling.ipynb": notebook("ada"),
        "lovelaceada_123456_999_mixed_pooling.ipynb": notebook("ignored: same id twice"),
    })
    assert collect(course, archive) == 1  # one student, two notebooks: named, not guessed
    assert "123456: 2 notebooks" in capsys.readouterr().out
    moodle = make_zip(tmp_path / "m.zip", {"Ada Lovelace_123456_assignsubmission_file_/x.ipynb": notebook("ada")})
    canvas = make_zip(tmp_path / "c.zip", {"turingalan_LATE_777_31337_mixed_pooling-1.ipynb": notebook("alan")})
    assert collect(course, moodle) == 0 and collect(course, canvas) == 0
    assert submitted(course) == {"123456": notebook("ada"), "777": notebook("alan")}
    ids = tmp_path / "ids.csv"
    ids.write_text("lms_id,student_id\n123456,ada\n")
    assert collect(course, moodle, "--map", str(ids)) == 0
    assert collect(course, canvas, "--map", str(ids)) == 1  # 777 is not in the mapping: refused, by name
    assert submitted(course)["ada"] == notebook("ada")
    assert "LMS id 777" in capsys.readouterr().out


def test_an_archive_inside_an_upload_cannot_impersonate(course, tmp_path):
    (course / "submitted" / "bob" / A).mkdir(parents=True)
    (course / "submitted" / "bob" / A / f"{A}.ipynb").write_bytes(notebook("bob's own work"))
    inner = zip_bytes({"bob/mixed_pooling.ipynb": notebook("mallory's"), "../../evil.ipynb": notebook("up")})
    archive = make_zip(tmp_path / "all.zip", {"mallory/upload.zip": inner, "alice/a.ipynb": notebook("alice")})
    assert collect(course, archive) == 1  # the upload's `..` member refuses mallory's upload as a whole
    assert submitted(course) == {"bob": notebook("bob's own work"), "alice": notebook("alice")}
    archive = make_zip(tmp_path / "all2.zip", {"mallory/upload.zip": zip_bytes({"bob/x.ipynb": notebook("m")})})
    assert collect(course, archive) == 0
    assert submitted(course)["mallory"] == notebook("m") and submitted(course)["bob"] == notebook("bob's own work")
    assert not list(tmp_path.rglob("evil.ipynb"))


def test_one_level_of_archive_and_tar_uploads(course, tmp_path, capsys):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        info = tarfile.TarInfo("work/mixed_pooling.ipynb")
        info.size = len(notebook("tar"))
        t.addfile(info, io.BytesIO(notebook("tar")))
    nested = zip_bytes({"deeper.zip": zip_bytes({"x.ipynb": notebook("deep")})})
    archive = make_zip(tmp_path / "all.zip", {"tara/work.tar.gz": buffer.getvalue(), "nina/outer.zip": nested,
                                              "gus/upload.gz": b"\x1f\x8b not a tar", "alice/a.ipynb": notebook("a")})
    assert collect(course, archive) == 1
    assert submitted(course) == {"tara": notebook("tar"), "alice": notebook("a")}
    out = capsys.readouterr().out
    assert "outer.zip/deeper.zip: an archive inside an archive, not opened" in out
    assert "gus: no notebook in the upload" in out


@pytest.mark.slow  # 20 s: deflating 1 GiB to build the bomb
def test_zip_bomb_is_refused_and_the_class_collected(course, tmp_path, capsys):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z, z.open("bomb.ipynb", "w") as f:
        chunk = bytes(2**20)
        for _ in range(1024):  # 1 GiB of zeros
            f.write(chunk)
    inner = buffer.getvalue()
    archive = make_zip(tmp_path / "all.zip", {"mallory/bomb.zip": inner, "alice/a.ipynb": notebook("a")})
    assert archive.stat().st_size < 20_000  # 10 KB that claims 1 GiB
    assert collect(course, archive) == 1
    assert submitted(course) == {"alice": notebook("a")}
    assert "mallory: bomb.zip: a file larger than 64 MiB once unpacked" in capsys.readouterr().out


def test_regular_files_with_fixed_modes_only(course, tmp_path, capsys):
    archive = make_zip(tmp_path / "all.zip",
                       {"suzy/mixed_pooling.ipynb": notebook("suid"), "lenny/link.ipynb": b"/etc/shadow",
                        "lenny/mixed_pooling.ipynb": notebook("lenny")},
                       modes={"suzy/mixed_pooling.ipynb": stat.S_IFREG | 0o4755, "lenny/link.ipynb": stat.S_IFLNK | 0o777})
    assert collect(course, archive) == 0
    written = course / "submitted" / "suzy" / A / f"{A}.ipynb"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert submitted(course)["lenny"] == notebook("lenny")
    assert "lenny: link.ipynb: a symbolic link, not collected" in capsys.readouterr().out


def test_odd_ids_and_paths_are_refused_by_name(course, tmp_path, capsys):
    archive = make_zip(tmp_path / "all.zip", {"a*b/x.ipynb": notebook("glob"), "new\nline/x.ipynb": notebook("nl"),
                                              "/abs/x.ipynb": notebook("abs"), "stray.ipynb": notebook("root"),
                                              "alice/a.ipynb": notebook("a")})
    assert collect(course, archive) == 1
    assert submitted(course) == {"alice": notebook("a")}
    out = capsys.readouterr().out
    assert "'a*b' is not a student id the grader can use" in out
    assert "'new\\nline' is not a student id" in out
    assert "points outside the archive" in out and "in no student's folder" in out


def test_a_broken_archive_says_so(course, tmp_path, capsys):
    (tmp_path / "all.zip").write_bytes(b"PK\x03\x04 truncated")
    assert collect(course, tmp_path / "all.zip") == 1
    assert "all.zip: not collected" in capsys.readouterr().out


def test_archives_are_ignored_by_git():
    result = subprocess.run(["git", "check-ignore", "all.zip", "downloads/class.tar.gz"], cwd=ROOT, check=False,
                            capture_output=True, text=True)
    assert result.stdout.split() == ["all.zip", "downloads/class.tar.gz"]
