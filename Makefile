# The course's commands. `make book` and `make test` set everything up on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
# Keep the two cores for one job at a time; torch would otherwise oversubscribe under pytest/nbclient.
export OMP_NUM_THREADS ?= 2

.PHONY: help setup data book pdf test test-fast lab clean benchmark
help:
	@echo "make book                  build the HTML book (sets up .venv and the data on first use) -> _build/html/index.html"
	@echo "make pdf                   the whole book as one PDF (after the book; Chromium prints it) -> _build/pdf/book.pdf"
	@echo "make lab                   open JupyterLab on the course"
	@echo "                           (the first run of either sets up .venv and the data: a few minutes, about 6.5 GB)"
	@echo "make validate NB=<file>    run a notebook's tests (NB may be its folder): one line per part, first; exits 1 when one fails"
	@test ! -d grader || echo "make test                  run the whole test suite (same setup); instructors: see book/instructors.md"

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
# MPLBACKEND is cleared: a backend inherited from the shell (Agg, say) stops ipykernel from choosing its
# inline backend, and every figure would silently vanish from the pages.
book: export CNN_COURSE_PROGRESS := 0
book: setup data
	env -u MPLBACKEND $(BIN)/jupyter-book build . --warningiserror --keep-going

# ---- the book as one PDF: Chromium (Debian's, `make browser`) prints the executed pages; no TeX, no network
pdf: book
	$(BIN)/python scripts/book_pdf.py --html _build/html --out _build/pdf/book.pdf

# Publish the built book to the branch _config.yml names (course_published_branch, gh-pages) with ghp-import:
# the pages and, in _sources/, the notebooks the Colab buttons open, pinned to the build's commit. In a fresh
# checkout of the commit to publish: make publish-book REMOTE=origin (without REMOTE: commit the branch, push nothing;
# SITE_REPO=<folder>: commit it in another git repository, as tests/test_colab.py does).
.PHONY: publish-book
publish-book: book
	cd $(or $(SITE_REPO),.) && $(abspath $(BIN))/ghp-import --no-jekyll --message "The book built from $$(git -C $(CURDIR) rev-parse HEAD)" \
	  --branch "$$($(abspath $(BIN))/python -c 'import yaml; print(yaml.safe_load(open("$(CURDIR)/_config.yml"))["sphinx"]["config"]["course_published_branch"])')" \
	  $(if $(REMOTE),--push --remote $(REMOTE)) $(CURDIR)/_build/html

# JUPYTER_CONFIG_PATH: jupyter/ holds the course's JupyterLab settings (Validate summary first, no news prompt).
lab: setup data
	JUPYTER_CONFIG_PATH=$(CURDIR)/jupyter$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH)) $(BIN)/jupyter lab --notebook-dir=. $(LAB_ARGS) $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf _build .jupyter_cache

# Write _config.yml's repository.url into every chapter's first cell (what Colab installs the course from).
.PHONY: colab-cells
colab-cells: setup
	$(BIN)/python scripts/colab_cells.py

# For students: run a notebook's visible tests; exits 1 when one fails. make validate NB=exercises/mixed_pooling/mixed_pooling.ipynb
VALIDATE := $(BIN)/python scripts/validate.py
.PHONY: validate
validate: setup data
	@test -n "$(NB)" || { echo "usage: make validate NB=<notebook.ipynb or its folder>"; exit 2; }
	@$(VALIDATE) "$(NB)"

#@instructor
# Everything from here to #@end-instructor is the instructor's: `make student-release` leaves it out.
# ---- the tests (CI runs exactly this)
test: setup data browser sandbox-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: setup data
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow and not book and not browser"

# ---- browser tests and benchmarks
.PHONY: browser bench-book bench-course
# Debian's Chromium (and fonts) for tests/test_browser.py where apt is permitted; elsewhere the browser tests
# are skipped and say how to get a browser. Playwright drives this Chromium: it never downloads its own.
browser:
	@scripts/apt-install.sh chromium fonts-dejavu-core fonts-noto-color-emoji

# The book's cold build, warm rebuild and chapter times, in a private copy of the committed files (minutes).
bench-book: setup data
	$(BIN)/python benchmarks/bench_book.py

# Everything, from a fresh clone: setup, cold/warm build, chapters, autograde, `make test` (30-60 minutes);
# writes results/course-benchmark.json and the exercises table of the book's "at a glance" page.
bench-course: setup data
	$(BIN)/python benchmarks/bench_course.py --json results/course-benchmark.json

# ---- instructors (nbgrader): the flow is explained in book/instructors.md; the commands are the grader's
.PHONY: exercises check-exercises collect autograde feedback grades student-release sandbox sandbox-tools
# bubblewrap, which every kernel that runs a submission starts in (util-linux's prlimit and setpriv are in every
# Debian); where apt cannot install it, `make autograde` stops and says what to do.
sandbox-tools:
	@scripts/apt-install.sh bubblewrap
GRADE := $(BIN)/python -m grader
# An instructor validating a submission grades it as autograde does (hidden tests, sandbox; no gradebook write).
VALIDATE := $(GRADE) validate
validate: sandbox-tools

# The instructors' JupyterLab: the formgrader's submission pages run no script of a submission (grader/formgrader_csp.py)
lab: LAB_ARGS += --ServerApp.jpserver_extensions="{'grader.formgrader_csp': True}"
lab: export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

# Regenerate the student versions exercises/<a>/ from solutions/<a>/ (then commit exercises/).
exercises: setup
	$(GRADE) exercises

# Fail when exercises/ is not what solutions/ generates (the tests check the same).
check-exercises: setup
	$(GRADE) check-exercises

# Unpack a zip of downloads (one folder per student id) into submitted/: make collect ASSIGNMENT=mixed_pooling ZIP=all.zip
# (Moodle's and Canvas's layouts give the LMS id; MAP=ids.csv with columns lms_id,student_id maps it)
collect: setup
	@test -n "$(ASSIGNMENT)" -a -n "$(ZIP)" || { echo "usage: make collect ASSIGNMENT=<name> ZIP=<file.zip>"; exit 2; }
	$(GRADE) collect $(ASSIGNMENT) $(ZIP) $(if $(MAP),--map $(MAP))

# Autograde every submission in submitted/ (or ASSIGNMENT=<name> only) that is new or changed since it was last
# graded, each in the sandbox, JOBS at once (default: the number of cores), with a progress bar and a score table.
# FORCE=1 regrades everything; SCHEDULER=tls://host:8786 grades on a Dask cluster; SANDBOX=off (trusted work only).
autograde: setup data sandbox-tools
	$(GRADE) autograde $(ASSIGNMENT) $(if $(JOBS),--jobs $(JOBS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
		$(if $(filter 1 yes true,$(FORCE)),--force)

# Feedback as HTML: feedback/<student>/<assignment>/<assignment>.html (assignments with nothing graded are skipped)
feedback: setup
	$(GRADE) feedback $(ASSIGNMENT)

# Grades: grades/grades.csv (one row per student and assignment, with its status: final, provisional, missing), or
# FORMAT=canvas|moodle for grades/<FORMAT>.csv in that LMS's import layout (PROVISIONAL=1 to write partial totals);
# grades/ is outside feedback/ (handed to students) and git ignores it; CSV=path to write elsewhere.
grades: setup
	$(GRADE) export $(CSV) $(if $(FORMAT),--format $(FORMAT)) $(if $(filter 1 yes true,$(PROVISIONAL)),--provisional)

# Pairs of submissions ranked by shared code (copydetect, on this machine; the student version is boilerplate):
# make similarity ASSIGNMENT=mixed_pooling -> grades/similarity-mixed_pooling.html
.PHONY: similarity
similarity: setup
	@test -n "$(ASSIGNMENT)" || { echo "usage: make similarity ASSIGNMENT=<name>"; exit 2; }
	$(GRADE) similarity $(ASSIGNMENT)

# Whether the sandbox runs here, its limits and the bubblewrap command line it starts a kernel with.
sandbox: setup sandbox-tools
	$(GRADE) sandbox

# A Dask grading cluster over TLS with the course's certificates (book/instructors.md, "Beyond one machine").
.PHONY: dask-certs dask-scheduler dask-worker
DASK_CERTS ?= .dask-certs
DASK_TLS = --tls-ca-file $(DASK_CERTS)/ca.pem --tls-cert $(DASK_CERTS)/cluster.pem --tls-key $(DASK_CERTS)/cluster-key.pem
dask-certs: setup
	$(GRADE) dask-certs $(DASK_CERTS)
dask-scheduler: setup
	@test -n "$(HOST)" || { echo "usage: make dask-scheduler HOST=<this machine's address on the cluster's network>"; exit 2; }
	DASK_CONFIG=$(CURDIR)/grader/dask.yaml $(BIN)/dask scheduler --host $(HOST) --port 8786 --protocol tls --no-dashboard $(DASK_TLS)
dask-worker: setup data sandbox-tools
	@test -n "$(SCHEDULER)" -a -n "$(HOST)" || { echo "usage: make dask-worker SCHEDULER=tls://<host>:8786 HOST=<this machine's address>"; exit 2; }
	DASK_CONFIG=$(CURDIR)/grader/dask.yaml PYTHONPATH=$(CURDIR) $(BIN)/dask worker $(SCHEDULER) --host $(HOST) \
		--nthreads 1 --nworkers 2 --no-dashboard $(DASK_TLS)

# The tree to publish to students (no solutions, grader, hidden tests or instructor targets), naming the address it is
# published at: make student-release DIR=../course-release STUDENT_REPO=https://github.com/<org>/<course>-student
student-release:
	@test -n "$(DIR)" || { echo "usage: make student-release DIR=<new folder outside the repository> STUDENT_REPO=<its public address>"; exit 2; }
	$(or $(wildcard $(BIN)/python),$(PYTHON)) -m grader student-release $(DIR) --repository "$(STUDENT_REPO)"
#@end-instructor
