"""A small character-level causal language model built from :class:`pyg_ple.nn.PLETransformer`.

nanoGPT-style and deliberately short: token + position embeddings, a stack of ``num_layers`` pre-norm blocks and a
final LayerNorm run through the blocks' dense causal path (``transformer(x, causal=True)``), and a tied output
projection. The only thing that differs between the variants compared in ``benchmarks/lm_shakespeare.py`` is the
attention of each block, named by :data:`pyg_ple.nn.block.VARIANTS`:

==========================  =================================================================
variant                     block arguments
==========================  =================================================================
``transformer``             ``laplacian_heads=0`` (softmax attention ``A V``)
``laplacian``               ``laplacian_heads=heads`` (every head ``eta (A - I) V``)
``mixed``                   ``laplacian_heads=heads // 2`` (the last half of the heads)
``laplacian_learned_eta``   as ``laplacian`` with ``learn_step_size=True``
``mixed_learned_eta``       as ``mixed`` with ``learn_step_size=True``
==========================  =================================================================

All variants have the same parameters except ``heads`` step sizes per layer for the learned-step variants.

>>> text = open('input.txt').read()
>>> data = CharData(text)                              # 90/10 split, vocabulary from the whole text
>>> model = CharTransformerLM(data.vocab_size, block_size=64, channels=64, num_layers=2, heads=4, variant='mixed')
>>> x, y = data.batch('train', batch_size=32, block_size=64, generator=torch.Generator().manual_seed(0))
>>> loss = model.loss(x, y)
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_ple.nn.block import PLETransformer, variant_kwargs

__all__ = ['CharData', 'RandomBatches', 'CharTransformerLM', 'evaluate_lm', 'variant_name']

# The LM and ViT results files in benchmarks/results call the 'transformer' variant 'standard'.
_RESULT_FILE_NAMES = {'standard': 'transformer'}


def variant_name(name: str) -> str:
    """The :data:`~pyg_ple.nn.block.VARIANTS` name of a variant as a results file of ``benchmarks/lm_shakespeare.py``
    or ``benchmarks/vit_patches.py`` spells it."""
    return _RESULT_FILE_NAMES.get(name, name)


class CharData:
    """Character-level encoding of a text with a contiguous train/validation split (first 90% / last 10%)."""

    def __init__(self, text: str, val_fraction: float = 0.1):
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f'val_fraction must be in (0, 1), got {val_fraction}')
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        data = torch.tensor([self.stoi[c] for c in text], dtype=torch.long)
        n_train = int(len(data) * (1.0 - val_fraction))
        self.train, self.val = data[:n_train], data[n_train:]

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> Tensor:
        return torch.tensor([self.stoi[c] for c in s], dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        return ''.join(self.chars[int(i)] for i in ids)

    def batch(self, split: str, batch_size: int, block_size: int,
              generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        data = self.train if split == 'train' else self.val
        if len(data) <= block_size:
            raise ValueError(f'{split} split has {len(data)} tokens, need more than block_size={block_size}')
        ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        x = torch.stack([data[i:i + block_size] for i in ix.tolist()])
        y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix.tolist()])
        return x, y


class RandomBatches:
    """An "epoch" of ``steps`` random training batches; re-iterable, driven by its own ``generator``.

    The generator is seeded once, so two models trained with the same seed see exactly the same batches (a paired
    design), and :func:`pyg_ple.bench.training.fit` checkpoints its state through the ``generator`` attribute.
    """

    def __init__(self, data: CharData, steps: int, batch_size: int, block_size: int, seed: int = 0):
        self.data, self.steps, self.batch_size, self.block_size = data, steps, batch_size, block_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        for _ in range(self.steps):
            yield self.data.batch('train', self.batch_size, self.block_size, self.generator)


class CharTransformerLM(nn.Module):
    """Causal character LM: embeddings -> :class:`~pyg_ple.nn.PLETransformer` (causal; blocks + LayerNorm) -> tied
    head. ``variant`` names the attention (:func:`~pyg_ple.nn.block.variant_kwargs`); ``block_kwargs`` are further
    :class:`~pyg_ple.PLETransformerBlock` arguments (``step_size``, ``mlp_ratio``, ...) and override the variant's."""

    def __init__(self, vocab_size: int, block_size: int = 64, channels: int = 64, num_layers: int = 2,
                 heads: int = 4, variant: str = 'transformer', dropout: float = 0.0, **block_kwargs: Any):
        super().__init__()
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, channels)
        self.pos_emb = nn.Embedding(block_size, channels)
        self.drop = nn.Dropout(dropout)
        self.transformer = PLETransformer(channels, heads, num_layers, dropout=dropout,
                                          **{**variant_kwargs(variant, heads), **block_kwargs})
        self.head = nn.Linear(channels, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def embed(self, idx: Tensor) -> Tensor:
        """``idx [B, T]`` token ids -> the input of the first block ``[B, T, channels]``."""
        T = idx.size(1)
        if T > self.block_size:
            raise ValueError(f'sequence length {T} exceeds block_size {self.block_size}')
        return self.drop(self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device)))

    def forward(self, idx: Tensor) -> Tensor:
        """``idx [B, T]`` token ids -> logits ``[B, T, vocab]``."""
        return self.head(self.transformer(self.embed(idx), causal=True))

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.block_size:])[:, -1, :] / temperature
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


@torch.no_grad()
def evaluate_lm(model: CharTransformerLM, batches: Sequence[Tuple[Tensor, Tensor]]) -> float:
    """Mean cross-entropy (nats/char) over a fixed list of ``(x, y)`` batches."""
    was_training = model.training
    model.eval()
    total = sum(float(model.loss(x, y)) for x, y in batches)
    model.train(was_training)
    return total / max(len(batches), 1)
