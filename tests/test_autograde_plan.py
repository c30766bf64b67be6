"""How the autograder plans a class before any kernel runs: the order it grades in, what it remembers between
runs, the gradebook schema revision it stamps without a subprocess, and how long it waits for stuck workers."""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from grader.autograde import (STALL_MARGIN, STATE_FILE, _expected_seconds, _load_state, _results, _save_state,
                              stall_limit)
from grader.worker import Result, Task

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def _task(assignment: str, student: str, size: int) -> Task:
    return Task(assignment, student, {f"{assignment}.ipynb": b"x" * size}, "digest")


def test_the_longest_submissions_are_graded_first():
    tasks = [_task("a", "known", 10), _task("a", "new", 10), _task("b", "small", 100), _task("b", "big", 300)]
    state = {"a/known": {"sha256": "h", "seconds": 40.0}, "a/other": {"sha256": "h", "seconds": 20.0},
             "a/third": {"sha256": "h", "seconds": 30.0}}
    expected = _expected_seconds(tasks, state)
    assert expected["a/known"] == 40.0  # its own last grading
    assert expected["a/new"] == 30.0  # its assignment's median: 20, 30, 40
    # no history for the assignment: the class's median (30 s) scaled by the code's size against the mean (105)
    assert abs(expected["b/big"] - 30.0 * 300 / 105) < 1e-9 and abs(expected["b/small"] - 30.0 * 100 / 105) < 1e-9
    order = [t.student for t in sorted(tasks, key=lambda t: -expected[f"{t.assignment}/{t.student}"])]
    assert order == ["big", "known", "new", "small"]


def test_a_first_run_orders_by_the_code_submitted():
    tasks = [_task("a", "blank", 5_000), _task("a", "solved", 9_000), _task("a", "partial", 7_000)]
    expected = _expected_seconds(tasks, {})
    assert sorted(expected, key=lambda k: -expected[k]) == ["a/solved", "a/partial", "a/blank"]


def test_the_state_file_keeps_hashes_and_durations_and_reads_the_older_format(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"a/ada": "abc"}))  # written by the previous version
    assert _load_state(tmp_path) == {"a/ada": {"sha256": "abc"}}
    assert _expected_seconds([_task("a", "ada", 1)], _load_state(tmp_path)) == {"a/ada": 1.0}
    _save_state(tmp_path, {"a/ada": {"sha256": "abc", "seconds": 12.5}})
    assert _load_state(tmp_path) == {"a/ada": {"sha256": "abc", "seconds": 12.5}}
    (tmp_path / STATE_FILE).write_text("{ not json")
    assert _load_state(tmp_path) == {}  # a damaged file: everything is graded again, nothing is lost


def test_a_new_gradebook_is_stamped_with_the_revision_nbgrader_would_ask_alembic_for(tmp_path):
    from grader.course import prepare_nbgrader, alembic_head

    env = dict(os.environ, PATH=f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    theirs = subprocess.run([PY, "-c", "from nbgrader.api import get_alembic_version; print(get_alembic_version())"],
                            capture_output=True, text=True, env=env, check=True).stdout.split()[-1]
    assert alembic_head() == theirs and len(theirs) == 12
    prepare_nbgrader()
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}"):
        pass
    with sqlite3.connect(tmp_path / "gradebook.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(theirs,)]


class _Pool:
    """An executor whose workers finish the tasks named in ``finishing`` at once and never finish the others (a
    hung worker, a result lost on its way back)."""

    def __init__(self, finishing: set[str]):
        self.finishing = finishing

    def submit(self, fn, task):
        future = cf.Future()
        if task.student in self.finishing:
            future.set_result(Result(task.assignment, task.student, True, 1.0))
        return future


def test_stuck_workers_end_the_run_and_every_task_left_gets_a_reason():
    """No submission finishing for longer than the sandbox lets one take means the workers are stuck: the run does
    not wait forever; the finished ones keep their results, the others get a failed result that says to grade them
    again."""
    tasks = [_task("a", "done", 10), _task("a", "hung", 10), _task("b", "lost", 10)]
    stuck = threading.Event()
    start = time.monotonic()
    results = dict((t.student, r) for t, r in _results(_Pool({"done"}), tasks, threading.Event(), stuck, 1.0))
    assert time.monotonic() - start < 10 and stuck.is_set()
    assert results["done"].ok and not results["hung"].ok and not results["lost"].ok
    assert "workers are stuck" in results["hung"].reason and "grade it again" in results["lost"].reason


class _SlowPool:
    """Workers that finish one task every ``every`` seconds."""

    def __init__(self, every: float):
        self.every, self.submitted = every, 0

    def submit(self, fn, task):
        future = cf.Future()
        self.submitted += 1
        threading.Timer(self.every * self.submitted, future.set_result,
                        [Result(task.assignment, task.student, True, 1.0)]).start()
        return future


def test_a_slow_class_is_not_stuck():
    """Each finished submission restarts the clock: a class that takes longer than the limit in all (4 x 0.6 s
    against 1.5 s) is graded in full."""
    tasks = [_task("a", f"s{i}", 10) for i in range(4)]
    stuck = threading.Event()
    results = list(_results(_SlowPool(0.6), tasks, threading.Event(), stuck, 1.5))
    assert len(results) == 4 and all(r.ok for _, r in results) and not stuck.is_set()


def test_the_stall_limit_follows_the_sandboxs_wall_clock_limit(monkeypatch):
    monkeypatch.setenv("SANDBOX_WALL_TIME", "60")
    assert stall_limit() == 60 + STALL_MARGIN
