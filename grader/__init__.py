"""The course's grading, on the instructor's side only: never installed where students work.

``lib`` is the readers' and students' package; everything about grading lives here, in a folder that the
student release (``make student-release``) leaves out and that no student environment (``make lab`` in
that release, Binder) can import:

==========================  ==========================================================================
``grader.checks``           what hidden tests run inside the kernel: references, hidden-case generators,
                            the checks, and the run-time integrity checks (``grader.checks.integrity``)
``grader.scan``             the source scan: what in a submitted cell modifies the grading environment
``grader.preprocessors``    nbgrader preprocessors: the guard, the output caps, feedback without hidden tests
``grader.sanitize``         outputs and answers made inert and capped; the feedback pages' security policy
``grader.cells``            copied, renamed or deleted nbgrader cells graded with a note
``grader.formgrader_csp``   a Jupyter server extension: the formgrader's submission pages run no submitted script
``grader.intake``           submission folders read without following links
``grader.collect``          `make collect`: a class's archive of downloads into submitted/, trusting nothing in it
``grader.config``           every nbgrader setting of the course (``nbgrader_config.py`` calls it)
``grader.course``           the course directory: assignments, submissions, exercises, collect, feedback, export
``grader.autograde``        grading submissions and reporting each one's outcome
``grader.release``          the tree a course publishes to its students
``grader.cli``              ``python -m grader ...``: the commands behind the Makefile's instructor targets
==========================  ==========================================================================

Only ``grader/__init__.py`` (this file, which imports nothing) and ``grader/checks`` are visible inside a
sandboxed kernel: hidden tests need them, and nothing else of the grader.
"""
