"""GA009: `scaler.unscale_(opt)` (and a clip) on every micro-batch of a K=4 window. GradScaler
refuses the second unscale_ before update(): the script crashes on micro-batch 2."""
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
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    if (i + 1) % K == 0:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
