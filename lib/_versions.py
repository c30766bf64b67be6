"""The torch and torchvision releases `lib` supports, and what to do outside them.

The same message is given by ``import lib`` (a warning) and by the chapters' Colab install cell (printed), so a
reader on Colab, a fresh Jupyter or an old environment learns why a chapter may fail before it does.
Versions are read from the installed packages' metadata: nothing here imports torch.
"""
from __future__ import annotations

import warnings
from importlib import metadata

# Oldest and newest minor release of each (inclusive). The newest is the pinned pair of requirements.txt, which
# the tests and the book run (a later release is untested: the break a new torch brings is what this warns of);
# the oldest is the first pair with the APIs lib calls (F.scaled_dot_product_attention, torch.load(weights_only=)).
SUPPORTED = {"torch": ((2, 0), (2, 15)), "torchvision": ((0, 15), (0, 29))}
PINNED = {"torch": "2.15.0", "torchvision": "0.29.2"}


class UnsupportedVersionWarning(UserWarning):
    """torch or torchvision is outside the releases lib supports."""


def _minor(version: str) -> tuple[int, int] | None:
    try:
        major, minor = version.split("+")[0].split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def installed() -> dict[str, str | None]:
    found = {}
    for name in SUPPORTED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def unsupported(found: dict[str, str | None] | None = None) -> str:
    """"" when torch and torchvision are within SUPPORTED; otherwise what is wrong and what to do."""
    found = installed() if found is None else found
    wrong = []
    for name, (low, high) in SUPPORTED.items():
        version = found.get(name)
        minor = _minor(version) if version else None
        if minor is None or not low <= minor <= high:
            wrong.append(f"{name} {version or 'is not installed'}")
    if not wrong:
        return ""
    ranges = " and ".join(f"{n} {'.'.join(map(str, lo))} to {'.'.join(map(str, hi))}"
                          for n, (lo, hi) in SUPPORTED.items())
    pins = " ".join(f"{n}=={v}" for n, v in PINNED.items())
    return (f"The course's lib supports {ranges}; this environment has {', '.join(wrong)}. Some cells may fail. "
            f"To run the tested versions: `pip install {pins}`, then restart the kernel (on Colab: Runtime > "
            f"Restart session) and run the notebook again from its first cell.")


def warn_if_unsupported() -> None:
    message = unsupported()
    if message:
        warnings.warn(message, UnsupportedVersionWarning, stacklevel=3)
