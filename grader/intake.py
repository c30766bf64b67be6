"""What comes in from students, read as hostile input: submission folders and archives of downloads.

- :func:`read_folder` reads a submission folder without following a link: regular files only, by ``lstat``,
  inside the folder, with a size cap; everything else is skipped and named (a link placed in
  ``submitted/<student>/<assignment>/`` would otherwise be read by the grader, with its rights, before any
  sandbox: the gradebook, another student's notebook, the solutions).
- archives of downloads are grader/collect.py's (``make collect``).
"""
from __future__ import annotations

import os
import stat
from fnmatch import fnmatch
from pathlib import Path

MAX_SUBMISSION_BYTES = 64 * 2**20   # a submission folder's regular files, all together


def _kind(mode: int) -> str:
    return "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"


def regular_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The regular files under ``folder`` (never through a link), and one line per entry skipped."""
    files, skipped = [], []
    top = os.lstat(folder)
    if not stat.S_ISDIR(top.st_mode):
        return [], [f"{folder.name}: {_kind(top.st_mode)}, not read"]
    for here, dirs, names in os.walk(folder, followlinks=False):
        for name in sorted(dirs + names):
            path = Path(here) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                files.append(path)
            elif not stat.S_ISDIR(mode):  # a link (to a file or a folder), a device, a pipe, a socket
                skipped.append(f"{path.relative_to(folder)}: {_kind(mode)}, not read")
    return sorted(files), skipped


def read_folder(folder: Path, ignore: list[str] = ()) -> tuple[dict[str, bytes], list[str]]:
    """relative path -> content of the submission's regular files (those ``ignore`` does not match), and what
    was skipped. Files are opened with O_NOFOLLOW, so a file swapped for a link after the walk is not read."""
    paths, skipped = regular_files(folder)
    files, total = {}, 0
    for path in paths:
        rel = path.relative_to(folder)
        if any(fnmatch(part, pattern) for part in rel.parts for pattern in ignore):
            continue  # what nbgrader would not copy (a lib/ or torch.py beside the notebook)
        size = os.lstat(path).st_size
        if total + size > MAX_SUBMISSION_BYTES:
            skipped.append(f"{rel}: {size:,} bytes, past the submission's cap of {MAX_SUBMISSION_BYTES:,}")
            continue
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            files[str(rel)] = f.read(MAX_SUBMISSION_BYTES + 1)[:size]
        total += size
    return files, skipped
