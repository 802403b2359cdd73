"""GA016 on the shapes around its bug: where the loss is set, what the loop iterates, what it carries."""

from __future__ import annotations

import textwrap

import pytest

from gradlint.checker import check_source
from gradlint.rules import RULES_BY_CODE

TEMPLATE = """
import torch

def train(model, loader, optimizer, accum_steps, seq_len, cond, micro_batches):
    for step in range(100):
{body}
        optimizer.step()
        optimizer.zero_grad()
"""


def _flagged(body: str) -> bool:
    source = TEMPLATE.format(body=textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 8))
    result = check_source(source, "t.py", [RULES_BY_CODE["GA016"]()])
    assert result.error is None
    return bool(result.diagnostics)


@pytest.mark.parametrize("body", [
    """
    for _ in range(accum_steps):
        loss = model(next(loader))
    (loss / accum_steps).backward()
    """,
    # The bound is what the loss is divided by, whatever its name.
    """
    for _ in range(n):
        loss = model(next(loader))
    (loss / n).backward()
    """,
    # Behind an `if`, with other statements between.
    """
    for _ in range(accum_steps):
        x = next(loader)
        out = model(x)
        loss = out.mean()
    if cond:
        print(loss.item())
        loss.div(accum_steps).backward()
    """,
    """
    for mb in micro_batches:
        loss = model(mb)
    loss.backward()
    """,
])
def test_flagged(body: str) -> None:
    assert _flagged(body)


@pytest.mark.parametrize("body", [
    # The backward inside the loop: the correct loop.
    """
    for _ in range(accum_steps):
        loss = model(next(loader))
        (loss / accum_steps).backward()
    """,
    # Accumulated over the passes.
    """
    loss = 0
    for _ in range(accum_steps):
        loss = loss + model(next(loader)) / accum_steps
    loss.backward()
    """,
    """
    loss = 0
    for _ in range(accum_steps):
        loss += model(next(loader)) / accum_steps
    loss.backward()
    """,
    # State carried from pass to pass (an unrolled recurrence), also through another name.
    """
    h = None
    for _ in range(accum_steps):
        h = model(next(loader), h)
        out = h * 2
        loss = out.mean()
    (loss / accum_steps).backward()
    """,
    # A loop that is not K passes (an unroll over time steps, an evaluation loop).
    """
    for t in range(seq_len):
        loss = model(next(loader))
    loss.backward()
    """,
    # The loss set again between the loop and the backward, here or in the block holding it.
    """
    for _ in range(accum_steps):
        loss = model(next(loader))
    loss = model(next(loader))
    (loss / accum_steps).backward()
    """,
    """
    for _ in range(accum_steps):
        loss = model(next(loader))
    if cond:
        loss = model(next(loader))
        (loss / accum_steps).backward()
    """,
])
def test_not_flagged(body: str) -> None:
    assert not _flagged(body)
