"""Everything a submission produced is inert where the instructor and the student look at it.

A graded notebook is opened by the instructor in the formgrader (with the instructor's session: a script there
can rewrite every grade through its API) and by the student as the feedback page. Two autograde preprocessors
(grader.config puts them after the run) and one step after the feedback is written:

- :class:`CapOutputs` caps the number and the total size of the outputs of each cell and of the notebook
  (``TruncateOutputs`` in grader.preprocessors caps each output; 10,000 outputs made a 200 MB notebook);
- :class:`InertOutputs` reduces outputs and markdown answers to safe types: text, images as images (base64
  only), HTML and markdown through bleach (nbconvert's ``SanitizeHTML``), every other MIME type dropped
  (``application/javascript``, SVG, widgets, ...), output and attachment metadata that templates put in
  attributes cleared;
- :func:`protect_feedback` writes a Content Security Policy into each feedback page: no script but the page
  template's own (by hash), so a script that got through anyway does not run.
"""
from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from nbconvert.preprocessors.sanitize import SanitizeHTML
from nbformat.v4 import new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import is_locked
from traitlets import Any, Bool, Integer, List, Set, Unicode

IMAGES = {"image/png", "image/jpeg", "image/gif"}
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
_JS_URL = re.compile(r"\]\(\s*<?\s*(?:javascript|vbscript|data)\s*:", re.IGNORECASE)


class CapOutputs(NbGraderPreprocessor):
    """At most `max_outputs` outputs and `max_cell_chars` characters per cell, and `max_notebook_chars` for
    the whole notebook; what is cut is replaced by one line that says how much was. A cell's error outputs
    stay (each capped by TruncateOutputs), and the line goes to stderr when what it replaces held stderr, so
    that a test cell scores as it ran (nbgrader fails a test cell on an error or on stderr)."""

    max_outputs = Integer(100, help="Outputs kept per cell").tag(config=True)
    max_cell_chars = Integer(200_000, help="Characters of output kept per cell").tag(config=True)
    max_notebook_chars = Integer(2_000_000, help="Characters of output kept per notebook").tag(config=True)

    def preprocess(self, nb, resources):
        left = self.max_notebook_chars
        for cell in nb.cells:
            if cell.cell_type == "code":
                left -= self._cap(cell, left)
        return nb, resources

    def _cap(self, cell, notebook_left: int) -> int:
        """Keep the cell's first outputs within both budgets; return the characters kept."""
        budget, kept, dropped, used = min(self.max_cell_chars, max(notebook_left, 0)), [], [], 0
        for out in cell.outputs:
            size = _size(out)
            if out.get("output_type") != "error" and (len(kept) >= self.max_outputs or used + size > budget):
                dropped.append(out)
                continue
            kept.append(out)
            used += size
        if dropped:
            failed = any(o.get("output_type") == "stream" and o.get("name") == "stderr" for o in dropped)
            note = (f"... {len(dropped):,} more output(s) ({sum(map(_size, dropped)):,} characters) removed by the "
                    f"autograder: a cell keeps {self.max_outputs} outputs and {self.max_cell_chars:,} characters, "
                    f"a notebook {self.max_notebook_chars:,} ...\n")
            errors = [o for o in kept if o.get("output_type") == "error"]
            rest = [o for o in kept if o.get("output_type") != "error"]
            cell.outputs = [*rest, new_output("stream", name="stderr" if failed else "stdout", text=note), *errors]
        return used


def _size(out) -> int:
    if out.get("output_type") == "stream":
        return len(out.get("text", ""))
    if out.get("output_type") == "error":
        return sum(map(len, out.get("traceback", []))) + len(out.get("evalue", ""))
    return sum(len(v) if isinstance(v, str) else len(str(v)) for v in out.get("data", {}).values())


class InertOutputs(SanitizeHTML):
    """nbconvert's SanitizeHTML (bleach) with the course's choices: what a grader needs to read kept, nothing
    that runs, loads or draws over the page."""

    tags = List(Unicode(), ["a", "abbr", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4",
                            "hr", "i", "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody",
                            "td", "tfoot", "th", "thead", "tr", "ul"]).tag(config=True)
    attributes = Any({"a": ["href", "title"], "td": ["colspan", "rowspan"], "th": ["colspan", "rowspan"],
                      "abbr": ["title"]}).tag(config=True)
    styles = List(Unicode(), []).tag(config=True)
    safe_output_keys = Set({"text/plain", "text/latex", "application/json", *IMAGES}).tag(config=True)
    sanitized_output_types = Set({"text/html", "text/markdown"}).tag(config=True)
    enabled = Bool(True).tag(config=True)  # nbconvert's preprocessors are off unless enabled; this one always runs

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "markdown" and is_locked(cell) and "grade_id" in cell.metadata.get("nbgrader", {}):
            return cell, resources  # the instructor's text, restored from the gradebook by OverwriteCells
        if cell.cell_type == "markdown":
            cell.source = _JS_URL.sub("](#removed-by-the-autograder:", cell.source)
            cell.pop("attachments", None)  # rendered as data: URLs of any type the notebook claims
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                _inert_output(out)
        super().preprocess_cell(cell, resources, cell_index)
        return cell, resources


def _inert_output(out) -> None:
    """Metadata the templates write into attributes cleared; images that are not plain base64 dropped."""
    if "metadata" in out:
        out.metadata = {}
    if isinstance(out.get("data", {}).get("text/markdown"), str):
        out.data["text/markdown"] = _JS_URL.sub("](#removed-by-the-autograder:", out.data["text/markdown"])
    for mime in [m for m in out.get("data", {}) if m in IMAGES]:
        value = out.data[mime]
        if not isinstance(value, str) or not _BASE64.fullmatch(value) or not _decodes(value):
            del out.data[mime]
            out.data.setdefault("text/plain", f"[{mime} output removed by the autograder: not an image]")


def _decodes(value: str) -> bool:
    try:
        base64.b64decode("".join(value.split()), validate=True)
    except ValueError:
        return False
    return True


# ---- the feedback page: a Content Security Policy that lets only the template's own scripts run -------------
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data: https:; "
       "script-src {scripts}; base-uri 'none'; form-action 'none'")
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)
_SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc=[\"']([^\"']+)[\"']", re.IGNORECASE)


def policy(template_html: str) -> str:
    """The CSP for pages made from the template that rendered ``template_html`` (a notebook with no outputs):
    its inline scripts by hash, its external scripts by address, nothing else."""
    hashes = {"'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
              for s in _INLINE_SCRIPT.findall(template_html)}
    sources = {"/".join(src.split("/")[:3]) if src.startswith("https://") else "'self'"
               for src in _SCRIPT_SRC.findall(template_html)}  # a CDN's origin, or a local copy (offline MathJax)
    return CSP.format(scripts=" ".join(sorted(hashes | sources)) or "'none'")


def protect_feedback(page: Path, csp: str) -> None:
    """Put ``csp`` first in the page's <head> (a policy applies to what follows it)."""
    text = page.read_text()
    meta = f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
    if meta not in text:
        page.write_text(re.sub(r"<head>", "<head>\n" + meta, text, count=1, flags=re.IGNORECASE))


def feedback_policy(config) -> str:
    """The CSP for the feedback pages: nbgrader's feedback template rendered on an empty notebook, with the
    course's settings (``config``), gives the scripts the template itself brings."""
    import nbformat
    from nbconvert.exporters import HTMLExporter
    from nbgrader.converters import GenerateFeedback

    settings = GenerateFeedback(config=config).config  # nbgrader's own template settings over the course's
    exporter = HTMLExporter(config=settings)
    resources = {"nbgrader": {"notebook": "feedback", "score": 0, "max_score": 0, "late_penalty": 0}}
    html, _ = exporter.from_notebook_node(nbformat.v4.new_notebook(), resources=resources)
    return policy(html)
