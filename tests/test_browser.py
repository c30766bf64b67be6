"""The built book in a real browser: Debian's Chromium, headless, driven by Playwright, against `_build/html`
served on loopback with every request to any other host aborted (so passing proves the book is complete
offline).

Each TOC page is opened once at desktop width and once at phone width (full-page screenshots of both go to
`_build/screenshots/`, with an index.html to look through them); the tests below then check what those
visits recorded. Where no Chromium can be had the tests are skipped, saying how to get one;
CNN_COURSE_REQUIRE_BROWSER=1 turns that skip into a failure."""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from browser_helpers import (DESKTOP, PHONE, ROOT, book_config, executed_chapters,
                             html_ids, is_exercise, is_loopback, markdown_text, notebook_pages,
                             open_page, serve, slug, source_of, strip_fragment, toc_entries)

pytestmark = pytest.mark.browser

PAGES = toc_entries()


# `browser` (conftest.py): the session's one Chromium, shared with every browser test.


@pytest.fixture(scope="session")
def site(browser, built_book):
    """The built book on http://127.0.0.1:<free port>/ (the browser is found first: no build if there is none)."""
    with serve(built_book) as server:
        yield server


@pytest.fixture(scope="session")
def screenshots(built_book) -> Path:
    folder = built_book.parent / "screenshots"
    yield folder
    _write_screenshot_index(folder)


@pytest.fixture(scope="session")
def visit(browser, site, screenshots):
    """visit(entry, "desktop" | "phone") -> Visit; each page is loaded (and photographed) once per width."""
    seen = {}

    def get(entry: str, width: str = "desktop"):
        if (entry, width) not in seen:
            shot = screenshots / width / f"{slug(entry)}.png"
            viewport = DESKTOP if width == "desktop" else PHONE
            seen[entry, width] = open_page(browser, site.url(entry), viewport=viewport, screenshot=shot)
        return seen[entry, width]
    return get


def _write_screenshot_index(folder: Path) -> None:
    if not folder.is_dir():
        return
    rows = []
    for entry in PAGES:
        cells = "".join(f'<td><a href="{w}/{slug(entry)}.png"><img src="{w}/{slug(entry)}.png" '
                        f'style="width:{360 if w == "desktop" else 180}px;vertical-align:top"></a></td>'
                        for w in ("desktop", "phone") if (folder / w / f"{slug(entry)}.png").exists())
        rows.append(f"<tr><th>{html.escape(entry)}</th>{cells}</tr>")
    (folder / "index.html").write_text(
        "<!doctype html><meta charset=utf-8><title>Book screenshots</title>"
        f"<h1>Book screenshots</h1><p>Desktop {DESKTOP['width']}px and phone {PHONE['width']}px wide, full page, "
        f"taken by tests/test_browser.py on {time.strftime('%Y-%m-%d %H:%M')}.</p>"
        f"<table>{''.join(rows)}</table>")


# ---- every page --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", ["desktop", "phone"])
@pytest.mark.parametrize("entry", PAGES)
def test_page_loads_offline_without_errors(visit, screenshots, entry, width):
    v = visit(entry, width)
    assert not v.problems(), f"{entry} at {width} width:\n  " + "\n  ".join(v.problems())
    assert v.dom["main_text_length"] > 200, f"{entry}: the page is (nearly) empty"
    assert v.dom["overflow_x"] <= 1, f"{entry}: the page is {v.dom['overflow_x']} px wider than a {width} screen"
    shot = screenshots / width / f"{slug(entry)}.png"
    assert shot.is_file() and shot.stat().st_size > 5000, f"no screenshot at {shot}"


@pytest.mark.parametrize("entry", PAGES)
def test_wide_content_scrolls_in_its_own_box_with_a_cue_on_a_phone(visit, entry):
    """At 390 px the page never scrolls sideways; a table or output wider than the screen scrolls inside its own
    box, which shows a shadow at the edge where content is hidden (book/_static/course.css)."""
    dom = visit(entry, "phone").dom
    assert dom["page_width"] <= PHONE["width"] + 1, f"{entry}: the page is {dom['page_width']} px wide at 390 px"
    scrolling = [s for s in dom["scrollers"] if s["overflow"] in ("auto", "scroll")]
    without_cue = [f"{s['tag']}.{s['cls']} ({s['hidden_px']} px hidden: {s['text']!r})" for s in scrolling
                   if "local" not in s["attachment"]]
    assert not without_cue, f"{entry}: boxes that scroll without the visible cue: {without_cue[:5]}"
    clipped = [f"{s['tag']}.{s['cls']} ({s['hidden_px']} px cut off: {s['text']!r})" for s in dom["scrollers"]
               if s not in scrolling and s["hidden_px"] > 2 and not _clips_by_design(s)]
    assert not clipped, f"{entry}: boxes that cut their content off at 390 px: {clipped[:5]}"


def _clips_by_design(box: dict) -> bool:
    """Boxes that hide overflow on purpose: MathJax's wrappers (span.math, div.math: what overflows them is the
    MathML kept invisible for screen readers), that MathML itself, and a closed dropdown (its answer is hidden
    until it is opened, which test_check_your_understanding_answers_are_hidden_until_opened checks)."""
    classes = box["cls"].split()
    return box["tag"] == "mjx-assistive-mml" or "math" in classes or "toggle-hidden" in classes


@pytest.mark.parametrize("entry", PAGES)
def test_every_image_loads(visit, entry):
    broken = [i["src"][:120] for i in visit(entry).dom["images"] if not i["ok"]]
    assert not broken, f"{entry}: images that did not load: {broken}"


_status_cache: dict[str, int] = {}
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def _status(url: str) -> int:
    if url not in _status_cache:
        try:
            with _direct.open(url, timeout=30) as r:
                _status_cache[url] = r.status
        except urllib.error.HTTPError as e:
            _status_cache[url] = e.code
    return _status_cache[url]


@pytest.mark.parametrize("entry", PAGES)
def test_every_internal_link_resolves(visit, site, built_book, entry):
    """Every link on the page to our own site answers 200, and a link to #anchor finds that anchor."""
    v = visit(entry)
    problems = []
    for link in sorted(set(v.dom["links"])):
        if not is_loopback(link) or urlsplit(link).scheme not in ("http", "https"):
            continue
        target, fragment = strip_fragment(link)
        status = _status(target)
        if status != 200:
            problems.append(f"{link} -> HTTP {status}")
            continue
        if fragment:
            path = unquote(urlsplit(target).path).lstrip("/")
            file = built_book / (path or "index.html")
            if file.is_dir():
                file = file / "index.html"
            ids = set(v.dom["ids"]) if target == strip_fragment(v.url)[0] else set()
            if file.suffix == ".html" and unquote(fragment) not in ids | html_ids(file):
                problems.append(f"{link} -> no element with id {fragment!r} in {path}")
    assert not problems, f"{entry}: broken internal links:\n  " + "\n  ".join(problems)


# ---- chapters: executed, with figures and no errors --------------------------------------------------------
@pytest.mark.parametrize("entry", executed_chapters())
def test_chapter_shows_its_executed_outputs(visit, entry):
    d = visit(entry).dom
    assert d["outputs"] > 0, f"{entry}: no cell outputs on the page (was it executed?)"
    assert d["output_images"] > 0, f"{entry}: no figure among the outputs"
    assert all(i["ok"] for i in d["images"] if i["output"]), f"{entry}: a figure did not load"
    assert not d["error_outputs"], f"{entry}: error outputs: {[e[:200] for e in d['error_outputs']]}"
    assert not d["traceback_text"], f"{entry}: a cell output shows a traceback or an error"


# ---- math --------------------------------------------------------------------------------------------------
def test_math_is_typeset_offline(visit):
    """Every page with math loads the bundled MathJax (from loopback: the network is cut off) and every
    formula is typeset without a MathJax error."""
    with_math = []
    for entry in PAGES:
        d = visit(entry).dom
        if d["math_nodes"] == 0:
            continue
        with_math.append(entry)
        assert d["mathjax_version"], f"{entry}: has math but MathJax did not load ({d['scripts']})"
        assert any("/_static/mathjax/" in s and is_loopback(s) for s in d["scripts"]), \
            f"{entry}: MathJax is not the bundled copy: {[s for s in d['scripts'] if 'mathjax' in s.lower()]}"
        assert d["mjx"] >= d["math_nodes"], f"{entry}: {d['math_nodes']} formulas but {d['mjx']} typeset"
        assert not d["mjx_errors"], f"{entry}: MathJax errors: {d['mjx_errors']}"
    assert with_math, "no page of the book has math: this test would prove nothing"


# ---- search ------------------------------------------------------------------------------------------------
def _chapters_mentioning(term: str) -> list[str]:
    return [e for e in PAGES if not is_exercise(e) and e != PAGES[0]
            and re.search(rf"\b{re.escape(term)}", markdown_text(e), re.IGNORECASE)]


@pytest.mark.parametrize("term", ["bottleneck", "pooling"])
def test_search_lists_the_chapter(browser, site, term):
    """Type the term into the book's search box, press Enter: every chapter whose text uses it is listed."""
    expected = _chapters_mentioning(term)
    if not expected:
        pytest.skip(f"no chapter in _toc.yml mentions {term!r} yet")
    context = browser.new_context(viewport=DESKTOP)
    context.route("**/*", lambda r: r.continue_() if is_loopback(r.request.url) else r.abort())
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(site.url(PAGES[0]), wait_until="load")
        page.locator("button.search-button-field, button.search-button").first.click()
        box = page.locator("input[name='q']:visible").first
        box.fill(term)
        box.press("Enter")
        page.wait_for_url(re.compile(r"/search\.html\?"), timeout=30000)
        page.wait_for_function(
            "() => { const s = document.querySelector('#search-results .search-summary, p.search-summary');"
            " return s && /found|did not match/i.test(s.innerText); }", timeout=60000)
        hits = page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.href)")
        page.screenshot(path=str(site.root.parent / "screenshots" / f"search-{term}.png"))
    finally:
        context.close()
    listed = {unquote(urlsplit(h).path).lstrip("/").removesuffix(".html") for h in hits}
    missing = [e for e in expected if e not in listed]
    assert not missing, f"searching {term!r} listed {sorted(listed)}, not {missing}"
    assert not errors, f"JavaScript errors on the search page: {errors}"


# ---- reading and launching ---------------------------------------------------------------------------------
def _repo_parts() -> tuple[str, str, str]:
    repo = book_config()["repository"]
    parts = urlsplit(repo["url"]).path.strip("/").split("/")
    return parts[0], parts[1], repo.get("branch", "main")


@pytest.mark.parametrize("entry", notebook_pages())
def test_notebook_page_has_download_and_launch_buttons(visit, entry):
    """Chapters and exercises offer their notebook for download and launch buttons (JupyterLab on Binder or a
    JupyterHub, Colab), all made from `repository` and `launch_buttons` in _config.yml, and all opening what the page
    was built from: Binder the build's commit, Colab the page's published copy."""
    d = visit(entry).dom
    notebooks = [u for u in d["download"] if u.endswith(f"/_sources/{entry}.ipynb")]
    assert notebooks, f"{entry}: no download button for {entry}.ipynb (has {d['download']})"
    with _direct.open(notebooks[0], timeout=30) as r:
        nb = json.loads(r.read())
    assert nb.get("nbformat") == 4 and nb["cells"], f"{entry}: the downloaded notebook is not a notebook"

    org, repo, _ = _repo_parts()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    published = book_config()["sphinx"]["config"]["course_published_branch"]
    launch = book_config()["launch_buttons"]
    interface = {"jupyterlab": "lab/tree", "classic": "tree"}[launch.get("notebook_interface", "classic")]
    expected = {}
    if launch.get("binderhub_url"):
        expected["Binder"] = (f"{launch['binderhub_url'].rstrip('/')}/v2/gh/{org}/{repo}/{commit}"
                              f"?urlpath={interface}/{entry}.ipynb")
    if launch.get("jupyterhub_url"):
        expected["JupyterHub"] = f"{launch['jupyterhub_url'].rstrip('/')}/hub/user-redirect/git-pull?"
    if launch.get("colab_url"):
        # the published copy, whose install cell is pinned to the build's commit (tests/test_colab.py)
        expected["Colab"] = (f"{launch['colab_url'].rstrip('/')}/github/{org}/{repo}/blob/{published}"
                             f"/_sources/{entry}.ipynb")
    assert expected, "_config.yml configures no launch service"
    for name, prefix in expected.items():
        assert any(u.startswith(prefix) for u in d["launch"]), \
            f"{entry}: no {name} launch button starting {prefix} (has {d['launch']})"


def test_at_a_glance_times_every_chapter(visit):
    """The "at a glance" page has the build's own execution time for every executed chapter."""
    page = "book/at-a-glance"
    if page not in PAGES:
        pytest.skip(f"{page} is not in _toc.yml")
    d = visit(page).dom
    rows = {r[0]: r for r in d["tables"] if r}
    for entry in executed_chapters():
        assert entry in rows, f"{page}: no row for {entry} in its tables ({sorted(rows)})"
        seconds = rows[entry][3]
        assert re.fullmatch(r"\d+(\.\d+)?", seconds), f"{page}: {entry} has no run time ({rows[entry]})"


def _text_outside_the_install_cell(path: Path) -> str:
    """A page's text, less the chapter's install cell: that cell is written from _config.yml by
    scripts/colab_cells.py (tests/test_colab.py checks it names the configured repository)."""
    if path.suffix != ".ipynb":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if "course-install" not in c.get("metadata", {}).get("tags", []))


def test_repository_url_is_one_setting():
    """The repository is named once, in _config.yml; no page hard-codes it (launch links are made from it, and
    each chapter's install cell is generated from it by `make colab-cells`)."""
    url = book_config()["repository"]["url"].rstrip("/")
    assert url.startswith("https://"), "_config.yml: repository.url is not set"
    offenders = [str(source_of(e).relative_to(ROOT)) for e in PAGES if url in _text_outside_the_install_cell(source_of(e))]
    assert not offenders, f"pages that hard-code {url}: {offenders} (use the launch buttons / _config.yml)"


# ---- JupyterLab, as `make lab` opens it: the nbgrader Validate button on an exercise --------------------------
def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(browser, tmp_path_factory):
    """`jupyter lab --notebook-dir=.` (the Makefile's `lab`) on loopback, in a copy of the course folder
    (nbgrader_config.py and exercises/), so that the notebook the Validate button saves is a copy."""
    import secrets
    import shutil
    import subprocess
    import sys

    from grader.release import STUDENT_CONFIG
    sys.path.insert(0, str(ROOT / "tests" / "nbgrader_fixtures"))
    from submissions import Course
    sys.path.pop(0)

    course = tmp_path_factory.mktemp("lab") / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(STUDENT_CONFIG)  # what a student's copy of the course has
    shutil.copytree(ROOT / "exercises", course / "exercises", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # the student version with the solutions filled in stands in for a student's solved copy
    first = sorted((course / "exercises").glob("*/*.ipynb"))[0]
    (course / "solved" / first.parent.name).mkdir(parents=True)
    (course / "solved" / first.parent.name / first.name).write_text(json.dumps(Course(ROOT).solved(first.parent.name)))
    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).with_name("jupyter")
    log = open(course.parent / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--notebook-dir=.", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--LabApp.workspaces_dir={course.parent / 'workspaces'}", *(["--allow-root"] if os.getuid() == 0 else [])],
        cwd=course, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, JUPYTER_RUNTIME_DIR=str(course.parent / "runtime")))
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
                    pytest.fail(f"JupyterLab did not start; its log:\n{(course.parent / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(1)
        yield course, base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


CHAPTERS = executed_chapters()


@pytest.mark.parametrize("entry", CHAPTERS)
def test_check_your_understanding_answers_are_hidden_until_opened(browser, site, screenshots, entry):
    """Every chapter ends with 5 to 8 questions whose worked answers are hidden at first and open on a click."""
    context = browser.new_context(viewport=PHONE if entry.endswith("resnet") else DESKTOP)
    context.route("**/*", lambda r: r.continue_() if is_loopback(r.request.url) else r.abort("internetdisconnected"))
    page = context.new_page()
    try:
        page.goto(site.url(entry), wait_until="load", timeout=60000)
        page.wait_for_selector("#check-your-understanding", timeout=30000)
        questions = page.locator("#check-your-understanding .admonition.dropdown")
        n = questions.count()
        assert 5 <= n <= 8, f"{entry}: {n} questions in 'Check your understanding', expected 5 to 8"
        for i in range(n):
            body = questions.nth(i).locator(":scope > :not(.admonition-title)").first
            assert not body.is_visible(), f"{entry}: answer {i + 1} is visible before it is opened"
        first = questions.nth(0)
        first.scroll_into_view_if_needed()
        if entry.endswith(("resnet", "vit")):  # two questions as a reader sees them, closed and open
            first.screenshot(path=str(screenshots / f"question-{slug(entry)}-closed.png"))
        first.locator(".admonition-title").click()
        body = first.locator(":scope > :not(.admonition-title)").first
        body.wait_for(state="visible", timeout=5000)
        text = first.inner_text()
        assert "Follow-up" in text, f"{entry}: the first answer has no follow-up question"
        assert "{glue" not in text and "glue:text" not in text, f"{entry}: an unresolved glue role in an answer"
        if entry.endswith(("resnet", "vit")):
            first.screenshot(path=str(screenshots / f"question-{slug(entry)}-open.png"))
        assert not questions.nth(1).locator(":scope > :not(.admonition-title)").first.is_visible(), \
            f"{entry}: opening one answer opened another"
    finally:
        context.close()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["exercise", "solved"])
def test_jupyterlab_validate_button(browser, jupyterlab, built_book, version):
    """A student opens an exercise in JupyterLab: the nbgrader Validate button is in the notebook's toolbar and
    runs the tests. The untouched exercise fails them and the dialog says which; the instructor's solution,
    standing in for a solved exercise, passes."""
    course, base, token = jupyterlab
    folder = "exercises" if version == "exercise" else "solved"
    notebook = sorted((course / folder).glob("*/*.ipynb"))[0].relative_to(course).as_posix()
    context = browser.new_context(viewport=DESKTOP)
    context.route("**/*", lambda r: r.continue_() if is_loopback(r.request.url) else r.abort())
    page = context.new_page()
    shot = built_book.parent / "screenshots" / f"jupyterlab-validate-{version}.png"
    try:
        page.goto(f"{base}/lab/workspaces/{version}/tree/{notebook}?reset&token={token}", wait_until="load",
                  timeout=120000)
        button = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .validate-button").first
        button.wait_for(state="visible", timeout=180000)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60000)
        button.click()
        message = page.locator("#validation-message")
        message.wait_for(state="visible", timeout=300000)
        text = message.inner_text()
        classes = message.get_attribute("class") or ""
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
    finally:
        context.close()
    if version == "exercise":
        assert "validation-failed" in classes, \
            f"validating the untouched {notebook} did not report failing tests: {classes!r} {text[:500]!r}"
    else:
        assert "validation-success" in classes, f"validating the solution {notebook} did not pass: {text[:1500]!r}"


# ---- accessibility: axe-core, alt text, the keyboard -------------------------------------------------------
def _open(browser, site, entry: str, **context_args):
    """A page in a fresh context (network cut off), settled; returns (context, page)."""
    from browser_helpers import SETTLE
    context = browser.new_context(viewport=DESKTOP, service_workers="block", **context_args)
    context.route("**/*", lambda r: r.continue_() if is_loopback(r.request.url) else r.abort("internetdisconnected"))
    page = context.new_page()
    page.goto(site.url(entry), wait_until="load", timeout=60000)
    page.evaluate(SETTLE)
    return context, page


@pytest.mark.parametrize("entry", PAGES)
def test_axe_finds_no_serious_or_critical_violation(browser, site, screenshots, entry):
    """axe-core (the copy axe-playwright-python bundles, injected from disk) audits the whole page, light theme,
    desktop width: no violation of impact "serious" or "critical". Every finding is written to
    _build/screenshots/axe/<page>.json."""
    axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")
    context, page = _open(browser, site, entry)
    try:
        results = axe_module.Axe().run(page).response
    finally:
        context.close()
    found = [{"id": v["id"], "impact": v["impact"], "nodes": len(v["nodes"]), "help": v["help"],
              "targets": [n["target"] for n in v["nodes"][:5]]} for v in results["violations"]]
    (screenshots / "axe").mkdir(parents=True, exist_ok=True)
    (screenshots / "axe" / f"{slug(entry)}.json").write_text(json.dumps(found, indent=1))
    bad = [f"{v['id']} ({v['impact']}, {v['nodes']} elements: {v['help']}) e.g. {v['targets'][:3]}"
           for v in found if v["impact"] in ("serious", "critical")]
    assert not bad, f"{entry}: axe-core finds:\n  " + "\n  ".join(bad)


def _is_file_name(alt: str) -> bool:
    return bool(re.fullmatch(r"\S+\.(png|svg|jpe?g|gif)", alt.strip())) or "_images/" in alt


@pytest.mark.parametrize("entry", PAGES)
def test_every_image_has_alt_text_that_says_what_it_shows(visit, entry):
    """Every <img> has an alt attribute; a figure made by code (a cell's output) has one that describes it: a
    sentence of at least four words set in the cell's metadata (mystnb: image: alt), never the file name the
    build falls back to. Decorative images say so with an empty alt."""
    problems = []
    for img in visit(entry).dom["images"]:
        alt = img["alt"]
        if alt is None and not img["hidden"]:
            problems.append(f"no alt: {img['src'][-60:]}")
        elif img["output"] and (_is_file_name(alt or "") or len((alt or "").split()) < 4):
            problems.append(f"figure whose alt does not describe it ({alt!r}): {img['src'][-60:]}")
    assert not problems, f"{entry}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("entry", CHAPTERS)
def test_keyboard_reaches_and_opens_the_answers(browser, site, entry):
    """With the keyboard alone: Tab from the top of the page reaches the first answer's toggle in "Check your
    understanding", Enter opens it, and the focused toggle says it is expanded."""
    context, page = _open(browser, site, entry)
    try:
        first = page.locator("#check-your-understanding .admonition.dropdown").first
        body = first.locator(":scope > :not(.admonition-title)").first
        assert not body.is_visible()
        for presses in range(1, 1500):  # noqa: B007 (the count is printed after the loop)
            page.keyboard.press("Tab")
            if page.evaluate("() => !!document.activeElement.closest('#check-your-understanding .dropdown')"):
                break
        else:
            pytest.fail(f"{entry}: 1,500 presses of Tab never reached an answer")
        page.keyboard.press("Enter")
        body.wait_for(state="visible", timeout=5000)
        assert page.evaluate("() => document.activeElement.getAttribute('aria-expanded')") == "true"
        print(f"{entry}: the first answer is {presses} Tab presses from the top")
    finally:
        context.close()


# ---- dark mode: figures stay legible -----------------------------------------------------------------------
OPACITY = """async () => Promise.all([...document.querySelectorAll('.cell_output img')].map(async img => {
  await img.decode().catch(() => null);
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let clear = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] < 250) clear++;
  return {src: img.getAttribute('src'), transparent: clear / (d.length / 4)};
}))"""


@pytest.mark.parametrize("entry", CHAPTERS)
def test_figures_are_opaque_and_legible_in_dark_mode(browser, site, screenshots, entry):
    """In the dark theme (the reader's system setting: the theme's default mode is "auto") every figure is an
    opaque image (its own white background, not the page's dark one behind transparent pixels), and its
    screenshot shows a light ground at its edge (over 75% of the edge's pixels) and dark lines or text.
    Screenshots: _build/screenshots/dark/."""
    from PIL import Image
    context, page = _open(browser, site, entry, color_scheme="dark")
    shot = screenshots / "dark" / f"{slug(entry)}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    try:
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        figures = page.evaluate(OPACITY)
        assert figures, f"{entry}: no figure"
        see_through = [f"{f['src']} ({f['transparent']:.0%} transparent)" for f in figures if f["transparent"] > 0]
        assert not see_through, f"{entry}: figures with a transparent background: {see_through}"
        first = page.locator(".cell_output img").first
        first.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        first.screenshot(path=str(shot))
        page.screenshot(path=str(shot.with_name(f"{slug(entry)}-page.png")))
    finally:
        context.close()
    gray = Image.open(shot).convert("L")
    w, h = gray.size
    # the ring a few pixels inside the screenshot: an element at a fractional position brings a pixel of the
    # page's dark background (and its rounded corners) into the screenshot's outermost row and column
    ring = [gray.getpixel((x, y)) for x in range(w) for y in (3, 4, 5, h - 6, h - 5, h - 4)] + \
           [gray.getpixel((x, y)) for y in range(h) for x in (3, 4, 5, w - 6, w - 5, w - 4)]
    ink = sum(p < 90 for p in gray.tobytes()) / (w * h)
    light_edge = sum(p > 150 for p in ring) / len(ring)
    assert light_edge > 0.75 and ink > 0.002, \
        f"{entry}: the first figure under the dark theme has {light_edge:.0%} of its edge light (0-255 > 150) " \
        f"and {ink:.1%} dark ink ({shot}): not dark lines on a light ground"
