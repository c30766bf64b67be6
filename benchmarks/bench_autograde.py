#!/usr/bin/env python
"""Autograde time per submission and per assignment, through nbgrader's full pipeline, in a scratch course.

    .venv/bin/python benchmarks/bench_autograde.py [--kinds reference blank partial] [--repeat 2] [--hostile]

Each assignment gets the submissions of tests/nbgrader_fixtures/submissions.py named by --kinds (the
reference answers, the untouched student version, a partial answer), --repeat copies of each; --hostile adds
the hostile and broken ones. The scratch course is a copy of solutions/, exercises/ and nbgrader_config.py,
graded by scripts/grade.py exactly as `make autograde` grades, so the times include nbgrader's sanitising,
the kernel's start, the notebook (under NBGRADER_EXECUTION, its experiment shrinks to a few hundred
images) and saving the grades. Target: under 30 s per notebook on a 2-core machine.

The machine's load is printed with the results: other processes on the same cores slow the kernels down.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 30.0


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["reference", "blank", "partial"],
                        help="which submissions per assignment (names from tests/nbgrader_fixtures)")
    parser.add_argument("--repeat", type=int, default=1, help="copies of each submission (as more students)")
    parser.add_argument("--hostile", action="store_true", help="also grade the hostile and broken submissions")
    parser.add_argument("--assignments", nargs="*", help="only these assignments")
    parser.add_argument("--keep", type=Path, help="build the scratch course here and keep it")
    args = parser.parse_args(argv)

    grade = _load("course_grade_script", ROOT / "scripts" / "grade.py")
    fixtures = _load("nbgrader_submissions", ROOT / "tests" / "nbgrader_fixtures" / "submissions.py")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

    tmp = None
    if args.keep:
        root = args.keep.resolve()
        if root.exists():
            shutil.rmtree(root)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-autograde-")
        root = Path(tmp.name)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for folder in ("solutions", "exercises"):
            shutil.copytree(ROOT / folder, root / folder)
        shutil.copy(ROOT / "nbgrader_config.py", root)
        grade.generate_exercises(root)
        subs = [s for s in fixtures.build(fixtures.Course(root))
                if (not args.assignments or s.assignment in args.assignments)
                and (s.student in args.kinds or (args.hostile and s.student not in
                                                 ("reference", "blank", "partial", "visible-only")))]
        for s in subs:
            for i in range(args.repeat):
                copy = fixtures.Submission(**{**s.__dict__, "student": s.student if i == 0 else f"{s.student}-{i}"})
                copy.write(root / "submitted")
        load_before = os.getloadavg()
        start = time.perf_counter()
        outcomes = grade.autograde(root, args.assignments or None)
        total = time.perf_counter() - start
        load_after = os.getloadavg()
    finally:
        if tmp is not None:
            tmp.cleanup()

    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} per kernel; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print("wall: seconds as measured; CPU: the grader's and the kernel's CPU seconds, which is about what the wall\n"
          "time is on an idle machine (one thread per kernel), whatever else runs on the cores now.")
    print(f"{'assignment':18s} {'submissions':>11s} {'wall mean':>10s} {'wall max':>9s} {'CPU mean':>9s} "
          f"{'CPU max':>8s}  target {TARGET_S:.0f} s")
    for a in sorted({o.assignment for o in outcomes}):
        wall = [o.seconds for o in outcomes if o.assignment == a]
        cpu = [o.cpu_seconds for o in outcomes if o.assignment == a]
        verdict = "ok" if max(wall) <= TARGET_S else ("ok on an idle machine" if max(cpu) <= TARGET_S else "OVER")
        print(f"{a:18s} {len(wall):11d} {statistics.mean(wall):10.1f} {max(wall):9.1f} {statistics.mean(cpu):9.1f} "
              f"{max(cpu):8.1f}  {verdict}")
    print(f"{len(outcomes)} submissions in {total:.0f} s ({total / max(len(outcomes), 1):.1f} s each)")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        print("failed (expected for the broken ones):", ", ".join(f"{o.assignment}:{o.student}" for o in failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
