"""The drills in the built book, in Chromium (tests/test_browser.py's setting: the book served on loopback, every
other request aborted and recorded). On every chapter page whose last cell is `drills.show(...)`: each drill
accepts its key typed with separators and says "Right", shows the worked solution (every step) on a wrong answer,
and "Another one" changes the question; the whole round works from the keyboard alone. The interview sheet holds
one question per generator of every chapter, and its score and timer count. The keys come from the page's own
bank, which tests/test_drills_widget.py holds against `lib` and tests/test_drills.py against torch."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from browser_helpers import DESKTOP, SETTLE, is_loopback, serve, source_of, toc_entries
from lib import drills

pytestmark = [pytest.mark.browser, pytest.mark.book]



def _code(entry: str) -> str:
    """The code a page runs: a notebook's code cells, or a MyST page's {code-cell} blocks (not its prose)."""
    path = source_of(entry)
    if path.suffix == ".ipynb":
        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                         if c["cell_type"] == "code")
    return "\n".join(re.findall(r"^```\{code-cell\}.*?^```", path.read_text(), re.DOTALL | re.MULTILINE))


DRILL_PAGES = [e for e in toc_entries() if "drills.show(" in _code(e)]
SHEET_PAGES = [e for e in toc_entries() if "drills.sheet(" in _code(e)]


@pytest.fixture(scope="module")
def site(browser, built_book):
    with serve(built_book) as server:
        yield server


@pytest.fixture
def open_drills(browser, site):
    """open_drills(entry) -> page, with its drills set up; fails the test on any request off loopback."""
    contexts, off_loopback = [], []

    def route(r):
        if is_loopback(r.request.url):
            r.continue_()
        else:
            off_loopback.append(r.request.url)
            r.abort("internetdisconnected")

    def get(entry: str, **context_args):
        context = browser.new_context(viewport=DESKTOP, service_workers="block", **context_args)
        context.route("**/*", route)
        contexts.append(context)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(site.url(entry), wait_until="load", timeout=60000)
        page.evaluate(SETTLE)
        page.wait_for_selector("div.drills.drills-ready", timeout=30000)
        assert not errors, f"{entry}: JavaScript errors: {errors}"
        return page
    yield get
    for context in contexts:
        context.close()
    assert not off_loopback, f"the drills' page asked the network for {off_loopback}"


CURRENT = """(el) => {  // the draw a drill shows: its bank entry whose prompt is the one on screen
  const items = JSON.parse(el.closest('.drills').querySelector('.drills-data').textContent);
  const item = items[Number(el.dataset.index)];
  const shown = el.querySelector('.drill-prompt').textContent;
  return item.bank.find(q => q.prompt.replaceAll('`', '') === shown);
}"""


def _wrong(q: dict) -> str:
    return str(q["answer"] * 2 + 7)  # never within a relative tolerance below 1


def _current(drill) -> dict:
    q = drill.evaluate(CURRENT)
    assert q is not None, "the prompt on screen is in no draw of the bank"
    return q


@pytest.mark.parametrize("entry", DRILL_PAGES)
def test_every_drill_accepts_its_key_explains_a_wrong_answer_and_draws_another(open_drills, built_book, entry):
    page = open_drills(entry)
    items = page.locator("div.drills")
    assert items.count() == 1
    chapter = entry.split("/")[-1]
    cards = page.locator("div.drills .drill")
    assert cards.count() == len(drills.generators(chapter)) >= 1, f"{entry}: not one drill per generator"
    for i in range(cards.count()):
        card = cards.nth(i)
        card.scroll_into_view_if_needed()
        q = _current(card)
        result = card.locator(".drill-result")
        assert result.get_attribute("aria-live") == "polite"
        assert card.locator(".drill-key").is_hidden(), "the answer shows before the reader has tried"

        card.locator(".drill-input").fill(q["answer_text"])  # the key as the page writes it: 1,234,567
        card.locator(".drill-check").click()
        expected = f"Right: {q['answer_text']} {q['unit']}".strip()
        assert result.inner_text().strip() == expected, f"{entry} drill {i}: {q['prompt']!r}"
        if i == 0:
            _shot(card, built_book, "drills-right.png")

        card.locator(".drill-input").fill(_wrong(q))
        card.locator(".drill-input").press("Enter")
        assert result.inner_text().startswith("Not quite"), f"{entry} drill {i}: {result.inner_text()!r}"
        steps = result.locator("ol li")
        assert steps.count() == len(q["steps"])
        for k, step in enumerate(q["steps"]):
            assert steps.nth(k).is_visible() and steps.nth(k).inner_text() == step.replace("`", "")
        assert f"Answer: {q['answer_text']}" in result.inner_text()
        if i == 0:
            _shot(card, built_book, "drills-wrong.png")

        before = card.locator(".drill-prompt").inner_text()
        card.locator(".drill-next").click()
        assert card.locator(".drill-prompt").inner_text() != before, f"{entry} drill {i}: the same question again"
        assert result.inner_text() == "" and card.locator(".drill-input").input_value() == ""
        _current(card)


@pytest.mark.parametrize("entry", DRILL_PAGES[:1] + DRILL_PAGES[-1:])
def test_a_drill_works_from_the_keyboard_alone(open_drills, entry):
    page = open_drills(entry)
    card = page.locator("div.drills .drill").first
    card.scroll_into_view_if_needed()
    page.evaluate("""() => {  // start from the heading above the drills, as a reader tabbing down the page would
      const h = document.querySelector('#practice-drills h2'); h.tabIndex = -1; h.focus(); }""")
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('drill-input')"):
            break
    active = page.evaluate("[document.activeElement.id, document.activeElement.labels[0].textContent]")
    assert active[0] == card.locator(".drill-input").get_attribute("id"), "Tab does not reach the first answer box"
    assert active[1].startswith("Your answer")
    q = _current(card)
    page.keyboard.type(q["answer_text"])
    page.keyboard.press("Enter")
    assert card.locator(".drill-result").inner_text().startswith("Right:")
    page.keyboard.press("Tab")   # Check
    page.keyboard.press("Tab")   # Another one
    assert page.evaluate("document.activeElement.textContent") == "Another one"
    before = card.locator(".drill-prompt").inner_text()
    page.keyboard.press("Enter")
    assert card.locator(".drill-prompt").inner_text() != before
    assert page.evaluate("document.activeElement.classList.contains('drill-input')"), "focus is not back in the box"


@pytest.mark.parametrize("entry", DRILL_PAGES[:1])
def test_drills_read_in_dark_mode(open_drills, entry):
    """axe-core on the drills alone in the dark theme, after a right and a wrong answer: no serious finding."""
    axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")
    page = open_drills(entry, color_scheme="dark")
    page.evaluate("document.documentElement.dataset.theme = 'dark'")
    cards = page.locator("div.drills .drill")
    for i, answer in ((0, _current(cards.nth(0))["answer_text"]), (1, _wrong(_current(cards.nth(1))))):
        cards.nth(i).locator(".drill-input").fill(answer)
        cards.nth(i).locator(".drill-input").press("Enter")
    found = axe_module.Axe().run(page, context="div.drills").response["violations"]
    bad = [f"{v['id']} ({v['impact']}): {v['help']}" for v in found if v["impact"] in ("serious", "critical")]
    assert not bad, bad


@pytest.mark.parametrize("entry", SHEET_PAGES)
def test_the_interview_sheet_asks_one_question_per_generator_and_keeps_score(open_drills, built_book, entry):
    page = open_drills(entry)
    cards = page.locator("div.drills-sheet .drill")
    everything = [(g.chapter, g.title) for c in drills.CHAPTERS for g in drills.generators(c)]
    assert cards.count() == len(everything)
    assert [cards.nth(i).locator(".drill-title").inner_text() for i in range(cards.count())] == \
        [title for _, title in everything]
    assert page.locator(".drill-next").count() == 0
    n = len(everything)
    score, timer = page.locator(".drills-score"), page.locator(".drills-timer")
    assert score.inner_text() == f"0 of {n} right" and timer.inner_text() == "0:00"

    for i, right in ((0, True), (1, False), (2, True)):
        q = _current(cards.nth(i))
        cards.nth(i).locator(".drill-input").fill(q["answer_text"] if right else _wrong(q))
        cards.nth(i).locator(".drill-input").press("Enter")
    assert score.inner_text() == f"2 of {n} right"
    page.wait_for_timeout(2100)
    assert timer.inner_text() not in ("0:00", "0:01"), "the clock did not start with the first answer"
    _shot(page.locator("div.drills-sheet .drill").nth(1), built_book, "drills-sheet-wrong.png")

    prompts = [cards.nth(i).locator(".drill-prompt").inner_text() for i in range(n)]
    page.locator(".drills-start").click()  # now "New sheet"
    assert score.inner_text() == f"0 of {n} right"
    assert [cards.nth(i).locator(".drill-prompt").inner_text() for i in range(n)] != prompts


def _shot(locator, built_book: Path, name: str) -> None:
    folder = built_book.parent / "screenshots" / "drills"
    folder.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=str(folder / name))
