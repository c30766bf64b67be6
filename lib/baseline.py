"""The simple baseline every trained comparison is held against: logistic regression on the raw pixels.

A network that has not beaten a linear classifier trained on the same images is still in *early training*:
its accuracy says how fast it learns, not what its architecture can reach, and a ranking of such networks is
not an architecture verdict. Xiao et al. (2017, Table 3) report 84.2% test accuracy for logistic regression
on all 60,000 Fashion-MNIST training images; :func:`logistic_regression` trains the course's own on whatever
images a comparison used, with its L2 penalty chosen on the validation images by :func:`lib.tuning.tune` (which
extends the grid when the best penalty sits at its edge)::

    base = logistic_regression(splits.train, splits.val)       # Baseline(val_acc=0.81..., ...)
    label(0.79, base)                                          # "early training (below the linear baseline)"
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from lib.tuning import Choice, tune


@dataclass(frozen=True)
class Baseline:
    """Validation accuracy of logistic regression on ``train_images`` images, and how it was tuned."""
    val_acc: float
    val_images: int
    train_images: int
    penalty: Choice
    seconds: float
    test_acc: float | None = None      # on the comparison's test images, when it reports test accuracy
    test_images: int = 0

    def describe(self) -> str:
        return (f"logistic regression on the raw pixels of the same {self.train_images:,} training images: "
                f"{self.val_acc:.2%} on {self.val_images:,} validation images (L2 penalty "
                f"{self.penalty.value:g}, chosen on validation)")


Data = Dataset | tuple[torch.Tensor, torch.Tensor]


def _tensors(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """All of ``data`` (a dataset, or ``(images, labels)`` tensors) as (N, D) pixels and (N,) labels."""
    if isinstance(data, tuple):
        images, labels = data
    else:
        xs, ys = zip(*(data[i] for i in range(len(data))))
        images, labels = torch.stack(xs), torch.as_tensor(ys)
    return images.flatten(1).float(), labels.long()


def fit_linear(x: torch.Tensor, y: torch.Tensor, *, penalty: float, classes: int = 10,
               max_iter: int = 100, start: nn.Linear | None = None) -> nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS: cross-entropy + ``penalty`` * ||W||² / 2.
    The loss is convex, so any start reaches the same optimum; ``start`` (the solution for a nearby penalty)
    only gets there in fewer steps."""
    model = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        for p, q in zip(model.parameters(), start.parameters() if start is not None else model.parameters()):
            p.copy_(q if start is not None else torch.zeros_like(p))
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + 0.5 * penalty * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def logistic_regression(train: Data, val: Data, test: Data | None = None, *,
                        penalties=(1e-4, 1e-3, 1e-2)) -> Baseline:
    """The baseline for a comparison trained on ``train`` and validated on ``val`` (datasets, or
    ``(images, labels)`` tensors: the course's images, normalised); with ``test``, also the chosen model's
    accuracy there, for comparisons that report test accuracy."""
    clock = time.perf_counter()
    (x, y), (xv, yv) = _tensors(train), _tensors(val)
    last: list[nn.Linear] = []  # each fit starts from the previous penalty's solution

    def score(penalty: float) -> float:
        last[:] = [fit_linear(x, y, penalty=penalty, start=last[0] if last else None)]
        return accuracy(last[0], xv, yv)

    choice = tune(score, penalties, name="logistic regression", param="L2 penalty")
    test_acc, test_images = None, 0
    if test is not None:
        xt, yt = _tensors(test)
        test_acc, test_images = accuracy(fit_linear(x, y, penalty=choice.value, start=last[0]), xt, yt), len(yt)
    return Baseline(choice.scores[choice.value], len(yv), len(y), choice, time.perf_counter() - clock,
                    test_acc, test_images)


def label(acc: float, baseline: Baseline, *, on: str = "val") -> str:
    """How to read a network's validation (``on="val"``) or test accuracy against the baseline's."""
    bar = baseline.val_acc if on == "val" else baseline.test_acc
    if bar is None:
        raise ValueError("this baseline was not measured on test images: pass test= to logistic_regression")
    if acc < bar:
        return "early training (below the linear baseline)"
    return "past the linear baseline"
