"""Every kernel that runs a submission's code starts inside bubblewrap (Debian's ``bubblewrap``).

Only the kernel is untrusted, and only the kernel is sandboxed: the grader (nbgrader, the gradebook, the
feedback) runs outside and talks to it over ZeroMQ IPC sockets that the kernel makes in ``/ipc``, a 1 MiB tmpfs
of the sandbox's own, which the grader reaches through the sandbox's root (``/proc/<its init>/root/ipc``).
Inside, the kernel sees:

* read-only: the system (``/usr``, ``/etc``'s few files that programs need), the Python installation and
  the virtual environment, the course's ``lib`` and its data; nothing of the grader (its checks judge the
  kernel's reports in the grader's own process: ``grader/judge.py``);
* writable: a private copy of that one submission's folder and a private ``/tmp``, both size-capped tmpfs;
* nothing else: not the gradebook, ``submitted/``, other students' work, ``solutions/``, the rest of the
  grader, the course root or the instructor's home;
* its own network namespace (no network at all), PID namespace (it cannot see or signal the grader; every
  process it starts ends with it), IPC and UTS namespaces, a new session (no terminal to write into);
* limits: memory and processes for the sandbox as a whole (a cgroup, :mod:`grader.cgroup`; per-process rlimits
  beneath it), the size of any file, open files, and the wall-clock time of grading one submission.

Its own file systems (``/tmp``, home, ``/ipc``) are mounted before the binds, so a course under ``/tmp`` stays
visible; :func:`check` runs the kernel's Python with ``import torch, lib`` inside before anything is graded.

Run as root (a grading server, CI), bubblewrap builds the sandbox with root's rights and the kernel then
runs as an unprivileged user id of its own (``setpriv``), so the process limit counts only its processes.
Run as a normal user, bubblewrap uses an unprivileged user namespace and the kernel keeps that user's id.

:func:`check` says whether the sandbox can run here; :class:`SandboxedExecute` is nbgrader's ``Execute``
with every kernel sandboxed (``grader.config`` installs it; ``SANDBOX=off`` turns it off, loudly).
"""
from __future__ import annotations

import math
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, Execute
from nbgrader.validator import Validator
from traitlets import List, Type

from grader.cgroup import CgroupUnavailable, Scope

GRADER = Path(__file__).resolve().parent  # this grader package: nothing of it is bound into the sandbox
HOME = "/home/student"
IPC = "/ipc"   # inside: the kernel's connection file and sockets, on a tmpfs of its own (Limits.ipc_size)


def lib_dir() -> Path:
    """The `lib` package the kernel imports (the editable install's), found as the grader finds it."""
    import importlib.util

    spec = importlib.util.find_spec("lib")
    if spec is None or not spec.submodule_search_locations:
        raise SandboxUnavailable("the course's `lib` is not importable here: run `make setup` first")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def data_dirs() -> list[Path]:
    from lib.data import cache_dir

    dirs = [cache_dir()]
    if os.environ.get("FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["FASHION_MNIST_DIR"]))
    return dirs


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here; the message names the fix."""


@dataclass(frozen=True)
class Limits:
    """What one sandboxed kernel may use (``SANDBOX_MEMORY`` etc. override the defaults, in bytes or with a
    unit: ``SANDBOX_MEMORY=6G``; ``SANDBOX_WALL_TIME`` in seconds)."""
    memory: int = 4 << 30        # the sandbox's cgroup (every process and its tmpfs folders); RLIMIT_DATA of each too
    processes: int = 64          # the cgroup's pids.max (processes and threads); RLIMIT_NPROC of its user id too
    file_size: int = 256 << 20   # RLIMIT_FSIZE: the largest file it may write
    work_size: int = 512 << 20   # the tmpfs holding its copy of the submission folder
    tmp_size: int = 512 << 20    # the tmpfs at /tmp
    ipc_size: int = 1 << 20      # the tmpfs at /ipc, where the kernel makes its sockets
    open_files: int = 1024       # RLIMIT_NOFILE
    wall_time: int = 900         # seconds to grade one submission, from the worker's start to the last cell

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        names = {"memory": "SANDBOX_MEMORY", "processes": "SANDBOX_PROCESSES", "file_size": "SANDBOX_FILE_SIZE",
                 "work_size": "SANDBOX_WORK_SIZE", "tmp_size": "SANDBOX_TMP_SIZE", "ipc_size": "SANDBOX_IPC_SIZE",
                 "open_files": "SANDBOX_OPEN_FILES", "wall_time": "SANDBOX_WALL_TIME"}
        return cls(**{k: parse_size(env[v], v) for k, v in names.items() if env.get(v)})

    def describe(self) -> str:
        whole = "for the sandbox as a whole" if cgroup_required() else "per process (SANDBOX_CGROUP=off)"
        return (f"memory {human(self.memory)} and {self.processes} processes {whole}, files up to "
                f"{human(self.file_size)}, {human(self.work_size)} for its folder, {human(self.tmp_size)} of /tmp, "
                f"{human(self.ipc_size)} for its sockets, {self.wall_time} s to grade one submission")


def parse_size(text: str, name: str = "size") -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, KeyError):
        raise ValueError(f"{name}={text!r} is not a size: write bytes or a number with K, M, G (e.g. 4G)") from None


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def cgroup_required() -> bool:
    """False only with ``SANDBOX_CGROUP=off``: memory and processes are then limited per process only."""
    return os.environ.get("SANDBOX_CGROUP", "on").strip().lower() not in ("off", "0", "no", "false")


CGROUP_FIX = ("grade as root (a grading machine, a CI container) on Linux with cgroup v2 (or v1's memory and pids "
              "hierarchies) writable; or, accepting limits per process that several processes can multiply, "
              "SANDBOX_CGROUP=off")


def open_scope(limits: Limits) -> Scope | None:
    """The cgroup a sandbox runs in (None with ``SANDBOX_CGROUP=off``)."""
    if not cgroup_required():
        return None
    try:
        return Scope.create(limits.memory, limits.processes)
    except CgroupUnavailable as e:
        raise SandboxUnavailable(f"no cgroup can limit the sandbox as a whole here ({e}): {CGROUP_FIX}") from None


_OOM = {"kills": 0}  # the kernel's OOM kills in this process's sandboxes, read by the worker before and after a task


def oom_kills() -> int:
    return _OOM["kills"]


def enabled() -> bool:
    """False only with ``SANDBOX=off`` (grading then runs submissions with the grader's own rights)."""
    return os.environ.get("SANDBOX", "on").strip().lower() not in ("off", "0", "no", "false")


FIX = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`) on Linux with user namespaces "
       "enabled (Ubuntu 24.04: `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or grade as root on a "
       "grading machine or container); on macOS or Windows, grade inside a Linux container or VM. Only if every "
       "submission is trusted: SANDBOX=off (it grades with your own rights, and says so)")


def _tools() -> dict[str, str]:
    found = {name: shutil.which(name) for name in ("bwrap", "prlimit", "setpriv")}
    missing = [n for n, p in found.items() if p is None and not (n == "setpriv" and os.geteuid() != 0)]
    if sys.platform != "linux":
        raise SandboxUnavailable(f"the sandbox needs Linux (this is {sys.platform}): {FIX}")
    if missing:
        raise SandboxUnavailable(f"{', '.join(missing)} not found: {FIX}")
    return found  # type: ignore[return-value]


_CHECKED: dict[str, str] = {}
PROBE = "import torch, lib"  # what every kernel needs: a sandbox that hides the venv, lib or the data fails here


def check() -> None:
    """Raise :class:`SandboxUnavailable` unless the kernel's Python can ``import torch, lib`` in the sandbox here,
    saying why not (the first call takes a few seconds: it imports torch; then it is cached for the process)."""
    if "ok" in _CHECKED:
        return
    if "error" in _CHECKED:
        raise SandboxUnavailable(_CHECKED["error"])
    try:
        _probe(_tools())
    except SandboxUnavailable as e:
        _CHECKED["error"] = str(e)
        raise
    _CHECKED["ok"] = "1"


def _probe(tools: dict[str, str]) -> None:
    limits = Limits()
    scope = open_scope(limits)
    try:
        with tempfile.TemporaryDirectory(prefix="grader-probe-") as tmp:
            spec = Sandbox(Path(tmp), None, limits, tools, scope=scope)
            result = subprocess.run(spec.command([sys.executable, "-c", PROBE]), capture_output=True, text=True,
                                    check=False, timeout=120)
    except subprocess.TimeoutExpired:
        raise SandboxUnavailable(f"`{PROBE}` took over 120 s in the sandbox: {FIX}") from None
    finally:
        if scope is not None:
            scope.close()
    if result.returncode == 0:
        return
    why = " / ".join(result.stderr.strip().splitlines()[-3:] or [f"exit status {result.returncode}"])[-400:]
    if "bwrap:" in result.stderr:
        raise SandboxUnavailable(f"bubblewrap failed here ({why}): {FIX}")
    raise SandboxUnavailable(f"the sandbox starts, but the kernel's Python cannot `{PROBE}` in it ({why}): the venv, "
                             f"`lib` or the data are not visible inside; `make sandbox` prints what it binds")


@dataclass
class Sandbox:
    """One kernel's sandbox: its submission folder (copied in), its connection file, its limits, its cgroup."""
    submission: Path
    connection_file: Path | None   # bound read-only at /ipc/kernel.json; the kernel's sockets go beside it
    limits: Limits
    tools: dict[str, str] = field(default_factory=_tools)
    uid: int = field(default_factory=lambda: 100_000 + secrets.randbelow(60_000))
    scope: Scope | None = None

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _read_only(self) -> list[Path]:
        """What the kernel may read: the system, Python, the environment, the course's lib, results and data."""
        paths = [Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc/alternatives",
                                   "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/fonts",
                                   "/etc/localtime", "/etc/ssl/certs", "/etc/mime.types", "/etc/matplotlibrc")]
        paths += [Path(sys.base_prefix), Path(sys.prefix), Path(sysconfig.get_paths()["purelib"]), lib_dir()]
        paths.append(lib_dir().parent / "results")  # the committed results students have too (transfer_finetune's backbone)
        paths += data_dirs()
        unique: list[Path] = []
        for p in paths:
            if p.exists() and not any(p == q or q in p.parents for q in unique):
                unique = [q for q in unique if p not in q.parents] + [p]
        return unique

    def environment(self) -> dict[str, str]:
        """The kernel's whole environment: nothing of the grader's (tokens, paths) leaks in."""
        keep = ("NBGRADER_EXECUTION", "NBGRADER_VALIDATING", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LANG",
                "CNN_COURSE_PROGRESS", "FASHION_MNIST_DIR", "TZ")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        from lib.data import cache_dir

        env.update({"HOME": HOME, "USER": "student", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                    "PYTHONPATH": str(lib_dir().parent), "TMPDIR": "/tmp",
                    "MPLCONFIGDIR": "/tmp/matplotlib", "CNN_COURSE_DATA": str(cache_dir()),
                    "PYTHONDONTWRITEBYTECODE": "1", "LANG": env.get("LANG", "C.UTF-8"),
                    # ipykernel's "launched by a client" flag (it then prints no console banner); its parent
                    # is the sandbox's init (pid 1), which it need not poll: the sandbox dies with the grader
                    "JPY_PARENT_PID": "1"})
        return env

    def command(self, kernel_cmd: list[str]) -> list[str]:
        """The command line that runs ``kernel_cmd`` in this sandbox."""
        bwrap = [self.tools["bwrap"], "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
                 "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
        if not self.as_root:
            bwrap.append("--unshare-user")
        bwrap += [*self._private_mounts(), *self._binds(), "--clearenv"]
        for key, value in self.environment().items():
            bwrap += ["--setenv", key, value]
        bwrap += ["--chdir", HOME, "--"]
        enter = self.scope.enter() if self.scope is not None else []
        return [*enter, *self._prlimit(), "--", *bwrap, "/bin/sh", "-c", self._inner_script(), "sandbox", *kernel_cmd]

    def _prlimit(self) -> list[str]:
        lim = self.limits
        nproc = lim.processes if self.as_root else lim.processes + _processes_of(os.getuid())  # leave room for
        return [self.tools["prlimit"], f"--data={lim.memory}", f"--fsize={lim.file_size}", "--core=0",  # the user's own
                f"--nofile={lim.open_files}", f"--nproc={nproc}"]

    def _private_mounts(self) -> list[str]:
        """The sandbox's own file systems, mounted first: what is bound later (a course under /tmp) stays visible."""
        lim = self.limits
        return ["--proc", "/proc", "--dev", "/dev", "--size", str(64 << 20), "--tmpfs", "/dev/shm",
                "--size", str(lim.tmp_size), "--tmpfs", "/tmp", "--size", str(lim.ipc_size), "--tmpfs", IPC,
                "--perms", "0755", "--dir", str(Path(HOME).parent),
                "--size", str(lim.work_size), "--tmpfs", HOME]

    def _binds(self) -> list[str]:
        """The folders above each read-only path, the read-only paths, the submission and the kernel's connection
        file (nothing of the grader: its checks judge the kernel's reports outside, grader/judge.py)."""
        read_only = self._read_only()
        mounted = {Path(p) for p in ("/proc", "/dev", "/dev/shm", "/tmp", IPC, HOME, Path(HOME).parent)}
        parents = sorted({a for p in read_only for a in p.parents if a != Path("/")} - mounted,
                         key=lambda a: len(a.parts))
        args = []
        for d in parents:  # bwrap would make the folders above a mount point private (0700) to root
            if not any(d == q or q in d.parents for q in read_only):
                args += ["--perms", "0755", "--dir", str(d)]
        for p in read_only:
            args += ["--ro-bind", str(p), str(p)]
        args += ["--ro-bind", str(self.submission), "/submission"]
        if self.connection_file is not None:
            args += ["--ro-bind", str(self.connection_file), f"{IPC}/kernel.json"]
        return args

    def _inner_script(self) -> str:
        """Inside: copy the submission into the private tmpfs, hand everything to the kernel's user, drop root."""
        drop = "exec "
        if self.as_root:
            owner = f"{self.uid}:{self.uid}"
            drop = (f"chown -R {owner} {HOME} && chown {owner} {IPC} && chmod 1777 /tmp && "
                    f"exec {self.tools['setpriv']} "
                    f"--reuid={self.uid} --regid={self.uid} --clear-groups --inh-caps=-all --bounding-set=-all -- ")
        return f'mkdir -p {HOME}/work && cp -R /submission/. {HOME}/work/ && cd {HOME}/work && {drop}"$@"'

    def describe(self) -> str:
        return shlex.join(self.command(["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]))


def _processes_of(uid: int) -> int:
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"Uid:\t{uid}\t" in status.read_text():
                count += int(next(l for l in status.read_text().splitlines() if l.startswith("Threads:")).split()[1])
        except (OSError, StopIteration, ValueError):
            continue
    return count


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs in a :class:`Sandbox` and its cgroup. The kernel makes its IPC sockets
    in the sandbox's own small tmpfs (``/ipc``); the grader reaches them through the sandbox's root,
    ``/proc/<its init>/root/ipc``, so nothing of the grader's is writable from inside."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._ipc_dir = Path(tempfile.mkdtemp(prefix="grader-kernel-"))  # the connection file, the grader's side
        self.transport = "ipc"
        self.connection_file = str(self._ipc_dir / "kernel.json")
        self.ip = f"{IPC}/kernel"  # what the kernel reads; the grader's own path is set once the sandbox runs
        self.sandbox: Sandbox | None = None
        self.scope: Scope | None = None

    async def _async_pre_start_kernel(self, **kw):
        check()
        self.kernel_spec.interrupt_mode = "message"  # a signal would stop at the sandbox's boundary
        cwd = Path(kw.get("cwd") or os.getcwd())
        limits = Limits.from_env()
        self.scope = open_scope(limits)
        self.sandbox = Sandbox(cwd, Path(self.connection_file), limits, scope=self.scope)
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        kernel_cmd = [f"{IPC}/kernel.json" if arg == self.connection_file else arg for arg in kernel_cmd]
        if self.sandbox.as_root:  # the kernel's user must read its connection file
            os.chown(self.connection_file, self.sandbox.uid, self.sandbox.uid)
        kw["env"] = {}  # bwrap --clearenv sets the kernel's environment; the launcher itself needs none
        return self.sandbox.command(kernel_cmd), kw

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        await super()._async_launch_kernel(kernel_cmd, **kw)
        init = await _sandbox_init(self.provisioner.pid)
        self.ip = f"/proc/{init}/root{IPC}/kernel"

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            if self.scope is not None:
                _OOM["kills"] += self.scope.oom_kills()
                self.scope.close()
                self.scope = None

    cleanup_resources = _async_cleanup_resources  # what nbclient calls


async def _sandbox_init(bwrap_pid: int, seconds: float = 60) -> int:
    """The process bubblewrap starts in the new namespaces (its first child), whose root is the sandbox's."""
    import asyncio

    children = Path(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children")
    for _ in range(int(seconds / 0.01)):
        try:
            found = children.read_text().split()
        except OSError:
            raise SandboxUnavailable("the sandbox exited as it started: `make sandbox` says why") from None
        if found:
            return int(found[0])
        await asyncio.sleep(0.01)
    raise SandboxUnavailable(f"the sandbox did not start within {seconds:g} s")


class SandboxedExecute(Execute):
    """nbgrader's Execute with every kernel in the sandbox (unless ``SANDBOX=off``), and a limit on the whole
    notebook's time (``Limits.wall_time``, counted from :func:`start_clock`, which the worker calls as it takes
    a submission): a cell running at the limit is stopped, and the cells after it are not run and score 0."""

    kernel_manager_class = Type(SandboxedKernelManager, klass=AsyncKernelManager,
                                help="The sandboxed kernel manager").tag(config=False)

    def __init__(self, *args, **kwargs):
        if enabled():
            kwargs["kernel_manager_class"] = SandboxedKernelManager
            check()  # before any notebook runs: a clear message instead of a kernel that never starts
        super().__init__(*args, **kwargs)
        self.wall_time = Limits.from_env().wall_time
        start, _CLOCK.start = getattr(_CLOCK, "start", None), None  # one submission's clock, used once: a notebook
        self.deadline = (start or time.time()) + self.wall_time       # graded later without start_clock counts from now
        self.timeout_func = self._cell_timeout

    def _remaining(self) -> float:
        return self.deadline - time.time()

    def _cell_timeout(self, cell) -> int:
        return max(1, min(self.timeout or self.wall_time, math.ceil(self._remaining())))

    def _wall_error(self, what: str) -> dict:
        text = (f"{what}: grading this submission took longer than its limit of {self.wall_time} s "
                f"(SANDBOX_WALL_TIME); the cells after it were not run")
        return {"ename": WALL_ERROR, "evalue": text, "traceback": [f"{WALL_ERROR}: {text}"]}

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and cell.source.strip() and self._remaining() <= 0:
            cell.outputs = [nbformat.v4.new_output("error", **self._wall_error("not run"))]
            return cell, resources
        return super().preprocess_cell(cell, resources, index)

    async def _async_handle_timeout(self, timeout, cell=None):
        if self._remaining() <= 0:  # the notebook's limit, not the cell's: a kernel that does not answer
            self.error_on_timeout = self._wall_error("stopped")  # the interrupt is not waited for
            self.raise_on_iopub_timeout = False
        return await super()._async_handle_timeout(timeout, cell)


WALL_ERROR = "GradingTimeLimit"
_CLOCK = threading.local()


def start_clock(at: float | None = None) -> None:
    """Start the wall-clock limit of the submission this thread grades (``SandboxedExecute`` reads it)."""
    _CLOCK.start = time.time() if at is None else at


class SandboxedValidator(Validator):
    """nbgrader's Validator (``nbgrader validate``) with its kernel in the sandbox."""

    preprocessors = List([CheckCellMetadata, ClearOutput, SandboxedExecute])
