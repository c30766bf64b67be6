"""The course's rules of evidence, in code: tuned values off the edge of their grid (or said to be on it), and
a linear baseline to pass before a network's accuracy is read as an architecture verdict."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from lib import baseline, tuning

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted((ROOT / "results").glob("*.json"))
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def test_choose_reports_the_edge():
    assert tuning.choose({1e-3: 0.8, 3e-3: 0.85, 1e-2: 0.83}).edge is None
    top = tuning.choose({1e-3: 0.8, 3e-3: 0.85, 1e-2: 0.86})
    assert (top.value, top.edge, top.at_edge) == (1e-2, "high", True)
    assert tuning.choose({1e-3: 0.9, 3e-3: 0.85, 1e-2: None}).edge == "low"
    assert tuning.choose({1e-3: 0.9, 1e-2: float("nan")}).value == 1e-3, "a failed run never wins"
    assert tuning.choose({1.0: 3.0, 2.0: 1.0, 4.0: 2.0}, higher_is_better=False).value == 2.0
    assert tuning.choose({1e-3: 0.5}).edge is None, "a grid of one value has no edge to speak of"
    with pytest.raises(ValueError, match="no value"):
        tuning.choose({1e-3: None})


def test_next_values_continue_the_grid_geometrically():
    assert tuning.next_values([1e-3, 1e-2, 1e-1], "high", 2) == pytest.approx([1.0, 10.0])
    assert tuning.next_values([2e-4, 1e-3, 5e-3], "low") == pytest.approx([4e-5])
    # a grid on the half-decade series goes on along it
    assert tuning.next_values([3e-4, 1e-3, 3e-3], "low", 2) == [1e-4, 3e-5]
    assert tuning.next_values([1e-3, 3e-3, 1e-2], "high", 3) == [3e-2, 1e-1, 3e-1]
    assert tuning.next_values([1e-3, 1e-2], None) == []


def test_tune_all_extends_each_setting_like_tune_in_rounds():
    peaks = {"a": -1.3, "b": -2.6, "c": 0.4}      # log10 of each setting's best value
    rounds = []

    def evaluate(pairs):
        rounds.append(sorted(pairs))
        return {(n, v): -abs(math.log10(v) - peaks[n]) for n, v in pairs}

    got = tuning.tune_all(evaluate, list(peaks), [1e-3, 3e-3, 1e-2], max_extensions=3)
    for name, peak in peaks.items():
        alone = tuning.tune(lambda v, peak=peak: -abs(math.log10(v) - peak), [1e-3, 3e-3, 1e-2], name=name,
                            max_extensions=3)
        assert got[name] == alone
    assert got["a"].extended == (3e-2, 1e-1) and not got["a"].at_edge
    assert got["b"].value == 3e-3 and got["b"].extended == ()
    assert got["c"].at_edge and got["c"].extended == (3e-2, 1e-1, 3e-1) and "limit" in got["c"].stopped
    assert len(rounds) == 4 and rounds[1] == [("a", 3e-2), ("c", 3e-2)] and rounds[3] == [("c", 3e-1)]


def test_tune_extends_the_grid_until_the_optimum_is_inside():
    seen = []  # a unimodal score in log(lr), peaked at 10 ** -1.3: outside the first grid

    def score(lr):
        seen.append(lr)
        return -abs(math.log10(lr) + 1.3)

    c = tuning.tune(score, [1e-4, 1e-3, 1e-2])
    assert c.extended == pytest.approx((1e-1, 1.0)) and not c.at_edge and c.stopped == ""
    assert c.value == pytest.approx(1e-1) and len(seen) == 5 and c.grid[-1] == pytest.approx(1.0)
    stuck = tuning.tune(lambda lr: lr, [1e-3, 1e-2], max_extensions=2)  # always better higher: never bracketed
    assert stuck.at_edge and len(stuck.extended) == 2 and "limit" in stuck.stopped


def test_edge_note_names_the_settings_at_an_edge():
    inside = tuning.choose({1.0: 0.1, 2.0: 0.9, 3.0: 0.2}, name="b")
    edge = tuning.choose({1.0: 0.1, 2.0: 0.5, 3.0: 0.9}, name="a")
    assert tuning.edge_note([inside]) == "all 1 tuned values lie inside their grids"
    note = tuning.edge_note([edge, inside])
    assert note.startswith("1 of 2 tuned values sit at the edge") and " a" in note and "(1, 2, 3)" in note
    assert tuning.edge_note([]) == "nothing was tuned"


@pytest.mark.parametrize("path", RECORDS, ids=[p.stem for p in RECORDS])
def test_record_choices_agree_with_the_record(path):
    record = json.loads(path.read_text())
    res = record.get("results", record)
    for c in tuning.record_choices(record):
        if "chosen" in res:
            assert c.value == res["chosen"][c.name]["lr"] and c.at_edge == res["chosen"][c.name]["at_grid_edge"]
        else:
            assert c.value == res["chosen_lr"][c.name]
            assert c.value == tuning.choose(c.scores).value, "the record chose the best mean validation score"


def _pages_loading(name: str) -> list[Path]:
    pattern = re.compile(r'experiments\.load\(\\?"' + re.escape(name) + r'\\?"\)')
    return [p for p in CHAPTERS if pattern.search(p.read_text())]


@pytest.mark.parametrize("path", RECORDS, ids=[p.stem for p in RECORDS])
def test_a_page_says_when_its_record_chose_at_the_edge_of_a_grid(path):
    record = json.loads(path.read_text())
    edges = [c for c in tuning.record_choices(record) if c.at_edge]
    if not edges:
        return
    for page in _pages_loading(path.stem):
        source = page.read_text()
        assert "edge_note(" in source and "record_choices(" in source, (
            f"{page.name} loads {path.name}, whose {tuning.edge_note(edges)}; show it on the page with "
            f"glue(..., edge_note(record_choices(record))) (lib.tuning) and say what it means for the comparison")


def test_logistic_regression_reaches_its_optimum():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 20, generator=g)
    y = (x[:, :3] @ torch.tensor([2.0, -1.0, 0.5]) > 0).long() + (x[:, 3] > 1).long()  # 3 classes
    model = baseline.fit_linear(x, y, penalty=1e-2, classes=3)
    loss = torch.nn.functional.cross_entropy(model(x), y) + 0.5 * 1e-2 * model.weight.pow(2).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert max(g.abs().max().item() for g in grads) < 1e-4, "the convex loss's gradient vanishes at the solution"
    assert baseline.accuracy(model, x, y) > 0.8


def test_the_baseline_labels_a_network_below_it_early_training():
    fake = baseline.Baseline(0.83, 5000, 5000, tuning.choose({1e-3: 0.8, 1e-2: 0.83, 1e-1: 0.82}), 1.0)
    assert baseline.label(0.80, fake).startswith("early training")
    assert baseline.label(0.85, fake) == "past the linear baseline"
    assert "5,000 training images" in fake.describe() and "83.00%" in fake.describe()
    with pytest.raises(ValueError, match="test="):
        baseline.label(0.8, fake, on="test")
    tested = baseline.Baseline(0.83, 5000, 5000, fake.penalty, 1.0, test_acc=0.82, test_images=10_000)
    assert baseline.label(0.815, tested, on="test").startswith("early training")
    assert baseline.label(0.825, tested, on="test") == "past the linear baseline"


def test_the_baseline_is_tuned_on_validation_and_measured_on_test():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(900, 1, 4, 4, generator=g)
    y = (x.flatten(1)[:, 0] + 0.5 * x.flatten(1)[:, 1] > 0).long()
    b = baseline.logistic_regression((x[:500], y[:500]), (x[500:700], y[500:700]), (x[700:], y[700:]))
    assert b.train_images == 500 and b.val_images == 200 and b.test_images == 200
    assert b.val_acc == max(s for s in b.penalty.scores.values()) and b.test_acc > 0.9
    assert not b.penalty.at_edge or b.penalty.stopped, "tune extends the grid past an edge"


def test_a_diverged_rate_closes_the_grid_in_a_record():
    """A rate past the edge that diverged (val None) did worse: the record's choice below it is inside the grid."""
    rows = [{"variant": "a", "lr": lr, "val_accuracy": v} for lr, v in
            [(1e-2, 0.80), (1e-2, 0.82), (3e-2, 0.85), (3e-2, 0.86), (1e-1, None), (1e-1, 0.5)]]
    c, = tuning.record_choices({"results": {"chosen_lr": {"a": 3e-2}, "grid": rows}})
    assert c.grid == (1e-2, 3e-2, 1e-1) and c.scores[1e-1] is None and c.value == 3e-2 and not c.at_edge


def test_a_choice_kept_in_a_record_reads_back_the_same():
    c = tuning.tune(lambda lr: -abs(math.log10(lr) + 1.3), [1e-4, 1e-3, 1e-2], name="m")
    record = {"results": {"chosen": {"m": c.as_record()}}}
    back, = tuning.record_choices(record)
    assert (back.value, back.grid, back.at_edge) == (c.value, c.grid, c.at_edge)
    assert record["results"]["chosen"]["m"]["extended"] == list(c.extended) and "stopped" not in record["results"]["chosen"]["m"]
