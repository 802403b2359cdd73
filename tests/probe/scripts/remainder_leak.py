"""GA004: 10 micro-batches per epoch, K=4, no step on the remainder: 2 micro-batches leak into the
first window of the next epoch."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
K = 4
loader = DataLoader(TensorDataset(torch.randn(80, 8), torch.randint(0, 3, (80,))), batch_size=8)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss()

for _epoch in range(3):
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y) / K
        loss.backward()
        if (i + 1) % K == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
