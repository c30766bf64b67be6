"""The drills as the book shows them (lib/drills/_widget.py and book/_static/drills.js), without a browser: the bank
embedded in the page cannot break out of its <script> element, a chapter without drills says which file to write,
and the page's parser reads answers typed with separators or in scientific notation (run in Node, where there is
one: the same file the pages load). The browser tests are in tests/test_browser_drills.py."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from lib import drills
from lib.drills import Question

ROOT = Path(__file__).resolve().parents[1]
DRILLS_JS = ROOT / "book" / "_static" / "drills.js"
HOSTILE = "A prompt with `</script><script>alert(1)</script>` and <!-- a comment & an ampersand \u2028 in it?"


def _hostile(rng) -> Question:
    n = rng.randint(10, 99)
    return Question(prompt=f"{HOSTILE} n = {n}", answer=n * 1000, steps=("</script>", f"n * 1000 = {n * 1000:,}"),
                    measure=lambda: nn.Linear(n, 1000, bias=False).weight.numel(), unit="parameters")


@pytest.fixture
def hostile_chapter(monkeypatch):
    """The "vit" chapter with one generator whose prompt and steps hold markup (and nothing else)."""
    gen = drills.Generator("vit", "hostile", "A </script> title", _hostile)
    monkeypatch.setitem(drills.REGISTRY, "vit", {"hostile": gen})
    return gen


def _embedded(page: str) -> list:
    blocks = re.findall(r'<script type="application/json" class="drills-data">(.*?)</script>', page, re.DOTALL)
    assert len(blocks) == 1, f"{len(blocks)} data blocks (a prompt closed the script element early?)"
    return json.loads(blocks[0])


def test_the_embedded_bank_cannot_break_out_of_its_script_element(hostile_chapter):
    page = drills.show("vit", n=8)._repr_html_()
    data = _embedded(page)
    assert page.lower().count("</script") == 1 and "<!--" not in page and "<script>" not in page
    assert [item["title"] for item in data] == ["A </script> title"]
    bank = data[0]["bank"]
    assert len(bank) == 8 and all(q["prompt"].startswith(HOSTILE) for q in bank)  # the text survives, unescaped
    assert bank[0]["steps"][0] == "</script>"
    first = drills.bank(hostile_chapter, n=8)[0]
    assert bank[0]["answer"] == first.answer and bank[0]["answer_text"] == f"{first.answer:,}"
    # the question written out for readers without JavaScript: escaped text, `code` as <code>
    prompt = re.search(r'<p class="drill-prompt"[^>]*>(.*?)</p>', page).group(1)
    assert "<code>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;</code>" in prompt
    assert html.unescape(re.sub(r"</?code>", "", prompt)) == first.prompt.replace("`", "")


def test_the_bank_is_lib_s_answers(hostile_chapter):
    assert _embedded(drills.show("vit", n=5)._repr_html_())[0]["bank"] == [
        dict(q.as_dict(), answer_text=f"{q.answer:,}") for q in drills.bank(hostile_chapter, n=5)]


def test_a_chapter_without_drills_names_the_file_to_write(monkeypatch):
    monkeypatch.setitem(drills.REGISTRY, "pooling", {})
    with pytest.raises(LookupError, match=r"lib/drills/pooling\.py"):
        drills.show("pooling")
    with pytest.raises(LookupError, match=r"lib/drills/pooling\.py"):
        drills.sheet()
    with pytest.raises(ValueError, match="unknown chapter 'poolng'"):
        drills.show("poolng")


def test_the_sheet_has_one_question_per_generator_of_every_chapter(monkeypatch, hostile_chapter):
    for chapter in drills.CHAPTERS:
        monkeypatch.setitem(drills.REGISTRY, chapter, {"hostile": drills.Generator(chapter, "hostile", "t", _hostile)})
    page = drills.sheet(n=3)._repr_html_()
    assert [item["chapter"] for item in _embedded(page)] == list(drills.CHAPTERS)
    assert page.count('class="drill"') == len(drills.CHAPTERS) and "drill-next" not in page
    assert f"0 of {len(drills.CHAPTERS)} right" in page
    assert [f'<h2 class="drills-chapter">{drills._widget.TITLES[c]}</h2>' in page for c in drills.CHAPTERS] == \
        [True] * len(drills.CHAPTERS)


@pytest.mark.parametrize("value, text", [(1234567, "1,234,567"), (7, "7"), (2.5e-3, "0.0025"),
                                         (torch.tensor(3136).item(), "3,136"), (1234.5678, "1,235")])
def test_keys_are_written_as_readers_read_them(value, text):
    assert drills._widget.format_number(value, rel_tol=0.01) == text
    assert float(drills._widget.format_number(0.123456789, rel_tol=0)) == 0.123456789  # exact keys in full


TYPED = {"1,234,567": 1234567, "1 234 567": 1234567, "1\u202f234\u202f567": 1234567, "1_234_567": 1234567,
         "1.5e6": 1.5e6, "1.5E+6": 1.5e6, "1.5×10^6": 1.5e6, "2.5M": 2.5e6, "1.1M": 1.1e6, "3k": 3000,
         "\u22123": -3, " 42 ": 42, "12,345.5": 12345.5, ".5": 0.5,
         "": None, "abc": None, "1,23": None, "1.2.3": None, "12 parameters": None, "1e3k": None}


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js to run book/_static/drills.js with")
def test_the_page_parses_answers_with_separators_and_scientific_notation():
    script = (f"const d = require({json.dumps(str(DRILLS_JS))});"
              f"console.log(JSON.stringify({json.dumps(list(TYPED))}.map(d.parseAnswer)));"
              "console.log(JSON.stringify([d.accepts({answer: 100, rel_tol: 0.01}, 100.9),"
              " d.accepts({answer: 100, rel_tol: 0.01}, 101.1), d.accepts({answer: 3136, rel_tol: 0}, 3136),"
              " d.accepts({answer: 3136, rel_tol: 0}, 3137)]))")
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True, timeout=60).stdout
    parsed, verdicts = (json.loads(line) for line in out.splitlines())
    assert dict(zip(TYPED, parsed)) == TYPED  # JSON writes NaN as null
    assert verdicts == [True, False, True, False]
