"""Experiments too long for a book build: run from the command line, results committed, chapters plot them.

    python -m lib.experiments list                 # what there is
    python -m lib.experiments NAME                 # run it; writes results/NAME.json (+ any artifacts)
    python -m lib.experiments NAME --quick         # a seconds-long smoke run into a scratch folder

Each experiment is a module ``lib/experiments/NAME.py`` with a docstring and
``run(*, quick: bool, out_dir: Path) -> dict``; the dict (plain JSON data) is saved with its
provenance: the command, the git commit and tree of the code it ran, the hardware and device, library
versions and the wall time. Files it writes beside the record (checkpoints) are listed by the module in
``results["artifacts"]``; their sha256 goes into the record, and :func:`artifact` checks it on every load.

A full run refuses to start from a working tree whose code (``lib/``, the pins) differs from the commit,
because its record could not say what ran: commit first, or pass ``--allow-dirty``, which records the
diff and its sha256 instead. A chapter reads a record back with :func:`load`, which says how to make it
if it is missing.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from pathlib import Path

from lib.records import (CODE_PATHS, REPO_ROOT, RESULTS_DIR, ArtifactMismatchError, DirtyTreeError, artifact,
                         code_state, describe, load, provenance, sha256, training_seconds, write_json)

__all__ = ["CODE_PATHS", "REPO_ROOT", "RESULTS_DIR", "ArtifactMismatchError", "DirtyTreeError", "artifact",
           "code_state", "describe", "load", "module", "names", "provenance", "run", "sha256", "training_seconds"]


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def module(name: str):
    if name not in names():
        raise KeyError(f"no experiment {name!r}; there are: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}")


def run(name: str, *, quick: bool = False, out_dir: Path | None = None, allow_dirty: bool = False) -> Path:
    """Run experiment ``name``; write ``<out_dir>/<name>.json`` and return its path.

    A full run from a tree with uncommitted code changes raises :class:`DirtyTreeError` unless
    ``allow_dirty`` (the record then holds the diff); a ``quick`` smoke run always records the diff.
    """
    mod = module(name)
    out_dir = Path(out_dir) if out_dir is not None else (REPO_ROOT / "runs" if quick else RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = f"python -m lib.experiments {name}" + (" --quick" if quick else "")
    record = {"name": name, "description": (mod.__doc__ or "").strip().splitlines()[0], "quick": quick,
              "provenance": provenance(command, allow_dirty=allow_dirty or quick)}
    start = time.perf_counter()
    results = mod.run(quick=quick, out_dir=out_dir)
    record["provenance"]["wall_seconds"] = round(time.perf_counter() - start, 1)
    record["artifacts"] = {}
    for filename in results.get("artifacts", []):
        path = out_dir / filename
        if not path.is_file():
            raise FileNotFoundError(f"experiment {name} lists the artifact {filename} but did not write {path}")
        record["artifacts"][filename] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    record["results"] = results
    return write_json(out_dir / f"{name}.json", record, indent=1)


