"""lib.data: the real data loads and checks out; missing and corrupt files give a clear error."""
import gzip
import struct

import pytest
import torch

from lib import data


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No cache, no Debian files, no env dir: a machine without the data."""
    monkeypatch.setenv("CNN_COURSE_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data, "_CACHE", {})
    return tmp_path


def write_idx(path, magic, shape, payload: bytes, gz=True):
    header = struct.pack(">i", magic) + struct.pack(f">{len(shape)}i", *shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + payload)


def fake_dataset(directory, n_train=6, n_test=4, gz=True, labels=None):
    directory.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{sfx}", 2051, (n, 28, 28), bytes(n * 784), gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{sfx}", 2049, (n,), bytes(labels or [i % 10 for i in range(n)]), gz)


def test_real_data_has_the_published_shape_and_balance():
    images, labels = data.load_fashion_mnist(train=True)
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [6000] * 10
    test_images, test_labels = data.load_fashion_mnist(train=False)
    assert test_images.shape == (10000, 28, 28) and torch.bincount(test_labels).tolist() == [1000] * 10
    # the normalisation constants are the training set's statistics
    x = images.float() / 255
    assert abs(x.mean().item() - data.MEAN) < 1e-3 and abs(x.std().item() - data.STD) < 1e-3
    assert len(data.CLASSES) == 10 and data.CLASSES[9] == "Ankle boot"


def test_splits_are_disjoint_seeded_and_normalised():
    a, b = data.fashion_mnist(seed=0), data.fashion_mnist(seed=0)
    assert len(a.train) == 55000 and len(a.val) == 5000 and len(a.test) == 10000
    torch.testing.assert_close(a.val.images[:50], b.val.images[:50])
    c = data.fashion_mnist(seed=1)
    assert not torch.equal(a.val.images[:50], c.val.images[:50])
    # validation images are not among the training images (compare exact pixel rows by hashing)
    train_keys = {hash(t.numpy().tobytes()) for t in a.train.images[:55000:11]}
    assert not any(hash(v.numpy().tobytes()) in train_keys for v in a.val.images[:500])
    assert abs(a.train.images.mean().item()) < 0.05 and abs(a.train.images.std().item() - 1) < 0.05


def test_subsets_augmentation_and_loaders():
    s = data.fashion_mnist(train_subset=300, val_subset=100, test_subset=50, augment=True)
    assert (len(s.train), len(s.val), len(s.test)) == (300, 100, 50)
    torch.manual_seed(0)
    views = torch.stack([s.train[0][0] for _ in range(20)])
    assert views.shape == (20, 1, 28, 28)
    assert (views - views[0]).abs().amax() > 0, "augmentation should change the image between draws"
    assert torch.equal(s.val[0][0], s.val[0][0]), "validation images are never augmented"
    train, val, test = data.fashion_mnist_loaders(batch_size=32, train_subset=64, val_subset=64, test_subset=64)
    x, y = next(iter(train))
    assert x.shape == (32, 1, 28, 28) and y.shape == (32,) and y.dtype == torch.int64
    with pytest.raises(ValueError, match="subset size must be between 1 and"):
        data.fashion_mnist(train_subset=10**6)


def test_missing_data_error_says_what_to_run(isolated):
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist()
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--download" in message and "FASHION_MNIST_DIR" in message
    assert str(isolated / "no-debian") in message


def test_env_dir_is_used_first_and_cached(isolated, monkeypatch):
    fake_dataset(isolated / "mine")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(isolated / "mine"))
    with monkeypatch.context() as m:
        m.setitem(data.FILES, "train-images-idx3-ubyte", (2051, (6, 28, 28)))
        m.setitem(data.FILES, "train-labels-idx1-ubyte", (2049, (6,)))
        m.setitem(data.FILES, "t10k-images-idx3-ubyte", (2051, (4, 28, 28)))
        m.setitem(data.FILES, "t10k-labels-idx1-ubyte", (2049, (4,)))
        root = data.prepare()
        assert (root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte").is_file()
        images, labels = data.load_fashion_mnist(train=True)
        assert images.shape == (6, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_env_dir_that_does_not_exist(isolated, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(isolated / "nowhere"))
    with pytest.raises(data.DataError, match="is not a directory"):
        data.prepare()


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated|cannot be read"),
    ("wrong_header", "not the expected Fashion-MNIST file"),
    ("bad_labels", "labels outside 0-9"),
    ("garbage_gzip", "cannot be read"),
])
def test_corrupt_files_are_detected(isolated, monkeypatch, damage, message):
    src = isolated / "debian"
    monkeypatch.setattr(data, "DEBIAN_DIR", src)
    fake_dataset(src, n_train=60000, n_test=10000)
    victim = src / "train-labels-idx1-ubyte.gz"
    if damage == "truncate":
        raw = gzip.decompress(victim.read_bytes())
        victim.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "wrong_header":
        write_idx(victim, 2049, (59999,), bytes(59999))
    elif damage == "bad_labels":
        write_idx(victim, 2049, (60000,), bytes([12]) * 60000)
    elif damage == "garbage_gzip":
        victim.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(data.DataError, match=message) as err:
        data.prepare()
    assert "train-labels-idx1-ubyte" in str(err.value) and "make data" in str(err.value)


def test_corrupt_cache_is_detected_too(isolated):
    raw = isolated / "cache" / "FashionMNIST" / "raw"
    fake_dataset(raw, n_train=60000, n_test=10000, gz=False)
    with open(raw / "t10k-images-idx3-ubyte", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.*truncated"):
        data.prepare()


def test_cli_prepare_reports_missing_data(isolated, capsys):
    assert data.main(["prepare"]) == 1
    assert "dataset-fashion-mnist" in capsys.readouterr().err
