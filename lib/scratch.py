"""Convolution and pooling from scratch, twice: a loop that reads like the definition, and a vectorised
(unfold) version that is fast enough to train with. Both are checked against ``torch.nn.functional``
in ``tests/test_scratch.py`` on random shapes, strides, paddings, dilations and groups.

Layout is PyTorch's: inputs (N, C, H, W), weights (C_out, C_in / groups, kH, kW).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lib.checks import expect_rank, shape_str

IntPair = int | tuple[int, int]


def pair(v: IntPair, name: str = "value") -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(i, int) for i in t):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    return t  # type: ignore[return-value]


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling along one axis:

        out = floor((size + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1

    (``ceil_mode`` rounds up instead, as pooling layers may, but a window may not start in the right padding.)
    """
    span = dilation * (kernel - 1) + 1  # the extent of one (dilated) kernel on the input
    room = size + 2 * padding - span
    if room < 0:
        raise ValueError(f"kernel of extent {span} (kernel {kernel}, dilation {dilation}) does not fit in an "
                         f"input of size {size} with padding {padding}: use a smaller kernel or more padding")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # PyTorch: the last window must start inside the input or the left padding
    return out


def _check_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> None:
    expect_rank(x, 4, "conv2d input", "(N, C_in, H, W)")
    expect_rank(weight, 4, "conv2d weight", "(C_out, C_in / groups, kH, kW)")
    c_in, c_out = x.shape[1], weight.shape[0]
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide both input channels ({c_in}) and output channels ({c_out})")
    if weight.shape[1] * groups != c_in:
        raise ValueError(f"conv2d weight {shape_str(weight)} expects {weight.shape[1] * groups} input channels "
                         f"(C_in / groups = {weight.shape[1]}, groups = {groups}), but the input {shape_str(x)} "
                         f"has {c_in}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"conv2d bias must have shape ({c_out},) to match the weight {shape_str(weight)}, "
                         f"got {shape_str(bias)}")


def conv2d_loop(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: IntPair = 1,
                padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """2-D cross-correlation as six nested loops over the definition (slow; for reading and checking).

    out[n, o, i, j] = bias[o] + sum_{c, u, v} x_pad[n, g*C_in/G + c, i*s + u*d, j*s + v*d] * w[o, c, u, v]
    where g = o // (C_out / G) is the group of output channel o.
    """
    _check_conv(x, weight, bias, groups)
    (sh, sw), (ph, pw), (dh, dw) = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    n, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    oh, ow = output_size(h, kh, sh, ph, dh), output_size(w, kw, sw, pw, dw)
    x = F.pad(x, (pw, pw, ph, ph))
    out = torch.zeros(n, c_out, oh, ow, dtype=x.dtype)
    out_per_group = c_out // groups
    for b in range(n):
        for o in range(c_out):
            first_in = (o // out_per_group) * c_per_group  # this output channel only sees its group's inputs
            for i in range(oh):
                for j in range(ow):
                    acc = bias[o].item() if bias is not None else 0.0
                    for c in range(c_per_group):
                        for u in range(kh):
                            for v in range(kw):
                                acc += x[b, first_in + c, i * sh + u * dh, j * sw + v * dw].item() * weight[o, c, u, v].item()
                    out[b, o, i, j] = acc
    return out


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: IntPair = 1,
           padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """2-D convolution as one matrix multiply per group (im2col with ``F.unfold``); differentiable."""
    _check_conv(x, weight, bias, groups)
    (sh, sw), (ph, pw), (dh, dw) = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    n, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    oh, ow = output_size(h, kh, sh, ph, dh), output_size(w, kw, sw, pw, dw)
    cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))  # (N, C_in*kh*kw, L)
    cols = cols.view(n, groups, c_per_group * kh * kw, oh * ow)                          # (N, G, K, L)
    w_mat = weight.view(groups, c_out // groups, c_per_group * kh * kw)                  # (G, C_out/G, K)
    out = torch.einsum("gok,ngkl->ngol", w_mat, cols).reshape(n, c_out, oh, ow)          # (N, C_out, oh, ow)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out


def _check_pool(x: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int]) -> None:
    expect_rank(x, 4, "pooling input", "(N, C, H, W)")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"pooling padding {padding} must be at most half the kernel {kernel} (as in PyTorch)")


def windows(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int] = (0, 0),
            pad_value: float = 0.0) -> torch.Tensor:
    """All pooling windows, ``pad_value`` in the padding: (N, C, H, W) -> (N, C, oh, ow, kh*kw)."""
    n, c, h, w = x.shape
    oh, ow = output_size(h, kernel[0], stride[0], padding[0]), output_size(w, kernel[1], stride[1], padding[1])
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), value=pad_value)
    win = xp.unfold(2, kernel[0], stride[0]).unfold(3, kernel[1], stride[1])  # (N, C, oh', ow', kh, kw)
    return win[:, :, :oh, :ow].reshape(n, c, oh, ow, kernel[0] * kernel[1])


def max_pool2d(x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0) -> torch.Tensor:
    """Max over each window; padding counts as minus infinity, as in ``F.max_pool2d``."""
    k = pair(kernel_size, "kernel_size")
    s, p = pair(stride if stride is not None else kernel_size, "stride"), pair(padding, "padding")
    _check_pool(x, k, p)
    return windows(x, k, s, p, float("-inf")).amax(-1)


def avg_pool2d(x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               count_include_pad: bool = True) -> torch.Tensor:
    """Mean over each window; with ``count_include_pad=False`` the zeros of the padding are not counted."""
    k = pair(kernel_size, "kernel_size")
    s, p = pair(stride if stride is not None else kernel_size, "stride"), pair(padding, "padding")
    _check_pool(x, k, p)
    total = windows(x, k, s, p, 0.0).sum(-1)
    if count_include_pad:
        return total / (k[0] * k[1])
    ones = torch.ones_like(x[:1, :1])
    return total / windows(ones, k, s, p, 0.0).sum(-1)


def max_pool2d_loop(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Max pooling as loops over the definition (no padding): for reading, not for speed."""
    expect_rank(x, 4, "pooling input", "(N, C, H, W)")
    stride = stride or kernel_size
    n, c, h, w = x.shape
    oh, ow = output_size(h, kernel_size, stride), output_size(w, kernel_size, stride)
    out = torch.empty(n, c, oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * stride:i * stride + kernel_size, j * stride:j * stride + kernel_size]
            out[:, :, i, j] = window.amax(dim=(-2, -1))
    return out


def global_avg_pool2d(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): one number per channel, whatever the spatial size."""
    expect_rank(x, 4, "pooling input", "(N, C, H, W)")
    return x.mean(dim=(-2, -1))
