"""The student release in JupyterLab as a student meets it, in Chromium: only the Validate button of nbgrader's
tools, no news prompt, and a Validate dialog whose first line is the summary (one line per part follows)."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM_ARGS, DESKTOP, find_chromium, is_loopback

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.browser]
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def in_own_thread(fn):
    """Run ``fn(browser)`` with a fresh Chromium in a thread of its own: Playwright's sync API refuses to start
    where another sync Playwright (test_browser.py's session-wide browser) is running in this thread."""
    import threading

    from playwright.sync_api import sync_playwright
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium: `make browser`")
    outcome = {}

    def run():
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
                try:
                    outcome["value"] = fn(browser)
                finally:
                    browser.close()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = e
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def release_lab(tmp_path_factory):
    """`make lab`'s command in a fresh student release (JUPYTER_CONFIG_PATH=jupyter/, as the Makefile sets it)."""
    if find_chromium() is None:
        pytest.skip("no Chromium: `make browser`")
    tree = tmp_path_factory.mktemp("release") / "course"
    made = subprocess.run([sys.executable, "-m", "grader", "student-release", str(tree),
                           "--repository", "https://github.com/cnn-course/cnn-architectures-student"], cwd=ROOT,
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tree.parent / "lab.log", "w")
    env = dict(os.environ, JUPYTER_CONFIG_PATH=str(tree / "jupyter"), JUPYTER_RUNTIME_DIR=str(tree.parent / "rt"),
               PYTHONPATH="")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("jupyter")), "lab", "--notebook-dir=.", "--no-browser",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--LabApp.workspaces_dir={tree.parent / 'ws'}",
         f"--LabApp.user_settings_dir={tree.parent / 'user-settings'}",
         *(["--allow-root"] if os.getuid() == 0 else [])],
        cwd=tree, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with _direct.open(f"{base}/api/status?token={token}", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start:\n{(tree.parent / 'lab.log').read_text()[-3000:]}")
                time.sleep(1)
        yield tree, base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _open_and_validate(browser, base: str, token: str, shot: Path) -> dict:
    context = browser.new_context(viewport=DESKTOP)
    context.route("**/*", lambda r: r.continue_() if is_loopback(r.request.url) else r.abort())
    page = context.new_page()
    try:
        page.goto(f"{base}/lab/tree/exercises/mixed_pooling/mixed_pooling.ipynb?reset&token={token}",
                  wait_until="load", timeout=120000)
        button = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .validate-button").first
        button.wait_for(state="visible", timeout=180000)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60000)
        deadline = time.monotonic() + 120  # the kernel has connected and is idle: JupyterLab has written its
        while time.monotonic() < deadline:  # language_info into the notebook by now
            with _direct.open(f"{base}/api/kernels?token={token}", timeout=10) as r:
                if any(k["execution_state"] == "idle" for k in json.loads(r.read())):
                    break
            time.sleep(1)
        page.wait_for_timeout(3000)  # the kernel has connected: JupyterLab writes its language_info now
        facts = {"menus": page.locator(".lm-MenuBar-itemLabel").all_inner_texts(),
                 "modified": page.locator(".lm-TabBar-tab.jp-mod-dirty").count()}
        button.click()
        message = page.locator("#validation-message")
        message.wait_for(state="visible", timeout=300000)
        page.screenshot(path=str(shot))
        facts["news"] = page.get_by_text("Jupyter news").count()
        facts["text"] = message.inner_text()
        return facts
    finally:
        context.close()


def test_release_lab_shows_validate_summary_first_and_nothing_that_errors(release_lab):
    tree, base, token = release_lab
    shot = tree.parent / "validate-dialog.png"
    facts = in_own_thread(lambda browser: _open_and_validate(browser, base, token, shot))
    text = facts["text"]
    print(f"screenshot: {shot}\n{text[:800]}")
    menus = facts["menus"]
    assert "Nbgrader" not in menus and "Formgrader" not in " ".join(menus), menus
    assert facts["news"] == 0, "JupyterLab asked about Jupyter news"
    assert facts["modified"] == 0, "the exercise is marked modified once its kernel has connected"
    first_line = text.strip().splitlines()[0]
    assert first_line.startswith("mixed_pooling.ipynb: 0 of 5 tests pass (0 / 12 points)"), first_line
    assert "test_mixed_fixed" in text and "not written yet" in text
    assert text.index("test_mixed_fixed") < text.index("test_comparison")


def test_points_table_keeps_words_whole_on_a_phone(tmp_path):
    """An exercise's points table, styled by the book's course.css at phone width: no word is broken across
    lines (the table scrolls in its own box instead)."""
    from browser_helpers import PHONE
    css = (ROOT / "book" / "_static" / "course.css").read_text()
    cells = "".join(f"<td><p>{w}</p></td>" for w in ("test_mixed_learnable", "a learned alpha per layer and per "
                                                   "channel, kept in [0, 1], trains", "3"))
    page_html = (f"<html><head><meta name=viewport content='width=device-width'><style>{css}</style></head><body>"
                 f"<div class=bd-article><div class=pst-scrollable-table-container><table><thead><tr>"
                 f"<th><p>part</p></th><th><p>what is checked</p></th><th><p>points</p></th></tr></thead>"
                 f"<tbody><tr>{cells}</tr></tbody></table></div><p>text</p></div></body></html>")
    (tmp_path / "table.html").write_text(page_html)
    def words_broken(browser):
        page = browser.new_page(viewport=PHONE)
        page.goto((tmp_path / "table.html").as_uri())
        return page.evaluate("""() => [...document.querySelectorAll('th p, td p')].flatMap(p => {
            const range = document.createRange(), text = p.firstChild, words = [];
            let at = 0;
            for (const word of text.textContent.split(' ')) {
                range.setStart(text, at); range.setEnd(text, at + word.length); at += word.length + 1;
                if (range.getClientRects().length > 1) words.push(word);
            }
            return words;
        })""")
    broken = in_own_thread(words_broken)
    assert not broken, f"words broken across lines at phone width: {broken}"
