"""The at-a-glance tables that benchmarks/bench_course.py writes: a step left out this time shows its last
measurement, said to be one, and never a number dressed as new."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_course  # noqa: E402

PROV = {"measured_at": "2026-12-08T00:00:00", "commit": "b" * 40,
        "machine": {"cores": 2, "cpu": "CPU", "load_average_at_start": [0.5, 0.5, 0.5]}}


def test_a_skipped_setup_shows_the_earlier_measurement_with_its_date():
    result = {"provenance": PROV, "skipped": ["setup"], "cold_build_s": 500.0, "warm_build_s": 5.0,
              "earlier_setup": {"setup_s": 90.0, "data_s": 9.0, "measured_at": "2026-11-22T10:00:00",
                                "commit": "c2cfc34c2f" + "0" * 30}}
    text = bench_course.glance_fragment(result, set())
    row = next(ln for ln in text.splitlines() if ln.startswith("| fresh setup"))
    assert "| 99 |" in row and "not measured again: from 2026-11-22, commit `c2cfc34c2f`" in row
    assert "| cold build" in text and "test suite" not in text


def test_a_measured_setup_is_shown_as_measured():
    text = bench_course.glance_fragment({"provenance": PROV, "setup_s": 80.0, "data_s": 5.0}, set())
    row = next(ln for ln in text.splitlines() if ln.startswith("| fresh setup"))
    assert "| 85 |" in row and "not measured again" not in row
