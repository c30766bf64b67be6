"""lib.transfer: stages cover every parameter, freezing really freezes (BatchNorm statistics included),
heads are replaced in place, per-stage learning rates, gradual unfreezing, feature extraction, the
torchvision weights loader (offline failure, and loading from a cached file into lib models, checked
against torchvision's logits), the shipped backbone, and the experiments' --quick runs."""
from __future__ import annotations

import copy
import json
import math
import socket
import time

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lib import experiments, models, transfer
from lib.analysis import count_params
from lib.models.blocks import BasicBlock

SMALL = {"resnet20": {}, "resnet18": {"small_input": True}, "efficientnet_b0": {"small_input": True},
         "vit_tiny_28": {}, "simple_cnn": {}, "vgg11_bn": {"small_input": True}, "alexnet": {"small_input": True},
         "googlenet": {"small_input": True}, "densenet121": {"small_input": True},
         "mobilenet_v3_small": {"small_input": True}, "convnext_tiny": {"small_input": True}}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def batch(model: nn.Module, n: int = 4) -> torch.Tensor:
    name = getattr(model, "name", "simple_cnn")
    c, h, w = models.default_input_size(name, small_input=True) if name in models.MODELS else (1, 28, 28)
    return torch.randn(n, model.in_channels if hasattr(model, "in_channels") else c, h, w)


# ---------------------------------------------------------------------------------------------
# Stages, freezing, heads
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SMALL))
def test_stages_partition_the_parameters_and_end_with_the_head(name):
    with torch.device("meta"):
        model = models.build(name, **SMALL[name])
    st = transfer.stages(model)
    assert list(st)[-1] == "head" and len(st) >= 2
    names = [n for ps in st.values() for n, _ in ps]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    assert transfer.head(model) is [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def test_resnet20_stages_are_stem_layers_head():
    assert transfer.stage_names(models.resnet20()) == ["stem", "layer1", "layer2", "layer3", "head"]


def test_stages_are_the_models_own_and_other_models_are_cut_at_their_children():
    model = models.googlenet(small_input=True)
    assert transfer.stage_names(model) == list(model.stages())
    head_params = {n for n, _ in transfer.stages(model)["head"]}
    assert {n for n, _ in model.aux1.named_parameters(prefix="aux1")} <= head_params  # classifiers train together
    assert transfer.head(model) is model.fc
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 3))
    assert transfer.stage_names(plain) == ["0", "head"] and transfer.head(plain) is plain[3]


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "vit_tiny_28", "simple_cnn", "densenet121",
                                  "mobilenet_v3_small"])  # untrained B0 outputs ~1e-14 in eval mode
def test_freeze_trains_only_the_head_and_keeps_batchnorm_statistics(name):
    torch.manual_seed(0)
    model = models.build(name, num_classes=3, **SMALL[name])
    transfer.freeze(model)
    assert transfer.trainable_stages(model) == ["head"]
    assert count_params(model, trainable_only=True) == sum(p.numel() for _, p in transfer.stages(model)["head"])
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):
        loss = model(batch(model)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    head_keys = {n for n, _ in transfer.stages(model)["head"]}
    for key in before:
        changed = not torch.equal(before[key], after[key])
        if key in head_keys:
            assert changed, f"{key}: the head did not train"
        elif not key.endswith("num_batches_tracked"):
            assert not changed, f"{key} changed although its stage is frozen"
    transfer.unfreeze(model)
    assert transfer.trainable_stages(model) == transfer.stage_names(model)
    model.train()
    model(batch(model))
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        moved = [k for k in before if "running_mean" in k and not torch.equal(before[k], model.state_dict()[k])]
        assert moved, "after unfreeze, BatchNorm should update its statistics in training mode again"


def test_freeze_with_train_bn_and_named_stages():
    model = models.resnet20(num_classes=3)
    transfer.freeze(model, ["stem", "layer1"], train_bn=True)
    assert transfer.trainable_stages(model) == ["layer2", "layer3", "head"]
    model.train()
    assert model.bn1.training  # no hook: BatchNorm follows model.train()
    with pytest.raises(KeyError, match="has no stage 'layer4'"):
        transfer.freeze(model, ["layer4"])


@pytest.mark.parametrize("name", ["resnet20", "efficientnet_b0", "vit_tiny_28", "vgg11_bn", "googlenet",
                                  "densenet121", "mobilenet_v3_small", "convnext_tiny"])
def test_replace_head_changes_the_number_of_outputs_in_place(name):
    model = models.build(name, **SMALL[name])
    new = transfer.replace_head(model, 7)
    assert transfer.head(model) is new and new.out_features == 7
    model.eval()
    assert model(batch(model, 2)).shape == (2, 7)


# ---------------------------------------------------------------------------------------------
# Learning rates, gradual unfreezing, features
# ---------------------------------------------------------------------------------------------
def test_param_groups_give_each_stage_its_learning_rate():
    model = models.resnet20()
    groups = transfer.param_groups(model, lr=1e-2, decay=0.5)
    assert [g["name"] for g in groups] == ["stem", "layer1", "layer2", "layer3", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-2 * 0.5 ** k for k in (4, 3, 2, 1, 0)])
    assert sum(p.numel() for g in groups for p in g["params"]) == count_params(model)
    groups = transfer.param_groups(model, lr=1e-2, lrs={"stem": 0.0})
    assert groups[0]["lr"] == 0.0 and all(g["lr"] == 1e-2 for g in groups[1:])
    transfer.freeze(model)
    assert [g["name"] for g in transfer.param_groups(model, lr=1e-2)] == ["head"]
    transfer.freeze(model, ["head"])
    with pytest.raises(ValueError, match="no trainable parameters"):
        transfer.param_groups(model, lr=1e-2)


def test_gradual_unfreezing_releases_one_stage_per_phase():
    torch.manual_seed(0)
    model = models.resnet20(in_channels=1, num_classes=3)
    loader = DataLoader(TensorDataset(torch.randn(16, 1, 28, 28), torch.randint(0, 3, (16,))), batch_size=8)
    stem_before = model.conv1.weight.detach().clone()
    h = transfer.fit_gradual_unfreezing(model, loader, epochs_per_phase=1, lr=1e-3, decay=0.5, phases=2,
                                        progress=False)
    frame = h.frame()
    assert list(frame["phase"]) == [1, 2] and list(frame["unfrozen"]) == ["head", "layer3"]
    assert frame["trainable_params"].is_monotonic_increasing
    assert torch.equal(model.conv1.weight, stem_before), "the stem was never unfrozen, so it must not move"
    assert transfer.trainable_stages(model) == ["layer3", "head"]
    with pytest.raises(ValueError, match="phases must be between"):
        transfer.fit_gradual_unfreezing(model, loader, epochs_per_phase=1, lr=1e-3, phases=9)


def test_extract_features_is_the_pooled_backbone_output():
    torch.manual_seed(0)
    model = models.resnet20(in_channels=1).train()
    x, y = torch.randn(10, 1, 28, 28), torch.arange(10)
    feats, labels = transfer.extract_features(model, DataLoader(TensorDataset(x, y), batch_size=4))
    assert feats.shape == (10, 64) and torch.equal(labels, y)
    assert model.training, "the model's mode must be restored"
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(feats, model.forward_features(x).mean(dim=(2, 3)))
        # the head applied to the features gives the model's logits
        torch.testing.assert_close(model.fc(feats), model(x))
    vit = models.vit_tiny_28().eval()
    with torch.no_grad():
        torch.testing.assert_close(transfer.pooled_features(vit, x), vit.forward_features(x)[:, 0])


def test_class_task_relabels_and_samples_per_class():
    class Toy(torch.utils.data.Dataset):
        labels = torch.tensor([0, 1, 2, 3] * 5)

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return torch.full((1,), float(i)), self.labels[i]

    task = transfer.class_task(Toy(), [3, 1], per_class=2, seed=0)
    assert len(task) == 4 and sorted(task.labels.tolist()) == [0, 0, 1, 1]
    for i in range(len(task)):
        x, y = task[i]
        original = Toy.labels[int(x.item())].item()
        assert (original, y.item()) in {(3, 0), (1, 1)}
    assert torch.equal(task.indices, transfer.class_task(Toy(), [3, 1], per_class=2, seed=0).indices)
    assert len(transfer.class_task(Toy(), [0, 2])) == 10
    with pytest.raises(ValueError, match="only 5 examples"):
        transfer.class_task(Toy(), [0], per_class=6)
    with pytest.raises(ValueError, match="no examples"):
        transfer.class_task(Toy(), [7])


# ---------------------------------------------------------------------------------------------
# torchvision weights
# ---------------------------------------------------------------------------------------------
def test_torchvision_weights_offline_fail_fast_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    start = time.perf_counter()
    with pytest.raises(transfer.WeightsUnavailableError) as info:
        transfer.load_torchvision_weights(models.resnet18(), "resnet18")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    for part in ("ResNet18_Weights.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet18-f37072fd.pth",
                 "offline", str(tmp_path), "load_pretrained_backbone"):
        assert part in message, f"the message should name {part!r}: {message}"


def test_torchvision_weights_dns_that_hangs_times_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(30))
    start = time.perf_counter()
    with pytest.raises(transfer.WeightsUnavailableError, match="DNS lookup timed out"):
        transfer.load_torchvision_weights(models.resnet18(), "resnet18", timeout=0.5)
    assert time.perf_counter() - start < 5


@pytest.fixture
def cached_resnet18(tmp_path, monkeypatch):
    """torchvision's resnet18 with random weights, saved where torchvision's cache would hold the download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    target = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), target)
    return tv


def test_torchvision_weights_load_from_the_cache_into_lib_models(cached_resnet18):
    x = torch.randn(2, 3, 64, 64)
    model = models.resnet18().eval()
    report = transfer.load_torchvision_weights(model)  # name from the model
    assert report == {"weights": "ResNet18_Weights.IMAGENET1K_V1", "adapted": [], "skipped": []}
    with torch.no_grad():
        torch.testing.assert_close(model(x), cached_resnet18(x))

    grey = models.resnet18(in_channels=1, num_classes=5).eval()
    report = transfer.load_torchvision_weights(grey, "resnet18")
    assert report["adapted"] == ["conv1.weight"] and sorted(report["skipped"]) == ["fc.bias", "fc.weight"]
    g = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # a grey image through summed kernels = the RGB image R = G = B through the originals
        tv_features = torch.nn.Sequential(*list(cached_resnet18.children())[:-1])(g.expand(-1, 3, -1, -1)).flatten(1)
        torch.testing.assert_close(grey.avgpool(grey.forward_features(g)).flatten(1), tv_features)


def test_torchvision_weights_that_do_not_fit_raise(cached_resnet18):
    with pytest.raises(ValueError, match="does not fit"):
        transfer.load_torchvision_weights(models.ResNet(BasicBlock, (2, 2, 2, 2), widths=(32, 64, 128, 256)),
                                          "resnet18")
    with pytest.raises(KeyError, match="no weights"):
        transfer.load_torchvision_weights(models.resnet18(), "resnet18", "NO_SUCH_WEIGHTS")


# ---------------------------------------------------------------------------------------------
# The shipped backbone and the experiments
# ---------------------------------------------------------------------------------------------
def test_shipped_backbone_loads_and_classifies_the_source_classes():
    path = experiments.RESULTS_DIR / transfer.BACKBONE_CHECKPOINT
    if not path.is_file():
        pytest.skip("results/backbone_fmnist_source.pt not made yet (python -m lib.experiments pretrain_backbone)")
    assert path.stat().st_size < 4 * 2 ** 20
    model, meta = transfer.load_pretrained_backbone()
    assert meta["source_classes"] == list(transfer.SOURCE_CLASSES)
    from lib import data, train
    test = transfer.class_task(data.fashion_mnist().test, transfer.SOURCE_CLASSES, per_class=100)
    acc = train.evaluate(model, DataLoader(test, batch_size=250))["acc"]
    assert acc > 0.8, f"the shipped backbone classifies its source classes at {acc:.2f}"
    record = experiments.load("pretrain_backbone")
    assert record["results"]["checkpoint"] == path.name


def test_fit_resumable_after_a_kill_equals_an_uninterrupted_fit(tmp_path):
    from lib.experiments._resume import fit_resumable
    from lib.train import fit

    x, y = torch.randn(48, 1, 8, 8), torch.randint(0, 3, (48,))

    def loader():
        return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 3))

    class Killed(Exception):
        pass

    class Dying:
        """The loader of a process that is killed after `after` batches."""
        def __init__(self, inner, after):
            self.inner, self.after, self.generator, self.seen = inner, after, inner.generator, 0

        def __len__(self):
            return len(self.inner)

        def __iter__(self):
            for b in self.inner:
                self.seen += 1
                if self.seen > self.after:
                    raise Killed
                yield b

    kwargs = dict(epochs=3, lr=0.01, optimizer="adam", weight_decay=1e-4)
    reference = model()
    fit(reference, loader(), schedule="cosine", progress=False, **kwargs)
    state = tmp_path / "state.pt"
    with pytest.raises(Killed):  # killed during the second epoch (6 batches per epoch)
        fit_resumable(model(), Dying(loader(), after=8), None, state_path=state, **kwargs)
    resumed = model()
    torch.manual_seed(123)  # the new process's random state does not matter: the saved one is restored
    history = fit_resumable(resumed, loader(), None, state_path=state, **kwargs)
    assert [e["resumes"] for e in history.epochs] == [0, 1, 1]
    for a, b in zip(reference.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_pretrain_backbone_quick_run(tmp_path):
    path = experiments.run("pretrain_backbone", quick=True, out_dir=tmp_path)
    record = json.loads(path.read_text())
    assert record["quick"] and record["provenance"]["wall_seconds"] > 0
    results = record["results"]
    assert results["train_images"] == 5 * 64 and len(results["history"]) == 1 and results["resumes"] == 0
    assert not (tmp_path / "pretrain_backbone.parts").exists()
    model, meta = transfer.load_pretrained_backbone(tmp_path / results["checkpoint"])
    assert meta["model"] == "resnet20" and transfer.stage_names(model)[-1] == "head"
    with pytest.raises(ValueError, match="--quick"):
        experiments.load("pretrain_backbone", results_dir=tmp_path)


@pytest.mark.slow
def test_vit_vs_cnn_quick_run(tmp_path):
    record = json.loads(experiments.run("vit_vs_cnn", quick=True, out_dir=tmp_path).read_text())
    runs = record["results"]["runs"]
    assert {r["model"] for r in runs} == {"ViT (vit_tiny_28)", "CNN (simple_cnn, width 32)"}
    assert all(0 <= r["test_acc"] <= 1 and r["train_seconds"] > 0 for r in runs)
    assert (tmp_path / record["results"]["checkpoint"]).is_file()
    assert not (tmp_path / "vit_vs_cnn.parts").exists()


# ---------------------------------------------------------------------------------------------
# The transfer chapter's fixes: one schedule for gradual unfreezing, BatchNorm recalibration,
# standardised probes, the verified backbone, the ImageNet cell, the fair comparison of methods
# ---------------------------------------------------------------------------------------------
def _tiny_loader(n: int = 16, batch_size: int = 8) -> DataLoader:
    torch.manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 1, 28, 28), torch.randint(0, 3, (n,))), batch_size=batch_size)


def test_gradual_unfreezing_is_one_schedule_unless_restarts():
    loader = _tiny_loader()  # 2 steps per epoch
    torch.manual_seed(0)
    h = transfer.fit_gradual_unfreezing(models.resnet20(in_channels=1, num_classes=3), loader, epochs_per_phase=1,
                                        lr=1e-3, decay=0.5, phases=3, progress=False).frame()
    steps = 3 * 2
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * k / steps)) for k in (2, 4, 6)]  # after each epoch's steps
    assert list(h["head_lr"]) == pytest.approx(expected), "one cosine over all phases, not one per phase"
    torch.manual_seed(0)
    r = transfer.fit_gradual_unfreezing(models.resnet20(in_channels=1, num_classes=3), loader, epochs_per_phase=1,
                                        lr=1e-3, decay=0.5, phases=3, restarts=True, progress=False).frame()
    assert list(r["head_lr"]) == pytest.approx([0.0, 0.0, 0.0]), "each phase anneals its own schedule to zero"


def test_gradual_unfreezing_with_one_optimizer_keeps_frozen_stages_still():
    torch.manual_seed(0)
    model = models.resnet20(in_channels=1, num_classes=3)
    stem, bn_mean = model.conv1.weight.detach().clone(), model.bn1.running_mean.clone()
    layer3 = model.layer3[0].conv1.weight.detach().clone()
    transfer.fit_gradual_unfreezing(model, _tiny_loader(), epochs_per_phase=1, lr=1e-2, phases=2, progress=False)
    assert torch.equal(model.conv1.weight, stem) and torch.equal(model.bn1.running_mean, bn_mean)
    assert not torch.equal(model.layer3[0].conv1.weight, layer3), "layer3 was unfrozen in phase 2 and trained"


def test_recalibrated_batchnorm_gives_eval_mode_the_batch_statistics():
    torch.manual_seed(0)
    model = models.resnet20(in_channels=1, num_classes=3)
    x = torch.randn(256, 1, 28, 28) * 3 + 1
    loader = DataLoader(TensorDataset(x, torch.zeros(256, dtype=torch.long)), batch_size=64)
    before = copy.deepcopy(model.state_dict())
    transfer.freeze(model)
    transfer.recalibrate_batchnorm(model, loader)
    model.eval()
    feats = model.forward_features(x).mean(dim=(2, 3)).detach()
    with torch.no_grad():
        y = model.bn1(model.conv1(x))  # the first BatchNorm now normalises these images: mean 0, sd 1 per channel
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(16), atol=2e-3, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(16), atol=2e-2, rtol=0)
    assert feats.std(0).mean() < 10, "recalibrated features keep a sane scale"
    for key, value in model.state_dict().items():  # only running statistics changed, and momentum is restored
        if not any(s in key for s in ("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, before[key]), key
    assert model.bn1.momentum == 0.1 and hasattr(model.bn1, "_frozen_hook"), "still frozen"
    stats = model.bn1.running_mean.clone()
    model.train()
    model(x[:8])  # a frozen BatchNorm normalises with its (recalibrated) statistics even in training mode
    assert not model.bn1.training and torch.equal(model.bn1.running_mean, stats)


def test_standardized_probe_folds_into_the_raw_head():
    torch.manual_seed(0)
    f = torch.randn(50, 8) * torch.linspace(0.1, 30, 8) + 5
    z, mean, std = transfer.standardize(f)
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(8), atol=1e-4, rtol=0)
    head = nn.Linear(8, 3)
    logits = head(z)
    transfer.fold_standardization(head, mean, std)
    torch.testing.assert_close(head(f), logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(transfer.standardize(f[:5], mean, std)[0], z[:5])


def test_shipped_backbone_is_checked_against_its_record(tmp_path):
    path = experiments.RESULTS_DIR / transfer.BACKBONE_CHECKPOINT
    if not path.is_file():
        pytest.skip("results/backbone_fmnist_source.pt not made yet (python -m lib.experiments pretrain_backbone)")
    record = experiments.load("pretrain_backbone")
    copy_ = tmp_path / path.name
    copy_.write_bytes(path.read_bytes())
    model, _ = transfer.load_pretrained_backbone(copy_, record=record)  # the same bytes: loads
    assert transfer.stage_names(model)[-1] == "head"
    copy_.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(experiments.ArtifactMismatchError, match="changed or truncated"):
        transfer.load_pretrained_backbone(copy_, record=record)


def test_a_small_input_stem_says_how_to_take_imagenet_weights(cached_resnet18):
    with pytest.raises(ValueError, match=r"small_input=False"):
        transfer.load_torchvision_weights(models.resnet18(num_classes=5, in_channels=1, small_input=True), "resnet18")


def test_the_chapters_imagenet_cell_loads_torchvision_weights(cached_resnet18, capsys):
    """The transfer chapter's own cell, run with torchvision weights in the cache: it loads them, and the
    model it builds computes torchvision's features of a grey image (R = G = B)."""
    from pathlib import Path
    chapter = json.loads((Path(__file__).resolve().parents[1] / "book" / "transfer.ipynb").read_text())
    cells = ["".join(c["source"]) for c in chapter["cells"]
             if c["cell_type"] == "code" and "load_torchvision_weights(" in "".join(c["source"])]
    assert len(cells) == 1, "the chapter has one cell that loads torchvision's weights"
    namespace = {"models": models, "transfer": transfer, "torch": torch}
    exec(compile(cells[0], "transfer.ipynb", "exec"), namespace)
    assert "loaded ResNet18_Weights.IMAGENET1K_V1" in capsys.readouterr().out
    model = namespace["model"].eval()
    g = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        tv_features = torch.nn.Sequential(*list(cached_resnet18.children())[:-1])(g.expand(-1, 3, -1, -1)).flatten(1)
        torch.testing.assert_close(transfer.pooled_features(model, g), tv_features)


@pytest.mark.slow
def test_transfer_methods_quick_run_resumes_and_records_every_method(tmp_path, monkeypatch):
    from lib.experiments import transfer_methods as tm
    monkeypatch.setattr(tm, "QUICK", {**tm.QUICK, "labels_per_class": 4, "val_per_class": 4, "test_per_class": 6,
                                      "lrs": [1e-3, 3e-3]})
    real, calls = tm._network_run, []

    def dies_at_the_first_final_run(method, lr, seed, *, final, **kw):
        if final:
            raise RuntimeError("killed")
        calls.append((method, lr, seed))
        return real(method, lr, seed, final=final, **kw)

    monkeypatch.setattr(tm, "_network_run", dies_at_the_first_final_run)
    with pytest.raises(RuntimeError, match="killed"):
        experiments.run("transfer_methods", quick=True, out_dir=tmp_path)
    assert {(m, lr) for m, lr, _ in calls} >= {(m, lr) for m in tm.NETWORKS for lr in (1e-3, 3e-3)}
    assert (tmp_path / "transfer_methods.parts").is_dir()

    def counts(method, lr, seed, *, final, **kw):
        calls.append((method, lr, seed, final))
        return real(method, lr, seed, final=final, **kw)

    calls.clear()
    monkeypatch.setattr(tm, "_network_run", counts)
    record = json.loads(experiments.run("transfer_methods", quick=True, out_dir=tmp_path).read_text())
    assert all(c[3] for c in calls), "the tuning runs finished before are not trained again"
    assert not (tmp_path / "transfer_methods.parts").exists()
    results = record["results"]
    cfg = results["config"]
    for method, name in results["methods"].items():
        runs = [r for r in results["runs"] if r["method"] == name]
        assert sorted(r["seed"] for r in runs) == cfg["seeds"] and len({r["lr"] for r in runs}) == 1
        chosen = results["chosen"][name]
        assert runs[0]["lr"] == chosen["lr"] and runs[0]["lr"] in cfg["lrs"] + chosen["extended"]
        assert len(chosen["extended"]) <= cfg["max_extensions"] and len(chosen["val_acc_by_lr"]) == 2 + len(chosen["extended"])
        assert all(r["steps"] == results["target"]["steps"] for r in runs), f"{method}: equal steps"
        assert all(len(r["epochs"]) == cfg["epochs"] and "val_acc" in r["epochs"][-1] for r in runs)
        assert all(r["test_images"] == 5 * cfg["test_per_class"] for r in runs)
    tuned = [r for r in results["tuning"] if "test_acc" in r]
    assert not tuned, "tuning runs never look at the test set"
    assert set(results["methods"]) == set(tm.METHODS)
