#!/usr/bin/env python
"""The whole course, timed in one run on this machine, from a fresh clone of the committed HEAD:

  1. fresh setup     `make setup` (new .venv from requirements.txt + constraints.txt) and `make data`
  2. cold build      `make book` with an empty jupyter-cache: every chapter executes
  3. warm rebuild    `make book` again, nothing changed: nothing may execute
  4. chapters        each chapter's execution time, from the clone's jupyter-cache
  5. autograde       each assignment's solution submitted as student "bench" and autograded
                     (`python -m grader autograde A --student bench`, nbgrader's full pipeline, in the sandbox)
  6. test suite      `make test` (the book is warm by then, as on a developer's second run)

    .venv/bin/python benchmarks/bench_course.py [--json results/course-benchmark.json] [--skip STEP ...]

prints a table with the targets below, and with --json writes every figure (and where and on what it was
measured) so that runs can be compared. With --glance it also writes the exercises table that the book's
"at a glance" page includes (default results/course-at-a-glance.md when --json is under results/).
A benchmark, not a test: on a 2-core machine expect 30-60 minutes and a few GB of downloads for step 1.

Targets (2-core machine): cold build < 15 min, warm rebuild < 1 min, each chapter < 3 min,
each autograded notebook < 30 s.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_book import ROOT, TARGETS as BOOK_TARGETS, bench_book, print_book, provenance, tail, timed, verdict  # noqa: E402

TARGETS = {**BOOK_TARGETS, "autograde_s": 30}
STEPS = ["setup", "book", "autograde", "tests"]


def assignments(repo: Path) -> list[str]:
    return sorted(p.parent.name for p in (repo / "solutions").glob("*/*.ipynb") if p.parent.name == p.stem)


def autograde_times(clone: Path, logs: Path) -> dict[str, dict]:
    """Each solution notebook, submitted as student 'bench', autograded by the course's grader."""
    python = clone / ".venv" / "bin" / "python"
    out = {}
    for name in assignments(clone):
        sub = clone / "submitted" / "bench" / name
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy2(clone / "solutions" / name / f"{name}.ipynb", sub / f"{name}.ipynb")
        log = logs / f"autograde-{name}.log"
        wall, rc = timed([str(python), "-m", "grader", "autograde", name, "--student", "bench", "--force"], clone, log)
        text = log.read_text(errors="replace")
        row = re.search(rf"^{re.escape(name)}\s+bench\s+(?P<score>[\d.\s/-]+?)\s+(?P<s>[\d.]+) s\s+(?P<status>.*)$",
                        text, re.M)
        out[name] = {"seconds": float(row["s"]) if row else None, "wall_s": round(wall, 1),
                     "score": " ".join(row["score"].split()) if row else None,
                     "status": row["status"].strip() if row else f"no result (exit {rc}): {tail(log, 3)}"}
        print(f"  autograde {name:24s} {out[name]['seconds'] or float('nan'):6.1f} s  {out[name]['status'][:60]}",
              flush=True)
    return out


def run_tests(clone: Path, logs: Path) -> dict:
    seconds, rc = timed(["make", "--no-print-directory", "test"], clone, logs / "test.log")
    text = (logs / "test.log").read_text(errors="replace")
    summary = [ln.strip("= ").strip() for ln in text.splitlines() if re.search(r"\b(passed|failed|error)\b.* in ", ln)]
    last = summary[-1] if summary else " / ".join(tail(logs / "test.log", 3).splitlines())
    return {"seconds": round(seconds, 1), "exit": rc, "summary": last}


def _cell(seconds, target=None, exit_code=0, note="") -> tuple[str, str]:
    if seconds is None:
        return "-", note or "not run"
    if exit_code:
        return f"{seconds:.0f}", f"failed (exit {exit_code}){': ' + note if note else ''}"
    if target is None:
        return f"{seconds:.0f}", note
    return f"{seconds:.0f}", ("within" if seconds < target else "over") + f" the {target:g} s target" + (
        f"; {note}" if note else "")


def glance_fragment(result: dict, toc_docs: set[str]) -> str:
    """The tables of book/at-a-glance.md (exercises; the whole course), with where and when they were measured.
    The page includes each part between its <!-- name --> markers."""
    prov = result["provenance"]
    m = prov["machine"]
    load = m["load_average_at_start"][0]
    busy = f", with other work running (load average {load:.1f} at the start)" if load > 1.5 * m["cores"] else ""
    where = (f"Measured by `benchmarks/bench_course.py` on {prov['measured_at'][:10]}, at commit "
             f"`{prov['commit'][:10]}`, on {m['cores']} cores of {m['cpu']}{busy}. "
             "`make bench-course` measures everything again.")
    out = ["<!-- exercises -->", "", "| Exercise | Autograde time (s) | Score of the solution |", "|---|---:|---|"]
    for name, a in result.get("autograde", {}).items():
        doc = f"exercises/{name}/{name}"
        label = f"{{doc}}`{name} </{doc}>`" if doc in toc_docs else f"`{name}`"
        seconds = "-" if a["seconds"] is None else f"{a['seconds']:.1f}"
        out.append(f"| {label} | {seconds} | {a['score'] or a['status']} |")
    out += ["", where, "", "<!-- /exercises -->", "", "<!-- course -->", "",
            "| Step | Time (s) | |", "|---|---:|---|"]
    rows = []
    if "setup_s" in result:
        rows.append(("fresh setup: `make setup` and `make data`", _cell(result["setup_s"] + result.get("data_s", 0))))
    elif "earlier_setup" in result:   # skipped this time: the last measurement, said to be one
        e = result["earlier_setup"]
        rows.append(("fresh setup: `make setup` and `make data`",
                     _cell(e["setup_s"] + e.get("data_s", 0), note=f"not measured again: from {e['measured_at'][:10]}, "
                                                                     f"commit `{e['commit'][:10]}`")))
    if "cold_build_s" in result:
        error = (result.get("cold_build_error") or "").splitlines()
        failed_nb = [ln.split(":")[0] for ln in error if "Executing notebook failed" in ln]
        why = next((ln.split(": ", 1)[-1] for ln in error if "timed out" in ln), "") or next(
            (ln for ln in error if "failed" in ln), "")
        note = (f"{Path(failed_nb[0]).name}: " if failed_nb else "") + why
        rows.append(("cold build: `make book`, every chapter executed",
                     _cell(result["cold_build_s"], TARGETS["cold_build_s"], result.get("cold_build_exit", 0),
                           note.replace("|", "/")[:140])))
        rows.append(("warm rebuild: `make book`, nothing changed",
                     _cell(result.get("warm_build_s"), TARGETS["warm_build_s"], result.get("warm_build_exit", 0),
                           "" if "warm_build_s" in result else "not run: the cold build failed")))
    if "tests" in result:
        t = result["tests"]
        rows.append(("test suite: `make test`", _cell(t["seconds"], None, t["exit"], t["summary"].replace("|", "/")[:140])))
    out += [f"| {step} | {cell[0]} | {' '.join(cell[1].split())} |" for step, cell in rows]
    out += ["", where, "", "<!-- /course -->"]
    return "\n".join(out) + "\n"


def toc_docnames(repo: Path) -> set[str]:
    import yaml
    toc = yaml.safe_load((repo / "_toc.yml").read_text())
    found = {toc["root"]}

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                found.add(e["file"])
            walk(e.get("sections"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return found


def print_result(r: dict) -> None:
    prov = r["provenance"]
    print(f"\nCourse benchmark, commit {prov['commit'][:10]}, {prov['machine']['cores']} cores "
          f"({prov['machine']['cpu']}), load at start {prov['machine']['load_average_at_start']}")
    if "setup_s" in r:
        print(f"{'fresh setup (make setup)':34s} {r['setup_s']:8.1f} s")
        print(f"{'data (make data)':34s} {r['data_s']:8.1f} s")
    if "cold_build_s" in r:
        print_book(r)
    for name, a in r.get("autograde", {}).items():
        print(f"  autograde {name:22s} {a['seconds'] or float('nan'):8.1f} s   "
              f"{verdict(a['seconds'], TARGETS['autograde_s'])}  {a['score'] or a['status']}")
    if "tests" in r:
        t = r["tests"]
        print(f"{'test suite (make test)':34s} {t['seconds']:8.1f} s   exit {t['exit']}: {t['summary']}")
    print(f"{'total':34s} {r['total_s']:8.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures here (e.g. results/course-benchmark.json)")
    parser.add_argument("--glance", type=Path, help="write the at-a-glance exercises table here")
    parser.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps to leave out")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.glance is None and args.json and args.json.resolve().parent == (ROOT / "results").resolve():
        args.glance = ROOT / "results" / "course-at-a-glance.md"

    work = (args.keep or Path(tempfile.mkdtemp(prefix="bench-course-"))).resolve()
    clone, logs = work / "course", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        if not clone.exists():
            subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
        result: dict = {"provenance": provenance(clone), "targets_s": TARGETS, "skipped": args.skip}
        earlier = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
        if "setup" in args.skip and ("setup_s" in earlier or "earlier_setup" in earlier):
            result["earlier_setup"] = earlier.get("earlier_setup") or {
                "setup_s": earlier["setup_s"], "data_s": earlier.get("data_s", 0),
                "measured_at": earlier["provenance"]["measured_at"], "commit": earlier["provenance"]["commit"]}
        print(f"benchmarking commit {result['provenance']['commit'][:10]} in {clone} (logs: {logs})", flush=True)
        if "setup" not in args.skip:
            print("fresh setup: make setup ...", flush=True)
            result["setup_s"], rc = timed(["make", "--no-print-directory", "setup"], clone, logs / "setup.log")
            if rc:
                raise SystemExit(f"make setup failed:\n{tail(logs / 'setup.log')}")
            result["data_s"], rc = timed(["make", "--no-print-directory", "data"], clone, logs / "data.log")
            if rc:
                raise SystemExit(f"make data failed:\n{tail(logs / 'data.log')}")
        elif not (clone / ".venv").exists():
            (clone / ".venv").symlink_to((ROOT / ".venv").resolve())  # reuse this checkout's environment
            if (ROOT / "data").exists():
                (clone / "data").symlink_to((ROOT / "data").resolve())
        shared = (clone / ".venv").is_symlink()
        if "book" not in args.skip:
            result.update(bench_book(clone, logs, shared_venv=shared))
        if "autograde" not in args.skip:
            print("autograde, one solution per assignment ...", flush=True)
            result["autograde"] = autograde_times(clone, logs)
        if "tests" not in args.skip:
            print("test suite: make test ...", flush=True)
            result["tests"] = run_tests(clone, logs)
        result["total_s"] = round(time.perf_counter() - start, 1)
        for key in ("setup_s", "data_s", "cold_build_s", "warm_build_s"):
            if key in result:
                result[key] = round(result[key], 1)
        print_result(result)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.json}")
        if args.glance and "autograde" in result:
            args.glance.parent.mkdir(parents=True, exist_ok=True)
            args.glance.write_text(glance_fragment(result, toc_docnames(ROOT)))
            print(f"wrote {args.glance}")
        failed = result.get("cold_build_exit") or result.get("tests", {}).get("exit") or any(
            a["seconds"] is None for a in result.get("autograde", {}).values())
        return 1 if failed else 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
