"""Fashion-MNIST for the course, offline first.

The files are looked for, in order:

1. the directory named by ``FASHION_MNIST_DIR`` (the four IDX files, gzipped or not, or torchvision's layout);
2. the project's cache, ``<repo>/data/FashionMNIST/raw`` (or ``$CNN_COURSE_DATA/FashionMNIST/raw``);
3. Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
4. torchvision's own download (needs the internet).

Whatever the source, the files are checked (IDX magic number, shape, label range) and copied
uncompressed into the cache, where :class:`torchvision.datasets.FashionMNIST` reads them. A truncated
or corrupt file raises :class:`DataError` naming the file and the fix; it is never silently used.

Run ``python -m lib.data prepare`` to check and cache the data (``make data`` does this).
"""
from __future__ import annotations

import gzip
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530  # over the 60,000 training images, pixels scaled to [0, 1]
BACKGROUND = (0.0 - MEAN) / STD  # a black pixel after normalisation

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO_ROOT = Path(__file__).resolve().parents[1]

# name -> (IDX magic number, shape)
FILES = {
    "train-images-idx3-ubyte": (2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte": (2049, (60000,)),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": (2049, (10000,)),
}

HOW_TO_GET = """\
Fashion-MNIST was not found. Any one of these fixes it:
  - on Debian/Ubuntu:  sudo apt-get install dataset-fashion-mnist   (then: make data)
  - with internet:     python -m lib.data prepare --download
  - from a copy:       export FASHION_MNIST_DIR=/path/to/dir-with-the-four-idx-files
Looked in: {looked}"""


class DataError(RuntimeError):
    """The dataset is missing or its files are corrupt; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("CNN_COURSE_DATA", REPO_ROOT / "data"))


def _raw_dir(root: Path) -> Path:
    return root / "FashionMNIST" / "raw"


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz",
                      _raw_dir(directory) / name, _raw_dir(directory) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> bytes:
    """Read an IDX file (gzipped or not) and check its header and length; return its raw bytes."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # a truncated .gz raises EOFError, a corrupt one BadGzipFile (OSError)
        raise DataError(f"{path} cannot be read ({e}). Delete it and run `make data` again.") from e
    n_dims = len(shape)
    header = 4 + 4 * n_dims
    if len(data) < header:
        raise DataError(f"{path} is truncated ({len(data)} bytes). Delete it and run `make data` again.")
    found_magic = struct.unpack(">i", data[:4])[0]
    found_shape = struct.unpack(f">{n_dims}i", data[4:header])
    if found_magic != magic or tuple(found_shape) != shape:
        raise DataError(f"{path} is not the expected Fashion-MNIST file: header says magic {found_magic}, "
                        f"shape {tuple(found_shape)}; expected magic {magic}, shape {shape}. "
                        f"Delete it and run `make data` again.")
    expected = header + int(torch.tensor(shape).prod())
    if len(data) != expected:
        raise DataError(f"{path} has {len(data)} bytes, expected {expected}: the file is truncated or corrupt. "
                        f"Delete it and run `make data` again.")
    if magic == 2049 and max(data[header:]) > 9:
        raise DataError(f"{path} has labels outside 0-9: the file is corrupt. Delete it and run `make data` again.")
    return data


def _sources() -> list[Path]:
    sources = []
    if os.environ.get("FASHION_MNIST_DIR"):
        sources.append(Path(os.environ["FASHION_MNIST_DIR"]))
    sources += [cache_dir(), DEBIAN_DIR]
    return sources


def prepare(*, download: bool = False, verbose: bool = False) -> Path:
    """Make sure checked, uncompressed files sit in the cache; return the root for torchvision."""
    root = cache_dir()
    raw = _raw_dir(root)
    env_dir = os.environ.get("FASHION_MNIST_DIR")
    if env_dir and not Path(env_dir).is_dir():
        raise DataError(f"FASHION_MNIST_DIR={env_dir} is not a directory. Point it at the folder holding "
                        f"the four Fashion-MNIST IDX files, or unset it.")
    for source in _sources():
        found = {name: _find(source, name) for name in FILES}
        if not all(found.values()):
            continue
        for name, (magic, shape) in FILES.items():
            target = raw / name
            if found[name] == target:  # already cached: check it
                read_idx(target, magic, shape)
                continue
            data = read_idx(found[name], magic, shape)
            raw.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.part")  # processes that prepare at once do not collide
            tmp.write_bytes(data)
            tmp.replace(target)
        if verbose:
            print(f"Fashion-MNIST: checked, from {source}, cached in {raw}")
        return root
    if download:
        from torchvision.datasets import FashionMNIST
        for split in (True, False):
            FashionMNIST(root, train=split, download=True)
        for name, (magic, shape) in FILES.items():
            read_idx(raw / name, magic, shape)
        if verbose:
            print(f"Fashion-MNIST: downloaded by torchvision into {raw}")
        return root
    raise DataError(HOW_TO_GET.format(looked=", ".join(str(s) for s in _sources())))


_CACHE: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}


def load_fashion_mnist(train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, 28, 28) uint8 and labels (N,) int64 of one official split, through torchvision."""
    if train not in _CACHE:
        from torchvision.datasets import FashionMNIST
        root = prepare(download=os.environ.get("CNN_COURSE_DOWNLOAD") == "1")
        ds = FashionMNIST(root, train=train, download=False)
        _CACHE[train] = (ds.data, ds.targets)
    return _CACHE[train]


class ImageTensorDataset(Dataset):
    """Normalised (1, 28, 28) float images and int labels, with optional light augmentation.

    Augmentation (train only): random horizontal flip and a random shift of up to 2 pixels
    (pad-and-crop), as in the usual Fashion-MNIST recipes. Everything stays a tensor: no PIL round trip.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, augment: bool = False):
        self.images = ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)  # (N, 1, 28, 28)
        self.labels = labels
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        if self.augment:
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            dy, dx = torch.randint(-2, 3, (2,)).tolist()
            x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=BACKGROUND)[:, 2 + dy:30 + dy, 2 + dx:30 + dx]
        return x, self.labels[i]


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def _take(n: int | None, total: int, generator: torch.Generator) -> torch.Tensor:
    if n is not None and not 0 < n <= total:
        raise ValueError(f"subset size must be between 1 and {total}, got {n}")
    return torch.randperm(total, generator=generator)[: (total if n is None else n)]


def fashion_mnist(*, val_size: int = 5000, seed: int = 0, augment: bool = False,
                  train_subset: int | None = None, val_subset: int | None = None,
                  test_subset: int | None = None) -> Splits:
    """Train/validation/test splits. The validation set is held out of the 60,000 training images with a
    fixed seed, so every chapter validates on the same images; the 10,000 test images stay untouched.

    ``*_subset`` draws a random (seeded, stratification-free) subset so that a chapter fits its CPU budget.
    """
    images, labels = load_fashion_mnist(train=True)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    train_idx = train_idx[_take(train_subset, len(train_idx), g)]
    val_idx = val_idx[_take(val_subset, len(val_idx), g)]
    test_images, test_labels = load_fashion_mnist(train=False)
    test_idx = _take(test_subset, len(test_labels), g)
    return Splits(
        train=ImageTensorDataset(images[train_idx], labels[train_idx], augment=augment),
        val=ImageTensorDataset(images[val_idx], labels[val_idx]),
        test=ImageTensorDataset(test_images[test_idx], test_labels[test_idx]),
    )


def fashion_mnist_loaders(*, batch_size: int = 128, train_subset: int | None = None,
                          val_subset: int | None = None, test_subset: int | None = None,
                          augment: bool = False, seed: int = 0, shuffle_seed: int | None = None,
                          val_size: int = 5000) -> tuple[DataLoader, DataLoader, DataLoader]:
    """(train, val, test) loaders; training batches are shuffled with a seeded generator.

    ``seed`` picks the split and the subsets; ``shuffle_seed`` (default: ``seed``) only the order of the
    training batches, so repeated runs over seeds can share the images and differ in their order.
    """
    s = fashion_mnist(val_size=val_size, seed=seed, augment=augment, train_subset=train_subset,
                      val_subset=val_subset, test_subset=test_subset)
    g = torch.Generator().manual_seed(seed if shuffle_seed is None else shuffle_seed)
    return (DataLoader(s.train, batch_size=batch_size, shuffle=True, generator=g),
            DataLoader(s.val, batch_size=512),
            DataLoader(s.test, batch_size=512))


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation, back to pixel values in [0, 1] (for plotting)."""
    return (x * STD + MEAN).clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m lib.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["prepare"])
    p.add_argument("--download", action="store_true", help="fall back to torchvision's download (internet)")
    args = p.parse_args(argv)
    try:
        prepare(download=args.download, verbose=True)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
