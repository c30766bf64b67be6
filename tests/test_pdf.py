"""`make pdf`: the whole built book as one PDF (scripts/book_pdf.py), checked against the HTML it was printed from:
every page of _toc.yml in the outline under its part, on the page the outline says; a number each chapter glues
into its text found in the PDF's text of that chapter; the dropdown answers printed open; page numbers at the
foot; nothing wider than the paper."""
from __future__ import annotations

import html as htmllib
import json
import re
import subprocess
import sys
import unicodedata

import pytest
import yaml
from browser_helpers import ROOT, executed_chapters, find_chromium, toc_entries

pytestmark = [pytest.mark.browser, pytest.mark.book, pytest.mark.slow]
A4_WIDTH_PT = 210 / 25.4 * 72


@pytest.fixture(scope="module")
def book_pdf(built_book):
    pytest.importorskip("pypdf")
    pytest.importorskip("playwright")
    if find_chromium() is None:
        pytest.skip("no Chromium to print with (`sudo apt-get install chromium`)")
    out = built_book.parent / "pdf" / "book.pdf"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "book_pdf.py"), "--html", str(built_book),
                             "--out", str(out)], capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    print(result.stdout)
    from pypdf import PdfReader
    reader = PdfReader(out)
    manifest = json.loads(out.with_suffix(".json").read_text())
    return reader, manifest, built_book


def _page_title(built_book, entry: str) -> str:
    """The page's title as its HTML shows it (the first <h1>, less the header link)."""
    page = (built_book / f"{entry}.html").read_text()
    h1 = re.search(r"<h1[^>]*>(.*?)</h1>", page, re.DOTALL).group(1)
    return htmllib.unescape(re.sub(r"<[^>]+>", "", h1)).replace("#", "").strip()


def _outline(reader) -> list[tuple[int, str, int]]:
    """(depth, title, 0-based page) of every outline item."""
    out = []

    def walk(items, depth):
        for it in items:
            if isinstance(it, list):
                walk(it, depth + 1)
            else:
                out.append((depth, it.title, reader.get_destination_page_number(it)))
    walk(reader.outline, 0)
    return out


def _text(page) -> str:
    """A page's text with ligatures (ﬃ, ﬁ) spelt out."""
    return unicodedata.normalize("NFKC", page.extract_text() or "")


def _chapter_text(reader, manifest, entry: str) -> str:
    ch = next(c for c in manifest["chapters"] if c["entry"] == entry)
    pages = range(ch["first_page"] - 1, ch["first_page"] - 1 + ch["pages"])
    return " ".join(_text(reader.pages[i]) for i in pages)


def test_every_page_of_the_toc_is_in_the_outline_under_its_part(book_pdf):
    reader, manifest, built = book_pdf
    outline = _outline(reader)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    parts = [p["caption"] for p in toc["parts"]]
    assert [t for d, t, _ in outline if d == 0] == [_page_title(built, toc["root"])] + parts, \
        "the outline's top level is not the root page and the parts of _toc.yml"
    by_entry = {c["entry"]: c for c in manifest["chapters"]}
    for entry in toc_entries():
        title = _page_title(built, entry)
        found = [(d, p) for d, t, p in outline if t == title and d <= 1]
        assert found, f"{entry}: {title!r} is not in the PDF's outline"
        assert found[0][1] == by_entry[entry]["first_page"] - 1, f"{entry}: the outline opens the wrong page"
        first = _text(reader.pages[found[0][1]])
        assert title.split()[0] in first, f"{entry}: the page the outline opens does not show {title!r}"


def _glued_numbers(built_book, entry: str) -> list[str]:
    page = (built_book / f"{entry}.html").read_text()
    values = [htmllib.unescape(re.sub(r"<[^>]+>", "", v)).strip()
              for v in re.findall(r'<span class="pasted-text">(.*?)</span>', page, re.DOTALL)]
    return [v for v in values if re.fullmatch(r"[-+−]?[\d,]*\d(\.\d+)?%?", v)]


@pytest.mark.parametrize("entry", executed_chapters())
def test_a_glued_number_of_each_chapter_is_in_the_pdf(book_pdf, entry):
    """The numbers the build computed and glued into the chapter's prose are in the PDF's text: it was
    printed from the executed pages."""
    reader, manifest, built = book_pdf
    numbers = _glued_numbers(built, entry)
    assert numbers, f"{entry}: no glued number in its HTML to look for"
    text = _chapter_text(reader, manifest, entry).replace("\n", " ")
    found = [n for n in numbers if re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", text)]
    assert found, f"{entry}: none of its glued numbers {numbers[:10]} is in the PDF's text"
    assert len(found) >= len(numbers) / 2, f"{entry}: only {found} of {numbers} are in the PDF's text"


@pytest.mark.parametrize("entry", executed_chapters())
def test_dropdown_answers_are_printed_open(book_pdf, entry):
    reader, manifest, built = book_pdf
    page = (built / f"{entry}.html").read_text()
    answers = page.count("Follow-up")
    assert answers, f"{entry}: no worked answer with a follow-up in its HTML"
    assert _chapter_text(reader, manifest, entry).count("Follow-up") >= answers, \
        f"{entry}: its {answers} dropdown answers are not all in the PDF"


def test_pages_are_a4_numbered_and_nothing_is_cut(book_pdf):
    reader, manifest, _ = book_pdf
    assert manifest["pages"] == len(reader.pages) > len(toc_entries())
    wide = [i + 1 for i, p in enumerate(reader.pages) if float(p.mediabox.width) > A4_WIDTH_PT + 1]
    assert not wide, f"pages wider than A4: {wide[:10]}"
    cut = [f"{c['entry']}: {x}" for c in manifest["chapters"] for x in c["cut"]]
    assert not cut, "content wider than the paper's text (cut off when printed):\n  " + "\n  ".join(cut[:15])
    for i in range(0, len(reader.pages), max(1, len(reader.pages) // 12)):
        last = _text(reader.pages[i]).strip().splitlines()
        assert any(re.search(rf"(^|\s){i + 1}$", line) for line in last[-3:] + last[:3]), \
            f"page {i + 1} has no page number at its foot: {last[-3:]}"
    for c in manifest["chapters"]:
        if c["entry"] in executed_chapters():
            assert c["sections"], f"{c['entry']}: no sections in the outline"


def test_links_between_pages_stay_in_the_pdf(book_pdf):
    """A link to another page of the book opens that page in the PDF, not the address it was printed from."""
    reader, manifest, _ = book_pdf
    internal, loopback = 0, []
    for i, page in enumerate(reader.pages):
        for annot in page.get("/Annots") or []:
            annot = annot.get_object()
            uri = str(annot["/A"].get("/URI", "")) if "/A" in annot else ""
            internal += "/Dest" in annot
            if "127.0.0.1" in uri or "localhost" in uri:
                loopback.append(f"page {i + 1}: {uri}")
    assert not loopback, f"links to the server the pages were printed from: {loopback[:5]}"
    assert internal > len(manifest["chapters"]), f"only {internal} links within the PDF"
