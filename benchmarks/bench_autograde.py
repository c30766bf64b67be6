#!/usr/bin/env python
"""Autograding, timed: per notebook, the sandbox's cost, parallel workers, and a Dask cluster.

    .venv/bin/python benchmarks/bench_autograde.py [--submissions 8] [--parts time,sandbox,jobs,dask] [--json F]

Every part grades the same class in a fresh scratch course with the grader's own pipeline (the function behind
`make autograde`): the reference, blank and partial submissions of tests/nbgrader_fixtures/submissions.py, as
many students as --submissions asks, over the assignments (every one in solutions/) in turn.

* time     each assignment's submissions, JOBS=1: wall and CPU seconds per notebook (target: under 30 s), and
           where a notebook's seconds go, read from the graded notebook's cell timestamps (nbclient's): before
           the first cell (the sandbox, the kernel's start), the first cell that has code (the imports: torch, lib), the
           student's other cells, the hidden test cells in the kernel, and after the last cell (the kernel's
           shutdown, the judge outside the kernel, nbgrader's gradebook)
* sandbox  the same submissions with SANDBOX=off and with the sandbox, JOBS=1: the sandbox's cost per
           submission (target: under 1 s)
* jobs     JOBS=1 against JOBS=2: the throughput ratio (target: at least 1.7 on 2 cores)
* dask     a `dask scheduler` and two `dask worker` processes on 127.0.0.1: its time against JOBS=2's
           (target: within 10%)
* ceiling  the machine's own: a fixed pure-Python loop in one process, then in two at once (three times
           each): the most any two workers could get out of these two cores, whatever the grader does

and prints the projected time for 300 submissions at the measured throughput. Run it on an otherwise idle
machine: the load average at the start is printed, and wall times on shared cores measure the other jobs too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "nbgrader_fixtures"))

from grader.autograde import autograde  # noqa: E402
from grader.course import assignments  # noqa: E402
import submissions as fixtures  # noqa: E402

KINDS = ("reference", "blank", "partial")


def make_class(base: Path, n: int, assignments: list[str]) -> Path:
    root = fixtures.make_course(base, cell_timeout=300)
    course = fixtures.Course(root)
    notebooks = {"reference": course.solved, "blank": course.exercise}
    for i in range(n):
        a = assignments[i % len(assignments)]
        kind = KINDS[(i // len(assignments)) % len(KINDS)]
        nb = course.solved(a, fixtures.partial_cells(a)) if kind == "partial" else notebooks[kind](a)
        folder = root / "submitted" / f"{kind}-{i:03d}" / a
        folder.mkdir(parents=True)
        (folder / f"{a}.ipynb").write_text(json.dumps(nb))
    return root


def timed_run(base: Path, n: int, assignments: list[str], *, jobs: int = 1, scheduler: str | None = None,
              env: dict | None = None) -> dict:
    """Grade a fresh class; the wall time of the whole run and each submission's outcome."""
    root = make_class(base, n, assignments)
    from grader.course import generate_exercises
    for a in assignments:  # the gradebook's assignments, outside the timed part (a fresh clone does it once)
        generate_exercises(root, [a])
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        start = time.perf_counter()
        outcomes = autograde(root, jobs=jobs, scheduler=scheduler, quiet=True, progress=False)
        wall = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise SystemExit(f"{len(failed)} submission(s) failed to grade: {failed[0].student}: {failed[0].reason}")
    return {"wall_s": round(wall, 1), "submissions": len(outcomes),
            "per_submission": [{"assignment": o.assignment, "student": o.student, "seconds": round(o.seconds, 2),
                                "cpu_seconds": round(o.cpu_seconds, 2), "auto": o.auto,
                                "phases": {k: round(v, 2) for k, v in phases(root, o).items()}} for o in outcomes]}


def _stamp(cell: dict, key: str) -> float | None:
    from datetime import datetime

    value = cell.get("metadata", {}).get("execution", {}).get(key)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def phases(root: Path, outcome) -> dict[str, float]:
    """Where one graded notebook's wall seconds went (see the module's docstring); {} without timestamps."""
    graded = root / "autograded" / outcome.student / outcome.assignment / f"{outcome.assignment}.ipynb"
    if not graded.is_file() or not outcome.started:
        return {}
    cells = [c for c in json.loads(graded.read_text())["cells"] if c["cell_type"] == "code"
             and "".join(c["source"]).strip() and "course-install" not in c["metadata"].get("tags", [])  # not Colab's
             and _stamp(c, "iopub.execute_input") and _stamp(c, "shell.execute_reply")]
    if not cells:
        return {}
    spans = [(c, _stamp(c, "shell.execute_reply") - _stamp(c, "iopub.execute_input")) for c in cells]
    hidden = sum(d for c, d in spans[1:] if c["metadata"].get("nbgrader", {}).get("grade"))
    return {"before_first_cell": _stamp(cells[0], "iopub.execute_input") - outcome.started,
            "first_cell": spans[0][1],
            "student_cells": sum(d for _, d in spans[1:]) - hidden,
            "hidden_cells": hidden,
            "after_last_cell": outcome.ended - _stamp(cells[-1], "shell.execute_reply")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_cluster(base: Path, workers: int = 2):
    """A scheduler and workers on 127.0.0.1 as instructors.md starts them: TLS with the course's certificates
    (made in ``base``; DASK_CERTS points the grader's client at them)."""
    from grader import cluster

    port = _free_port()
    certs = base / "certs"
    cluster.make_certs(certs)
    os.environ["DASK_CERTS"] = str(certs)
    tls = ["--tls-ca-file", str(certs / cluster.CA), "--tls-cert", str(certs / cluster.CERT),
           "--tls-key", str(certs / cluster.KEY)]
    dask = str(Path(sys.executable).with_name("dask"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), DASK_CONFIG=str(ROOT / "grader" / "dask.yaml"))  # as instructors.md says
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--protocol", "tls",
                               "--no-dashboard", *tls],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    for i in range(workers):
        procs.append(subprocess.Popen([dask, "worker", f"tls://127.0.0.1:{port}", "--nthreads", "1", "--nworkers",
                                       "1", "--no-dashboard", "--local-directory", str(base / f"w{i}"), *tls],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    from distributed import Client
    with Client(f"tls://127.0.0.1:{port}", timeout="60s", security=cluster.security(certs)) as client:
        client.wait_for_workers(workers, timeout=180)
    return f"tls://127.0.0.1:{port}", procs


def stop(procs):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait(timeout=60)


_SPIN = "import time\nt = time.perf_counter()\nx = 0\nfor i in range(20_000_000): x += i * i\nprint(time.perf_counter() - t)"


def ceiling(repeats: int = 3) -> float:
    """Throughput of two CPU-bound processes at once over one alone (2.0 on two dedicated cores)."""
    def run(n: int) -> float:
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.DEVNULL) for _ in range(n)]
        for p in procs:
            p.wait()
        return time.perf_counter() - start
    one = statistics.median(run(1) for _ in range(repeats))
    two = statistics.median(run(2) for _ in range(repeats))
    return 2 * one / two


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=8, help="students in the class (default 8)")
    parser.add_argument("--parts", default="time,sandbox,jobs,dask,ceiling", help="which measurements, comma-separated")
    parser.add_argument("--assignments", nargs="*", default=assignments(ROOT), help="default: every one in solutions/")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run JOBS=1, JOBS=2, Dask and the ceiling this many times: medians and ranges (shared "
                             "virtual cores vary from minute to minute)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", type=Path, help="also write them as the table book/instructors.md includes")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    load = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average at the start "
          f"{load[0]:.2f} (other processes on the cores slow every figure below)")
    report: dict = {"cores": os.cpu_count(), "load_average_at_start": round(load[0], 2), "submissions": args.submissions}
    with tempfile.TemporaryDirectory(prefix="bench-autograde-") as tmp:
        base = Path(tmp)
        if "time" in parts or "sandbox" in parts or "jobs" in parts:
            report["jobs1"] = timed_run(base / "jobs1", args.submissions, args.assignments, jobs=1)
            per = report["jobs1"]["per_submission"]
            print(f"\nJOBS=1: {report['jobs1']['wall_s']:.1f} s for {len(per)} submissions")
            for a in args.assignments:
                rows = [r for r in per if r["assignment"] == a]
                if rows:
                    print(f"  {a:18s} wall {statistics.mean(r['seconds'] for r in rows):5.1f} s per notebook "
                          f"(max {max(r['seconds'] for r in rows):.1f}), CPU {statistics.mean(r['cpu_seconds'] for r in rows):.1f} s"
                          f"  [target < 30 s]")
                    split = [r["phases"] for r in rows if r["phases"]]
                    if split:
                        print("    " + ", ".join(f"{k.replace('_', ' ')} {statistics.mean(p[k] for p in split):.1f} s"
                                                 for k in split[0]))
        if "sandbox" in parts:
            report["sandbox_off"] = timed_run(base / "off", args.submissions, args.assignments, jobs=1,
                                              env={"SANDBOX": "off"})
            on, off = report["jobs1"]["wall_s"], report["sandbox_off"]["wall_s"]
            overhead = (on - off) / args.submissions
            report["sandbox_overhead_s_per_submission"] = round(overhead, 2)
            print(f"\nsandbox: {on:.1f} s with it, {off:.1f} s without: {overhead:+.2f} s per submission [target < 1 s]")
        if "jobs" in parts:
            report["jobs2"] = timed_run(base / "jobs2", args.submissions, args.assignments, jobs=2)
            ratio = report["jobs1"]["wall_s"] / report["jobs2"]["wall_s"]
            report["throughput_ratio_jobs2"] = round(ratio, 2)
            print(f"\nJOBS=2: {report['jobs2']['wall_s']:.1f} s: throughput {ratio:.2f}x JOBS=1's [target >= 1.7]")
        if "dask" in parts:
            address, procs = dask_cluster(base / "dask")
            try:
                report["dask2"] = timed_run(base / "dask-class", args.submissions, args.assignments, scheduler=address)
            finally:
                stop(procs)
            d = report["dask2"]["wall_s"]
            line = f"\nDask, 2 local workers: {d:.1f} s"
            if "jobs2" in report:
                rel = d / report["jobs2"]["wall_s"] - 1
                report["dask_vs_jobs2"] = round(rel, 3)
                line += f": {rel:+.1%} against JOBS=2 [target within 10%]"
            print(line)
        if "ceiling" in parts:
            report["two_process_ceiling"] = round(ceiling(), 2)
            print(f"\nthis machine: two CPU-bound processes at once do {report['two_process_ceiling']:.2f}x the work of "
                  f"one (2.00 on two dedicated cores): the ceiling for JOBS=2 over JOBS=1")
        runs = [{k: report[name]["wall_s"] for k, name in (("jobs1_s", "jobs1"), ("jobs2_s", "jobs2"),
                                                            ("dask2_s", "dask2")) if name in report}]
        if "two_process_ceiling" in report:
            runs[0]["ceiling"] = report["two_process_ceiling"]
        for rep in range(1, args.repeats):
            run = {}
            if {"jobs", "dask"} & parts:
                run["jobs1_s"] = timed_run(base / f"r{rep}-jobs1", args.submissions, args.assignments, jobs=1)["wall_s"]
            if "jobs" in parts:
                run["jobs2_s"] = timed_run(base / f"r{rep}-jobs2", args.submissions, args.assignments, jobs=2)["wall_s"]
            if "dask" in parts:
                address, procs = dask_cluster(base / f"r{rep}-dask")
                try:
                    run["dask2_s"] = timed_run(base / f"r{rep}-dask-class", args.submissions, args.assignments,
                                               scheduler=address)["wall_s"]
                finally:
                    stop(procs)
            if "ceiling" in parts:
                run["ceiling"] = round(ceiling(), 2)
            runs.append(run)
            print(f"\nrun {rep + 1} of {args.repeats}: " + ", ".join(f"{k} {v}" for k, v in run.items()))
        report["runs"] = runs
        for key, figure in (("throughput_ratio_jobs2", lambda r: r["jobs1_s"] / r["jobs2_s"]),
                            ("dask_vs_jobs2", lambda r: r["dask2_s"] / r["jobs2_s"] - 1),
                            ("two_process_ceiling", lambda r: r["ceiling"])):
            values = [figure(r) for r in runs if key in report]
            if len(values) > 1:
                report[key] = round(statistics.median(values), 3)
                report[key + "_range"] = [round(min(values), 3), round(max(values), 3)]
                print(f"{key}: median {report[key]} over {len(values)} runs (range {min(values):.3f} to {max(values):.3f})")
        best = min((report[k]["wall_s"] / report[k]["submissions"], k) for k in ("jobs1", "jobs2", "dask2") if k in report)
        report["projected_300_submissions_min"] = round(best[0] * 300 / 60, 1)
        print(f"\nprojected: 300 submissions in {best[0] * 300 / 60:.0f} min on this machine ({best[1]}); "
              f"with W such machines as Dask workers, about 1/W of that")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(report))
        print(f"wrote {args.markdown}")
    return 0


def markdown(r: dict) -> str:
    """The figures as a table, with how they were made (book/instructors.md includes it)."""
    rows = [f"Measured by `benchmarks/bench_autograde.py --submissions {r['submissions']}` on "
            f"{time.strftime('%Y-%m-%d')}, {r['cores']} cores, load average {r['load_average_at_start']} at the start.", "",
            "| measurement | figure | target |", "|---|---:|---|"]
    if "jobs1" in r:
        per = r["jobs1"]["per_submission"]
        for a in sorted({p["assignment"] for p in per}):
            secs = [p["seconds"] for p in per if p["assignment"] == a]
            rows.append(f"| `{a}`: wall seconds per notebook, JOBS=1 (mean, max) | {statistics.mean(secs):.1f}, "
                        f"{max(secs):.1f} | under 30 |")
    if "sandbox_overhead_s_per_submission" in r:
        rows.append(f"| the sandbox's cost per submission (sandboxed minus SANDBOX=off, JOBS=1) | "
                    f"{r['sandbox_overhead_s_per_submission']:+.2f} s"
                    f"{' (less than the noise between two runs)' if r['sandbox_overhead_s_per_submission'] < 0 else ''} | under 1 s |")
    n = len(r.get("runs", [])) or 1

    def spread(key: str, fmt) -> str:
        if key + "_range" not in r:
            return fmt(r[key])
        low, high = r[key + "_range"]
        return f"{fmt(r[key])} ({fmt(low)} to {fmt(high)})"

    walls = lambda k: "/".join(f"{run[k]:.0f}" for run in r.get("runs", [])) or f"{r[k[:-2]]['wall_s']:.0f}"
    several = f", median of {n} runs (range)" if n > 1 else ""
    if "throughput_ratio_jobs2" in r:
        rows.append(f"| throughput of JOBS=2 over JOBS=1{several}; walls {walls('jobs1_s')} s vs {walls('jobs2_s')} s | "
                    f"{spread('throughput_ratio_jobs2', lambda v: f'{v:.2f}x')} | at least 1.7x |")
    if "dask_vs_jobs2" in r:
        rows.append(f"| two local Dask workers against JOBS=2{several}; walls {walls('dask2_s')} s | "
                    f"{spread('dask_vs_jobs2', lambda v: f'{v:+.1%}')} | within 10% |")
    if "two_process_ceiling" in r:
        rows.append(f"| this machine's own ceiling: two CPU-bound processes at once over one (pure Python loop){several} | "
                    f"{spread('two_process_ceiling', lambda v: f'{v:.2f}x')} | 2.00x on dedicated cores |")
    rows.append(f"| 300 submissions on this machine, projected | {r['projected_300_submissions_min']:.0f} min | |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
