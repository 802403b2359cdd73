"""How a script is laid out (spaces, line breaks, comments, quotes, brackets that change nothing)
never changes a finding, and the tree built from CPython's, which has no comments and its own
whitespace, compares expressions as LibCST's parse of the file does."""

from __future__ import annotations

import libcst as cst
import pytest

from gradlint.checker import check_source
from gradlint.model.syntax import canonical, code, same_code
from gradlint.rules import ALL_RULES

from .conftest import FIXTURES

RULES = [rule() for rule in ALL_RULES]


def expression(text: str) -> cst.BaseExpression:
    return cst.parse_expression(text)


@pytest.mark.parametrize(("first", "second"), [
    ("(step + 1) % accum == 0", "(step+1)%accum==0"),
    ("(step + 1) % accum == 0", "( step + 1 ) % accum == 0"),
    ("f(a, b)", "f(\n    a,  # the first\n    b,\n)"),
    ('batch["loss"]', "batch['loss']"),
    ("x", "(x)"),
    ("a if b else c", "(a) if (b) else (c)"),
    ('f"{step:04d}"', "f'{step:04d}'"),
])
def test_one_expression_written_two_ways_is_one_text(first: str, second: str) -> None:
    assert same_code(expression(first), expression(second))
    assert canonical(expression(first)) == canonical(expression(second))


@pytest.mark.parametrize(("first", "second"), [
    ("(step + 1) % accum == 0", "step + 1 % accum == 0"),
    ("a.b", "a.c"),
    ("not x", "notx"),
    ("'a'", "'b'"),
])
def test_different_expressions_stay_different(first: str, second: str) -> None:
    assert not same_code(expression(first), expression(second))


def test_what_cpython_cannot_read_alone_falls_back_to_its_code() -> None:
    """A starred element is an expression node to LibCST, not an expression CPython parses alone."""
    starred = cst.parse_expression("[*rest]").elements[0]  # type: ignore[attr-defined]
    assert canonical(starred) == code(starred) == "*rest"


_AMP_LOOP = """\
import torch

scaler = torch.cuda.amp.GradScaler()
optimizer = torch.optim.AdamW(model.parameters())
for step, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = criterion(model(x), y) / accum
    scaler.scale(loss).backward()
    if {first}:
        scaler.unscale_(optimizer)
    if {second}:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
"""
_GATE = "(step + 1) % accum == 0 or step + 1 == len(loader)"
_GATE_OVER_LINES = "(\n        (step + 1) % accum == 0  # window done\n        or step + 1 == len(loader)\n    )"
_LIGHTNING = (FIXTURES / "GA011" / "lightning_trainer_kwarg.py").read_text(encoding="utf-8")
_MANUAL = "        self.net = nn.Linear(16, 1)\n        self.automatic_optimization{}False\n"


@pytest.mark.parametrize("source", [
    # The unscale and the clip run under one gate, written twice: GA005 has nothing to report.
    _AMP_LOOP.format(first=_GATE, second=_GATE),
    _AMP_LOOP.format(first=_GATE, second="(step+1) % accum == 0 or step+1 == len(loader)"),
    _AMP_LOOP.format(first=_GATE, second=_GATE_OVER_LINES),
    # Lightning under manual optimisation returns what it likes from training_step: no GA011.
    _LIGHTNING.replace("        self.net = nn.Linear(16, 1)\n", _MANUAL.format(" = ")),
    _LIGHTNING.replace("        self.net = nn.Linear(16, 1)\n", _MANUAL.format("=")),
], ids=["gate-alike", "gate-spaced-differently", "gate-over-lines-with-a-comment", "manual-spaced",
        "manual-unspaced"])
def test_layout_does_not_make_a_finding(source: str) -> None:
    for kind in ({}, {"prefilter": True}, {"stages": True}):
        assert check_source(source, "train.py", RULES, **kind).diagnostics == []


def test_the_layout_cases_are_findings_when_the_code_differs() -> None:
    """The same scripts with a real difference are reported: the tests above are not vacuous."""
    different_gate = _AMP_LOOP.format(first="step % 10 == 0", second=_GATE)
    assert [d.code for d in check_source(different_gate, "train.py", RULES).diagnostics] == ["GA005"]
    automatic = _LIGHTNING.replace("        self.net = nn.Linear(16, 1)\n", _MANUAL.format(" = True  # "))
    assert [d.code for d in check_source(automatic, "train.py", RULES).diagnostics] == ["GA011"]


@pytest.mark.parametrize("mention", [
    "        # self.automatic_optimization = False would need manual_backward\n",
    '        """Not manual: no automatic_optimization = False, no manual_backward."""\n',
])
def test_a_comment_or_docstring_is_not_manual_optimisation(mention: str) -> None:
    """Manual optimisation is an assignment or a call in the class, not words in its text (the built
    tree has no comments: a comment must not decide)."""
    source = _LIGHTNING.replace("        super().__init__()\n", "        super().__init__()\n" + mention)
    for kind in ({}, {"prefilter": True}):
        assert [d.code for d in check_source(source, "train.py", RULES, **kind).diagnostics] == ["GA011"]
