"""Message wording that fixture snapshots do not pin down: where an off-window event runs, and the
length GA004 names."""

from __future__ import annotations

import textwrap

import pytest

from gradlint.checker import check_source
from gradlint.rules import RULES_BY_CODE


def _messages(source: str, code: str) -> list[str]:
    result = check_source(textwrap.dedent(source), "t.py", [RULES_BY_CODE[code]()])
    return [d.message for d in result.diagnostics]


LOOP = """
import torch

def train(model, loader, optimizer, scaler, K, log_every):
    for i, (x, y) in enumerate(loader):
        loss = model(x, y) / K
        scaler.scale(loss).backward()
{body}
        if (i + 1) % K == 0 or i + 1 == len(loader):
            scaler.step(optimizer)
            scaler.update()
"""


@pytest.mark.parametrize(("body", "code", "where"), [
    # The clear's own test decides where it runs: name that test, not the step's gate.
    ("        if i % log_every == 0:\n            print(loss)\n        else:\n            optimizer.zero_grad()",
     "GA001", "runs on the micro-batches where `i % log_every == 0` is false:"),
    ("        if i % log_every != 0:\n            optimizer.zero_grad()",
     "GA001", "runs on the micro-batches where `i % log_every != 0` holds:"),
    # The step's own residue test, written the other way round: that is the gate's `else`.
    ("        if (i + 1) % K != 0:\n            optimizer.zero_grad()",
     "GA001", "runs on the micro-batches where no step runs (when `(i + 1) % K == 0 or i + 1 == len(loader)` is "
     "false):"),
    ("        if (i + 1) % K == 0 or i + 1 == len(loader):\n            pass\n        else:\n"
     "            scaler.unscale_(optimizer)",
     "GA009", "runs on the micro-batches where no step runs (when `(i + 1) % K == 0 or i + 1 == len(loader)` is "
     "false), but"),
    ("        optimizer.zero_grad()", "GA001",
     "runs on every micro-batch, but `scaler.step(optimizer)` only every `K`"),
])
def test_where_an_off_window_event_runs(body: str, code: str, where: str) -> None:
    messages = _messages(LOOP.format(body=body), code)
    assert len(messages) == 1 and where in messages[0], messages


GATED = """
import torch

def train(model, make, optimizer, K, dataset, n):
    for i, (x, y) in enumerate({iterable}):
        (model(x, y) / K).backward()
        if (i + 1) % K == 0:
            optimizer.step()
            optimizer.zero_grad()
"""


@pytest.mark.parametrize(("iterable", "length"), [
    ("loader", "len(loader)"),
    ("tqdm(loader, desc='train')", "len(loader)"),
    ("metric_logger.log_every(loader, 10, header)", "len(loader)"),
    # A call that makes the batches is their count, not its argument's length.
    ("make(n)", "len(make(n))"),
    ("torch.utils.data.DataLoader(dataset, batch_size=8)", "len(torch.utils.data.DataLoader(dataset, batch_size=8))"),
])
def test_ga004_names_the_length_of_what_the_loop_iterates(iterable: str, length: str) -> None:
    messages = _messages(GATED.format(iterable=iterable), "GA004")
    assert len(messages) == 1 and f"when `{length}` is not a multiple of `K`" in messages[0], messages


def test_quoted_code_leaves_out_comments() -> None:
    source = """
import torch

def train(model, loader, optimizer, K, skip):
    for i, (x, y) in enumerate(loader):
        (model(x, y) / K).backward()
        if ((i + 1) % K == 0  # end of a window ("#" in a comment)
                and not skip):
            optimizer.step()
            optimizer.zero_grad()
"""
    [message] = _messages(source, "GA004")
    assert "the step runs only when `((i + 1) % K == 0 and not skip)`," in message
