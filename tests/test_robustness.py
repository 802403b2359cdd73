"""No input crashes the checker: it returns findings or a clear per-file error."""

from __future__ import annotations

import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from gradlint.checker import check_source
from gradlint.rules import ALL_RULES

RULES = [rule() for rule in ALL_RULES]

LOOP = textwrap.dedent("""\
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if (i + 1) % K == 0:
            scaler.step(optimizer)
            scaler.update()
""")


def _no_internal_error(source: str) -> None:
    result = check_source(source, "x.py", RULES)
    if result.error is not None:
        assert "internal error" not in result.error.reason, result.error.traceback


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_arbitrary_text(text: str) -> None:
    _no_internal_error(text + "\nloss.backward()\n")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(LOOP.splitlines()) - 1), max_size=4),
       st.sampled_from(["", "pass", "if x:", "else:", "    continue", "break", "return loss", "yield"]))
def test_mutated_training_loops(drop: list[int], insert: str) -> None:
    """Deleting lines and inserting statements gives odd but valid (or invalid) loops."""
    lines = [line for n, line in enumerate(LOOP.splitlines()) if n not in drop]
    lines.insert(len(lines) // 2, "    " + insert)
    _no_internal_error("\n".join(lines) + "\n")


def test_deeply_nested_code_is_an_error_not_a_crash() -> None:
    depth = 300
    source = "".join("    " * n + "if x:\n" for n in range(depth)) + "    " * depth + "loss.backward()\n"
    result = check_source(source, "deep.py", RULES)
    assert result.error is None or "internal error" not in result.error.reason


def test_deeply_nested_expression() -> None:
    source = "loss = " + "(" * 200 + "x" + ")" * 200 + "\nloss.backward()\n"
    result = check_source(source, "deep.py", RULES)
    assert result.error is None or "internal error" not in result.error.reason


def test_recursive_helpers_terminate() -> None:
    source = textwrap.dedent("""\
        def a(batch):
            b(batch)
            loss = model(batch)
            loss.backward()

        def b(batch):
            a(batch)

        for i, batch in enumerate(loader):
            a(batch)
            if (i + 1) % K == 0:
                optimizer.step()
    """)
    result = check_source(source, "rec.py", RULES)
    assert result.error is None
    assert [d.code for d in result.diagnostics] == ["GA002", "GA004"]
