"""nbgrader's configuration for the course (read by every `nbgrader` command run from the repository root).

Layout:  solutions/<assignment>/<assignment>.ipynb   instructor versions (the source; never published)
         exercises/<assignment>/<assignment>.ipynb   student versions, generated: `make exercises`
         submitted/<student>/<assignment>/            submissions to grade (`make collect ZIP=...` fills it)
         autograded/, feedback/, gradebook.db         the grader's state (git-ignored)

The flow, and why each setting is here, is in book/instructors.md. Two preprocessors of our own join
nbgrader's: `GuardCells` disables submitted cells that modify the grading environment before anything
runs, and `TruncateOutputs` caps what a cell may print after it ran.
"""
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds, Execute,
                                    IgnorePattern, LimitOutput, NbGraderPreprocessor, OverwriteCells,
                                    OverwriteKernelspec, SaveAutoGrades)
from nbgrader.utils import is_locked
from nbconvert.preprocessors import ClearMetadataPreprocessor
from traitlets import Integer

c = get_config()  # noqa: F821 (provided by traitlets when it runs this file)

# ---- where things are
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
# Files a submission may not bring along: a `lib/` folder or a `torch.py` next to the notebook would be
# imported instead of the real ones (the notebook's folder comes first on sys.path).
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback",
                            "*.py", "*.so", "*.pth", "lib", "torch", "torchvision"]

# ---- how notebooks run: the course's own kernel, generous limits (the full experiments take about two
# minutes; under the autograder NBGRADER_EXECUTION is set and they shrink to seconds)
c.ExecutePreprocessor.kernel_name = "python3"
c.Execute.kernel_name = "python3"
c.Execute.timeout = 300           # seconds per cell; then the kernel is interrupted and the cell fails
c.Execute.startup_timeout = 120   # seconds for the kernel to start on a loaded machine
c.Execute.interrupt_on_timeout = True
c.LimitOutput.max_lines = 1000
c.LimitOutput.max_traceback = 100

# ---- grading
c.Autograde.create_student = True            # anyone in submitted/ is graded, no roster needed
c.OverwriteCells.add_missing_cells = True    # a deleted test cell is put back and run
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# ---- collecting a zip of downloads: one folder per student, named by the student id, holding the notebook
#      (e.g. downloaded/mixed_pooling/archive/all.zip -> all/alice/mixed_pooling.ipynb)
c.ZipCollectApp.collector_plugin = "nbgrader.plugins.zipcollect.FileNameCollectorPlugin"
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[^/]+)/(?P<file_id>[^/]+\.ipynb)$"


class GuardCells(NbGraderPreprocessor):
    """Disable the submitted cells that modify the grading environment, before the notebook runs.

    A submission runs in the same kernel as the tests that grade it, so it could patch them: replace a
    check in `lib.grading`, redefine `torch.allclose`, or rewrite the test cells' code with IPython's
    input transformers before they run. `lib.grading.scan_source` reads every cell a student could edit
    (cells nbgrader does not restore from the gradebook) and finds such code; this preprocessor replaces
    each flagged cell by one that raises an error naming the lines, so the notebook still runs, the
    student keeps the points of everything else, and the instructor reads why in the feedback.
    """

    def preprocess(self, nb, resources):  # `--GuardCells.enabled=False` turns it off (to test the other defences)
        from lib.grading import imported_names, scan_source

        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        foreign = imported_names([cell.source for cell in code])
        for cell in code:
            trusted = is_locked(cell) and "grade_id" in cell.metadata.get("nbgrader", {})  # restored by OverwriteCells
            findings = [] if trusted else scan_source(cell.source, foreign)
            if findings:
                student = resources.get("nbgrader", {}).get("student", "?")
                self.log.warning("Disabling a cell of %s that modifies the grading environment: %s",
                                 student, "; ".join(map(str, findings)))
                message = ("The autograder did not run this cell because it modifies the grading environment: "
                           + "; ".join(map(str, findings))
                           + ". Ask your instructor if you think this is a mistake.")
                original = "\n".join("# " + line for line in cell.source.splitlines())
                cell.source = f"raise RuntimeError({message!r})\n\n# The cell as submitted:\n{original}"
        return nb, resources


class TruncateOutputs(NbGraderPreprocessor):
    """Cap each output at `max_chars` characters (LimitOutput counts lines; one line can be megabytes),
    and replace images larger than that by a note, so feedback stays readable and the disk stays free."""

    max_chars = Integer(20_000, help="Characters kept of each text output").tag(config=True)

    def _cut(self, text):
        text = "".join(text) if isinstance(text, list) else text
        if len(text) <= self.max_chars:
            return text
        return text[: self.max_chars] + f"\n... output truncated by the autograder ({len(text):,} characters) ...\n"

    def preprocess_cell(self, cell, resources, index):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                out.text = self._cut(out.text)
            elif out.output_type == "error":
                if sum(len(line) for line in out.traceback) > self.max_chars:
                    out.traceback = [self._cut("\n".join(out.traceback))]
                out.evalue = self._cut(out.evalue)
            elif "data" in out:
                for mime, value in list(out.data.items()):
                    size = len(value) if isinstance(value, str) else len(str(value))
                    if size <= self.max_chars:
                        continue
                    if mime.startswith("text/"):
                        out.data[mime] = self._cut(value)
                    else:
                        del out.data[mime]
                        out.data["text/plain"] = f"[{mime} output of {size:,} characters removed by the autograder]"
        return cell, resources


c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells,
                                      GuardCells, CheckCellMetadata]
c.Autograde.autograde_preprocessors = [Execute, TruncateOutputs, IgnorePattern, ClearMetadataPreprocessor,
                                       LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
