"""The EfficientNet chapter's experiment ``se_ablation``: the two networks it compares, its measurements, its
resumable run, and its --quick record."""
from __future__ import annotations

import json

import pytest
import torch

from lib import experiments
from lib.experiments import se_ablation
from lib.models.blocks import SqueezeExcitation
from lib.train import load_checkpoint, seed_everything


def test_the_two_networks_differ_only_in_the_gates_and_start_from_the_same_weights():
    seed_everything(3)
    with_se = se_ablation.build(se=True)
    seed_everything(3)
    without = se_ablation.build(se=False)
    assert not any(isinstance(m, SqueezeExcitation) for m in without.modules())
    assert se_ablation.se_names(with_se) == se_ablation.se_names(without)  # the same places, for the hooks
    a, b = with_se.state_dict(), without.state_dict()
    assert set(b) < set(a) and all(".block." in k and (".fc1." in k or ".fc2." in k) for k in set(a) - set(b))
    for key, value in b.items():
        torch.testing.assert_close(value, a[key], rtol=0, atol=0)
    x = torch.randn(2, 1, 28, 28)
    assert with_se(x).shape == without(x).shape == (2, 10)


def test_class_share_is_one_for_class_features_and_near_chance_for_noise():
    torch.manual_seed(0)
    labels = torch.arange(10).repeat(200)                                   # (2000,)
    by_class = torch.nn.functional.one_hot(labels, 10).float() * 3.0        # (2000, 10): determined by the class
    assert se_ablation.class_share(by_class, labels) == pytest.approx({"pooled": 1.0, "per_channel": 1.0})
    noise = torch.randn(len(labels), 64)
    chance = se_ablation.chance_share(len(labels))
    assert chance == pytest.approx(9 / 1999)
    share = se_ablation.class_share(noise, labels)
    assert share["per_channel"] == pytest.approx(chance, rel=0.3)
    permuted = se_ablation.permuted_share(by_class, labels, permutations=20, seed=0)
    assert permuted["per_channel"] == pytest.approx(chance, rel=0.3)


def test_frozen_gates_equal_the_dynamic_ones_when_the_gate_ignores_the_image():
    seed_everything(0)
    model = se_ablation.build(se=True).eval()
    for m in model.modules():
        if isinstance(m, SqueezeExcitation):
            torch.nn.init.zeros_(m.fc2.weight)  # the gate is sigmoid(bias): the same for every image
    x = torch.randn(8, 1, 28, 28)
    seen = se_ablation.collect(model, [(x, torch.zeros(8, dtype=torch.long))])
    means = {n: f["gate"].mean(0) for n, f in seen["features"].items()}
    frozen = se_ablation.freeze_gates(model, means)
    assert not any(isinstance(m, SqueezeExcitation) for m in frozen.modules())
    assert any(isinstance(m, SqueezeExcitation) for m in model.modules()), "the original is left as it was"
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x))


def test_collect_restores_the_mode_and_reads_every_se_block():
    model = se_ablation.build(se=True).train()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    seen = se_ablation.collect(model, [(x, y)])
    assert model.training
    assert list(seen["features"]) == se_ablation.se_names(model)
    for f in seen["features"].values():
        assert f["gate"].shape == f["squeeze"].shape and f["gate"].shape[0] == 4
        assert ((f["gate"] > 0) & (f["gate"] < 1)).all()
    no_se = se_ablation.collect(se_ablation.build(se=False), [(x, y)])
    assert all(set(f) == {"squeeze"} for f in no_se["features"].values())


def test_mcnemar_counts_the_discordant_images():
    a = torch.tensor([True, True, False, False, True])
    b = torch.tensor([True, False, True, False, False])
    r = se_ablation.mcnemar(a, b)
    assert (r["a_only"], r["b_only"]) == (2, 1) and 0 < r["p_value"] <= 1
    assert se_ablation.mcnemar(a, a)["p_value"] == 1.0


def test_a_finished_network_is_not_trained_again(tmp_path, monkeypatch):
    trained = []

    def stub(se, seed, cfg, *, state_path, checkpoint=None, threads=None):
        trained.append((se, seed))
        if checkpoint is not None:
            checkpoint.write_bytes(b"w")
        return {"se": se, "seed": seed, "test_accuracy": 0.5, "train_seconds": 1.0, "images_per_s": 1.0}

    monkeypatch.setattr(se_ablation, "train_one", stub)
    monkeypatch.setattr(se_ablation, "summarise", lambda runs, seeds: {"se_vs_no_se": {"difference": {"mean": 0.0, "low": 0.0, "high": 0.0}}})
    monkeypatch.setenv("CNN_COURSE_WORKERS", "1")
    parts = tmp_path / "se_ablation.parts"
    parts.mkdir()
    cfg = se_ablation.QUICK
    se_ablation._part_path(parts, False, 1, cfg).write_text(json.dumps(
        {"se": False, "seed": 1, "test_accuracy": 0.25, "train_seconds": 1.0, "images_per_s": 1.0}))
    stale = dict(cfg, epochs=99)  # a part from another configuration is not reused
    se_ablation._part_path(parts, True, 1, stale).write_text("{}")
    results = se_ablation.run(quick=True, out_dir=tmp_path)
    assert sorted(trained) == [(False, 0), (True, 0), (True, 1)]
    assert [(r["se"], r["seed"]) for r in results["runs"]] == [(True, 0), (True, 1), (False, 0), (False, 1)]
    assert results["runs"][3]["test_accuracy"] == 0.25
    assert results["artifacts"] == [se_ablation.CHECKPOINT] and (tmp_path / se_ablation.CHECKPOINT).is_file()
    assert not parts.exists()


@pytest.mark.slow
def test_se_ablation_quick_run_writes_a_record_the_chapter_can_read(tmp_path, monkeypatch):
    path = experiments.run("se_ablation", quick=True, out_dir=tmp_path)
    record = json.loads(path.read_text())
    results = record["results"]
    seeds = results["config"]["seeds"]
    assert [(r["se"], r["seed"]) for r in results["runs"]] == [(True, s) for s in seeds] + [(False, s) for s in seeds]
    assert len({r["steps"] for r in results["runs"]}) == 1, "equal steps"
    assert all("test_correct" not in r for r in results["runs"]), "per-image results are summarised, not kept"
    for key in ("se_vs_no_se", "frozen_gates", "class_specificity"):
        assert key in results
    assert results["frozen_gates"]["fitted_on"] == "validation"
    blocks = results["class_specificity"]["blocks"]
    assert len(blocks) == 5 and all(len(b["gate_per_channel"]) == len(seeds) for b in blocks)
    monkeypatch.setenv("CNN_COURSE_ALLOW_QUICK", "1")
    loaded = experiments.load("se_ablation", results_dir=tmp_path)
    model = se_ablation.build(se=True)
    load_checkpoint(experiments.artifact(loaded, se_ablation.CHECKPOINT, tmp_path), model)
