"""The course's grading, on the instructor's side only: never installed where students work.

``lib`` is the readers' and students' package; everything about grading lives here, in a folder that the
student release (``make student-release``) leaves out and that no student environment (``make lab`` in
that release, Binder) can import:

==========================  ==========================================================================
``grader.checks``           the judges, one module per assignment: hidden cases, references, and the
                            checks of what a test cell reported
``grader.judge``            writing the hidden cases into the test cells, and judging their reports
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

Nothing of the grader is visible inside a sandboxed kernel: a hidden test cell runs the student's code on
the hidden cases and reports the results as plain data (``lib.report``); the grader judges them here.
"""
