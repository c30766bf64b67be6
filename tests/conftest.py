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


def _no_browser(reason: str):
    from browser_helpers import INSTALL_HINT

    message = f"browser tests not run: {reason}; {INSTALL_HINT}"
    if os.environ.get("CNN_COURSE_REQUIRE_BROWSER"):
        pytest.fail(message + " (CNN_COURSE_REQUIRE_BROWSER is set, so this is a failure)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium through Playwright (never Playwright's own browser download), one for the whole session:
    Playwright's sync API cannot start a second instance in a thread where one is running, so every browser test
    shares this one."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _no_browser("the Python package playwright is not installed (it is in requirements.txt: `make setup`)")
    from browser_helpers import CHROMIUM_ARGS, find_chromium

    executable = find_chromium()
    if executable is None:
        explicit = os.environ.get("CNN_COURSE_CHROMIUM")
        _no_browser(f"CNN_COURSE_CHROMIUM={explicit} is not an executable" if explicit
                    else "no Chromium or Chrome was found on PATH")
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        except Error as exc:
            _no_browser(f"{executable} would not start under Playwright ({str(exc).splitlines()[0]})")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``): its tests
    run many small tensors, where a second thread costs more in synchronisation than it saves, and on a shared
    2-core machine OpenMP's spin-waiting can make a 0.1 s forward take 10 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
