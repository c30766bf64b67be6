"""An exercise's text asks only for what the student version has: a name it tells students to print or read is
defined by the code they are given (the reflection once asked to print `learned_alphas`, defined only in the
solution)."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = sorted((ROOT / "exercises").glob("*/*.ipynb"))


def _given_names(cells: list[dict]) -> set[str]:
    names = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:
            continue
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        names |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return names


@pytest.mark.parametrize("path", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_names_the_text_asks_for_are_given(path):
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    asked = set(re.findall(r"\b(?:print|inspect|show)\s+`([A-Za-z_]\w*)`", text))
    missing = asked - _given_names(cells)
    assert not missing, f"{path.name} asks students to print {sorted(missing)}, which its code never defines"
