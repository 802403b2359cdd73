"""GA008: `scaler.update()` on every micro-batch, the step only every K=4. GradScaler refuses an
update with no step since the last one: the script crashes on micro-batch 1."""
import torch
from torch import nn

torch.manual_seed(0)
K = 4
model = nn.Linear(8, 3)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for i in range(8):
    x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x), y) / K
    scaler.scale(loss).backward()
    if (i + 1) % K == 0:
        scaler.step(optimizer)
        optimizer.zero_grad()
    scaler.update()
