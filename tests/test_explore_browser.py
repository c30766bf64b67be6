"""The book's explorables in Chromium (lib/explore.py, book/_static/explorable.js): change a control, read the values
the page shows, compare them with lib's for a sample of settings; with the keyboard alone; plotly.js from the book's
own _static, once, and no request beyond loopback; the figure on its own white ground under the dark theme.
Screenshots: _build/screenshots/explore-conv.png and explore-rf-resnet50.png."""
from __future__ import annotations

import random

import pytest
from browser_helpers import DESKTOP, is_loopback, serve

from lib import explore

pytestmark = [pytest.mark.browser, pytest.mark.book]
N = 28


@pytest.fixture(scope="module")
def site(browser, built_book):
    with serve(built_book) as server:
        yield server


@pytest.fixture
def open_explorable(browser, site):
    """open_explorable(entry, ident, **context args) -> (page, root, blocked requests); the explorable drawn."""
    contexts = []

    def get(entry: str, ident: str, **context_args):
        blocked: list[str] = []
        context = browser.new_context(viewport=DESKTOP, service_workers="block", **context_args)
        contexts.append(context)

        def route(r):
            if is_loopback(r.request.url):
                r.continue_()
            else:
                blocked.append(r.request.url)
                r.abort("internetdisconnected")
        context.route("**/*", route)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site.url(entry), wait_until="load", timeout=60000)
        root = page.locator(f"#{ident}")
        page.wait_for_selector(f'#{ident}[data-ready="true"]', timeout=30000)
        assert not errors, f"{entry}: JavaScript errors: {errors}"
        return page, root, blocked
    yield get
    for c in contexts:
        c.close()


def _set(root, control: str, value) -> None:
    el = root.locator(f'[data-control="{control}"]')
    if el.evaluate("e => e.tagName") == "SELECT":
        el.select_option(str(value))
    else:
        el.evaluate("(e, v) => { e.value = v; e.dispatchEvent(new Event('input', {bubbles: true})); }", str(value))


def _shown(root, name: str) -> str:
    return root.locator(f'.explorable-text [data-value="{name}"]').inner_text()


@pytest.mark.parametrize("entry,ident,pool", [("book/convolution", "explore-conv", False),
                                              ("book/pooling", "explore-pool", True)])
def test_the_page_shows_libs_output_size_and_window(open_explorable, screenshots_dir, entry, ident, pool):
    page, root, blocked = open_explorable(entry, ident)
    ranges = explore.POOL if pool else explore.CONV
    rng = random.Random(0)
    for _ in range(8):
        setting = {name: rng.choice(values) for name, values in ranges.items()}
        if pool and setting["padding"] > setting["kernel"] // 2:
            setting["padding"] = 0
        size, taps = explore.window(N, **setting, pool=pool)
        row, col = rng.randrange(size), rng.randrange(size)
        for name, value in setting.items():
            _set(root, name, value)
        _set(root, "row", row)
        _set(root, "col", col)
        said = f"{setting}, unit ({row}, {col})"
        assert int(_shown(root, "out")) == size, said
        assert (int(_shown(root, "row")), int(_shown(root, "col"))) == (row, col), said
        assert _shown(root, "rows") == f"{taps[row][0]} to {taps[row][-1]}", said
        assert _shown(root, "cols") == f"{taps[col][0]} to {taps[col][-1]}", said
        assert int(_shown(root, "taps")) == len(taps[row]) * len(taps[col]), said
    if pool:  # a setting torch refuses: the page says so
        _set(root, "kernel", 2)
        _set(root, "padding", 2)
        assert "Not allowed" in root.locator(".explorable-text").inner_text()
    else:
        for name, value in explore.CONV_FIRST.items():
            _set(root, name, value)
        root.scroll_into_view_if_needed()
        root.screenshot(path=str(screenshots_dir / "explore-conv.png"))
    assert not blocked, f"{entry}: requests beyond loopback: {blocked}"
    scripts = page.evaluate("() => [...document.scripts].map(s => s.src).filter(s => /plotly/.test(s))")
    assert len(scripts) == 1 and "/_static/plotly.min.js" in scripts[0], scripts


def test_the_receptive_field_explorer_shows_libs_fields(open_explorable, screenshots_dir):
    """For a sample of models, stages and units: the field and jump lib.explain gives, and the rows and columns of
    the measured field (the theoretical square cut by the image, which tests/test_explore.py holds against
    lib.analysis's measurement)."""
    page, root, blocked = open_explorable("book/resnet", "explore-rf")
    rng = random.Random(0)
    samples = [("resnet50", 4, 0)] + [(m, rng.randrange(5), rng.randrange(3)) for m in explore.RF_MODELS for _ in "ab"]
    for name, stage_index, unit_index in samples:
        label, stages = explore.stage_fields(name)
        stage = stages[stage_index]
        unit = explore._units(stage["map"])[unit_index][1]
        _set(root, "model", name)
        _set(root, "stage", stage_index)
        _set(root, "unit", unit_index)
        said = f"{name} {stage['layer']} unit {unit}"
        assert _shown(root, "model") == label and _shown(root, "stage") == stage["label"], said
        assert _shown(root, "unit") == f"({unit[0]}, {unit[1]})", said
        assert (float(_shown(root, "field")), float(_shown(root, "jump"))) == (stage["field"], stage["jump"]), said
        t = explore.theory_box(stage, unit)
        top, left, bottom, right = max(0, t[0]), max(0, t[1]), min(223, t[2]), min(223, t[3])
        assert _shown(root, "rows") == f"{top:.0f} to {bottom:.0f}", said
        assert _shown(root, "cols") == f"{left:.0f} to {right:.0f}", said
    _set(root, "model", "resnet50")
    _set(root, "stage", 4)
    _set(root, "unit", 0)
    root.scroll_into_view_if_needed()
    root.screenshot(path=str(screenshots_dir / "explore-rf-resnet50.png"))
    assert not blocked, f"requests beyond loopback: {blocked}"


@pytest.mark.parametrize("entry,ident", [("book/convolution", "explore-conv"), ("book/resnet", "explore-rf")])
def test_the_keyboard_changes_it_and_the_sentence_follows(open_explorable, entry, ident):
    """Tab reaches the first control from the one before it, an arrow key changes it, and the sentence (aria-live)
    says the new values; the figure has a text alternative."""
    page, root, _ = open_explorable(entry, ident)
    assert root.locator(".explorable-text").get_attribute("aria-live") == "polite"
    assert len((root.locator(".explorable-plot").get_attribute("aria-label") or "").split()) > 10
    first = root.locator("[data-control]").first
    before = root.locator(".explorable-text").inner_text()
    for _ in range(200):
        page.keyboard.press("Tab")
        if first.evaluate("e => e === document.activeElement"):
            break
    else:
        pytest.fail(f"{entry}: 200 presses of Tab never reached the explorable's first control")
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(200)
    after = root.locator(".explorable-text").inner_text()
    assert after != before, f"{entry}: the arrow key changed nothing ({before!r})"


def test_the_figure_keeps_its_white_ground_in_dark_mode(open_explorable):
    page, root, _ = open_explorable("book/convolution", "explore-conv", color_scheme="dark")
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    ground = root.locator(".explorable-plot .main-svg").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert ground in ("rgb(255, 255, 255)", "rgba(255, 255, 255, 1)"), ground


@pytest.fixture(scope="module")
def screenshots_dir(built_book):
    folder = built_book.parent / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
