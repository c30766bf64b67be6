"""A Jupyter server extension: the formgrader's submission pages are served with a Content Security Policy.

The formgrader shows a graded notebook inside a page that carries the instructor's session: a script among
the outputs could change every grade through the formgrader's API or write files through Jupyter's. The
outputs are made inert when they are graded (grader/sanitize.py); this is the second wall, for what a
sanitiser might miss. Only the scripts of nbgrader's own page template run: the page's part above the
notebook is the template's, so its inline scripts (and its two ``onclick`` handlers) are allowed by hash,
along with the formgrader's own files; nothing inside the notebook runs.

`make lab` loads it for instructors (``--ServerApp.jpserver_extensions``); by hand:
``PYTHONPATH=. jupyter lab --ServerApp.jpserver_extensions="{'grader.formgrader_csp': True}"``.
"""
from __future__ import annotations

import base64
import hashlib
import re

from tornado.web import OutputTransform

NOTEBOOK = b'id="notebook-container"'  # where the student's notebook starts in nbgrader's formgrade template
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)
_HANDLER = re.compile(r"\son\w+=\"([^\"]*)\"", re.IGNORECASE)
_SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc=[\"'](https://[^/\"']+)", re.IGNORECASE)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def policy(template_part: str) -> str:
    """The CSP for a page whose template-made part (above the notebook) is ``template_part``."""
    allowed = {_hash(s) for s in _INLINE_SCRIPT.findall(template_part)}
    allowed |= {_hash(h) for h in _HANDLER.findall(template_part)}
    allowed |= set(_SCRIPT_SRC.findall(template_part))  # MathJax's CDN
    # 'unsafe-eval': the formgrader's own scripts build their views with underscore's templates (new Function)
    return ("default-src 'self'; script-src 'self' 'unsafe-eval' 'unsafe-hashes' " + " ".join(sorted(allowed))
            + "; style-src 'self' 'unsafe-inline' https:; img-src 'self' data:; font-src 'self' data: https:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")


class SubmissionPagePolicy(OutputTransform):
    """Adds the policy to every HTML page under /formgrader/submissions/ (where students' notebooks show)."""

    def __init__(self, request):
        self.applies = "/formgrader/submissions/" in request.path

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        if self.applies and headers.get("Content-Type", "").startswith("text/html"):
            template_part = chunk.split(NOTEBOOK, 1)[0].decode(errors="replace")
            headers["Content-Security-Policy"] = policy(template_part)
        return status_code, headers, chunk

    def transform_chunk(self, chunk, finishing):
        return chunk


def _jupyter_server_extension_points():
    return [{"module": "grader.formgrader_csp"}]


def _load_jupyter_server_extension(serverapp):
    serverapp.web_app.transforms.insert(0, SubmissionPagePolicy)  # first: it reads the page before any gzip
    serverapp.log.info("grader.formgrader_csp: the formgrader's submission pages run no script of a submission")
