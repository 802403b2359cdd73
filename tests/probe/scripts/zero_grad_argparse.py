"""GA001 (zero_grad every micro-batch), with argparse: run as `zero_grad_argparse.py --k 4 --batches 8`."""
import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    print(f"argv0={sys.argv[0]} path0={sys.path[0]}")
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(1, args.batches + 1):
        optimizer.zero_grad()
        x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
        loss = F.cross_entropy(model(x), y) / args.k
        loss.backward()
        if i % args.k == 0:
            optimizer.step()


if __name__ == "__main__":
    main()
