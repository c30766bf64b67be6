"""Print, for every committed experiment record, what it tuned and whether a choice sits at its grid's edge.

    .venv/bin/python scripts/evidence_report.py

The same facts tests/test_evidence.py holds the chapters to (a page that loads a record with an edge choice
must show lib.tuning.edge_note for it).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib import tuning  # noqa: E402


def main() -> int:
    for path in sorted((ROOT / "results").glob("*.json")):
        record = json.loads(path.read_text())
        if "results" not in record:
            continue
        choices = tuning.record_choices(record)
        pages = [p.stem for p in sorted((ROOT / "book").glob("*.ipynb")) if f'load(\\"{path.stem}\\")' in p.read_text()]
        print(f"{path.stem:18s} pages: {', '.join(pages) or '-':14s} {tuning.edge_note(choices)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
