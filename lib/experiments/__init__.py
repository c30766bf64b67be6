"""Experiments too long for a book build: run from the command line, results committed, chapters plot them.

    python -m lib.experiments list                 # what there is
    python -m lib.experiments NAME                 # run it; writes results/NAME.json (+ any artifacts)
    python -m lib.experiments NAME --quick         # a seconds-long smoke run into a scratch folder

Each experiment is a module ``lib/experiments/NAME.py`` with a docstring and
``run(*, quick: bool, out_dir: Path) -> dict``; the dict (plain JSON data) is saved with its
provenance: the command, the git commit, the hardware, library versions and the wall time.
A chapter reads it back with :func:`load`, which says how to make it if it is missing.
"""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "results"


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def module(name: str):
    if name not in names():
        raise KeyError(f"no experiment {name!r}; there are: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}")


def provenance(command: str) -> dict[str, Any]:
    import torch
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"command": command, "commit": commit, "uncommitted_changes": dirty,
            "hardware": {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run(name: str, *, quick: bool = False, out_dir: Path | None = None) -> Path:
    """Run experiment ``name``; write ``<out_dir>/<name>.json`` and return its path."""
    mod = module(name)
    out_dir = Path(out_dir) if out_dir is not None else (REPO_ROOT / "runs" if quick else RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = f"python -m lib.experiments {name}" + (" --quick" if quick else "")
    record = {"name": name, "description": (mod.__doc__ or "").strip().splitlines()[0], "quick": quick,
              "provenance": provenance(command)}
    start = time.perf_counter()
    record["results"] = mod.run(quick=quick, out_dir=out_dir)
    record["provenance"]["wall_seconds"] = round(time.perf_counter() - start, 1)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path


def load(name: str, results_dir: Path | None = None) -> dict[str, Any]:
    """The committed record of experiment ``name`` (results and provenance)."""
    path = Path(results_dir or RESULTS_DIR) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m lib.experiments {name}` "
                                f"(from the repository root, in the course's environment) to make it")
    record = json.loads(path.read_text())
    if record.get("quick"):
        raise ValueError(f"{path} holds a --quick smoke run, not real results: run "
                         f"`python -m lib.experiments {name}` without --quick")
    return record


def describe(record: dict[str, Any]) -> str:
    """One line a chapter prints under a loaded result: where the numbers came from."""
    p = record["provenance"]
    return (f"Loaded from results/{record['name']}.json: made by `{p['command']}` at commit {p['commit'][:10]} "
            f"on {p['hardware']['cpu']} ({p['hardware']['torch_threads']} threads"
            f"{', ' + p['hardware']['cuda'] if p['hardware'].get('cuda') else ''}) "
            f"in {p['wall_seconds'] / 60:.1f} min, {p['started_utc'][:10]}.")
