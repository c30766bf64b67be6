"""JupyterLab for this course (`make lab` points JUPYTER_CONFIG_PATH here).

- The Validate button answers summary first (course_lab.py, in place of nbgrader's validate handler).
- JupyterLab does not ask about fetching "Jupyter news" (lab/settings/overrides.json).
- The Formgrader's pages load MathJax from here (/static/), not from a CDN.
- In the student release (which has no grading package), nbgrader's other server extensions (Formgrader,
  Assignment List, Course List) are off: they only answer with errors there. Their menus and panels are turned
  off by labconfig/page_config.json, which `make student-release` writes.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent  # noqa: F821 (traitlets runs this file with __file__ and c defined)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

c = get_config()  # noqa: F821
extensions = {"nbgrader.server_extensions.validate_assignment": False, "course_lab": True}
if not (HERE.parent / "grader").is_dir():
    extensions.update({f"nbgrader.server_extensions.{name}": False
                       for name in ("formgrader", "assignment_list", "course_list")})
c.ServerApp.jpserver_extensions.update(extensions)
c.LabApp.app_settings_dir = str(HERE / "lab" / "settings")
# The Formgrader's MathJax (grader/templates/formgrade/mathjax.html.j2): the book's copy and its settings, at /static/.
c.ServerApp.extra_static_paths = [str(HERE.parent / "book" / "_static" / "mathjax"), str(HERE / "static")]
