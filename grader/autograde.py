"""Autograding a class: every submission graded on its own (one broken notebook stops nothing else), in
parallel, with a progress bar, resumable, and on a Dask cluster when one machine is not enough.

    autograde(root)                               # JOBS worker processes on this machine (default: its cores)
    autograde(root, jobs=1)                       # one at a time
    autograde(root, scheduler="tls://host:8786")  # one task per submission on a Dask cluster (TLS: grader.cluster)

Workers run :func:`grader.worker.grade` (the same function locally and on Dask, through the
``concurrent.futures`` interface both provide) and return the graded notebooks and scores as data; only this
process writes the gradebook, with nbgrader's own ``SaveAutoGrades`` and ``AssignLatePenalties``, one
submission per transaction, so the gradebook holds exactly what grading them one by one writes. A submission
whose content (and assignment source) has not changed since it was last graded is skipped (``force`` regrades
everything); an interrupted run (Ctrl-C) leaves the gradebook consistent and the next run grades the rest.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from grader.course import nbgrader_api, prepare_nbgrader, generate_exercises, submissions
from grader.worker import Result, Task, code_sha256, grade, source_sha256, warm, warm_in_background

STATE_FILE = ".autograde-state.json"  # in the course root: each graded submission's content hash and grading time


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
    started: float = 0.0   # time.time() when its worker began and ended it, and when it was in the gradebook
    ended: float = 0.0
    recorded: float = 0.0


def _submission_files(root: Path, assignment: str, student: str, ignore: list[str]) -> dict[str, bytes]:
    """The submission's regular files; a link or anything else is skipped, and named (grader.intake)."""
    from grader.intake import read_folder

    files, skipped = read_folder(root / "submitted" / student / assignment, ignore)
    for line in skipped:
        print(f"{assignment}/{student}: {line}", flush=True)
    return files


def content_hash(files: dict[str, bytes], source: str) -> str:
    h = hashlib.sha256(source.encode())
    for rel in sorted(files):
        h.update(b"\0" + rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return h.hexdigest()


def _load_state(root: Path) -> dict[str, dict]:
    """assignment/student -> {"sha256": the content graded, "seconds": how long grading it took}."""
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v if isinstance(v, dict) else {"sha256": v} for k, v in state.items()}  # older files: the hash alone


def _save_state(root: Path, state: dict[str, dict]) -> None:
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


def _timestamp(api, folder: Path):
    """The submission's timestamp.txt, read only when it is a regular file (a link would be followed)."""
    import stat

    path = folder / "timestamp.txt"
    if not path.exists() or not stat.S_ISREG(path.lstat().st_mode):
        return None
    return api.coursedir.get_existing_timestamp(str(folder))


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
                reason=result.reason, disabled_cells=result.disabled_cells, worker=result.worker,
                started=result.started, ended=result.ended)
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
    from grader.sandbox import Limits, human

    limits = Limits.from_env()
    if result.memory_exceeded:
        o.ok = False
        o.reason = (f"a cell ran out of the sandbox's memory ({human(limits.memory)} for the sandbox as a whole): its "
                    f"cells that needed it scored 0; SANDBOX_MEMORY=8G raises the cap")
    elif result.ok and result.timed_out:
        o.ok = False
        o.reason = (f"grading it took longer than its limit of {limits.wall_time} s: the cell running then was stopped "
                    f"and the cells after it were not run (they score 0); SANDBOX_WALL_TIME=1800 raises the limit")
    return o


def _executor(jobs: int, scheduler: str | None, root: Path, assignments: list[str], certs: Path | None = None):
    """A Dask client's executor (over TLS, with the course's certificates), or a pool of ``jobs`` local worker
    processes that grade against the instructor's course itself (its solutions and config). Either way the
    workers start getting ready (:func:`warm`) now, while this process reads the class and opens the gradebook."""
    if scheduler:
        from distributed import Client

        from grader import cluster

        cluster.check_address(scheduler)
        client = Client(scheduler, timeout="30s", security=cluster.security(cluster.certs_folder(root, certs)))
        # A submission whose task kills one worker is retried on another; one that kills two is reported.
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 1))
        client.run(warm_in_background, assignments, wait=False)  # each on its own copy of the course
        return client.get_executor(pure=False), client
    import multiprocessing

    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=warm, initargs=(assignments, str(root)))
    for _ in range(jobs):  # a pool starts its processes as work arrives: these start them all
        pool.submit(os.getpid)
    return pool, None


def _expected_seconds(tasks: list[Task], state: dict[str, dict]) -> dict[str, float]:
    """How long each submission should take, to grade the longest first (so that no worker is left with a long
    one at the end while the others idle): its own last grading, else its assignment's median, else its code's
    size (a notebook that runs more code takes longer; blank ones fail fast), scaled by the class's median."""
    import statistics

    seconds = {k: v["seconds"] for k, v in state.items() if v.get("seconds")}
    by_assignment = {}
    for key, s in seconds.items():
        by_assignment.setdefault(key.split("/")[0], []).append(s)
    size = {f"{t.assignment}/{t.student}": sum(map(len, t.files.values())) for t in tasks}
    typical = statistics.median(seconds.values()) if seconds else 1.0
    mean_size = (statistics.mean(size.values()) if size else 0) or 1
    out = {}
    for t in tasks:
        key = f"{t.assignment}/{t.student}"
        if key in seconds:
            out[key] = seconds[key]
        elif t.assignment in by_assignment:
            out[key] = statistics.median(by_assignment[t.assignment])
        else:
            out[key] = typical * size[key] / mean_size
    return out


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
              on_result: Callable[[Outcome], None] | None = None, certs: Path | None = None) -> list[Outcome]:
    """Grade the submissions in ``root``/submitted (all assignments, or ``names``; all students, or
    ``students``) and return one :class:`Outcome` per submission graded, in the order they finished.

    ``jobs``: worker processes here (default: the cores); ``scheduler``: a Dask scheduler's address instead
    (``tls://``; ``certs``: its certificates' folder, default ``DASK_CERTS`` or ``.dask-certs``). ``force=False``
    skips submissions graded before whose content has not changed."""
    root = Path(root).resolve()
    found = [(a, s) for a, s in submissions(root, names) if not students or s in students]
    if not found:
        return []
    jobs = max(1, jobs or os.cpu_count() or 1)
    # The workers start first: they get ready (seconds each) while this process reads the class.
    executor, client = _executor(min(jobs, len(found)), scheduler, root, sorted({a for a, _ in found}), certs)
    try:
        tasks, book = _prepare(root, found, force, quiet, overrides)
    except BaseException:
        _close(executor, client, wait=False)
        raise
    if not tasks:  # nothing new to grade: the workers, still importing nbgrader, are not waited for
        _abandon(executor, client)
        return []
    report = Report(len(tasks), quiet, progress, on_result)
    finished = False  # False on Ctrl-C, an error or stuck workers: then the workers are not waited for
    try:
        finished = _grade_all(executor, tasks, book, report)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(report.outcomes)} of {len(tasks)} submission(s) graded and in the gradebook; "
              f"run the same command again to grade the rest", file=sys.stderr)
        raise
    finally:
        report.close()
        if finished:
            _close(executor, client, wait=True)
        else:  # after Ctrl-C the workers got the signal too; stuck ones would never return
            _abandon(executor, client)
    return report.outcomes


# ---- results: what the workers return, as they finish

@contextlib.contextmanager
def _interruptible():
    """Ctrl-C sets a flag, looked at between submissions: a KeyboardInterrupt raised inside nbgrader's API would be
    swallowed by its `capture_log` (a bare except) and the run would go on, or land between two gradebook writes.
    Raises KeyboardInterrupt at the end of the block when it was set."""
    interrupted = threading.Event()
    previous = (signal.signal(signal.SIGINT, lambda *_: interrupted.set())
                if threading.current_thread() is threading.main_thread() else None)
    try:
        yield interrupted
        if interrupted.is_set():
            raise KeyboardInterrupt
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _grade_all(executor, tasks: list[Task], book: "Bookkeeping", report: "Report") -> bool:
    """Every task's result into the gradebook as it comes; False when the workers got stuck (see _results)."""
    stuck = threading.Event()
    with _interruptible() as interrupted, \
            contextlib.closing(_results(executor, tasks, interrupted, stuck, stall_limit())) as results:
        for task, result in results:
            report.add(book.record(task, result))
    return not stuck.is_set()


STALL_MARGIN = 300  # seconds past the sandbox's wall-clock limit before a silent pool counts as stuck


def stall_limit() -> float:
    """How long the run waits with no submission finishing before it gives the rest up: every submission a worker
    holds ends within the sandbox's wall-clock limit (SANDBOX_WALL_TIME), plus its start and write-up."""
    from grader.sandbox import Limits

    return Limits.from_env().wall_time + STALL_MARGIN


def _results(executor, tasks: list[Task], interrupted: threading.Event, stuck: threading.Event,
             stall_after: float) -> Iterator[tuple[Task, Result]]:
    """Each task and its worker's result as they finish, until all have or Ctrl-C; a task whose worker died
    (twice, on Dask) or could not run it gets a failed result that says so. When no task has finished for
    ``stall_after`` seconds, the workers are stuck (a hung process, a result lost on the way back): the tasks
    left get a failed result that says so, ``stuck`` is set, and the run ends. Unfinished tasks are cancelled."""
    futures = {executor.submit(grade, task): task for task in tasks}
    pending = set(futures)
    last = time.monotonic()
    try:
        while pending and not interrupted.is_set():
            done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
            last = time.monotonic() if done else last
            for future in done:
                if interrupted.is_set() and future.exception() is not None:
                    return  # its worker got the Ctrl-C too: not a failure of the submission
                yield futures[future], _result_of(future, futures[future])
            if pending and time.monotonic() - last > stall_after:
                stuck.set()
                why = (f"no submission finished for {stall_after:.0f} s, longer than the sandbox lets one take: the "
                       f"grading workers are stuck (see their log); this one was not graded: grade it again")
                for future in sorted(pending, key=lambda f: (futures[f].assignment, futures[f].student)):
                    yield futures[future], Result(futures[future].assignment, futures[future].student, False, 0.0,
                                                  reason=why)
                return
    finally:
        for f in futures:
            f.cancel()


def _result_of(future: cf.Future, task: Task) -> Result:
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001 - the worker died (twice, on Dask), or could not run the task
        name = type(e).__name__
        why = ("its worker died while grading it" + (", twice: not retried" if name == "KilledWorker" else "")
               if name in ("KilledWorker", "BrokenProcessPool") else f"{name}: {e}")
        return Result(task.assignment, task.student, False, 0.0, reason=why[:300])


# ---- bookkeeping: the gradebook and the state file, written by this process only

@dataclass
class Bookkeeping:
    """nbgrader's API on the course, and the state file: what was graded, from which content, in how long."""
    root: Path
    api: object
    state: dict[str, dict]
    hashes: dict[str, str]

    def record(self, task: Task, result: Result) -> Outcome:
        """One submission in the gradebook (registered even when it failed) and, when it was graded, in the state
        file; returns its outcome."""
        folder = self.root / "submitted" / task.student / task.assignment
        _register(self.api, task.assignment, task.student, _timestamp(self.api, folder))
        if result.ok:
            _record(self.api, result)
        outcome = _outcome(self.api, result)
        outcome.recorded = time.time()
        if outcome.ok:
            key = f"{task.assignment}/{task.student}"
            self.state[key] = {"sha256": self.hashes[key], "seconds": round(result.seconds, 1)}
            _save_state(self.root, self.state)
        return outcome


# ---- reporting: a line per submission, the progress bar, the caller's callback

class Report:
    def __init__(self, total: int, quiet: bool, progress: bool | None, on_result: Callable[[Outcome], None] | None):
        self.outcomes: list[Outcome] = []
        self.quiet, self.on_result = quiet, on_result
        self.bar = _progress(total, (not quiet) if progress is None else progress)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if self.on_result is not None:
            self.on_result(outcome)
        if not self.quiet:
            line = row(outcome)
            self.bar.write(line) if self.bar is not None else print(line, flush=True)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{sum(not o.ok for o in self.outcomes)} failed", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _prepare(root: Path, found: list[tuple[str, str]], force: bool, quiet: bool, overrides: dict | None):
    """The tasks to grade (all, or with ``force`` off those new or changed since they were graded), the longest
    expected first (so that no worker is left with a long one at the end while the others idle), and the
    bookkeeping: nbgrader's API on the course, with every assignment in its gradebook, and the state file."""
    from nbgrader.api import Gradebook

    prepare_nbgrader()
    api = nbgrader_api(root, overrides)
    with Gradebook(api.coursedir.db_url) as gb:
        known = {a.name for a in gb.assignments}
    for assignment in sorted({a for a, _ in found} - known):  # a fresh clone has no gradebook yet
        print(f"{assignment} is not in the gradebook yet: generating it from solutions/{assignment}/")
        generate_exercises(root, [assignment])
    sources = {a: source_sha256(root, a) for a in {a for a, _ in found}}
    code = code_sha256(root)
    env = {k: v for k, v in os.environ.items() if k.startswith("SANDBOX") or k == "AUTOGRADE_THREADS"}
    state = _load_state(root)
    tasks, hashes, skipped = [], {}, 0
    for assignment, student in found:
        files = _submission_files(root, assignment, student, list(api.coursedir.ignore))
        key = f"{assignment}/{student}"
        hashes[key] = content_hash(files, sources[assignment])
        if not force and state.get(key, {}).get("sha256") == hashes[key]:
            skipped += 1
            continue
        tasks.append(Task(assignment, student, files, sources[assignment], overrides or {}, env, code))
    if skipped and not quiet:
        print(f"{skipped} submission(s) unchanged since they were graded: skipped (FORCE=1 regrades them)")
    expected = _expected_seconds(tasks, state)
    tasks.sort(key=lambda t: -expected[f"{t.assignment}/{t.student}"])
    return tasks, Bookkeeping(root, api, state, hashes)


def _close(executor, client, *, wait: bool) -> None:
    if client is not None:
        client.close()
    else:
        executor.shutdown(wait=wait, cancel_futures=True)


def _abandon(executor, client) -> None:
    """Stop the workers without waiting for them (they may still be importing nbgrader)."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    _close(executor, client, wait=False)
    for process in processes:
        process.terminate()


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
