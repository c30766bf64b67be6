"""The book's own Sphinx extension, loaded by _config.yml (`sphinx: local_extensions: course_pages: book/_ext`).

1. Static files: book/_static/ is added to the HTML static files. It holds MathJax 3.2.2
   (book/_static/mathjax/tex-svg-full.js, see scripts/fetch-mathjax.sh), which _config.yml's `mathjax_path`
   names, so that the pages typeset their math with no network. (Added here rather than with
   `html_static_path` in _config.yml so that a book made from _config.yml alone, as tests/test_book.py does,
   does not warn about a missing folder.)
   Sphinx 7.4 copies them only when it writes some page, so they are copied again at the end of every build
   where they differ (_refresh_static).
2. Sphinx 7.4 writes every inline script that an extension registers after the builder started twice (once
   as registered, once when `prepare_writing` re-adds "assets registered after Builder.init()", with the
   file name `''` instead of `None`, so the two copies do not compare equal). sphinx-thebe's
   `const THEBE_JS_URL = ...` declared twice is a JavaScript error on every page; this keeps one copy of
   each script.
3. pydata-sphinx-theme logs "Got invalid theme mode" on a first visit unless a default mode is set: "auto"
   (follow the reader's system setting), which is what it falls back to anyway.
4. book/_static/course.css: on a phone, wide tables and outputs scroll inside their own box, with a shadow
   at the edge that shows there is more; printed (and in `make pdf`), the pages drop their navigation, open
   their dropdown answers and wrap their code.
   book/_static/drills.js: the drills that `lib.drills.show` and `lib.drills.sheet` put in a cell's output.
5. The chapters the book publishes (_sources/**/*.ipynb: what the download button serves) get the commit the
   book was built from in their Colab install cell (COURSE_COMMIT, scripts/colab_cells.py), so a downloaded
   chapter installs the very `lib` its page was made with; the commit is also in _static/build-commit.txt.
6. The launch buttons open what the page was made from. Binder gets the build's commit as its ref (it builds the
   repository at that commit, `lib` included). Colab can open only files in a GitHub repository, and the
   repository's notebooks install its default branch; so the Colab button opens the page's published copy,
   `_sources/<page>.ipynb` on the branch the book is published to (`course_published_branch`, gh-pages unless
   _config.yml's `sphinx: config:` says otherwise; `make publish-book` puts it there with ghp-import), whose install
   cell names the build's commit (5). Outside a git checkout the buttons keep _config.yml's branch.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "_static"


def _add_static(app, config):
    if STATIC.is_dir() and str(STATIC) not in config.html_static_path:
        config.html_static_path.append(str(STATIC))


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in scripts:
        key = (getattr(js, "filename", js) or "", tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept


def _default_mode(app, pagename, templatename, context, doctree):
    if not context.get("default_mode"):
        context["default_mode"] = "auto"


@lru_cache
def _commit(folder: str) -> str:
    """The commit checked out in `folder`, or "" outside a git repository."""
    result = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=folder, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


COMMIT_LINE = re.compile(r'^COURSE_COMMIT = "[0-9a-f]*"')


def _pin_published_notebooks(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    commit = _commit(app.srcdir)
    (Path(app.outdir) / "_static" / "build-commit.txt").write_text(commit + "\n")
    for path in (Path(app.outdir) / "_sources").rglob("*.ipynb"):
        nb = json.loads(path.read_text())
        cell = next((c for c in nb["cells"] if "course-install" in c.get("metadata", {}).get("tags", [])), None)
        if cell is None:
            continue
        lines = cell["source"] if isinstance(cell["source"], list) else cell["source"].splitlines(keepends=True)
        pinned = [COMMIT_LINE.sub(f'COURSE_COMMIT = "{commit}"', line) for line in lines]
        if pinned != lines:
            cell["source"] = pinned
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def _pin_launch_buttons(app, pagename, templatename, context, doctree):
    """Runs after sphinx-book-theme made the buttons (priority 501): Binder at the build's commit, Colab on the
    published, pinned copy of this page (6)."""
    commit = _commit(app.srcdir)
    if not commit:
        return
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []) if isinstance(group, dict) else []:
            url = button.get("url", "")
            if button.get("text") == "Binder":
                button["url"] = re.sub(r"(/v2/gh/[^/]+/[^/]+/)[^?]+", lambda m: m.group(1) + commit, url, count=1)
            elif button.get("text") == "Colab":
                base = url.split("/blob/", 1)[0]
                button["url"] = f"{base}/blob/{app.config.course_published_branch}/_sources/{pagename}.ipynb"


def _rewrite_on_a_new_commit(app, env, added, changed, removed):
    """Every page names the build's commit in its launch buttons: after a commit, write all of them again (from
    the execution cache; nothing is executed again)."""
    commit = _commit(app.srcdir)
    if getattr(env, "course_commit", None) == commit:
        return []
    env.course_commit = commit
    return sorted(env.found_docs - set(added) - set(changed) - set(removed))


def _refresh_static(app, exception):
    """Sphinx 7.4 copies the static files only when it writes some page: after an edit to book/_static alone (the
    print rules of course.css, say), a warm `make book` kept the old copy. Copy what differs."""
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir) / "_static"
    for source in (p for p in STATIC.rglob("*") if p.is_file()):
        target = out / source.relative_to(STATIC)
        if not target.is_file() or target.read_bytes() != source.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _explorable_scripts(app, pagename, templatename, context, doctree):
    if "course-explorable" in (context.get("body") or ""):
        app.add_js_file("plotly.min.js", priority=510, loading_method="defer")
        app.add_js_file("explorable.js", priority=511, loading_method="defer")


def _plotly_js(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    import plotly  # the pinned package ships the plotly.js it was made for

    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    target = Path(app.outdir) / "_static" / "plotly.min.js"
    if not target.is_file() or target.stat().st_size != source.stat().st_size or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)


def setup(app):
    app.add_css_file("course.css")
    app.add_js_file("drills.js", loading_method="defer")
    app.connect("config-inited", _add_static)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("html-page-context", _default_mode)
    app.connect("html-page-context", _explorable_scripts)
    app.connect("build-finished", _pin_published_notebooks)
    app.add_config_value("course_published_branch", "gh-pages", "html")
    app.connect("html-page-context", _pin_launch_buttons, priority=600)
    app.connect("env-get-outdated", _rewrite_on_a_new_commit)
    app.connect("build-finished", _refresh_static)
    app.connect("build-finished", _plotly_js)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
