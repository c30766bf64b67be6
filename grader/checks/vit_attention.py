"""The judge of assignment ``vit_attention``: scaled dot-product attention with a mask (Vaswani et al. 2017),
multi-head self-attention, the patch embedding, a pre-norm transformer block and a tiny ViT (Dosovitskiy et al.
2021), written from tensors and ``nn.Linear``, and a short training run on Fashion-MNIST.

Every expected answer comes from PyTorch's own implementations, given the weights that ``lib.report.fill``
draws for the names the task prescribes: ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``,
``F.conv2d`` (a patch embedding is a convolution with kernel and stride P), ``nn.TransformerEncoderLayer``
(``norm_first=True``) and torchvision's ``VisionTransformer``. An answer that is, contains or calls one of them
(or lib's ViT) fails: the test cells report the module classes and the torch functions each answer called
(``lib.report.called``).
"""
from __future__ import annotations

import functools
import random

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from grader.checks.base import (check_result_row, check_rows_retrained, result_table,
                                close, fail, finite, max_diff, ok, shape_str, tensor)
from grader.judge import Cell, Check, check
from lib.report import fill, rand

_FORBIDDEN_CLASSES = {"MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder", "Transformer",
                      "TransformerDecoderLayer", "NonDynamicallyQuantizableLinear"}
_FORBIDDEN_CALLS = ("scaled_dot_product", "multi_head_attention", "transformer_encoder")
_ATOL = 1e-4


def _own_work(out: dict, desc: str) -> None:
    """Fail an answer that calls PyTorch's attention, or is built of its transformer modules, lib's or
    torchvision's (the report's ``calls``, ``modules`` and ``bases``)."""
    for name in list(out.get("bases", [])) + list(out.get("modules", [])):  # the class itself first
        root, _, cls = str(name).rpartition(".")
        if cls in _FORBIDDEN_CLASSES or root.split(".")[0] in ("torchvision", "lib", "timm"):
            fail(f"{desc} uses {name}: build it from tensors, nn.Linear and your own classes")
    called = [str(name) for name in out.get("calls", []) if any(f in str(name) for f in _FORBIDDEN_CALLS)]
    if called:
        fail(f"{desc} calls torch's `{called[0]}`: write the attention yourself, from matrix products and a softmax")


def _state(out: dict, spec: nn.Module, desc: str, layout: str) -> None:
    """The reported state_dict names and shapes are those the task prescribes (``spec``'s)."""
    mine, theirs = out["state"], {k: list(v.shape) for k, v in spec.state_dict().items()}
    missing, unexpected = [k for k in theirs if k not in mine], [k for k in mine if k not in theirs]
    if missing or unexpected:
        fail(f"{desc}: the parameters are named differently from the task's ({layout}): missing {missing[:4]}, "
             f"unexpected {unexpected[:4]}")
    for key, shape in theirs.items():
        if mine[key] != shape:
            hint = ": the patch embedding is an nn.Linear on flattened patches" if key.endswith("proj.weight") else ""
            fail(f"{desc}: {key} has shape {tuple(mine[key])}, expected {tuple(shape)}{hint}")


def _silent(out: dict, desc: str) -> None:
    if out.get("silent"):
        fail(f"{desc}: no gradient reaches {out['silent'][:3]}: every parameter must be on the path to the output")


def _output(out: dict, key: str, expected: torch.Tensor, desc: str, diagnose, tol: float = _ATOL) -> torch.Tensor:
    y = tensor(out[key], desc)
    if y.shape != expected.shape:
        fail(f"{desc}: output {shape_str(y)}, expected {shape_str(expected)}")
    finite(y, desc)
    if not close(y, expected, atol=tol, rtol=tol):
        fail(f"{desc}: differs from PyTorch's with the same weights by up to {max_diff(y, expected):.3g}: {diagnose(y)}")
    return y


def _mask(rng: random.Random, rows: int, cols: int, kind: str | None) -> list | None:
    """A boolean mask as nested lists (True: may attend), with at least one True per row."""
    if kind is None:
        return None
    if kind == "causal":
        return [[j <= i for j in range(cols)] for i in range(rows)]
    mask = [[rng.random() < 0.6 for _ in range(cols)] for _ in range(rows)]
    for row in mask:
        row[rng.randrange(cols)] = True
    return mask


def _seeded(rng: random.Random, cases: list[dict]) -> list[dict]:
    return [dict(case, seed=rng.randrange(2**31)) for case in cases]


def _bool(mask) -> torch.Tensor | None:
    return None if mask is None else torch.tensor(mask, dtype=torch.bool)


# ---- 1. scaled dot-product attention ------------------------------------------------------------------------

def attention_cases(rng: random.Random) -> list[dict]:
    lq, lk, d = rng.randint(2, 9), rng.randint(2, 9), rng.choice([2, 4, 8, 16])
    batch = [rng.randint(1, 3) for _ in range(rng.randint(0, 2))]
    drawn = dict(q=[*batch, lq, d], k=[*batch, lk, d], v=[*batch, lk, rng.randint(1, 6)], scale=1.0,
                 mask=_mask(rng, lq, lk, rng.choice([None, "random"])))
    return _seeded(rng, [
        dict(q=[2, 5, 8], k=[2, 5, 8], v=[2, 5, 8], scale=1.0, mask=None),
        dict(q=[2, 3, 4, 16], k=[2, 3, 6, 16], v=[2, 3, 6, 5], scale=1.0, mask=None),
        dict(q=[1, 2, 6, 4], k=[1, 2, 6, 4], v=[1, 2, 6, 4], scale=1.0, mask=_mask(rng, 6, 6, "causal")),
        dict(q=[3, 4, 8], k=[3, 7, 8], v=[3, 7, 3], scale=1.0, mask=_mask(rng, 4, 7, "random")),
        dict(q=[2, 3, 32], k=[2, 5, 32], v=[2, 5, 4], scale=6.0, mask=None),
        drawn])


def attention_inputs(c: dict) -> tuple:
    """The case's q, k, v (what the test cell builds with lib.report.rand) and mask, in float64."""
    s = c["scale"]
    q = rand(c["q"], c["seed"], low=-s, high=s).double()
    k = rand(c["k"], c["seed"] + 1, low=-s, high=s).double()
    v = rand(c["v"], c["seed"] + 2, low=-1.0).double()
    return q, k, v, _bool(c["mask"])


def _attention_desc(c: dict) -> str:
    return (f"attention(q {shape_str(c['q'])}, k {shape_str(c['k'])}, v {shape_str(c['v'])}"
            + (", mask)" if c["mask"] is not None else ")") + (f" with entries up to {c['scale']:g}" if c["scale"] != 1 else ""))


def _attention_variants(q, k, v, mask) -> dict[str, torch.Tensor]:
    """The usual mistakes' outputs, to name the one an answer made."""
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1)
    out = {
        "divide the scores by sqrt(d), the width of a query (here sqrt(%d)); without it the softmax saturates" % d:
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0),
        "divide by sqrt(d), not by d": F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / d),
        "take the softmax over the keys (the last dimension), so that each query's weights sum to 1":
            torch.where(mask, scores / d ** 0.5, -torch.inf).softmax(-2) @ v if mask is not None
            else (scores / d ** 0.5).softmax(-2) @ v,
    }
    if mask is not None:
        if (~mask).any(-1).all():  # every query keeps a key when the mask is read the wrong way round
            out["True in the mask means 'may attend' (as in F.scaled_dot_product_attention): you inverted it"] = \
                F.scaled_dot_product_attention(q, k, v, attn_mask=~mask)
        out["set the masked scores to -inf before the softmax (a score of 0 still gets weight)"] = \
            (torch.where(mask, scores / d ** 0.5, 0.0).softmax(-1)) @ v
        out["mask before the softmax: zeroing weights after it leaves rows that do not sum to 1"] = \
            ((scores / d ** 0.5).softmax(-1) * mask) @ v
    return out


def _diagnose(y: torch.Tensor, variants: dict[str, torch.Tensor], default: str) -> str:
    return next((hint for hint, v in variants.items() if v.shape == y.shape and close(y, v, atol=1e-4, rtol=1e-4)),
                default)


def _check_attention(c: dict, result) -> None:
    desc = _attention_desc(c)
    out = ok(result, desc)
    _own_work(out, desc)
    q, k, v, mask = attention_inputs(c)
    for t in (q, k, v):
        t.requires_grad_(True)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    y = tensor(out["y"], desc)
    if y.shape != expected.shape:
        fail(f"{desc}: output {shape_str(y)}, expected {shape_str(expected)}: one row per query, one column per "
             f"value feature, with q's leading dimensions")
    if not torch.isfinite(y).all():
        fail(f"{desc} returned NaN or inf: use torch.softmax (or subtract each row's maximum before exp), and give "
             f"masked scores -inf only where a row has another key left")
    with torch.no_grad():
        variants = _attention_variants(q, k, v, mask)
    if not close(y, expected, atol=_ATOL, rtol=_ATOL):
        fail(f"{desc}: differs from softmax(q k^T / sqrt(d)) v by up to {max_diff(y, expected):.3g}: "
             + _diagnose(y, variants, "compute softmax(q @ k.transpose(-2, -1) / sqrt(d)) @ v, masked scores at -inf"))
    (expected * rand(expected.shape, c["seed"] + 3, low=-1.0).double()).sum().backward()
    for name, t in (("q", q), ("k", k), ("v", v)):
        if out[f"d{name}"] is None:
            fail(f"{desc}: no gradient reaches {name}: compute the output from {name} with differentiable torch "
                 f"operations (no .detach(), .numpy() or in-place writes on the inputs)")
        if not close(tensor(out[f"d{name}"], desc), t.grad, atol=1e-3, rtol=1e-3):
            fail(f"{desc}: the gradient with respect to {name} is not attention's: compute the output with "
                 f"differentiable torch operations")


def judge_attention(cases: list[dict], results: list) -> list[Check]:
    return [check(_attention_desc(c), _check_attention, c, r) for c, r in zip(cases, results)]


# ---- 2. multi-head self-attention against nn.MultiheadAttention ---------------------------------------------

class _SelfAttentionSpec(nn.Module):
    """The names and shapes the task prescribes (``fill`` gives them the answer's numbers)."""

    def __init__(self, dim: int):
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)


def _torch_mha(spec: _SelfAttentionSpec, heads: int) -> nn.MultiheadAttention:
    dim = spec.proj.in_features
    mha = nn.MultiheadAttention(dim, heads, batch_first=True).double()
    s = spec.state_dict()
    mha.load_state_dict({"in_proj_weight": s["qkv.weight"], "in_proj_bias": s["qkv.bias"],
                         "out_proj.weight": s["proj.weight"], "out_proj.bias": s["proj.bias"]})
    return mha.eval()


def self_attention_cases(rng: random.Random) -> list[dict]:
    heads = rng.choice([1, 2, 3, 4, 6, 8])
    length = rng.randint(3, 12)
    drawn = dict(dim=heads * rng.choice([2, 3, 4, 8]), heads=heads, n=rng.randint(1, 3), length=length,
                 mask=_mask(rng, length, length, rng.choice([None, "causal", "random"])))
    return _seeded(rng, [
        dict(dim=8, heads=2, n=2, length=5, mask=None),
        dict(dim=12, heads=3, n=1, length=7, mask=_mask(rng, 7, 7, "causal")),
        dict(dim=16, heads=4, n=2, length=6, mask=None),
        dict(dim=16, heads=1, n=2, length=4, mask=None),
        dict(dim=24, heads=6, n=1, length=9, mask=_mask(rng, 9, 9, "random")),
        drawn])


def _self_attention_desc(c: dict) -> str:
    return (f"SelfAttention({c['dim']}, num_heads={c['heads']}) on {shape_str((c['n'], c['length'], c['dim']))}"
            + (" with a mask" if c["mask"] is not None else ""))


def _heads_variants(spec: _SelfAttentionSpec, heads: int, x: torch.Tensor, mask) -> dict[str, torch.Tensor]:
    """Multi-head attention done wrong in the usual ways, from the same weights."""
    n, length, dim = x.shape
    q, k, v = spec.qkv(x).chunk(3, dim=-1)  # (N, L, D) each

    def mha(split, scale_width, project=True):
        o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask, scale=scale_width ** -0.5)
        o = o.transpose(1, 2).reshape(n, length, dim)
        return spec.proj(o) if project else o

    by_head = lambda t: t.view(n, length, heads, dim // heads).transpose(1, 2)  # noqa: E731 (N, h, L, d)
    interleaved = lambda t: t.view(n, length, dim // heads, heads).permute(0, 3, 1, 2)  # noqa: E731
    one = lambda t: t.unsqueeze(1)  # noqa: E731 (N, 1, L, D)
    return {
        "scale by the width of one head, sqrt(dim / num_heads), not sqrt(dim)": mha(by_head, dim),
        "this is one head over all features: split q, k and v into num_heads heads of dim / num_heads features":
            F.scaled_dot_product_attention(one(q), one(k), one(v), attn_mask=mask, scale=(dim // heads) ** -0.5)
            .squeeze(1) @ spec.proj.weight.T + spec.proj.bias,
        "head h takes the features h*d to (h+1)*d (view(N, L, num_heads, d)), not every num_heads-th feature":
            mha(interleaved, dim // heads),
        "apply the output projection `proj` to the concatenated heads": mha(by_head, dim // heads, project=False),
    }


def _check_self_attention(c: dict, result) -> None:
    desc = _self_attention_desc(c)
    out = ok(result, desc)
    _own_work(out, desc)
    dim, heads = c["dim"], c["heads"]
    spec = fill(_SelfAttentionSpec(dim), c["seed"]).double()
    _state(out, spec, desc, "qkv = nn.Linear(dim, 3 * dim), proj = nn.Linear(dim, dim)")
    x = rand((c["n"], c["length"], dim), c["seed"], low=-1.0).double()
    mask = _bool(c["mask"])
    with torch.no_grad():
        expected = _torch_mha(spec, heads)(x, x, x, attn_mask=None if mask is None else ~mask, need_weights=False)[0]
        variants = _heads_variants(spec, heads, x, mask)
    _output(out, "y", expected, desc, lambda y: _diagnose(
        y, variants, "project x to q, k, v with qkv (in that order), split into heads, attend, merge, project"))
    _silent(out, desc)


def judge_self_attention(cases: list[dict], results: list) -> list[Check]:
    return [check(_self_attention_desc(c), _check_self_attention, c, r) for c, r in zip(cases, results)]


# ---- 3. the patch embedding against a strided convolution ---------------------------------------------------

class _PatchSpec(nn.Module):
    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_channels * patch_size ** 2, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // patch_size) ** 2, dim))


def _embed(spec: _PatchSpec, x: torch.Tensor, patch: int, *, order: str = "chw") -> torch.Tensor:
    """Tokens by a convolution with kernel and stride ``patch`` whose kernels are the rows of ``proj``;
    ``order`` (``hwc``: channels last; ``cols``: patches column by column) gives the usual mistakes."""
    dim, c = spec.proj.out_features, x.shape[1]
    w = spec.proj.weight
    w = w.view(dim, patch, patch, c).permute(0, 3, 1, 2) if order == "hwc" else w.view(dim, c, patch, patch)
    t = F.conv2d(x, w, spec.proj.bias, stride=patch)  # (N, D, H/P, W/P)
    t = (t.transpose(2, 3) if order == "cols" else t).flatten(2).transpose(1, 2)  # (N, L, D)
    return torch.cat([spec.cls_token.expand(x.shape[0], -1, -1), t], dim=1) + spec.pos_embed  # (N, 1 + L, D)


def patch_embed_cases(rng: random.Random) -> list[dict]:
    p = rng.choice([2, 3, 4, 7])
    drawn = dict(image_size=p * rng.randint(2, 6), patch_size=p, in_channels=rng.choice([1, 2, 3]),
                 dim=rng.randint(4, 24), n=rng.randint(1, 3))
    return _seeded(rng, [
        dict(image_size=28, patch_size=4, in_channels=1, dim=16, n=2),
        dict(image_size=32, patch_size=8, in_channels=3, dim=24, n=1),
        dict(image_size=12, patch_size=3, in_channels=2, dim=8, n=2),
        dict(image_size=28, patch_size=7, in_channels=3, dim=12, n=1),
        drawn])


def _patch_desc(c: dict) -> str:
    return (f"PatchEmbed({c['image_size']}, {c['patch_size']}, in_channels={c['in_channels']}, dim={c['dim']}) "
            f"on {shape_str((c['n'], c['in_channels'], c['image_size'], c['image_size']))}")


def _check_patch_embed(c: dict, result) -> None:
    desc = _patch_desc(c)
    out = ok(result, desc)
    _own_work(out, desc)
    size, p, ch = c["image_size"], c["patch_size"], c["in_channels"]
    spec = fill(_PatchSpec(size, p, ch, c["dim"]), c["seed"]).double()
    _state(out, spec, desc, "proj = nn.Linear(C * P * P, dim), cls_token (1, 1, dim), pos_embed (1, 1 + L, dim)")
    x = rand((c["n"], ch, size, size), c["seed"], low=-1.0).double()
    with torch.no_grad():
        expected = _embed(spec, x, p)
        variants = {
            "flatten each patch in the order (C, P, P), channel first, as a Conv2d's kernel is stored":
                _embed(spec, x, p, order="hwc"),
            "order the patches row by row (left to right, then top to bottom), as flatten(2) of (N, D, H/P, W/P) does":
                _embed(spec, x, p, order="cols"),
            "add pos_embed to every token, the class token included": _embed(spec, x, p) - spec.pos_embed,
        }
    _output(out, "y", expected, desc, lambda y: _diagnose(
        y, variants, "cut (N, C, H, W) into (N, L, C*P*P) patches, project with proj, put cls_token first, add pos_embed"))
    _silent(out, desc)


def judge_patch_embed(cases: list[dict], results: list) -> list[Check]:
    return [check(_patch_desc(c), _check_patch_embed, c, r) for c, r in zip(cases, results)]


# ---- 4. the pre-norm block against nn.TransformerEncoderLayer(norm_first=True) ------------------------------

class _BlockSpec(nn.Module):
    def __init__(self, dim: int, mlp_dim: int):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(dim, eps=1e-6), _SelfAttentionSpec(dim), nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))


def _encoder_layer(spec: _BlockSpec, heads: int, *, norm_first: bool = True, activation: str = "gelu") -> nn.Module:
    dim, mlp_dim = spec.mlp[0].in_features, spec.mlp[0].out_features
    layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=0.0, activation=activation, layer_norm_eps=1e-6,
                                       batch_first=True, norm_first=norm_first).double()
    s = spec.state_dict()
    names = {"self_attn.in_proj_": "attn.qkv.", "self_attn.out_proj.": "attn.proj.", "linear1.": "mlp.0.",
             "linear2.": "mlp.2.", "norm1.": "ln1.", "norm2.": "ln2."}
    theirs = {}
    for key in layer.state_dict():
        prefix = next(p for p in names if key.startswith(p))
        theirs[key] = s[names[prefix] + key[len(prefix):]]
    layer.load_state_dict(theirs)
    return layer.eval()


def block_cases(rng: random.Random) -> list[dict]:
    heads, length = rng.choice([1, 2, 3, 4]), rng.randint(3, 10)
    dim = heads * rng.choice([2, 4, 8])
    drawn = dict(dim=dim, heads=heads, mlp_dim=dim * rng.choice([1, 2, 4]), n=rng.randint(1, 3), length=length,
                 mask=_mask(rng, length, length, rng.choice([None, "causal"])))
    return _seeded(rng, [
        dict(dim=16, heads=2, mlp_dim=32, n=2, length=5, mask=None),
        dict(dim=24, heads=3, mlp_dim=48, n=1, length=7, mask=_mask(rng, 7, 7, "causal")),
        dict(dim=8, heads=1, mlp_dim=16, n=2, length=4, mask=None),
        dict(dim=32, heads=4, mlp_dim=64, n=1, length=9, mask=_mask(rng, 9, 9, "random")),
        drawn])


def _block_desc(c: dict) -> str:
    return (f"Block({c['dim']}, num_heads={c['heads']}, mlp_dim={c['mlp_dim']}) on "
            f"{shape_str((c['n'], c['length'], c['dim']))}" + (" with a mask" if c["mask"] is not None else ""))


def _check_block(c: dict, result) -> None:
    desc = _block_desc(c)
    out = ok(result, desc)
    _own_work(out, desc)
    spec = fill(_BlockSpec(c["dim"], c["mlp_dim"]), c["seed"]).double()
    _state(out, spec, desc, "ln1, attn (your SelfAttention), ln2, mlp = Sequential(Linear, GELU, Linear)")
    x = rand((c["n"], c["length"], c["dim"]), c["seed"], low=-1.0).double()
    mask = _bool(c["mask"])
    src_mask = None if mask is None else ~mask
    with torch.no_grad():
        expected = _encoder_layer(spec, c["heads"])(x, src_mask=src_mask)
        variants = {
            "this is the original transformer's post-norm block; ViT normalises before each sub-layer: "
            "x = x + attn(ln1(x)), then x = x + mlp(ln2(x))": _encoder_layer(spec, c["heads"], norm_first=False)(x, src_mask=src_mask),
            "the MLP's activation is GELU (nn.GELU()), not ReLU": _encoder_layer(spec, c["heads"], activation="relu")(x, src_mask=src_mask),
        }
    _output(out, "y", expected, desc, lambda y: _diagnose(
        y, variants, "x = x + attn(ln1(x), mask), then x = x + mlp(ln2(x)), nothing after the sums"))
    _silent(out, desc)


def judge_block(cases: list[dict], results: list) -> list[Check]:
    return [check(_block_desc(c), _check_block, c, r) for c, r in zip(cases, results)]


# ---- 5. the tiny ViT against torchvision's VisionTransformer ------------------------------------------------

class _ViTSpec(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.patch_embed = _PatchSpec(c["image_size"], c["patch_size"], c["in_channels"], c["dim"])
        self.blocks = nn.Sequential(*[_BlockSpec(c["dim"], c["mlp_dim"]) for _ in range(c["depth"])])
        self.norm, self.head = nn.LayerNorm(c["dim"], eps=1e-6), nn.Linear(c["dim"], c["num_classes"])


@functools.lru_cache(maxsize=16)
def _torchvision_vit(key: tuple, seed: int) -> tuple[nn.Module, _ViTSpec]:
    """torchvision's ViT (its patch projection for ``in_channels``) with the weights ``fill`` gives the spec."""
    c = dict(key)
    spec = fill(_ViTSpec(c), seed).double()
    twin = torchvision.models.VisionTransformer(c["image_size"], c["patch_size"], c["depth"], c["heads"], c["dim"],
                                                c["mlp_dim"], num_classes=c["num_classes"])
    twin.conv_proj = nn.Conv2d(c["in_channels"], c["dim"], c["patch_size"], c["patch_size"])
    s, p = spec.state_dict(), c["patch_size"]
    state = {"class_token": s["patch_embed.cls_token"], "encoder.pos_embedding": s["patch_embed.pos_embed"],
             "conv_proj.weight": s["patch_embed.proj.weight"].view(c["dim"], c["in_channels"], p, p),
             "conv_proj.bias": s["patch_embed.proj.bias"], "encoder.ln.weight": s["norm.weight"],
             "encoder.ln.bias": s["norm.bias"], "heads.head.weight": s["head.weight"], "heads.head.bias": s["head.bias"]}
    ours = {"ln_1.": "ln1.", "self_attention.in_proj_": "attn.qkv.", "self_attention.out_proj.": "attn.proj.",
            "ln_2.": "ln2.", "mlp.0.": "mlp.0.", "mlp.3.": "mlp.2."}
    for i in range(c["depth"]):
        for theirs, mine in ours.items():
            for leaf in ("weight", "bias"):
                state[f"encoder.layers.encoder_layer_{i}.{theirs}{leaf}"] = s[f"blocks.{i}.{mine}{leaf}"]
    twin.load_state_dict(state)
    return twin.double().eval(), spec


def tiny_vit_cases(rng: random.Random) -> list[dict]:
    p, heads = rng.choice([4, 7]), rng.choice([1, 2, 4])
    dim = heads * rng.choice([4, 8])
    drawn = dict(image_size=28, patch_size=p, in_channels=rng.choice([1, 3]), num_classes=rng.randint(2, 12), dim=dim,
                 depth=rng.randint(1, 3), heads=heads, mlp_dim=2 * dim, n=rng.randint(1, 3))
    return _seeded(rng, [
        dict(image_size=28, patch_size=7, in_channels=1, num_classes=10, dim=16, depth=2, heads=2, mlp_dim=32, n=2),
        dict(image_size=32, patch_size=8, in_channels=3, num_classes=5, dim=24, depth=1, heads=3, mlp_dim=48, n=1),
        dict(image_size=28, patch_size=4, in_channels=1, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, n=1),
        drawn])


def _vit_desc(c: dict) -> str:
    return (f"TinyViT(image_size={c['image_size']}, patch_size={c['patch_size']}, in_channels={c['in_channels']}, "
            f"num_classes={c['num_classes']}, dim={c['dim']}, depth={c['depth']}, num_heads={c['heads']}, "
            f"mlp_dim={c['mlp_dim']})")


def _check_tiny_vit(c: dict, result) -> None:
    desc = _vit_desc(c)
    out = ok(result, desc)
    _own_work(out, desc)
    key = tuple(sorted((k, v) for k, v in c.items() if k not in ("seed", "n")))
    twin, spec = _torchvision_vit(key, c["seed"])
    _state(out, spec, desc, "patch_embed (your PatchEmbed), blocks = Sequential of your Blocks, norm, head")
    x = rand((c["n"], c["in_channels"], c["image_size"], c["image_size"]), c["seed"], low=-1.0).double()
    with torch.no_grad():
        expected = twin(x)
        blocks = twin.encoder.layers(_embed(spec.patch_embed, x, c["patch_size"]))  # (N, 1 + L, dim), before `norm`
        variants = {"classify the class token, x[:, 0], not the mean of the tokens":
                        twin.heads(twin.encoder.ln(blocks).mean(1)),
                    "apply the final LayerNorm `norm` before the head": twin.heads(blocks[:, 0])}
    _output(out, "y", expected, desc, lambda y: _diagnose(
        y, variants, "patch_embed -> blocks -> norm -> head(x[:, 0]); compare your blocks with the test of part 4"),
        tol=1e-3)
    _silent(out, desc)


def judge_tiny_vit(cases: list[dict], results: list) -> list[Check]:
    return [check(_vit_desc(c), _check_tiny_vit, c, r) for c, r in zip(cases, results)]


# ---- 6. training: one row trained again --------------------------------------------------------------------

PATCH_ROWS = ("14x14 patches (4 tokens)", "7x7 patches (16 tokens)", "4x4 patches (49 tokens)")


def training_cases(rng: random.Random) -> list[dict]:
    return [dict(row=rng.choice(PATCH_ROWS), retrain=dict(train_subset=128, val_subset=128))]


def _check_training(c: dict, result) -> None:
    out = ok(result, "the experiment")
    for name, model in out["models"].items():
        _own_work(model, f"make_vit({name!r})")
    results = result_table(out, PATCH_ROWS, "network per patch size")
    for name in PATCH_ROWS:
        check_result_row(name, results[name], out["params"][name], "make_vit gives")
    check_rows_retrained(results, out["again"], protocol="seed_everything(0), loaders(), fit(make_vit(patch), ..., "
                         "epochs=1, lr=2e-3, progress=False)")


def judge_training(cases: list[dict], results: list) -> list[Check]:
    return [check("the results of every patch size, one row trained again", _check_training, cases[0], results[0])]


CELLS = {
    "test_attention": Cell(attention_cases, judge_attention),
    "test_self_attention": Cell(self_attention_cases, judge_self_attention),
    "test_patch_embed": Cell(patch_embed_cases, judge_patch_embed),
    "test_block": Cell(block_cases, judge_block),
    "test_tiny_vit": Cell(tiny_vit_cases, judge_tiny_vit),
    "test_training": Cell(training_cases, judge_training),
}
