"""The training-loop model, tested directly: gates, K, loop kinds, loss provenance, helpers."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest

from gradlint.model import Kind, LoopKind, Scaling, When, build_model, drained_iterable, loop_counter
from gradlint.model.counters import steps_on_first_micro_batch
from gradlint.model.gates import Phase, periodicity
from gradlint.model.syntax import code


def _expr(text: str) -> cst.BaseExpression:
    return cst.parse_expression(text)


def _no_names(name: str) -> list:
    return []


@pytest.mark.parametrize(
    ("condition", "phase", "modulus", "counter"),
    [
        ("(i + 1) % K == 0", Phase.ONCE, "K", "i"),
        ("not (i + 1) % K", Phase.ONCE, "K", "i"),
        ("(i + 1) % K != 0", Phase.REST, "K", "i"),
        ("(i + 1) % K", Phase.REST, "K", "i"),
        ("i % args.gradient_accumulation_steps == 0", Phase.ONCE, "args.gradient_accumulation_steps", "i"),
        ("0 == step % self.accum", Phase.ONCE, "self.accum", "step"),
        ("(step + 1) % K == 0 or step == len(loader) - 1", Phase.ONCE, "K", "step"),
        ("(step + 1) % K == 0 and epoch > 0", Phase.ONCE, "K", "step"),
        ("ni - last_opt_step >= accumulate", Phase.ONCE, "accumulate", "ni"),
        ("accelerator.sync_gradients", Phase.ONCE, None, None),
        ("not accelerator.sync_gradients", Phase.REST, None, None),
        ("is_update", Phase.ONCE, None, None),
        ("self.is_accumulating", Phase.REST, None, None),
        ("engine.is_gradient_accumulation_boundary()", Phase.ONCE, None, None),
    ],
)
def test_periodic_conditions(condition: str, phase: Phase, modulus: str | None, counter: str | None) -> None:
    found = periodicity(_expr(condition), _no_names)
    assert found is not None
    assert found.phase is phase
    assert (code(found.modulus) if found.modulus is not None else None) == modulus
    assert (code(found.counter) if found.counter is not None else None) == counter


@pytest.mark.parametrize(
    "condition",
    ["args.clip > 0", "scaler is not None", "use_amp", "epoch == 0", "global_step >= max_steps", "x % 2"[:1]],
)
def test_non_periodic_conditions(condition: str) -> None:
    assert periodicity(_expr(condition), _no_names) is None


def test_last_batch_clause_is_recorded() -> None:
    found = periodicity(_expr("(i + 1) % K == 0 or (i + 1) == len(loader)"), _no_names)
    assert found is not None and found.has_alternative
    found = periodicity(_expr("(i + 1) % K == 0"), _no_names)
    assert found is not None and not found.has_alternative


@pytest.mark.parametrize(
    ("condition", "short"),
    [
        # the old Hugging Face examples: a last-batch clause for epochs of at most K only
        ("(i + 1) % K == 0 or (len(it) <= K and (i + 1) == len(it))", "len(it) <= K"),
        ("(i + 1) % K == 0 or ((i + 1) == len(it) and len(it) <= K)", "len(it) <= K"),
        ("(i + 1) % K == 0 or (n < K and i + 1 == n)", "n < K"),
        ("(i + 1) % K == 0 or (K >= len(it) and len(it) == i + 1)", "K >= len(it)"),
        # a full clause beside it, before or after: every epoch's last batch steps
        ("(i + 1) % K == 0 or (len(it) <= K and i + 1 == len(it)) or i + 1 == len(it)", None),
        ("(i + 1) % K == 0 or i + 1 == len(it) or (len(it) <= K and i + 1 == len(it))", None),
        # not that test: another bound, another length, no last-batch comparison, a flag
        ("(i + 1) % K == 0 or (len(it) <= M and i + 1 == len(it))", None),
        ("(i + 1) % K == 0 or (len(it) <= K and i + 1 == len(other))", None),
        ("(i + 1) % K == 0 or (len(it) <= K and not done)", None),
        ("(i + 1) % K == 0 or (len(it) > K and i + 1 == len(it))", None),
        ("(i + 1) % K == 0 or short_epoch_last_batch", None),
    ],
)
def test_short_epoch_clause(condition: str, short: str | None) -> None:
    """Whether every alternative to the period holds only in an epoch of at most K micro-batches
    (GA004 flags those); any other alternative is a last-batch clause, as before."""
    found = periodicity(_expr(condition), _no_names)
    assert found is not None and found.has_alternative
    assert (code(found.short_epoch_test) if found.short_epoch_test is not None else None) == short


@pytest.mark.parametrize(
    ("condition", "residue", "offset"),
    [
        ("i % K == 0", 0, 0),
        ("not i % K", 0, 0),
        ("not (i % K != 0)", 0, 0),
        ("i % K == 0 or i + 1 == len(loader)", 0, 0),
        ("(i + 1) % K == 0", 0, 1),
        ("i % K == K - 1", None, 0),
        ("i % 4 == 3", 3, 0),
    ],
)
def test_periodic_residue(condition: str, residue: float | None, offset: float) -> None:
    """The residue the step's phase tests for: `i % K == 0` holds at i == 0, `(i + 1) % K == 0`
    does not."""
    found = periodicity(_expr(condition), _no_names)
    assert found is not None and found.phase is Phase.ONCE and found.test is not None
    assert (found.residue, found.offset) == (residue, offset)


def test_counter_reset_gate_has_no_residue() -> None:
    found = periodicity(_expr("acc == 0"), lambda name: [(_expr("(acc + 1) % K"), _no_names)])
    assert found is not None and found.residue is None


def _model(source: str):
    return build_model(cst.parse_module(textwrap.dedent(source)))


def _only_loop(source: str):
    loops = [loop for loop in _model(source).loops if loop.of_kind(Kind.BACKWARD)]
    assert len(loops) == 1, [loop.kind for loop in loops]
    return loops[0]


def _scaling(source: str) -> Scaling:
    """How the one backward of the one loop in `source` was scaled."""
    model = _model(source)
    [loop] = model.loops
    [backward] = loop.of_kind(Kind.BACKWARD)
    return model.provenance(loop, backward).scaling


def test_flag_computed_first_is_the_gate() -> None:
    loop = _only_loop("""
        for step, batch in enumerate(loader):
            is_update = (step + 1) % accum_iter == 0
            loss = model(batch) / accum_iter
            loss.backward()
            if is_update:
                optimizer.step()
                optimizer.zero_grad()
    """)
    assert loop.kind is LoopKind.GATED
    assert loop.k_text == "accum_iter"
    assert {e.kind: loop.when(e) for e in loop.events} == {
        Kind.BACKWARD: When.EVERY, Kind.STEP: When.ONCE, Kind.ZERO_GRAD: When.ONCE,
    }


def test_modular_counter_gate() -> None:
    loop = _only_loop("""
        acc = 0
        for batch in loader:
            (model(batch) / K).backward()
            acc = (acc + 1) % K
            if acc == 0:
                optimizer.step()
                optimizer.zero_grad()
    """)
    assert loop.kind is LoopKind.GATED and loop.k_text == "K"


def test_early_continue_gates_what_follows() -> None:
    loop = _only_loop("""
        for i, batch in enumerate(loader):
            (model(batch) / K).backward()
            if (i + 1) % K != 0:
                continue
            optimizer.step()
            optimizer.zero_grad()
    """)
    assert loop.kind is LoopKind.GATED
    assert all(loop.when(e) is When.ONCE for e in loop.events if e.kind is not Kind.BACKWARD)


def test_break_does_not_gate() -> None:
    loop = _only_loop("""
        for i, batch in enumerate(loader):
            if i >= max_steps:
                break
            model(batch).backward()
            optimizer.step()
            optimizer.zero_grad()
    """)
    assert loop.kind is LoopKind.PLAIN


def test_else_branch_runs_on_the_rest() -> None:
    loop = _only_loop("""
        for i, batch in enumerate(loader):
            (model(batch) / K).backward()
            if (i + 1) % K == 0:
                optimizer.step()
            else:
                optimizer.zero_grad()
    """)
    [zero] = loop.of_kind(Kind.ZERO_GRAD)
    assert loop.when(zero) is When.REST


def test_inner_micro_step_loop() -> None:
    loop = _only_loop("""
        while True:
            optimizer.zero_grad(set_to_none=True)
            for micro_step in range(gradient_accumulation_steps):
                loss = model(x) / gradient_accumulation_steps
                scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
    """)
    assert loop.kind is LoopKind.INNER
    assert loop.k_text == "gradient_accumulation_steps"
    assert [loop.when(e) for e in loop.of_kind(Kind.ZERO_GRAD, Kind.CLIP)] == [When.ONCE, When.ONCE]


def test_helpers_in_the_same_module_are_followed() -> None:
    model = _model("""
        class Trainer:
            def train_step(self, batch):
                loss = self.model(batch)
                loss.backward()

            def optimizer_step(self):
                self.optimizer.step()
                self.optimizer.zero_grad()

            def fit(self, loader):
                for i, batch in enumerate(loader):
                    self.train_step(batch)
                    if (i + 1) % self.accum == 0:
                        self.optimizer_step()
    """)
    [loop] = [loop for loop in model.loops if loop.kind is LoopKind.GATED]
    assert loop.k_text == "self.accum"
    [backward] = loop.of_kind(Kind.BACKWARD)
    assert backward.frame.via  # reached through train_step()
    assert model.provenance(loop, backward).scaling is Scaling.RAW


def test_gate_passed_into_a_helper_as_a_flag() -> None:
    model = _model("""
        def step_if(update, optimizer):
            if update:
                optimizer.step()
                optimizer.zero_grad()

        def train(loader):
            for i, batch in enumerate(loader):
                (model(batch) / K).backward()
                step_if((i + 1) % K == 0, optimizer)
    """)
    [loop] = [loop for loop in model.loops if loop.kind is LoopKind.GATED]
    assert loop.k_text == "K"


@pytest.mark.parametrize(
    ("statement", "scaling"),
    [
        ("loss.backward()", Scaling.RAW),
        ("(loss / K).backward()", Scaling.DIVIDED),
        ("(loss * (1 / K)).backward()", Scaling.DIVIDED),
        ("loss.div(K).backward()", Scaling.DIVIDED),
        ("scaler.scale(loss / K).backward()", Scaling.DIVIDED),
        ("scaler.scale(loss).backward()", Scaling.RAW),
        ("(loss_sum / num_items_in_batch).backward()", Scaling.DIVIDED),
        ("(loss * weight).backward()", Scaling.NORMALISED),
        ("loss.sum().backward()", Scaling.NORMALISED),
    ],
)
def test_provenance_of_the_backpropagated_value(statement: str, scaling: Scaling) -> None:
    assert _scaling(f"""
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            {statement}
            if (i + 1) % K == 0:
                optimizer.step()
                optimizer.zero_grad()
    """) is scaling


def test_division_on_a_logging_copy_does_not_count() -> None:
    model = _model("""
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            log_loss = loss / K
            loss.backward()
            if (i + 1) % K == 0:
                optimizer.step()
                optimizer.zero_grad()
    """)
    [loop] = model.loops
    [backward] = loop.of_kind(Kind.BACKWARD)
    assert model.provenance(loop, backward).scaling is Scaling.RAW


def test_augmented_division_and_helper_return() -> None:
    model = _model("""
        def compute(model, batch, k):
            return model(batch).loss / k

        for i, batch in enumerate(loader):
            loss = compute(model, batch, K)
            loss.backward()
            other = model(batch).loss
            other /= K
            other.backward()
            if (i + 1) % K == 0:
                optimizer.step()
                optimizer.zero_grad()
    """)
    [loop] = [loop for loop in model.loops if loop.kind is LoopKind.GATED]
    assert [model.provenance(loop, b).scaling for b in loop.of_kind(Kind.BACKWARD)] == [
        Scaling.DIVIDED, Scaling.DIVIDED,
    ]


@pytest.mark.parametrize(
    ("lines", "divisor"),
    [
        # Every assignment of `loss` reads as "divided" (a ratio weight, a normaliser): the one by K
        # is the divisor, whichever assignment comes first.
        (["loss = loss / (1.0 + margin)", "loss = loss / grad_accum"], "grad_accum"),
        (["loss = loss / (1.0 + margin)", "loss /= grad_accum"], "grad_accum"),
        (["loss = loss / (1.0 + margin)", "loss = loss / K"], "K"),
        (["loss = loss / num_tokens"], "num_tokens"),  # a named divisor over the ratio weight
    ],
)
def test_the_divisor_of_a_loss_divided_several_times(lines: list[str], divisor: str) -> None:
    body = "\n".join(f"            {line}" for line in lines)
    model = _model(f"""
        for i, (x, y) in enumerate(loader):
            loss = (w / torch.exp(logvar)) * criterion(model(x), y) + logvar
{body}
            loss.backward()
            if (i + 1) % K == 0:
                optimizer.step()
                optimizer.zero_grad()
    """)
    [loop] = model.loops
    [backward] = loop.of_kind(Kind.BACKWARD)
    found = model.provenance(loop, backward)
    assert found.scaling is Scaling.DIVIDED
    assert code(found.divisor) == divisor



@pytest.mark.parametrize(("count", "scaling"), [
    # The count of this micro-batch's own tokens, computed where the loss is: a mean written by hand.
    ("mask.sum()", Scaling.RAW),
    ("torch.sum(mask)", Scaling.RAW),
    ("(mask.sum() + 1e-8)", Scaling.RAW),
    ("mask.float().sum().item()", Scaling.RAW),
    ("x.shape[0]", Scaling.RAW),
    # A count given from outside, or of the window's micro-batches: it may be the window's.
    ("num_items_in_window", Scaling.DIVIDED),
    ("sum(m.sum() for m in window_masks)", Scaling.DIVIDED),
    ("torch.stack([m.sum() for m in window_masks]).sum()", Scaling.DIVIDED),
])
def test_a_token_mean_of_the_micro_batch_is_undivided(count: str, scaling: Scaling) -> None:
    assert _scaling(f"""
        def train(model, loader, optimizer, K, num_items_in_window, window_masks):
            for i, (x, y) in enumerate(loader):
                mask = (y != -100)
                n = {count}
                loss = (criterion(model(x), y) * mask).sum() / n
                loss.backward()
                if (i + 1) % K == 0:
                    optimizer.step()
                    optimizer.zero_grad()
    """) is scaling


@pytest.mark.parametrize(("lines", "scaling"), [
    # A mask weighting the terms, then their mean over the micro-batch: the mean reaches backward.
    (["loss = loss * mask", "loss = torch.sum(loss) / (mask.sum() + 1e-8)"], Scaling.RAW),
    # A division by K before the mean, or after it, still scales what reaches backward.
    (["loss = loss / K", "loss = torch.sum(loss) / mask.sum()"], Scaling.DIVIDED),
    (["loss = torch.sum(loss * mask) / mask.sum()", "loss = loss / K"], Scaling.DIVIDED),
    # Not a reassignment of the loss: the weighted value is another name's.
    (["weighted = loss * mask", "loss = torch.sum(weighted) / mask.sum()"], Scaling.RAW),
])
def test_a_hand_mean_reassigned_over_earlier_values(lines: list[str], scaling: Scaling) -> None:
    body = "\n".join(f"            {line}" for line in lines)
    assert _scaling(f"""
        for i, (x, y) in enumerate(loader):
            mask = (y != -100)
            loss = criterion(model(x), y)
{body}
            loss.backward()
            if (i + 1) % K == 0:
                optimizer.step()
                optimizer.zero_grad()
    """) is scaling

def test_loop_counter_enumerate_start_and_sized() -> None:
    model = _model("""
        for epoch in range(3):
            for i, batch in enumerate(tqdm(train_loader), start=1):
                (model(batch) / K).backward()
                if i % K == 0:
                    optimizer.step()
    """)
    [loop] = model.loops
    counter = loop_counter(loop.loop)
    assert counter.names == frozenset({"i"}) and counter.start == 1 and counter.sized


@pytest.mark.parametrize("iterable", ["range(max_steps)", "itertools.cycle(loader)", "iter(loader)"])
def test_loop_counter_not_sized(iterable: str) -> None:
    model = _model(f"""
        for i, batch in enumerate({iterable}):
            (model(batch) / K).backward()
            if (i + 1) % K == 0:
                optimizer.step()
    """)
    [loop] = model.loops
    assert not loop_counter(loop.loop).sized



@pytest.mark.parametrize(("quiet", "shown", "sized"), [
    ("train_loader", "tqdm(train_loader, desc='Batch')", True),  # both branches show the loader
    ("train_loader", "tqdm(train_loader)", True),
    ("train_loader", "tqdm(other_loader)", False),  # two different iterables: unknown
    ("itertools.cycle(train_loader)", "tqdm(train_loader)", False),
])
def test_loop_counter_through_a_name_bound_in_two_branches(quiet: str, shown: str, sized: bool) -> None:
    model = _model(f"""
        for epoch in range(3):
            if silent:
                iter_ = {quiet}
            else:
                iter_ = {shown}
            for step, batch in enumerate(iter_):
                (model(batch) / K).backward()
                if (step + 1) % K == 0:
                    optimizer.step()
    """)
    [loop] = model.loops
    assert loop_counter(loop.loop).sized is sized

_DRAIN_STOP_ITERATION = """
    for epoch in range(3):
        it = iter(loader)
        idx = 0
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            (model(batch) / K).backward()
            if (idx + 1) % K == 0:
                optimizer.step()
                optimizer.zero_grad()
            idx += 1
"""
_DRAIN_DEFAULT_NONE = """
    for epoch in range(3):
        it = iter(loader)
        idx = 0
        while True:
            batch = next(it, None)
            if batch is None:
                break
            (model(batch) / K).backward()
            if (idx + 1) % K == 0:
                optimizer.step()
                optimizer.zero_grad()
            idx += 1
"""


@pytest.mark.parametrize("source", [_DRAIN_STOP_ITERATION, _DRAIN_DEFAULT_NONE])
def test_while_true_drawing_until_exhausted_is_one_pass_over_the_loader(source: str) -> None:
    [loop] = _model(source).loops
    assert code(drained_iterable(loop.loop)) == "loader"
    counter = loop_counter(loop.loop)
    assert counter.names == frozenset({"idx"}) and counter.sized


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("while True:", "while idx < windows * K:"),  # bounded by something else
        # a second exit
        ("            idx += 1", "            idx += 1\n            if idx == limit:\n                break"),
        ("            (model(batch)", "            if bad:\n                continue\n            (model(batch)"),
        ("            idx += 1", "            idx += 1\n            if bad:\n                return"),
        ("        it = iter(loader)", "        it = iter(loader)\n        it = islice(it, n)"),  # rebound
        ("            idx += 1", "            idx += 1\n            it = iter(loader)"),  # cycles forever
        ("            idx += 1", "            idx += 1\n            it, spare = refill(it)"),
        ("        it = iter(loader)", "        it = iter(loader)\n        if resume:\n            it = skip(it, done)"),
        ("        it = iter(loader)\n", ""),  # the iterator comes from elsewhere: may be half used
        ("iter(loader)", "iter(infinite_loader)"),
    ],
)
def test_while_true_not_one_full_pass(old: str, new: str) -> None:
    for source in (_DRAIN_STOP_ITERATION, _DRAIN_DEFAULT_NONE):
        assert old in source
        [loop] = _model(source.replace(old, new)).loops
        counter = loop_counter(loop.loop)
        assert drained_iterable(loop.loop) is None or not counter.sized, new


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("        idx = 0\n", ""),  # not reset per pass: a counter across epochs
        ("        idx = 0\n", "        idx = 0\n        idx = start\n"),  # resumed
        ("            idx += 1", "            if ok:\n                idx += 1"),  # not every pass
        ("            idx += 1", "            idx += 1\n            idx += 1"),
        ("            idx += 1", "            idx += 1\n            idx, spare = divmod(idx, 7)"),
    ],
)
def test_while_true_counter_must_count_every_pass_from_zero(old: str, new: str) -> None:
    for source in (_DRAIN_STOP_ITERATION, _DRAIN_DEFAULT_NONE):
        assert old in source
        [loop] = _model(source.replace(old, new)).loops
        assert "idx" not in loop_counter(loop.loop).names


def test_framework_kinds() -> None:
    model = _model("""
        import deepspeed

        accelerator = Accelerator(gradient_accumulation_steps=4)
        for batch in loader:
            with accelerator.accumulate(model):
                accelerator.backward(model(batch).loss)
                optimizer.step()
                optimizer.zero_grad()

        for batch in loader:
            loss = engine(batch)
            engine.backward(loss)
            engine.step()
    """.replace("engine", "model_engine"))
    assert sorted(loop.kind.value for loop in model.loops) == ["accelerate", "engine"]


def test_gan_generator_updated_every_nth_pass_accumulates_nothing() -> None:
    """WGAN / BasicSR: the generator's backward runs under its own step's gate, the discriminator's
    backward on every pass before its every-pass step: each optimizer applies its own pass."""
    loop = _only_loop("""
        for i, real in enumerate(loader):
            opt_d.zero_grad()
            d_loss = criterion(D(real), ones)
            d_loss.backward()
            opt_d.step()
            if i % n_critic == 0:
                opt_g.zero_grad()
                criterion(D(G(z)), ones).backward()
                opt_g.step()
    """)
    assert loop.kind is LoopKind.PLAIN
    loop = _only_loop("""
        for it, (x, y) in enumerate(loader):
            opt_g.zero_grad()
            out = net_g(x)
            if it % n_d == 0:
                net_d(out).mean().backward()
                opt_g.step()
            opt_d.zero_grad()
            net_d(out.detach()).mean().backward()
            opt_d.step()
    """)
    assert loop.kind is LoopKind.PLAIN


def test_gan_with_a_backward_on_every_pass_and_a_gated_step_is_mixed() -> None:
    """The generator's backward runs on every pass but its step every n-th: which backward feeds
    which optimizer is beyond a static look (`mixed`), and the loop stays a gated one."""
    loop = _only_loop("""
        for i, real in enumerate(loader):
            g_loss = criterion(D(G(z)), ones)
            g_loss.backward()
            if i % n_critic == 0:
                opt_g.step()
                opt_g.zero_grad()
            opt_d.zero_grad()
            d_loss = criterion(D(real), ones)
            d_loss.backward()
            opt_d.step()
    """)
    assert loop.kind is LoopKind.GATED and loop.mixed
    assert [code(e.spec.value) for e in loop.accumulating_backwards()] == ["g_loss", "d_loss"]
    loop = _only_loop("""
        for i, real in enumerate(loader):
            opt_d.zero_grad()
            d_loss = criterion(D(real), ones)
            d_loss.backward()
            opt_d.step()
            aux = criterion(G(z), target)
            aux.backward()
            if i % n_critic == 0:
                criterion(D(G(z)), ones).backward()
                opt_g.step()
                opt_g.zero_grad()
    """)
    assert loop.kind is LoopKind.GATED  # `aux` runs after the discriminator's last step: it accumulates


def test_training_only_every_kth_batch_accumulates_nothing() -> None:
    loop = _only_loop("""
        for i, batch in enumerate(loader):
            if i % 4 == 0:
                model(batch).backward()
                optimizer.step()
                optimizer.zero_grad()
    """)
    assert loop.kind is LoopKind.PLAIN


@pytest.mark.parametrize(
    ("source", "first"),
    [
        ("for i, b in enumerate(loader):\n    (f(b) / K).backward()\n    if i % K == 0:\n        opt.step()\n"
         "        opt.zero_grad()\n", True),
        ("for i, b in enumerate(loader):\n    acc = i % K != 0\n    (f(b) / K).backward()\n    if not acc:\n"
         "        opt.step()\n        opt.zero_grad()\n", True),
        ("for i, b in enumerate(loader, start=1):\n    (f(b) / K).backward()\n    if i % K == 0:\n"
         "        opt.step()\n        opt.zero_grad()\n", False),
        ("for i, b in enumerate(loader):\n    (f(b) / K).backward()\n    if (i + 1) % K == 0:\n"
         "        opt.step()\n        opt.zero_grad()\n", False),
        ("n = 0\nfor b in loader:\n    n += 1\n    (f(b) / K).backward()\n    if n % K == 0:\n"
         "        opt.step()\n        opt.zero_grad()\n", False),
        ("n = 0\nfor b in loader:\n    (f(b) / K).backward()\n    if n % K == 0:\n        opt.step()\n"
         "        opt.zero_grad()\n    n += 1\n", True),
    ],
)
def test_steps_on_first_micro_batch(source: str, first: bool) -> None:
    """Whether every pass over the loader opens with a step (a 0-based counter tested for 0)."""
    assert steps_on_first_micro_batch(_only_loop(source)) is first


def test_events_before_the_loop_in_its_pass() -> None:
    loop = _only_loop("""
        optimizer.zero_grad()
        for epoch in range(epochs):
            scheduler.step()
            for x in eval_loader:
                optimizer.zero_grad()
            optimizer.zero_grad()
            for i, b in enumerate(loader):
                (f(b) / K).backward()
                if (i + 1) % K == 0:
                    optimizer.step()
                    optimizer.zero_grad()
    """)
    # the epoch's own statements before the loop; not the one before training, not a sibling loop's
    assert [e.kind for e in loop.before] == [Kind.SCHEDULER_STEP, Kind.ZERO_GRAD]


@pytest.mark.parametrize(
    ("config", "k"),
    [
        ('{"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 8}', 8),
        ('{"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1}', 1),
        ('{"train_micro_batch_size_per_gpu": 4}', 1),  # DeepSpeed's default
        ('{"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4}', None),  # depends on the world size
        ('{"gradient_accumulation_steps": args.gas}', None),
        ('{**base, "gradient_accumulation_steps": 1}', None),
        ('{"gradient_accumulation_steps": 1}\n    cfg["gradient_accumulation_steps"] = args.gas', None),
        ('{"gradient_accumulation_steps": 1}\n    cfg.update(extra)', None),
        ('{"gradient_accumulation_steps": 1}\n    cfg["bf16"] = {"enabled": True}', 1),
    ],
)
def test_engine_accumulation_from_a_visible_config(config: str, k: float | None) -> None:
    from gradlint.model.engine_config import engine_accumulation

    loop = _only_loop(f"""
        def main():
            cfg = {config}
            engine, _, _, _ = deepspeed.initialize(model=net, config=cfg)
            for batch in loader:
                engine.backward(engine(batch).loss)
                engine.step()
    """.replace("\n    cfg", "\n            cfg"))
    [backward] = loop.of_kind(Kind.BACKWARD)
    assert engine_accumulation(backward.spec.receiver, backward.frame) == k


@pytest.mark.parametrize(
    ("call", "kinds"),
    [
        ("loss.backward()", [Kind.BACKWARD]),
        ("torch.autograd.backward(loss)", [Kind.BACKWARD]),
        ("self.manual_backward(loss)", [Kind.BACKWARD]),
        ("optimizer.step()", [Kind.STEP]),
        ("optimizers[0].zero_grad()", [Kind.ZERO_GRAD]),
        ("p.grad.zero_()", [Kind.ZERO_GRAD]),
        ("torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)", [Kind.CLIP]),
        ("clip_grad_value_(params, 1.0)", [Kind.CLIP]),
        ("scaler.unscale_(optimizer)", [Kind.UNSCALE]),
        ("scaler.update()", [Kind.SCALER_UPDATE]),
        ("p.grad.div_(K)", [Kind.GRAD_RESCALE]),
        ("trainer.optimizer.multiply_grads(1 / K)", [Kind.GRAD_RESCALE]),
        ("loss_scaler(loss, optimizer, update_grad=(i + 1) % K == 0)", [Kind.BACKWARD, Kind.STEP]),
        ("model(x)", []),
        ("print(loss.item())", []),
        ("x.register_backward_hook(f)", []),
        ("make()(loss)", []),
    ],
)
def test_classify_call_names_every_event_form(call: str, kinds: list[Kind]) -> None:
    """The early return for calls that cannot be events (by their last name) keeps every form
    that is one, whatever the receiver or the callee's shape."""
    from gradlint.model.events import classify_call
    from gradlint.model.facts import collect_facts

    module = cst.parse_module(f"optimizer = torch.optim.AdamW(params)\nscaler = GradScaler()\n{call}\n")
    node = module.body[-1].body[0].value  # type: ignore[attr-defined]
    assert [spec.kind for spec in classify_call(node, collect_facts(module))] == kinds


def test_a_probe_backward_cleared_before_any_step_is_discarded() -> None:
    loop = _only_loop("""
        for i, (x, y) in enumerate(loader):
            if probe_now(state):
                if aux is not None:
                    (f(x) + aux).backward()
                else:
                    f(x).backward()
                optimizer.zero_grad()
            (g(x) / K).backward()
            if (i + 1) % K == 0:
                optimizer.step()
                optimizer.zero_grad()
    """)
    probes, main = loop.of_kind(Kind.BACKWARD)[:2], loop.of_kind(Kind.BACKWARD)[2]
    assert all(loop.discarded(b) for b in probes)
    assert not loop.discarded(main)  # the window's own backward: the step uses it
    loop = _only_loop("""
        for i, (x, y) in enumerate(loader):
            (g(x) / K).backward()
            optimizer.zero_grad()
            if (i + 1) % K == 0:
                optimizer.step()
    """)
    assert not loop.discarded(loop.of_kind(Kind.BACKWARD)[0])  # unconditional: GA001's bug, not a probe
    loop = _only_loop("""
        for i, (x, y) in enumerate(loader):
            if probe_now(state):
                f(x).backward()
                if (i + 1) % K == 0:
                    optimizer.step()
                optimizer.zero_grad()
            (g(x) / K).backward()
    """)
    assert not loop.discarded(loop.of_kind(Kind.BACKWARD)[0])  # a step may use it first


@pytest.mark.parametrize(("branch", "kept"), [
    ("if params.amp == -1:", False),  # `amp >= 0` fails there: the assert makes K 1
    ("if not params.amp >= 0:", True),  # not read as the assert's condition negated (kept: conservative)
    ("if params.amp == 0:", True),  # `amp >= 0` holds: K may be anything
    ("if params.fp16:", True),
])
def test_a_branch_where_an_assert_makes_k_one_does_not_accumulate(branch: str, kept: bool) -> None:
    loop = _only_loop(f"""
        assert params.amp >= 0 or params.accumulate_gradients == 1
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            {branch}
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            else:
                (loss / params.accumulate_gradients).backward()
                if (i + 1) % params.accumulate_gradients == 0:
                    optimizer.step()
                    optimizer.zero_grad()
    """)
    assert loop.kind is LoopKind.GATED
    clears = [e for e in loop.of_kind(Kind.ZERO_GRAD) if e.order < loop.of_kind(Kind.BACKWARD)[0].order]
    assert bool(clears) is kept


def test_the_else_of_the_asserted_condition_does_not_accumulate() -> None:
    loop = _only_loop("""
        assert params.amp >= 0 or params.accumulate_gradients == 1
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            if params.amp >= 0:
                (loss / params.accumulate_gradients).backward()
                if (i + 1) % params.accumulate_gradients == 0:
                    optimizer.step()
                    optimizer.zero_grad()
            else:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    """)
    [clear] = loop.of_kind(Kind.ZERO_GRAD)  # the plain branch's clear is not the window's
    assert loop.when(clear) is When.ONCE


@pytest.mark.parametrize(("line", "scaling"), [
    ("loss = extract_loss(report, K)", Scaling.UNKNOWN),  # a function of another module, given K
    ("loss = extract_loss(report, n)", Scaling.UNKNOWN),  # ... or a value made from K
    ("loss = extract_loss(report)", Scaling.RAW),
    ("loss = extract_loss(report, 2)", Scaling.RAW),
])
def test_a_call_out_of_sight_given_k_may_divide(line: str, scaling: Scaling) -> None:
    assert _scaling(f"""
        from elsewhere import extract_loss
        for i, batch in enumerate(loader):
            n = min(K, len(loader) - i)
            report = model(batch)
            {line}
            loss.backward()
            if (i + 1) % K == 0:
                optimizer.step()
                optimizer.zero_grad()
    """) is scaling
