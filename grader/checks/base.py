"""What every hidden check shares: the error it raises, quiet execution, building the student's object,
comparing tensors, and the check of a reported results row."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from lib.checks import shape_str  # noqa: F401 (re-exported for the checks)


class GradingError(AssertionError):
    """A check failed; the message names the expected value, the value found and the likely fix."""


def fail(message: str) -> None:
    raise GradingError(message)


def quiet(check: Callable) -> Callable:
    """Run a check with warnings silenced: nbgrader gives zero to a test cell that writes to stderr."""
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return check(*args, **kwargs)
    return wrapper


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    a, b = a.detach().double(), b.detach().double()
    return a.shape == b.shape and bool(((a - b).abs() <= atol + rtol * b.abs()).all())


def build(cls: Callable, description: str, *args, **kwargs):
    """Call the student's constructor; a TypeError names the signature the task asked for."""
    try:
        return cls(*args, **kwargs)
    except TypeError as e:
        fail(f"{description} raised TypeError: {e}. Keep the signature given in the task.")


def output(module: nn.Module | Callable, x: torch.Tensor, description: str) -> torch.Tensor:
    y = module(x)
    if not isinstance(y, torch.Tensor):
        fail(f"{description} returned {type(y).__name__}, expected a torch.Tensor")
    if not torch.isfinite(y).all():
        fail(f"{description} returned NaN or inf values (input shape {shape_str(x)}): "
              f"look for a division by zero or a power of a negative number")
    return y


def random_input(shape: Sequence[int], seed: int, *, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """A reproducible input that does not depend on (or disturb) the global random state."""
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(*shape, generator=g)


def learnable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]



def check_result_row(name: str, row: dict, expected_params: int, params_source: str) -> None:
    """One row of a student's ``results[name]``: accuracy in [0, 1], training seconds > 0, and the parameter
    count that ``params_source`` (e.g. "make_net gives") has."""
    for key in ("acc", "seconds", "params"):
        if key not in row:
            fail(f"results[{name!r}] has no {key!r}: record accuracy, training seconds and parameters")
    if not 0.0 <= float(row["acc"]) <= 1.0:
        fail(f"results[{name!r}]['acc'] is {row['acc']}, expected a fraction in [0, 1]")
    if not float(row["seconds"]) > 0:
        fail(f"results[{name!r}]['seconds'] is {row['seconds']}, expected the training time in seconds")
    if int(row["params"]) != expected_params:
        fail(f"results[{name!r}]['params'] is {row['params']}, but {params_source} {expected_params:,}")


def check_rows_retrained(results: dict, names: Sequence[str], retrain: Callable[[str], dict], *,
                         protocol: str, tolerance: float = 0.03) -> None:
    """Reported rows are checked, not trusted: ``retrain(name)`` runs the task's protocol again (same seed,
    same images in the same order) and its accuracy must match ``results[name]['acc']`` within ``tolerance``
    (a few validation images: what another thread count can change), its parameter count exactly."""
    for name in names:
        again = retrain(name)
        if int(results[name]["params"]) != again["params"]:
            fail(f"results[{name!r}]['params'] is {results[name]['params']}, but the network trained again has "
                 f"{again['params']:,}: record the parameters of the network you trained")
        if abs(float(results[name]["acc"]) - again["acc"]) > tolerance:
            fail(f"results[{name!r}]['acc'] is {float(results[name]['acc']):.4f}, but training that network again "
                 f"as the task says ({protocol}) gives a validation accuracy more than {tolerance} away: "
                 f"report the numbers of your own run, made by the code in this notebook")
