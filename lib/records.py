"""The records of experiments: where they live, their provenance, the checksums of their files, loading them.

A record is ``results/NAME.json``: the experiment's results with the provenance of the run that made them
(the command, the git commit and tree of the code, any uncommitted diff and its sha256, the hardware, library
versions, the wall time) and the sha256 of every file it wrote beside it (``artifacts``), checked by
:func:`artifact` on every load. This module depends on nothing else of ``lib``: the experiments that write
records, the transfer tools that read a checkpoint through one, and the chapters all come here.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results"
# What an experiment runs: a change here changes its results.
CODE_PATHS = ("lib", "pyproject.toml", "requirements.txt", "constraints.txt")


class DirtyTreeError(RuntimeError):
    """The code an experiment would run differs from the commit its record would name."""


class ArtifactMismatchError(RuntimeError):
    """A file an experiment wrote is not the file its record describes."""


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_state() -> dict[str, Any]:
    """The commit, the git tree of the code paths, and what in them differs from the commit (if anything)."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        tree = _git("rev-parse", "HEAD:lib").strip()
        changed = [line[3:] for line in _git("status", "--porcelain", "--untracked-files=all", "--",
                                             *CODE_PATHS).splitlines()
                   if not line[3:].endswith((".pyc", "/")) and "__pycache__" not in line]
        diff = _git("diff", "HEAD", "--", *CODE_PATHS) if changed else ""
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "lib_tree": None, "uncommitted_changes": None, "changed_files": []}
    state = {"commit": commit, "lib_tree": tree, "uncommitted_changes": bool(changed), "changed_files": changed}
    if changed:
        untracked = {f: sha256(REPO_ROOT / f) for f in changed if (REPO_ROOT / f).is_file()
                     and not _git("ls-files", "--", f).strip()}
        state |= {"diff": diff, "diff_sha256": hashlib.sha256(diff.encode()).hexdigest(),
                  "untracked_sha256": untracked}
    return state


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(command: str, *, allow_dirty: bool = True) -> dict[str, Any]:
    import torch

    state = code_state()
    if state["uncommitted_changes"] and not allow_dirty:
        files = ", ".join(state["changed_files"][:6]) + (" ..." if len(state["changed_files"]) > 6 else "")
        raise DirtyTreeError(
            f"the code this experiment runs has uncommitted changes ({files}), so its record could not say "
            f"what ran: commit them first (git commit), or pass --allow-dirty to record the diff and its sha256")
    cpu = cpu_name()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"command": command, **state,
            "hardware": {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                         "load_average_at_start": load},
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_json(path: Path, data: Any, *, indent: int | None = None) -> Path:
    """Write ``data`` as JSON to ``path`` atomically: a reader sees the old file or the whole new one."""
    tmp = Path(path).with_suffix(Path(path).suffix + ".part")
    tmp.write_text(json.dumps(data, indent=indent) + ("\n" if indent is not None else ""))
    tmp.replace(path)
    return Path(path)


def artifact(record: dict[str, Any], filename: str, results_dir: Path | None = None) -> Path:
    """The path of a file an experiment wrote, after checking it is the file its record describes."""
    path = Path(results_dir or os.environ.get("CNN_COURSE_RESULTS_DIR") or RESULTS_DIR) / filename
    listed = record.get("artifacts", {}).get(filename)
    if listed is None:
        raise ArtifactMismatchError(f"results/{record['name']}.json lists no artifact {filename!r} (it lists "
                                    f"{sorted(record.get('artifacts', {}))}): rerun `python -m lib.experiments "
                                    f"{record['name']}`")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: restore it (git checkout -- {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}) "
                                f"or rerun `python -m lib.experiments {record['name']}`")
    found = sha256(path)
    if found != listed["sha256"]:
        raise ArtifactMismatchError(
            f"{path} is not the file that results/{record['name']}.json describes (sha256 {found[:12]}..., "
            f"recorded {listed['sha256'][:12]}...): it was changed or truncated. Restore it with git checkout, "
            f"or rerun `python -m lib.experiments {record['name']}` to make both anew")
    return path


def load(name: str, results_dir: Path | None = None) -> dict[str, Any]:
    """The committed record of experiment ``name`` (results and provenance).

    For work on a chapter before the full run exists: ``CNN_COURSE_RESULTS_DIR=runs`` reads records from
    another folder, and ``CNN_COURSE_ALLOW_QUICK=1`` accepts a ``--quick`` record (never in the book's build).
    """
    results_dir = results_dir or os.environ.get("CNN_COURSE_RESULTS_DIR") or RESULTS_DIR
    path = Path(results_dir) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m lib.experiments {name}` "
                                f"(from the repository root, in the course's environment) to make it")
    record = json.loads(path.read_text())
    if record.get("quick") and os.environ.get("CNN_COURSE_ALLOW_QUICK") != "1":
        raise ValueError(f"{path} holds a --quick smoke run, not real results: run "
                         f"`python -m lib.experiments {name}` without --quick")
    return record


def describe(record: dict[str, Any]) -> str:
    """One line a chapter prints under a loaded result: where the numbers came from."""
    p = record["provenance"]
    dirty = (f", with uncommitted changes (diff sha256 {p['diff_sha256'][:10]})" if p.get("uncommitted_changes")
             and p.get("diff_sha256") else "")
    return (f"Loaded from results/{record['name']}.json: made by `{p['command']}` at commit {p['commit'][:10]}"
            f"{dirty} on {p['hardware']['cpu']} ({p['hardware']['torch_threads']} thread{'s' if p['hardware']['torch_threads'] != 1 else ''}"
            f"{', ' + p['hardware']['cuda'] if p['hardware'].get('cuda') else ''}) "
            f"in {p['wall_seconds'] / 60:.1f} min{_training_time(record, p['wall_seconds'])}, {p['started_utc'][:10]}.")


def training_seconds(record: dict[str, Any]) -> float:
    """The training time summed over a record's runs (``train_seconds`` of every row of its result lists)."""
    results = record.get("results", {})
    if isinstance(results.get("train_seconds_total"), (int, float)):
        return float(results["train_seconds_total"])
    return float(sum(row.get("train_seconds", 0) for value in results.values() if isinstance(value, list)
                     for row in value if isinstance(row, dict) and isinstance(row.get("train_seconds"), (int, float))))


def _training_time(record: dict[str, Any], wall: float) -> str:
    # Parallel workers, or a resumed run that reuses parts trained earlier: the wall time understates the work.
    total = training_seconds(record)
    if total <= 1.05 * wall:
        return ""
    return (f" ({total / 3600:.1f} h of training summed over its parts: parallel workers, or earlier "
            f"invocations it resumed)")
