"""What the browser tests share: the book's pages (from _toc.yml), finding Chromium, serving the built HTML on
loopback, and opening a page in Chromium while recording everything that went wrong on the way.

Nothing here builds the book: the tests get it from the `built_book` fixture (conftest.py, `make book`)."""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Debian's Chromium, headless; no sandbox (CI runs as root), nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server"]
CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome-stable", "google-chrome"]
INSTALL_HINT = ("install Debian's Chromium with `sudo apt-get install chromium` (`make browser` does it where apt "
                "is permitted, and `make test` runs that), or point CNN_COURSE_CHROMIUM at a Chrome/Chromium binary")

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


# ---- the book's pages ------------------------------------------------------------------------------------
def toc_entries() -> list[str]:
    """Every `file:` of _toc.yml, root first, in reading order (docnames, without suffix)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections", []))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return files


def source_of(entry: str) -> Path:
    for suffix in (".ipynb", ".md"):
        if (ROOT / f"{entry}{suffix}").exists():
            return ROOT / f"{entry}{suffix}"
    raise FileNotFoundError(f"_toc.yml names {entry}, which has no .ipynb or .md file")


def is_notebook(entry: str) -> bool:
    return source_of(entry).suffix == ".ipynb"


def is_exercise(entry: str) -> bool:
    return entry.startswith("exercises/")


def executed_chapters() -> list[str]:
    """Notebook pages the build executes (exercises are shown as released, never executed)."""
    return [e for e in toc_entries() if is_notebook(e) and not is_exercise(e)]


def notebook_pages() -> list[str]:
    return [e for e in toc_entries() if is_notebook(e)]


def markdown_text(entry: str) -> str:
    """The prose of a page: markdown cells of a notebook, or the whole .md file."""
    import json
    path = source_of(entry)
    if path.suffix == ".md":
        return path.read_text()
    nb = json.loads(path.read_text())
    return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in nb["cells"] if c["cell_type"] == "markdown")


@functools.cache
def book_config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def slug(entry: str) -> str:
    return entry.replace("/", "-")


# ---- Chromium --------------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    """CNN_COURSE_CHROMIUM, else the first Chromium/Chrome on PATH (Debian's is /usr/bin/chromium)."""
    explicit = os.environ.get("CNN_COURSE_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


# ---- a loopback HTTP server for the built book -----------------------------------------------------------
@dataclass
class Server:
    root: Path
    base: str = ""
    hits: list[tuple[str, int]] = field(default_factory=list)  # (path, status) of every request it answered

    def url(self, entry: str) -> str:
        return f"{self.base}/{entry}.html"

    def errors(self) -> list[tuple[str, int]]:
        return [(p, s) for p, s in self.hits if s >= 400]


@contextmanager
def serve(root: Path):
    """Serve `root` on 127.0.0.1 (a free port) in a thread; yields a Server that records every answer."""
    server_state = Server(root=root)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_request(self, code="-", size="-"):
            try:
                server_state.hits.append((self.path, int(code)))
            except (TypeError, ValueError):
                pass

        def log_message(self, format, *args):  # quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="book-server", daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "javascript"):
        return True
    return (parts.hostname or "") in LOOPBACK


# ---- one page in the browser -----------------------------------------------------------------------------
@dataclass
class Visit:
    """What happened while a page loaded (at one width), and what its DOM held once it had settled."""
    url: str
    page_errors: list[str] = field(default_factory=list)      # uncaught exceptions in the page's JavaScript
    console_errors: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)    # "404 http://..." for every status >= 400
    failed_requests: list[str] = field(default_factory=list)  # requests that got no answer
    blocked: list[str] = field(default_factory=list)          # requests to anything but loopback (aborted)
    dom: dict = field(default_factory=dict)                   # facts collected by DOM_FACTS

    def problems(self) -> list[str]:
        out = [f"JavaScript error: {e}" for e in self.page_errors]
        out += [f"console error: {e}" for e in self.console_errors]
        out += [f"HTTP {r}" for r in self.bad_responses]
        out += [f"request failed: {r}" for r in self.failed_requests]
        out += [f"tried the network (blocked): {r}" for r in self.blocked]
        return out


# Waits for MathJax (if the page loads it) and for every image, then reports what the page shows.
SETTLE = """async () => {
  const deadline = (ms) => new Promise(r => setTimeout(r, ms));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await Promise.race([MathJax.startup.promise, deadline(30000)]);
  }
  await Promise.race([Promise.all([...document.images].map(i => i.decode().catch(() => null))), deadline(30000)]);
}"""

DOM_FACTS = """() => {
  const text = (sel) => [...document.querySelectorAll(sel)].map(e => e.innerText);
  const main = document.querySelector('main') || document.body;
  return {
    title: document.title,
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    images: [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0,
                                             output: !!i.closest('.cell_output'), alt: i.getAttribute('alt'),
                                             hidden: i.getAttribute('aria-hidden') === 'true'})),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    math_nodes: document.querySelectorAll('main .math').length,
    mjx: document.querySelectorAll('mjx-container').length,
    mjx_errors: text('mjx-merror').concat(text('mjx-container [data-mjx-error]')),
    mathjax_version: (window.MathJax && MathJax.version) || null,
    scripts: [...document.scripts].map(s => s.src).filter(Boolean),
    cells: document.querySelectorAll('.cell').length,
    outputs: document.querySelectorAll('.cell_output').length,
    output_images: document.querySelectorAll('.cell_output img').length,
    error_outputs: text('.cell_output .output.error, .cell_output .output.traceback, .cell_output .traceback'),
    traceback_text: [...document.querySelectorAll('.cell_output')].some(
        e => /Traceback \\(most recent call last\\)|^\\w*Error: /m.test(e.innerText)),
    download: [...document.querySelectorAll('.dropdown-download-buttons a[href]')].map(a => a.href),
    launch: [...document.querySelectorAll('.dropdown-launch-buttons a[href]')].map(a => a.href),
    main_text_length: main.innerText.length,
    overflow_x: document.documentElement.scrollWidth - window.innerWidth,
    page_width: document.documentElement.scrollWidth,
    // boxes whose content is wider than they are: each must scroll on its own, with the edge shadow as its cue
    scrollers: [...document.querySelectorAll('main *')].filter(e => e.scrollWidth > e.clientWidth + 1
        && getComputedStyle(e).overflowX !== 'visible' && e.clientWidth > 0).map(e => ({
      tag: e.tagName.toLowerCase(), cls: e.className.toString().slice(0, 80),
      overflow: getComputedStyle(e).overflowX, attachment: getComputedStyle(e).backgroundAttachment,
      hidden_px: e.scrollWidth - e.clientWidth, text: e.innerText.slice(0, 60)})),
    unscrolled: [...document.querySelectorAll('main *')].filter(e => e.scrollWidth > e.clientWidth + 1
        && getComputedStyle(e).overflowX === 'visible' && e.clientWidth > 0
        && e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName.toLowerCase()
        + '.' + e.className.toString().slice(0, 40)),
    tables: [...document.querySelectorAll('main table tbody tr')].map(
        tr => [...tr.querySelectorAll('td, th')].map(td => td.innerText.trim())),
  };
}"""


def open_page(browser, url: str, viewport: dict = DESKTOP, screenshot: Path | None = None,
              timeout_ms: int = 60000) -> Visit:
    """Load `url` in a fresh context of `browser` at `viewport` with the network cut off (anything but
    loopback is aborted and recorded), wait until MathJax and the images settle, collect DOM facts,
    and optionally take a full-page screenshot."""
    visit = Visit(url=url)
    context = browser.new_context(viewport=viewport, is_mobile=viewport["width"] < 600,
                                  has_touch=viewport["width"] < 600, service_workers="block")

    def route(r):
        if is_loopback(r.request.url):
            r.continue_()
        else:
            visit.blocked.append(r.request.url)
            r.abort("internetdisconnected")
    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda exc: visit.page_errors.append(str(exc)))
    page.on("console", lambda msg: visit.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: visit.bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("requestfailed", lambda r: visit.failed_requests.append(f"{r.url} ({r.failure})")
            if is_loopback(r.url) else None)
    try:
        page.goto(url, wait_until="load", timeout=timeout_ms)
        page.evaluate(SETTLE)
        visit.dom = page.evaluate(DOM_FACTS)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True, timeout=timeout_ms)
    finally:
        context.close()
    return visit


def strip_fragment(url: str) -> tuple[str, str]:
    base, _, frag = url.partition("#")
    return base, frag


def html_ids(path: Path) -> set[str]:
    html = path.read_text(errors="replace")
    return set(re.findall(r'\bid="([^"]+)"', html)) | set(re.findall(r'\bname="([^"]+)"', html))
