"""The structural stage: what it blanks, what it keeps, and that it changes no finding."""

from __future__ import annotations

import ast
from pathlib import Path

import libcst as cst
import pytest

from gradlint import relevance
from gradlint.checker import check_source
from gradlint.relevance import relevant_source
from gradlint.rules import ALL_RULES

ROOT = Path(__file__).resolve().parent.parent
RULES = [rule() for rule in ALL_RULES]

LIBRARY = '''\
import torch

TABLE = [dict(name="a", size=1), dict(name="b", size=2)]


def unrelated(x):
    return x * 2


class Helpers:
    @staticmethod
    def also_unrelated(y):
        return y + 1

    def make_optimizer(self, model):
        self.opt = torch.optim.AdamW(model.parameters())


def zero_every_micro_batch(model, loader, optimizer, accum):
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = model(x, y) / accum
        loss.backward()
        if (i + 1) % accum == 0:
            clear_and_step(optimizer)


def clear_and_step(optimizer):
    optimizer.step()
'''


@pytest.fixture(autouse=True)
def _any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage skips small files (not worth it); these tests are small on purpose."""
    monkeypatch.setattr(relevance, "MIN_BYTES", 0)


def test_small_files_are_left_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relevance, "MIN_BYTES", len(LIBRARY) + 1)
    assert relevant_source(LIBRARY) is LIBRARY


_BLANKED = ("", "\\", "pass", "pass \\")


def _kept(source: str) -> list[str]:
    return [line.strip() for line in relevant_source(source).splitlines() if line.strip() not in _BLANKED]


def test_blanks_what_no_walk_can_reach_and_keeps_line_numbers() -> None:
    reduced = relevant_source(LIBRARY)
    assert reduced.count("\n") == LIBRARY.count("\n")
    ast.parse(reduced)  # still a valid program
    kept = _kept(LIBRARY)
    assert "def unrelated(x):" not in kept
    assert "def also_unrelated(y):" not in kept
    assert 'TABLE = [dict(name="a", size=1), dict(name="b", size=2)]' not in kept
    # The training loop, the helper it calls by name, and a definition holding a module fact stay.
    assert "def zero_every_micro_batch(model, loader, optimizer, accum):" in kept
    assert "def clear_and_step(optimizer):" in kept
    assert "self.opt = torch.optim.AdamW(model.parameters())" in kept
    for row, (before, after) in enumerate(zip(LIBRARY.splitlines(), reduced.splitlines(), strict=True), 1):
        if after.strip() not in _BLANKED:
            assert before == after, row


def test_same_findings_as_the_whole_file() -> None:
    full = check_source(LIBRARY, "lib.py", RULES, prefilter=False)
    staged = check_source(LIBRARY, "lib.py", RULES, prefilter=True)
    assert "GA001" in [d.code for d in full.diagnostics]  # found only through the kept helper
    assert staged.diagnostics == full.diagnostics


def test_module_level_loop_keeps_module_code() -> None:
    source = "K = 4\nfor i, b in enumerate(data):\n    model(b).backward()\n"
    source += "    if (i + 1) % K == 0:\n        opt.step()\n"
    assert relevant_source(source) == source


def test_nested_backward_keeps_its_enclosing_function() -> None:
    source = "def outer():\n    def inner(loss):\n        loss.backward()\n    return inner\n\n\n"
    source += "def other():\n    pass\n"
    kept = _kept(source)
    assert "def outer():" in kept and "loss.backward()" in kept
    assert "def other():" not in kept


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_line_endings_are_kept(ending: str) -> None:
    source = ending.join(["def a():", "    return 1", "", "def b(loss):", "    loss.backward()", ""])
    reduced = relevant_source(source)
    # One logical line (`pass` and backslash continuations): LibCST makes no node per blank line.
    assert reduced == ending.join(["pass \\", "", "", "def b(loss):", "    loss.backward()", ""])


def test_blanked_span_at_the_end_of_a_file_without_a_final_newline() -> None:
    source = "def b(loss):\n    loss.backward()\n\n\ndef a():\n    return 1"
    reduced = relevant_source(source)
    assert reduced == "def b(loss):\n    loss.backward()\n\n\npass \\\n\n"  # a newline added, no line
    ast.parse(reduced)
    cst.parse_module(reduced)


def test_decorators_and_class_bodies_never_left_empty() -> None:
    source = "class A:\n    @property\n    def x(self):\n        return 1\n\n    def y(self):\n        return 2\n"
    reduced = relevant_source(source)
    ast.parse(reduced)
    assert reduced.splitlines()[1:5] == ["    pass \\", "\\", "", ""]


def test_unparsable_source_is_left_whole() -> None:
    source = "def broken(:\n    loss.backward()\n"
    assert relevant_source(source) is source


@pytest.mark.parametrize("path", sorted((ROOT / "fixtures").rglob("*.py")), ids=lambda p: p.name)
def test_every_fixture_parses_after_reduction(path: Path) -> None:
    ast.parse(relevant_source(path.read_text(encoding="utf-8")))


CLEARED_BY_CALLBACK = '''\
import torch


class StepEndCallback:
    def on_step_end(self, optimizer):
        optimizer.zero_grad()


def train(model, loader, hooks):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        model(x, y).backward()
        optimizer.step()
        for hook in hooks:
            hook()
'''


def test_keeps_what_whole_file_rules_read() -> None:
    """GA014 looks for a gradient clear anywhere in the file: a callback the stage would blank
    (no backward, never called by name) must stay, or the rule would see no clear at all."""
    assert "zero_grad" in relevant_source(CLEARED_BY_CALLBACK)
    staged = check_source(CLEARED_BY_CALLBACK, "lib.py", RULES, prefilter=True)
    assert staged.diagnostics == []
    uncleared = CLEARED_BY_CALLBACK.replace("optimizer.zero_grad()", "print(optimizer)")
    assert [d.code for d in check_source(uncleared, "lib.py", RULES, prefilter=True).diagnostics] == ["GA014"]


ARGPARSE_SCRIPT = '''\
import argparse

import torch


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, default=1e-4, help="Initial learning rate.")
    parser.add_argument("--output_dir", type=str, default="out", help="Where checkpoints go.")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    return parser.parse_args()


def main():
    args = parse_args()
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    logger.info("starting run in %s", args.output_dir)
    for i, (x, y) in enumerate(loader):
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        progress_bar.set_postfix(lr=0.1)
        logger.info("loss %s", loss.item())
        if (i + 1) % args.gradient_accumulation_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
'''


def test_inert_statements_inside_kept_functions_are_blanked() -> None:
    """A call kept only for its effect, reading nothing the model or a rule reads, is blanked even
    inside a definition that stays; anything naming a loss, K, an event or a helper stays."""
    kept = _kept(ARGPARSE_SCRIPT)
    assert 'parser.add_argument("--learning_rate", type=float, default=1e-4, help="Initial learning rate.")' not in kept
    assert 'logger.info("starting run in %s", args.output_dir)' not in kept
    assert "progress_bar.set_postfix(lr=0.1)" not in kept
    # GA011 reads the option's name as a name for K; the loss is read by provenance.
    assert 'parser.add_argument("--gradient_accumulation_steps", type=int, default=1)' in kept
    assert 'logger.info("loss %s", loss.item())' in kept
    assert "return parser.parse_args()" in kept and "loss.backward()" in kept
    reduced = relevant_source(ARGPARSE_SCRIPT)
    assert reduced.count("\n") == ARGPARSE_SCRIPT.count("\n")
    cst.parse_module(reduced)
    full = check_source(ARGPARSE_SCRIPT, "train.py", RULES, prefilter=False)
    assert "GA002" in [d.code for d in full.diagnostics]
    assert check_source(ARGPARSE_SCRIPT, "train.py", RULES, prefilter=True).diagnostics == full.diagnostics


def test_a_statement_sharing_a_line_is_not_blanked() -> None:
    source = ARGPARSE_SCRIPT.replace('    logger.info("starting run in %s", args.output_dir)\n',
                                     '    logger.info("starting"); model.eval()\n')
    assert 'logger.info("starting"); model.eval()' in _kept(source)
    assert check_source(source, "train.py", RULES, prefilter=True).diagnostics == check_source(
        source, "train.py", RULES, prefilter=False).diagnostics
