"""nbgrader cells a student copied, deleted, renamed or re-typed: graded, with a note, never a KeyError.

nbgrader fails the whole submission on three ordinary accidents (issue #19, item 7):

- a copied nbgrader cell: ``DeduplicateIds`` empties the copy's ``nbgrader`` metadata, and ``OverwriteCells``
  then reads its ``grade_id``: ``KeyError: 'grade_id'``;
- a cell whose id is not in the assignment (renamed by hand, or pasted from another notebook):
  ``OverwriteCells`` deletes the id and reads it again: the same ``KeyError``;
- a deleted test cell whose neighbour above is not a graded or solution cell (``test_comparison`` after
  ``table``): ``OverwriteCells.add_missing_grade_cells`` looks the neighbour up among graded cells:
  ``KeyError: 'table'``.

:class:`LooseCopies` (after ``DeduplicateIds``) and :class:`RestoreCells` (instead of ``OverwriteCells``) turn
such a cell into an ordinary cell with a comment saying so, and put a deleted cell back after the nearest
graded or solution cell above it; the gradebook's cells are graded as they should be.
"""
from __future__ import annotations

import nbformat
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor, OverwriteCells


def _ordinary(cell, why: str) -> None:
    """Make ``cell`` an ordinary cell, with ``why`` where the student will read it (code: as a comment)."""
    cell.metadata.pop("nbgrader", None)
    note = f"(The autograder: {why}; it ran as an ordinary cell and is not graded.)"
    cell.source = (f"# {note}\n" if cell.cell_type == "code" else f"*{note}*\n\n") + cell.source


class LooseCopies(NbGraderPreprocessor):
    """A cell whose nbgrader metadata ``DeduplicateIds`` emptied (a copy of a cell that comes earlier) becomes
    an ordinary cell, named as a copy."""

    def preprocess_cell(self, cell, resources, index):
        meta = cell.metadata.get("nbgrader")
        if meta is not None and "grade_id" not in meta:
            self.log.warning("Cell %d is a copy of an nbgrader cell: graded once, at its first place", index)
            _ordinary(cell, "this is a copy of a graded or read-only cell, which is graded once, where it first "
                            "appears")
        return cell, resources


class RestoreCells(OverwriteCells):
    """nbgrader's OverwriteCells, for cells that are not in the gradebook and deleted cells next to read-only ones."""

    def preprocess_cell(self, cell, resources, index):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell, resources = super().preprocess_cell(cell, resources, index)
        if grade_id is not None and "grade_id" not in cell.metadata.get("nbgrader", {"grade_id": None}):
            _ordinary(cell, f"its nbgrader id {grade_id!r} is not in the assignment")
        return cell, resources

    def add_missing_grade_cells(self, nb, resources):
        """A deleted graded cell goes back after the nearest graded or solution cell above its place (nbgrader
        looks only at the cell just above, and fails when that one is read-only)."""
        source = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        order = [c.name for c in source.source_cells]
        solutions = {c.name for c in source.solution_cells}
        for name, grade_cell in {c.name: c for c in source.grade_cells}.items():
            present = {c.metadata.nbgrader["grade_id"]: i for i, c in enumerate(nb.cells)
                       if utils.is_grade(c) or utils.is_solution(c)}
            if name in present:
                continue
            self.log.warning("Missing grade cell %s encountered, adding to notebook", name)
            above = [present[n] for n in order[:order.index(name)] if n in present]
            cell = self.missing_cell_transform(source.source_cells[order.index(name)], grade_cell.max_score,
                                               is_solution=name in solutions)
            nb.cells.insert(above[-1] + 1 if above else 0, nbformat.from_dict(cell))
        return nb, resources
