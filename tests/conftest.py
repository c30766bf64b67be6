"""Shared fixtures. The built book is made once per test session, by the same command as `make book`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_LOG = ROOT / "_build" / "book-build.log"


def build_book() -> subprocess.CompletedProcess:
    """Run the README's book command; its output goes to _build/book-build.log."""
    BUILD_LOG.parent.mkdir(exist_ok=True)
    env = dict(os.environ, CNN_COURSE_PROGRESS="0")
    with open(BUILD_LOG, "w") as log:
        return subprocess.run(["make", "--no-print-directory", "book"], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="session")
def built_book() -> Path:
    """The HTML book, built (and its chapters executed) by `make book`; fails with the build's log tail."""
    result = build_book()
    if result.returncode != 0:
        tail = "\n".join(BUILD_LOG.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"`make book` failed (exit {result.returncode}); end of {BUILD_LOG}:\n{tail}")
    return ROOT / "_build" / "html"
