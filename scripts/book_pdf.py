#!/usr/bin/env python
"""The whole book as one PDF, printed from the executed HTML pages (`make pdf`, after `make book`).

Each page of _toc.yml is opened in Chromium (Debian's, through Playwright: no browser download, no network,
no TeX) from _build/html served on loopback, with its dropdown answers opened, and printed with the print
rules of book/_static/course.css (no navigation, code that wraps instead of being cut). pypdf then joins the
pages, stamps a running footer (the chapter's title and the book's page number) and adds a clickable outline:
parts, their chapters, and each chapter's sections.

    python scripts/book_pdf.py [--html _build/html] [--out _build/pdf/book.pdf]

Next to the PDF, book.json records each chapter's first page and page count, and whatever was wider than the
paper (tests/test_pdf.py reads it).
"""
from __future__ import annotations

import argparse
import functools
import html
import http.server
import io
import json
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
A4 = {"width": "210mm", "height": "297mm"}
MARGIN = {"top": "16mm", "bottom": "18mm", "left": "15mm", "right": "15mm"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--no-proxy-server"]

# Before printing: every dropdown answer open, lazy images loaded, MathJax and the images settled.
PREPARE = """async () => {
  const wait = (ms) => new Promise(r => setTimeout(r, ms));
  document.querySelectorAll('details').forEach(d => d.open = true);
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  document.querySelectorAll('img[loading="lazy"]').forEach(i => i.loading = 'eager');
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await Promise.race([MathJax.startup.promise, wait(30000)]);
  }
  await Promise.race([Promise.all([...document.images].map(i => i.decode().catch(() => null))), wait(30000)]);
}"""

# What the printed page holds: its sections (for the outline) and anything wider than the paper's text width.
FACTS = """() => {
  const main = document.querySelector('main article') || document.querySelector('main') || document.body;
  const width = main.getBoundingClientRect().width;
  const cut = [...main.querySelectorAll('*')].filter(e => {
      const r = e.getBoundingClientRect();
      const clipped = e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible'
                      && e.clientWidth > 0 && !e.closest('mjx-assistive-mml') && !e.classList.contains('math');
      return r.width > 0 && (r.right > main.getBoundingClientRect().right + 2 || clipped);
    }).map(e => e.tagName.toLowerCase() + '.' + e.className.toString().slice(0, 40) + ': '
                + (e.innerText || '').slice(0, 60));
  const h1 = main.querySelector('h1');
  return {title: h1 ? h1.innerText.replace(/[#¶]\\s*$/, '').trim() : document.title,
          headings: [...main.querySelectorAll('section > h2')].map(h => h.innerText.replace(/[#¶]\\s*$/, '').trim()),
          text_width: width, cut: cut};
}"""


def toc(root: Path = ROOT) -> list[tuple[str | None, str]]:
    """(part caption or None, docname) for every page of _toc.yml, in reading order."""
    data = yaml.safe_load((root / "_toc.yml").read_text())
    pages: list[tuple[str | None, str]] = [(None, data["root"])]

    def walk(part, entries):
        for e in entries or []:
            if "file" in e:
                pages.append((part, e["file"]))
            walk(part, e.get("sections"))
    for part in data.get("parts") or []:
        walk(part.get("caption"), part.get("chapters"))
    walk(None, data.get("chapters"))
    return pages


@contextmanager
def serve(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def find_chromium() -> str:
    import os
    explicit = os.environ.get("CNN_COURSE_CHROMIUM")
    found = explicit or next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    if not found:
        sys.exit("book_pdf: no Chromium found; `sudo apt-get install chromium` (Debian's), or set CNN_COURSE_CHROMIUM")
    return found


def print_pages(html_dir: Path, pages: list[str]) -> list[tuple[bytes, dict]]:
    """Each page printed to PDF bytes by Chromium, with the facts FACTS collects."""
    from playwright.sync_api import sync_playwright

    out = []
    with serve(html_dir) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1000, "height": 1400}, service_workers="block")
        context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base) else r.abort())
        page = context.new_page()
        page.emulate_media(media="print", color_scheme="light")
        for entry in pages:
            page.goto(f"{base}/{entry}.html", wait_until="load", timeout=120000)
            page.evaluate(PREPARE)
            # the layout the paper gets: A4 less the margins is ~180 mm, about 680 CSS px
            page.set_viewport_size({"width": 680, "height": 1000})
            facts = page.evaluate(FACTS)
            # outline: Chromium's own outline of the page's headings (where each section starts); tagged: a
            # structure tree, which screen readers use
            pdf = page.pdf(**A4, margin=MARGIN, print_background=True, outline=True, tagged=True)
            out.append((pdf, facts))
            page.set_viewport_size({"width": 1000, "height": 1400})
        browser.close()
    return out


def footer_stamps(labels: list[str]) -> bytes:
    """One PDF page per label, blank but for the label at the foot: the running footer, printed by Chromium
    too (pypdf writes no text) and merged onto the book's pages."""
    from playwright.sync_api import sync_playwright

    body = "".join(f'<div class="p"><span>{html.escape(t)}</span><span>{n}</span></div>'
                   for n, t in enumerate(labels, start=1))
    doc = ("<!doctype html><meta charset=utf-8><style>@page{size:210mm 297mm;margin:0}"
           "html,body{margin:0;background:transparent}"
           ".p{height:297mm;position:relative;page-break-after:always;font:9pt 'DejaVu Sans',sans-serif;color:#555}"
           ".p span{position:absolute;bottom:8mm}.p span:first-child{left:15mm}.p span:last-child{right:15mm}"
           f"</style>{body}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.set_content(doc)
        pdf = page.pdf(**A4, margin={"top": "0", "bottom": "0", "left": "0", "right": "0"}, print_background=False)
        browser.close()
    return pdf


def build(html_dir: Path, out: Path, root: Path = ROOT) -> dict:
    from pypdf import PdfReader, PdfWriter

    start = time.perf_counter()
    toc_pages = toc(root)
    printed = print_pages(html_dir, [e for _, e in toc_pages])
    writer = PdfWriter()
    chapters, labels = [], []
    for (part, entry), (pdf, facts) in zip(toc_pages, printed):
        reader = PdfReader(io.BytesIO(pdf))
        facts["sections"] = _sections(reader, facts["headings"])
        first = len(writer.pages)
        writer.append(reader, import_outline=False)
        chapters.append({"entry": entry, "part": part, "title": facts["title"], "first_page": first + 1,
                         "pages": len(reader.pages), "sections": facts["sections"], "cut": facts["cut"],
                         "text_width_px": facts["text_width"]})
        labels += [facts["title"]] * len(reader.pages)
    for page, stamp in zip(writer.pages, PdfReader(io.BytesIO(footer_stamps(labels))).pages):
        page.merge_page(stamp)
    _local_links(writer, {c["entry"]: c["first_page"] - 1 for c in chapters})
    _outline(writer, chapters)
    writer.add_metadata({"/Title": yaml.safe_load((root / "_config.yml").read_text())["title"],
                         "/Author": yaml.safe_load((root / "_config.yml").read_text())["author"]})
    writer.page_mode = "/UseOutlines"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        writer.write(f)
    manifest = {"pdf": str(out), "pages": len(writer.pages), "bytes": out.stat().st_size,
                "seconds": round(time.perf_counter() - start, 1), "chapters": chapters}
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _local_links(writer, first_pages: dict[str, int]) -> None:
    """Links between the book's pages were printed as addresses of the loopback server the pages came from:
    each becomes a link to the first PDF page of the page it names; one to a page not in the PDF is removed."""
    from urllib.parse import urlsplit

    from pypdf.generic import ArrayObject, NameObject

    for page in writer.pages:
        annots = page.get("/Annots")
        if not annots:
            continue
        kept = ArrayObject()
        for ref in annots:
            annot = ref.get_object()
            uri = str(annot.get("/A", {}).get("/URI", "")) if "/A" in annot else ""
            parts = urlsplit(uri)
            if parts.hostname not in ("127.0.0.1", "localhost"):
                kept.append(ref)
                continue
            entry = parts.path.lstrip("/").removesuffix(".html")
            if entry in first_pages:
                del annot["/A"]
                annot[NameObject("/Dest")] = ArrayObject([writer.pages[first_pages[entry]].indirect_reference,
                                                          NameObject("/Fit")])
                kept.append(ref)
        page[NameObject("/Annots")] = kept


def _sections(reader, headings: list[str]) -> list[dict]:
    """The page's second-level headings and their pages (0-based, within the page's PDF). The pages come from the
    outline Chromium makes of the headings (the children of the title's entry); the titles from the page's
    DOM, as Chromium's run the heading's lines together."""
    top = reader.outline
    level = top[1] if len(top) > 1 and isinstance(top[1], list) else top[1:]
    items = [it for it in level if not isinstance(it, list)]
    titles = headings if len(headings) == len(items) else [it.title.strip() for it in items]
    return [{"title": t, "page": reader.get_destination_page_number(it)} for t, it in zip(titles, items)]


def _outline(writer, chapters: list[dict]) -> None:
    """Parts at the top level (each opening at its first chapter), their chapters, each chapter's sections."""
    parts: dict[str, object] = {}
    for ch in chapters:
        parent = None
        if ch["part"]:
            if ch["part"] not in parts:
                parts[ch["part"]] = writer.add_outline_item(title=ch["part"], page_number=ch["first_page"] - 1,
                                                            bold=True)
            parent = parts[ch["part"]]
        item = writer.add_outline_item(title=ch["title"], page_number=ch["first_page"] - 1, parent=parent)
        for sec in ch["sections"]:
            writer.add_outline_item(title=sec["title"], page_number=ch["first_page"] - 1 + sec["page"], parent=item)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "pdf" / "book.pdf")
    ap.add_argument("--book", type=Path, default=ROOT, help="the folder of _toc.yml and _config.yml")
    args = ap.parse_args(argv)
    if not (args.html / "index.html").is_file():
        sys.exit(f"book_pdf: no built book in {args.html}; run `make book` first")
    m = build(args.html, args.out, args.book)
    cut = [f"{c['entry']}: {x}" for c in m["chapters"] for x in c["cut"]]
    print(f"{m['pdf']}: {m['pages']} pages, {m['bytes'] / 1e6:.1f} MB, {len(m['chapters'])} chapters, "
          f"printed in {m['seconds']:.0f} s")
    if cut:
        print("wider than the paper (cut off):\n  " + "\n  ".join(cut[:20]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
