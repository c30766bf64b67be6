"""The ViT chapter's experiment ``vit_vs_cnn``: equal steps at every size, resumable runs whose first steps the
chapter can repeat exactly, the learning rate chosen on validation, and its --quick run (record, reuse of the
tuning cell, the checkpoint artifact and its re-test)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lib import experiments
from lib.data import fashion_mnist_loaders
from lib.experiments import vit_vs_cnn
from lib.models import vit_tiny_28
from lib.train import evaluate, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CFG = {**vit_vs_cnn.QUICK, "steps": 12, "log_every": 4, "warmup_steps": 2, "batch_size": 8}


def _toy() -> tuple[nn.Module, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(30, 1, 28, 28, generator=g), torch.randint(0, 10, (30,), generator=g))
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)), data


@pytest.mark.parametrize("n", [7, 30, 500])
def test_batch_order_gives_equal_steps_of_shuffled_passes(n):
    order = vit_vs_cnn.batch_order(n, 25, 8, torch.Generator().manual_seed(1))
    assert order.shape == (25, 8)
    flat = order.flatten()
    for start in range(0, len(flat) - n + 1, n):  # every complete pass is a permutation of the n images
        assert sorted(flat[start:start + n].tolist()) == list(range(n))
    assert torch.equal(order, vit_vs_cnn.batch_order(n, 25, 8, torch.Generator().manual_seed(1)))


def test_the_first_steps_of_a_run_are_the_run_stopped_early():
    """The chapter's live check trains the first steps of a recorded cell: the same schedule, the same numbers."""
    model, data = _toy()
    order = vit_vs_cnn.batch_order(len(data), CFG["steps"], CFG["batch_size"], torch.Generator().manual_seed(0))
    whole = vit_vs_cnn.train_steps(model, data, order, lr=1e-2, cfg=CFG)
    model2, _ = _toy()
    first = vit_vs_cnn.train_steps(model2, data, order, lr=1e-2, cfg=CFG, stop_after=8)
    assert [r["step"] for r in whole] == [4, 8, 12] and [r["step"] for r in first] == [4, 8]
    assert [r["train_loss"] for r in first] == [r["train_loss"] for r in whole[:2]]
    with pytest.raises(ValueError, match="multiple of log_every"):
        vit_vs_cnn.train_steps(model2, data, order, lr=1e-2, cfg=CFG, stop_after=6)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    model, data = _toy()
    order = vit_vs_cnn.batch_order(len(data), CFG["steps"], CFG["batch_size"], torch.Generator().manual_seed(0))
    whole = vit_vs_cnn.train_steps(model, data, order, lr=1e-2, cfg=CFG)
    state = tmp_path / "state.pt"
    resumed, _ = _toy()
    vit_vs_cnn.train_steps(resumed, data, order, lr=1e-2, cfg=CFG, state_path=state, stop_after=4)  # "killed" here
    again, _ = _toy()
    curve = vit_vs_cnn.train_steps(again, data, order, lr=1e-2, cfg=CFG, state_path=state)
    assert [r["resumes"] for r in curve] == [0, 1, 1]
    assert [r["train_loss"] for r in curve] == [r["train_loss"] for r in whole]
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_the_learning_rate_is_chosen_by_validation_accuracy():
    rows = [{"arch": "vit_tiny_28", "lr": 1e-3, "val_acc": 0.7, "test_acc": 0.9},
            {"arch": "vit_tiny_28", "lr": 3e-3, "val_acc": 0.8, "test_acc": 0.1},
            {"arch": "simple_cnn", "lr": 1e-3, "val_acc": 0.8, "test_acc": 0.5},
            {"arch": "simple_cnn", "lr": 3e-3, "val_acc": 0.8, "test_acc": 0.6}]
    assert vit_vs_cnn.choose_lr(rows) == {"vit_tiny_28": 3e-3, "simple_cnn": 1e-3}  # never the test set; ties: smaller


def test_a_part_from_another_configuration_is_not_reused(tmp_path):
    """The key hashes the whole configuration: any other value, another part."""
    job = ("simple_cnn", 256, 0, 1e-3)
    assert vit_vs_cnn._part_path(tmp_path, job, CFG) != vit_vs_cnn._part_path(tmp_path, job, {**CFG, "steps": 13})
    assert vit_vs_cnn._part_path(tmp_path, job, CFG) != vit_vs_cnn._part_path(tmp_path, job, {**CFG, "seeds": (5,)})


@pytest.mark.slow
def test_vit_vs_cnn_quick_run_records_tuning_sweep_and_a_checkpoint_that_retests(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_COURSE_WORKERS", "1")
    record = json.loads(experiments.run("vit_vs_cnn", quick=True, out_dir=tmp_path).read_text())
    res, cfg = record["results"], vit_vs_cnn.QUICK
    assert len(res["tuning"]) == len(vit_vs_cnn.MODELS) * len(cfg["lr_grid"])
    assert {r["lr"] for r in res["tuning"]} == set(cfg["lr_grid"])
    assert set(res["chosen_lr"]) == set(vit_vs_cnn.MODELS)
    cells = {(r["arch"], r["train_images"], r["seed"]) for r in res["runs"]}
    assert cells == {(a, n, s) for a in vit_vs_cnn.MODELS for n in cfg["sizes"] for s in cfg["seeds"]}
    for r in res["runs"]:
        assert r["steps"] == cfg["steps"] and r["lr"] == res["chosen_lr"][r["arch"]]
        assert r["epochs_seen"] == pytest.approx(cfg["steps"] * cfg["batch_size"] / r["train_images"])
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["val_acc"] <= 1 and 0 <= r["test_acc"] <= 1
        assert len(r["curve"]) == cfg["steps"] // cfg["log_every"]
    for t in res["tuning"]:  # the tuning run of the chosen rate is the sweep's cell
        if t["lr"] == res["chosen_lr"][t["arch"]]:
            cell = next(r for r in res["runs"] if (r["arch"], r["train_images"], r["seed"]) ==
                        (t["arch"], cfg["tune_size"], cfg["tune_seed"]))
            assert cell["val_acc"] == t["val_acc"] and cell["test_acc"] == t["test_acc"]
    assert not (tmp_path / "vit_vs_cnn.parts").exists()

    path = experiments.artifact(record, res["checkpoint"], tmp_path)  # listed, with its sha256
    model = vit_tiny_28().eval()
    meta = load_checkpoint(path, model)["meta"]
    assert meta["train_images"] == max(cfg["sizes"]) and meta["seed"] == cfg["seeds"][0]
    _, _, test_loader = fashion_mnist_loaders(test_subset=cfg["test_subset"], seed=cfg["data_seed"])
    assert round(evaluate(model, test_loader)["acc"] * meta["test_images"]) == meta["test_correct"]

    # the chapter's live check: the first steps of the tuning cell repeat the record
    arch = "simple_cnn"
    cell = next(r for r in res["runs"] if (r["arch"], r["train_images"], r["seed"]) == (arch, cfg["tune_size"], 0))
    _, live = vit_vs_cnn.train_one(arch, cfg["tune_size"], 0, res["chosen_lr"][arch], res["config"],
                                   stop_after=cfg["log_every"])
    assert live["curve"][0]["train_loss"] == pytest.approx(cell["curve"][0]["train_loss"], abs=1e-6)
