"""Model families, one file each; shared blocks live in ``blocks.py``."""
from __future__ import annotations

from lib.models.simple import SimpleCNN, simple_cnn

__all__ = ["SimpleCNN", "simple_cnn"]
