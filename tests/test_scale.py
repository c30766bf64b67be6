"""Grading a class: parallel workers write, through the parent alone, exactly the gradebook that grading one
submission after another writes; an interrupted run resumes with what is left; a Dask cluster on 127.0.0.1
grades the same class (and every other assignment's solution), survives a worker killed mid-run, and reports a
submission that kills two workers."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.autograde import STATE_FILE, autograde
from grader.course import assignments

sys.path.insert(0, str(Path(__file__).resolve().parent / "nbgrader_fixtures"))
import submissions as fixtures  # noqa: E402

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
A = "mixed_pooling"
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def _class(course: fixtures.Course) -> dict[str, dict]:
    """A small class: students whose notebooks earn different scores, and one that fails to grade."""
    return {"ada": course.solved(A), "ben": course.exercise(A), "cyd": course.solved(A, {"mixed_pool"}),
            "dee": course.solved(A, {"mixed_pool", "lp_pool"}),
            "eve": course.solved(A, replace={"mixed_pool": fixtures.MIXED_POOL_VISIBLE_ONLY})}


def _course(path: Path, students: dict[str, dict]) -> Path:
    root = fixtures.make_course(path, cell_timeout=60)
    for student, nb in students.items():
        folder = root / "submitted" / student / A
        folder.mkdir(parents=True)
        (folder / f"{A}.ipynb").write_text(json.dumps(nb))
    (root / "submitted" / "fay" / A).mkdir(parents=True)
    (root / "submitted" / "fay" / A / f"{A}.ipynb").write_text('{"cells": [')  # not JSON: fails to grade
    return root


def gradebook(root: Path) -> dict:
    """Every grade and comment of every submission: what a comparison of two gradebooks compares."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for a in gb.assignments:
            for sub in a.submissions:
                for nb in sub.notebooks:
                    for g in nb.grades:
                        out[(a.name, sub.student.id, nb.name, "grade", g.name)] = (
                            g.auto_score, g.manual_score, g.needs_manual_grade)
                    for c in nb.comments:
                        out[(a.name, sub.student.id, nb.name, "comment", c.name)] = (c.auto_comment, c.manual_comment)
                    out[(a.name, sub.student.id, nb.name, "late_penalty", "")] = nb.late_submission_penalty
    return out


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The class graded the way nbgrader does, one submission after another through its own API."""
    from grader.course import nbgrader_api, prepare_nbgrader, generate_exercises

    prepare_nbgrader()
    root = _course(tmp_path_factory.mktemp("sequential") / "course", _class(fixtures.Course(ROOT)))
    generate_exercises(root, [A])
    api = nbgrader_api(root)
    here = Path.cwd()
    try:
        for student in sorted(p.name for p in (root / "submitted").iterdir()):
            api.autograde(A, student, force=True, create=True)
    finally:
        os.chdir(here)
    return root


def test_parallel_grading_writes_what_sequential_grading_writes(sequential, tmp_path):
    root = _course(tmp_path / "course", _class(fixtures.Course(ROOT)))
    outcomes = {o.student: o for o in autograde(root, jobs=2, quiet=True)}
    assert {s for s, o in outcomes.items() if not o.ok} == {"fay"} and "JSON" in outcomes["fay"].reason
    assert outcomes["ada"].auto == fixtures.full_marks(A) and outcomes["ben"].auto == 0
    expected, found = gradebook(sequential), gradebook(root)
    assert found.keys() == expected.keys()
    differ = {k: (expected[k], found[k]) for k in expected if expected[k] != found[k]}
    assert not differ, f"the parallel run's gradebook differs from the sequential one: {differ}"
    for student in ("ada", "ben", "cyd", "dee", "eve"):  # the graded notebooks too, output for output
        a = json.loads((sequential / "autograded" / student / A / f"{A}.ipynb").read_text())
        b = json.loads((root / "autograded" / student / A / f"{A}.ipynb").read_text())
        assert [c["source"] for c in a["cells"]] == [c["source"] for c in b["cells"]]
        def kinds(nb):  # which outputs each cell has (how stdout is split into streams depends on timing)
            return [(sorted({o["output_type"] for o in c.get("outputs", [])}),
                     [o["ename"] for o in c.get("outputs", []) if o["output_type"] == "error"]) for c in nb["cells"]]
        assert kinds(a) == kinds(b), student


def _run(root: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "grader", "--root", str(root), "autograde", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), **kwargs)


def test_an_interrupted_run_resumes_with_what_is_left(sequential, tmp_path):
    root = _course(tmp_path / "course", _class(fixtures.Course(ROOT)))
    first = _run(root, "--jobs", "2")
    deadline = time.time() + 600
    while time.time() < deadline:  # Ctrl-C once two submissions are in the gradebook
        state = json.loads((root / STATE_FILE).read_text()) if (root / STATE_FILE).exists() else {}
        if len(state) >= 2:
            break
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGINT)
    out1, _ = first.communicate(timeout=120)
    assert first.returncode != 0 and "interrupted" in out1, out1[-2000:]
    graded_first = set(json.loads((root / STATE_FILE).read_text()))
    assert 2 <= len(graded_first) < 6, out1[-2000:]
    second = _run(root, "--jobs", "2")
    out2, _ = second.communicate(timeout=900)
    assert f"{len(graded_first)} submission(s) unchanged since they were graded: skipped" in out2, out2[-2000:]
    graded_second = set(re.findall(rf"^{A}\s+(\S+)\s+(?:[\d.]+|-) / ", out2, re.M))
    assert not graded_second & {key.split("/")[1] for key in graded_first}, "a submission was graded twice"
    assert graded_second | {key.split("/")[1] for key in graded_first} == {"ada", "ben", "cyd", "dee", "eve", "fay"}
    expected, found = gradebook(sequential), gradebook(root)
    assert {k: v for k, v in found.items() if k[1] != "fay"} == {k: v for k, v in expected.items() if k[1] != "fay"}
    third = _run(root, "--jobs", "2")  # nothing changed: nothing to grade but the one that failed
    out3, _ = third.communicate(timeout=600)
    assert "5 submission(s) unchanged" in out3 and "fay" in out3, out3[-1500:]
    (root / "submitted" / "ben" / A / f"{A}.ipynb").write_text(json.dumps(fixtures.Course(ROOT).solved(A)))
    fourth = _run(root, "--jobs", "2", "--student", "ben")  # ben resubmitted: graded again, alone
    out4, _ = fourth.communicate(timeout=600)
    assert f"{A}      ben" in out4 and "12.0 / 12.0" in out4, out4[-1500:]
    fifth = _run(root, "--jobs", "2", "--student", "ben")  # nothing at all to grade: the workers started are stopped
    out5, _ = fifth.communicate(timeout=300)
    assert fifth.returncode == 0 and "1 submission(s) unchanged" in out5 and f"{A}      ben" not in out5, out5[-1500:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1 over TLS with the course's certificates, each
    worker with its own copy of the course."""

    def __init__(self, base: Path, *, fault_student: str | None = None):
        from grader import cluster

        self.port = _free_port()
        self.address = f"tls://127.0.0.1:{self.port}"
        self.certs = base / "certs"
        cluster.make_certs(self.certs)
        self.security = cluster.security(self.certs)
        tls = ["--tls-ca-file", str(self.certs / cluster.CA), "--tls-cert", str(self.certs / cluster.CERT),
               "--tls-key", str(self.certs / cluster.KEY)]
        dask = str(Path(PY).with_name("dask"))
        env = dict(os.environ, PYTHONPATH=str(ROOT), DASK_DISTRIBUTED__WORKER__DAEMON="False",
                   DASK_CONFIG=str(ROOT / "grader" / "dask.yaml"))  # the settings book/instructors.md starts them with
        self.procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                        "--protocol", "tls", "--no-dashboard", *tls], env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)]
        self.copies = []
        for i in range(2):
            copy = base / f"worker{i}-course"  # the worker's own copy of the course (solutions, config)
            fixtures.make_course(copy, cell_timeout=60)
            self.copies.append(copy)
            worker_env = dict(env, GRADER_COURSE_ROOT=str(copy))
            fault = []
            if fault_student:  # grading this student makes the worker exit (tests/nbgrader_fixtures/worker_fault.py)
                worker_env["GRADER_TEST_FAULT_ON"] = fault_student
                fault = ["--preload", str(Path(fixtures.__file__).with_name("worker_fault.py"))]
            self.procs.append(subprocess.Popen(
                [dask, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard", *fault,
                 "--name", f"w{i}", "--local-directory", str(base / f"dask-w{i}"), *tls], env=worker_env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        from distributed import Client

        with Client(self.address, timeout="60s", security=self.security) as client:
            client.wait_for_workers(2, timeout=180)

    def worker_pids(self) -> list[int]:
        """The pids of the worker processes (children of the nannies)."""
        pids = []
        for nanny in self.procs[1:]:
            out = subprocess.run(["pgrep", "-P", str(nanny.pid)], capture_output=True, text=True).stdout.split()
            pids += [int(p) for p in out]
        return pids

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_a_dask_cluster_grades_the_class_and_retries_a_lost_worker(sequential, tmp_path):
    cluster = Cluster(tmp_path)
    try:
        from distributed import Client

        with Client(cluster.address, timeout="60s", security=cluster.security) as client:  # with grader/dask.yaml's settings
            settings = client.run(lambda: __import__("dask").config.get("distributed.worker.profile.enabled"))
        assert list(settings.values()) == [False, False], settings
        root = _course(tmp_path / "course", _class(fixtures.Course(ROOT)))
        others = [a for a in assignments(ROOT) if a != A]  # and every other assignment's solution, handed in by ida
        for a in others:
            fixtures.Submission("ida", a, "the solution", fixtures.Course(root).solved(a)).write(root / "submitted")
        killed = []

        def kill_one_worker_after_the_first(outcome):
            if not killed:
                pids = cluster.worker_pids()
                os.kill(pids[0], signal.SIGKILL)  # a worker lost mid-run, with a submission in hand
                killed.append(pids[0])

        graded = autograde(root, scheduler=cluster.address, quiet=True, certs=cluster.certs,
                           on_result=kill_one_worker_after_the_first)
        outcomes = {o.student: o for o in graded if o.assignment == A}
        assert killed, "no worker was killed"
        assert set(outcomes) == {"ada", "ben", "cyd", "dee", "eve", "fay"}
        solved = {o.assignment: o.auto for o in graded if o.student == "ida"}
        assert solved == {a: fixtures.full_marks(a) for a in others}, solved
        assert {s for s, o in outcomes.items() if not o.ok} == {"fay"}
        assert len({o.worker for o in outcomes.values() if o.worker}) >= 2, "one worker did everything"
        expected, found = gradebook(sequential), gradebook(root)
        differ = {k: (expected[k], found[k]) for k in expected if expected[k] != found.get(k)}
        assert not differ, f"the cluster's gradebook differs from the sequential one: {differ}"
    finally:
        cluster.stop()


def test_a_submission_that_kills_two_workers_is_reported_not_retried_forever(tmp_path):
    cluster = Cluster(tmp_path, fault_student="ben")  # grading ben makes any worker exit (fault injection)
    try:
        root = _course(tmp_path / "course", {"ada": fixtures.Course(ROOT).solved(A),
                                              "ben": fixtures.Course(ROOT).exercise(A)})
        shutil.rmtree(root / "submitted" / "fay")
        start = time.time()
        outcomes = {o.student: o for o in autograde(root, scheduler=cluster.address, quiet=True, certs=cluster.certs)}
        assert outcomes["ada"].ok and outcomes["ada"].auto == fixtures.full_marks(A)
        assert not outcomes["ben"].ok and "worker died" in outcomes["ben"].reason and "twice" in outcomes["ben"].reason
        assert time.time() - start < 600
    finally:
        cluster.stop()
