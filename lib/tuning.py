"""Choosing a hyper-parameter on a grid, and saying when the grid was too small.

A value chosen at the edge of its grid (the largest learning rate tried, say) is a warning: a value
outside the grid might have done better, so the setting is under-tuned and any comparison it enters is
partly a comparison of tuning. :func:`choose` returns the choice with its edge; :func:`tune` extends the
grid past an edge until the optimum is inside it (or records why it stopped), and :func:`tune_all` does it for
several settings in rounds that an experiment runs in parallel; :func:`record_choices`
reads the choices a committed experiment record made, and :func:`edge_note` writes the sentence a page
shows about them (``tests/test_evidence.py`` fails when a page loads a record with an edge choice and
does not show it)::

    c = choose({1e-3: 0.81, 3e-3: 0.84, 1e-2: 0.86})   # Choice(value=0.01, edge='high', ...)
    c.at_edge, next_values(c.grid, c.edge)               # True, [0.03]: try a larger rate
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Choice:
    """The value of ``param`` chosen for the setting ``name`` from ``scores`` (value -> validation score;
    None for a failed run)."""
    name: str
    value: float
    scores: dict[float, float | None]
    higher_is_better: bool = True
    extended: tuple[float, ...] = ()   # values :func:`tune` added beyond the first grid
    stopped: str = ""                  # why :func:`tune` stopped with the choice still at an edge
    param: str = "learning rate"

    @property
    def grid(self) -> tuple[float, ...]:
        return tuple(sorted(self.scores))

    @property
    def edge(self) -> str | None:
        """``"low"`` or ``"high"`` when the chosen value is the grid's smallest or largest, else None."""
        if len(self.grid) < 2:
            return None
        return "low" if self.value == self.grid[0] else "high" if self.value == self.grid[-1] else None

    @property
    def at_edge(self) -> bool:
        return self.edge is not None

    def as_record(self) -> dict:
        """How an experiment record keeps the choice of a learning rate (the layout :func:`record_choices` reads):
        the rate, its validation score, whether it sits at an edge, every rate tried with its score, and the rates
        added past the first grid's edge (with why it stopped, if it is still at one)."""
        return {"lr": self.value, "val_acc": self.scores[self.value], "at_grid_edge": self.at_edge,
                "val_acc_by_lr": {f"{v:g}": self.scores[v] for v in self.grid}, "extended": list(self.extended),
                **({"stopped": self.stopped} if self.stopped else {})}

    def describe(self) -> str:
        grid = ", ".join(f"{v:g}" for v in self.grid)
        where = f"at the {'top' if self.edge == 'high' else 'bottom'} of its grid" if self.at_edge else "inside its grid"
        return f"{self.param} of {self.name}: {self.value:g}, {where} ({grid})"


def choose(scores: Mapping[float, float | None], *, name: str = "value", higher_is_better: bool = True,
           param: str = "learning rate") -> Choice:
    """The best-scoring value of a grid (failed runs, scored None or NaN, never win)."""
    valid = {float(v): float(s) for v, s in scores.items() if s is not None and math.isfinite(float(s))}
    if not valid:
        raise ValueError(f"choose({name}): no value of the grid {sorted(scores)} has a finite score")
    best = (max if higher_is_better else min)(sorted(valid), key=valid.__getitem__)  # ties: the smaller value
    return Choice(name, best, {float(v): s for v, s in scores.items()}, higher_is_better, param=param)


def _on_1_3_series(v: float) -> bool:
    """True for 1, 3, 10, 30, ... times a power of ten (0.003, 0.01, 0.3)."""
    mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1.0, 3.0))


def _snap_1_3(v: float) -> float:
    """The value of the 1-3 series nearest to ``v`` in log scale (0.0316 -> 0.03, 9.5e-5 -> 1e-4)."""
    e = math.floor(math.log10(v))
    candidates = [m * 10.0 ** k for k in (e - 1, e, e + 1) for m in (1.0, 3.0)]
    return float(f"{min(candidates, key=lambda c: abs(math.log(c / v))):.6g}")


def next_values(grid: Sequence[float], edge: str | None, n: int = 1) -> list[float]:
    """``n`` values past ``edge`` of a geometric grid, at the grid's own step (1e-3, 1e-2 -> 1e-1, 1); a grid on
    the half-decade series 1, 3, 10, 30 (the usual learning-rate grid) goes on along it (1e-3, 3e-3, 1e-2 ->
    3e-2, 1e-1)."""
    g = sorted(float(v) for v in grid)
    if edge is None or n < 1:
        return []
    if len(g) < 2 or g[0] <= 0:
        raise ValueError(f"next_values needs a positive geometric grid of two or more values, got {list(grid)}")
    step = (g[-1] / g[0]) ** (1 / (len(g) - 1))
    start, factor = (g[-1], step) if edge == "high" else (g[0], 1 / step)
    out = [start * factor ** (i + 1) for i in range(n)]
    if all(_on_1_3_series(v) for v in g):
        out = [_snap_1_3(v) for v in out]
    return out


def tune(evaluate: Callable[[float], float | None], grid: Sequence[float], *, name: str = "value",
         higher_is_better: bool = True, max_extensions: int = 2, param: str = "learning rate") -> Choice:
    """Score every value of ``grid`` with ``evaluate`` (on validation data), then, while the best is at an
    edge, score the next value past it, at most ``max_extensions`` times; the choice says what was added
    and, if it is still at an edge, why it stopped."""
    scores = {float(v): evaluate(float(v)) for v in grid}
    c, added = choose(scores, name=name, higher_is_better=higher_is_better, param=param), []
    while c.at_edge and len(added) < max_extensions:
        value = next_values(c.grid, c.edge)[0]
        scores[value] = evaluate(value)
        added.append(value)
        c = choose(scores, name=name, higher_is_better=higher_is_better, param=param)
    stopped = f"still at the edge after {len(added)} extension(s) (the limit)" if c.at_edge else ""
    return Choice(name, c.value, scores, higher_is_better, tuple(added), stopped, param)


def tune_all(evaluate: Callable[[list[tuple[str, float]]], Mapping[tuple[str, float], float | None]],
             names: Sequence[str], grid: Sequence[float], *, higher_is_better: bool = True, max_extensions: int = 2,
             param: str = "learning rate") -> dict[str, Choice]:
    """:func:`tune` for several settings at once, in rounds, so that an experiment can run each round's trainings
    in parallel: ``evaluate(pairs)`` scores a list of (name, value) pairs and returns {(name, value): score}.

    Round 0 is the whole ``grid`` for every name; each further round (at most ``max_extensions``) adds, for every
    name whose best value sits at an edge of its grid, the next value past that edge (:func:`next_values`)."""
    scores: dict[str, dict[float, float | None]] = {n: {} for n in names}

    def score(pairs: list[tuple[str, float]]) -> None:
        got = evaluate(pairs)
        for name, value in pairs:
            scores[name][float(value)] = got[(name, value)]

    score([(n, float(v)) for n in names for v in grid])
    added: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(max_extensions):
        todo = []
        for n in names:
            c = choose(scores[n], name=n, higher_is_better=higher_is_better, param=param)
            if c.at_edge:
                todo.append((n, next_values(c.grid, c.edge)[0]))
        if not todo:
            break
        score(todo)
        for n, v in todo:
            added[n].append(v)
    out = {}
    for n in names:
        c = choose(scores[n], name=n, higher_is_better=higher_is_better, param=param)
        stopped = f"still at the edge after {len(added[n])} extension(s) (the limit)" if c.at_edge else ""
        out[n] = Choice(n, c.value, scores[n], higher_is_better, tuple(added[n]), stopped, param)
    return out


# --------------------------------------------------------------------------------------------------------
# The choices a committed record made (results/<name>.json, see lib.experiments)
# --------------------------------------------------------------------------------------------------------
def _grid_scores(rows: Iterable[Mapping], key: str, name: str, score: str) -> dict[float, list[float | None]]:
    """Every rate ``name`` was trained at, with its runs' scores (None for a run that diverged)."""
    out: dict[float, list[float | None]] = {}
    for r in rows:
        if r.get(key) == name:
            out.setdefault(float(r["lr"]), []).append(None if r.get(score) is None else float(r[score]))
    return out


def _mean(scores: list[float | None]) -> float | None:
    """The mean of a rate's runs; None when one of them diverged (that rate is never chosen)."""
    return None if None in scores else sum(scores) / len(scores)


@dataclass(frozen=True)
class _Format:
    """Where one kind of record keeps its grid, its per-run scores and its choices."""
    rows: str
    key: str
    score: str
    names: Callable[[Mapping], Mapping[str, float]] = field(default=lambda res: res["chosen_lr"])


_FORMATS = (_Format("grid", "variant", "val_accuracy"),            # pooling_shift
            _Format("tuning", "arch", "val_acc"))                  # vit_vs_cnn


def record_choices(record: Mapping) -> list[Choice]:
    """Every tuned value a record holds, with the validation scores it was chosen from.

    Knows the course's two layouts: ``results["chosen"][name] = {"lr", "val_acc_by_lr"}`` and
    ``results["chosen_lr"][name]`` with the runs of the grid in ``results["grid"]`` or ``results["tuning"]``.
    A record that tuned nothing gives ``[]``."""
    res = record.get("results", record)
    if isinstance(res.get("chosen"), Mapping):
        return [Choice(name, float(c["lr"]),
                       {float(v): s for v, s in c["val_acc_by_lr"].items()})
                for name, c in res["chosen"].items()]
    for fmt in _FORMATS:
        if isinstance(res.get("chosen_lr"), Mapping) and isinstance(res.get(fmt.rows), list) \
                and all(fmt.key in r for r in res[fmt.rows]):
            out = []
            for name, lr in fmt.names(res).items():
                runs = _grid_scores(res[fmt.rows], fmt.key, name, fmt.score)
                out.append(Choice(name, float(lr), {v: _mean(s) for v, s in runs.items()}))
            return out
    return []


def edge_note(choices: Sequence[Choice]) -> str:
    """The sentence a page shows about its tuned values: which sit at an edge of their grid, and what that
    means for the comparisons they enter."""
    if not choices:
        return "nothing was tuned"
    edges = [c for c in choices if c.at_edge]
    if not edges:
        return f"all {len(choices)} tuned values lie inside their grids"
    groups: dict[tuple, list[str]] = {}
    for c in edges:
        groups.setdefault((c.param, c.edge, c.grid), []).append(c.name)
    parts = [f"the {'largest' if edge == 'high' else 'smallest'} {param} of the grid "
             f"({', '.join(f'{v:g}' for v in grid)}) for {', '.join(names)}"
             for (param, edge, grid), names in groups.items()]
    return (f"{len(edges)} of {len(choices)} tuned values sit at the edge of their grid, {'; '.join(parts)}: a "
            f"value outside the grid might have done better, so a comparison that involves these settings is "
            f"partly a comparison of tuning")
