"""Every kernel that runs a submission's code starts inside bubblewrap (Debian's ``bubblewrap``).

Only the kernel is untrusted, and only the kernel is sandboxed: the grader (nbgrader, the gradebook, the
feedback) runs outside and talks to it over ZeroMQ IPC sockets in a directory bound into the sandbox for
that purpose. Inside, the kernel sees:

* read-only: the system (``/usr``, ``/etc``'s few files that programs need), the Python installation and
  the virtual environment, the course's ``lib`` and its data; nothing of the grader (its checks judge the
  kernel's reports in the grader's own process: ``grader/judge.py``);
* writable: a private copy of that one submission's folder and a private ``/tmp``, both size-capped tmpfs;
* nothing else: not the gradebook, ``submitted/``, other students' work, ``solutions/``, the rest of the
  grader, the course root or the instructor's home;
* its own network namespace (no network at all), PID namespace (it cannot see or signal the grader; every
  process it starts ends with it), IPC and UTS namespaces, a new session (no terminal to write into);
* limits: memory (``RLIMIT_DATA``, default 4 GiB per process), processes, the size of any file, open files.

Run as root (a grading server, CI), bubblewrap builds the sandbox with root's rights and the kernel then
runs as an unprivileged user id of its own (``setpriv``), so the process limit counts only its processes.
Run as a normal user, bubblewrap uses an unprivileged user namespace and the kernel keeps that user's id.

:func:`check` says whether the sandbox can run here; :class:`SandboxedExecute` is nbgrader's ``Execute``
with every kernel sandboxed (``grader.config`` installs it; ``SANDBOX=off`` turns it off, loudly).
"""
from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client import AsyncKernelManager
from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, Execute
from nbgrader.validator import Validator
from traitlets import List, Type

HOME = "/home/student"


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
    unit: ``SANDBOX_MEMORY=6G``)."""
    memory: int = 4 << 30        # RLIMIT_DATA of every process: heap and anonymous memory (tensors)
    processes: int = 64          # RLIMIT_NPROC: processes and threads of the kernel's own user id
    file_size: int = 256 << 20   # RLIMIT_FSIZE: the largest file it may write
    work_size: int = 512 << 20   # the tmpfs holding its copy of the submission folder
    tmp_size: int = 512 << 20    # the tmpfs at /tmp
    open_files: int = 1024       # RLIMIT_NOFILE

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Limits":
        env = os.environ if env is None else env
        names = {"memory": "SANDBOX_MEMORY", "processes": "SANDBOX_PROCESSES", "file_size": "SANDBOX_FILE_SIZE",
                 "work_size": "SANDBOX_WORK_SIZE", "tmp_size": "SANDBOX_TMP_SIZE", "open_files": "SANDBOX_OPEN_FILES"}
        return cls(**{k: parse_size(env[v], v) for k, v in names.items() if env.get(v)})

    def describe(self) -> str:
        return (f"memory {human(self.memory)} per process, {self.processes} processes, files up to "
                f"{human(self.file_size)}, {human(self.work_size)} for its folder and {human(self.tmp_size)} of /tmp")


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


def check() -> None:
    """Raise :class:`SandboxUnavailable` unless a trivial command runs in the sandbox here (cached)."""
    if "ok" in _CHECKED:
        return
    if "error" in _CHECKED:
        raise SandboxUnavailable(_CHECKED["error"])
    try:
        tools = _tools()
        with tempfile.TemporaryDirectory(prefix="grader-probe-") as tmp:
            spec = Sandbox(Path(tmp), Path(tmp), Limits(), tools)
            result = subprocess.run(spec.command(["/bin/true"]), capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise SandboxUnavailable(f"bubblewrap failed here ({result.stderr.strip()[:300] or result.returncode}): {FIX}")
    except SandboxUnavailable as e:
        _CHECKED["error"] = str(e)
        raise
    _CHECKED["ok"] = "1"


@dataclass
class Sandbox:
    """One kernel's sandbox: its submission folder (copied in), its IPC directory, its limits."""
    submission: Path
    ipc_dir: Path
    limits: Limits
    tools: dict[str, str] = field(default_factory=_tools)
    uid: int = field(default_factory=lambda: 100_000 + secrets.randbelow(60_000))

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _read_only(self) -> list[Path]:
        """What the kernel may read: the system, Python, the environment, the course's lib and data."""
        paths = [Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc/alternatives",
                                   "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/fonts",
                                   "/etc/localtime", "/etc/ssl/certs", "/etc/mime.types", "/etc/matplotlibrc")]
        paths += [Path(sys.base_prefix), Path(sys.prefix), Path(sysconfig.get_paths()["purelib"]), lib_dir()]
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
        lim = self.limits
        prlimit = [self.tools["prlimit"], f"--data={lim.memory}", f"--fsize={lim.file_size}", "--core=0",
                   f"--nofile={lim.open_files}"]
        if self.as_root:
            prlimit.append(f"--nproc={lim.processes}")
        else:  # the limit counts every process of this user: leave room for the ones already running
            prlimit.append(f"--nproc={lim.processes + _processes_of(os.getuid())}")
        bwrap = [self.tools["bwrap"], "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
                 "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
        if not self.as_root:
            bwrap.append("--unshare-user")
        read_only = self._read_only()
        parents = sorted({a for p in [*read_only, Path(HOME)] for a in p.parents if a != Path("/")},
                         key=lambda a: len(a.parts))
        for d in parents:  # bwrap would make the folders above a mount point private (0700) to root
            if not any(d == q or q in d.parents for q in read_only):
                bwrap += ["--perms", "0755", "--dir", str(d)]
        for p in read_only:
            bwrap += ["--ro-bind", str(p), str(p)]
        bwrap += ["--proc", "/proc", "--dev", "/dev", "--size", str(64 << 20), "--tmpfs", "/dev/shm",
                  "--size", str(lim.tmp_size), "--tmpfs", "/tmp",
                  "--size", str(lim.work_size), "--tmpfs", HOME,
                  "--ro-bind", str(self.submission), "/submission",
                  "--bind", str(self.ipc_dir), str(self.ipc_dir),
                  "--clearenv"]
        for key, value in self.environment().items():
            bwrap += ["--setenv", key, value]
        bwrap += ["--chdir", HOME, "--"]
        # Inside: copy the submission into the private tmpfs, hand everything to the kernel's user, drop root.
        drop = ""
        if self.as_root:
            drop = (f"chown -R {self.uid}:{self.uid} {HOME} && chmod 1777 /tmp && exec {self.tools['setpriv']} "
                    f"--reuid={self.uid} --regid={self.uid} --clear-groups --inh-caps=-all --bounding-set=-all -- ")
        else:
            drop = "exec "
        script = f'mkdir -p {HOME}/work && cp -R /submission/. {HOME}/work/ && cd {HOME}/work && {drop}"$@"'
        return [*prlimit, "--", *bwrap, "/bin/sh", "-c", script, "sandbox", *kernel_cmd]

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
    """A kernel manager whose kernel runs in a :class:`Sandbox` and talks over IPC sockets in its own directory."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._ipc_dir = Path(tempfile.mkdtemp(prefix="grader-ipc-"))
        self.transport = "ipc"
        self.connection_file = str(self._ipc_dir / "kernel.json")
        self.ip = str(self._ipc_dir / "kernel")
        self.sandbox: Sandbox | None = None

    async def _async_pre_start_kernel(self, **kw):
        check()
        self.kernel_spec.interrupt_mode = "message"  # a signal would stop at the sandbox's boundary
        cwd = Path(kw.get("cwd") or os.getcwd())
        self.sandbox = Sandbox(cwd, self._ipc_dir, Limits.from_env())
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        if self.sandbox.as_root:  # the kernel's user must read its connection file and make its sockets
            os.chown(self._ipc_dir, self.sandbox.uid, self.sandbox.uid)
            os.chown(self.connection_file, self.sandbox.uid, self.sandbox.uid)
        kw["env"] = {}  # bwrap --clearenv sets the kernel's environment; the launcher itself needs none
        return self.sandbox.command(kernel_cmd), kw

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources  # what nbclient calls


class SandboxedExecute(Execute):
    """nbgrader's Execute with every kernel in the sandbox (unless ``SANDBOX=off``)."""

    kernel_manager_class = Type(SandboxedKernelManager, klass=AsyncKernelManager,
                                help="The sandboxed kernel manager").tag(config=False)

    def __init__(self, *args, **kwargs):
        if enabled():
            kwargs["kernel_manager_class"] = SandboxedKernelManager
            check()  # before any notebook runs: a clear message instead of a kernel that never starts
        super().__init__(*args, **kwargs)


class SandboxedValidator(Validator):
    """nbgrader's Validator (``nbgrader validate``) with its kernel in the sandbox."""

    preprocessors = List([CheckCellMetadata, ClearOutput, SandboxedExecute])
