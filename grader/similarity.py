"""`make similarity ASSIGNMENT=a`: which submissions share code, compared pairwise on this machine.

The code of every student's solution cells is fingerprinted with copydetect (winnowing over tokens: renamed
variables and reordered functions do not hide a copy), with the student version's code as boilerplate, so the
scaffolding every submission starts from does not count. The report (grades/similarity-<a>.html, no script and
nothing fetched from the network) ranks the pairs by their shared share of code and shows both sides with the
shared code highlighted. A high score is a reason to read the pair, not a verdict: short answers to the same
task look alike.
"""
from __future__ import annotations

import html
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

# A pair at or above it is flagged. Measured on mixed_pooling (tests/test_similarity.py): a copy with renamed
# variables and reordered classes shares 100%; two answers written apart share 11-49% with each other and with
# the reference (the task dictates the same library calls), so 60% leaves a margin on both sides.
THRESHOLD = 0.6


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    score: float        # the larger of the two sides' shares of shared fingerprints
    a_html: str         # a's code, shared parts highlighted
    b_html: str


def solution_code(notebook: Path) -> str:
    """The code of a notebook's solution cells, in order (what the student wrote, plus the given scaffolding)."""
    try:
        cells = json.loads(notebook.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return ""
    return "\n\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code"
                       and c.get("metadata", {}).get("nbgrader", {}).get("solution"))


def compare(codes: dict[str, str], boilerplate: str) -> list[Pair]:
    """Every pair of ``codes`` (student -> code) that shares code beyond ``boilerplate``, most similar first."""
    from copydetect import CopyDetector

    with tempfile.TemporaryDirectory(prefix="similarity-") as tmp:
        students, template = Path(tmp) / "students", Path(tmp) / "template"
        students.mkdir()
        template.mkdir()
        (template / "template.py").write_text(boilerplate)
        for student, code in codes.items():
            (students / f"{student}.py").write_text(code)
        detector = CopyDetector(test_dirs=[str(students)], ref_dirs=[str(students)],
                                boilerplate_dirs=[str(template)], extensions=["py"], display_t=0.0,
                                autoopen=False, silent=True, out_file=str(Path(tmp) / "unused.html"))
        detector.run()
        found = detector.get_copied_code_list() if len(detector.test_files) > 1 else []
    pairs = [Pair(Path(a).stem, Path(b).stem, float(max(sa, sb)), ha, hb) for sa, sb, a, b, ha, hb, _ in found]
    return sorted(pairs, key=lambda p: -p.score)


def _report(assignment: str, pairs: list[Pair], count: int) -> str:
    rows = "".join(f"<tr{' class=flagged' if p.score >= THRESHOLD else ''}><td>{i}</td><td><a href='#p{i}'>"
                   f"{html.escape(p.a)} / {html.escape(p.b)}</a></td><td>{p.score:.0%}</td></tr>"
                   for i, p in enumerate(pairs, 1))
    details = "".join(f"<h2 id='p{i}'>{i}. {html.escape(p.a)} / {html.escape(p.b)}: {p.score:.0%}</h2>"
                      f"<div class=pair><pre>{p.a_html}</pre><pre>{p.b_html}</pre></div>"
                      for i, p in enumerate(pairs, 1))
    style = ("body{font-family:sans-serif;margin:1em}"
             "pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;padding:.5em;font-size:12px}"
             ".pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}"
             ".highlight-red{background:#fbb}.highlight-green{background:#bfb}tr.flagged td{font-weight:bold}"
             "td{padding:.2em .8em}")
    return (f"<!DOCTYPE html><html><head><meta charset=utf-8><title>Similarity: {html.escape(assignment)}</title>"
            f"<style>{style}</style></head><body><h1>Shared code in {html.escape(assignment)}</h1>"
            f"<p>{count} submissions compared pairwise on this machine (copydetect; the student version's code is "
            f"boilerplate). Pairs at or above {THRESHOLD:.0%} are in bold: read them; a score is not a verdict.</p>"
            f"<table><tr><th>#</th><th>pair</th><th>shared</th></tr>{rows}</table>{details}</body></html>")


def similarity(root: Path, assignment: str, out: Path | None = None) -> int:
    """Compare the submissions of ``assignment`` in submitted/ and write the report; print the flagged pairs."""
    notebooks = sorted((root / "submitted").glob(f"*/{assignment}/{assignment}.ipynb"))
    codes = {nb.parent.parent.name: solution_code(nb) for nb in notebooks}
    if len(codes) < 2:
        print(f"similarity: {len(codes)} submission(s) of {assignment} in submitted/: nothing to compare")
        return 0
    pairs = compare(codes, solution_code(root / "exercises" / assignment / f"{assignment}.ipynb"))
    target = out or root / "grades" / f"similarity-{assignment}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_report(assignment, pairs, len(codes)))
    flagged = [p for p in pairs if p.score >= THRESHOLD]
    for p in flagged:
        print(f"  {p.a} / {p.b}: {p.score:.0%} of the code shared")
    print(f"{len(flagged)} of {len(pairs)} pairs at or above {THRESHOLD:.0%}; the report: {target}")
    return 0
