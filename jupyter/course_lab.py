"""JupyterLab's Validate button, summary first: a Jupyter server extension that answers the nbgrader Validate
button's request (``/assignments/validate``) with scripts/validate.py's report instead of nbgrader's.

nbgrader's dialog prints each failing test cell's whole source, then its traceback; the line that says what to
fix is below the fold. This answers in the shape the dialog reads (one "failed" entry), so that the dialog shows:
first the summary, one line per graded part (name, points, passed / not written yet / the failing check's
message), then, folded, each failure's source and traceback. jupyter/jupyter_server_config.py loads it in place
of ``nbgrader.server_extensions.validate_assignment``.
"""
from __future__ import annotations

import html
import importlib.util
import json
import os
import sys
from pathlib import Path

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

ROOT = Path(__file__).resolve().parents[1]
# The dialog labels its first block "The following cell failed:"; the summary is not a cell, so that label goes.
_STYLE = "<style>#validation-message > div:first-child { display: none; }</style>"


def _validator():
    spec = importlib.util.spec_from_file_location("course_validate", ROOT / "scripts" / "validate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("course_validate", module)
    spec.loader.exec_module(module)
    return module


def dialog_value(found, name: str) -> dict:
    """What nbgrader's dialog renders: {} when every test passed, else one entry whose "source" is the summary
    (shown as text) and whose "error" (shown as HTML) holds the failures' sources and tracebacks, folded."""
    v = _validator()
    failed = [p for p in found if p.failed]
    if not failed:
        return {}
    folds = "".join(f"<details><summary>{html.escape(p.name)}: {html.escape(p.status)}</summary>"
                    f"<pre>{html.escape(p.source.strip())}\n\n{html.escape(p.details.strip())}</pre></details>"
                    for p in failed)
    text = "\n".join(v.summary(name, found))
    return {"failed": [{"source": text, "error": _STYLE + "<b>The failing tests, one by one:</b>" + folds}]}


class ValidateHandler(JupyterHandler):
    @web.authenticated
    def post(self):
        path = self.get_argument("path", None) or self.get_json_body()["path"]
        root = Path(self.settings["root_dir"]).resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise web.HTTPError(403, "Access denied: path outside allowed directory")
        v = _validator()
        try:
            results, executed = v.run(target, v.course_config(Path(os.getcwd())))
            if "changed" in results or "type_changed" in results or executed is None:
                value = results
            else:
                value = dialog_value(v.parts(executed), target.name)
            self.finish(json.dumps({"success": True, "value": value}))
        except Exception as e:  # noqa: BLE001 - the dialog shows what went wrong, as nbgrader's does
            self.log.exception("validating %s failed", target)
            self.finish(json.dumps({"success": False, "value": f"{type(e).__name__}: {e}"}))


def _jupyter_server_extension_points():
    return [{"module": "course_lab"}]


def _load_jupyter_server_extension(app):
    from nbgrader.server_extensions.validate_assignment.handlers import NbGraderVersionHandler

    app.web_app.settings["root_dir"] = app.root_dir
    base = app.web_app.settings["base_url"]
    app.web_app.add_handlers(".*$", [(url_path_join(base, "assignments/validate"), ValidateHandler),
                                     (url_path_join(base, "nbgrader_version"), NbGraderVersionHandler)])
