"""What the chapters need from the book machinery, and nothing when it is missing (Colab, a plain Jupyter).

    from lib.book import glue
    glue("resnet56_error", 0.0123)        # in the chapter's markdown: {glue:text}`resnet56_error:.1%`

``glue`` is MyST-NB's: it stores a value in the executed notebook so that the page's prose quotes the number
this build computed. Where MyST-NB is not installed, it does nothing (the value is still printed where the
chapter prints it).
"""
from __future__ import annotations

from typing import Any


def plain(value: Any) -> Any:
    """A NumPy or 0-d torch scalar as the Python number it holds (MyST-NB formats ``{glue:text}`x:.1%``` from
    the value's ``repr``, and ``np.float64(0.5)`` is not a number to it); anything else unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return item()
    return value


def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue(name, plain(value), display=display)``, or nothing without MyST-NB."""
    value = plain(value)
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - Colab and other places without the book's tools
        return
    _glue(name, value, display=display)
