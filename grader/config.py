"""Every nbgrader setting of the course, in one function that ``nbgrader_config.py`` calls.

Layout:  solutions/<assignment>/<assignment>.ipynb   instructor versions (the source; never published)
         exercises/<assignment>/<assignment>.ipynb   student versions, generated: `make exercises`
         submitted/<student>/<assignment>/            submissions to grade (`make collect ZIP=...` fills it)
         autograded/, feedback/, gradebook.db         the grader's state (git-ignored)

The flow, and why each setting is here, is in book/instructors.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbgrader
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.converters import GenerateAssignment
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds,
                                    IgnorePattern, LimitOutput, OverwriteKernelspec, SaveAutoGrades)

from grader.cells import LooseCopies, RestoreCells
from grader.feedback import GetGradesPending
from grader.judge import HiddenCases, JudgeReports
from grader.preprocessors import (GuardCells, HideHiddenTests, InstallCell, SkipInstallCell, TruncateOutputs,
                                  colab_cells)
from grader.sanitize import CapOutputs, InertOutputs
from grader.sandbox import SandboxedExecute


def configure(c) -> None:
    """Fill the traitlets config ``c`` (``get_config()`` in nbgrader_config.py)."""
    for section in (_paths, _execution, _grading, _pages, _collecting):
        section(c)


def _paths(c) -> None:
    # Kernels started without the sandbox (SANDBOX=off) import the course's lib from the course root.
    root = str(Path(__file__).resolve().parents[1])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    # ---- where things are
    c.CourseDirectory.source_directory = "solutions"
    c.CourseDirectory.release_directory = "exercises"
    # Files a submission may not bring along: a `lib/` or `grader/` folder or a `torch.py` next to the notebook
    # would be imported instead of the real ones (the notebook's folder comes first on sys.path).
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback",
                                "*.py", "*.so", "*.pth", "lib", "grader", "torch", "torchvision"]
    # The student versions start with the chapters' install cell (Colab, Binder), an ordinary cell outside
    # nbgrader's checksums, naming _config.yml's repository; the student release names the published one.
    c.GenerateAssignment.preprocessors = [*GenerateAssignment.class_traits()["preprocessors"].default(), InstallCell]
    if (Path(root) / "_config.yml").is_file():  # (a grading worker's copy may have only what grading needs)
        c.InstallCell.repository_url = colab_cells().repository_url(Path(root))



def _execution(c) -> None:
    """How notebooks run: the course's own kernel, generous limits."""
    # ---- how notebooks run: the course's own kernel, generous limits (the full experiments take about two
    # minutes; under the autograder NBGRADER_EXECUTION is set and they shrink to seconds)
    c.ExecutePreprocessor.kernel_name = "python3"
    c.Execute.kernel_name = "python3"
    c.Execute.timeout = 300           # seconds per cell; then the kernel is interrupted and the cell fails
    c.Execute.startup_timeout = 120   # seconds for the kernel to start on a loaded machine
    c.Execute.interrupt_on_timeout = True
    c.LimitOutput.max_lines = 1000
    c.LimitOutput.max_traceback = 100



def _grading(c) -> None:
    # ---- grading
    c.Autograde.create_student = True            # anyone in submitted/ is graded, no roster needed
    c.OverwriteCells.add_missing_cells = True    # a deleted test cell is put back and run
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    # LooseCopies and RestoreCells (grader/cells.py): a copied, renamed or deleted nbgrader cell is graded, with a note
    c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, LooseCopies, OverwriteKernelspec, RestoreCells,
                                          SkipInstallCell, GuardCells, CheckCellMetadata]
    # Every kernel that runs a submission starts in the sandbox (grader/sandbox.py); SANDBOX=off turns it off.
    # HiddenCases writes this run's hidden cases into the test cells; JudgeReports decides them from what the
    # kernel reported, in this process (grader/judge.py); CapOutputs and InertOutputs (grader/sanitize.py) leave
    # only capped, inert outputs for the gradebook, the formgrader and the feedback.
    c.Autograde.autograde_preprocessors = [HiddenCases, SandboxedExecute, JudgeReports, TruncateOutputs, IgnorePattern,
                                           ClearMetadataPreprocessor, LimitOutput, CapOutputs, InertOutputs,
                                           SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]


def _pages(c) -> None:
    """What the instructor and the students see: the formgrader and the feedback."""
    # ---- the Formgrader typesets math with the course's MathJax (grader/templates/formgrade/mathjax.html.j2; `make lab`
    #      serves it under /static/), not MathJax 2 from a CDN; nbgrader's own templates stay second in line
    c.HTMLExporter.extra_template_basedirs = [str(Path(__file__).parent / "templates"), str(
        Path(nbgrader.__file__).parent / "server_extensions" / "formgrader" / "templates")]
    # ---- feedback: what the student sees, without the hidden tests
    c.GenerateFeedback.preprocessors = [GetGradesPending, HideHiddenTests, InertOutputs, CSSHTMLHeaderPreprocessor]



def _collecting(c) -> None:
    # ---- collecting a zip of downloads: one folder per student, named by the student id, holding the notebook
    #      (e.g. downloaded/mixed_pooling/archive/all.zip -> all/alice/mixed_pooling.ipynb)
    c.ZipCollectApp.collector_plugin = "nbgrader.plugins.zipcollect.FileNameCollectorPlugin"
    c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[^/]+)/(?P<file_id>[^/]+\.ipynb)$"
