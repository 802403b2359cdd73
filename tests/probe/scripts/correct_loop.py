"""A correct accumulation loop: K=4, loss divided by K, remainder stepped at the epoch end."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
K = 4
data = TensorDataset(torch.randn(80, 8), torch.randint(0, 3, (80,)))
loader = DataLoader(data, batch_size=8)  # 10 micro-batches: 2 windows of 4, then a remainder of 2
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
criterion = nn.CrossEntropyLoss()

for _epoch in range(2):
    for i, (x, y) in enumerate(loader):
        last = i + 1 == len(loader)
        divisor = K if i < len(loader) - len(loader) % K else len(loader) % K
        loss = criterion(model(x), y) / divisor
        loss.backward()
        if (i + 1) % K == 0 or last:
            optimizer.step()
            optimizer.zero_grad()
print("done")
