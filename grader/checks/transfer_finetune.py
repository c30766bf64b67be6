"""The judge of assignment ``transfer_finetune``: feature extraction, fine-tuning with per-stage learning rates and
frozen BatchNorm statistics, and the evaluation, all starting from the course's pretrained ResNet-20
(``lib.transfer.load_pretrained_backbone``, the committed ``results/backbone_fmnist_source.pt``).

The test cells run one training step (or one evaluation) of the student's model on this run's hidden batch and
report what changed: which parameters moved, which BatchNorm statistics moved, the learning rate of every
parameter's group, the outputs in training and evaluation mode (with the new head given the weights
``lib.report.fill`` draws from the case's seed), and, for the evaluation, the mode and weights after it. Here
the grader computes, with its own copy of the backbone, what each should be: the backbone's outputs in eval
mode with that head, the stage of every parameter and its learning rate ``lr * decay ** (stages after it)``,
the accuracy of the hidden labels, and the trainable parameters of each method's row.
"""
from __future__ import annotations

import copy
import functools
import random

import torch
from torch import nn

from grader.checks.base import (check_result_row, check_rows_retrained, close, fail, finite, max_diff, number, ok,
                                result_table, shape_str, tensor)
from grader.judge import Cell, Check, check
from lib.report import fill, rand

# The backbone's stages, input to output (lib.models.resnet20's `stages()`): what the notebook's STAGES names.
STAGES = {"stem": ("conv1", "bn1"), "layer1": ("layer1",), "layer2": ("layer2",), "layer3": ("layer3",),
          "head": ("fc",)}
FEATURES = 64  # ResNet-20's pooled features, the head's input


@functools.lru_cache(maxsize=1)
def backbone() -> nn.Module:
    from lib.transfer import load_pretrained_backbone  # checks the checkpoint's sha256 against its record

    model, _ = load_pretrained_backbone()
    return model.eval()


def stage_of(name: str) -> str:
    return next(s for s, prefixes in STAGES.items() if name.split(".")[0] in prefixes)


def expected_lr(name: str, lr: float, decay: float) -> float:
    """The head at ``lr``, each stage before it ``decay`` times the next one's rate."""
    order = list(STAGES)
    return lr * decay ** (len(order) - 1 - order.index(stage_of(name)))


def batch(c: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The case's images (normalised scale) and labels, as the test cell builds them."""
    x = rand((c["batch"], 1, 28, 28), c["seed"], low=-2.0, high=2.0)
    y = (rand((c["batch"],), c["seed"] + 1) * c["k"]).long().clamp_max(c["k"] - 1)
    return x, y


@functools.lru_cache(maxsize=32)
def reference_logits(k: int, seed: int, n: int) -> torch.Tensor:
    """The pretrained backbone in eval mode, with a new head filled from ``seed``, on the case's images."""
    model = copy.deepcopy(backbone())
    model.fc = fill(nn.Linear(FEATURES, k), seed)
    with torch.no_grad():
        return model.eval()(rand((n, 1, 28, 28), seed, low=-2.0, high=2.0))


def _names(value, desc: str) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail(f"{desc}: the cell's report is not a list of parameter names")
    return set(value)


def _few(names) -> str:
    names = sorted(names)
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _parameters() -> list[str]:
    return [n for n, _ in backbone().named_parameters()]


def _statistics() -> list[str]:
    return [n for n, _ in backbone().named_buffers() if n.endswith(("running_mean", "running_var"))]


def _head(out: dict, c: dict, desc: str) -> None:
    if out["head"] != [c["k"], FEATURES]:
        fail(f"{desc}: the model's `fc` is {out['head']}, expected a new nn.Linear({FEATURES}, {c['k']}) "
             f"(out_features, in_features = [{c['k']}, {FEATURES}]): replace the source task's head")
    if out["head_is_source"]:
        fail(f"{desc}: `fc` still holds the source task's weights: the target classes need a new, untrained head")
    if not out["backbone_untouched"]:
        fail(f"{desc}: training the returned model changed the backbone you were given: work on a copy "
             f"(copy.deepcopy(backbone)), so that every method starts from the same pretrained weights")


def _stored_statistics(out: dict, c: dict, desc: str, what: str) -> None:
    """BatchNorm normalises with the stored statistics in training mode and leaves them as they were."""
    moved = _names(out["stats_changed"], desc)
    if moved:
        fail(f"{desc}: a training step changed the BatchNorm statistics {_few(moved)}: {what} keeps the source "
             f"task's statistics, so its BatchNorm layers must stay in eval mode even after model.train() "
             f"(e.g. a forward pre-hook that calls module.eval(), or a train() that puts them back)")
    expected = reference_logits(c["k"], c["seed"], c["batch"])
    y = finite(tensor(out["y_train"], desc + " in training mode"), desc)
    if y.shape != expected.shape or not close(y, expected, atol=1e-4, rtol=1e-4):
        hint = (" (setting momentum=0 keeps the statistics but still normalises with the batch's own: use eval mode)"
                if y.shape == expected.shape else "")
        fail(f"{desc}: in training mode the outputs differ from the pretrained backbone's in eval mode by up to "
             f"{max_diff(y, expected) if y.shape == expected.shape else 'a shape'} {shape_str(y)}: a frozen "
             f"BatchNorm normalises with its stored statistics{hint}")


# ---- 1. feature extraction --------------------------------------------------------------------------------

def extraction_cases(rng: random.Random) -> list[dict]:
    cases = [dict(k=5, batch=6), dict(k=rng.randint(2, 10), batch=rng.randint(3, 8)),
             dict(k=rng.choice([3, 7, 10]), batch=rng.randint(3, 8))]
    return [dict(c, lr=round(rng.uniform(0.05, 0.5), 3), seed=rng.randrange(2**31)) for c in cases]


def _extraction_desc(c: dict) -> str:
    return f"feature_extractor(backbone, {c['k']}), one SGD step (lr={c['lr']}) on {c['batch']} images"


def _check_extraction(c: dict, result) -> None:
    desc = _extraction_desc(c)
    out = ok(result, desc)
    _head(out, c, desc)
    head = {"fc.weight", "fc.bias"}
    trainable = set(_parameters()) - _names(out["frozen"], desc)
    if trainable != head:
        fail(f"{desc}: {_few(trainable - head) or 'the head'} "
             f"{'require gradients' if trainable - head else 'does not require gradients'}: feature extraction "
             f"trains the new head alone; set requires_grad=False on every backbone parameter")
    moved = _names(out["changed"], desc)
    if moved != head:
        fail(f"{desc}: the step changed {_few(moved) or 'nothing'}, expected fc.weight and fc.bias only")
    _stored_statistics(out, c, desc, "feature extraction")


def judge_extraction(cases: list[dict], results: list) -> list[Check]:
    return [check(_extraction_desc(c), _check_extraction, c, r) for c, r in zip(cases, results)]


# ---- 2. fine-tuning: discriminative learning rates ---------------------------------------------------------

def discriminative_cases(rng: random.Random) -> list[dict]:
    cases = [dict(lr=0.01, decay=0.3), dict(lr=round(rng.uniform(0.002, 0.05), 4), decay=round(rng.uniform(0.1, 0.6), 2)),
             dict(lr=round(rng.uniform(0.002, 0.05), 4), decay=round(rng.uniform(0.1, 0.6), 2))]
    return [dict(c, k=rng.randint(2, 10), batch=rng.randint(3, 8), seed=rng.randrange(2**31)) for c in cases]


def _discriminative_desc(c: dict) -> str:
    return (f"fine_tuner(backbone, {c['k']}, frozen_bn=False) and stage_param_groups(model, lr={c['lr']}, "
            f"decay={c['decay']}), one SGD step")


def _check_lrs(out: dict, c: dict, desc: str) -> None:
    lrs = out["lrs"] if isinstance(out["lrs"], dict) else {}
    missing = [n for n in _parameters() if n not in lrs]
    if missing:
        fail(f"{desc}: {_few(missing)} are in no parameter group: every trainable parameter goes in the group "
             f"of its stage")
    for stage in STAGES:
        names = [n for n in _parameters() if stage_of(n) == stage]
        want = expected_lr(names[0], c["lr"], c["decay"])
        wrong = [n for n in names if abs(number(lrs[n], f"the learning rate of {n}") - want) > 1e-9 + 1e-6 * want]
        if wrong:
            found = sorted({lrs[n] for n in wrong})[:3]
            hint = (" (every stage at the same rate: the stages need their own rates)"
                    if len({lrs[n] for n in lrs}) == 1 else "")
            fail(f"{desc}: {_few(wrong)} ({stage}) learn at {found}, expected {want:.4g} = lr * decay^"
                 f"{len(STAGES) - 1 - list(STAGES).index(stage)}: the head at lr, each earlier stage decay times "
                 f"the next one's rate{hint}")


def _check_discriminative(c: dict, result) -> None:
    desc = _discriminative_desc(c)
    out = ok(result, desc)
    _head(out, c, desc)
    frozen = _names(out["frozen"], desc)
    if frozen:
        fail(f"{desc}: {_few(frozen)} do not require gradients: fine-tuning trains every parameter")
    _check_lrs(out, c, desc)
    still = set(_parameters()) - _names(out["changed"], desc)
    if still:
        fail(f"{desc}: the step left {_few(still)} unchanged: every stage must train")
    kept = set(_statistics()) - _names(out["stats_changed"], desc)
    if kept:
        fail(f"{desc}: with frozen_bn=False a training step must update the BatchNorm statistics, but "
             f"{_few(kept)} did not change: leave those layers to follow model.train()")


def judge_discriminative(cases: list[dict], results: list) -> list[Check]:
    return [check(_discriminative_desc(c), _check_discriminative, c, r) for c, r in zip(cases, results)]


# ---- 3. fine-tuning with frozen BatchNorm statistics -------------------------------------------------------

def frozen_bn_cases(rng: random.Random) -> list[dict]:
    return [dict(lr=round(rng.uniform(0.002, 0.05), 4), decay=round(rng.uniform(0.2, 0.6), 2), k=k,
                 batch=rng.randint(3, 8), seed=rng.randrange(2**31)) for k in (5, rng.randint(2, 10))]


def _frozen_desc(c: dict) -> str:
    return f"fine_tuner(backbone, {c['k']}, frozen_bn=True), one SGD step on {c['batch']} images"


def _check_frozen(c: dict, result) -> None:
    desc = _frozen_desc(c)
    out = ok(result, desc)
    _head(out, c, desc)
    frozen = _names(out["frozen"], desc)
    if frozen:
        fail(f"{desc}: {_few(frozen)} do not require gradients: frozen_bn freezes the BatchNorm statistics only; "
             f"every weight, the BatchNorm scales and shifts included, still trains")
    still = set(_parameters()) - _names(out["changed"], desc)
    if still:
        fail(f"{desc}: the step left {_few(still)} unchanged: every parameter trains, the BatchNorm scales and "
             f"shifts included")
    _stored_statistics(out, c, desc, "frozen_bn=True")


def judge_frozen(cases: list[dict], results: list) -> list[Check]:
    return [check(_frozen_desc(c), _check_frozen, c, r) for c, r in zip(cases, results)]


# ---- 4. the evaluation ------------------------------------------------------------------------------------

def evaluation_cases(rng: random.Random) -> list[dict]:
    cases = [dict(k=5, n=50, batch=16, start="train"), dict(k=rng.randint(2, 10), n=rng.randint(20, 60),
                                                              batch=rng.choice([7, 9, 13]), start="eval"),
             dict(k=rng.randint(2, 10), n=rng.randint(20, 60), batch=rng.choice([8, 11, 32]), start="train")]
    for c in cases:
        c["seed"] = rng.randrange(2**31)
        predicted = reference_logits(c["k"], c["seed"], c["n"]).argmax(1).tolist()
        wrong = set(rng.sample(range(c["n"]), rng.randint(c["n"] // 5, c["n"] // 2)))
        c["labels"] = [(p + 1) % c["k"] if i in wrong else p for i, p in enumerate(predicted)]
    return cases


def _evaluation_desc(c: dict) -> str:
    return f"evaluate on {c['n']} images in batches of {c['batch']}, the model in {c['start']} mode"


def _check_evaluation(c: dict, result) -> None:
    desc = _evaluation_desc(c)
    out = ok(result, desc)
    predicted = reference_logits(c["k"], c["seed"], c["n"]).argmax(1)
    expected = (predicted == torch.tensor(c["labels"])).double().mean().item()
    if not out["weights_kept"]:
        fail(f"{desc}: evaluating changed the model's state (weights or BatchNorm statistics): run it in eval mode "
             f"(model.eval()), where BatchNorm reads its statistics instead of updating them")
    if out["grad"]:
        fail(f"{desc}: the forward passes built a graph for gradients: wrap them in torch.no_grad() (or "
             f"torch.inference_mode())")
    if out["mode_kept"] is not True:
        fail(f"{desc}: after evaluate the model is in {out['mode_kept']} mode, but it came in {c['start']} mode: "
             f"put it back as it was (was_training = model.training ... model.train(was_training))")
    acc = number(out["acc"], f"{desc}: the accuracy")
    if abs(acc - expected) > 1e-6:
        hint = (" (the mean of the batches' accuracies: count the correct images over all batches instead)"
                if c["n"] % c["batch"] else "")
        fail(f"{desc}: returned {acc:.4f}, expected {expected:.4f}, the fraction of images whose largest logit in "
             f"eval mode is the label{hint}")


def judge_evaluation(cases: list[dict], results: list) -> list[Check]:
    return [check(_evaluation_desc(c), _check_evaluation, c, r) for c, r in zip(cases, results)]


# ---- 5. the comparison ------------------------------------------------------------------------------------

METHOD_ROWS = ("feature extraction", "fine-tuning, discriminative LRs", "fine-tuning, discriminative LRs, frozen BN")


def experiment_cases(rng: random.Random) -> list[dict]:
    return [dict(retrain=dict(per_class=8, val_per_class=10), epochs=1)]


def expected_trainable(method: str, k: int = 5) -> int:
    """Feature extraction trains the new head alone; fine-tuning every parameter, with the new head."""
    head = FEATURES * k + k
    if method == "feature extraction":
        return head
    return sum(p.numel() for n, p in backbone().named_parameters() if not n.startswith("fc.")) + head


def _check_experiment(c: dict, result) -> None:
    out = ok(result, "the comparison")
    results = result_table(out, METHOD_ROWS, "model per method")
    for method in METHOD_ROWS:
        check_result_row(method, results[method], expected_trainable(method),
                         "feature extraction trains the new head alone, which has" if method == "feature extraction"
                         else "fine-tuning trains every parameter of the model, which has")
    again = out["again"] if isinstance(out["again"], dict) else {}
    if set(again) != set(METHOD_ROWS):
        fail("the methods could not be trained again: keep METHODS, make_run and loaders() as the notebook defines them")
    check_rows_retrained({m: results[m] for m in METHOD_ROWS}, again,
                         protocol="seed_everything(0), loaders(), make_run(method), "
                                  "train(model, optimizer, train_loader, EPOCHS), evaluate(model, val_loader)")


def judge_experiment(cases: list[dict], results: list) -> list[Check]:
    return [check("the results of the three methods, trained again", _check_experiment, cases[0], results[0])]


CELLS = {
    "test_feature_extraction": Cell(extraction_cases, judge_extraction),
    "test_discriminative": Cell(discriminative_cases, judge_discriminative),
    "test_frozen_bn": Cell(frozen_bn_cases, judge_frozen),
    "test_evaluation": Cell(evaluation_cases, judge_evaluation),
    "test_experiment": Cell(experiment_cases, judge_experiment),
}
