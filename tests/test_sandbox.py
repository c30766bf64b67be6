"""The sandbox: every kernel that runs a submission starts inside bubblewrap, out of reach of the gradebook, the
other students, the solutions, the instructor's files, the network and the grader's processes.

One scratch course is graded once for the module: an honest submission first, then one hostile submission per
threat, each with code the source guard would not flag (the guard is off here, so that the sandbox alone is
tested). Each must get a defined outcome, every other student's grade must stay as it was, and nothing outside
the grader's own output folders may change (the test hashes the course, the instructor's home and /tmp).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from grader import cgroup, sandbox
from grader.autograde import autograde

sys.path.insert(0, str(Path(__file__).resolve().parent / "nbgrader_fixtures"))
import submissions as fixtures  # noqa: E402

pytestmark = [pytest.mark.slow]
A = "mixed_pooling"
ROOT = Path(__file__).resolve().parents[1]
MARKER = "sandbox-test-0e1f"  # in every file the threats try to create, and the sleeping processes' arguments


def _require_sandbox():
    try:
        sandbox.check()
    except sandbox.SandboxUnavailable as e:
        pytest.fail(f"the sandbox cannot run on this machine, and the course refuses to grade without it: {e}")


def _hash_tree(*roots: Path, skip: tuple[str, ...] = (), shallow: tuple[Path, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``roots`` (only the top level of those in ``shallow``)."""
    out = {}
    for root in roots:
        files = root.glob("*") if root in shallow else root.rglob("*")
        for path in sorted(files) if root.is_dir() else []:
            rel = str(path)
            if any(s in rel for s in skip) or not path.is_file() or path.is_symlink():
                continue
            try:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                continue
    return out


class Listener:
    """A TCP listener on 127.0.0.1 that records whatever connects to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.received.append(conn.recv(1024) or b"(connected)")
                except OSError:
                    self.received.append(b"(connected)")

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        self.sock.close()


def _threats(course: fixtures.Course, root: Path, home_secret: Path, port: int) -> dict[str, str]:
    """name -> the code of the cell it inserts after MixedPool2d (its answer is right: five points otherwise)."""
    gradebook = root / "gradebook.db"
    other = root / "submitted" / "honest" / A / f"{A}.ipynb"
    return {
        "rewrites-gradebook": f"import sqlite3\ndb = sqlite3.connect({str(gradebook)!r})\n"
                              "db.execute('UPDATE grade SET manual_score = 0')\ndb.commit()",
        "reads-others": "for p in [" + ", ".join(repr(str(p)) for p in (other, root / "solutions" / A / f"{A}.ipynb",
                                                                          home_secret)) + "]:\n"
                        "    try:\n        print(open(p).read()[:2000])\n"
                        "    except OSError as e:\n        print('could not read:', type(e).__name__)",
        "writes-outside": "import numpy as np\nfor p in [" + ", ".join(repr(str(p)) for p in (
            root / f"{MARKER}.txt", other, root / "solutions" / A / f"{A}.ipynb", Path("/tmp") / f"{MARKER}.txt")) + "]:\n"
                          "    try:\n"
                          f"        np.savetxt(p, [1.0], header={MARKER!r}); print('wrote', p)\n"
                          "    except OSError as e:\n        print('could not write:', type(e).__name__)",
        "connects-out": f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
                        f"s.sendall(b'{MARKER}')",
        "kills-parent": "import os\ngetattr(os, 'ki' + 'll')(os.getppid(), 9)",
        "leaves-process": "import subprocess\nsubprocess.Popen(['sleep', '4242'], start_new_session=True)",
        "exceeds-memory": "import torch\nbig = torch.ones(6 * 2**30, dtype=torch.uint8)  # 6 GiB\nprint(big.sum())",
        "many-processes": "import subprocess\nprocs = [subprocess.Popen(['sleep', '30']) for _ in range(500)]",
        # three children of 2 GiB each, every one under the per-process limit: 6 GiB for the sandbox as a whole
        "memory-children": "import subprocess, sys\n"
                           "child = 'import torch, time; x = torch.ones(2 * 2**30, dtype=torch.uint8); time.sleep(5)'\n"
                           "procs = [subprocess.Popen([sys.executable, '-c', child]) for _ in range(3)]\n"
                           "print('children exit codes:', [p.wait() for p in procs])",
        "fills-ipc": "import os\nfrom ipykernel.connect import get_connection_file\n"
                     "folder, written = os.path.dirname(get_connection_file()), 0\n"
                     "try:\n    for i in range(100):\n"
                     "        with open(os.path.join(folder, f'fill-{i}'), 'wb') as f:\n"
                     "            f.write(b'x' * (8 << 20))\n        written += 8\n"
                     "except OSError as e:\n    print('could not write:', type(e).__name__)\n"
                     "print(f'IPC folder: {written} MB written')",
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    _require_sandbox()
    base = tmp_path_factory.mktemp("sandboxed")
    root = fixtures.make_course(base / "course", cell_timeout=60)
    home_secret = Path.home() / f".{MARKER}-secret.txt"
    home_secret.write_text(f"the instructor's private notes {MARKER}")
    listener = Listener()
    course = fixtures.Course(root)
    try:
        honest = fixtures.Submission("honest", A, "an honest student", course.solved(A))
        honest.write(root / "submitted")
        first = autograde(root, students=["honest"], jobs=1, quiet=True)
        assert first[0].ok and first[0].auto == fixtures.full_marks(A)
        from nbgrader.api import Gradebook
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:  # the instructor grades the essay by hand
            for nb in gb.find_submission(A, "honest").notebooks:
                for g in nb.grades:
                    if g.cell.cell_type == "markdown":
                        g.manual_score = g.max_score
            gb.db.commit()
        before_grades = _grades(root)
        threats = _threats(course, root, home_secret, listener.port)
        for name, code in threats.items():
            nb = fixtures._insert_after(course.solved(A, {"mixed_pool"}), "mixed_pool", code, "threat")
            fixtures.Submission(name, A, name, nb).write(root / "submitted")
        watched = (root, Path.home())  # /tmp is shared with other programs: the marker file is checked instead
        skip = ("/autograded/", "/feedback/", "gradebook.db", ".autograde-state", "/.jupyter", "pytest-of-",
                "grader-", "/.cache/", "/.local/", "__pycache__", "/.ipython/", "/.config/matplotlib", "torch_")
        before_files = _hash_tree(*watched, skip=skip, shallow=watched[1:])
        before_groups = set(cgroup.groups())
        start = time.time()
        outcomes = {o.student: o for o in autograde(root, students=list(threats), jobs=2, quiet=True,
                                                     overrides={"GuardCells": {"enabled": False}})}
        seconds = time.time() - start
        time.sleep(1)
        after_files = _hash_tree(*watched, skip=skip, shallow=watched[1:])
        yield {"root": root, "outcomes": outcomes, "before_grades": before_grades, "after_grades": _grades(root),
               "before_files": before_files, "after_files": after_files, "listener": listener,
               "home_secret": home_secret, "seconds": seconds,
               "groups_left": sorted(set(cgroup.groups()) - before_groups)}
    finally:
        listener.close()
        home_secret.unlink(missing_ok=True)


def _grades(root: Path) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return {(a.name, s.student.id, g.name): (g.auto_score, g.manual_score)
                for a in gb.assignments for s in a.submissions for nb in s.notebooks for g in nb.grades}


FIVE = fixtures.deserved(A, {"mixed_pool"})


def _errors(root: Path, student: str) -> list[str]:
    nb = json.loads((root / "autograded" / student / A / f"{A}.ipynb").read_text())
    return [o["ename"] + ": " + o["evalue"] for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]


def test_every_threat_has_a_defined_outcome(graded):
    outcomes = graded["outcomes"]
    assert set(outcomes) == {"rewrites-gradebook", "reads-others", "writes-outside", "connects-out", "kills-parent",
                             "leaves-process", "exceeds-memory", "many-processes", "memory-children", "fills-ipc"}
    for name in ("rewrites-gradebook", "reads-others", "writes-outside", "connects-out", "kills-parent",
                 "leaves-process", "many-processes", "fills-ipc"):
        o = outcomes[name]
        assert o.ok and o.auto == FIVE, f"{name}: {o.reason or o.auto}"  # its right answer still counts
    memory = outcomes["exceeds-memory"]
    assert not memory.ok and "memory" in memory.reason and "4 GiB" in memory.reason


def test_the_gradebook_is_out_of_reach(graded):
    errors = _errors(graded["root"], "rewrites-gradebook")
    assert any("OperationalError" in e for e in errors), errors
    assert {k: v for k, v in graded["after_grades"].items() if k[1] == "honest"} == \
        {k: v for k, v in graded["before_grades"].items() if k[1] == "honest"}, "the honest student's grades changed"


def _printed(root: Path, student: str) -> str:
    nb = json.loads((root / "autograded" / student / A / f"{A}.ipynb").read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", [])
                   if o["output_type"] == "stream")


def test_other_students_solutions_and_home_are_not_readable(graded):
    printed = _printed(graded["root"], "reads-others")
    assert printed.count("could not read: FileNotFoundError") == 3, printed[:500]
    assert "instructor's private notes" not in printed and "BEGIN SOLUTION" not in printed and "nbgrader" not in printed


def test_nothing_outside_its_folder_changes(graded):
    before, after = graded["before_files"], graded["after_files"]
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"files outside the graded folders changed: {changed[:10]}"
    assert not (Path("/tmp") / f"{MARKER}.txt").exists() and not (graded["root"] / f"{MARKER}.txt").exists()
    printed = _printed(graded["root"], "writes-outside")
    assert printed.count("could not write:") == 3 and "wrote /tmp/" in printed, printed[:500]  # its private /tmp


def test_no_network(graded):
    assert graded["listener"].received == [], "a submission reached a listener on 127.0.0.1"
    assert any("ConnectionRefusedError" in e or "OSError" in e for e in _errors(graded["root"], "connects-out"))


def test_the_grader_cannot_be_signalled(graded):
    """Its parent inside the sandbox is the sandbox's init, owned by root: the kill fails, the run goes on."""
    assert any("PermissionError" in e for e in _errors(graded["root"], "kills-parent"))
    assert len(graded["outcomes"]) == 10, "every submission after it was graded"


def test_no_process_outlives_its_kernel(graded):
    leftover = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args[:1] == [b"sleep"] and len(args) > 1 and args[1] in (b"30", b"4242"):
            leftover.append(cmdline.parent.name)
    assert not leftover, f"processes started by submissions are still running: {leftover}"


def test_the_process_limit_holds(graded):
    errors = _errors(graded["root"], "many-processes")
    assert any("BlockingIOError" in e or "Resource temporarily unavailable" in e for e in errors), errors


def test_limits_and_command_line(monkeypatch, tmp_path):
    assert sandbox.parse_size("4G") == 4 << 30 and sandbox.parse_size("512M") == 512 << 20
    with pytest.raises(ValueError, match="is not a size"):
        sandbox.parse_size("lots")
    monkeypatch.setenv("SANDBOX_MEMORY", "6G")
    assert sandbox.Limits.from_env().memory == 6 << 30
    box = sandbox.Sandbox(tmp_path, tmp_path, sandbox.Limits.from_env())
    line = box.describe()
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session", "--clearenv",
                 f"--data={6 << 30}", "--ro-bind /usr /usr"):
        assert flag in line, flag
    args = box.command(["python"])
    sources = [Path(args[i + 1]) for i, a in enumerate(args) if a in ("--ro-bind", "--bind")]
    root = Path(__file__).resolve().parents[1]
    for src in sources:  # what the kernel sees: none of these, nor anything that contains them
        for secret in (root, root / "solutions", root / "gradebook.db", root / "submitted", root / "grader",
                       Path.home()):
            assert src != secret and src not in secret.parents, f"{src} is bound into the sandbox"
    assert root / "lib" in sources and not any(root / "grader" in (src, *src.parents) for src in sources)  # judged outside


def test_no_sandbox_means_a_message_that_names_the_fix(monkeypatch):
    monkeypatch.setattr(sandbox, "_CHECKED", {})
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.check()
    monkeypatch.setenv("SANDBOX", "off")
    assert not sandbox.enabled()


def test_sandbox_off_is_announced_before_and_after(capsys, monkeypatch):
    from grader.cli import sandbox_banner

    monkeypatch.setenv("SANDBOX", "off")
    with sandbox_banner():
        print("grading")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("!!! SANDBOX=off") and out[1] == "grading" and out[2].startswith("!!! SANDBOX=off")


def test_a_missing_sandbox_stops_autograde(monkeypatch):
    from grader.cli import sandbox_banner

    monkeypatch.setattr(sandbox, "_CHECKED", {"error": "bwrap not found: install bubblewrap"})
    with pytest.raises(SystemExit, match="cannot run here: bwrap not found"):
        with sandbox_banner():
            pass


def test_the_probe_imports_torch_and_lib_and_says_why_it_cannot(monkeypatch, tmp_path):
    """`check()` runs the kernel's Python in the sandbox: a `lib` that cannot be imported there is named."""
    monkeypatch.setattr(sandbox, "_CHECKED", {})
    broken = tmp_path / "lib"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('this lib is broken inside the sandbox')")
    monkeypatch.setattr(sandbox, "lib_dir", lambda: broken)
    with pytest.raises(sandbox.SandboxUnavailable, match="cannot `import torch, lib`.*broken inside the sandbox"):
        sandbox.check()
    with pytest.raises(sandbox.SandboxUnavailable, match="broken inside"):  # cached: not probed twice
        sandbox.check()


def _copy_course(target: Path) -> Path:
    """The course as a clone holds it (lib, grader, solutions, config) and its data, at ``target``."""
    import shutil

    from lib.data import cache_dir

    root = fixtures.make_course(target, cell_timeout=60)
    shutil.copytree(Path(__file__).resolve().parents[1] / "lib", root / "lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(cache_dir(), root / "data x")
    return root


def test_grading_works_in_a_course_under_tmp_in_a_path_with_a_space():
    """The sandbox's /tmp is mounted before the course's binds: a clone under /tmp (its lib and data too) grades."""
    import shutil
    import subprocess
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="course under tmp ", dir="/tmp"))
    try:
        root = _copy_course(base / "course x")
        fixtures.Submission("honest", A, "an honest student", fixtures.Course(root).solved(A)).write(root / "submitted")
        script = ("import json, sys; from grader.autograde import autograde; "
                  "o = autograde(sys.argv[1], jobs=1, quiet=True)[0]; print(json.dumps([o.ok, o.auto, o.reason]))")
        env = dict(os.environ, PYTHONPATH=str(root), CNN_COURSE_DATA=str(root / "data x"))
        run = subprocess.run([sys.executable, "-c", script, str(root)], cwd=root, env=env, capture_output=True,
                             check=False, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        ok, auto, reason = json.loads(run.stdout.strip().splitlines()[-1])
        assert ok and auto == fixtures.full_marks(A), reason
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_memory_is_limited_for_the_sandbox_as_a_whole(graded):
    """Three children of 2 GiB, each under the per-process limit, cannot hold 6 GiB together: the sandbox's cgroup
    (4 GiB) stops them, and the submission is reported as out of memory."""
    memory = graded["outcomes"]["memory-children"]
    assert not memory.ok and "memory" in memory.reason and "as a whole" in memory.reason, memory.reason
    path = graded["root"] / "autograded" / "memory-children" / A / f"{A}.ipynb"
    printed = _printed(graded["root"], "memory-children") if path.exists() else ""
    assert "children exit codes: [0, 0, 0]" not in printed, printed[:500]


def test_the_ipc_folder_is_capped(graded):
    """The kernel's sockets live on a 1 MiB tmpfs of the sandbox's own: 8 MB cannot be written there (it was a
    writable folder of the host's /tmp, with no cap: 800 MB)."""
    printed = _printed(graded["root"], "fills-ipc")
    assert "IPC folder: 0 MB written" in printed and "could not write: OSError" in printed, printed[:500]


def test_the_cgroups_are_removed(graded):
    """Every group the class's grading made is gone when it ends (those of other graders on the machine, some
    killed on purpose by other tests, are not this run's)."""
    assert not graded["groups_left"], f"cgroups left behind: {graded['groups_left'][:5]}"


def test_a_killed_graders_groups_are_swept(tmp_path):
    """A grader killed before it closed its sandbox (SIGKILL, a lost Dask worker) leaves an empty group: the next
    sandbox's creation removes it once it is older than a sandbox lives; a young one, or one that holds a process,
    stays."""
    import subprocess

    _require_sandbox()
    killed = subprocess.Popen([sys.executable, "-c", "from grader import cgroup; import os, signal; "
                               "s = cgroup.Scope.create(1 << 30, 64); print(*s.dirs, flush=True); "
                               "os.kill(os.getpid(), signal.SIGKILL)"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    abandoned = [Path(p) for p in killed.communicate(timeout=60)[0].split()]
    assert abandoned and all(d.is_dir() for d in abandoned), "the killed grader made no group"
    busy = cgroup.Scope.create(1 << 30, 64)
    sleeper = subprocess.Popen([*busy.enter(), "sleep", "60"])
    try:
        for _ in range(100):  # until the sleeper has joined its group
            if all((d / "cgroup.procs").read_text().split() for d in busy.dirs):
                break
            time.sleep(0.05)
        for d in abandoned + busy.dirs:
            os.utime(d, (time.time() - 2 * cgroup.STALE_AFTER,) * 2)
        young = cgroup.Scope.create(1 << 30, 64)  # sweeps first
        try:
            assert not any(d.exists() for d in abandoned), f"left behind: {abandoned}"
            assert all(d.is_dir() for d in busy.dirs + young.dirs), "a live or young group was removed"
        finally:
            young.close()
    finally:
        sleeper.kill()
        busy.close()
    assert not any(d.exists() for d in busy.dirs)


def test_a_submission_past_the_wall_clock_limit_keeps_what_ran_and_the_run_goes_on(tmp_path, monkeypatch):
    """SANDBOX_WALL_TIME limits the whole submission, not one cell: a notebook that sleeps past it is stopped
    there, keeps the points of the tests before (5), scores 0 for the cells after, and is reported; the next
    submission is graded in full."""
    _require_sandbox()
    monkeypatch.setenv("SANDBOX_WALL_TIME", "45")  # the cells before the nap take ~6 s idle, ~20 s under load
    root = fixtures.make_course(tmp_path / "course", cell_timeout=300)  # the cell's own limit is not what stops it
    course = fixtures.Course(root)
    fixtures.Submission("honest", A, "honest", course.solved(A)).write(root / "submitted")
    sleeper = fixtures._insert_after(course.solved(A), "test_mixed_learnable", "import time\ntime.sleep(3600)", "nap")
    fixtures.Submission("sleeper", A, "sleeper", sleeper).write(root / "submitted")
    start = time.time()
    outcomes = {o.student: o for o in autograde(root, jobs=2, quiet=True)}
    print(f"graded in {time.time() - start:.0f} s")
    assert outcomes["honest"].ok and outcomes["honest"].auto == fixtures.full_marks(A)
    late = outcomes["sleeper"]
    assert not late.ok and "limit of 45 s" in late.reason and late.auto == FIVE, (late.reason, late.auto)
    assert late.seconds < 45 + 30, late.seconds
    assert any("GradingTimeLimit" in e for e in _errors(root, "sleeper"))


def test_no_cgroup_means_a_refusal_that_names_the_fix(monkeypatch):
    """Where no cgroup can be made, the sandbox is refused (limits per process could be multiplied), unless
    SANDBOX_CGROUP=off says to grade with them."""
    def refuse(*args):
        raise sandbox.CgroupUnavailable("cgroup v2: Permission denied")

    monkeypatch.setattr(sandbox, "_CHECKED", {})
    monkeypatch.setattr(sandbox.Scope, "create", refuse)
    with pytest.raises(sandbox.SandboxUnavailable, match="no cgroup can limit.*Permission denied.*SANDBOX_CGROUP=off"):
        sandbox.check()
    monkeypatch.setenv("SANDBOX_CGROUP", "off")
    assert sandbox.open_scope(sandbox.Limits()) is None and "per process" in sandbox.Limits().describe()


def test_a_submissions_clock_is_used_once(monkeypatch):
    """The wall-clock limit counts from the grading worker's start_clock for that one submission: a notebook
    graded later in the same thread without it (nbgrader's own API, a second test) counts from its own start,
    not from a stale clock that would leave it no time at all."""
    import time

    monkeypatch.setenv("SANDBOX", "off")
    sandbox.start_clock(at=time.time() - 10_000)
    first = sandbox.SandboxedExecute()
    assert first._remaining() < 0, "the clock started 10,000 s ago: no time left"
    later = sandbox.SandboxedExecute()
    assert later._remaining() > later.wall_time - 60, "a later notebook without start_clock gets its full limit"
