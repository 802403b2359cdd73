"""Tiny models and data for the probe tests, made on the fly."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def mlp(seed: int = 0, d_in: int = 8, d_out: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 16), nn.Tanh(), nn.Linear(16, d_out))


def batches(n: int, batch: int = 8, seed: int = 1, d_in: int = 8, classes: int = 3) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, d_in, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(n)]


def loader(n_batches: int, batch: int = 8, seed: int = 1) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n_batches * batch, 8, generator=g),
                         torch.randint(0, 3, (n_batches * batch,), generator=g))
    return DataLoader(data, batch_size=batch)


def token_batches(n: int, seed: int = 2, vocab: int = 11, seq: int = 12,
                  rows: int = 4) -> list[tuple[torch.Tensor, ...]]:
    """Token batches whose number of valid (non -100) labels differs per micro-batch."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(0, vocab, (rows, seq), generator=g)
        labels = ids.clone()
        keep = 2 + 3 * i  # valid tokens per row differ between micro-batches
        labels[:, keep:] = -100
        out.append((ids, labels))
    return out
