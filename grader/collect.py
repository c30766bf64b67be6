"""`make collect`: a class's downloads (one archive from the LMS) into ``submitted/<student>/<assignment>/``.

The archive and everything in it is parsed as hostile input, never extracted as a whole:

- the student id is the first folder under the archive's root (``alice/...``), or the LMS id in Moodle's
  folder names (``Firstname Lastname_123456_assignsubmission_file_/``) and Canvas's flat file names
  (``lastnamefirst_123456_7654321_mixed_pooling.ipynb``), mapped through ``--map ids.csv`` when given;
  nothing inside a student's upload can name another student;
- an upload that is itself an archive (zip, tar, tar.gz) is opened once, no deeper;
- regular files only (no links, devices, set-uid bits: files are written by the grader with mode 0644),
  no absolute paths or ``..``, at most :data:`MAX_MEMBERS` members, :data:`MAX_BYTES` per student
  (read in chunks, whatever the archive claims: a 10 KB archive that expands to 1 GiB is refused);
- each student's folder must hold exactly one notebook, whatever its name (``mixed_pooling (1).ipynb``);
- one bad upload is reported and skipped, the rest of the class is collected, and the run ends with who was
  collected and who was not.
"""
from __future__ import annotations

import csv
import io
import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grader.intake import MAX_SUBMISSION_BYTES as MAX_BYTES

MAX_MEMBERS = 10_000
MAX_TOTAL = 4 * 2**30  # bytes unpacked from one class's archive, all members together (overlapping-entry bombs)
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")  # no glob characters, spaces, slashes or newlines
MOODLE = re.compile(r".*_(?P<id>\d+)_assignsubmission_[a-z]+_?")
CANVAS = re.compile(r"[a-z0-9-]+(?:_LATE)?_(?P<id>\d+)_\d+_(?P<name>.+)")
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


class Refused(ValueError):
    """An upload (or the whole archive) that is not collected; the message says why."""


@dataclass
class Member:
    path: str        # inside its archive, with forward slashes
    kind: str        # "file", "folder", or what it is instead ("a symbolic link", ...)
    read: object     # () -> bytes, at most MAX_BYTES + 1 of them


@dataclass
class Upload:
    student: str
    notebooks: dict[str, bytes] = field(default_factory=dict)   # name in the upload -> content
    problems: list[str] = field(default_factory=list)
    size: int = 0


def _capped(f, budget: list[int]) -> bytes:
    """At most MAX_BYTES of a member, whatever its header claims, out of the archive's budget ``budget[0]``."""
    with f:
        data = f.read(min(MAX_BYTES, budget[0]) + 1)
    budget[0] -= len(data)
    if budget[0] < 0:
        raise Refused(f"the archive unpacks to more than {MAX_TOTAL // 2**30} GiB in all")
    if len(data) > MAX_BYTES:
        raise Refused(f"a file larger than {MAX_BYTES // 2**20} MiB once unpacked")
    return data


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.is_dir():
        return "folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "file" if not stat.S_IFMT(mode) or stat.S_ISREG(mode) else "not a regular file"


def members(data: bytes | Path, name: str, budget: list[int]) -> Iterator[Member]:
    """The members of a zip or tar archive (a path or its bytes), without extracting anything."""
    source = data if isinstance(data, Path) else io.BytesIO(data)
    if name.lower().endswith(".zip"):
        with zipfile.ZipFile(source) as z:
            infos = z.infolist()
            _check_count(len(infos))
            for info in infos:
                yield Member(info.filename.replace("\\", "/"), _zip_kind(info), lambda i=info: _capped(z.open(i), budget))
        return
    if not name.lower().endswith(ARCHIVES):
        raise Refused(f"{name} is not a zip or tar archive")
    with (tarfile.open(fileobj=source, mode="r:*") if isinstance(source, io.BytesIO)
          else tarfile.open(source, mode="r:*")) as t:
        infos = t.getmembers()
        _check_count(len(infos))
        for info in infos:
            kind = ("file" if info.isreg() else "folder" if info.isdir() else
                    "a symbolic link" if info.issym() or info.islnk() else "not a regular file")
            yield Member(info.name, kind, lambda i=info: _capped(t.extractfile(i), budget))


def _check_count(n: int) -> None:
    if n > MAX_MEMBERS:
        raise Refused(f"{n:,} members, more than the {MAX_MEMBERS:,} the grader opens")


def safe_parts(path: str) -> tuple[str, ...]:
    """The path's parts; refused when absolute or climbing out (``..``)."""
    parts = PurePosixPath(path).parts
    if path.startswith("/") or re.match(r"[A-Za-z]:", path) or ".." in parts:
        raise Refused(f"{path!r} points outside the archive")
    return tuple(p for p in parts if p not in ("", "."))


def read_mapping(path: Path | None) -> dict[str, str] | None:
    """``--map ids.csv``: columns ``lms_id,student_id`` (the LMS's user id -> the course's student id)."""
    if path is None:
        return None
    with open(path, newline="") as f:
        return {row["lms_id"].strip(): row["student_id"].strip() for row in csv.DictReader(f)}


def student_of(parts: tuple[str, ...], mapping: dict[str, str] | None) -> tuple[str, str]:
    """(student id, path inside the upload) for a member of the class's archive, from its first folder (or
    Canvas's file name at the root); refused when the id is not one the grader can use."""
    if len(parts) == 1:
        canvas = CANVAS.fullmatch(parts[0])
        if not canvas:
            raise Refused(f"{parts[0]!r} is at the archive's root, in no student's folder")
        lms_id, rel = canvas["id"], canvas["name"]
    else:
        moodle = MOODLE.fullmatch(parts[0])
        lms_id, rel = (moodle["id"] if moodle else None), "/".join(parts[1:])
        if not moodle:
            student = (mapping or {}).get(parts[0], parts[0])
            return _valid(student), rel
    if mapping is not None and lms_id not in mapping:
        raise Refused(f"LMS id {lms_id} ({parts[0]!r}) is not in the mapping file")
    return _valid(mapping[lms_id] if mapping is not None else lms_id), rel


def _valid(student: str) -> str:
    if not STUDENT_ID.fullmatch(student):
        raise Refused(f"{student!r} is not a student id the grader can use (letters, digits and . _ @ + -, "
                      "starting with a letter or digit): rename the folder or map it with --map")
    return student


def _add(upload: Upload, rel: str, member: Member, budget: list[int]) -> None:
    """One file of a student's upload: a notebook is kept, an archive opened once, anything else noted."""
    name = rel.lower()
    if member.kind != "file":
        upload.problems.append(f"{rel}: {member.kind}, not collected")
    elif name.endswith(".ipynb"):
        _keep(upload, rel, member.read())
    elif name.endswith(ARCHIVES):
        data = member.read()
        upload.size += len(data)
        for inner in members(data, rel, budget):
            inner_rel = f"{rel}/{'/'.join(safe_parts(inner.path))}"
            if inner.kind == "file" and inner.path.lower().endswith(".ipynb") and not _junk(inner.path):
                _keep(upload, inner_rel, inner.read())
            elif inner.kind != "folder":
                upload.problems.append(f"{inner_rel}: {_why_not(inner)}")
    else:
        upload.problems.append(f"{rel}: not a notebook, not collected")


def _why_not(inner: Member) -> str:
    """Why a member of an uploaded archive is not collected."""
    if inner.path.lower().endswith(ARCHIVES):
        return "an archive inside an archive, not opened"
    return ("not a notebook" if inner.kind == "file" else inner.kind) + ", not collected"


def _keep(upload: Upload, rel: str, content: bytes) -> None:
    upload.size += len(content)
    if upload.size > MAX_BYTES:
        raise Refused(f"more than {MAX_BYTES // 2**20} MiB once unpacked")
    upload.notebooks[rel] = content


def _junk(path: str) -> bool:
    """What archivers add: macOS resource forks, Jupyter's checkpoints."""
    return any(p in ("__MACOSX", ".ipynb_checkpoints") or p.startswith("._") for p in path.split("/"))


def read_uploads(archive: Path, mapping: dict[str, str] | None) -> tuple[dict[str, Upload], dict[str, str]]:
    """Each student's upload in the class's archive, and the uploads refused as a whole (who -> why)."""
    uploads: dict[str, Upload] = {}
    refused: dict[str, str] = {}
    budget = [MAX_TOTAL]
    for member in members(archive, archive.name, budget):
        if _junk(member.path) or member.kind == "folder":
            continue
        try:
            parts = safe_parts(member.path)
            student, rel = student_of(parts, mapping)
        except Refused as e:
            refused[member.path.split("/")[0] or member.path] = str(e)
            continue
        upload = uploads.setdefault(student, Upload(student))
        if student in refused:
            continue
        if rel in upload.notebooks:  # the same student twice (two folders, or a folder and a Canvas file)
            rel = member.path
        try:
            _add(upload, rel, member, budget)
        except (Refused, zipfile.BadZipFile, tarfile.TarError, RuntimeError, EOFError, OSError) as e:
            refused[student] = f"{rel}: {e}"
    for student in refused:
        uploads.pop(student, None)
    return uploads, refused


def _write(root: Path, assignment: str, student: str, content: bytes) -> None:
    """submitted/<student>/<assignment>/<assignment>.ipynb, mode 0644, written without following a link."""
    folder = root / "submitted" / student / assignment
    for path in (root / "submitted", folder.parent, folder, folder / f"{assignment}.ipynb"):
        if path.is_symlink():
            raise Refused(f"{path.relative_to(root)} is a symbolic link: not written through")
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{assignment}.ipynb.part"
    part.unlink(missing_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.chmod(part, 0o644)
    os.replace(part, folder / f"{assignment}.ipynb")


def collect(root: Path, assignment: str, archive: Path, mapping: Path | None = None) -> int:
    """Collect the class's archive into submitted/; print who was collected and who was not (exit 1 if any
    upload was refused)."""
    try:
        uploads, refused = read_uploads(Path(archive), read_mapping(mapping))
    except (Refused, zipfile.BadZipFile, tarfile.TarError, OSError) as e:
        print(f"{archive}: not collected: {e}")
        return 1
    collected = []
    for student, upload in sorted(uploads.items()):
        notebooks = sorted(upload.notebooks)
        if len(notebooks) != 1:
            refused[student] = (f"{len(notebooks)} notebooks ({', '.join(notebooks)}): keep exactly one"
                                if notebooks else "no notebook in the upload")
        else:
            try:
                _write(root, assignment, student, upload.notebooks[notebooks[0]])
                collected.append(student)
            except (Refused, OSError) as e:
                refused[student] = str(e)
        for line in upload.problems:
            print(f"  note: {student}: {line}")
    _report(root, assignment, collected, refused)
    return 1 if refused else 0


def _report(root: Path, assignment: str, collected: list[str], refused: dict[str, str]) -> None:
    print(f"collected {len(collected)} submission(s) of {assignment} into submitted/: {', '.join(collected) or '-'}")
    if refused:
        print(f"NOT collected ({len(refused)}):")
        for who, why in sorted(refused.items()):
            print(f"  {who!r}: {why}" if not STUDENT_ID.fullmatch(who) else f"  {who}: {why}")
    known = {p.name for p in (root / "submitted").iterdir() if p.is_dir()} if (root / "submitted").is_dir() else set()
    absent = sorted(s for s in known if not (root / "submitted" / s / assignment).exists())
    if absent:
        print(f"no submission of {assignment} from: {', '.join(absent)} (students with other work in submitted/)")
