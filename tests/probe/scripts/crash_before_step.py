"""Fails before its first optimizer step."""
import torch
from torch import nn


def build() -> nn.Module:
    raise ValueError("config file missing: data.yaml")


model = nn.Linear(2, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
build()
