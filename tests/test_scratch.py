"""From-scratch convolution and pooling against torch.nn.functional, on many random settings."""
import random

import pytest
import torch
import torch.nn.functional as F

from lib import scratch


def random_conv_case(seed: int):
    rng = random.Random(seed)
    groups = rng.choice([1, 1, 2, 3])
    c_in, c_out = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    k = (rng.randint(1, 4), rng.randint(1, 4))
    stride, padding, dilation = (rng.randint(1, 3), rng.randint(1, 3)), (rng.randint(0, 2), rng.randint(0, 2)), (rng.randint(1, 2), rng.randint(1, 2))
    # an input large enough for the dilated kernel
    h = rng.randint(max(1, dilation[0] * (k[0] - 1) + 1 - 2 * padding[0]), 11)
    w = rng.randint(max(1, dilation[1] * (k[1] - 1) + 1 - 2 * padding[1]), 11)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rng.randint(1, 3), c_in, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(c_out, c_in // groups, *k, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64) if rng.random() < 0.7 else None
    return x, weight, bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("seed", range(60))
def test_conv2d_unfold_matches_torch_values_and_gradients(seed):
    x, weight, bias, kw = random_conv_case(seed)
    leaves = [t.requires_grad_() for t in (x, weight, bias) if t is not None]
    ours, ref = scratch.conv2d(x, weight, bias, **kw), F.conv2d(x, weight, bias, **kw)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, leaves, g), torch.autograd.grad(ref, leaves, g))


@pytest.mark.parametrize("seed", range(12))
def test_conv2d_loop_matches_torch(seed):
    x, weight, bias, kw = random_conv_case(seed)
    x = x[:1, :, :7, :7] if x.shape[-1] >= 7 and x.shape[-2] >= 7 else x[:1]
    torch.testing.assert_close(scratch.conv2d_loop(x, weight, bias, **kw), F.conv2d(x, weight, bias, **kw))


@pytest.mark.parametrize("seed", range(40))
def test_pooling_matches_torch(seed):
    rng = random.Random(seed)
    k = rng.randint(1, 4)
    stride = rng.choice([None, 1, 2, 3])
    padding = rng.randint(0, k // 2)
    h, w = rng.randint(k, 12), rng.randint(k, 12)
    x = torch.randn(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    for ours, ref in [
        (scratch.max_pool2d(x, k, stride, padding), F.max_pool2d(x, k, stride, padding)),
        (scratch.avg_pool2d(x, k, stride, padding), F.avg_pool2d(x, k, stride, padding)),
        (scratch.avg_pool2d(x, k, stride, padding, count_include_pad=False),
         F.avg_pool2d(x, k, stride, padding, count_include_pad=False)),
    ]:
        torch.testing.assert_close(ours, ref)
        g = torch.randn_like(ref)
        torch.testing.assert_close(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    s = stride or k
    if padding == 0:
        torch.testing.assert_close(scratch.max_pool2d_loop(x.detach(), k, s), F.max_pool2d(x.detach(), k, s))
    torch.testing.assert_close(scratch.global_avg_pool2d(x), F.adaptive_avg_pool2d(x, 1).flatten(2).squeeze(-1))


@pytest.mark.parametrize("seed", range(50))
def test_output_size_formula_matches_torch_layers(seed):
    rng = random.Random(seed)
    size, k, s, p, d = rng.randint(5, 40), rng.randint(1, 5), rng.randint(1, 4), rng.randint(0, 3), rng.randint(1, 3)
    if d * (k - 1) + 1 > size + 2 * p:
        with pytest.raises(ValueError, match="does not fit"):
            scratch.output_size(size, k, s, p, d)
        return
    conv = torch.nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
    assert scratch.output_size(size, k, s, p, d) == conv(torch.zeros(1, 1, size, size)).shape[-1]
    if p <= k // 2:
        for ceil_mode in (False, True):
            pool = torch.nn.MaxPool2d(k, s, p, ceil_mode=ceil_mode)
            assert scratch.output_size(size, k, s, p, ceil_mode=ceil_mode) == pool(torch.zeros(1, 1, size, size)).shape[-1]


def test_known_output_sizes():
    # AlexNet's first layer: 227 -> 55; VGG's 3x3/1/1 keeps the size; a 2x2/2 pool halves it.
    assert scratch.output_size(227, 11, 4) == 55
    assert scratch.output_size(224, 3, 1, 1) == 224
    assert scratch.output_size(224, 2, 2) == 112
    assert scratch.output_size(224, 7, 2, 3) == 112  # ResNet's stem


@pytest.mark.parametrize("x_shape, w_shape, groups, message", [
    ((3, 28, 28), (8, 3, 3, 3), 1, r"4-D.*got 3-D.*unsqueeze\(0\)"),
    ((1, 3, 28, 28), (8, 1, 3, 3), 1, r"expects 1 input channels.*has 3"),
    ((1, 4, 8, 8), (6, 2, 3, 3), 3, r"groups=3 must divide"),
    ((1, 3, 4, 4), (8, 3, 7, 7), 1, r"does not fit in an input of size 4"),
])
def test_conv2d_bad_input_names_the_shapes(x_shape, w_shape, groups, message):
    with pytest.raises(ValueError, match=message):
        scratch.conv2d(torch.zeros(x_shape), torch.zeros(w_shape), groups=groups)


def test_bad_bias_and_pooling_input():
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        scratch.conv2d(torch.zeros(1, 3, 8, 8), torch.zeros(8, 3, 3, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\).*2-D.*x\[None, None\]"):
        scratch.max_pool2d(torch.zeros(8, 8), 2)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        scratch.max_pool2d([[1.0]], 2)
