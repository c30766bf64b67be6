"""Submissions for the grader's tests, each with the outcome it must get.

Every submission starts from the committed student version (`exercises/`), fills some solution cells from
`solutions/`, and may then be broken on purpose. `expected` is the autograded score (the manually graded
answers are not part of it); a submission with `fails` set must be reported as failed with that text in its
reason, and keep no autograded score.

The points each partial submission deserves follow from which test cells depend on which solution cells
(`DEPENDS`): a test cell passes when every solution cell it depends on is solved.
"""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HIDDEN_SEED = 20261207  # the tests' hidden cases (graded courses draw theirs at grading time)


def make_course(target: Path, *, cell_timeout: int = 45) -> Path:
    """A scratch course: the repository's solutions, exercises, config and grader, nothing graded yet, with a
    shorter cell time limit (so the endless loops cost less)."""
    target.mkdir(parents=True, exist_ok=True)
    for folder in ("solutions", "exercises", "grader", "scripts"):
        shutil.copytree(ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "nbgrader_config.py", target)
    shutil.copy(ROOT / "_config.yml", target)  # the repository the exercises' install cell names
    with open(target / "nbgrader_config.py", "a") as f:
        f.write(f"\n# the tests' scratch course: a shorter limit, so the endless loops cost less; the hidden cases\n"
                f"# of one seed, so that a partial answer's points are known\n"
                f"c.Execute.timeout = {cell_timeout}\nc.HiddenCases.seed = {HIDDEN_SEED}\n")
    return target

# test cell -> (points, the solution cells it needs)
DEPENDS = {
    "mixed_pooling": {
        "test_mixed_fixed": (2, {"mixed_pool"}),
        "test_mixed_learnable": (3, {"mixed_pool"}),
        "test_stochastic": (3, {"stochastic_pool"}),
        "test_lp": (2, {"lp_pool"}),
        "test_comparison": (2, {"mixed_pool", "stochastic_pool", "lp_pool", "make_net", "experiment"}),
    },
    "receptive_field": {
        "test_rf_chain": (3, {"calculator"}),
        "test_rf_centers": (2, {"calculator"}),
        "test_rf_graph": (3, {"calculator"}),
        "test_rf_published": (2, {"calculator"}),
        "test_rf_stages": (2, {"calculator", "stages"}),
    },
    "resnet_variants": {
        "test_preact": (3, {"preact"}),
        "test_wrn": (3, {"preact", "wrn"}),
        "test_blocks_twin": (2, {"resnext"}),
        "test_imagenet_twins": (2, {"resnext"}),
        "test_comparison": (1, {"preact", "wrn", "resnext", "experiment"}),
    },
    "conv_backward": {
        "test_conv_forward": (2, {"conv_forward"}),
        "test_conv_backward": (4, {"conv_backward"}),
        "test_pool": (3, {"pool"}),
        "test_gradcheck": (2, {"gradcheck"}),
        "test_gradcheck_used": (1, {"conv_forward", "conv_backward", "pool", "gradcheck", "gradcheck_used"}),
    },
    "vit_attention": {
        "test_attention": (3, {"attention"}),
        "test_self_attention": (3, {"attention", "self_attention"}),
        "test_patch_embed": (2, {"patch_embed"}),
        "test_block": (2, {"attention", "self_attention", "block"}),
        "test_tiny_vit": (2, {"attention", "self_attention", "patch_embed", "block", "tiny_vit"}),
        "test_training": (2, {"attention", "self_attention", "patch_embed", "block", "tiny_vit", "experiment"}),
    },
    "transfer_finetune": {  # fine_tuner(frozen_bn=True) calls part 1's freeze_batchnorm
        "test_feature_extraction": (3, {"feature_extraction"}),
        "test_discriminative": (3, {"fine_tuning"}),
        "test_frozen_bn": (2, {"feature_extraction", "fine_tuning"}),
        "test_evaluation": (2, {"evaluation"}),
        "test_experiment": (2, {"feature_extraction", "fine_tuning", "evaluation", "experiment"}),
    },
}
MANUAL = {"mixed_pooling": 3, "receptive_field": 2, "resnet_variants": 2, "conv_backward": 2, "vit_attention": 2,
          "transfer_finetune": 3}
# assignment -> the solution cells of its `partial` submission (an assignment not listed: its first test cell's)
PARTIAL = {"mixed_pooling": {"mixed_pool", "lp_pool"}, "receptive_field": {"calculator"},
           "resnet_variants": {"preact", "wrn"}, "conv_backward": {"conv_forward", "conv_backward"},
           "vit_attention": {"attention", "patch_embed"}, "transfer_finetune": {"feature_extraction", "evaluation"}}


def partial_cells(assignment: str) -> set[str]:
    return PARTIAL.get(assignment) or next(iter(DEPENDS[assignment].values()))[1]


def full_marks(assignment: str) -> float:
    return float(sum(points for points, _ in DEPENDS[assignment].values()))


def deserved(assignment: str, solved: set[str], failing: set[str] = frozenset(),
             lost: dict[str, tuple[int, int]] | None = None) -> float:
    """Points of the test cells whose solution cells are all solved, minus the cells in ``failing``, and minus
    the share of the checks each cell in ``lost`` fails (``cell: (failed, checks)``: nbgrader's partial credit)."""
    lost = lost or {}
    return float(sum(points * (1 - lost[cell][0] / lost[cell][1] if cell in lost else 1)
                     for cell, (points, needs) in DEPENDS[assignment].items() if needs <= solved and cell not in failing))


@dataclass
class Submission:
    student: str
    assignment: str
    what: str                                   # one line for the report
    notebook: dict | None = None
    raw: str | None = None                      # written as is instead of a notebook (broken files)
    extra_files: dict[str, str] = field(default_factory=dict)  # path in the submission folder -> text
    expected: float | None = None               # autograded score
    fails: str | None = None                    # the failure reason must contain this
    disabled: int = 0                           # cells the guard must disable

    def write(self, submitted: Path) -> None:
        folder = submitted / self.student / self.assignment
        folder.mkdir(parents=True, exist_ok=True)
        text = self.raw if self.raw is not None else json.dumps(self.notebook, indent=1)
        (folder / f"{self.assignment}.ipynb").write_text(text)
        for rel, content in self.extra_files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)


class Course:
    """The student version and the solutions of each assignment, read from a course directory."""

    def __init__(self, root: Path):
        self.root = root

    def _read(self, kind: str, assignment: str) -> dict:
        return json.loads((self.root / kind / assignment / f"{assignment}.ipynb").read_text())

    def exercise(self, assignment: str) -> dict:
        return self._read("exercises", assignment)

    def solution_sources(self, assignment: str) -> dict[str, str]:
        nb = self._read("solutions", assignment)
        return {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"]) for c in nb["cells"]
                if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code"}

    def solved(self, assignment: str, cells: set[str] | None = None, *, replace: dict[str, str] | None = None) -> dict:
        """The student version with ``cells`` (all, and the written answers too, if None) answered from the
        solutions; ``replace`` gives other answers for some cells."""
        nb = copy.deepcopy(self.exercise(assignment))
        answers = self.solution_sources(assignment)
        for cell in nb["cells"]:
            meta = cell["metadata"].get("nbgrader", {})
            grade_id = meta.get("grade_id")
            if replace and grade_id in replace:
                cell["source"] = replace[grade_id]
            elif grade_id in answers and (cells is None or grade_id in cells):
                cell["source"] = answers[grade_id]
            elif cells is None and meta.get("solution") and cell["cell_type"] == "markdown":
                cell["source"] = "1. An answer, to be graded by hand.\n2. Another.\n3. A third."
        return nb


def _code(source: str, cell_id: str) -> dict:
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "execution_count": None, "outputs": [],
            "source": source}


def _insert_after(nb: dict, grade_id: str, source: str, cell_id: str) -> dict:
    index = next(i for i, c in enumerate(nb["cells"]) if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    nb["cells"].insert(index + 1, _code(source, cell_id))
    return nb


def _find(nb: dict, grade_id: str) -> dict:
    return next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


# Answers that pass the visible tests and fail hidden ones.
MIXED_POOL_VISIBLE_ONLY = '''
class MixedPool2d(nn.Module):
    """Reshapes its output as if every image were square: right for the visible (square) cases only."""

    def __init__(self, kernel_size, stride=None, padding=0, *, alpha=0.5, learnable=None, channels=None):
        super().__init__()
        self.k, self.s, self.p, self.learnable = kernel_size, stride or kernel_size, padding, learnable
        if learnable is None:
            self.fixed = alpha
        else:
            n = 1 if learnable == "layer" else channels
            self.logit = nn.Parameter(torch.full((n,), math.log(alpha / (1 - alpha))))

    @property
    def alpha(self):
        return self.fixed if self.learnable is None else torch.sigmoid(self.logit)

    def forward(self, x):
        n, c, h, w = x.shape
        side = (h + 2 * self.p - self.k) // self.s + 1
        a = self.alpha if self.learnable is None else self.alpha.view(1, -1, 1, 1)
        mixed = a * F.max_pool2d(x, self.k, self.s, self.p) + (1 - a) * F.avg_pool2d(x, self.k, self.s, self.p)
        return mixed.reshape(n, c, side, side)
'''

WRONG_LP = '''
class LPPool2d(nn.Module):
    """Wrong on purpose: the maximum, whatever p."""

    def __init__(self, p, kernel_size, stride=None):
        super().__init__()
        self.p, self.kernel_size, self.stride = p, kernel_size, stride or kernel_size

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride)
'''

PATCH_GRADING = '''
import grader.checks.pooling as _checks
for _name in dir(_checks):
    if _name.startswith("check_"):
        setattr(_checks, _name, lambda *args, **kwargs: None)
_checks.assert_untampered = lambda: None
'''

PATCH_TORCH = '''
torch.allclose = lambda *args, **kwargs: True
torch.Tensor.all = lambda self, *args, **kwargs: torch.tensor(True)
F.max_pool2d = lambda x, *args, **kwargs: x
'''

FAKE_CHECKS = '''
def assert_untampered():
    pass

def __getattr__(name):
    return lambda *args, **kwargs: None
'''

# ---- Shortcuts: answers assembled from what a student's environment holds, instead of the work a cell names.
# `pydoc.locate` imports by a dotted string: one of the many doors a source scan cannot list, so these reach the
# grader's references at grading time and meet the references' own run-time check.
DOTTED = "from pydoc import locate as _get\n"

MIXED_VIA_IMPORT = '''
from grader.checks.pooling import mixed_pool_reference


class MixedPool2d(nn.Module):
    """The grader's reference as the forward."""

    def __init__(self, kernel_size, stride=None, padding=0, *, alpha=0.5, learnable=None, channels=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.learnable = kernel_size, stride, padding, learnable
        if learnable is None:
            self.fixed = alpha
        else:
            self.logit = nn.Parameter(torch.full((1 if learnable == "layer" else channels,), math.log(alpha / (1 - alpha))))

    @property
    def alpha(self):
        return self.fixed if self.learnable is None else torch.sigmoid(self.logit)

    def forward(self, x):
        return mixed_pool_reference(x, self.alpha, self.kernel_size, self.stride, self.padding)
'''

MIXED_VIA_DOTTED = MIXED_VIA_IMPORT.replace(
    "from grader.checks.pooling import mixed_pool_reference\n",
    DOTTED + "mixed_pool_reference = _get('grader.checks.pooling.mixed_pool_reference')\n")

STOCHASTIC_VIA_DOTTED = DOTTED + '''
expectation = _get("grader.checks.pooling.stochastic_pool_expectation")


class StochasticPool2d(nn.Module):
    """Sampling written by hand; the test-time expectation is the grader's reference."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride or kernel_size

    def forward(self, x):
        if not self.training:
            return expectation(x, self.kernel_size, self.stride)
        n, c, h, w = x.shape
        k, s = self.kernel_size, self.stride
        win = F.unfold(x, k, stride=s).view(n, c, k * k, -1).transpose(2, 3)
        total = win.sum(-1, keepdim=True)
        probs = torch.where(total > 0, win / total.clamp_min(1e-12), torch.full_like(win, 1.0 / (k * k)))
        idx = torch.multinomial(probs.reshape(-1, k * k), 1)
        return win.reshape(-1, k * k).gather(1, idx).view(n, c, (h - k) // s + 1, (w - k) // s + 1)
'''

MEASURED_FIELD = '''
def measure_field(model, input_size):
    """The field measured by back-propagation, with two neighbouring units for the jump and the centres."""
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, *input_size))
    n_h, n_w = out.shape[-2:]
    centre = empirical_receptive_field(model, (1, *input_size))
    i, j = centre.unit
    down = empirical_receptive_field(model, (1, *input_size), unit=(min(i + 1, n_h - 1), j))
    right = empirical_receptive_field(model, (1, *input_size), unit=(i, min(j + 1, n_w - 1)))
    jump = (max(1, round(down.center[0] - centre.center[0])), max(1, round(right.center[1] - centre.center[1])))
    ys = tuple(centre.center[0] + (r - i) * jump[0] for r in range(n_h))
    xs = tuple(centre.center[1] + (c - j) * jump[1] for c in range(n_w))
    return Field(size=centre.size, jump=jump, centers=(ys, xs))
'''
MEASURED_CALCULATOR = MEASURED_FIELD + '''

def compute_receptive_field(model, input_size):
    return measure_field(model, input_size)
'''
CALCULATOR_VIA_HELPER = '''
def compute_receptive_field(model, input_size):
    return measure_field(model, input_size)  # defined in a cell of its own, out of the guard's sight
'''
CALCULATOR_VIA_REFERENCE = DOTTED + '''
reference_field = _get("grader.checks.receptive_field.reference_field")


def compute_receptive_field(model, input_size):
    f = reference_field(model, input_size)
    return Field(size=f["size"], jump=f["jump"], centers=f["centers"])
'''

TORCHVISION_BLOCKS = '''
class ResNeXtBottleneck(torchvision.models.resnet.Bottleneck):
    """torchvision's bottleneck behind the exercise's signature."""

    expansion = 4

    def __init__(self, c_in, c_out, stride=1, *, groups=32, width_per_group=4):
        downsample = None
        if stride != 1 or c_in != c_out:
            downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        super().__init__(c_in, c_out // 4, stride, downsample, groups, width_per_group)


class WideBottleneck(ResNeXtBottleneck):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__(c_in, c_out, stride, groups=1, width_per_group=128)


def wide_resnet50_2(*, num_classes=1000):
    return ResNet(WideBottleneck, [3, 4, 6, 3], num_classes=num_classes, name="wide_resnet50_2")


def resnext50_32x4d(*, num_classes=1000):
    return ResNet(functools.partial(ResNeXtBottleneck, groups=32, width_per_group=4), [3, 4, 6, 3],
                  num_classes=num_classes, name="resnext50_32x4d")
'''

TORCHVISION_BUILDERS = '''
def wide_resnet50_2(*, num_classes=1000):
    return torchvision.models.wide_resnet50_2(weights=None, num_classes=num_classes)


def resnext50_32x4d(*, num_classes=1000):
    return torchvision.models.resnext50_32x4d(weights=None, num_classes=num_classes)
'''

TYPED_POOLING_RESULTS = '''
results = {name: {"acc": 0.87 - 0.01 * i, "seconds": 21.0 + i, "params": sum(p.numel() for p in make_net(pool).parameters())}
           for i, (name, pool) in enumerate(POOLINGS.items())}  # numbers typed in, nothing trained
'''

TYPED_VARIANT_RESULTS = '''
results = {name: {"acc": 0.84 + 0.02 * i, "seconds": 30.0 * (i + 1), "params": count_params(VARIANTS[name]())}
           for i, name in enumerate(["pre-activation ResNet (WRN-10-1)", "wide ResNet (WRN-10-2)"])}
'''

# conv_backward: torch's own convolution, pooling or autograd behind the exercise's signatures
CONV_VIA_TORCH = '''
def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1):
    return F.conv2d(x, weight, bias, stride, padding, dilation)
'''
CONV_VIA_GETATTR = '''
_convolve = getattr(F, "conv" + "2d")  # a computed name: no source scan can list every door


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1):
    return _convolve(x, weight, bias, stride, padding, dilation)
'''
BACKWARD_VIA_TORCH_GRAD = '''
import torch.nn.grad


def conv2d_backward(dy, x, weight, stride=1, padding=0, dilation=1):
    dx = torch.nn.grad.conv2d_input(x.shape, weight, dy, stride, padding, dilation)
    dweight = torch.nn.grad.conv2d_weight(x, weight.shape, dy, stride, padding, dilation)
    return dx, dweight, dy.sum(dim=(0, 2, 3))
'''
AUTOGRAD_HELPER = '''
def autograd_gradients(dy, x, weight, stride, padding, dilation):
    """Autograd through the student's own forward, in a cell of its own (no rule names this cell)."""
    x, weight = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    bias = torch.zeros(weight.shape[0], dtype=x.dtype, requires_grad=True)
    conv2d_forward(x, weight, bias, stride, padding, dilation).backward(dy)
    return x.grad, weight.grad, bias.grad
'''
BACKWARD_VIA_HELPER = '''
def conv2d_backward(dy, x, weight, stride=1, padding=0, dilation=1):
    return autograd_gradients(dy, x, weight, stride, padding, dilation)
'''
POOL_VIA_TORCH = '''
def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    return F.max_pool2d(x, kernel_size, stride, padding)


def maxpool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    _, where = F.max_pool2d(x, kernel_size, stride, padding, return_indices=True)
    dx = torch.zeros_like(x).flatten(2)
    dx.scatter_add_(2, where.flatten(2), dy.flatten(2))
    return dx.view_as(x)
'''
GRADCHECK_VIA_FUNC = '''
def numerical_gradient(f, x, eps=1e-6):
    return torch.func.grad(f)(x.detach().clone())  # autograd, not differences


def gradient_check(f, x, grad, eps=1e-6, tol=1e-6):
    numerical = numerical_gradient(f, x, eps)
    error = ((numerical - grad).norm() / max((numerical.norm() + grad.norm()).item(), 1e-12)).item()
    return error < tol, error
'''
TYPED_ERRORS = '''
errors = {"conv dx": 3.1e-10, "conv dweight": 2.7e-10, "conv dbias": 4.4e-11, "pool dx": 8.0e-10}  # typed in
'''


# ---- Attacks on the hidden tests themselves (issue 18): each in a blank or wrong notebook, so any point it earns
# is a point the trick bought. With the judge outside the kernel they earn nothing, guard or no guard.
ZEROS_MIXED = """
class MixedPool2d(nn.Module):
    \"\"\"Wrong on purpose: zeros of the right shape.\"\"\"

    def __init__(self, kernel_size, stride=None, padding=0, *, alpha=0.5, learnable=None, channels=None):
        super().__init__()
        self.k, self.s, self.p, self.alpha = kernel_size, stride, padding, alpha

    def forward(self, x):
        return torch.zeros_like(F.max_pool2d(x, self.k, self.s, self.p))
"""
INPUT_TRANSFORMER = """def _rewrite(lines):
    text = "".join(lines)
    if "assert" in text or "HIDDEN" in text:
        return ["pass\\n"]
    return lines
get_ipython().input_transformers_cleanup.append(_rewrite)
"""
AGREEABLE_SUBCLASS = """
class _Agree(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})
""" + ZEROS_MIXED.replace("return torch.zeros_like(F.max_pool2d(x, self.k, self.s, self.p))",
                          "return torch.zeros_like(F.max_pool2d(x, self.k, self.s, self.p)).as_subclass(_Agree)")
WRAPPED_REFERENCE = """from pydoc import locate
_reference = locate("grader.checks.pooling.mixed_pool_reference").__wrapped__
""" + ZEROS_MIXED.replace("return torch.zeros_like(F.max_pool2d(x, self.k, self.s, self.p))",
                          "return _reference(x, self.alpha, self.k, self.s, self.p)")
FAKE_CODE_OBJECT = """torch.allclose = eval(compile("lambda *args, **kwargs: True", torch.__file__, "eval"))
torch.Tensor.__eq__ = eval(compile("lambda self, other: torch.ones((), dtype=torch.bool)", torch.__file__, "eval"))
"""
FAKE_GRADER_ON_PATH = """import os, sys
os.makedirs("/tmp/fake/grader/checks", exist_ok=True)
for name in ("grader/__init__.py", "grader/checks/__init__.py"):
    open("/tmp/fake/" + name, "w").write("")
open("/tmp/fake/grader/checks/pooling.py", "w").write("def __getattr__(name):\\n    return lambda *a, **k: None\\n")
sys.path.insert(0, "/tmp/fake")
"""
LEAK_HIDDEN = """print(In)
import os
for folder in ("/opt", os.getcwd()):
    for root, dirs, files in os.walk(folder):
        print(root, files)
"""
FORGED_EVENT = """from IPython.display import display
def _forge(result):
    display({"application/vnd.cnn-course.report+json": [{"ok": {"y": 0, "learnable": 0}}] * 5, "text/plain": ""}, raw=True)
get_ipython().events.register("post_run_cell", _forge)
"""
PATCHED_REPORT = """import lib.report
_fake = {"tensor": "torch.float64", "shape": [1], "data": [0.0]}
lib.report.plain = lambda value: [{"ok": {"y": _fake, "learnable": 0}}] * 5
"""
SWALLOWED_FAILURES = """get_ipython().set_custom_exc((AssertionError, NameError, NotImplementedError), lambda *args, **kwargs: None)
"""
FORGED_BY_THREAD = """import threading, time
from IPython.display import display
def _forge():
    for _ in range(300):
        display({"application/vnd.cnn-course.report+json": [{"ok": {}}], "text/plain": ""}, raw=True)
        time.sleep(0.05)
threading.Thread(target=_forge, daemon=True).start()
"""


def attacks(course: Course, *, guarded: bool = True) -> list[Submission]:
    """One submission per class of attack on the hidden tests; expected 0 on the cells each targets (every cell,
    but the five points of a correct MixedPool2d in `leaks-hidden-tests`, and with the guard on the honest partial
    points of `patched-report`'s answer once its patch is disabled)."""
    a, prefix = "mixed_pooling", "" if guarded else "unguarded-"
    five = deserved(a, {"mixed_pool"})
    # patched-report with the guard on: its patch is disabled, and its answer earns its honest partial points
    honest_visible_only = deserved(a, {"mixed_pool"}, lost={"test_mixed_fixed": (3, 5), "test_mixed_learnable": (2, 5)})

    def blank() -> dict:  # a fresh copy: _insert_after changes the notebook it is given
        return course.exercise(a)

    def flagged(n: int) -> int:
        return n if guarded else 0

    def wrong(replace=ZEROS_MIXED):
        return course.solved(a, {"mixed_pool"}, replace={"mixed_pool": replace})
    subs = [
        Submission(prefix + "input-transformer", a, "a 7-line cell registering an IPython input transformer that empties "
                   "every test cell, in a blank notebook", _insert_after(blank(), "setup", INPUT_TRANSFORMER, "t"),
                   expected=0.0, disabled=flagged(1)),
        Submission(prefix + "tensor-subclass", a, "zeros returned as a tensor subclass whose __torch_function__ makes "
                   "torch.allclose agree", wrong(AGREEABLE_SUBCLASS), expected=0.0, disabled=flagged(1)),
        Submission(prefix + "fake-code-object", a, "torch.allclose and Tensor.__eq__ replaced by functions whose code "
                   "objects claim torch's file name, and zeros as the answer",
                   _insert_after(wrong(), "setup", FAKE_CODE_OBJECT, "t"), expected=0.0, disabled=flagged(1)),
        Submission(prefix + "fake-grader-on-path", a, "a fake grader package written to a folder put first on sys.path",
                   _insert_after(blank(), "setup", FAKE_GRADER_ON_PATH, "t"), expected=0.0, disabled=flagged(1)),
        Submission(prefix + "forged-reports", a, "a post_run_cell event that shows a forged report after every cell",
                   _insert_after(blank(), "setup", FORGED_EVENT, "t"), expected=0.0, disabled=flagged(1)),
        Submission(prefix + "patched-report", a, "lib.report.plain replaced so that every report is forged, with an "
                   "answer that passes the visible tests", _insert_after(wrong(MIXED_POOL_VISIBLE_ONLY), "setup",
                                                                         PATCHED_REPORT, "t"),
                   expected=honest_visible_only if guarded else 0.0, disabled=flagged(1)),
    ]
    if not guarded:
        return subs
    return subs + [
        Submission("wrapped-reference", a, "the grader's reference reached through `__wrapped__`", wrong(WRAPPED_REFERENCE),
                   expected=0.0, disabled=1),
        Submission("trick-in-time-magic", a, "the fake code objects inside an allowed %%time cell magic",
                   _insert_after(wrong(), "setup", "%%time\n" + FAKE_CODE_OBJECT, "t"), expected=0.0, disabled=1),
        Submission("swallowed-failures", a, "a custom exception handler that swallows the tests' failures, blank answers",
                   _insert_after(blank(), "setup", SWALLOWED_FAILURES, "t"), expected=0.0, disabled=1),
        Submission("forged-by-thread", a, "a thread that shows forged reports while the tests run, blank answers",
                   _insert_after(blank(), "setup", FORGED_BY_THREAD, "t"), expected=0.0, disabled=1),
        Submission("leaks-hidden-tests", a, "a correct MixedPool2d, and a last cell printing `In` and the files it can "
                   "see", _append(course.solved(a, {"mixed_pool"}), LEAK_HIDDEN, "leak"), expected=five),
    ]


def _append(nb: dict, source: str, cell_id: str) -> dict:
    nb["cells"].append(_code(source, cell_id))
    return nb


def _colour_cases(assignment: str, grade_id: str) -> tuple[int, int]:
    """(cases with more than one input channel, cases) of a test cell's hidden cases drawn with HIDDEN_SEED."""
    from grader import judge

    cases = judge.draw_cases(judge.cells_of(assignment)[grade_id], HIDDEN_SEED, grade_id)
    return sum(c["in_channels"] > 1 for c in cases), len(cases)


def build(course: Course) -> list[Submission]:
    subs: list[Submission] = []
    for a in DEPENDS:
        subs.append(Submission("reference", a, "every solution cell answered from solutions/",
                               course.solved(a), expected=full_marks(a)))
        subs.append(Submission("blank", a, "the student version, untouched", course.exercise(a), expected=0.0))
    for a in DEPENDS:
        cells = partial_cells(a)
        subs.append(Submission("partial", a, f"only {sorted(cells)} answered", course.solved(a, cells),
                               expected=deserved(a, cells)))

    # Answers fitted to the visible tests: the hidden tests must take points away.
    rf = course.solution_sources("receptive_field")["calculator"]
    rf_avg_floor = rf.replace("_pair(getattr(m, \"dilation\", 1)), m.ceil_mode",
                              "_pair(getattr(m, \"dilation\", 1)), m.ceil_mode and isinstance(m, nn.MaxPool2d)")
    assert rf_avg_floor != rf, "the receptive-field solution changed: update the visible-only variant"
    rv = course.solution_sources("resnet_variants")
    rv_wrn = rv["wrn"].replace("nn.Linear(64 * k, num_classes)", "nn.Linear(64 * k, 10)")
    rv_resnext = rv["resnext"].replace("num_classes=num_classes", "num_classes=1000")
    assert rv_wrn != rv["wrn"] and rv_resnext != rv["resnext"], "update the visible-only ResNet variant"
    cb_pool = course.solution_sources("conv_backward")["pool"].replace('float("-inf")', "0.0")
    assert cb_pool != course.solution_sources("conv_backward")["pool"], "update the visible-only max pooling"
    tf = course.solution_sources("transfer_finetune")["feature_extraction"]
    tf_five = tf.replace("nn.Linear(model.fc.in_features, num_classes)", "nn.Linear(model.fc.in_features, 5)")
    assert tf_five != tf, "update the visible-only transfer_finetune answer"
    vit_patch = course.solution_sources("vit_attention")["patch_embed"]
    vit_channels_last = vit_patch.replace("permute(0, 2, 4, 1, 3, 5)", "permute(0, 2, 4, 3, 5, 1)")
    assert vit_channels_last != vit_patch, "update the visible-only patch embedding"
    # With the tests' hidden seed (HIDDEN_SEED), the cases each one fails, as (failed, checks) per cell:
    # mixed pooling: the cases whose output is not square, 3 of 5 with a fixed alpha ((3, 5, 13, 11), (1, 2, 9, 7),
    # the drawn (1, 2, 11, 10)), 2 of 5 learned ((3, 2, 10, 12), the drawn (2, 1, 6, 9)); receptive field: the
    # hand-written chain with an average pooling in ceil_mode (its random chains have none where it matters);
    # ResNet variants: the cases with num_classes other than 10 (2 of 6) or 1000 (2 of 4); max pooling padded with
    # zeros: the padded cases where a window's real values are all negative, 2 of 6 ((1, 3, 8, 10), the drawn one).
    visible_only = {
        "mixed_pooling": ({"mixed_pool": MIXED_POOL_VISIBLE_ONLY},
                          {"test_mixed_fixed": (3, 5), "test_mixed_learnable": (2, 5)}, "MixedPool2d assumes square images"),
        "receptive_field": ({"calculator": rf_avg_floor}, {"test_rf_centers": (1, 4)},
                            "compute_receptive_field ignores ceil_mode in average pooling (it counts one output too few)"),
        "resnet_variants": ({"wrn": rv_wrn, "resnext": rv_resnext}, {"test_wrn": (2, 6), "test_imagenet_twins": (2, 4)},
                            "WideResNet and the ImageNet builders ignore num_classes"),
        "conv_backward": ({"pool": cb_pool}, {"test_pool": (2, 6)},
                          "max pooling pads with zeros instead of minus infinity"),
        # vit_attention: patches flattened channel-last are right for grey images only: the cases with C > 1
        "vit_attention": ({"patch_embed": vit_channels_last},
                          {g: _colour_cases("vit_attention", g) for g in ("test_patch_embed", "test_tiny_vit")},
                          "PatchEmbed flattens each patch channel-last (right for grey images only)"),
        # transfer_finetune: the feature extractor's cases with other than 5 classes (k = 5, 2, 7 with the seed)
        "transfer_finetune": ({"feature_extraction": tf_five}, {"test_feature_extraction": (2, 3)},
                              "feature_extractor gives a 5-class head whatever num_classes says"),
    }
    for a, (replace, lost, what) in visible_only.items():
        subs.append(Submission("visible-only", a, what + " (passes every visible test)", course.solved(a, replace=replace),
                               expected=deserved(a, all_solution_cells(a), lost=lost)))

    # Hostile or broken submissions, on the quickest notebook. Most start from an answer worth 5 points
    # (MixedPool2d only) so that a defined score shows the rest of the notebook ran.
    a = "mixed_pooling"
    base = {"mixed_pool"}
    five = deserved(a, base)

    def on_base(cells=base, replace=None):
        return course.solved(a, cells, replace=replace)

    subs += [
        Submission("infinite-loop", a, "a cell that never ends (`while True: pass`)",
                   _insert_after(on_base(), "setup", "while True:\n    pass", "loop"), expected=five),
        Submission("loop-ignores-interrupt", a, "an endless loop that swallows the interrupt",
                   _insert_after(on_base(), "setup", "import time\nwhile True:\n    try:\n        time.sleep(0.5)\n"
                                 "    except BaseException:\n        pass", "loop"), fails="timed out"),
        Submission("exception-at-import", a, "the LPPool2d cell imports a module that does not exist",
                   on_base(base | {"lp_pool"}, replace={"lp_pool": "import a_module_that_does_not_exist\n"
                                                        + course.solution_sources(a)["lp_pool"]}), expected=five),
        Submission("edited-test-cell", a, "a wrong LPPool2d, and its test cell replaced by a print",
                   _edit(on_base(base | {"lp_pool"}, replace={"lp_pool": WRONG_LP}), "test_lp",
                         'print("LPPool2d: passed")'), expected=five),
        Submission("deleted-test-cell", a, "a wrong LPPool2d, and its test cell deleted",
                   _delete(on_base(base | {"lp_pool"}, replace={"lp_pool": WRONG_LP}), "test_lp"), expected=five),
        Submission("deleted-solution-cell", a, "the LPPool2d solution cell deleted",
                   _delete(on_base(base | {"lp_pool"}), "lp_pool"), expected=five),
        Submission("invalid-json", a, "a file that is not JSON", raw='{"cells": [ {"cell_type": "code", '
                   '"source": "oops"', fails="JSON"),
        Submission("prints-megabytes", a, "a cell that prints 6 MB",
                   _insert_after(on_base(), "setup", "print('x' * 5_000_000)\nfor i in range(100_000):\n    print(i)",
                                 "big"), expected=five),
        Submission("sys-exit", a, "a cell that calls sys.exit()",
                   _insert_after(on_base(), "mixed_pool", "import sys\nsys.exit('bye')", "exit"), expected=five),
        Submission("kills-kernel", a, "a cell that kills the kernel (os._exit)",
                   _insert_after(on_base(), "mixed_pool", "import os\nos._exit(0)", "exit"), expected=five,
                   disabled=1),
        Submission("patches-grading", a, "blank answers, and a cell that replaces the grader's checks by no-ops",
                   _insert_after(course.exercise(a), "setup", PATCH_GRADING, "patch"), expected=0.0, disabled=1),
        Submission("patches-torch", a, "blank answers, and a cell that makes torch.allclose always true",
                   _insert_after(course.exercise(a), "setup", PATCH_TORCH, "patch"), expected=0.0, disabled=1),
        Submission("rewrites-tests", a, "blank answers, and an IPython input transformer that empties every "
                   "later cell", _insert_after(course.exercise(a), "setup",
                                              "get_ipython().input_transformers_cleanup.append(lambda lines: "
                                              "['pass\\n'])", "patch"), expected=0.0, disabled=1),
        Submission("writes-grader", a, "blank answers, and a cell that writes a fake grader/checks/pooling.py next "
                   "to the notebook", _insert_after(course.exercise(a), "setup",
                                                    "import os\nos.makedirs('grader/checks', exist_ok=True)\n"
                                                    f"open('grader/checks/pooling.py', 'w').write({FAKE_CHECKS!r})\n"
                                                    "open('grader/__init__.py', 'w').write('')\n"
                                                    "open('grader/checks/__init__.py', 'w').write('')", "patch"),
                   expected=0.0, disabled=1),
        Submission("ships-grader", a, "blank answers, submitted with its own grader/checks/pooling.py, lib/ and torch.py",
                   course.exercise(a), extra_files={"grader/__init__.py": "", "grader/checks/__init__.py": "",
                                                    "grader/checks/pooling.py": FAKE_CHECKS, "lib/__init__.py": "",
                                                    "torch.py": "raise SystemExit('fake torch')"}, expected=0.0),
    ]
    return subs + shortcuts(course) + attacks(course)


SHORTCUT_POINTS = {  # submission -> (assignment, the test cells it shortcuts, {cell: (checks failed, checks)})
    "shortcut-reference-import": ("mixed_pooling", {"test_mixed_fixed", "test_mixed_learnable", "test_comparison"}, {}),
    "shortcut-reference-dotted": ("mixed_pooling", {"test_mixed_fixed", "test_mixed_learnable", "test_comparison"}, {}),
    "shortcut-expectation": ("mixed_pooling", {"test_stochastic", "test_comparison"}, {}),
    "shortcut-typed-results": ("mixed_pooling", set(), {"test_comparison": (1, 2)}),  # the rows, not make_net
    "shortcut-measured-field": ("receptive_field", set(DEPENDS["receptive_field"]), {}),
    "shortcut-measured-helper": ("receptive_field", {"test_rf_chain", "test_rf_centers", "test_rf_graph",
                                                     "test_rf_published"}, {}),
    "shortcut-field-reference": ("receptive_field", {"test_rf_chain", "test_rf_centers", "test_rf_graph",
                                                     "test_rf_published"}, {}),
    "shortcut-torchvision-blocks": ("resnet_variants", {"test_blocks_twin", "test_imagenet_twins"}, {}),
    # the builders' cell holds the blocks too: the guard disables both
    "shortcut-torchvision-builders": ("resnet_variants", {"test_blocks_twin", "test_imagenet_twins"}, {}),
    "shortcut-typed-variants": ("resnet_variants", {"test_comparison"}, {}),
    # the guard disables the answer cell: the cells that need it score 0, the gradient check's use included
    "shortcut-conv2d": ("conv_backward", {"test_conv_forward", "test_gradcheck_used"}, {}),
    "shortcut-torch-grad": ("conv_backward", {"test_conv_backward", "test_gradcheck_used"}, {}),
    "shortcut-torch-pool": ("conv_backward", {"test_pool", "test_gradcheck_used"}, {}),
    # out of the guard's sight: the judge sees the torch functions the answer called
    "shortcut-conv2d-getattr": ("conv_backward", {"test_conv_forward"}, {}),
    "shortcut-autograd-helper": ("conv_backward", {"test_conv_backward"}, {}),
    "shortcut-gradcheck-autograd": ("conv_backward", {"test_gradcheck"}, {}),
    "shortcut-typed-errors": ("conv_backward", {"test_gradcheck_used"}, {}),
}


def shortcuts(course: Course) -> list[Submission]:
    """Answers built from what a student's environment holds (the grader's references reached by an import
    or by a door the scan does not list, lib's measurement, torchvision's implementations, typed-in numbers),
    each in an otherwise correct notebook: the cells it shortcuts must score 0, every other cell full marks."""
    def worth(name: str, solved: set[str] | None = None) -> float:
        a, cut, lost = SHORTCUT_POINTS[name]
        return deserved(a, all_solution_cells(a) if solved is None else solved, cut, lost)

    rv = course.solution_sources("resnet_variants")
    own_blocks = rv["resnext"][:rv["resnext"].index("def wide_resnet50_2")]
    rf_only = {"calculator"}  # the stage table is left blank: it would only measure the slow way
    subs = [
        Submission("shortcut-reference-import", "mixed_pooling", "MixedPool2d's forward imports the grader's reference",
                   course.solved("mixed_pooling", replace={"mixed_pool": MIXED_VIA_IMPORT}),
                   expected=worth("shortcut-reference-import"), disabled=1),
        Submission("shortcut-reference-dotted", "mixed_pooling", "the same reference, imported by a dotted name "
                   "through torch._utils", course.solved("mixed_pooling", replace={"mixed_pool": MIXED_VIA_DOTTED}),
                   expected=worth("shortcut-reference-dotted"), disabled=1),
        Submission("shortcut-expectation", "mixed_pooling", "StochasticPool2d's eval mode is the grader's "
                   "stochastic_pool_expectation", course.solved("mixed_pooling",
                                                                replace={"stochastic_pool": STOCHASTIC_VIA_DOTTED}),
                   expected=worth("shortcut-expectation"), disabled=1),
        Submission("shortcut-typed-results", "mixed_pooling", "the comparison's results typed in, nothing trained",
                   course.solved("mixed_pooling", replace={"experiment": TYPED_POOLING_RESULTS}),
                   expected=worth("shortcut-typed-results")),
        Submission("shortcut-measured-field", "receptive_field", "compute_receptive_field measures with "
                   "empirical_receptive_field (and two neighbouring units for the jump and centres)",
                   course.solved("receptive_field", rf_only, replace={"calculator": MEASURED_CALCULATOR}),
                   expected=worth("shortcut-measured-field", rf_only), disabled=1),
        Submission("shortcut-measured-helper", "receptive_field", "the same measurement, moved to a cell of its own",
                   _insert_after(course.solved("receptive_field", rf_only, replace={"calculator": CALCULATOR_VIA_HELPER}),
                                 "setup", MEASURED_FIELD, "helper"),
                   expected=worth("shortcut-measured-helper", rf_only)),
        Submission("shortcut-field-reference", "receptive_field", "compute_receptive_field returns the grader's "
                   "reference_field", course.solved("receptive_field", rf_only,
                                                    replace={"calculator": CALCULATOR_VIA_REFERENCE}),
                   expected=worth("shortcut-field-reference", rf_only), disabled=1),
        Submission("shortcut-torchvision-blocks", "resnet_variants", "the bottlenecks derive from torchvision's",
                   course.solved("resnet_variants", replace={"resnext": TORCHVISION_BLOCKS}),
                   expected=worth("shortcut-torchvision-blocks"), disabled=1),
        Submission("shortcut-torchvision-builders", "resnet_variants", "own blocks, but the builders return "
                   "torchvision's models", course.solved("resnet_variants",
                                                         replace={"resnext": own_blocks + TORCHVISION_BUILDERS}),
                   expected=worth("shortcut-torchvision-builders"), disabled=1),
        Submission("shortcut-typed-variants", "resnet_variants", "the variants' results typed in, nothing trained",
                   course.solved("resnet_variants", replace={"experiment": TYPED_VARIANT_RESULTS}),
                   expected=worth("shortcut-typed-variants")),
    ]
    return subs + conv_shortcuts(course, worth)


def conv_shortcuts(course: Course, worth) -> list[Submission]:
    """conv_backward's: torch's convolution, pooling or autograd inside an answer, named (the guard disables the
    cell) or reached where the guard cannot see (the judge reads which torch functions the answer called), and a
    gradient check's results typed in."""
    a = "conv_backward"

    def sub(name: str, what: str, replace: dict[str, str], disabled: int, nb: dict | None = None) -> Submission:
        return Submission(name, a, what, nb or course.solved(a, replace=replace), expected=worth(name), disabled=disabled)
    return [
        sub("shortcut-conv2d", "conv2d_forward returns F.conv2d", {"conv_forward": CONV_VIA_TORCH}, 1),
        sub("shortcut-conv2d-getattr", "conv2d_forward calls F.conv2d through a computed name (getattr)",
            {"conv_forward": CONV_VIA_GETATTR}, 0),
        sub("shortcut-torch-grad", "conv2d_backward returns torch.nn.grad's conv2d_input and conv2d_weight",
            {"conv_backward": BACKWARD_VIA_TORCH_GRAD}, 1),
        sub("shortcut-autograd-helper", "conv2d_backward calls autograd (requires_grad_, .backward()) in a helper "
            "defined in a cell of its own", {}, 0, _insert_after(course.solved(a, replace={
                "conv_backward": BACKWARD_VIA_HELPER}), "conv_forward", AUTOGRAD_HELPER, "helper")),
        sub("shortcut-torch-pool", "max pooling by F.max_pool2d and its indices", {"pool": POOL_VIA_TORCH}, 1),
        sub("shortcut-gradcheck-autograd", "numerical_gradient is torch.func.grad (autograd)",
            {"gradcheck": GRADCHECK_VIA_FUNC}, 0),
        sub("shortcut-typed-errors", "the gradient check's errors typed in, nothing measured",
            {"gradcheck_used": TYPED_ERRORS}, 0),
    ]


def build_unguarded(course: Course) -> list[Submission]:
    """Attacks for a run with the guard off (`--GuardCells.enabled=False`): the run-time defences alone."""
    a = "mixed_pooling"
    return [
        Submission("unguarded-patches-grading", a, "as patches-grading, with the guard off",
                   _insert_after(course.exercise(a), "setup", PATCH_GRADING, "patch"), expected=0.0),
        Submission("unguarded-patches-torch", a, "as patches-torch, with the guard off",
                   _insert_after(course.exercise(a), "setup", PATCH_TORCH, "patch"), expected=0.0),
        Submission("unguarded-kills-kernel", a, "as kills-kernel, with the guard off",
                   _insert_after(course.solved(a, {"mixed_pool"}), "mixed_pool", "import os\nos._exit(0)", "exit"),
                   fails="died"),
    ] + attacks(course, guarded=False)


def all_solution_cells(assignment: str) -> set[str]:
    return set().union(*(needs for _, needs in DEPENDS[assignment].values()))


def _edit(nb: dict, grade_id: str, source: str) -> dict:
    _find(nb, grade_id)["source"] = source
    return nb


def _delete(nb: dict, grade_id: str) -> dict:
    nb["cells"] = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") != grade_id]
    return nb
