"""The one grading function: a submission in, its graded notebooks and scores out, as data.

:func:`grade` runs wherever a grading job runs: in a local worker process (``JOBS=N``) or on a Dask worker
(``SCHEDULER=tls://...``), both through the ``concurrent.futures`` interface. It never touches the
instructor's gradebook. It grades the submission with nbgrader's own ``autograde`` in a private scratch
course built from the worker's copy of the course (``solutions/``, the config, the sandbox), whose throw-away
gradebook holds only the assignment's definition; the caller (``grader.autograde``) alone writes the real
gradebook from what this returns.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.course import REPO

_MEMORY_ERRORS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "DefaultCPUAllocator")


@dataclass(frozen=True)
class Task:
    """Everything a worker needs to grade one submission."""
    assignment: str
    student: str
    files: dict[str, bytes]        # the submission folder: relative path -> content
    source_sha256: str             # of solutions/<assignment>/: the worker's copy must be the same
    overrides: dict = field(default_factory=dict)  # nbgrader config sections over nbgrader_config.py
    env: dict[str, str] = field(default_factory=dict)  # SANDBOX*, AUTOGRADE_THREADS for the worker's kernels
    code_sha256: str = ""          # of grader/, lib/, nbgrader_config.py, scripts/colab_cells.py: the worker's must match


@dataclass
class Result:
    assignment: str
    student: str
    ok: bool
    seconds: float
    cpu_seconds: float = 0.0
    reason: str = ""
    log: str = ""
    notebooks: dict[str, str] = field(default_factory=dict)   # notebook name -> autograded notebook (JSON)
    files: dict[str, bytes] = field(default_factory=dict)     # other files nbgrader put in autograded/
    disabled_cells: int = 0
    memory_exceeded: bool = False  # a cell ran out of the sandbox's memory (a MemoryError, or an OOM kill)
    timed_out: bool = False        # grading it reached the wall-clock limit: the cells after it were not run
    worker: str = ""
    started: float = 0.0   # time.time() when the worker began and ended it: a run's timeline, for profiling
    ended: float = 0.0


def source_sha256(root: Path, assignment: str) -> str:
    """A digest of the assignment's source folder (what the gradebook's master cells come from)."""
    h = hashlib.sha256()
    folder = root / "solutions" / assignment
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def code_sha256(root: Path) -> str:
    """A digest of the code that grades: the grader package and the `lib` this process imports (the checks and
    the kernel run them), the course's nbgrader_config.py and scripts/colab_cells.py. A worker whose copy differs refuses
    the task."""
    from grader.sandbox import GRADER, lib_dir

    h = hashlib.sha256()
    for folder in (GRADER, lib_dir()):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(f"{folder.name}/{path.relative_to(folder)}".encode() + b"\0" + path.read_bytes() + b"\0")
    h.update((Path(root) / "nbgrader_config.py").read_bytes())
    h.update((GRADER.parent / "scripts" / "colab_cells.py").read_bytes())  # SkipInstallCell reads its install cell
    return h.hexdigest()


_TEMPLATES: dict[tuple[str, str], Path] = {}
_LOCK = threading.Lock()


def _template(root: Path, assignment: str, digest: str) -> Path:
    """A scratch course whose gradebook holds this assignment's definition (made once per worker process)."""
    with _LOCK:
        key = (assignment, digest)
        if key in _TEMPLATES:
            return _TEMPLATES[key]
        from grader.course import nbgrader_api

        course = Path(tempfile.mkdtemp(prefix=f"grader-template-{assignment}-"))
        os.symlink(root / "solutions", course / "solutions")
        shutil.copy(root / "nbgrader_config.py", course)
        result = nbgrader_api(course).generate_assignment(assignment, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"generate_assignment {assignment} failed in the worker: {result.get('error', '')}")
        _TEMPLATES[key] = course
        return course


def warm(assignments: list[str], root: str | None = None) -> None:
    """Get a worker process ready before its first submission: nbgrader imported (5 s of CPU) and a scratch
    course made for each assignment, while the instructor's process is still reading the class. A local pool
    runs it as each worker's initializer, a Dask client on every worker; it never raises (a worker whose copy
    of an assignment differs reports it on the submission, where it belongs)."""
    try:
        if root:
            os.environ["GRADER_COURSE_ROOT"] = root
        from grader import sandbox
        from grader.course import prepare_nbgrader

        prepare_nbgrader()
        if sandbox.enabled():
            sandbox.check()  # the start-up probe (an import of torch in the sandbox), before the first submission
        course = Path(os.environ.get("GRADER_COURSE_ROOT") or REPO)
        for assignment in assignments:
            _template(course, assignment, source_sha256(course, assignment))
    except Exception:  # noqa: BLE001 - grade() meets the same problem again and reports it per submission
        pass


async def warm_in_background(assignments: list[str]) -> None:
    """:func:`warm` on a Dask worker (``Client.run(..., wait=False)``): in a thread, so that the worker's event
    loop keeps answering the scheduler meanwhile."""
    import asyncio

    await asyncio.to_thread(warm, assignments)


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def grade(task: Task, root: Path | None = None) -> Result:
    """Grade one submission (``root``: this worker's copy of the course, default the one it runs from)."""
    from grader import sandbox

    root = Path(root or os.environ.get("GRADER_COURSE_ROOT") or REPO)
    start, cpu_start = time.perf_counter(), _cpu()
    sandbox.start_clock()  # the wall-clock limit counts from here: setting up and scanning it included
    result = Result(task.assignment, task.student, False, 0.0, worker=os.uname().nodename + f":{os.getpid()}",
                    started=time.time())
    digest = source_sha256(root, task.assignment)
    result.reason = _other_version(task, root, digest)
    if not result.reason:
        oom_kills = sandbox.oom_kills()
        _autograde(task, root, digest, result)
        result.memory_exceeded |= sandbox.oom_kills() > oom_kills
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = _cpu() - cpu_start
    result.ended = time.time()
    return result


def _other_version(task: Task, root: Path, digest: str) -> str:
    """Why this worker cannot grade the task (its course or grader code is not the instructor's), or ""."""
    if digest != task.source_sha256:
        return (f"this worker's copy of the course ({root}) has another solutions/{task.assignment}/ than the "
                f"instructor's: update the worker's copy (git pull) and grade again")
    if task.code_sha256 and task.code_sha256 != code_sha256(root):
        return (f"this worker's grader code (grader/, lib/ or nbgrader_config.py in {root}) differs from the "
                f"instructor's: update the worker's copy to the same commit and grade again")
    return ""


def _autograde(task: Task, root: Path, digest: str, result: Result) -> None:
    """nbgrader's autograde on the submission alone, in a scratch course made from the assignment's template;
    fills ``result`` (a failure is reported there, never raised into the pool)."""
    from grader.course import nbgrader_api, prepare_nbgrader, reason

    prepare_nbgrader()
    os.environ.update(task.env)
    os.environ["OMP_NUM_THREADS"] = os.environ.get("AUTOGRADE_THREADS", "1")
    template = _template(root, task.assignment, digest)
    scratch = Path(tempfile.mkdtemp(prefix=f"grader-{task.assignment}-"))
    try:
        os.symlink(root / "solutions", scratch / "solutions")
        shutil.copy(template / "nbgrader_config.py", scratch)
        shutil.copy(template / "gradebook.db", scratch)
        _write_files(scratch / "submitted" / task.student / task.assignment, task.files)
        out = nbgrader_api(scratch, task.overrides).autograde(task.assignment, task.student, force=True, create=True)
        result.log = out.get("log") or ""
        result.ok = bool(out["success"])
        result.disabled_cells = result.log.count("Disabling a cell of")
        if result.ok:
            _read_graded(scratch / "autograded" / task.student / task.assignment, result)
        else:
            result.reason = reason(out)
    except Exception as e:  # noqa: BLE001 - one submission's failure is reported, never raised into the pool
        result.ok, result.reason = False, f"{type(e).__name__}: {e}"[:300]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = (folder / rel).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise ValueError(f"a submitted file points outside its folder: {rel}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _read_graded(graded: Path, result: Result) -> None:
    """The graded notebooks and other files into ``result``, and whether a cell ran out of memory or time."""
    from grader import sandbox
    from grader.intake import regular_files

    for path in regular_files(graded)[0]:  # never through a link (grader.intake)
        rel = str(path.relative_to(graded))
        if path.suffix == ".ipynb" and path.parent == graded:
            result.notebooks[path.stem] = path.read_text()
        else:
            result.files[rel] = path.read_bytes()
    errors = [o.get("evalue", "") + o.get("ename", "") for text in result.notebooks.values()
              for c in json.loads(text)["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    result.memory_exceeded = any(m in e for e in errors for m in _MEMORY_ERRORS)
    result.timed_out = any(sandbox.WALL_ERROR in e for e in errors)
