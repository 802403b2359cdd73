"""GA005: bf16 autocast + GradScaler on CPU, clip without scaler.unscale_(optimizer)."""
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)
K = 4
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for i in range(1, 9):
    x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), y) / K
    scaler.scale(loss).backward()
    if i % K == 0:
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
