"""What the sandbox's whole-sandbox limits cost per submission: printed figures, not assertions.

    .venv/bin/python benchmarks/bench_sandbox_limits.py [--repeats 7]

* cgroup    making and removing one sandbox's cgroup (memory.max, pids.max), as each kernel does;
* start     a sandboxed `python -c "import torch, lib"` (what a kernel loads first) with its cgroup against the same
            without (SANDBOX_CGROUP=off's sandbox),
            interleaved, medians;
* probe     the start-up probe (`import torch, lib` in the sandbox), once per grading process.

The IPC folder's own tmpfs is one more mount in the same bubblewrap call, and the wall-clock limit one clock read
per cell: both are inside the `start` figure or below a millisecond.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grader import sandbox  # noqa: E402
from grader.cgroup import Scope  # noqa: E402


def ms(seconds: list[float]) -> str:
    low, high = min(seconds) * 1000, max(seconds) * 1000
    return f"median {statistics.median(seconds) * 1000:.1f} ms (range {low:.1f}-{high:.1f})"


def time_cgroup(repeats: int, limits: sandbox.Limits) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        Scope.create(limits.memory, limits.processes).close()
        out.append(time.perf_counter() - start)
    return out


def time_start(repeats: int, limits: sandbox.Limits) -> tuple[list[float], list[float]]:
    with_cgroup, without = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for scoped, into in ((True, with_cgroup), (False, without)):
                start = time.perf_counter()
                scope = Scope.create(limits.memory, limits.processes) if scoped else None
                box = sandbox.Sandbox(Path(tmp), None, limits, scope=scope)
                subprocess.run(box.command([sys.executable, "-c", sandbox.PROBE]), check=True, capture_output=True)
                if scope is not None:
                    scope.close()
                into.append(time.perf_counter() - start)
    return with_cgroup, without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    limits = sandbox.Limits()
    start = time.perf_counter()
    sandbox.check()
    print(f"probe (once per grading process): {time.perf_counter() - start:.1f} s")
    print(f"cgroup made and removed: {ms(time_cgroup(args.repeats, limits))}")
    scoped, plain = time_start(args.repeats, limits)
    print(f"sandboxed `python -c \"{sandbox.PROBE}\"` with its cgroup: {ms(scoped)}; without: {ms(plain)}; "
          f"difference of medians {(statistics.median(scoped) - statistics.median(plain)) * 1000:+.1f} ms")


if __name__ == "__main__":
    main()
