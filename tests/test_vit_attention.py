"""The graded assignment ``vit_attention``: attention, multi-head self-attention, the patch embedding, a pre-norm block
and a tiny ViT from tensors and ``nn.Linear``, and a short training run.

Without nbgrader: each test cell's hidden part runs here on the solution's code (as the kernel would) and the
grader's judge (``grader.checks.vit_attention``) decides its report: the solution passes, the usual mistakes are
named, and answers that call or contain PyTorch's attention, lib's ViT or torchvision's fail whatever the source
scan saw. Through nbgrader's real autograde (slow): the solved notebook earns full marks, the blank one nothing,
an answer fitted to the visible tests loses the hidden cases it gets wrong, and each shortcut earns 0 on the cells
it targets and full marks elsewhere.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import judge_helpers as H
import lib.report
from grader import judge, scan
from grader.checks import vit_attention as V

ROOT = Path(__file__).resolve().parents[1]
A = "vit_attention"
DEFINITIONS = ("setup", "attention", "self_attention", "patch_embed", "block", "tiny_vit", "experiment_setup")
# test cell -> (points, the solution cells it needs)
DEPENDS = {
    "test_attention": (3, {"attention"}),
    "test_self_attention": (3, {"attention", "self_attention"}),
    "test_patch_embed": (2, {"patch_embed"}),
    "test_block": (2, {"attention", "self_attention", "block"}),
    "test_tiny_vit": (2, {"attention", "self_attention", "patch_embed", "block", "tiny_vit"}),
    "test_training": (2, {"attention", "self_attention", "patch_embed", "block", "tiny_vit", "experiment"}),
}
MANUAL = 2
SOLUTION_CELLS = set().union(*(needs for _, needs in DEPENDS.values()))


def _cells(kind: str = "solutions") -> list[dict]:
    return H.cells(A, kind)


_grade_id, failed = H.grade_id, H.failed


def _source(grade_id: str) -> str:
    return H.sources(A)[grade_id]


@functools.cache
def solution() -> dict:
    """The namespace of the solution notebook after its setup and definition cells (no tests, no training)."""
    ns: dict = {}
    with H.quick_sizes():
        for grade_id in DEFINITIONS:
            exec(compile(_source(grade_id), f"{A}:{grade_id}", "exec"), ns)
    return ns


def variant(grade_id: str, **changes: str) -> dict:
    """The solution's namespace with the cell ``grade_id`` run again, its source changed (each value of
    ``changes`` is an ``(old, new)`` pair): one idea removed, to see the judge name it."""
    ns = dict(solution())
    source = _source(grade_id)
    for old, new in changes.values():
        assert old in source, old
        source = source.replace(old, new)
    exec(compile(source, f"{A}:{grade_id} (variant)", "exec"), ns)
    return ns


def kernel_report(grade_id: str, namespace: dict, cases: list[dict]):
    """What the cell's hidden part reports when it runs in ``namespace`` on ``cases`` (as the kernel would)."""
    return H.kernel_report(A, grade_id, _source(grade_id), namespace, cases)


def judged(grade_id: str, namespace: dict | None = None, seed: int = 7, **replace) -> list:
    ns = dict(solution() if namespace is None else namespace, **replace)
    return H.judged(A, grade_id, _source(grade_id), ns, seed)


# ---- the notebook and its judge ---------------------------------------------------------------------------

def test_test_cells_have_visible_tests_a_hidden_part_that_only_reports_and_the_points_of_the_table():
    cells = judge.cells_of(A)
    graded = {}
    for cell in _cells():
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade"):
            graded[meta["grade_id"]] = (cell["cell_type"], meta["points"])
        if meta.get("grade") and cell["cell_type"] == "code":
            visible, _, hidden = "".join(cell["source"]).partition(judge.DELIMITER)
            assert "assert " in visible and not re.search(r"\bgrader\b", visible + hidden), meta["grade_id"]
            assert "\nCASES = []" in hidden and "report(" in hidden, meta["grade_id"]
    assert {g: p for g, (kind, p) in graded.items() if kind == "code"} == {g: p for g, (p, _) in DEPENDS.items()}
    assert set(cells) == set(DEPENDS)
    assert {g: p for g, (kind, p) in graded.items() if kind == "markdown"} == {"reflection": MANUAL}
    intro = "".join(_cells()[0]["source"])
    for part, (points, _) in zip(range(1, 7), DEPENDS.values()):
        assert re.search(rf"\| {part} \|[^\n]*\| {points} \|", intro), f"part {part}: the intro's table says other points"


def test_cases_are_drawn_per_run():
    for grade_id, cell in judge.cells_of(A).items():
        if grade_id != "test_training":
            assert judge.draw_cases(cell, 1, grade_id) != judge.draw_cases(cell, 2, grade_id), grade_id


@pytest.mark.parametrize("grade_id", [g for g in DEPENDS if g != "test_training"])
@pytest.mark.parametrize("seed", [7, 8])
def test_the_solution_passes_the_hidden_cases(grade_id, seed):
    assert failed(judged(grade_id, seed=seed)) == []


@pytest.mark.slow
def test_the_solutions_training_passes_and_a_typed_in_table_does_not(one_thread):
    trained = dict(solution())
    exec(compile(_source("experiment"), f"{A}:experiment", "exec"), trained)  # QUICK sizes: SIZES is bound
    assert failed(judged("test_training", trained)) == []
    typed = {name: {"acc": 0.8, "seconds": 1.0, "params": solution()["count_params"](solution()["make_vit"](p))}
             for name, p in solution()["PATCH_SIZES"].items()}
    messages = failed(judged("test_training", results=typed))
    assert len(messages) == 1 and "report the numbers of your own run" in messages[0], messages


def test_the_references_agree_with_each_other():
    """Independent references must agree: F.scaled_dot_product_attention with nn.MultiheadAttention's heads
    (the self-attention's diagnosis), F.conv2d with the patches cut by hand."""
    spec = lib.report.fill(V._SelfAttentionSpec(12), 3).double()
    x = lib.report.rand((2, 5, 12), 3, low=-1.0).double()
    with torch.no_grad():
        mha = V._torch_mha(spec, 3)(x, x, x, need_weights=False)[0]
        q, k, v = spec.qkv(x).chunk(3, -1)
        heads = [F.scaled_dot_product_attention(*(t[..., 4 * h:4 * h + 4] for t in (q, k, v))) for h in range(3)]
        assert torch.allclose(spec.proj(torch.cat(heads, -1)), mha, atol=1e-10)
        patches = V._PatchSpec(8, 4, 3, 5)
        lib.report.fill(patches, 1).double()
        img = lib.report.rand((1, 3, 8, 8), 1).double()
        cut = img.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(1, 4, 48)  # (1, L, C*P*P)
        tokens = torch.cat([patches.cls_token, patches.proj(cut)], 1) + patches.pos_embed
        assert torch.allclose(V._embed(patches, img, 4), tokens, atol=1e-10)


MISTAKES = {  # (cell, {name: (old, new)}, the test cell, the fragment its message must hold)
    "no scaling": ("attention", {"s": (" / math.sqrt(q.shape[-1])", "")}, "test_attention", "divide the scores by sqrt(d)"),
    "inverted mask": ("attention", {"m": ("masked_fill(~mask", "masked_fill(mask")}, "test_attention", "you inverted it"),
    "masked with 0": ("attention", {"m": ('float("-inf")', "0.0")}, "test_attention", "set the masked scores to -inf"),
    "interleaved heads": ("self_attention", {"v": ("view(n, length, 3, self.num_heads, dim // self.num_heads)",
                                                   "view(n, length, 3, dim // self.num_heads, self.num_heads)"),
                                            "p": ("permute(2, 0, 3, 1, 4)", "permute(2, 0, 4, 1, 3)")},
                          "test_self_attention", "not every num_heads-th feature"),
    "no output projection": ("self_attention", {"p": ("return self.proj(out", "return (out")}, "test_self_attention",
                             "apply the output projection"),
    "channels last": ("patch_embed", {"p": ("permute(0, 2, 4, 1, 3, 5)", "permute(0, 2, 4, 3, 5, 1)")},
                      "test_patch_embed", "flatten each patch in the order (C, P, P)"),
    "post-norm": ("block", {"a": ("x = x + self.attn(self.ln1(x), mask)", "x = self.ln1(x + self.attn(x, mask))"),
                            "m": ("return x + self.mlp(self.ln2(x))", "return self.ln2(x + self.mlp(x))")},
                  "test_block", "post-norm"),
    "ReLU": ("block", {"a": ("nn.GELU()", "nn.ReLU()")}, "test_block", "GELU"),
    "mean of the tokens": ("tiny_vit", {"h": ("self.head(x[:, 0])", "self.head(x.mean(1))")}, "test_tiny_vit",
                           "classify the class token"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistakes_are_named(mistake):
    cell, changes, grade_id, fragment = MISTAKES[mistake]
    messages = failed(judged(grade_id, variant(cell, **changes)))
    assert messages and any(fragment in m for m in messages), messages


def test_channels_last_patches_fail_only_with_several_channels():
    """The visible tests use grey images; the hidden ones catch a patch flattened channel-last where C > 1."""
    cases = judge.draw_cases(V.CELLS["test_patch_embed"], 7, "test_patch_embed")
    checks = judged("test_patch_embed", variant("patch_embed", p=MISTAKES["channels last"][1]["p"]))
    assert [not c.passed for c in checks] == [case["in_channels"] > 1 for case in cases]


# ---- own work: the judge fails PyTorch's attention, lib's ViT and torchvision's, whatever the scan saw -----

SDPA = '''
def attention(q, k, v, mask=None):
    """PyTorch's attention behind the exercise's signature."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
'''
SDPA_BY_NAME = '''
_sdpa = getattr(F, "scaled_dot_" + "product_attention")  # a name the source scan cannot read


def attention(q, k, v, mask=None):
    return _sdpa(q, k, v, attn_mask=mask)
'''
TORCH_MHA = '''
class SelfAttention(nn.Module):
    """nn.MultiheadAttention behind the exercise's signature."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, x, mask=None):
        return self.mha(x, x, x, attn_mask=None if mask is None else ~mask, need_weights=False)[0]
'''
MHA_FUNCTIONAL_BY_NAME = '''
_mha = getattr(F, "multi_head_" + "attention_forward")


class SelfAttention(nn.Module):
    """The task's parameters, and PyTorch's functional multi-head attention as the forward."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.qkv, self.proj = num_heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        t = x.transpose(0, 1)
        out, _ = _mha(t, t, t, x.shape[-1], self.num_heads, self.qkv.weight, self.qkv.bias, None, None, False, 0.0,
                      self.proj.weight, self.proj.bias, need_weights=False, attn_mask=None if mask is None else ~mask)
        return out.transpose(0, 1)
'''
TORCH_BLOCK = '''
class Block(nn.TransformerEncoderLayer):
    """PyTorch's pre-norm encoder layer behind the exercise's signature."""

    def __init__(self, dim, num_heads, mlp_dim):
        super().__init__(dim, num_heads, mlp_dim, dropout=0.0, activation="gelu", layer_norm_eps=1e-6,
                         batch_first=True, norm_first=True)

    def forward(self, x, mask=None):
        return super().forward(x, src_mask=None if mask is None else ~mask)
'''
LIB_VIT = '''
from lib.models.vit import VisionTransformer, ViTConfig


def TinyViT(*, image_size=28, patch_size=7, in_channels=1, num_classes=10, dim=32, depth=2, num_heads=2, mlp_dim=64):
    cfg = ViTConfig(patch_size, depth, num_heads, dim, mlp_dim, image_size)
    return VisionTransformer(cfg, num_classes=num_classes, in_channels=in_channels)
'''
LIB_VIT_BY_NAME = '''
import lib.models


def TinyViT(*, image_size=28, patch_size=7, in_channels=1, num_classes=10, dim=32, depth=2, num_heads=2, mlp_dim=64):
    return lib.models.build("vit_" + "tiny_28", num_classes=num_classes, in_channels=in_channels, image_size=image_size)
'''
TORCHVISION_VIT = '''
import torchvision


def TinyViT(*, image_size=28, patch_size=7, in_channels=1, num_classes=10, dim=32, depth=2, num_heads=2, mlp_dim=64):
    model = torchvision.models.VisionTransformer(image_size, patch_size, depth, num_heads, dim, mlp_dim,
                                                 num_classes=num_classes)
    model.conv_proj = nn.Conv2d(in_channels, dim, patch_size, patch_size)
    return model
'''
TYPED_RESULTS = '''
results = {name: {"acc": 0.71 + 0.02 * i, "seconds": 3.0 * (i + 1), "params": count_params(make_vit(patch))}
           for i, (name, patch) in enumerate(PATCH_SIZES.items())}  # typed in, nothing trained
'''
SHORTCUT_SOURCES = {  # name -> (solution cell, its source, flagged by the scan, the test cell judged, message fragment)
    "sdpa": ("attention", SDPA, True, "test_attention", "calls torch's `scaled_dot_product_attention`"),
    "sdpa-by-name": ("attention", SDPA_BY_NAME, False, "test_attention", "calls torch's `scaled_dot_product_attention`"),
    "torch-mha": ("self_attention", TORCH_MHA, True, "test_self_attention", "MultiheadAttention"),
    "mha-functional-by-name": ("self_attention", MHA_FUNCTIONAL_BY_NAME, False, "test_self_attention",
                               "calls torch's `multi_head_attention_forward`"),
    "torch-block": ("block", TORCH_BLOCK, True, "test_block", "TransformerEncoderLayer"),
    "lib-vit": ("tiny_vit", LIB_VIT, True, "test_tiny_vit", "uses lib.models"),
    "lib-vit-by-name": ("tiny_vit", LIB_VIT_BY_NAME, False, "test_tiny_vit", "uses lib.models"),
    "torchvision-vit": ("tiny_vit", TORCHVISION_VIT, True, "test_tiny_vit", "uses torchvision"),
}


def _scan(grade_id: str, source: str):
    foreign = scan.imported_names(["".join(c["source"]) for c in _cells() if c["cell_type"] == "code"])
    return scan.scan_source(source, foreign, scan.FORBIDDEN_CALLS[A].get(grade_id))


@pytest.mark.parametrize("name", SHORTCUT_SOURCES)
def test_shortcuts_fail_every_hidden_case_of_their_cell(name):
    """Judged with the scan out of the way: every case fails and says what was used. The scan flags the plain
    ones first (the guard then disables the cell); those that reach a tool by a computed name pass it."""
    cell, source, flagged, grade_id, fragment = SHORTCUT_SOURCES[name]
    ns = dict(solution())
    exec(compile(source, name, "exec"), ns)
    messages = failed(judged(grade_id, ns))
    assert len(messages) == len(judge.draw_cases(V.CELLS[grade_id], 7, grade_id)), messages
    assert all(fragment in m for m in messages), messages
    assert bool(_scan(cell, source)) == flagged, _scan(cell, source)


def test_the_scan_passes_the_solution_and_allows_the_tools_outside_the_answers():
    for cell in _cells():
        if cell["cell_type"] == "code" and not cell["metadata"].get("nbgrader", {}).get("locked"):
            assert _scan(_grade_id(cell), "".join(cell["source"])) == [], _grade_id(cell)
    assert _scan("not an answer cell", SDPA) == []
    assert "is the attention the exercise asks you to write" in str(_scan("attention", SDPA)[0])


# ---- through nbgrader's autograde ---------------------------------------------------------------------------

def _fixtures():
    spec = importlib.util.spec_from_file_location("vit_submissions", ROOT / "tests" / "nbgrader_fixtures" / "submissions.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["vit_submissions"] = module
    spec.loader.exec_module(module)
    return module


def deserved(solved: set[str], cut: set[str] = frozenset(), lost: dict[str, tuple[int, int]] | None = None) -> float:
    """Points of the test cells whose solution cells are all solved, but those in ``cut``, less the share of
    checks lost in ``lost`` (``cell: (failed, checks)``)."""
    lost = lost or {}
    return float(sum(points * (1 - lost[cell][0] / lost[cell][1] if cell in lost else 1)
                     for cell, (points, needs) in DEPENDS.items() if needs <= solved and cell not in cut))


def _depending_on(*cells: str) -> set[str]:
    return {test for test, (_, needs) in DEPENDS.items() if needs & set(cells)}


def submissions(course, hidden_seed: int) -> dict[str, tuple[dict, float, int]]:
    """student -> (notebook, expected autograded points, cells the guard must disable)."""
    def replaced(cell: str, source: str) -> dict:
        return course.solved(A, replace={cell: source})

    patch_cases = judge.draw_cases(V.CELLS["test_patch_embed"], hidden_seed, "test_patch_embed")
    vit_cases = judge.draw_cases(V.CELLS["test_tiny_vit"], hidden_seed, "test_tiny_vit")
    several = {"test_patch_embed": (sum(c["in_channels"] > 1 for c in patch_cases), len(patch_cases)),
               "test_tiny_vit": (sum(c["in_channels"] > 1 for c in vit_cases), len(vit_cases))}
    channels_last = course.solution_sources(A)["patch_embed"].replace("permute(0, 2, 4, 1, 3, 5)", "permute(0, 2, 4, 3, 5, 1)")
    subs = {
        "reference": (course.solved(A), deserved(SOLUTION_CELLS), 0),
        "blank": (course.exercise(A), 0.0, 0),
        "partial": (course.solved(A, {"attention", "patch_embed"}), deserved({"attention", "patch_embed"}), 0),
        "visible-only": (replaced("patch_embed", channels_last), deserved(SOLUTION_CELLS, lost=several), 0),
        "shortcut-typed-results": (replaced("experiment", TYPED_RESULTS), deserved(SOLUTION_CELLS, {"test_training"}), 0),
    }
    for name, (cell, source, flagged, _, _) in SHORTCUT_SOURCES.items():  # disabled, or judged: 0 either way
        subs["shortcut-" + name] = (replaced(cell, source), deserved(SOLUTION_CELLS, _depending_on(cell)), int(flagged))
    return subs


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from grader.autograde import autograde
    from grader.course import generate_exercises

    fixtures = _fixtures()
    saved = dict(os.environ)
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    try:
        root = fixtures.make_course(tmp_path_factory.mktemp("course"))
        generate_exercises(root, [A])
        subs = submissions(fixtures.Course(root), fixtures.HIDDEN_SEED)
        for student, (nb, _, _) in subs.items():
            folder = root / "submitted" / student / A
            folder.mkdir(parents=True)
            (folder / f"{A}.ipynb").write_text(json.dumps(nb))
        outcomes = {o.student: o for o in autograde(root, students=list(subs), quiet=True, progress=False)}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return root, subs, outcomes


@pytest.mark.slow
def test_scores_through_autograde(graded):
    """Full marks for the solution, nothing for the blank notebook, the hidden cases' share for the visible-only
    answer, and 0 on the cells a shortcut targets (full marks elsewhere). Prints the shortcut table."""
    root, subs, outcomes = graded
    rows = []
    for student, (_, expected, disabled) in subs.items():
        o = outcomes[student]
        assert o.ok, f"{student}: {o.reason}"
        assert o.auto == pytest.approx(expected), f"{student}: {o.auto} points, expected {expected}"
        assert o.disabled_cells == disabled, f"{student}: {o.disabled_cells} cells disabled, expected {disabled}"
        assert o.auto_max == deserved(SOLUTION_CELLS) and o.manual_max == MANUAL
        rows.append(f"| {student} | {o.auto:g} / {o.auto_max:g} | {o.seconds:.1f} |")
    print("\n".join(rows))


@pytest.mark.slow
def test_shortcuts_say_what_was_detected(graded):
    root, _, _ = graded
    for name, (_, _, flagged, _, fragment) in SHORTCUT_SOURCES.items():
        nb = json.loads((root / "autograded" / f"shortcut-{name}" / A / f"{A}.ipynb").read_text())
        text = json.dumps([c.get("outputs", []) for c in nb["cells"]])
        expected = "is the attention the exercise asks you to write" if flagged else fragment
        assert expected in text, f"{name}: no output says {expected!r}"


@pytest.mark.slow
def test_the_solution_notebook_validates():
    """Every visible test passes on the instructor's version, as `make validate` runs them."""
    from nbgrader.validator import Validator
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    saved = dict(os.environ)
    os.environ.update(OMP_NUM_THREADS="1", PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    try:
        results = Validator(config=config).validate(str(ROOT / "solutions" / A / f"{A}.ipynb"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert results == {}, json.dumps(results, indent=1)[:3000]
