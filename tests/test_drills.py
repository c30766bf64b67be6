"""Every drill's answer key against what torch measures on a real module, over many draws.

A generator's ``Question.answer`` is computed by ``lib`` or by the formula its worked solution shows;
``Question.measure`` builds the module the question describes and measures it (output shape, ``numel``,
``FlopCounterMode``, the empirical receptive field). A wrong key, or a worked solution that does not end at the
key, fails here before a reader sees it.
"""
from __future__ import annotations

import math
import random
import re

import pytest

from lib import drills

DRAWS = 25
ALL = [g for c in drills.CHAPTERS for g in drills.generators(c)]


def _close(q: drills.Question, measured: float) -> bool:
    if q.rel_tol == 0:
        return float(measured) == float(q.answer)
    return math.isclose(float(measured), float(q.answer), rel_tol=q.rel_tol)


@pytest.mark.parametrize("chapter", drills.CHAPTERS)
def test_every_chapter_has_ten_generators(chapter):
    assert len(drills.generators(chapter)) >= 10, (
        f"{chapter} has {len(drills.generators(chapter))} drills; write at least 10 in lib/drills/{chapter}.py")


@pytest.mark.parametrize("gen", ALL, ids=lambda g: f"{g.chapter}/{g.name}")
def test_answers_equal_what_torch_measures(gen):
    rng = random.Random(2026)
    prompts = set()
    for _ in range(DRAWS):
        q = gen(rng)
        prompts.add(q.prompt)
        measured = q.measure()
        assert _close(q, measured), f"{gen.chapter}/{gen.name}: key {q.answer}, torch measures {measured}\n{q.prompt}"
        assert q.accepts(q.answer) and q.steps, q
    assert len(prompts) >= DRAWS // 3, f"{gen.name} drew only {len(prompts)} different questions in {DRAWS}"


@pytest.mark.parametrize("gen", ALL, ids=lambda g: f"{g.chapter}/{g.name}")
def test_a_bank_is_reproducible_and_varied(gen):
    a, b = drills.bank(gen, n=10, seed=1), drills.bank(gen, n=10, seed=1)
    assert [q.prompt for q in a] == [q.prompt for q in b]
    assert len(a) >= 5


def _numbers(text: str) -> list[float]:
    """The numbers written in ``text``: 1,234,567 and 1 234 567 and 3.5e6 and 12.5% alike."""
    found = re.findall(r"\d[\d,\u202f\u2009 ]*(?:\.\d+)?(?:e[+-]?\d+)?", text.replace("−", "-"))
    return [float(re.sub(r"[,\u202f\u2009 ]", "", n)) for n in found if re.sub(r"[,\u202f\u2009 ]", "", n)]


@pytest.mark.parametrize("gen", ALL, ids=lambda g: f"{g.chapter}/{g.name}")
def test_the_worked_solution_ends_at_the_key(gen):
    """2 to 4 steps that end at the answer (rounded as the prompt asks: within the tolerance), in the last step or in
    the one before a closing line that says what the number means."""
    rng = random.Random(7)
    for _ in range(10):
        q = gen(rng)
        assert 2 <= len(q.steps) <= 4, q.steps
        assert any(q.accepts(n) for step in q.steps[-2:] for n in _numbers(step)), (q.answer, q.steps[-2:])
