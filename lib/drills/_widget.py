"""The drills as a page shows them: a cell's output that holds, per generator, a bank of drawn questions.

``show("convolution")`` in a chapter's last cell, and ``sheet()`` on the interview sheet, return an object whose
HTML is the cell's output: per generator its title, one drawn question written out (so the page reads, prints
and works without JavaScript: the answer and its worked solution sit in a closed ``<details>``), and the bank of
``n`` draws as JSON. ``book/_static/drills.js`` (loaded on every page of the book) turns each into the exercise:
a labelled input, "Check" and "Another one", and an ``aria-live`` verdict that is "Right: <answer> <unit>" or
"Not quite" with the worked solution. The answers are ``lib``'s, computed here when the page is built.

Why hand-written JavaScript rather than jupyterquiz 2.9 (the library the issue names): its numeric check runs
on Enter only and compares with ``==`` ("1,234,567" is ``NaN``), it sets no label or ``aria-live`` on its
inputs, fetches MathJax from a CDN where a page has none, draws a subset of fixed questions rather than other
numbers for the same one, and inlines its whole script into every output.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass

from lib.drills._core import CHAPTERS, bank, generators

# In a <script type="application/json"> only "</script" (and "<!--") can end the element early; escaping every
# <, > and & keeps the JSON valid and the page's markup intact. U+2028/2029 are escaped for older parsers.
TITLES = {"convolution": "Convolution", "pooling": "Pooling", "vgg": "VGG", "resnet": "ResNet",
          "efficientnet": "EfficientNet", "vit": "Vision Transformers", "architectures": "What each idea bought",
          "transfer": "Transfer learning"}  # the chapters' titles, as the book's contents list them
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(data) -> str:
    """``data`` as JSON that is safe inside ``<script type="application/json">``."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def format_number(value: float, rel_tol: float = 0.0) -> str:
    """The key as a reader reads it: ``1,234,567``; a figure with a tolerance to the digits it allows (typing
    what is shown is then right); an exact one in full."""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    digits = 15 if rel_tol == 0 else 4 if rel_tol >= 1e-3 else 7
    return f"{value:,.{digits}g}"


def _plain(value) -> int | float:
    """A key as JSON can hold it (an int stays an int; numpy and torch scalars become Python numbers)."""
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _inline(text: str) -> str:
    """Plain text with `backticks` for code, as HTML (escaped; code in <code>)."""
    parts = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


@dataclass(frozen=True)
class Drills:
    """A cell's output: the drills of ``chapters`` (one chapter for a page's practice, all on the sheet)."""
    chapters: tuple[str, ...]
    n: int = 30
    sheet: bool = False

    def data(self) -> list[dict]:
        """Per generator: its chapter, name, title and the bank of ``n`` draws as plain data."""
        return [{"chapter": g.chapter, "name": g.name, "title": g.title,
                 "bank": [dict(q.as_dict(), answer=_plain(q.answer), answer_text=format_number(q.answer, q.rel_tol))
                          for q in bank(g, n=self.n)]}
                for c in self.chapters for g in generators(c)]

    def _repr_html_(self) -> str:
        items = self.data()
        kind = "sheet" if self.sheet else "chapter"
        label = "Interview sheet" if self.sheet else f"Practice drills: {TITLES[self.chapters[0]]}"
        toolbar = ('<div class="drills-toolbar"><button type="button" class="drills-start">Start</button>'
                   '<span class="drills-timer" role="timer" aria-label="Time">0:00</span>'
                   f'<span class="drills-score" aria-live="polite">0 of {len(items)} right</span></div>'
                   if self.sheet else "")
        body, chapter = [], None
        for i, item in enumerate(items):
            if self.sheet and item["chapter"] != chapter:
                chapter = item["chapter"]
                body.append(f'<h2 class="drills-chapter">{html.escape(TITLES[chapter])}</h2>')
            body.append(_item_html(item, f"drill-{kind}-{item['chapter']}-{item['name']}", self.sheet, i))
        return (f'<div class="drills drills-{kind}" role="region" aria-label="{html.escape(label)}">{toolbar}'
                f'<script type="application/json" class="drills-data">{embed_json(items)}</script>'
                f'{"".join(body)}</div>')


def _item_html(item: dict, uid: str, sheet: bool, index: int) -> str:
    q = item["bank"][0]
    unit = f" ({html.escape(q['unit'])})" if q["unit"] else ""
    steps = "".join(f"<li>{_inline(s)}</li>" for s in q["steps"])
    next_button = '<button type="button" class="drill-next">Another one</button>'
    return (f'<div class="drill" data-index="{index}">'
            f'<h3 class="drill-title">{html.escape(item["title"])}</h3>'
            f'<p class="drill-prompt" id="{uid}-q">{_inline(q["prompt"])}</p>'
            f'<form class="drill-form" autocomplete="off">'
            f'<label for="{uid}-a">Your answer{unit}</label> '
            f'<input id="{uid}-a" class="drill-input" type="text" inputmode="decimal" spellcheck="false" '
            f'aria-describedby="{uid}-q"> '
            f'<button type="submit" class="drill-check">Check</button> '
            f'{"" if sheet else next_button}</form>'
            f'<div class="drill-result" role="status" aria-live="polite"></div>'
            f'<details class="drill-key"><summary>Answer and worked solution</summary>'
            f'<p>{html.escape(q["answer_text"])} {html.escape(q["unit"])}</p><ol>{steps}</ol></details></div>')


def show(chapter: str, n: int = 30) -> Drills:
    """The drills of ``chapter`` for its page's last cell: every generator, a bank of ``n`` draws each."""
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}: use one of {', '.join(CHAPTERS)}")
    if not generators(chapter):
        raise LookupError(f"chapter {chapter!r} has no drills yet: write its generators in "
                          f"lib/drills/{chapter}.py (see lib/drills/_core.py for what one returns)")
    return Drills((chapter,), n=n)


def sheet(n: int = 10) -> Drills:
    """The interview sheet: one question of every generator of every chapter, timed and scored."""
    missing = [c for c in CHAPTERS if not generators(c)]
    if missing:
        raise LookupError(f"no drills yet for {', '.join(missing)}: write them in "
                          + ", ".join(f"lib/drills/{c}.py" for c in missing))
    return Drills(CHAPTERS, n=n, sheet=True)


__all__ = ["Drills", "embed_json", "format_number", "sheet", "show"]
