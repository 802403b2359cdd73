"""Overhead of the runtime probe: time per optimizer window (K micro-batches + step) with and
without the probe, median of several windows, for a ~6M-parameter MLP and a small transformer.

    python benchmarks/probe_overhead.py [--windows 7] [--threads 1] [--full]

The probe runs in-process here (gradlint.probe.watch), which is what the child process of
`gradlint probe` does around the script."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import gradlint.probe as gp

K = 4


def mlp_case() -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    return model, lambda: F.cross_entropy(model(x), y)


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 1000, d: int = 256, layers: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=4 * d, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.emb(ids)))


def transformer_case() -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    torch.manual_seed(0)
    model = TinyTransformer()
    ids = torch.randint(0, 1000, (8, 128))
    labels = ids.roll(-1, dims=1)
    return model, lambda: F.cross_entropy(model(ids).flatten(0, 1), labels.flatten())


def window_times(make: Callable[[], tuple[nn.Module, Callable[[], torch.Tensor]]], windows: int, probed: bool,
                 full: bool) -> list[float]:
    model, loss_fn = make()

    def run() -> list[float]:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times = []
        for w in range(windows + 1):  # the first window warms up
            start = time.perf_counter()
            for _ in range(K):
                (loss_fn() / K).backward()
            opt.step()
            opt.zero_grad()
            if w:
                times.append(time.perf_counter() - start)
        return times

    if not probed:
        return run()
    with gp.watch(full=full) as probe:
        times = run()
    assert probe.report.ok, probe.report.text()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 gives stable timings)")
    parser.add_argument("--full", action="store_true", help="probe every gradient element, not a sample")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mode = "full" if args.full else "sampled 4096/tensor"
    print(f"torch {torch.__version__}, {args.threads} thread(s), K={K}, {args.windows} windows, probe: {mode}")
    print(f"{'model':<28} {'params':>8} {'plain ms':>10} {'probe ms':>10} {'ratio':>7}")
    for name, make in (("MLP 784-2048-2048-10", mlp_case), ("transformer 4x256, 8x128 tok", transformer_case)):
        params = sum(p.numel() for p in make()[0].parameters())
        # interleave plain and probed runs so drift on a shared machine hits both
        plain, probe = [], []
        for _ in range(2):
            plain += window_times(make, args.windows, False, args.full)
            probe += window_times(make, args.windows, True, args.full)
        p_ms, q_ms = statistics.median(plain) * 1e3, statistics.median(probe) * 1e3
        print(f"{name:<28} {params / 1e6:>7.2f}M {p_ms:>10.1f} {q_ms:>10.1f} {q_ms / p_ms:>6.2f}x")


if __name__ == "__main__":
    main()
