"""Shared fixtures. The built book is made once per test session, by the same command as `make book`."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``): its tests
    run many small tensors, where a second thread costs more in synchronisation than it saves, and on a shared
    2-core machine OpenMP's spin-waiting can make a 0.1 s forward take 10 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
