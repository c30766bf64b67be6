"""Autograding a class: every submission graded on its own (one broken notebook stops nothing else), in
parallel, with a progress bar, resumable, and on a Dask cluster when one machine is not enough.

    autograde(root)                               # JOBS worker processes on this machine (default: its cores)
    autograde(root, jobs=1)                       # one at a time
    autograde(root, scheduler="tcp://host:8786")  # one task per submission on a Dask cluster

Workers run :func:`grader.worker.grade` (the same function locally and on Dask, through the
``concurrent.futures`` interface both provide) and return the graded notebooks and scores as data; only this
process writes the gradebook, with nbgrader's own ``SaveAutoGrades`` and ``AssignLatePenalties``, one
submission per transaction, so the gradebook holds exactly what grading them one by one writes. A submission
whose content (and assignment source) has not changed since it was last graded is skipped (``force`` regrades
everything); an interrupted run (Ctrl-C) leaves the gradebook consistent and the next run grades the rest.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from grader.course import _api, _quiet_nbgrader, generate_exercises, submissions
from grader.worker import Result, Task, grade, source_sha256

STATE_FILE = ".autograde-state.json"  # in the course root: the content hash of every graded submission


@dataclass
class Outcome:
    assignment: str
    student: str
    ok: bool
    seconds: float
    cpu_seconds: float = 0.0  # the grader's and the kernel's CPU time: what the wall time is on an idle machine
    auto: float | None = None
    auto_max: float = 0.0
    manual_max: float = 0.0
    reason: str = ""
    disabled_cells: int = 0
    worker: str = ""


def _submission_files(root: Path, assignment: str, student: str, ignore: list[str]) -> dict[str, bytes]:
    from fnmatch import fnmatch

    folder = root / "submitted" / student / assignment
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(fnmatch(part, pattern) for part in rel.parts for pattern in ignore):
            continue  # what nbgrader would not copy (a lib/ or torch.py beside the notebook)
        files[str(rel)] = path.read_bytes()
    return files


def content_hash(files: dict[str, bytes], source: str) -> str:
    h = hashlib.sha256(source.encode())
    for rel in sorted(files):
        h.update(b"\0" + rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return h.hexdigest()


def _load_state(root: Path) -> dict[str, str]:
    try:
        return json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _save_state(root: Path, state: dict[str, str]) -> None:
    tmp = root / (STATE_FILE + ".part")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(root / STATE_FILE)


def _register(api, assignment: str, student: str, timestamp) -> None:
    """The student and the submission (with its timestamp), as nbgrader's autograde creates them before it runs
    anything: a submission that then fails to grade is in the gradebook too, with no scores."""
    from nbgrader.api import Gradebook

    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        gb.update_or_create_student(student)
        if timestamp:
            gb.update_or_create_submission(assignment, student, timestamp=timestamp)
        else:
            gb.update_or_create_submission(assignment, student)


def _record(api, result: Result) -> None:
    """Write one graded submission into the gradebook as nbgrader's autograde does: zero for a notebook that was
    not submitted, the autograded files, then nbgrader's SaveAutoGrades and AssignLatePenalties on each notebook."""
    import nbformat
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import AssignLatePenalties, SaveAutoGrades

    coursedir = api.coursedir
    with Gradebook(coursedir.db_url, coursedir.course_id) as gb:
        assignment = gb.find_assignment(result.assignment)
        missing = [nb.name for nb in assignment.notebooks if nb.name not in result.notebooks]
        for name in missing:  # nbgrader gives a notebook that was not submitted zero
            for g in gb.find_submission_notebook(name, result.assignment, result.student).grades:
                g.auto_score, g.needs_manual_grade = 0, False
        gb.db.commit()
    dest = Path(coursedir.format_path(coursedir.autograded_directory, result.student, result.assignment))
    dest.mkdir(parents=True, exist_ok=True)
    for rel, content in result.files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(content)
    for name, text in result.notebooks.items():
        nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
        resources = {"nbgrader": {"notebook": name, "assignment": result.assignment, "student": result.student,
                                  "db_url": coursedir.db_url, "course_id": coursedir.course_id}}
        for pp in (SaveAutoGrades, AssignLatePenalties):
            nb, resources = pp(parent=api, config=api.config).preprocess(nb, resources)
        path = dest / f"{name}.ipynb"
        if path.exists():
            path.chmod(0o644)
        path.write_text(text)
        path.chmod(0o444)


def _outcome(api, result: Result) -> Outcome:
    from nbgrader.api import Gradebook

    o = Outcome(result.assignment, result.student, result.ok, result.seconds, result.cpu_seconds,
                reason=result.reason, disabled_cells=result.disabled_cells, worker=result.worker)
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        for nb in gb.find_assignment(result.assignment).notebooks:
            for cell in nb.grade_cells:
                if cell.cell_type == "code":
                    o.auto_max += cell.max_score
                else:
                    o.manual_max += cell.max_score
        if result.ok:
            sub = gb.find_submission(result.assignment, result.student)
            o.auto = sum(g.auto_score or 0.0 for nb in sub.notebooks for g in nb.grades if g.cell.cell_type == "code")
    if result.ok and result.memory_exceeded:
        from grader.sandbox import Limits, human
        o.ok = False
        o.reason = (f"a cell ran out of the sandbox's memory ({human(Limits.from_env().memory)} per process): its "
                    f"cells that needed it scored 0; SANDBOX_MEMORY=8G raises the cap")
    return o


def _use_course(root: str) -> None:
    """In a local worker process: grade against the instructor's course itself (its solutions and config)."""
    os.environ["GRADER_COURSE_ROOT"] = root


def _executor(jobs: int, scheduler: str | None, root: Path):
    if scheduler:
        from distributed import Client

        client = Client(scheduler, timeout="30s")
        # A submission whose task kills one worker is retried on another; one that kills two is reported.
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 1))
        return client.get_executor(pure=False), client
    import multiprocessing

    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_use_course, initargs=(str(root),)), None


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="submission", desc="autograde", dynamic_ncols=True, file=sys.stderr,
                disable=None,  # off when stderr is not a terminal (a log file), where a moving bar is noise
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")


def autograde(root: Path, names: list[str] | None = None, *, students: list[str] | None = None,
              jobs: int | None = None, scheduler: str | None = None, force: bool = True, quiet: bool = False,
              progress: bool | None = None, overrides: dict | None = None,
              on_result: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Grade the submissions in ``root``/submitted (all assignments, or ``names``; all students, or
    ``students``) and return one :class:`Outcome` per submission graded, in the order they finished.

    ``jobs``: worker processes on this machine (default: the number of cores); ``scheduler``: the address of a
    Dask scheduler instead. ``force=False`` skips submissions graded before whose content has not changed.
    """
    from nbgrader.api import Gradebook

    _quiet_nbgrader()
    root = Path(root).resolve()
    api = _api(root, overrides)
    found = [(a, s) for a, s in submissions(root, names) if not students or s in students]
    with Gradebook(api.coursedir.db_url) as gb:
        known = {a.name for a in gb.assignments}
    for assignment in sorted({a for a, _ in found} - known):  # a fresh clone has no gradebook yet
        print(f"{assignment} is not in the gradebook yet: generating it from solutions/{assignment}/")
        generate_exercises(root, [assignment])
    sources = {a: source_sha256(root, a) for a in {a for a, _ in found}}
    env = {k: v for k, v in os.environ.items() if k.startswith("SANDBOX") or k == "AUTOGRADE_THREADS"}
    state = _load_state(root)
    tasks, hashes, skipped = [], {}, 0
    for assignment, student in found:
        files = _submission_files(root, assignment, student, list(api.coursedir.ignore))
        key = f"{assignment}/{student}"
        hashes[key] = content_hash(files, sources[assignment])
        if not force and state.get(key) == hashes[key]:
            skipped += 1
            continue
        tasks.append(Task(assignment, student, files, sources[assignment], overrides or {}, env))
    if skipped and not quiet:
        print(f"{skipped} submission(s) unchanged since they were graded: skipped (FORCE=1 regrades them)")
    jobs = max(1, jobs or os.cpu_count() or 1)
    outcomes: list[Outcome] = []
    if not tasks:
        return outcomes
    executor, client = _executor(min(jobs, len(tasks)), scheduler, root)
    bar = _progress(len(tasks), (not quiet) if progress is None else progress)
    failed = 0
    futures = {}
    finished = False  # False on Ctrl-C or an error: then the workers are not waited for
    # Ctrl-C sets a flag, looked at between submissions: a KeyboardInterrupt raised inside nbgrader's API would be
    # swallowed by its `capture_log` (a bare except) and the run would go on, or land between two gradebook writes.
    interrupted = threading.Event()
    previous = (signal.signal(signal.SIGINT, lambda *_: interrupted.set())
                if threading.current_thread() is threading.main_thread() else None)
    try:
        futures = {executor.submit(grade, task): task for task in tasks}
        pending = set(futures)
        while pending and not interrupted.is_set():
            done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
            for future in done:
                if interrupted.is_set() and future.exception() is not None:
                    break  # its worker got the Ctrl-C too: not a failure of the submission
                task = futures[future]
                try:
                    result = future.result()
                except Exception as e:  # noqa: BLE001 - the worker died (twice, on Dask), or could not run the task
                    name = type(e).__name__
                    why = ("its worker died while grading it" + (", twice: not retried" if name == "KilledWorker" else "")
                           if name in ("KilledWorker", "BrokenProcessPool") else f"{name}: {e}")
                    result = Result(task.assignment, task.student, False, 0.0, reason=why[:300])
                folder = root / "submitted" / task.student / task.assignment
                _register(api, task.assignment, task.student, api.coursedir.get_existing_timestamp(str(folder)))
                if result.ok:
                    _record(api, result)
                outcome = _outcome(api, result)
                if outcome.ok:
                    state[f"{task.assignment}/{task.student}"] = hashes[f"{task.assignment}/{task.student}"]
                    _save_state(root, state)
                else:
                    failed += 1
                outcomes.append(outcome)
                if on_result is not None:
                    on_result(outcome)
                if not quiet:
                    line = row(outcome)
                    bar.write(line) if bar is not None else print(line, flush=True)
                if bar is not None:
                    bar.set_postfix_str(f"{failed} failed", refresh=False)
                    bar.update(1)
        if interrupted.is_set():
            raise KeyboardInterrupt
        finished = True
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(outcomes)} of {len(tasks)} submission(s) graded and in the gradebook; "
              f"run the same command again to grade the rest", file=sys.stderr)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
        for f in futures:
            f.cancel()
        if client is not None:
            client.close()
        else:  # after Ctrl-C the workers got the signal too: do not wait for their kernels
            executor.shutdown(wait=finished, cancel_futures=True)
    return outcomes


def row(o: Outcome) -> str:
    score = f"{o.auto:5.1f} / {o.auto_max:<5.1f}" if o.auto is not None else f"    - / {o.auto_max:<5.1f}"
    status = f"ok (CPU {o.cpu_seconds:.1f} s)" if o.ok else f"FAILED: {o.reason}"
    if o.ok and o.disabled_cells:
        status += f" ({o.disabled_cells} cell(s) disabled: they modify the grading environment)"
    if o.ok and o.manual_max:
        status += f"; {o.manual_max:g} point(s) to grade by hand"
    return f"{o.assignment:18s} {o.student:20s} {score}  {o.seconds:6.1f} s  {status}"


def summary(outcomes: Iterable[Outcome]) -> str:
    outcomes = list(outcomes)
    failed = [o for o in outcomes if not o.ok]
    return (f"{len(outcomes)} submission(s) graded, {len(failed)} failed"
            + (": their grades need a look in the formgrader" if failed else ""))
