#!/usr/bin/env python
"""Time the book's build as the README runs it (`make book`): a cold build (empty jupyter-cache: every chapter
executes), a warm rebuild (nothing changed: nothing may execute), and each chapter's execution time as the
jupyter-cache recorded it.

    .venv/bin/python benchmarks/bench_book.py [--json PATH] [--keep DIR]

It builds a private copy of the committed files (`git ls-files`, so uncommitted edits are left out and the
working tree's _build/ is never touched), sharing this checkout's .venv and data/. A benchmark, not a test:
expect several minutes. benchmarks/bench_course.py runs the same steps in a fresh clone, after its own setup.

Targets (2-core machine): cold build under 15 minutes, warm rebuild under 1 minute, each chapter under 3 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"cold_build_s": 15 * 60, "warm_build_s": 60, "chapter_s": 3 * 60}


def timed(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> tuple[float, int]:
    """Run cmd in cwd, output to log; (seconds, exit status)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            env=dict(os.environ, **(env or {}))).returncode
    return time.perf_counter() - start, rc


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def private_copy(dest: Path) -> Path:
    """The committed files of this checkout in dest, with .venv and data/ linked (not copied)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for shared in (".venv", "data"):
        if (ROOT / shared).exists() and not (dest / shared).exists():
            (dest / shared).symlink_to((ROOT / shared).resolve())
    return dest


def chapter_times(book_root: Path) -> dict[str, float]:
    """{docname: seconds} for every notebook in the book's jupyter-cache (the record of its current code)."""
    from jupyter_cache import get_cache

    cache_dir = book_root / "_build" / ".jupyter_cache"
    if not cache_dir.is_dir():
        return {}
    times: dict[str, tuple[float, float]] = {}
    for record in get_cache(str(cache_dir)).list_cache_records():
        uri = Path(record.uri)
        try:
            doc = uri.resolve().relative_to(book_root.resolve()).with_suffix("").as_posix()
        except ValueError:
            continue
        seconds = (record.data or {}).get("execution_seconds")
        created = record.created.timestamp()
        if seconds is not None and (doc not in times or created > times[doc][1]):
            times[doc] = (float(seconds), created)  # the newest record of a notebook is its current code
    return {doc: round(s, 1) for doc, (s, _) in sorted(times.items())}


def machine() -> dict:
    from lib.records import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "host": platform.node()}


def provenance(repo: Path) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "commit_date": git("log", "-1", "--format=%cI"),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def bench_book(book_root: Path, logs: Path, shared_venv: bool = False) -> dict:
    """Cold build (empty cache), warm rebuild, chapter times, in book_root (set up already).
    shared_venv: the .venv is this checkout's; tell make not to (re)install into it."""
    shutil.rmtree(book_root / "_build", ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    make = ["make", "--no-print-directory", *(["-o", ".venv/.installed"] if shared_venv else []), "book"]
    out: dict = {}
    print("cold build (every chapter executes) ...", flush=True)
    out["cold_build_s"], out["cold_build_exit"] = timed(make, book_root, logs / "cold-build.log")
    out["chapters_s"] = chapter_times(book_root)
    if out["cold_build_exit"]:
        out["cold_build_error"] = build_errors(logs / "cold-build.log")
        print(f"cold build FAILED (exit {out['cold_build_exit']}); log: {logs / 'cold-build.log'}", flush=True)
        return out
    print("warm rebuild (nothing changed) ...", flush=True)
    out["warm_build_s"], out["warm_build_exit"] = timed(make, book_root, logs / "warm-build.log")
    out["warm_build_executed"] = (logs / "warm-build.log").read_text(errors="replace").count("Executing notebook")
    return out


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "-"
    return "ok" if value < target else f"OVER {target:g} s"


def build_errors(log: Path) -> str:
    """The lines of a failed build's log that say what failed (the notebook, the error), else its tail."""
    wanted = re.compile(r"Executing notebook failed|Error: |timed out|WARNING|ERROR")
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
    lines = [ln.strip() for ln in text.splitlines() if wanted.search(ln) and "Kernel is running over TCP" not in ln]
    return "\n".join(dict.fromkeys(lines)) if lines else tail(log, 15)


def _last_error(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln]
    return lines[0][:160] if lines else "see the log"


def print_book(result: dict) -> None:
    cold, warm = result.get("cold_build_s"), result.get("warm_build_s")
    status = (f"FAILED (exit {result['cold_build_exit']}): {_last_error(result.get('cold_build_error', ''))}"
              if result.get("cold_build_exit") else verdict(cold, TARGETS["cold_build_s"]))
    print(f"{'cold build (make book)':34s} {cold:8.1f} s   {status}")
    if warm is not None:
        executed = result.get("warm_build_executed")
        print(f"{'warm rebuild (make book)':34s} {warm:8.1f} s   {verdict(warm, TARGETS['warm_build_s'])}"
              + (f"  ({executed} notebook(s) re-executed!)" if executed else "")
              + (f"  FAILED (exit {result['warm_build_exit']})" if result.get("warm_build_exit") else ""))
    for doc, seconds in result.get("chapters_s", {}).items():
        print(f"  {doc:32s} {seconds:8.1f} s   {verdict(seconds, TARGETS['chapter_s'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-book-"))
    try:
        book_root = private_copy(work / "book")
        result = {"provenance": provenance(ROOT), "targets_s": TARGETS, **bench_book(book_root, work / "logs", shared_venv=True)}
        print_book(result)
        for key in ("cold_build_s", "warm_build_s"):
            if key in result:
                result[key] = round(result[key], 1)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.json}")
        return 1 if result.get("cold_build_exit") or result.get("warm_build_exit") else 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
