"""Numbers in a chapter's prose come from the code: a measured number typed into a markdown cell goes stale when
the measurement changes, so the chapters quote them with MyST-NB's glue (``{glue:text}`name:.1%` ``).

The test reads every markdown cell of book/*.ipynb, removes code spans, math, glue roles and link targets, and
flags what reads like a measurement: a percentage, a time, a speed, a ratio with decimals, an amount of compute
or memory. A line that cites its source (``{ref}``, ``et al.``, a paper's table) may quote published numbers.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))

_STRIP = [
    re.compile(r"\{glue(?::\w+)?\}`[^`]*`"),   # glue roles
    re.compile(r"\{[a-z]+\}`[^`]*`"),          # other roles: {term}`...`, {doc}`...`, {ref}`...`
    re.compile(r"``[^`]*``|`[^`]*`"),          # code spans
    re.compile(r"\$\$.*?\$\$", re.S),          # display math
    re.compile(r"\$[^$\n]*\$"),                # inline math
    re.compile(r"\]\([^)]*\)"),                # link targets
    re.compile(r"<!--.*?-->", re.S),           # comments
    re.compile(r"\b95% (?:interval|confidence)"),  # the interval's level, not a measurement
    re.compile(r"\btop-[15]\b"),                  # top-1 / top-5 accuracy
]
_CITED = re.compile(r"\{ref\}|\{cite|et al\.|Table \d|Fig\. ?\d|paper|torchvision's (?:weight|metadata)|published", re.I)
_MEASURED = re.compile(
    r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s?"
    r"(?:%|\s?(?:s|sec|seconds?|min|minutes?|hours?|ms)\b|\s?images?/s\b|\s?(?:G|M)MACs?\b|\s?(?:MB|GB|MiB|GiB)\b"
    r"|\s?points?\b|\s?pt\b)"
    r"|(?<![\w.])\d+\.\d+\s?[×x](?!\d)"        # a ratio with decimals: 10.6×
)


def typed_numbers(markdown: str) -> list[str]:
    """The lines of ``markdown`` that hold a typed measured number (what they hold, after stripping)."""
    text = markdown
    for pattern in _STRIP:
        text = pattern.sub(" ", text)
    found = []
    for line in text.splitlines():
        if _CITED.search(line):
            continue
        hits = [m.group(0).strip() for m in _MEASURED.finditer(line)]
        if hits:
            found.append(f"{', '.join(hits)}  in: {line.strip()[:100]}")
    return found


def test_the_detector_finds_typed_measurements_and_passes_glued_ones():
    assert typed_numbers("ResNet-56 reached 88.5% after 13.5 min (135 images/s), 10.6× fewer MACs")
    assert typed_numbers("it costs 1.2 GMACs")
    assert not typed_numbers("ResNet-56 reached {glue:text}`acc:.1%` after {glue:text}`minutes:.1f` minutes")
    assert not typed_numbers("two 3×3 convolutions, stride 2, 64 channels, `lr=3e-3`, $k \\times k$ and 5 epochs")
    assert not typed_numbers("He et al. report 6.43% error on CIFAR-10 (Table 6)")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_no_measured_number_is_typed_into_the_prose(chapter):
    offenders = []
    for i, cell in enumerate(json.loads(chapter.read_text())["cells"]):
        if cell["cell_type"] == "markdown":
            offenders += [f"cell {i}: {hit}" for hit in typed_numbers("".join(cell["source"]))]
    assert not offenders, f"{chapter.name}: measured numbers typed into markdown (glue them):\n" + "\n".join(offenders)
