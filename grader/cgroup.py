"""One control group per sandbox: its memory and its processes are limited for the sandbox as a whole.

``RLIMIT_DATA`` and ``RLIMIT_NPROC`` count per process (and per user), so a kernel with three children could hold
four times its memory. A cgroup counts every process inside, their threads, and what they write to the sandbox's
tmpfs folders. Used here, in order:

* cgroup v2 with the ``memory`` and ``pids`` controllers: a group per sandbox under ``cnn-grader/`` at the root
  this process sees (``memory.max``, ``memory.swap.max`` 0, ``pids.max``, and ``memory.oom.group``: an overrun stops
  the whole sandbox);
* otherwise cgroup v1's ``memory`` and ``pids`` hierarchies: a group in each, below this process's own.

Creating them takes root (a grading server, a CI container) or a delegated subtree; where neither is possible,
:func:`Scope.create` raises :class:`CgroupUnavailable` with the fix. The sandbox's first process joins the group
before it starts bubblewrap (:meth:`Scope.enter`), so nothing inside starts outside it; :meth:`Scope.close`
kills what is left and removes the group. A grader killed before it could close (a lost Dask worker, SIGKILL, a
crash) leaves its empty groups behind; :func:`sweep`, run by each :meth:`Scope.create`, removes the ones that
have been empty for longer than a sandbox lives (:data:`STALE_AFTER`).
"""
from __future__ import annotations

import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids")
PREFIX = "cnn-grader-sandbox-"  # v1: the group's name beside other groups; v2: ``cnn-grader/sandbox-*``
# A live sandbox's group is empty only between its mkdir and its first process (well under a second) and between
# its last process and close (a few seconds); the wall-clock limit (SANDBOX_WALL_TIME, 15 min) bounds the rest.
STALE_AFTER = 3600.0


class CgroupUnavailable(RuntimeError):
    """No cgroup with memory and pids limits can be made here; the message says why."""


def _mounts() -> list[tuple[str, str, str, str]]:
    """(fstype, mount point, the cgroup path mounted there, super options) of every cgroup file system."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        rest = fields[fields.index("-") + 1:]
        if rest[0] in ("cgroup", "cgroup2"):
            out.append((rest[0], fields[4], fields[3], rest[2] if len(rest) > 2 else ""))
    return out


def _own_paths() -> dict[str, str]:
    """controller ("" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    return paths


def _write(path: Path, value: str) -> None:
    path.write_text(value)


@dataclass
class Scope:
    """The cgroup folders of one sandbox (one for v2; memory and pids for v1)."""
    dirs: list[Path]
    version: int

    @classmethod
    def create(cls, memory: int, processes: int) -> Scope:
        sweep()
        name = f"sandbox-{os.getpid()}-{secrets.token_hex(4)}"
        errors = []
        for make in (_make_v2, _make_v1):
            try:
                scope = make(name)
            except (OSError, LookupError) as e:
                errors.append(f"{make.__doc__}: {e}")
                continue
            try:
                scope._limit(memory, processes)
            except OSError as e:
                scope.close()
                errors.append(f"{make.__doc__}: {e}")
                continue
            return scope
        raise CgroupUnavailable("; ".join(errors))

    def _limit(self, memory: int, processes: int) -> None:
        if self.version == 2:
            group = self.dirs[0]
            _write(group / "memory.max", str(memory))
            _write(group / "pids.max", str(processes))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if (group / name).exists():
                    _write(group / name, value)
            return
        mem, pids = self.dirs
        _write(mem / "memory.limit_in_bytes", str(memory))
        try:  # swap counted too, where the kernel accounts it
            _write(mem / "memory.memsw.limit_in_bytes", str(memory))
        except OSError:
            pass
        _write(pids / "pids.max", str(processes))

    def enter(self) -> list[str]:
        """A command prefix that moves its own process into this group, then runs the rest of the command."""
        procs = [str(d / "cgroup.procs") for d in self.dirs]
        script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
        return ["/bin/sh", "-c", script, "cgroup-enter", *procs, "--"]

    def oom_kills(self) -> int:
        """How many processes the kernel killed for going past the memory limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            lines = (self.dirs[0] / name).read_text().splitlines()
        except OSError:
            return 0
        return sum(int(line.split()[1]) for line in lines if line.startswith("oom_kill "))

    def peak(self) -> int:
        """The most memory the sandbox held at once, in bytes (0 where the kernel does not say)."""
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            try:
                return int((self.dirs[0] / name).read_text())
            except (OSError, ValueError):
                continue
        return 0

    def close(self) -> None:
        """Kill every process left in the group, then remove it."""
        for _ in range(50):
            pids = {int(p) for d in self.dirs if d.exists() for p in _read(d / "cgroup.procs").split()}
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy a moment longer, while the last processes exit
                    time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _v2_root() -> Path:
    """The cgroup2 mount whose root offers the memory and pids controllers."""
    for _, point, _, _ in (m for m in _mounts() if m[0] == "cgroup2"):
        root = Path(point)
        if set(CONTROLLERS) <= set(_read(root / "cgroup.controllers").split()):
            return root
    raise LookupError("no cgroup2 mount with the memory and pids controllers")


def _make_v2(name: str) -> Scope:
    """cgroup v2"""
    root = _v2_root()
    enable = " ".join(f"+{c}" for c in CONTROLLERS)
    parent = root / "cnn-grader"
    if not set(CONTROLLERS) <= set(_read(root / "cgroup.subtree_control").split()):
        _write(root / "cgroup.subtree_control", enable)
    parent.mkdir(exist_ok=True)
    if not set(CONTROLLERS) <= set(_read(parent / "cgroup.subtree_control").split()):
        _write(parent / "cgroup.subtree_control", enable)
    (parent / name).mkdir()
    return Scope([parent / name], 2)


def _v1_parent(controller: str) -> Path:
    """Where cgroup v1's ``controller`` hierarchy has this process's own group: the sandboxes' groups go below it."""
    own = _own_paths()
    found = [m for m in _mounts() if m[0] == "cgroup" and controller in m[3].split(",")]
    if not found or controller not in own:
        raise LookupError(f"no cgroup v1 {controller} hierarchy")
    _, point, mounted, _ = found[0]
    inside = os.path.relpath(own[controller], mounted) if own[controller].startswith(mounted) else "."
    return (Path(point) / inside).resolve()


def _make_v1(name: str) -> Scope:
    """cgroup v1"""
    dirs = []
    for controller in CONTROLLERS:
        group = _v1_parent(controller) / f"cnn-grader-{name}"
        try:
            group.mkdir()
        except OSError:
            Scope(dirs, 1).close()
            raise
        dirs.append(group)
    return Scope(dirs, 1)


def groups() -> list[Path]:
    """This machine's (this container's) sandbox groups, in the places this process makes them: v2's
    ``cnn-grader/``; in v1, those below this process's memory group and their twins in the pids hierarchy. (v1's
    pids hierarchy can be one for the whole host, shared with other containers' graders: a group there without
    a twin in our memory group is another's.)"""
    try:
        root = _v2_root()
    except (OSError, LookupError):
        root = None
    if root is not None:
        return _children(root / "cnn-grader", "sandbox-")
    try:
        memory = _children(_v1_parent("memory"), PREFIX)
    except (OSError, LookupError):
        return []
    try:
        pids = _v1_parent("pids")
    except (OSError, LookupError):
        return memory
    return memory + [pids / d.name for d in memory if (pids / d.name).is_dir()]


def _children(parent: Path, prefix: str) -> list[Path]:
    try:
        return [d for d in parent.iterdir() if d.name.startswith(prefix) and d.is_dir()]
    except OSError:
        return []


def sweep(older_than: float = STALE_AFTER) -> list[Path]:
    """Remove the sandbox groups a killed grader left: empty, and made more than ``older_than`` seconds ago.

    The kernel refuses to remove a group that holds a process, so a live sandbox's group stays whatever its age.
    Returns the groups removed."""
    removed, now = [], time.time()
    for group in groups():
        try:
            if now - group.stat().st_mtime < older_than or _read(group / "cgroup.procs").split():
                continue
            group.rmdir()
        except OSError:
            continue
        removed.append(group)
    return removed
