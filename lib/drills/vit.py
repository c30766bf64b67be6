"""Drills for the Vision Transformer chapter: tokens from patches, the parameters of the patch embedding,
position embeddings, attention, MLP and whole encoder blocks, and what attention costs in MACs and memory.

Notation of the chapter: an H×H image cut into P×P patches gives N = (H/P)² patch tokens, L = N + 1 with
the class token; D is the token width, h the number of heads, d = D/h a head's width, M the MLP's width.
Keys come from these formulas; ``measure`` counts on ``lib.models``' ViT (``VisionTransformer``,
``MultiheadSelfAttention``, ``EncoderBlock``, ``MLP``) built on the ``meta`` device, on torch's own
``nn.MultiheadAttention``, and on torchvision's ``vit_b_16``, ``vit_b_32`` and ``vit_l_16``.
"""
from __future__ import annotations

import functools
import random

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib.counting import count_params
from lib.drills._core import Question, drill
from lib.models import build
from lib.models.blocks import MLP, EncoderBlock, MultiheadSelfAttention
from lib.models.vit import VIT_CONFIGS, ViTConfig, VisionTransformer

# (image size, patch size) pairs of real and course ViTs, and some that interviews like
PATCHINGS = ((224, 16), (224, 32), (224, 14), (224, 8), (384, 16), (384, 32), (256, 16), (256, 8), (512, 16),
             (28, 4), (28, 7), (28, 14), (32, 4), (32, 8), (32, 2), (64, 8), (64, 4), (96, 16), (96, 8), (128, 16))
# (D, heads) of ViT-Ti, S, B, L, H and of the course's vit_tiny_28 / vit_small_28
WIDTHS = ((192, 3), (384, 6), (768, 12), (1024, 16), (1280, 16), (64, 4), (128, 4), (256, 8), (512, 8))
HEAD_WIDTHS = (16, 32, 48, 64, 80, 96, 128)
LN_NOTE = "each LayerNorm has 2 parameters per feature"


def _meta(make):
    """Build a module on the ``meta`` device: shapes and parameter counts, no memory, no arithmetic."""
    with torch.device("meta"):
        return make()


def _vit(image: int, patch: int, dim: int = 64, heads: int = 4, layers: int = 1, mlp: int = 128,
         channels: int = 3, classes: int = 10) -> VisionTransformer:
    cfg = ViTConfig(patch_size=patch, num_layers=layers, num_heads=heads, hidden_dim=dim, mlp_dim=mlp, image_size=image)
    return _meta(lambda: VisionTransformer(cfg, num_classes=classes, in_channels=channels))


def _macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of ``module(x)`` by PyTorch's FLOP counter (FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


def _stored_attention(attn: MultiheadSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The (N, heads, L, L) softmax that ``attn`` computes on ``x``, from its explicit (slow) path."""
    attn.store_attention = True
    try:
        attn(x)
        return attn.attention
    finally:
        attn.store_attention, attn.attention = False, None


def _width(rng: random.Random) -> tuple[int, int]:
    """A token width D and a number of heads h that divides it: D = h·d."""
    heads = rng.choice([2, 3, 4, 6, 8, 12, 16])
    return heads * rng.choice(HEAD_WIDTHS), heads


def _tokens(image: int, patch: int) -> int:
    return (image // patch) ** 2


@drill("vit", "Number of tokens")
def num_tokens(rng: random.Random) -> Question:
    (image, patch), cls = rng.choice(PATCHINGS), rng.choice([True, False])
    n = _tokens(image, patch)
    length = n + cls
    vit = _vit(image, patch)
    x = torch.empty(1, 3, image, image, device="meta")
    return Question(
        prompt=f"A ViT cuts a {image}×{image} image into non-overlapping {patch}×{patch} patches, "
               f"{'and prepends a class token' if cls else 'with no class token'}. How many tokens enter the encoder?",
        answer=length,
        steps=("L = (H/P)²" + (" + 1 (class token)" if cls else ""),
               f"= ({image}/{patch})²" + (" + 1" if cls else "") + f" = {image // patch}²" + (" + 1" if cls else ""),
               f"= {length} tokens"),
        measure=lambda: (vit.forward_features(x).shape[1] if cls
                         else vit.conv_proj(x).flatten(2).shape[-1]),
        unit="tokens",
    )


@drill("vit", "Parameters of the patch embedding")
def patch_embedding_params(rng: random.Random) -> Question:
    (image, patch), (dim, heads), c = rng.choice(PATCHINGS), rng.choice(WIDTHS), rng.choice([1, 3, 3])
    params = c * patch * patch * dim + dim
    return Question(
        prompt=f"A ViT's patch embedding maps each {patch}×{patch} patch of a {c}-channel image to a {dim}-dimensional "
               f"token: a convolution with kernel = stride = {patch}, with bias. How many parameters?",
        answer=params,
        steps=("params = C·P²·D + D (one C·P² → D linear map, shared by every patch)",
               f"= {c}·{patch}²·{dim} + {dim} = {c * patch * patch * dim} + {dim}",
               f"= {params}"),
        measure=lambda: count_params(_vit(image, patch, dim, heads, channels=c).conv_proj),
        unit="parameters",
    )


@drill("vit", "Parameters of the position embeddings")
def position_embedding_params(rng: random.Random) -> Question:
    (image, patch), (dim, heads) = rng.choice(PATCHINGS), rng.choice(WIDTHS)
    n = _tokens(image, patch)
    params = (n + 1) * dim
    return Question(
        prompt=f"A ViT with {patch}×{patch} patches on {image}×{image} images, token width D = {dim} and a class token "
               f"learns one position embedding per token, the class token's included. How many parameters do the "
               f"position embeddings hold?",
        answer=params,
        steps=("params = L·D = ((H/P)² + 1)·D",
               f"= (({image}/{patch})² + 1)·{dim} = {n + 1}·{dim}",
               f"= {params}"),
        measure=lambda: _vit(image, patch, dim, heads).encoder.pos_embedding.numel(),
        unit="parameters",
    )


@drill("vit", "Width of one attention head")
def head_dim(rng: random.Random) -> Question:
    dim, heads = rng.choice(WIDTHS) if rng.random() < 0.5 else _width(rng)
    d = dim // heads
    return Question(
        prompt=f"Multi-head self-attention with token width D = {dim} and h = {heads} heads splits each query, key and "
               f"value into heads. How many dimensions does one head's query vector have?",
        answer=d,
        steps=("d = D / h", f"= {dim} / {heads}", f"= {d} (the scores are divided by √d = {d ** 0.5:.2f})"),
        measure=lambda: _meta(lambda: nn.MultiheadAttention(dim, heads)).head_dim,
        unit="dimensions",
    )


@drill("vit", "Parameters of multi-head self-attention")
def attention_params(rng: random.Random) -> Question:
    dim, heads = rng.choice(WIDTHS) if rng.random() < 0.5 else _width(rng)
    params = 4 * dim * dim + 4 * dim
    return Question(
        prompt=f"A multi-head self-attention layer with token width D = {dim} and {heads} heads: query, key, value and "
               f"output projections, all D → D with bias. How many parameters?",
        answer=params,
        steps=("params = 3·(D² + D) (q, k, v) + (D² + D) (output) = 4D² + 4D; the number of heads does not matter",
               f"= 4·{dim}² + 4·{dim} = {4 * dim * dim} + {4 * dim}",
               f"= {params}"),
        measure=lambda: count_params(_meta(lambda: MultiheadSelfAttention(dim, heads))),
        unit="parameters",
    )


@drill("vit", "Parameters of a transformer MLP")
def mlp_params(rng: random.Random) -> Question:
    dim = 32 * rng.randint(2, 40)
    m = 4 * dim
    params = 2 * dim * m + m + dim
    return Question(
        prompt=f"A ViT block's MLP on tokens of width D = {dim}, with hidden width 4D: Linear D → 4D, GELU, "
               f"Linear 4D → D, both with bias. How many parameters?",
        answer=params,
        steps=("params = (D·4D + 4D) + (4D·D + D) = 8D² + 5D",
               f"= 8·{dim}² + 5·{dim} = {8 * dim * dim} + {5 * dim}",
               f"= {params}"),
        measure=lambda: count_params(_meta(lambda: MLP(dim, m))),
        unit="parameters",
    )


@drill("vit", "Parameters of one encoder block")
def block_params(rng: random.Random) -> Question:
    dim, heads = rng.choice(WIDTHS) if rng.random() < 0.5 else _width(rng)
    params = 12 * dim * dim + 13 * dim
    return Question(
        prompt=f"A pre-norm ViT encoder block with D = {dim}, {heads} heads and MLP width 4D: LayerNorm, "
               f"self-attention (q, k, v, output projections with bias), LayerNorm, MLP (two linear layers with bias); "
               f"{LN_NOTE}. How many parameters?",
        answer=params,
        steps=("params = (4D² + 4D) attention + (8D² + 5D) MLP + 2·2D LayerNorms = 12D² + 13D",
               f"= 12·{dim}² + 13·{dim} = {12 * dim * dim} + {13 * dim}",
               f"= {params}"),
        measure=lambda: count_params(_meta(lambda: EncoderBlock(dim, heads, 4 * dim))),
        unit="parameters",
    )


@drill("vit", "Attention weights computed by one block")
def attention_entries(rng: random.Random) -> Question:
    (image, patch), (dim, heads) = rng.choice(PATCHINGS[:12]), rng.choice(WIDTHS)
    length = _tokens(image, patch) + 1
    entries = heads * length * length
    attn = _meta(lambda: MultiheadSelfAttention(dim, heads))
    return Question(
        prompt=f"A ViT on {image}×{image} images with {patch}×{patch} patches and a class token; its self-attention "
               f"has {heads} heads of D = {dim}. How many attention weights (softmax entries) does one block compute "
               f"for one image, all heads together?",
        answer=entries,
        steps=("entries = h·L², L = (H/P)² + 1 (one L×L matrix per head)",
               f"L = ({image}/{patch})² + 1 = {length}; {heads}·{length}²",
               f"= {entries}"),
        measure=lambda: _stored_attention(attn, torch.empty(1, length, dim, device="meta")).numel(),
        unit="weights",
    )


@functools.lru_cache(maxsize=None)
def _named_vit(name: str) -> VisionTransformer:
    """``lib.models.build(name)`` on the meta device, built once."""
    return _meta(lambda: build(name))


@functools.lru_cache(maxsize=None)
def _reference_vit(name: str) -> nn.Module:
    """torchvision's model of that name where it has one (ViT-B/16: 86,567,656 parameters), else the course's."""
    return _meta(getattr(torchvision.models, name) if hasattr(torchvision.models, name) else lambda: build(name))


def _attention_bytes(name: str, batch: int) -> int:
    """Bytes of the attention matrices that every block of ``name`` computes for a batch (meta device)."""
    model = _named_vit(name)
    x = torch.empty(batch, model.encoder.pos_embedding.shape[1], model.hidden_dim, device="meta")  # (N, L, D)
    return sum(_stored_attention(block.self_attention, x).nbytes for block in model.encoder.layers)


@drill("vit", "Memory of the stored attention matrices")
def attention_memory(rng: random.Random) -> Question:
    name = rng.choice(["vit_b_16", "vit_b_32", "vit_l_16", "vit_tiny_28", "vit_small_28"])
    batch = rng.choice([1, 2, 4, 8, 16, 32, 64, 128, 256])
    cfg = VIT_CONFIGS[name]
    length, size = cfg.seq_length, cfg.image_size
    nbytes = batch * cfg.num_layers * cfg.num_heads * length * length * 4
    return Question(
        prompt=f"`{name}` ({size}×{size} images, {cfg.patch_size}×{cfg.patch_size} patches plus a class token, "
               f"{cfg.num_layers} blocks of {cfg.num_heads} heads) keeps every block's attention matrix in float32 "
               f"(4 bytes) for a batch of {batch}. How many MB (10^6 bytes) is that, to three significant digits?",
        answer=nbytes / 1e6,
        steps=("bytes = N·blocks·h·L²·4, L = (H/P)² + 1",
               f"L = {length}; {batch}·{cfg.num_layers}·{cfg.num_heads}·{length}²·4 = {nbytes}",
               f"= {nbytes / 1e6:.3g} MB"),
        measure=lambda: _attention_bytes(name, batch) / 1e6,
        unit="MB",
        rel_tol=0.01,
    )


@drill("vit", "MACs of one head's QKᵀ")
def qk_macs(rng: random.Random) -> Question:
    (image, patch), (dim, heads) = rng.choice(PATCHINGS), rng.choice(WIDTHS)
    length, d = _tokens(image, patch) + 1, dim // heads
    macs = length * length * d
    q = torch.empty(1, 1, length, d, device="meta")  # (N, one head, L, d)
    return Question(
        prompt=f"A ViT on {image}×{image} images with {patch}×{patch} patches and a class token, D = {dim}, {heads} "
               f"heads. How many MACs does one head's score matrix QKᵀ take, for one image in one block?",
        answer=macs,
        steps=("MACs = L·L·d: L² scores, each a dot product of length d = D/h",
               f"L = ({image}/{patch})² + 1 = {length}, d = {dim}/{heads} = {d}; {length}²·{d}",
               f"= {macs}"),
        measure=lambda: _macs(lambda k: q @ k.transpose(-2, -1), torch.empty_like(q)),
        unit="MACs",
    )


@drill("vit", "MACs of a multi-head self-attention layer")
def attention_macs(rng: random.Random) -> Question:
    (image, patch), (dim, heads) = rng.choice(PATCHINGS), rng.choice(WIDTHS)
    length = _tokens(image, patch) + 1
    proj, scores = 4 * length * dim * dim, 2 * length * length * dim
    attn = _meta(lambda: MultiheadSelfAttention(dim, heads))
    return Question(
        prompt=f"A self-attention layer with D = {dim} and {heads} heads on the tokens of a {image}×{image} image cut "
               f"into {patch}×{patch} patches, plus a class token; batch size 1. How many MACs: the q, k, v and output "
               f"projections, QKᵀ and the weighted sum of the values (softmax not counted)?",
        answer=proj + scores,
        steps=("MACs = 4·L·D² (projections) + 2·L²·D (QKᵀ and A·V, all heads together)",
               f"L = ({image}/{patch})² + 1 = {length}; 4·{length}·{dim}² + 2·{length}²·{dim}",
               f"= {proj} + {scores} = {proj + scores}"),
        measure=lambda: _macs(attn, torch.empty(1, length, dim, device="meta")),
        unit="MACs",
    )


def _vit_parts(c: int, image: int, patch: int, dim: int, layers: int, mlp: int, classes: int) -> tuple[int, ...]:
    """Patch embedding, class token, positions, all blocks, final LayerNorm, head."""
    n = _tokens(image, patch)
    block = 4 * dim * dim + 2 * dim * mlp + mlp + 9 * dim
    return (c * patch * patch * dim + dim, dim, (n + 1) * dim, layers * block, 2 * dim, dim * classes + classes)


@drill("vit", "Parameters of a whole ViT")
def vit_params(rng: random.Random) -> Question:
    if rng.random() < 0.3:
        name = rng.choice(list(VIT_CONFIGS))
        cfg, classes = VIT_CONFIGS[name], 10 if name.endswith("_28") else 1000
        c, label, measure = 1 if name.endswith("_28") else 3, f"`{name}`", lambda: count_params(_reference_vit(name))
    else:
        (image, patch), (dim, heads) = rng.choice(PATCHINGS[9:]), rng.choice(WIDTHS[5:] + ((192, 3), (384, 6)))
        cfg = ViTConfig(patch, rng.randint(2, 8), heads, dim, rng.choice([2, 4]) * dim, image)
        c, classes = rng.choice([1, 3]), rng.choice([10, 100])
        label, measure = "A ViT", lambda: count_params(_meta(lambda: VisionTransformer(cfg, num_classes=classes,
                                                                                          in_channels=c)))
    parts = _vit_parts(c, cfg.image_size, cfg.patch_size, cfg.hidden_dim, cfg.num_layers, cfg.mlp_dim, classes)
    return Question(
        prompt=f"{label}: {cfg.image_size}×{cfg.image_size}×{c} images, {cfg.patch_size}×{cfg.patch_size} patches, "
               f"D = {cfg.hidden_dim}, {cfg.num_layers} pre-norm blocks (LayerNorm, attention, LayerNorm, MLP), "
               f"{cfg.num_heads} heads, MLP width M = {cfg.mlp_dim}, a class token, one learned position per token, "
               f"a final LayerNorm and a linear head to {classes} classes; all linear maps with bias, {LN_NOTE}. "
               f"How many parameters?",
        answer=sum(parts),
        steps=("(C·P²·D + D) + D + (N + 1)·D + blocks·(4D² + 2D·M + M + 9D) + 2D + (D·K + K), N = (H/P)²",
               f"N = {_tokens(cfg.image_size, cfg.patch_size)}: {parts[0]} + {parts[1]} + {parts[2]} + "
               f"{cfg.num_layers}·{parts[3] // cfg.num_layers} + {parts[4]} + {parts[5]}",
               f"= {sum(parts)}"),
        measure=measure,
        unit="parameters",
    )


@drill("vit", "Tokens when the patch size halves")
def patch_halving(rng: random.Random) -> Question:
    patch = rng.choice([4, 8, 14, 16, 32])
    image = patch * rng.randint(2, 24)
    before, after = _tokens(image, patch) + 1, _tokens(image, patch // 2) + 1
    return Question(
        prompt=f"A ViT on {image}×{image} images with {patch}×{patch} patches has {before} tokens, its class token "
               f"included. With {patch // 2}×{patch // 2} patches instead, how many tokens does it have?",
        answer=after,
        steps=("L = (H/P)² + 1: halving P multiplies the patch tokens by 4",
               f"= ({image}/{patch // 2})² + 1 = 4·{before - 1} + 1",
               f"= {after} tokens (attention weights grow from {before}² to {after}², "
               f"{after ** 2 / before ** 2:.1f}×)"),
        measure=lambda: _vit(image, patch // 2).encoder.pos_embedding.shape[1],
        unit="tokens",
    )
