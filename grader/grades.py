"""The class's grades as the gradebook holds them, never rounder than it is.

A submission is *final* when every part has its score, *provisional* while a written answer waits to be graded
by hand (its score is unknown, not 0), and *missing* when the student handed nothing in (no score, not 0).
The export plugins (grader/export.py) and the feedback command read the class through :func:`read`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FINAL, PROVISIONAL, MISSING = "final", "provisional", "missing"


@dataclass(frozen=True)
class Part:
    """One graded cell: an autograded test or a written answer."""
    name: str                 # the cell's grade_id
    written: bool             # graded by hand
    score: float | None       # None: not graded yet
    max_score: float
    comment: str = ""


@dataclass(frozen=True)
class Row:
    """One student's submission of one assignment (or its absence)."""
    assignment: str
    student: str
    name: tuple[str, str, str]  # first name, last name, email (empty where unknown)
    status: str                 # FINAL, PROVISIONAL or MISSING
    max_score: float
    parts: tuple[Part, ...] = ()
    late_penalty: float = 0.0

    @property
    def score(self) -> float | None:
        """The total after the late penalty; None when missing (the sum of the parts graded so far otherwise)."""
        if self.status == MISSING:
            return None
        return max(0.0, sum(p.score or 0.0 for p in self.parts) - self.late_penalty)

    @property
    def pending(self) -> list[Part]:
        return [p for p in self.parts if p.score is None]

    def comments(self) -> str:
        """Every part's comment, one line each, for the LMSs that take a feedback column."""
        return "\n".join(f"{p.name}: {p.comment}" for p in self.parts if p.comment)


def is_pending(grade) -> bool:
    """A part waits for its hand grade: nbgrader flags it and nobody has given it a score yet."""
    return grade.manual_score is None and (bool(grade.needs_manual_grade) or grade.auto_score is None)


def part_order(root: Path, assignment: str) -> list[str]:
    """The grade ids of an assignment in notebook order (the student version's), so parts read as the task does."""
    path = root / "exercises" / assignment / f"{assignment}.ipynb"
    if not path.is_file():
        return []
    cells = json.loads(path.read_text())["cells"]
    return [c["metadata"]["nbgrader"]["grade_id"] for c in cells
            if c["metadata"].get("nbgrader", {}).get("grade") or c["metadata"].get("nbgrader", {}).get("task")]


def _parts(submission, order: list[str]) -> tuple[Part, ...]:
    comments = {c.name: (c.comment or "") for nb in submission.notebooks for c in nb.comments}
    parts = [Part(g.name, g.cell.cell_type == "markdown", None if is_pending(g) else float(g.score),
                  float(g.max_score), comments.get(g.name, "").strip())
             for nb in submission.notebooks for g in nb.grades]
    rank = {name: i for i, name in enumerate(order)}
    return tuple(sorted(parts, key=lambda p: (rank.get(p.name, len(rank)), p.name)))


def read(gradebook, root: Path, assignments: list[str] | None = None, students: list[str] | None = None) -> list[Row]:
    """One row per student and assignment in the gradebook (restricted to ``assignments``/``students``)."""
    from nbgrader.api import MissingEntry

    rows = []
    for assignment in gradebook.assignments:
        if assignments and assignment.name not in assignments:
            continue
        order = part_order(root, assignment.name)
        for student in gradebook.students:
            if students and student.id not in students:
                continue
            name = (student.first_name or "", student.last_name or "", student.email or "")
            try:
                sub = gradebook.find_submission(assignment.name, student.id)
            except MissingEntry:
                rows.append(Row(assignment.name, student.id, name, MISSING, float(assignment.max_score)))
                continue
            parts = _parts(sub, order)
            status = PROVISIONAL if any(p.score is None for p in parts) else FINAL
            rows.append(Row(assignment.name, student.id, name, status, float(assignment.max_score), parts,
                            float(sub.late_submission_penalty or 0.0)))
    return rows


def describe_pending(rows: list[Row]) -> list[str]:
    """One line per provisional submission: who, which answers wait for a hand grade, how many points."""
    lines = []
    for r in rows:
        if r.status == PROVISIONAL:
            points = sum(p.max_score for p in r.pending)
            names = ", ".join(p.name for p in r.pending)
            lines.append(f"  {r.student}/{r.assignment}: {names} ({points:g} points) not graded by hand yet")
    return lines
