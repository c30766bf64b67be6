"""A Dask worker preload for tests/test_scale.py (``dask worker --preload this-file``): the worker exits, as one lost
to its machine would, when it is given the submission of the student named in ``GRADER_TEST_FAULT_ON``.

The fault lives here, not in the grader: the task's function is pickled by reference (``grader.worker.grade``), so
the worker that loaded this file runs the wrapper below instead. Dask may execute a preload file more than once
in the same namespace: the original is kept on the wrapper, never looked up again."""
import os

import grader.worker


def _faulty(grade):
    def faulty_grade(task, root=None):
        if task.student == os.environ["GRADER_TEST_FAULT_ON"]:
            os._exit(17)
        return grade(task, root)

    faulty_grade.original = grade
    return faulty_grade


grader.worker.grade = _faulty(getattr(grader.worker.grade, "original", grader.worker.grade))
