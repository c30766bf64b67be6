"""lib.book.glue stores plain Python numbers: MyST-NB formats `{glue:text}` values from their repr, and the
repr of a NumPy scalar (np.float64(0.5)) fails to format (a build warning, an error under -W)."""
import numpy as np
import torch

from lib.book import plain


def test_numpy_and_torch_scalars_become_python_numbers():
    for value, expected in [(np.float64(0.25), 0.25), (np.int64(3), 3), (np.float32(0.5), 0.5),
                            (torch.tensor(2.5), 2.5), (np.array(7.0), 7.0)]:
        got = plain(value)
        assert type(got) in (float, int) and got == expected and repr(got) in ("0.25", "3", "0.5", "2.5", "7.0")


def test_other_values_are_unchanged():
    arr, text = np.arange(3), "ResNet-56"
    assert plain(arr) is arr and plain(text) is text and plain(1.5) == 1.5
