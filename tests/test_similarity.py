"""`make similarity`: a planted copy (variables renamed, helpers reordered) is the top pair; independent answers to
the same task stay below the threshold; nothing leaves the machine."""
from __future__ import annotations

import copy
import json
import re
import socket
import sys
from pathlib import Path

import pytest

from grader import similarity

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "nbgrader_fixtures"))
from submissions import Course  # noqa: E402

sys.path.pop(0)
A = "mixed_pooling"
PLACEHOLDER = "# YOUR CODE HERE\n{pad}raise NotImplementedError()"

# Two students' own answers to mixed_pool (init, alpha, forward), stochastic_pool and lp_pool, written apart.
FIRST = {
    "mixed_pool": ['''if learnable is None:
    self.fixed_alpha = float(alpha)
else:
    size = channels if learnable == "channel" else 1
    self.raw = nn.Parameter(torch.logit(torch.full((size,), float(alpha))))''',
                   '''if self.learnable is None:
    return self.fixed_alpha
return torch.sigmoid(self.raw)''',
                   '''s = self.stride or self.kernel_size
hi = F.max_pool2d(x, self.kernel_size, s, self.padding)
lo = F.avg_pool2d(x, self.kernel_size, s, self.padding)
w = self.alpha if self.learnable is None else self.alpha.reshape(1, -1, 1, 1)
return lo + w * (hi - lo)'''],
    "stochastic_pool": ['''n, c = x.shape[:2]
k, s = self.kernel_size, self.stride
patches = x.unfold(2, k, s).unfold(3, k, s)
oh, ow = patches.shape[2], patches.shape[3]
patches = patches.reshape(n, c, oh, ow, k * k)
sums = patches.sum(-1, keepdim=True)
p = torch.where(sums > 0, patches / sums.clamp_min(1e-12), torch.ones_like(patches) / (k * k))
if not self.training:
    return (p * patches).sum(-1)
choice = torch.multinomial(p.reshape(-1, k * k), 1)
return patches.reshape(-1, k * k).gather(1, choice).reshape(n, c, oh, ow)'''],
    "lp_pool": ['''area = self.kernel_size ** 2
return F.lp_pool2d(x, self.p, self.kernel_size, self.stride) / area ** (1 / self.p)'''],
}
SECOND = {
    "mixed_pool": ['''self.fixed = alpha
if learnable:
    shape = (1,) if learnable == "layer" else (channels,)
    start = torch.tensor(alpha / (1 - alpha)).log()
    self.weight_logit = nn.Parameter(start.expand(shape).clone())''',
                   '''return self.fixed if not self.learnable else self.weight_logit.sigmoid()''',
                   '''k = self.kernel_size
step = self.stride if self.stride is not None else k
cols = F.pad(x, (self.padding,) * 4).unfold(2, k, step).unfold(3, k, step).flatten(-2)  # (N, C, H', W', k*k)
weight = self.alpha
if not isinstance(weight, float):
    weight = weight.view(1, -1, 1, 1)
return weight * cols.amax(-1) + (1 - weight) * cols.mean(-1)'''],
    "stochastic_pool": ['''k, s = self.kernel_size, self.stride
rows, cols = range(0, x.shape[2] - k + 1, s), range(0, x.shape[3] - k + 1, s)
out = x.new_zeros(x.shape[0], x.shape[1], len(rows), len(cols))
for i, r in enumerate(rows):
    for j, q in enumerate(cols):
        win = x[:, :, r:r + k, q:q + k].flatten(2)
        total = win.sum(-1, keepdim=True)
        prob = win / total.where(total > 0, torch.ones_like(total))
        if self.training:
            pick = torch.multinomial(prob.flatten(0, 1) + 1e-12, 1)
            out[:, :, i, j] = win.flatten(0, 1).gather(1, pick).view(x.shape[0], x.shape[1])
        else:
            out[:, :, i, j] = (prob * win).sum(-1)
return out'''],
    "lp_pool": ['''w = x.unfold(2, self.kernel_size, self.stride).unfold(3, self.kernel_size, self.stride)
return (w ** self.p).mean((-1, -2)) ** (1 / self.p)'''],
}
RENAMES = {"mx": "biggest", "av": "smooth", "win": "tiles", "total": "denom", "probs": "chance", "idx": "chosen",
           "out": "pooled", "mean": "avg_p", "h_out": "rows_out", "w_out": "cols_out", "net": "model",
           "history": "trace", "name": "label"}


def _answered(answers: dict[str, list[str]]) -> dict:
    """The student version with ``answers`` put in place of each placeholder of those cells, in order."""
    nb = copy.deepcopy(Course(ROOT).exercise(A))
    for cell in nb["cells"]:
        bodies = list(answers.get(cell["metadata"].get("nbgrader", {}).get("grade_id"), []))
        source = "".join(cell["source"])
        while bodies and "raise NotImplementedError()" in source:
            pad = re.search(r"( *)# YOUR CODE HERE\n", source).group(1)
            body = "\n".join(pad + line for line in bodies.pop(0).splitlines()).lstrip()
            source = source.replace(PLACEHOLDER.format(pad=pad), body, 1)
        cell["source"] = source
    return nb


def _planted(reference: dict) -> dict:
    """The reference answer with its variables renamed and its helper classes in another order."""
    nb = copy.deepcopy(reference)
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        for old, new in RENAMES.items():
            source = re.sub(rf"\b{old}\b", new, source)
        cell["source"] = source
    ids = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in nb["cells"]]
    i, j = ids.index("stochastic_pool"), ids.index("lp_pool")
    nb["cells"][i], nb["cells"][j] = nb["cells"][j], nb["cells"][i]
    return nb


@pytest.fixture
def course(tmp_path):
    reference = Course(ROOT).solved(A)
    students = {"ada": reference, "bob": _planted(reference), "cy": _answered(FIRST), "dee": _answered(SECOND),
                "eve": Course(ROOT).exercise(A)}
    for student, nb in students.items():
        folder = tmp_path / "submitted" / student / A
        folder.mkdir(parents=True)
        (folder / f"{A}.ipynb").write_text(json.dumps(nb))
    (tmp_path / "exercises" / A).mkdir(parents=True)
    (tmp_path / "exercises" / A / f"{A}.ipynb").write_text(json.dumps(Course(ROOT).exercise(A)))
    return tmp_path


def test_answers_are_in_place():
    assert "torch.sigmoid(self.raw)" in json.dumps(_answered(FIRST)) and "weight_logit" in json.dumps(_answered(SECOND))
    assert json.dumps(_answered(FIRST)).count("raise NotImplementedError()") < \
        json.dumps(Course(ROOT).exercise(A)).count("raise NotImplementedError()")


def test_planted_copy_is_the_top_pair_and_independent_answers_are_not_flagged(course, capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the similarity check opened a network connection")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert similarity.similarity(course, A) == 0
    out = capsys.readouterr().out
    report = (course / "grades" / f"similarity-{A}.html").read_text()
    codes = {s: similarity.solution_code(course / "submitted" / s / A / f"{A}.ipynb")
             for s in ("ada", "bob", "cy", "dee", "eve")}
    pairs = similarity.compare(codes, similarity.solution_code(course / "exercises" / A / f"{A}.ipynb"))
    print("\n".join(f"{p.a}/{p.b}: {p.score:.2f}" for p in pairs))
    assert {pairs[0].a, pairs[0].b} == {"ada", "bob"} and pairs[0].score >= similarity.THRESHOLD
    flagged = [{p.a, p.b} for p in pairs if p.score >= similarity.THRESHOLD]
    assert flagged == [{"ada", "bob"}], flagged
    assert "ada / bob" in out or "bob / ada" in out
    assert "highlight-red" in report and "<script" not in report and "http" not in report.split("</style>")[0]
