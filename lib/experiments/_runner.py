"""The one part runner of the experiments: keyed parts, worker processes, resume, atomic writes, failures
reported together.

An experiment is a list of :class:`Part` (one network to train, one test to run) and what it makes of their
results. ``run_parts(name, parts, out_dir)`` runs every part that has not finished yet, in
``CNN_COURSE_WORKERS`` worker processes (default: the CPU cores, at most 4), each of one torch thread, and keeps
each finished part's result as ``<out_dir>/<name>.parts/<key>.json``, written atomically: run the same command
again after a kill and only the missing parts run. A resumable part's function takes ``state_path=`` and saves
its :class:`lib.train.TrainState` there as it goes, so a part killed midway continues too. A part that raises is
reported at once and the others go on; the failures are raised together at the end, the finished parts kept.

A part's key names what it is (variant, seed) and ends with :func:`config_key`, the hash of the experiment's
*whole* configuration: a part made with another configuration is never reused.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch

from lib.records import code_state, write_json


class Config(Mapping):
    """The base of an experiment's configuration: a frozen dataclass (nanoGPT's ``GPTConfig``), with its fields
    named, typed and commented, and a variant made by ``dataclasses.replace(FULL, seeds=(0, 1))``. It reads as
    a mapping too (``cfg["lr"]``, ``dict(cfg)``), so that the records written from it and the chapters that
    read them keep their plain JSON ``config``; :func:`config_key` hashes all of it."""

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def plain(self) -> dict[str, Any]:
        """The configuration as JSON data (tuples as lists), as records hold it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.items()}


def config_key(cfg: Mapping[str, Any] | Any) -> str:
    """12 hex digits of the sha1 of the whole configuration (a dict or a dataclass), tuples as lists."""
    data = asdict(cfg) if is_dataclass(cfg) else dict(cfg)
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=list).encode()).hexdigest()[:12]


def default_workers() -> int:
    return int(os.environ.get("CNN_COURSE_WORKERS", min(4, os.cpu_count() or 1)))


@dataclass(frozen=True)
class Part:
    """One unit of an experiment: ``fn(*args, **kwargs)`` (a module-level function, so that a worker process
    can run it) returns the part's result, plain JSON data.

    ``key``: the file name of the finished part (unique in the experiment; ends with the configuration's hash).
    ``label``: how messages name it. ``artifact``: a file the part must have written (a checkpoint); while it
    is missing the part is not finished. ``resumable``: ``fn`` takes ``state_path=`` to save its training state
    in. ``threads``: torch's threads while it runs (None: leave them)."""
    key: str
    fn: Callable[..., dict]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    artifact: Path | None = None
    resumable: bool = True
    threads: int | None = 1


def parts_folder(name: str, out_dir: Path) -> Path:
    return Path(out_dir) / f"{name}.parts"


def part_file(name: str, out_dir: Path, key: str) -> Path:
    return parts_folder(name, out_dir) / f"{key}.json"


def finished(folder: Path, key: str) -> dict | None:
    """The result of part ``key`` if it finished earlier, else None."""
    path = Path(folder) / f"{key}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def keep(folder: Path, key: str, result: dict) -> dict:
    """Keep the result of part ``key`` (atomically: a kill leaves no half-written part)."""
    write_json(Path(folder) / f"{key}.json", result)
    return result


def _run_one(task: tuple[Part, Path, str]) -> dict:
    part, folder, commit = task
    label = part.label or part.key
    path = folder / f"{part.key}.json"
    done = finished(folder, part.key)
    if done is not None and (part.artifact is None or Path(part.artifact).is_file()):
        print(f"{label}: finished earlier ({path.name})", flush=True)
        return done
    state = path.with_suffix(".state.pt")
    start = time.perf_counter()
    try:
        if part.threads is not None:
            torch.set_num_threads(part.threads)
        kwargs = {**part.kwargs, **({"state_path": state} if part.resumable else {})}
        result = part.fn(*part.args, **kwargs) | {"trained_at_commit": commit}
    except Exception as e:  # noqa: BLE001 - reported now; the other parts go on
        print(f"{label}: FAILED: {type(e).__name__}: {e}", flush=True)
        return {"part": part.key, "label": label, "error": f"{type(e).__name__}: {e}"}
    keep(folder, part.key, result)
    state.unlink(missing_ok=True)
    print(f"{label}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return result


def run_parts(name: str, parts: Sequence[Part], out_dir: Path, *, workers: int | None = None) -> list[dict]:
    """Run the unfinished ``parts`` of experiment ``name`` (see the module docstring); return every part's
    result in the order of ``parts``. Raises ``RuntimeError`` naming every failed part, after all have run."""
    keys = [p.key for p in parts]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name}: two parts share a key: {sorted(k for k in keys if keys.count(k) > 1)[:3]}")
    folder = parts_folder(name, out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    commit = code_state()["commit"]
    tasks = [(p, folder, commit) for p in parts]
    workers = default_workers() if workers is None else workers
    if workers > 1 and len(tasks) > 1:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
            done = pool.map(_run_one, tasks, chunksize=1)
    else:
        done = [_run_one(t) for t in tasks]
    failed = [f"{r['label']}: {r['error']}" for r in done if "error" in r]
    if failed:
        raise RuntimeError(f"{len(failed)} part(s) failed ({'; '.join(failed)}); the finished ones are kept in "
                           f"{folder}: run the same command again to train the rest")
    return done


def remove_parts(name: str, out_dir: Path) -> None:
    """The run is complete and its record written from the parts: drop them."""
    shutil.rmtree(parts_folder(name, out_dir), ignore_errors=True)
