"""A small character-level causal language model built from :class:`pyg_ple.PLETransformerBlock`.

nanoGPT-style and deliberately short: token + position embeddings, ``num_layers`` pre-norm blocks run through the
block's dense causal path (``block(x, causal=True)``), a final LayerNorm and a tied output projection.  The only thing
that differs between the variants compared in ``benchmarks/lm_shakespeare.py`` is the attention of each block:

==========================  =================================================================
variant                     block arguments
==========================  =================================================================
``standard``                ``laplacian_heads=0`` (softmax attention ``A V``)
``laplacian``               ``laplacian_heads=heads`` (every head ``eta (A - I) V``)
``mixed``                   ``laplacian_heads=heads // 2`` (the last half of the heads)
``laplacian_learned_eta``   as ``laplacian`` with ``learn_step_size=True``
``mixed_learned_eta``       as ``mixed`` with ``learn_step_size=True``
==========================  =================================================================

All variants have the same parameters except ``heads`` step sizes per layer for the learned-step variants.

>>> text = open('input.txt').read()
>>> data = CharData(text)                              # 90/10 split, vocabulary from the whole text
>>> model = CharTransformerLM(data.vocab_size, block_size=64, channels=64, num_layers=2, heads=4)
>>> x, y = data.batch('train', batch_size=32, block_size=64, generator=torch.Generator().manual_seed(0))
>>> loss = model.loss(x, y)
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['LM_VARIANTS', 'variant_kwargs', 'CharData', 'RandomBatches', 'CharTransformerLM', 'evaluate_lm']

# variant -> (fraction of Laplacian heads, learned step size)
LM_VARIANTS: Dict[str, Tuple[float, bool]] = {
    'standard': (0.0, False),
    'laplacian': (1.0, False),
    'mixed': (0.5, False),
    'laplacian_learned_eta': (1.0, True),
    'mixed_learned_eta': (0.5, True),
}


def variant_kwargs(variant: str, heads: int) -> dict:
    """Block keyword arguments (``laplacian_heads``, ``learn_step_size``) of a named variant."""
    if variant not in LM_VARIANTS:
        raise ValueError(f'unknown variant {variant!r}; choose from {sorted(LM_VARIANTS)}')
    frac, learn = LM_VARIANTS[variant]
    return {'laplacian_heads': int(round(frac * heads)), 'learn_step_size': learn}


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
    """Causal character LM: embeddings -> ``num_layers`` x PLETransformerBlock (causal) -> LayerNorm -> tied head."""

    def __init__(self, vocab_size: int, block_size: int = 64, channels: int = 64, num_layers: int = 2,
                 heads: int = 4, laplacian_heads: Optional[int] = 0, step_size: float = 1.0,
                 learn_step_size: bool = False, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        from pyg_ple.nn.block import PLETransformerBlock  # the core block (dense causal path)

        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, channels)
        self.pos_emb = nn.Embedding(block_size, channels)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([
            PLETransformerBlock(channels, heads, laplacian_heads=laplacian_heads, mlp_ratio=mlp_ratio,
                                dropout=dropout, step_size=step_size, learn_step_size=learn_step_size)
            for _ in range(num_layers)
        ])
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        """``idx [B, T]`` token ids -> logits ``[B, T, vocab]``."""
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f'sequence length {T} exceeds block_size {self.block_size}')
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x, causal=True)
        return self.head(self.norm(x))

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
