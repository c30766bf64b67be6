# The course's commands. `make book` and `make test` set everything up on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
# Keep the two cores for one job at a time; torch would otherwise oversubscribe under pytest/nbclient.
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg

.PHONY: help setup data book test test-fast lab clean benchmark
help:
	@echo "make book   build the HTML book (sets up .venv and the data on first use) -> _build/html/index.html"
	@echo "make test   run the whole test suite (same setup)"
	@echo "make lab    open JupyterLab on the course"

# ---- setup: a virtual environment pinned by requirements.txt + constraints.txt; reinstalls only when they change
$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

setup: $(STAMP)

# ---- data: Debian's dataset-fashion-mnist where apt is permitted, then lib.data checks and caches the files
data: $(STAMP)
	@scripts/apt-install.sh dataset-fashion-mnist
	@$(BIN)/python -m lib.data prepare

# ---- the book (progress bars off: a static page has no use for a moving bar)
book: export CNN_COURSE_PROGRESS := 0
book: setup data
	$(BIN)/jupyter-book build . --warningiserror --keep-going

# ---- the tests (CI runs exactly this)
test: setup data
	$(BIN)/python -m pytest

test-fast: setup data
	$(BIN)/python -m pytest -m "not slow and not book and not browser"

lab: setup data
	$(BIN)/jupyter lab --notebook-dir=.

clean:
	rm -rf _build .jupyter_cache

# ---- browser tests and benchmarks
.PHONY: browser bench-book bench-course
# Debian's Chromium (and a font) for tests/test_browser.py where apt is permitted; elsewhere the browser tests
# are skipped and say how to get a browser. Playwright drives this Chromium: it never downloads its own.
browser:
	@scripts/apt-install.sh chromium fonts-dejavu-core

# The book's cold build, warm rebuild and chapter times, in a private copy of the committed files (minutes).
bench-book: setup data
	$(BIN)/python benchmarks/bench_book.py

# Everything, from a fresh clone: setup, cold/warm build, chapters, autograde, `make test` (30-60 minutes);
# writes results/course-benchmark.json and the exercises table of the book's "at a glance" page.
bench-course: setup data
	$(BIN)/python benchmarks/bench_course.py --json results/course-benchmark.json
