"""lib.train: a real model learns, runs repeat under a seed, checkpoints round-trip; lib.plot draws."""
import matplotlib
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lib import data, models, plot, train


@pytest.fixture(scope="module")
def small_loaders():
    return data.fashion_mnist_loaders(batch_size=64, train_subset=2048, val_subset=512, test_subset=512)


def test_fit_learns_fashion_mnist_and_records_history(small_loaders):
    train_loader, val_loader, test_loader = small_loaders
    train.seed_everything(0)
    model = models.simple_cnn(width=8, head="flatten")
    before = train.evaluate(model, test_loader)["acc"]
    history = train.fit(model, train_loader, val_loader, epochs=2, lr=3e-3, progress=False)
    after = train.evaluate(model, test_loader)
    assert len(history.epochs) == 2
    assert history.epochs[1]["train_loss"] < history.epochs[0]["train_loss"]
    assert after["acc"] > max(0.6, before + 0.3), f"accuracy {before:.2f} -> {after['acc']:.2f}"
    assert history.images_per_second > 0 and history.seconds > 0
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s"} <= set(history.frame().columns)
    assert "epochs in" in history.report()


def test_seeded_runs_repeat_and_eval_mode_is_restored(small_loaders):
    train_loader, val_loader, _ = small_loaders
    results = []
    for _ in range(2):
        train.seed_everything(123)
        loaders = data.fashion_mnist_loaders(batch_size=64, train_subset=256, seed=5)
        model = models.simple_cnn(width=4)
        h = train.fit(model, loaders[0], epochs=1, progress=False)
        results.append((h.last("train_loss"), [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)
    model.train()
    train.evaluate(model, val_loader)
    assert model.training, "evaluate must restore training mode"


def test_fit_options_and_errors():
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    h = train.fit(model, loader, epochs=2, optimizer="sgd", lr=0.01, schedule="cosine", max_batches=2, progress=False)
    assert [e["train_images"] for e in h.epochs] == [16, 16]
    with pytest.raises(ValueError, match="unknown optimizer"):
        train.fit(model, loader, optimizer="adagrad", progress=False)
    with pytest.raises(ValueError, match="unknown schedule"):
        train.fit(model, loader, schedule="linear", progress=False)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train.fit(model, loader, epochs=0, progress=False)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train.fit(model, loader, lr=1e38, optimizer="sgd", epochs=3, progress=False)
    empty = DataLoader(TensorDataset(x[:0], y[:0]), batch_size=8)
    with pytest.raises(ValueError, match="empty"):
        train.evaluate(model, empty)


def test_progress_bar_runs(capsys, monkeypatch):
    monkeypatch.setenv("CNN_COURSE_PLAIN_PROGRESS", "1")
    loader = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=4)
    train.fit(nn.Linear(4, 2), loader, epochs=1, progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


def test_checkpoint_round_trip(tmp_path):
    model = models.simple_cnn(width=4)
    path = train.save_checkpoint(tmp_path / "ck" / "m.pt", model, meta={"arch": "simple_cnn", "width": 4})
    other = models.simple_cnn(width=4)
    payload = train.load_checkpoint(path, other)
    assert payload["meta"] == {"arch": "simple_cnn", "width": 4}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(RuntimeError):
        train.load_checkpoint(path, models.simple_cnn(width=8))
    with pytest.raises(TypeError):
        train.save_checkpoint(tmp_path / "bad.pt", model, meta={"x": object()})


@pytest.mark.parametrize("cuda, mps, expected", [(False, False, "cpu"), (True, False, "cuda"),
                                                 (False, True, "mps"), (True, True, "cuda")])
def test_device_selection_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert train.get_device() == torch.device(expected)
    assert train.get_device("cpu") == torch.device("cpu")  # an explicit choice is kept
    assert train.get_device("cuda:1") == torch.device("cuda", 1)


def test_plots_have_titles_and_labels():
    matplotlib.use("Agg")
    h = train.History([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4,
                        "seconds": 1.0, "train_images": 10, "images_per_s": 10.0}])
    fig = plot.plot_history({"a": h, "b": h})
    assert fig._suptitle.get_text() == "Training curves"
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]
    assert len(fig.axes[0].lines) == 4
    images = torch.rand(5, 1, 28, 28)
    fig = plot.show_images(images, [0, 1, 2, 3, 4], predictions=[0, 1, 2, 3, 5], class_names=data.CLASSES)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "T-shirt/top" and "is Coat" in titles[4]
    assert len(plot.show_filters(torch.randn(6, 1, 3, 3)).axes) == 6
    assert plot.show_feature_maps(torch.randn(1, 4, 7, 7)).axes[0].get_title() == "ch 0"
    fig = plot.show_kernel_responses(torch.rand(16, 16), {"blur": torch.ones(3, 3) / 9})
    assert "blur (3x3)" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match=r"\(C_out, C_in, kH, kW\)"):
        plot.show_filters(torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, H, W\)"):
        plot.show_images(torch.rand(28))


def _tiny_run():
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 3))
    opt = train.make_optimizer(model, "adamw", 1e-2, 0.05)
    return model, loader, opt, train.make_scheduler(opt, 3 * len(loader), schedule="cosine", warmup_steps=2)


def test_fit_with_a_ready_scheduler_equals_fit_with_its_schedule():
    model, loader, opt, sched = _tiny_run()
    for _ in range(3):  # one call per epoch, one scheduler over all three
        train.fit(model, loader, epochs=1, optimizer=opt, scheduler=sched, progress=False, device="cpu")
    other, loader, _, _ = _tiny_run()
    train.fit(other, loader, epochs=3, lr=1e-2, optimizer="adamw", weight_decay=0.05, schedule="cosine",
              warmup_steps=2, progress=False, device="cpu")
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not both"):
        train.fit(model, loader, optimizer=opt, scheduler=sched, schedule="cosine", progress=False)


def test_train_state_resumed_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    """Model, optimizer, scheduler, torch's RNG (dropout) and the loader's shuffling all come back."""
    def run(path, epochs_now):
        model, loader, opt, sched = _tiny_run()
        state = train.TrainState(model, opt, sched, generator=loader.generator)
        state.load(path)
        for _ in range(len(state.history.epochs), epochs_now):
            state.history.epochs += train.fit(model, loader, epochs=1, optimizer=opt, scheduler=sched,
                                              progress=False, device="cpu").epochs
            state.save(path)
        return model, state

    whole, _ = run(tmp_path / "a.pt", 3)
    run(tmp_path / "b.pt", 1)                        # killed after one epoch ...
    resumed, state = run(tmp_path / "b.pt", 3)       # ... and run again
    assert state.resumes == 1 and len(state.history.epochs) == 3
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    model, _, opt, _ = _tiny_run()
    fresh = train.TrainState(model, opt)
    assert not fresh.load(tmp_path / "missing.pt") and fresh.resumes == 0
