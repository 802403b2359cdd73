"""Rules read more than the training loop: GA011 looks for a name for K anywhere in the file, GA014
for the `self.x` attributes assigned anywhere, GA007 follows a schedule's length through
assignments anywhere. A discovered file (every speed-up on) must give what the whole file gives
when those live in a definition nothing in the loop calls (`__init__`, an argument helper), in a
file big enough that an earlier structural stage blanked such definitions and lost all three.
"""

from __future__ import annotations

import pytest

from gradlint.checker import check_source
from gradlint.rules import ALL_RULES

RULES = [rule() for rule in ALL_RULES]
# Unrelated definitions: the file is 30 kB, like a big training script or library module.
_PADDING = "".join(f"\n\ndef unrelated_{i}(a, b):\n    return [a * b + {i} for _ in range(10)]\n" for i in range(500))

K_NAME_IN_AN_UNCALLED_HELPER = '''
from accelerate import Accelerator


def add_args(parser):
    parser.add_argument("--accum_steps", type=int, default=4)


def fit(net, opt, batches, loss_fn):
    accelerator = Accelerator(mixed_precision="bf16")
    net, opt, batches = accelerator.prepare(net, opt, batches)
    for inputs, labels in batches:
        with accelerator.accumulate(net):
            accelerator.backward(loss_fn(net(inputs), labels))
            opt.step()
            opt.zero_grad()
'''

MODEL_ATTRIBUTE_SET_IN_INIT = '''
import torch


class Runner:
    def __init__(self, net):
        self.model = net

    def train(self, loader, criterion):
        optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        for x, y in loader:
            loss = criterion(self.model(x), y)
            loss.backward()
            optimizer.step()
'''

SCHEDULE_LENGTH_SET_IN_INIT = '''
import torch
from transformers import get_linear_schedule_with_warmup


class Trainer:
    def __init__(self, model, loader, epochs, accum_steps):
        self.model = model
        self.loader = loader
        self.accum_steps = accum_steps
        self.total_steps = epochs * len(loader) // accum_steps

    def train(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        scheduler = get_linear_schedule_with_warmup(optimizer, 100, self.total_steps)
        for i, (x, y) in enumerate(self.loader):
            loss = self.model(x, y) / self.accum_steps
            loss.backward()
            scheduler.step()
            if (i + 1) % self.accum_steps == 0 or i + 1 == len(self.loader):
                optimizer.step()
                optimizer.zero_grad()
'''


@pytest.mark.parametrize(("source", "code", "said"), [
    (K_NAME_IN_AN_UNCALLED_HELPER, "GA011", "accumulates nothing"),
    (MODEL_ATTRIBUTE_SET_IN_INIT, "GA014", "nothing in this file clears the gradients"),
    (SCHEDULE_LENGTH_SET_IN_INIT, "GA007", "counts optimizer steps (`epochs * len(loader) // accum_steps`)"),
], ids=["GA011-K-in-helper", "GA014-self-attribute", "GA007-schedule-length"])
def test_a_discovered_big_file_reads_the_whole_file(source: str, code: str, said: str) -> None:
    big = source + _PADDING
    assert len(big) > 30_000
    whole = check_source(big, "train.py", RULES).diagnostics
    assert [d.code for d in whole] == [code] and said in whole[0].message
    for named in (False, True):
        staged = check_source(big, "train.py", RULES, prefilter=not named, stages=named).diagnostics
        assert staged == whole
