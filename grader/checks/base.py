"""What every judge shares: reading a reported tensor back (hostile input: schema and size), comparing, and
the check of a reported results row. Runs in the grader's process only."""
from __future__ import annotations

import math

import torch

from grader.judge import fail, ok  # noqa: F401 (re-exported for the checks)
from lib.checks import shape_str  # noqa: F401 (re-exported for the checks)

MAX_NUMBERS = 1_000_000


def tensor(value, desc: str) -> torch.Tensor:
    """A reported tensor (``lib.report.plain``) as float64 values; anything else fails with what it was."""
    if not (isinstance(value, dict) and isinstance(value.get("data"), list) and isinstance(value.get("shape"), list)):
        fail(f"{desc} returned {type(value).__name__ if not isinstance(value, str) else value}, expected a torch.Tensor")
    shape = [int(s) for s in value["shape"]]
    if any(s < 0 for s in shape) or math.prod(shape) != len(value["data"]) or len(value["data"]) > MAX_NUMBERS:
        fail(f"{desc}: the reported tensor of shape {shape} is malformed")
    data = [float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else math.nan
            for v in value["data"]]
    return torch.tensor(data, dtype=torch.float64).reshape(shape)


def finite(y: torch.Tensor, desc: str) -> torch.Tensor:
    if not torch.isfinite(y).all():
        fail(f"{desc} returned NaN or inf values: look for a division by zero or a power of a negative number")
    return y


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    a, b = a.detach().double(), b.detach().double()
    return a.shape == b.shape and bool(((a - b).abs() <= atol + rtol * b.abs()).all())


def number(value, desc: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{desc} is {value!r}, expected a number")
    return float(value)


def result_table(out: dict, rows, one_per: str) -> dict:
    """A student's ``results`` table, with a row for each name in ``rows`` (else the check fails, saying to train
    one model per ``one_per``)."""
    results = out["results"] if isinstance(out["results"], dict) else {}
    missing = [name for name in rows if name not in results]
    if missing:
        fail(f"`results` has no row for {missing}: train one {one_per}")
    return results


def check_result_row(name: str, row, expected_params: int, params_source: str) -> None:
    """One row of a student's ``results[name]``: accuracy in [0, 1], training seconds > 0, and the parameter
    count that ``params_source`` (e.g. "make_net gives") has."""
    if not isinstance(row, dict):
        fail(f"results[{name!r}] is not a dict: record accuracy, training seconds and parameters")
    for key in ("acc", "seconds", "params"):
        if key not in row:
            fail(f"results[{name!r}] has no {key!r}: record accuracy, training seconds and parameters")
    if not 0.0 <= number(row["acc"], f"results[{name!r}]['acc']") <= 1.0:
        fail(f"results[{name!r}]['acc'] is {row['acc']}, expected a fraction in [0, 1]")
    if not number(row["seconds"], f"results[{name!r}]['seconds']") > 0:
        fail(f"results[{name!r}]['seconds'] is {row['seconds']}, expected the training time in seconds")
    if number(row["params"], f"results[{name!r}]['params']") != expected_params:
        fail(f"results[{name!r}]['params'] is {row['params']}, but {params_source} {expected_params:,}")


def check_rows_retrained(results: dict, again: dict, *, protocol: str, tolerance: float = 0.03) -> None:
    """Reported rows are checked, not trusted: ``again[name]`` is the task's protocol run again by the hidden
    test (same seed, same images in the same order); its accuracy must match ``results[name]['acc']`` within
    ``tolerance`` (a few validation images: what another thread count can change), its parameters exactly."""
    for name, row in again.items():
        if number(results[name]["params"], "params") != number(row["params"], "params"):
            fail(f"results[{name!r}]['params'] is {results[name]['params']}, but the network trained again has "
                 f"{row['params']:,}: record the parameters of the network you trained")
        if abs(number(results[name]["acc"], "acc") - number(row["acc"], "acc")) > tolerance:
            fail(f"results[{name!r}]['acc'] is {float(results[name]['acc']):.4f}, but training that network again "
                 f"as the task says ({protocol}) gives a validation accuracy more than {tolerance} away: "
                 f"report the numbers of your own run, made by the code in this notebook")
