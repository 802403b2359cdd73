"""Generated Python programs in a training script's vocabulary (hypothesis): random blocks of
gradient events, gates, loops, context managers, helpers and methods, with random layout
(indentation, line ends, comments, `noqa`, calls split over lines, redundant brackets).

hypothesmith's programs, from Python's grammar (`tests/test_grammar_programs.py`), almost never
hold a backward or a step, so the model would rarely run past its first test. These programs
always reach the model and the rules.

For every program, beyond "no internal error":
- the speed-ups change nothing: the diagnostics and fixes of a file named on the command line
  (tree built from CPython's, findings placed from their statements' parse) and of a discovered
  file (the text test too) are those of LibCST's parse of the whole file;
- the tree built from CPython's is LibCST's own, trivia aside, and the builder lists it as the
  model's index would;
- `--fix` (unsafe fixes too) leaves code that compiles, and a second `--fix` changes nothing.
"""

from __future__ import annotations

import ast
import warnings

import libcst as cst
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlint.checker import FileResult, check_source
from gradlint.fixing import fix_source
from gradlint.rules import ALL_RULES
from gradlint.tree_from_ast import Unsupported, built_module, first_difference

from .test_tree_from_ast import assert_listed

RULES = [rule() for rule in ALL_RULES]

K_NAMES = ["K", "accum", "args.gradient_accumulation_steps", "self.accum_steps", "4", "cfg.train.accum_iter"]
COUNTERS = ["i", "step", "global_step", "self.step", "micro_step"]
VALUES = ["loss", "x", "y", "out", "logits", "total", "n_tokens"]


def _k(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(K_NAMES))


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    """A valid expression; compound ones are bracketed where Python's precedence needs it."""
    atoms = [*VALUES, *COUNTERS, "K", "None", "True", "1", "0.5", "1e-3", "0x10", '"a"', "r'\\d+'",
             'f"{loss:.4f} at {i}"', '"a" "b"', 'b"raw"', "batch['input_ids']", "x[0]", "x[:, 1:]", "...",
             "model.module", "out.loss", "len(loader)"]
    if depth >= 2:
        return draw(st.sampled_from(atoms))
    kind = draw(st.sampled_from(["atom", "atom", "call", "binary", "compare", "bool", "ternary", "display",
                                 "comprehension", "lambda", "walrus", "paren"]))
    sub = expressions(depth + 1)
    if kind == "atom":
        return draw(st.sampled_from(atoms))
    if kind == "call":
        func = draw(st.sampled_from(["model", "criterion", "len", "torch.sum", "loss.mean", "compute_loss",
                                     "F.cross_entropy", "self.model", "helper", "x.detach().float"]))
        args = draw(st.lists(sub, max_size=3))
        if draw(st.booleans()):
            args.append(f"{draw(st.sampled_from(['reduction', 'dim', 'set_to_none']))}={draw(sub)}")
        if draw(st.booleans()):
            args.append(draw(st.sampled_from(["*args", "**kwargs"])))
        split = draw(st.booleans())
        return f"{func}(" + (",\n        ".join(args) + ("," if args and draw(st.booleans()) else "")
                             if split else ", ".join(args)) + ")"
    if kind == "binary":
        op = draw(st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "@", "|", "&", "<<"]))
        return f"({draw(sub)} {op} {draw(sub)})"
    if kind == "compare":
        op = draw(st.sampled_from(["==", "!=", "<", ">=", "is", "is not", "in", "not in"]))
        return f"({draw(sub)} {op} {draw(sub)})"
    if kind == "bool":
        if draw(st.booleans()):
            return f"(not {draw(sub)})"
        return f"({draw(sub)} {draw(st.sampled_from(['and', 'or']))} {draw(sub)})"
    if kind == "ternary":
        return f"({draw(sub)} if {draw(sub)} else {draw(sub)})"
    if kind == "display":
        items = draw(st.lists(sub, max_size=3))
        listed = ", ".join(items)
        return draw(st.sampled_from([f"[{listed}]", f"({listed},)" if items else "()", f"{{{listed or '1'}}}",
                                     f"{{'k': {items[0] if items else '1'}}}"]))
    if kind == "comprehension":
        return f"[{draw(sub)} for z in {draw(sub).replace('(n := ', '(')} if {draw(sub)}]"
    if kind == "lambda":
        return f"(lambda z: {draw(sub)})"
    if kind == "walrus":
        return f"(n := {draw(sub)})"
    return f"(({draw(sub)}))"


def _gate(draw: st.DrawFn) -> str:
    k, c = _k(draw), draw(st.sampled_from(COUNTERS))
    return draw(st.sampled_from([
        f"(({c} + 1) % {k} == 0)", f"{c} % {k} == {k} - 1", f"not ({c} + 1) % {k}", f"({c} + 1) % {k} != 0",
        f"({c} + 1) % {k} == 0 or {c} + 1 == len(loader)", f"{k} > 1", "args.fp16", "use_amp", "sync",
        f"{c} == 0", "torch.isfinite(loss)", f"{c} % {k} == 0 and {c} > 0",
    ]))


EVENTS = [
    "optimizer.zero_grad()", "optimizer.zero_grad(set_to_none=True)", "model.zero_grad()",
    "loss.backward()", "(loss / {k}).backward()", "scaler.scale(loss).backward()",
    "scaler.scale(loss / {k}).backward()",
    "optimizer.step()", "scaler.step(optimizer)", "scaler.update()", "scaler.unscale_(optimizer)",
    "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)", "clip_grad_norm_(model.parameters(), max_norm)",
    "scheduler.step()", "lr_scheduler.step()", "accelerator.backward(loss)", "accelerator.clip_grad_norm_(params, 1.0)",
    "engine.backward(loss)", "engine.step()", "self.optimizer.step()", "self.optimizer.zero_grad()",
    "self.scaler.scale(loss).backward()", "ema.update(model)", "loss = helper(model, batch, optimizer)",
    "self.manual_backward(loss)", "model_engine.backward(loss)", "model_engine.step()", "opt.step()",
    "torch.autograd.backward(loss)", "loss.backward(retain_graph=True)", "optimizer.step(closure)",
]
ASSIGNMENTS = [
    "loss = {e}", "loss = loss / {k}", "loss /= {k}", "loss = criterion(model(x), y)", "out = model(**batch)",
    "loss = out.loss", "x, y = batch", "total += loss.item()", "loss: torch.Tensor = {e}", "{c} += 1",
    "loss = loss.mean()", "loss = F.cross_entropy(logits, y, reduction='sum')", "n_tokens = mask.sum()",
    "loss = loss.sum() / n_tokens", "losses.append(loss)", "x = y = {e}", "loss, aux = self.step_fn(batch)",
    "(loss * w).backward()",
]
SIMPLE = ["pass", "print({e})", "assert {e}", "del x", "import torch.nn.functional as F",
          "from torch.cuda.amp import GradScaler as Scaler", "raise ValueError('bad')", "logger.info(f'{{loss}}')"]
HEADERS = [
    "for {c}, (x, y) in enumerate(loader):", "for {c}, batch in enumerate(train_dataloader):",
    "for micro in range({k}):",
    "for batch in loader:", "for opt in optimizers:", "while global_step < max_steps:",
    "with accelerator.accumulate(model):", "with model.no_sync():",
    "with torch.autocast('cuda', dtype=torch.bfloat16):",
    "with contextlib.nullcontext() if sync else model.no_sync():", "with torch.no_grad(), ctx as c2:",
    "async for batch in stream:",
]


@st.composite
def blocks(draw: st.DrawFn, depth: int, in_loop: bool, in_function: bool, in_async: bool) -> list[str]:
    """The lines of a block, indented by one level per depth with the placeholder `\\t`."""
    lines: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=6 if depth < 3 else 3))):
        kind = draw(st.sampled_from(["event", "event", "event", "assign", "assign", "simple", "compound",
                                     "compound", "exit"]))
        fill = {"k": _k(draw), "c": draw(st.sampled_from(COUNTERS))}
        if kind == "compound" and depth < 3:
            lines += draw(_compound(depth, in_loop, in_function, in_async))
            continue
        if kind == "exit":
            exits = (["continue", "break"] if in_loop else []) + (["return loss", "return"] if in_function else [])
            if not exits:
                continue
            line = draw(st.sampled_from(exits))
        elif kind == "event":
            line = draw(st.sampled_from(EVENTS)).format(**fill)
        elif kind == "assign":
            line = draw(st.sampled_from(ASSIGNMENTS)).format(e=draw(expressions()), **fill)
        else:
            line = draw(st.sampled_from(SIMPLE)).format(e=draw(expressions()))
        lines.append("\t" * depth + line + draw(_comment()))
    return lines


@st.composite
def _compound(draw: st.DrawFn, depth: int, in_loop: bool, in_function: bool, in_async: bool) -> list[str]:
    pad = "\t" * depth
    kind = draw(st.sampled_from(["if", "if", "header", "header", "try"]))
    if kind == "if":
        out = [f"{pad}if {_gate(draw)}:{draw(_comment())}", *draw(blocks(depth + 1, in_loop, in_function, in_async))]
        if draw(st.booleans()):
            out += [f"{pad}elif {_gate(draw)}:", *draw(blocks(depth + 1, in_loop, in_function, in_async))]
        if draw(st.booleans()):
            out += [f"{pad}else:", *draw(blocks(depth + 1, in_loop, in_function, in_async))]
        return out
    if kind == "try":
        out = [f"{pad}try:", *draw(blocks(depth + 1, in_loop, in_function, in_async)),
               f"{pad}except RuntimeError as exc:", *draw(blocks(depth + 1, in_loop, in_function, in_async))]
        if draw(st.booleans()):
            out += [f"{pad}finally:", f"{pad}\tpass"]
        return out
    header = draw(st.sampled_from([h for h in HEADERS if in_async or not h.startswith("async")]))
    header = header.format(k=_k(draw), c=draw(st.sampled_from(COUNTERS)))
    loop = header.startswith(("for", "while", "async for"))
    return [f"{pad}{header}{draw(_comment())}", *draw(blocks(depth + 1, in_loop or loop, in_function, in_async))]


@st.composite
def _comment(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", "", "", "", "  # micro-batch", "  # noqa: GA001", "  # noqa",
                                 "  # noqa: GA002, GA004"]))


def _maybe(draw: st.DrawFn, line: str, pad: str) -> list[str]:
    return [pad + line] if draw(st.booleans()) else []


@st.composite
def accumulation_loops(draw: st.DrawFn, depth: int, in_async: bool) -> list[str]:
    """A loop shaped like gradient accumulation, each part present or not, misplaced or not, with
    random statements around it: where most rules have something to decide."""
    pad, inner = "\t" * depth, "\t" * (depth + 1)
    k, c = _k(draw), draw(st.sampled_from(["i", "step", "batch_idx"]))
    amp = draw(st.booleans())
    style = draw(st.sampled_from(["enumerate", "counter", "accelerate", "no_sync", "ddp"]))
    header = f"for {c}, batch in enumerate(loader):" if style != "counter" else "for batch in loader:"
    body = draw(blocks(depth + 1, True, True, in_async)) if draw(st.booleans()) else []
    body += _maybe(draw, "optimizer.zero_grad()", inner)
    body.append(inner + draw(st.sampled_from(["loss = criterion(model(batch['x']), batch['y'])",
                                              "loss = model(**batch).loss", "loss = compute_loss(model, batch)",
                                              "loss = F.cross_entropy(model(x), y, reduction='sum')"])))
    body += _maybe(draw, f"loss = loss / {k}", inner)
    backward = draw(st.sampled_from(["scaler.scale(loss).backward()" if amp else "loss.backward()",
                                     "accelerator.backward(loss)", f"(loss / {k}).backward()"]))
    body.append(inner + backward)
    for line in ["torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)", "scheduler.step()",
                 "optimizer.zero_grad()"]:
        body += _maybe(draw, line, inner) if draw(st.booleans()) else []
    if style == "counter" and draw(st.integers(0, 3)):  # or a counter that never advances
        body.append(f"{inner}{c} += 1")
    gate = draw(st.sampled_from([f"({c} + 1) % {k} == 0", f"{c} % {k} == 0", f"({c} + 1) % {k} != 0",
                                 f"({c} + 1) % {k} == 0 or {c} + 1 == len(loader)", "accelerator.sync_gradients"]))
    step = ["scaler.unscale_(optimizer)"] if amp and draw(st.booleans()) else []
    step += ["torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"] if draw(st.booleans()) else []
    step += ["scaler.step(optimizer)", "scaler.update()"] if amp else ["optimizer.step()"]
    step += [line for line in ["scheduler.step()", "optimizer.zero_grad()"] if draw(st.booleans())]
    step = draw(st.permutations(step)) if draw(st.integers(0, 4)) == 0 else step
    if gate.endswith("!= 0"):
        body += [f"{inner}if {gate}:", f"{inner}\tcontinue", *(inner + s for s in step)]
    else:
        body += [f"{inner}if {gate}:", *(inner + "\t" + s for s in step)]
    if draw(st.booleans()):
        body += draw(blocks(depth + 1, True, True, in_async))
    lines = [pad + header, *body]
    if style == "accelerate":  # the same body inside accelerator.accumulate(), one level deeper
        lines = [pad + header, f"{inner}with accelerator.accumulate(model):", *("\t" + line for line in body)]
    elif style == "ddp":
        lines.insert(0, f"{pad}model = torch.nn.parallel.DistributedDataParallel(model)")
    elif style == "no_sync":
        lines = [f"{pad}model = DDP(model)", pad + header,
                 f"{inner}with (model.no_sync() if ({c} + 1) % {k} else contextlib.nullcontext()):",
                 *("\t" + line for line in body)]
    if draw(st.booleans()):  # a remainder step after the loop
        lines += [f"{pad}if len(loader) % {k}:", f"{pad}\toptimizer.step()", f"{pad}\toptimizer.zero_grad()"]
    return lines


@st.composite
def programs(draw: st.DrawFn) -> str:
    lines = ["import torch", "from torch.nn.utils import clip_grad_norm_", f"K = {draw(st.integers(1, 8))}"]
    if draw(st.booleans()):  # a helper the loop may call
        lines += ["def helper(model, batch, optimizer):", *draw(blocks(1, False, True, False)), "\treturn loss"]
    if draw(st.booleans()):  # a method on a trainer, where counters and K live on self
        lines += ["class Trainer:", "\tdef __init__(self, model):", "\t\tself.accum_steps = 4", "\t\tself.step = 0",
                  "\tdef train(self, loader):", *draw(blocks(2, False, True, False))]
    asynchronous = draw(st.booleans())
    lines += [f"{'async ' if asynchronous else ''}def train(model, loader, optimizer):",
              "\tfor epoch in range(epochs):",
              *draw(accumulation_loops(2, asynchronous) if draw(st.integers(0, 3))
                    else blocks(2, True, True, asynchronous))]
    if draw(st.booleans()):  # work after the loop: a remainder step, or not
        lines += draw(blocks(1, False, True, asynchronous))
    indent = draw(st.sampled_from(["    ", "  ", "\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(line.replace("\t", indent) for line in lines) + newline
    with warnings.catch_warnings():  # `assert (a, b)` and the like: valid code that CPython warns of
        warnings.simplefilter("ignore")
        compile(text, "generated.py", "exec", dont_inherit=True)  # the generator's own check: valid code only
    return text


def _shown(result: FileResult) -> list[tuple[object, ...]]:
    assert result.error is None or "internal error" not in result.error.reason, result.error.traceback
    error = [(result.error.reason, result.error.line)] if result.error is not None else []
    return error + [(d.row, d.column, d.end_row, d.end_column, d.code, d.message, d.fix) for d in result.diagnostics]


SLOW = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])


@SLOW
@given(programs())
def test_every_speed_up_gives_the_whole_parses_diagnostics(source: str) -> None:
    whole = _shown(check_source(source, "generated.py", RULES))
    assert _shown(check_source(source, "generated.py", RULES, stages=True)) == whole
    assert _shown(check_source(source, "generated.py", RULES, prefilter=True)) == whole


@SLOW
@given(programs())
def test_the_built_tree_is_libcsts_parse(source: str) -> None:
    try:
        built_module(source, ast.parse(source))
    except Unsupported:
        return
    difference = first_difference(cst.parse_module(source), assert_listed(source))
    assert difference is None, difference


@SLOW
@given(programs())
def test_fixed_programs_compile_and_a_second_fix_changes_nothing(source: str) -> None:
    fixed = fix_source(source, "generated.py", RULES, unsafe=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compile(fixed.source, "fixed.py", "exec", dont_inherit=True)
    assert fix_source(fixed.source, "generated.py", RULES, unsafe=True).source == fixed.source
