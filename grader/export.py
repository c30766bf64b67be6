"""Grade exports in the layouts the LMSs import, as nbgrader export plugins (``nbgrader export --exporter=...``).

    make grades                  grades/grades.csv   one row per student and assignment, with a status column
    make grades FORMAT=canvas    grades/canvas.csv   Canvas's gradebook import: one row per student, a column per part
    make grades FORMAT=moodle    grades/moodle.csv   Moodle's "Import grades from CSV": a column per part, one
                                                     feedback column per assignment (the parts' comments, merged)

A missing submission is written as missing ("missing"; Canvas and Moodle: no grade), never as 0. While a written
answer waits to be graded by hand the total is provisional: the CSV says so in its ``status`` column, and the LMS
layouts refuse to write unless ``--provisional`` is given (an LMS would show the partial total as the grade).
"""
from __future__ import annotations

import csv
from pathlib import Path

from nbgrader.plugins.export import ExportPlugin
from traitlets import Bool

from grader.grades import MISSING, PROVISIONAL, Row, describe_pending, read


class _CourseExport(ExportPlugin):
    """Reads the class once (grader.grades.read) and writes ``header()`` then ``rows()`` to ``self.to``."""

    default_to = "grades/grades.csv"
    provisional = Bool(False, help="write the LMS layouts although some answers are not graded by hand yet"
                       ).tag(config=True)

    def export(self, gradebook) -> None:
        root = Path(getattr(getattr(self.parent, "coursedir", None), "root", None) or ".")
        rows = read(gradebook, root, [str(a) for a in self.assignment] or None, [str(s) for s in self.student] or None)
        pending = describe_pending(rows)
        if pending and self.refuses_provisional and not self.provisional:
            print("not written: these totals are provisional (an LMS would show them as the grade):\n"
                  + "\n".join(pending) + "\ngrade them in the Formgrader, or pass PROVISIONAL=1")
            raise SystemExit(1)
        target = Path(self.to or self.default_to)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerows(self.table(rows))
        if pending:
            print("provisional totals (written answers not graded by hand yet):\n" + "\n".join(pending))
        print(f"grades written to {target}")

    refuses_provisional = False

    def table(self, rows: list[Row]) -> list[list]:
        raise NotImplementedError


def _number(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:g}"


class CsvExport(_CourseExport):
    """One row per student and assignment: the total, its status (final, provisional, missing) and every part."""

    def table(self, rows: list[Row]) -> list[list]:
        header = ["assignment", "student_id", "first_name", "last_name", "email", "status", "score", "max_score",
                  "late_penalty", "pending", "parts"]
        body = [[r.assignment, r.student, *r.name, r.status, _number(r.score, "missing"), f"{r.max_score:g}",
                 f"{r.late_penalty:g}", " ".join(p.name for p in r.pending),
                 "; ".join(f"{p.name}={_number(p.score, 'pending')}/{p.max_score:g}" for p in r.parts)]
                for r in rows]
        return [header, *body]


def _columns(rows: list[Row]) -> dict[str, list[str]]:
    """assignment -> its parts' names in notebook order, for the assignments someone handed in (an LMS column of
    nothing but missing grades would only hide the assignment's real column until it is graded)."""
    columns: dict[str, list[str]] = {}
    for r in rows:
        if r.parts and r.assignment not in columns:
            columns[r.assignment] = [p.name for p in r.parts]
    return columns


def _by_student(rows: list[Row]) -> dict[str, dict[str, Row]]:
    students: dict[str, dict[str, Row]] = {}
    for r in rows:
        students.setdefault(r.student, {})[r.assignment] = r
    return students


def _part_scores(row: Row, names: list[str], missing: str) -> list[str]:
    scores = {p.name: p.score for p in row.parts}
    return [_number(None if row.status == MISSING else scores.get(n), missing) for n in names]


class CanvasExport(_CourseExport):
    """Canvas's gradebook import (Grades > Import): Student, ID, SIS User ID, SIS Login ID, Section, then one
    column per assignment total and per part, and a "Points Possible" row. Canvas matches students by
    SIS User ID, which holds the nbgrader student id; an empty cell leaves the grade unset. Canvas takes no
    comments through this file."""

    default_to = "grades/canvas.csv"
    refuses_provisional = True

    def table(self, rows: list[Row]) -> list[list]:
        columns = _columns(rows)
        header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
        possible = ["    Points Possible", "", "", "", ""]
        for a, parts in columns.items():
            maximum = {p.name: p.max_score for r in rows if r.assignment == a for p in r.parts}
            header += [a] + [f"{a}: {p}" for p in parts]
            possible += [next((f"{r.max_score:g}" for r in rows if r.assignment == a), "")]
            possible += [f"{maximum[p]:g}" for p in parts]
        body = []
        for student, mine in sorted(_by_student(rows).items()):
            first, last, _ = next(iter(mine.values())).name
            line = [f"{last}, {first}".strip(", ") or student, "", student, "", ""]
            for a, parts in columns.items():
                r = mine[a]
                line += [_number(r.score, "")] + _part_scores(r, parts, "")
            body.append(line)
        return [header, possible, *body]


class MoodleExport(_CourseExport):
    """Moodle's grade import (Grades > Import > CSV file): identify students by "ID number" (the nbgrader student
    id), map each "<assignment>" and "<assignment>: <part>" column to a grade item and "Feedback for <assignment>"
    to its feedback. "-" is Moodle's "no grade"."""

    default_to = "grades/moodle.csv"
    refuses_provisional = True

    def table(self, rows: list[Row]) -> list[list]:
        columns = _columns(rows)
        header = ["First name", "Last name", "ID number", "Email address"]
        for a, parts in columns.items():
            header += [a] + [f"{a}: {p}" for p in parts] + [f"Feedback for {a}"]
        body = []
        for student, mine in sorted(_by_student(rows).items()):
            first, last, email = next(iter(mine.values())).name
            line = [first, last, student, email]
            for a, parts in columns.items():
                r = mine[a]
                feedback = "missing" if r.status == MISSING else r.comments()
                if r.status == PROVISIONAL:
                    feedback = ("provisional: written answers not graded yet\n" + feedback).strip()
                line += [_number(r.score, "-")] + _part_scores(r, parts, "-") + [feedback]
            body.append(line)
        return [header, *body]


FORMATS = {"csv": CsvExport, "canvas": CanvasExport, "moodle": MoodleExport}
