"""What a drill is: a generator that draws new numbers and returns a question, its answer, the worked solution
and a way for torch to measure the answer on a real module.

A generator is a function of a ``random.Random`` registered with :func:`drill` under its chapter::

    @drill("convolution", "Output size of a convolution")
    def output_size(rng: random.Random) -> Question:
        n, k, s, p = rng.randint(8, 64), rng.choice([1, 3, 5]), rng.choice([1, 2]), rng.randint(0, 2)
        out = (n + 2 * p - k) // s + 1
        return Question(
            prompt=f"A {k}x{k} convolution, stride {s}, padding {p}, on a {n}x{n} input: output height?",
            answer=out,
            steps=("out = floor((n + 2p - k) / s) + 1", f"= floor(({n} + 2*{p} - {k}) / {s}) + 1 = {out}"),
            measure=lambda: nn.Conv2d(1, 1, k, s, p, device="meta")(torch.empty(1, 1, n, n, device="meta")).shape[-1],
        )

The answer is computed by ``lib`` (or the formula in the steps); ``measure`` is what torch says on a real
module (an output's shape, ``numel`` of the parameters, ``FlopCounterMode``, the empirical receptive field).
``tests/test_drills.py`` holds every generator's answers against ``measure`` over many draws, so a wrong answer
key fails the tests before it reaches a reader. The book shows a bank of draws per generator
(:func:`bank`), computed when the page is built.
"""
from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

CHAPTERS = ("convolution", "pooling", "vgg", "resnet", "efficientnet", "vit", "architectures", "transfer")


@dataclass(frozen=True)
class Question:
    prompt: str                      # Markdown, with the drawn numbers in
    answer: float                    # the key, computed by lib or by the formula of the steps
    steps: tuple[str, ...]           # the worked solution: the formula, then the formula with the numbers in
    measure: Callable[[], float] = field(compare=False, repr=False)  # torch's figure on a real module
    unit: str = ""                   # "parameters", "MACs", "pixels", ...
    rel_tol: float = 0.0             # 0: the answer must be exact (integers); else a relative tolerance

    def accepts(self, value: float) -> bool:
        """Whether a typed ``value`` is right."""
        if self.rel_tol == 0:
            return float(value) == float(self.answer)
        return abs(float(value) - float(self.answer)) <= self.rel_tol * abs(float(self.answer))

    def as_dict(self) -> dict:
        """The plain data a page shows (``measure`` stays in Python)."""
        return {"prompt": self.prompt, "answer": self.answer, "steps": list(self.steps), "unit": self.unit,
                "rel_tol": self.rel_tol}


@dataclass(frozen=True)
class Generator:
    chapter: str
    name: str                        # the function's name, unique in its chapter
    title: str                       # what it drills, shown above the question
    make: Callable[[random.Random], Question]

    def __call__(self, rng: random.Random) -> Question:
        return self.make(rng)


REGISTRY: dict[str, dict[str, Generator]] = {c: {} for c in CHAPTERS}


def drill(chapter: str, title: str) -> Callable[[Callable[[random.Random], Question]], Generator]:
    """Register a generator under ``chapter`` (one of :data:`CHAPTERS`)."""
    if chapter not in REGISTRY:
        raise ValueError(f"unknown chapter {chapter!r}: use one of {', '.join(CHAPTERS)}")

    def register(make: Callable[[random.Random], Question]) -> Generator:
        gen = Generator(chapter, make.__name__, title, make)
        if gen.name in REGISTRY[chapter]:
            raise ValueError(f"two drills named {gen.name!r} in chapter {chapter!r}")
        REGISTRY[chapter][gen.name] = gen
        return gen
    return register


def generators(chapter: str) -> list[Generator]:
    """The chapter's generators, in the order they were defined."""
    return list(REGISTRY[chapter].values())


def bank(gen: Generator, n: int = 30, seed: int = 0, tries: int = 20) -> list[Question]:
    """Up to ``n`` different draws of ``gen`` (different prompts), reproducible from ``seed``."""
    rng = random.Random(seed * 1_000_003 + zlib.crc32(f"{gen.chapter}/{gen.name}".encode()))
    drawn: dict[str, Question] = {}
    for _ in range(n * tries):
        q = gen(rng)
        drawn.setdefault(q.prompt, q)
        if len(drawn) == n:
            break
    return list(drawn.values())
