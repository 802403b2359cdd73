"""A bare `except:` around the step swallows the probe's stop; the probe must still end the run."""
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)
model = nn.Linear(8, 3)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for i in range(1, 400):
    try:
        loss = F.cross_entropy(model(torch.randn(8, 8)), torch.randint(0, 3, (8,))) / 2
        loss.backward()
        if i % 2 == 0:
            optimizer.step()
            optimizer.zero_grad()
    except:  # noqa: E722 - the point of this script
        print("swallowed", flush=True)
print("reached the end of the script", flush=True)
