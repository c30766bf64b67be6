"""A Dask worker preload for tests/test_scale.py (``dask worker --preload this-file``): the worker exits, as one lost
to its machine would, when it is given the submission of the student named in ``GRADER_TEST_FAULT_ON``.

The fault lives here, not in the grader: the task's function is pickled by reference (``grader.worker.grade``), so
the worker that loaded this file runs the wrapper below instead."""
import os

import grader.worker

_grade = grader.worker.grade


def grade(task, root=None):
    if task.student == os.environ["GRADER_TEST_FAULT_ON"]:
        os._exit(17)
    return _grade(task, root)


grader.worker.grade = grade
