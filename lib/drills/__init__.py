"""Interview drills: question generators per chapter whose answers ``lib`` computes and torch checks.

``lib.drills.generators("convolution")`` lists a chapter's generators; ``bank`` draws variants of one. Each
chapter's generators live in ``lib/drills/<chapter>.py`` and are loaded here, so that importing the package
registers all of them. ``show(chapter)`` is a chapter's practice cell and ``sheet()`` the interview sheet
(``lib/drills/_widget.py``). See ``lib/drills/_core.py`` for what a generator returns.
"""
from __future__ import annotations

import importlib
import pkgutil

from lib.drills._core import CHAPTERS, REGISTRY, Generator, Question, bank, drill, generators
from lib.drills._widget import sheet, show

__all__ = ["CHAPTERS", "REGISTRY", "Generator", "Question", "bank", "drill", "generators", "sheet", "show"]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
