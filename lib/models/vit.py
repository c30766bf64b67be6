"""Vision Transformer (Dosovitskiy et al. 2021): patches as tokens, a class token, learned positions,
pre-norm transformer blocks, and a linear head on the class token.

Sizes are rows of the paper's Table 1 (``VIT_CONFIGS``); the ``*_28`` rows are this course's small
configurations that train on 28x28 Fashion-MNIST on a CPU. Module names match torchvision
(``conv_proj``, ``class_token``, ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_i``,
``encoder.ln``, ``heads.head``), so its state_dicts load with ``strict=True``.

A ViT is built for one image size (its position embeddings have one entry per patch).
``small_input=True`` builds ViT-B/L for 32x32 images (or ``image_size=28``) with 4x4 patches.

Attention maps: ``attention_maps(model, x)`` returns every block's (N, heads, L, L) attention.
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from lib.checks import shape_str
from lib.models.blocks import EncoderBlock, MultiheadSelfAttention
from lib.models.registry import register_model, require_small_input
from lib.models.base import ImageClassifier, init_weights, norm_identity


@dataclass(frozen=True)
class ViTConfig:
    """One row of Dosovitskiy et al. 2021, Table 1, plus the patch and image size."""

    patch_size: int  # P: the image is cut into (image_size / P)^2 patches of P x P pixels
    num_layers: int  # transformer blocks
    num_heads: int
    hidden_dim: int  # D, the token width
    mlp_dim: int  # hidden width of each block's MLP (4D in the paper)
    image_size: int = 224

    @property
    def seq_length(self) -> int:
        """L: one token per patch, plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1


VIT_CONFIGS: dict[str, ViTConfig] = {
    "vit_b_16": ViTConfig(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
    "vit_b_32": ViTConfig(patch_size=32, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
    "vit_l_16": ViTConfig(patch_size=16, num_layers=24, num_heads=16, hidden_dim=1024, mlp_dim=4096),
    # This course's CPU-sized ViTs for 28x28 images: 7x7 = 49 patches of 4x4 pixels.
    "vit_tiny_28": ViTConfig(patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128, image_size=28),
    "vit_small_28": ViTConfig(patch_size=4, num_layers=6, num_heads=4, hidden_dim=128, mlp_dim=256, image_size=28),
}


class Encoder(nn.Module):
    """Adds the learned position embeddings, runs the blocks, and normalises the result."""

    def __init__(self, cfg: ViTConfig, *, dropout: float = 0.0, attention_dropout: float = 0.0):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, cfg.seq_length, cfg.hidden_dim))  # (1, L, D)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(cfg.hidden_dim, cfg.num_heads, cfg.mlp_dim, dropout=dropout,
                                                attention_dropout=attention_dropout))
            for i in range(cfg.num_layers)
        ))
        self.ln = nn.LayerNorm(cfg.hidden_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D) -> (N, L, D)
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(ImageClassifier):
    """(N, C, H, W) -> patches (N, D, H/P, W/P) -> tokens (N, L, D) with L = HW/P^2 + 1 -> encoder
    -> class token (N, D) -> head (N, num_classes)."""

    def __init__(self, cfg: ViTConfig, *, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0,
                 attention_dropout: float = 0.0, name: str = "ViT"):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"{name}: image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        self.cfg, self.name, self.in_channels = cfg, name, in_channels
        self.conv_proj = nn.Conv2d(in_channels, cfg.hidden_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_dim))  # (1, 1, D)
        self.encoder = Encoder(cfg, dropout=dropout, attention_dropout=attention_dropout)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(cfg.hidden_dim, num_classes)))
        self._init_weights()

    # The sizes are read from the config, stored once.
    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def min_size(self) -> int:  # the input check's minimum: the size it was built for
        return self.cfg.image_size

    @property
    def patch_size(self) -> int:
        return self.cfg.patch_size

    @property
    def hidden_dim(self) -> int:
        return self.cfg.hidden_dim

    @property
    def seq_length(self) -> int:
        return self.cfg.seq_length

    def _init_weights(self) -> None:
        """torchvision's scheme: patch projection truncated-normal with std sqrt(1/fan_in); positions
        N(0, 0.02) (from BERT); class token 0; attention Xavier-uniform; MLP Xavier-uniform with biases
        N(0, 1e-6); LayerNorm = identity; and a zero head, so training starts from uniform predictions."""
        fan_in = self.conv_proj.in_channels * self.patch_size ** 2
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        nn.init.normal_(self.encoder.pos_embedding, std=0.02)
        nn.init.zeros_(self.class_token)
        for block in self.encoder.layers:
            block.self_attention.reset_parameters()
            for m in block.mlp.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.normal_(m.bias, std=1e-6)
        init_weights(self, {nn.LayerNorm: norm_identity})
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def stages(self) -> dict[str, nn.Module]:
        """``embedding`` (patches, class token, positions), ``encoder_layer_0`` .. (the last one with the
        final LayerNorm), ``head`` (see ``lib.models.registry``)."""
        layers = dict(self.encoder.layers.named_children())
        last = list(layers)[-1]
        layers[last] = nn.Sequential(layers[last], self.encoder.ln)
        return {"embedding": PatchEmbedding(self.conv_proj, self.class_token, self.encoder.pos_embedding,
                                            self.encoder.dropout),
                **layers, "head": ClassTokenHead(self.heads)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"{self.name} was built for {self.image_size}x{self.image_size} images (its position "
                             f"embeddings have one entry per patch), got input shape {shape_str(x)}: resize the "
                             f"input or build the model with image_size={x.shape[-1]}.")
        n = x.shape[0]
        x = self.conv_proj(x)  # (N, D, H/P, W/P)
        x = x.flatten(2).transpose(1, 2)  # (N, L-1, D), L-1 = HW / P^2
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)  # (N, L, D)
        return self.encoder(x)  # (N, L, D)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(x[:, 0])  # class token (N, D) -> (N, num_classes)


class PatchEmbedding(nn.Module):
    """A ViT's first stage, holding the model's own patch projection, class token and position embedding:
    (N, C, H, W) -> (N, L, D), what the first encoder block receives."""

    def __init__(self, conv_proj: nn.Conv2d, class_token: nn.Parameter, pos_embedding: nn.Parameter,
                 dropout: nn.Module):
        super().__init__()
        self.conv_proj, self.dropout = conv_proj, dropout
        self.class_token, self.pos_embedding = class_token, pos_embedding  # (1, 1, D), (1, L, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # (N, L-1, D)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)  # (N, L, D)
        return self.dropout(x + self.pos_embedding)


class ClassTokenHead(nn.Module):
    """A ViT's last stage: the class token of (N, L, D) through ``heads`` -> (N, num_classes)."""

    def __init__(self, heads: nn.Module):
        super().__init__()
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(x[:, 0])


@torch.no_grad()
def attention_maps(model: VisionTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's attention weights for the batch ``x``: a list of (N, heads, L, L) tensors, token 0
    being the class token. Runs the model once on the slow path that keeps the softmax."""
    attns = [m for m in model.modules() if isinstance(m, MultiheadSelfAttention)]
    for m in attns:
        m.store_attention = True
    try:
        model(x)
        return [m.attention for m in attns]
    finally:
        for m in attns:
            m.store_attention, m.attention = False, None


def _vit(name: str, num_classes: int, in_channels: int, small_input: bool, image_size: int | None,
         dropout: float, attention_dropout: float) -> VisionTransformer:
    cfg = VIT_CONFIGS[name]
    if cfg.image_size != 224:  # one of this course's small ViTs
        require_small_input(name, small_input, "vit_b_16, vit_b_32 or vit_l_16")
    elif small_input:
        cfg = dataclasses.replace(cfg, patch_size=4, image_size=32)
    if image_size is not None:
        cfg = dataclasses.replace(cfg, image_size=image_size)
    return VisionTransformer(cfg, num_classes=num_classes, in_channels=in_channels, dropout=dropout,
                             attention_dropout=attention_dropout, name=name)


@register_model(twin="vit_b_16")
def vit_b_16(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
             image_size: int | None = None, dropout: float = 0.0, attention_dropout: float = 0.0) -> VisionTransformer:
    """ViT-B/16 (Dosovitskiy et al. 2021, Table 1): 12 layers, D=768, 12 heads, 16x16 patches."""
    return _vit("vit_b_16", num_classes, in_channels, small_input, image_size, dropout, attention_dropout)


@register_model(twin="vit_b_32")
def vit_b_32(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
             image_size: int | None = None, dropout: float = 0.0, attention_dropout: float = 0.0) -> VisionTransformer:
    """ViT-B/32 (Dosovitskiy et al. 2021, Table 1): ViT-B with 32x32 patches."""
    return _vit("vit_b_32", num_classes, in_channels, small_input, image_size, dropout, attention_dropout)


@register_model(twin="vit_l_16")
def vit_l_16(*, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
             image_size: int | None = None, dropout: float = 0.0, attention_dropout: float = 0.0) -> VisionTransformer:
    """ViT-L/16 (Dosovitskiy et al. 2021, Table 1): 24 layers, D=1024, 16 heads, 16x16 patches."""
    return _vit("vit_l_16", num_classes, in_channels, small_input, image_size, dropout, attention_dropout)


@register_model(small_only=True, input_size=(1, 28, 28))
def vit_tiny_28(*, num_classes: int = 10, in_channels: int = 1, small_input: bool = True,
                image_size: int | None = None, dropout: float = 0.0,
                attention_dropout: float = 0.0) -> VisionTransformer:
    """A 4-layer, D=64 ViT for 28x28 images (4x4 patches); pass image_size=32 for CIFAR-sized images."""
    return _vit("vit_tiny_28", num_classes, in_channels, small_input, image_size, dropout, attention_dropout)


@register_model(small_only=True, input_size=(1, 28, 28))
def vit_small_28(*, num_classes: int = 10, in_channels: int = 1, small_input: bool = True,
                 image_size: int | None = None, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> VisionTransformer:
    """A 6-layer, D=128 ViT for 28x28 images (4x4 patches); pass image_size=32 for CIFAR-sized images."""
    return _vit("vit_small_28", num_classes, in_channels, small_input, image_size, dropout, attention_dropout)
