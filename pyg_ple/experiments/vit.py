"""A small vision transformer on patch tokens, built from :class:`pyg_ple.nn.PLETransformer`.

Images are cut into non-overlapping ``patch x patch`` patches (:func:`patchify`), each patch is embedded linearly, a
learned class token and learned position embeddings are added, and a stack of ``num_layers`` blocks and a final
LayerNorm runs through the blocks' dense (all-pairs, non-causal) sequence path. The class token's final state feeds
a linear classifier.

Variants (:data:`pyg_ple.nn.block.VARIANTS`, as for the language model): ``transformer`` (``laplacian_heads=0``),
``laplacian`` (all heads ``eta (A - I) V``) and ``mixed`` (the last half of the heads).

>>> patches = patchify(images, patch=7)                 # [N, 28, 28] -> [N, 16, 49]
>>> model = PatchViT(patch_dim=49, num_patches=16, num_classes=10, heads=4, variant='mixed')
>>> logits = model(patches)                              # [N, 10]
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pyg_ple.nn.block import PLETransformer, variant_kwargs

__all__ = ['VIT_VARIANTS', 'patchify', 'PatchViT']

# The variants benchmarks/vit_patches.py compares.
VIT_VARIANTS = ('transformer', 'laplacian', 'mixed')


def patchify(images: Tensor, patch: int) -> Tensor:
    """``[N, H, W]`` or ``[N, C, H, W]`` images -> ``[N, (H / patch) * (W / patch), C * patch * patch]`` tokens
    (row-major patch order).  ``H`` and ``W`` must be multiples of ``patch``."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f'images must be [N, H, W] or [N, C, H, W], got shape {tuple(images.shape)}')
    N, Ch, H, W = images.shape
    if H % patch or W % patch:
        raise ValueError(f'image size {H}x{W} is not a multiple of patch={patch}')
    x = images.reshape(N, Ch, H // patch, patch, W // patch, patch)
    x = x.permute(0, 2, 4, 1, 3, 5)  # N, h, w, C, p, p
    return x.reshape(N, (H // patch) * (W // patch), Ch * patch * patch)


class PatchViT(nn.Module):
    """Patch embedding + class token + position embeddings -> :class:`~pyg_ple.nn.PLETransformer` (blocks +
    LayerNorm) -> linear head on the class token.

    ``variant`` names the attention (:func:`~pyg_ple.nn.block.variant_kwargs`); ``block_kwargs`` are further
    :class:`~pyg_ple.PLETransformerBlock` arguments and override the variant's. ``mlp_ratio`` is 2.0, narrower than
    the block's default, as in every ViT result in ``benchmarks/results``.
    """

    def __init__(self, patch_dim: int, num_patches: int, num_classes: int, channels: int = 64, num_layers: int = 2,
                 heads: int = 4, variant: str = 'transformer', mlp_ratio: float = 2.0, dropout: float = 0.0,
                 **block_kwargs: Any):
        super().__init__()
        self.embed = nn.Linear(patch_dim, channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, channels))
        self.pos_emb = nn.Parameter(torch.zeros(1, num_patches + 1, channels))
        self.transformer = PLETransformer(channels, heads, num_layers, mlp_ratio=mlp_ratio, dropout=dropout,
                                          **{**variant_kwargs(variant, heads), **block_kwargs})
        self.head = nn.Linear(channels, num_classes)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)

    def forward(self, patches: Tensor) -> Tensor:
        """``patches [B, T, patch_dim]`` -> logits ``[B, num_classes]``."""
        x = self.embed(patches)
        x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], dim=1) + self.pos_emb
        return self.head(self.transformer(x)[:, 0])
