"""Outputs and answers are inert and bounded (issue #19, items 1 and 3): grader/sanitize.py's preprocessors on
the outputs an attacker's notebook produces, and the feedback page's Content Security Policy. The same
attacks graded end to end, and opened in a browser, are in tests/test_hostile_submissions.py."""
from __future__ import annotations

import base64
import copy
import re

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

from grader.sanitize import CapOutputs, InertOutputs, policy

SCRIPT = "<script>fetch('/formgrader/api/grades')</script>"
# markup that runs or loads: a script/frame/svg/img tag, an event handler inside a tag, a javascript: link
ACTIVE = re.compile(r"<\s*(?:script|iframe|svg|img)\b|<[^>]*\son\w+\s*=|(?:href\s*=\s*[\"']?|\]\()\s*javascript:",
                    re.IGNORECASE)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(16)).decode()


def hostile_notebook():
    outputs = [
        new_output("display_data", {"text/html": SCRIPT + "<b>bold</b><table><tr><td>1</td></tr></table>",
                                    "text/plain": "plain"}),
        new_output("display_data", {"text/html": '<img src=x onerror="alert(1)"><a href="javascript:alert(2)">a</a>'}),
        new_output("display_data", {"application/javascript": "alert(3)", "text/plain": "js"}),
        new_output("display_data", {"image/svg+xml": "<svg onload='alert(4)'/>", "text/plain": "svg"}),
        new_output("display_data", {"image/png": PNG}, metadata={"image/png": {"width": "1 onerror=alert(5)"}}),
        new_output("display_data", {"image/png": 'x" onerror="alert(6)'}),
        new_output("display_data", {"text/markdown": "[x](javascript:alert(7)) <iframe src=//evil></iframe>"}),
        new_output("stream", name="stdout", text="<script>stays text: the template escapes streams</script>"),
    ]
    answer = new_markdown_cell("My answer <script>alert(8)</script> [click](JavaScript:alert(9)) "
                               "<img src=x onerror=alert(10)>", attachments={"a.png": {"text/html": SCRIPT}})
    answer.metadata["nbgrader"] = {"solution": True, "grade": True, "grade_id": "reflection", "points": 3}
    return new_notebook(cells=[new_code_cell("x", outputs=outputs), answer, new_raw_cell(SCRIPT)])


def test_outputs_and_answers_are_reduced_to_safe_types():
    nb, _ = InertOutputs().preprocess(hostile_notebook(), {})
    text = nbformat.writes(new_notebook(cells=[nb.cells[1], nb.cells[2]])) + repr(nb.cells[0].outputs[:7])
    assert not ACTIVE.findall(text.replace("\\", ""))
    outs = nb.cells[0].outputs
    assert "<b>bold</b><table><tbody><tr><td>1</td></tr></tbody></table>" in outs[0].data["text/html"]  # kept
    assert "&lt;script&gt;" in outs[0].data["text/html"]  # the attack is shown as text
    assert set(outs[2].data) == {"text/plain"} and set(outs[3].data) == {"text/plain"}
    assert outs[4].data["image/png"] == PNG and outs[4].metadata == {}
    assert "image/png" not in outs[5].data
    assert outs[7].text.startswith("<script>stays text")  # a stream is text; nbconvert escapes it
    assert "attachments" not in nb.cells[1]
    assert "My answer" in nb.cells[1].source


def test_the_instructors_locked_text_is_left_alone():
    cell = new_markdown_cell("Compare `a < b` <details>x</details>")
    cell.metadata["nbgrader"] = {"locked": True, "grade_id": "intro", "solution": False, "grade": False}
    nb, _ = InertOutputs().preprocess(new_notebook(cells=[copy.deepcopy(cell)]), {})
    assert nb.cells[0].source == cell.source
    forged = copy.deepcopy(cell)
    del forged.metadata["nbgrader"]["grade_id"]  # what OverwriteCells leaves of a cell the gradebook lacks
    forged.source = SCRIPT
    nb, _ = InertOutputs().preprocess(new_notebook(cells=[forged]), {})
    assert "<script" not in nb.cells[0].source


def _flood(n: int, stream: str = "stdout"):
    return [new_output("stream", name=stream, text=f"line {i}\n" * 2) for i in range(n)]


def test_outputs_are_capped_per_cell_and_per_notebook():
    error = new_output("error", ename="AssertionError", evalue="wrong", traceback=["AssertionError: wrong"])
    cells = [new_code_cell("a", outputs=_flood(10_000)),
             new_code_cell("b", outputs=[*_flood(50), error]),
             new_code_cell("c", outputs=_flood(10_000, "stderr"))]
    capper = CapOutputs(max_outputs=100, max_cell_chars=100_000, max_notebook_chars=2_000)
    nb, _ = capper.preprocess(new_notebook(cells=cells), {})
    first, second, third = (c.outputs for c in nb.cells)
    assert len(first) == 101 and "9,900 more output(s)" in first[-1].text and first[-1].name == "stdout"
    assert 1 < len(second) < 50 and second[-1].output_type == "error"  # a failed test still fails: its error stays
    assert third[0].name == "stderr" and len(third) == 1  # the notebook's budget is spent; stderr still fails
    assert len(nbformat.writes(nb)) < 100_000


def test_feedback_policy_allows_only_the_templates_scripts():
    template = ('<html><head><script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/x.js"></script>'
                '<script type="text/x-mathjax-config">MathJax.Hub.Config({})</script></head></html>')
    csp = policy(template)
    assert "script-src 'sha256-" in csp and "https://cdnjs.cloudflare.com" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1] and "default-src 'none'" in csp
