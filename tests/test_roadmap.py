"""The ConvNeXt roadmap networks (lib.models.roadmap) and the two experiments of the architectures chapter
(convnext_roadmap, linear_bottleneck): every step runs on Fashion-MNIST images, consecutive steps differ in the
one design choice their row names, the last step is ConvNeXt's block without layer scale, and the experiments'
parts resume."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lib import experiments
from lib.analysis import count_macs, count_params
from lib.experiments import convnext_roadmap, linear_bottleneck
from lib.models import MODELS
from lib.models.blocks import ConvNeXtBlock, InvertedResidual
from lib.models.roadmap import (CHANGES, PAPER_TOP1, ROADMAP, RoadmapBlock, RoadmapConfig, changed_fields,
                                roadmap_net, roadmap_table)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
STEPS = list(ROADMAP)

# What each step changes, written out here so that a change to ROADMAP has to change this table too.
EXPECTED_FIELDS = {
    "resnet": [], "stage ratio": ["depths"], "patchify stem": ["stem"], "depthwise conv": ["spatial_groups"],
    "width": ["widths"], "inverted bottleneck": ["block"], "move up depthwise": ["spatial_first"],
    "kernel 7": ["kernel"], "GELU": ["act"], "fewer activations": ["activations"], "fewer norms": ["norms"],
    "LayerNorm": ["norm"], "separate downsampling": ["downsampling"],
}


def test_the_roadmap_is_the_papers_order_and_has_its_numbers():
    assert STEPS == list(EXPECTED_FIELDS)
    assert set(CHANGES) == set(PAPER_TOP1) == set(ROADMAP)
    assert PAPER_TOP1["resnet"] == 78.8 and PAPER_TOP1["separate downsampling"] == 82.0  # Liu et al. 2022, Fig. 2
    assert not set(ROADMAP) & set(MODELS), "roadmap networks are not torchvision twins: not in the registry"


@pytest.mark.parametrize("i", range(1, len(STEPS)), ids=STEPS[1:])
def test_consecutive_steps_differ_only_in_the_steps_change(i):
    assert changed_fields(ROADMAP[STEPS[i - 1]], ROADMAP[STEPS[i]]) == EXPECTED_FIELDS[STEPS[i]]


@pytest.mark.parametrize("step", STEPS)
def test_every_step_trains_on_fashion_mnist_images(step):
    torch.manual_seed(0)
    model = roadmap_net(step)
    x = torch.randn(4, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{step}: parameters without a finite gradient: {missing[:5]}"
    assert model.forward_features(x).shape[-2:] == (2, 2), "28x28 is padded to 32x32: the last stage is 2x2"


def test_params_and_macs_move_as_each_step_says(capsys):
    table = roadmap_table()
    with capsys.disabled():
        print("\n" + table[["fields changed", "params", "MMACs"]].to_string())
    params, macs = table["params"], table["MMACs"]
    for step in ("GELU", "fewer activations", "LayerNorm"):  # nothing with weights changes (LN has BN's 2C)
        prev = STEPS[STEPS.index(step) - 1]
        assert params[step] == params[prev] and macs[step] == macs[prev], step
    assert params["fewer norms"] < params["GELU"] and macs["fewer norms"] == macs["GELU"]
    assert macs["depthwise conv"] < macs["patchify stem"] / 1.5  # the 3x3 convolutions were most of the work
    assert macs["width"] > macs["depthwise conv"] and macs["kernel 7"] > macs["move up depthwise"]
    assert macs["move up depthwise"] < macs["inverted bottleneck"]  # depthwise on C instead of 4C


def _layers(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_structure_of_selected_steps():
    first = lambda m: next(m.stem.children())  # noqa: E731
    assert first(roadmap_net("resnet")).kernel_size == (3, 3) and _layers(roadmap_net("resnet"), nn.MaxPool2d) == 1
    patch = first(roadmap_net("patchify stem"))
    assert patch.kernel_size == patch.stride == (2, 2) and _layers(roadmap_net("patchify stem"), nn.MaxPool2d) == 0
    dw = [m for m in roadmap_net("depthwise conv").modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert dw and all(m.groups == m.in_channels == m.out_channels for m in dw)
    block = roadmap_net("fewer norms").stages_[2][1]
    assert _layers(block.branch, nn.BatchNorm2d) == 1 and _layers(block, nn.GELU) == 1
    last = roadmap_net("separate downsampling")
    strided = [m for m in last.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert all(m.kernel_size == m.stride == (2, 2) for m in strided) and len(strided) == 4  # stem + 3 downsamplings
    assert _layers(last, nn.BatchNorm2d) == 0 and _layers(last, nn.ReLU) == 0


def test_the_last_step_is_convnexts_block_without_layer_scale():
    """With layer scale 1 and no depthwise bias, lib's ConvNeXtBlock computes the last step's block exactly."""
    dim = 24
    ours = RoadmapBlock(ROADMAP["separate downsampling"], dim, dim).eval()
    theirs = ConvNeXtBlock(dim).eval()
    assert count_params(theirs) == count_params(ours) + 2 * dim  # + the depthwise bias and the layer scale
    dwconv, norm, conv1, _, conv2 = ours.branch
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.2)
        tv = theirs.block
        tv[0].weight.copy_(dwconv.weight)
        tv[0].bias.zero_()
        tv[2].weight.copy_(norm.weight), tv[2].bias.copy_(norm.bias)
        tv[3].weight.copy_(conv1.weight.flatten(1)), tv[3].bias.copy_(conv1.bias)
        tv[5].weight.copy_(conv2.weight.flatten(1)), tv[5].bias.copy_(conv2.bias)
        theirs.layer_scale.fill_(1.0)
        x = torch.randn(2, dim, 8, 8)
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_bad_configs_say_what_is_allowed():
    with pytest.raises(ValueError, match="norm must be one of"):
        RoadmapConfig(norm="group")
    with pytest.raises(ValueError, match="separate downsampling needs inverted blocks"):
        RoadmapConfig(downsampling="separate")
    with pytest.raises(KeyError, match="the steps are"):
        roadmap_net("swin")


# ---------------------------------------------------------------------------------------------
# linear_bottleneck: the only difference is a ReLU6 after each projection
# ---------------------------------------------------------------------------------------------
def test_relu6_variant_adds_one_activation_per_block_and_no_parameters():
    torch.manual_seed(0)
    linear = linear_bottleneck.build("linear")
    torch.manual_seed(0)
    relu6 = linear_bottleneck.build("relu6")
    blocks = [m for m in linear.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17  # Table 2 of Sandler et al. 2018: 1 + 2 + 3 + 4 + 3 + 3 + 1
    assert all(isinstance(b.conv[-1], nn.BatchNorm2d) for b in blocks), "the paper's projection is linear"
    assert all(isinstance(b.conv[-1], nn.ReLU6) for b in relu6.modules() if isinstance(b, InvertedResidual))
    assert count_params(linear) == count_params(relu6)
    assert count_macs(linear, (1, 1, 28, 28)) == count_macs(relu6, (1, 1, 28, 28))
    for a, b in zip(linear.state_dict().values(), relu6.state_dict().values()):
        assert torch.equal(a, b), "one seed gives both variants the same initial weights"
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(linear.eval().forward_features(x), relu6.eval().forward_features(x), rtol=1e-3, atol=0)


# ---------------------------------------------------------------------------------------------
# The part runner: finished parts are kept, reused and only for their own configuration
# ---------------------------------------------------------------------------------------------
def test_parts_resume_and_ignore_other_configurations(tmp_path, monkeypatch):
    trained: list[tuple[str, int]] = []

    def stub(step, seed, cfg, *, state_path):
        trained.append((step, seed))
        return {"step": step, "seed": seed, "val_acc": 0.5, "train_seconds": 1.0, "images_per_s": 1.0}

    monkeypatch.setattr(convnext_roadmap, "train_step", stub)
    monkeypatch.setenv("CNN_COURSE_WORKERS", "1")
    cfg = convnext_roadmap.QUICK
    parts = tmp_path / "convnext_roadmap.parts"
    parts.mkdir()
    convnext_roadmap.part_path(parts, "resnet", 0, cfg).write_text(json.dumps(
        {"step": "resnet", "seed": 0, "val_acc": 0.25, "variant": "resnet"}))
    convnext_roadmap.part_path(parts, "resnet", 1, dict(cfg, epochs=99)).write_text("{}")  # another configuration
    results = convnext_roadmap.run(quick=True, out_dir=tmp_path)
    assert ("resnet", 0) not in trained and ("resnet", 1) in trained
    assert len(trained) == len(STEPS) * len(cfg["seeds"]) - 1
    assert [(r["step"], r["seed"]) for r in results["runs"]] == [(s, seed) for s in STEPS for seed in cfg["seeds"]]
    assert results["runs"][0]["val_acc"] == 0.25
    assert [s["fields_changed"] for s in results["steps"]] == list(EXPECTED_FIELDS.values())
    assert not parts.exists(), "the parts are removed once the run is complete"


def test_a_failed_part_is_reported_and_the_others_kept(tmp_path, monkeypatch):
    def stub(step, seed, cfg, *, state_path):
        if step == "GELU":
            raise FloatingPointError("the training loss became nan")
        return {"step": step, "seed": seed, "val_acc": 0.5, "train_seconds": 1.0, "images_per_s": 1.0}

    monkeypatch.setattr(convnext_roadmap, "train_step", stub)
    monkeypatch.setenv("CNN_COURSE_WORKERS", "1")
    with pytest.raises(RuntimeError, match="GELU seed 0: FloatingPointError.*run the same command again"):
        convnext_roadmap.run(quick=True, out_dir=tmp_path)
    kept = list((tmp_path / "convnext_roadmap.parts").glob("*.json"))
    assert len(kept) == (len(STEPS) - 1) * len(convnext_roadmap.QUICK["seeds"])


def test_a_part_resumes_mid_training(tmp_path):
    """A network stopped after its first epoch continues from there, to the same weights as an unbroken run."""
    cfg = dict(convnext_roadmap.QUICK, epochs=2, train_subset=128, val_subset=64)
    whole = convnext_roadmap.train_step("resnet", 0, cfg, state_path=tmp_path / "a.pt")
    import lib.experiments._resume as resume
    real_fit, calls = resume.fit, {"n": 0}

    def one_epoch_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    resume.fit = one_epoch_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            convnext_roadmap.train_step("resnet", 0, cfg, state_path=tmp_path / "b.pt")
    finally:
        resume.fit = real_fit
    again = convnext_roadmap.train_step("resnet", 0, cfg, state_path=tmp_path / "b.pt")
    assert [e["resumes"] for e in again["epochs"]] == [0, 1]
    assert again["val_acc"] == whole["val_acc"] and again["val_loss"] == whole["val_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_roadmap", "linear_bottleneck"])
def test_quick_run_writes_a_record(tmp_path, name):
    path = experiments.run(name, quick=True, out_dir=tmp_path)
    record = json.loads(path.read_text())
    assert record["quick"] and record["provenance"]["wall_seconds"] > 0
    runs = record["results"]["runs"]
    cfg = record["results"]["config"]
    variants = cfg["steps"] if name == "convnext_roadmap" else cfg["variants"]
    assert [(r["variant"], r["seed"]) for r in runs] == [(v, s) for v in variants for s in cfg["seeds"]]
    for r in runs:
        assert 0 <= r["val_acc"] <= 1 and r["val_images"] == cfg["val_subset"] and r["macs"] > 0
    if name == "linear_bottleneck":   # each version tuned on validation with a seed of its own, then tested once
        chosen, tuning = record["results"]["chosen"], record["results"]["tuning"]
        assert {r["seed"] for r in tuning} == {cfg["tune_seed"]} and cfg["tune_seed"] not in cfg["seeds"]
        assert all("test_acc" not in r for r in tuning) and all(r["test_images"] == cfg["test_subset"] for r in runs)
        for r in runs:
            c = chosen[r["variant"]]
            best = max(sorted(float(k) for k in c["val_acc_by_lr"]), key=lambda lr: c["val_acc_by_lr"][f"{lr:g}"])
            assert r["lr"] == c["lr"] == best and len(c["extended"]) <= cfg["max_extensions"]
    with pytest.raises(ValueError, match="--quick"):
        experiments.load(name, results_dir=tmp_path)
