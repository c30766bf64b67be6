"""What the chapters need from the book machinery, and nothing when it is missing (Colab, a plain Jupyter).

    from lib.book import glue
    glue("resnet56_error", 0.0123)        # in the chapter's markdown: {glue:text}`resnet56_error:.1%`

``glue`` is MyST-NB's: it stores a value in the executed notebook so that the page's prose quotes the number
this build computed. Where MyST-NB is not installed, it does nothing (the value is still printed where the
chapter prints it).
"""
from __future__ import annotations

from typing import Any


def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue(name, value, display=display)``, or nothing without MyST-NB."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - Colab and other places without the book's tools
        return
    _glue(name, value, display=display)
