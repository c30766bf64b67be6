"""nbgrader's configuration for the course, read by every `nbgrader` command run from the repository root.

The settings live in the instructor's package: grader/config.py (and book/instructors.md explains them).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `grader/`, beside this file; students never have it
from grader.config import configure  # noqa: E402

configure(get_config())  # noqa: F821 (provided by traitlets when it runs this file)
