"""`make feedback`: the graded notebooks as HTML pages for the students, saying only what is known.

An assignment with nothing graded yet is skipped, and said so (it is not an error). A written answer that waits
for its hand grade shows as "not graded yet", and the page's total says it is provisional; the command lists
those submissions. Math renders from MathJax beside the pages (``feedback/<student>/mathjax/``, the book's
bundled copy): no network, no inline script, so a Content-Security-Policy of ``script-src 'self'`` holds.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from nbgrader.preprocessors import GetGrades

from grader.grades import is_pending

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
MATHJAX = Path("book") / "_static" / "mathjax" / "tex-svg-full.js"  # the book's copy (scripts/fetch-mathjax.sh)
# MathJax 3 reads its settings from window.MathJax before it loads: $...$ as inline math, as in the notebooks.
MATHJAX_CONFIG = ('window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], processEscapes: true},'
                  ' svg: {fontCache: "global"}};\n')


class GetGradesPending(GetGrades):
    """nbgrader's GetGrades, which also marks the answers that wait for a hand grade (``nbgrader.pending``) and
    sums their points (``resources['nbgrader']['pending_points']``), so the page does not show them as 0."""

    def _get_score(self, cell, resources) -> None:
        super()._get_score(cell, resources)
        grade = self.gradebook.find_grade(cell.metadata["nbgrader"]["grade_id"], self.notebook_id,
                                          self.assignment_id, self.student_id)
        cell.metadata.nbgrader["pending"] = is_pending(grade)
        if is_pending(grade):
            pending = resources["nbgrader"].get("pending_points", 0.0)
            resources["nbgrader"]["pending_points"] = pending + float(grade.max_score)


def template_settings() -> dict:
    """HTML exporter settings for `make feedback` only: nbgrader's template folder ``feedback``, entered through
    the course's file in it (grader/templates/feedback/course_feedback.html.j2, which extends nbgrader's page).
    Not in nbgrader_config.py: the Formgrader's exporter reads the same settings with a template of its own."""
    import nbgrader

    nbgrader_templates = Path(nbgrader.__file__).parent / "server_extensions" / "formgrader" / "templates"
    return {"HTMLExporter": {"template_file": "course_feedback.html.j2",
                             "extra_template_basedirs": [str(TEMPLATES), str(nbgrader_templates)]}}


def bundle_mathjax(root: Path) -> None:
    """Put MathJax into every student's feedback folder (hard links where the file system allows: one copy on disk)."""
    source = next((p for p in (root / MATHJAX, REPO / MATHJAX) if p.is_file()), None)
    if source is None:
        print(f"{MATHJAX} is missing: the feedback pages will show formulas as TeX (scripts/fetch-mathjax.sh --write)")
        return
    for student in sorted(p for p in (root / "feedback").iterdir() if p.is_dir()):
        target = student / "mathjax"
        target.mkdir(exist_ok=True)
        (target / "mathjax-config.js").write_text(MATHJAX_CONFIG)
        dest = target / MATHJAX.name
        if dest.exists():
            continue
        try:
            os.link(source, dest)
        except OSError:
            shutil.copy(source, dest)


def graded(root: Path, assignment: str) -> list[str]:
    """The students with an autograded notebook of ``assignment``."""
    return sorted(p.parent.name for p in (root / "autograded").glob(f"*/{assignment}") if p.is_dir())
