"""In-process scenarios (gradlint.probe.watch): one per bug class and per tricky-but-correct loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradlint.probe as gp

from .helpers import batches, loader, mlp, token_batches

K = 4


def _rows(report: gp.ProbeReport, optimizer: str | None = None) -> list[gp.StepRow]:
    return [r for r in report.rows if optimizer is None or r.optimizer == optimizer]


def test_correct_loop_matches_exactly() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(8), 1):
            (F.cross_entropy(model(x), y) / K).backward()
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    report = probe.report
    assert report.ok and not report.findings
    assert [r.verdict for r in report.rows] == ["ok", "ok"]
    row = report.rows[0]
    assert row.window == 4 and row.coefficients == pytest.approx([0.25] * 4)
    assert row.counts == [8.0] * 4 and row.reference == "token"
    assert row.ratio == pytest.approx(1.0, abs=1e-5) and row.cosine == pytest.approx(1.0, abs=1e-6)


def test_ga001_zero_grad_every_micro_batch() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(8), 1):
            opt.zero_grad()
            (F.cross_entropy(model(x), y) / K).backward()
            if i % K == 0:
                opt.step()
    report = probe.report
    assert not report.ok
    (f,) = report.findings
    assert f.code == "GA001" and f.severity == "error" and f.steps == [1, 2]
    assert "only 1 of 4 micro-batches survived" in f.message
    assert "zero_grad at test_inprocess.py:" in f.message
    assert f.row == test_ga001_zero_grad_every_micro_batch.__code__.co_firstlineno + 5
    assert all(r.cosine is not None and r.cosine < 0.95 for r in report.rows)


def test_ga002_loss_not_divided_by_k() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for i, (x, y) in enumerate(batches(8), 1):
            F.cross_entropy(model(x), y).backward()
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    (f,) = probe.report.findings
    assert f.code == "GA002" and f.severity == "error"
    assert "gradient is 4.00x the large-batch gradient: loss not divided by K=4" in f.message
    assert probe.report.rows[0].ratio == pytest.approx(4.0, rel=1e-5)


def test_ga003_clip_before_window_complete() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(8), 1):
            (F.cross_entropy(model(x), y) / K).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    (f,) = probe.report.findings
    assert f.code == "GA003" and f.severity == "error"
    assert "clip_grad_norm_ ran after 1, 2, 3 of 4 micro-batches" in f.message
    # the clip after the 4th micro-batch is the legitimate one: its coefficient is shown
    assert all(r.clip is not None and r.clip < 1 for r in probe.report.rows)


def test_clip_once_after_window_is_ok_and_compared_before_the_clip() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(8), 1):
            (F.cross_entropy(model(x), y) / K).backward()
            if i % K == 0:
                nn.utils.clip_grad.clip_grad_norm_(model.parameters(), 0.05)
                opt.step()
                opt.zero_grad()
    report = probe.report
    assert report.ok and not report.findings
    assert all(r.ratio == pytest.approx(1.0, abs=1e-5) and r.clip < 0.5 for r in report.rows)


def test_clip_hides_no_scale_error() -> None:
    """Loss not divided by K, clipped: the post-clip gradient looks fine, the pre-clip one does not."""
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(4), 1):
            F.cross_entropy(model(x), y).backward()
            if i % K == 0:
                nn.utils.clip_grad_norm_(model.parameters(), 0.01)
                opt.step()
                opt.zero_grad()
    assert probe.report.codes == {"GA002"}
    assert probe.report.rows[0].ratio == pytest.approx(4.0, rel=1e-5)


def _epoch_loop(mode: str, epochs: int = 2) -> gp.ProbeReport:
    model = mlp()
    data = loader(10)  # 10 micro-batches per epoch, K=4: remainder of 2
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(epochs):
            if mode == "drop":
                opt.zero_grad()
            for i, (x, y) in enumerate(data, 1):
                (F.cross_entropy(model(x), y) / K).backward()
                if i % K == 0 or (mode == "partial" and i == len(data)):
                    opt.step()
                    opt.zero_grad()
    return probe.report


def test_ga004_remainder_leaks_into_next_epoch() -> None:
    report = _epoch_loop("leak")
    leak = [f for f in report.findings if f.code == "GA004" and "leaked" in f.message]
    assert leak and leak[0].steps == [3]
    assert "2 micro-batches from the end of the previous epoch leaked into step 3" in leak[0].message
    assert "(gradient is 1.50x the large-batch gradient)" in leak[0].message
    row3 = report.rows[2]
    assert row3.window == 6 and row3.ratio == pytest.approx(1.5, rel=1e-5)
    never = [f for f in report.findings if "never stepped" in f.message]
    assert never and never[0].message.startswith("2 micro-batches") and never[0].severity == "error"


def test_ga004_remainder_dropped_by_zero_grad() -> None:
    report = _epoch_loop("drop")
    dropped = [f for f in report.findings if "cleared without a step" in f.message]
    assert len(dropped) == 1 and dropped[0].code == "GA004"
    assert dropped[0].message.startswith("2 micro-batches backwarded after the last optimizer step of the epoch")
    assert all(r.verdict == "ok" for r in report.rows)


def test_ga004_remainder_never_stepped_single_epoch() -> None:
    report = _epoch_loop("leak", epochs=1)
    (f,) = report.findings
    assert f.code == "GA004"
    assert "2 micro-batches backwarded after the last optimizer step were never stepped" in f.message
    assert [r.verdict for r in report.rows] == ["ok", "ok"]


def test_ga004_partial_window_divided_by_k_is_a_warning() -> None:
    report = _epoch_loop("partial", epochs=1)
    (f,) = report.findings
    assert f.code == "GA004" and f.severity == "warning" and f.steps == [3]
    assert "the last window has 2 micro-batches but the loss was divided by K=4" in f.message
    assert report.rows[2].ratio == pytest.approx(0.5, rel=1e-5) and report.ok


def _amp_loop(unscale: bool, fused: bool = False, init_scale: float = 65536.0, clip: float | None = 0.5,
              direct_step: bool = False, overflow_first: bool = False) -> gp.ProbeReport:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused) if fused else \
            torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
        for i, (x, y) in enumerate(batches(8), 1):
            if overflow_first and i == 1:
                x = x * 3e38  # overflows to inf under the scale: GradScaler must skip the first step
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y) / K
            scaler.scale(loss).backward()
            if i % K == 0:
                if unscale:
                    scaler.unscale_(opt)
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                if direct_step:
                    opt.step()
                else:
                    scaler.step(opt)
                    scaler.update()
                opt.zero_grad()
    return probe.report


def test_amp_correct_unscale_then_clip() -> None:
    report = _amp_loop(unscale=True)
    assert report.ok and not report.findings
    assert report.rows[0].coefficients == pytest.approx([65536 / 4] * 4)
    assert report.rows[0].ratio == pytest.approx(1.0, abs=1e-4)


def test_ga005_clip_saw_scaled_gradients() -> None:
    report = _amp_loop(unscale=False)
    (f,) = report.findings
    assert f.code == "GA005" and f.severity == "error"
    assert "clip_grad_norm_ saw scaled gradients: scale 65536, effective threshold 7.6e-06 instead of 0.5" in f.message
    assert report.rows[0].clip is not None and report.rows[0].clip < 1e-4


def test_ga005_step_on_scaled_gradients() -> None:
    report = _amp_loop(unscale=False, clip=None, direct_step=True, init_scale=1024.0)
    (f,) = report.findings
    assert f.code == "GA005" and "still multiplied by the GradScaler scale 1024" in f.message
    assert report.rows[0].ratio == pytest.approx(1024.0, rel=1e-4)


def test_fused_optimizer_under_gradscaler_sees_scaled_gradients() -> None:
    report = _amp_loop(unscale=False, fused=True, clip=None)
    assert report.ok and not report.findings
    assert report.rows[0].ratio == pytest.approx(1.0, abs=1e-4)


def test_skipped_amp_step_is_info() -> None:
    report = _amp_loop(unscale=True, overflow_first=True)
    assert report.ok
    skipped = report.findings_for("GA100")
    assert skipped and skipped[0].severity == "info" and "GradScaler skipped optimizer step 1" in skipped[0].message
    assert report.rows[0].verdict == "info" and report.rows[1].verdict == "ok"


class TinyLM(nn.Module):
    """Returns its own loss like a Hugging Face causal LM (loss computed inside forward)."""

    def __init__(self, vocab: int = 11) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None,
                num_items_in_batch: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.head(self.emb(ids))
        out = {"logits": logits}
        if labels is not None:
            flat, target = logits.flatten(0, 1), labels.flatten()
            if num_items_in_batch is None:
                out["loss"] = nn.functional.cross_entropy(flat, target, ignore_index=-100)
            else:
                out["loss"] = nn.functional.cross_entropy(flat, target, ignore_index=-100,
                                                          reduction="sum") / num_items_in_batch
        return out


def _lm_loop(num_items: bool) -> gp.ProbeReport:
    model = TinyLM()
    data = token_batches(4)
    with gp.watch() as probe:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        n = sum(int((labels != -100).sum()) for _, labels in data)
        for ids, labels in data:
            if num_items:
                loss = model(ids, labels, num_items_in_batch=torch.tensor(n))["loss"]
            else:
                loss = model(ids, labels)["loss"] / K
            loss.backward()
        opt.step()
        opt.zero_grad()
    return probe.report


def test_ga013_token_mean_of_means_warning() -> None:
    report = _lm_loop(num_items=False)
    (f,) = report.findings
    assert f.code == "GA013" and f.severity == "warning"
    assert f.message.startswith("window tokens differ (8, 20, 32, 44): mean of means != token mean over the window")
    row = report.rows[0]
    assert row.reference == "token" and row.counts == [8.0, 20.0, 32.0, 44.0]
    assert row.cosine < 0.999 and report.ok  # a warning: exit 0 unless --strict


def test_num_items_in_batch_form_is_token_exact() -> None:
    report = _lm_loop(num_items=True)
    assert not report.findings
    row = report.rows[0]
    assert row.coefficients == pytest.approx([1 / 104] * 4)
    assert row.rel_err < 1e-5 and row.reference == "token"


def test_hand_written_loss_uses_scalar_chain() -> None:
    model = mlp(d_out=1)
    for divide in (True, False):
        with gp.watch() as probe:
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            for i, (x, _) in enumerate(batches(4), 1):
                loss = ((model(x).squeeze(1) - x.sum(1)) ** 2).mean()
                (loss / K if divide else loss).backward()
                if i % K == 0:
                    opt.step()
                    opt.zero_grad()
        row = probe.report.rows[0]
        assert row.coefficients == pytest.approx([0.25 if divide else 1.0] * 4)
        assert row.counts == [8.0] * 4  # from MeanBackward0's input size
        assert probe.report.codes == (set() if divide else {"GA002"})
        assert any("scalar Mul/Div chain" in n for n in probe.report.notes)


def test_composite_loss_is_judged_as_a_whole() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(4), 1):
            out = model(x)
            loss = F.cross_entropy(out, y) + 0.1 * F.mse_loss(out, torch.zeros_like(out))
            (loss / K).backward()
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    report = probe.report
    assert not report.findings and report.rows[0].rel_err < 1e-5
    assert report.rows[0].coefficients == pytest.approx([0.25] * 4)


def test_deliberate_constant_loss_weight_is_info() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(4), 1):
            (0.5 * F.cross_entropy(model(x), y) / K).backward()
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    (f,) = probe.report.findings
    assert f.code == "GA101" and f.severity == "info" and "c*K = 0.5" in f.message
    assert probe.report.ok and probe.report.rows[0].ratio == pytest.approx(0.5, rel=1e-5)


def test_lbfgs_closure_every_evaluation_judged() -> None:
    model = mlp()
    (x, y), = batches(1)
    with gp.watch() as probe:
        opt = torch.optim.LBFGS(model.parameters(), max_iter=4)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        for _ in range(2):
            opt.step(closure)
    report = probe.report
    assert report.ok and not report.findings
    assert len(report.rows) >= 4 and {r.step for r in report.rows} == {1, 2}
    assert all(r.closure is not None and r.verdict == "ok" and r.window == 1 for r in report.rows)


def test_closure_with_accumulation_outside() -> None:
    """Lightning style: micro-batches 1..K-1 outside, the K-th inside optimizer.step(closure)."""
    model = mlp()
    data = batches(8)
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(data, 1):
            def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                loss = F.cross_entropy(model(x), y) / K
                loss.backward()
                return loss

            if i % K == 0:
                opt.step(closure)
                opt.zero_grad()
            else:
                closure()
    report = probe.report
    assert report.ok and [r.window for r in report.rows] == [4, 4]


def test_gan_two_optimizers_and_two_backwards_per_step() -> None:
    torch.manual_seed(0)
    gen, disc = nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    with gp.watch() as probe:
        opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
        opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
        bce = nn.BCEWithLogitsLoss()
        for _ in range(3):
            real, z = torch.randn(16, 8), torch.randn(16, 4)
            disc.zero_grad()
            fake = gen(z)
            bce(disc(real), torch.ones(16, 1)).backward()
            bce(disc(fake.detach()), torch.zeros(16, 1)).backward()
            opt_d.step()
            gen.zero_grad()
            bce(disc(fake), torch.ones(16, 1)).backward()  # also reaches D's params: cleared before D's step
            opt_g.step()
    report = probe.report
    assert report.ok and not report.findings
    assert {r.optimizer for r in report.rows} == {"Adam#0", "Adam#1"}
    assert all(r.verdict == "ok" and r.window == 1 for r in report.rows)
    assert any("ignored 1 contribution(s)" in n for n in report.notes)


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing(reentrant: bool) -> None:
    from torch.utils.checkpoint import checkpoint

    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(4), 1):
            h = checkpoint(model[0], x.requires_grad_(), use_reentrant=reentrant)
            loss = F.cross_entropy(model[2](model[1](h)), y) / K
            loss.backward()
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    assert probe.report.ok and not probe.report.findings
    assert probe.report.rows[0].rel_err < 1e-5


def test_ga006_zero_grad_between_backward_and_step() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(4), 1):
            (F.cross_entropy(model(x), y) / K).backward()
            if i % K == 0:
                opt.zero_grad()
                opt.step()
    (f,) = probe.report.findings
    assert f.code == "GA006" and "stepped on a zero gradient" in f.message
    assert probe.report.rows[0].ratio == 0.0


def test_ga014_gradients_never_cleared() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(8), 1):
            (F.cross_entropy(model(x), y) / K).backward()
            if i % K == 0:
                opt.step()
    report = probe.report
    assert report.rows[0].verdict == "ok"
    (f,) = report.findings
    assert f.code == "GA014" and f.steps == [2] and "not cleared after the previous optimizer step" in f.message


def test_unequal_coefficients_are_ga002() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(4), 1):
            (F.cross_entropy(model(x), y) / i).backward()  # divides by the running count, not K
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    (f,) = probe.report.findings
    assert f.code == "GA002" and "different coefficients (1, 0.5, 0.333333, 0.25)" in f.message


def test_sampled_and_full_accounting_agree_on_a_large_parameter() -> None:
    torch.manual_seed(0)
    model = nn.Linear(256, 64)  # 16384 weights > the 4096-element sample
    results = {}
    for full in (False, True):
        with gp.watch(full=full) as probe:
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for i in range(1, 5):
                opt.zero_grad()  # GA001
                x = torch.randn(8, 256)
                (model(x).pow(2).mean() / K).backward()
                if i % K == 0:
                    opt.step()
        results[full] = probe.report
    assert results[False].codes == results[True].codes == {"GA001"}
    assert results[False].rows[0].cosine == pytest.approx(results[True].rows[0].cosine, abs=0.05)


def test_watch_steps_stops_the_loop() -> None:
    model = mlp()
    ran = []
    with gp.watch(steps=2) as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(40), 1):
            ran.append(i)
            (F.cross_entropy(model(x), y) / K).backward()
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    assert len(ran) == 8 and len(probe.report.rows) == 2 and probe.report.ok


def test_probe_train_step_helper() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def good(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        (F.cross_entropy(model(batch[0]), batch[1]) / K).backward()

    def bad(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        F.cross_entropy(model(batch[0]), batch[1]).backward()

    report = gp.probe_train_step(good, batches(8), optimizer=opt, accumulation_steps=K)
    assert report.ok and len(report.rows) == 2
    report = gp.probe_train_step(bad, batches(8), optimizer=opt, accumulation_steps=K)
    assert report.codes == {"GA002"} and report.exit_code == 1


def test_instrumentation_is_removed_after_watch() -> None:
    before = (torch.autograd.backward, F.cross_entropy, torch.optim.Optimizer.zero_grad,
              nn.utils.clip_grad_norm_, torch.amp.GradScaler.step)
    with gp.watch():
        assert torch.autograd.backward is not before[0] and F.cross_entropy is not before[1]
    after = (torch.autograd.backward, F.cross_entropy, torch.optim.Optimizer.zero_grad,
             nn.utils.clip_grad_norm_, torch.amp.GradScaler.step)
    assert after == before


def test_ga010_first_window_of_one_micro_batch() -> None:
    """`i % K == 0` with a 0-based `i`: step 1 follows micro-batch 0 alone, divided by K; the later
    windows are whole. The first window alone reads like a loss weight; the second tells."""
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(9)):
            (F.cross_entropy(model(x), y) / K).backward()
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    report = probe.report
    assert [(r.step, r.window, r.verdict) for r in report.rows] == [(1, 1, "error"), (2, 4, "ok"), (3, 4, "ok")]
    (f,) = report.findings
    assert f.code == "GA010" and f.severity == "error" and f.steps == [1]
    assert "step 1 ran after a single micro-batch, whose loss was divided by K=4" in f.message
    assert f.row == test_ga010_first_window_of_one_micro_batch.__code__.co_firstlineno + 9  # the step


def test_single_micro_batch_windows_with_a_weight_stay_info() -> None:
    """Every window one micro-batch (no accumulation) with a constant weight: not an off-by-one."""
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in batches(3):
            (0.25 * F.cross_entropy(model(x), y)).backward()
            opt.step()
            opt.zero_grad()
    assert {f.code for f in probe.report.findings} == {"GA101"} and probe.report.ok
    assert [r.verdict for r in probe.report.rows] == ["info", "info", "info"]


def test_first_window_held_back_is_reported_when_the_script_ends() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in batches(1):
            (F.cross_entropy(model(x), y) / K).backward()
            opt.step()
    assert [r.step for r in probe.report.rows] == [1]
    assert [f.code for f in probe.report.findings] == ["GA101"]


def test_ga011_loss_divided_by_k_twice() -> None:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, (x, y) in enumerate(batches(8), 1):
            loss = F.cross_entropy(model(x), y) / K
            (loss / K).backward()
            if i % K == 0:
                opt.step()
                opt.zero_grad()
    (f,) = probe.report.findings
    assert f.code == "GA011" and f.severity == "error" and f.steps == [1, 2]
    assert "gradient is 0.25x the large-batch gradient" in f.message and "divided by 16 = K*K (K=4)" in f.message
    assert probe.report.rows[0].ratio == pytest.approx(0.25, rel=1e-5)


def _scheduler_loop(per_micro_batch: bool, sequential: bool = False) -> gp.ProbeReport:
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        if sequential:  # its step() steps an inner scheduler: still one step
            warm = torch.optim.lr_scheduler.LinearLR(opt, 0.1, 1.0, total_iters=10)
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
            sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cosine], milestones=[10])
        else:
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100)
        for i, (x, y) in enumerate(batches(8), 1):
            (F.cross_entropy(model(x), y) / K).backward()
            if per_micro_batch:
                sched.step()
            if i % K == 0:
                opt.step()
                opt.zero_grad()
                if not per_micro_batch:
                    sched.step()
    return probe.report


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # torch: this is the bug tested
@pytest.mark.parametrize("sequential", [False, True])
def test_ga007_scheduler_stepped_every_micro_batch(sequential: bool) -> None:
    report = _scheduler_loop(per_micro_batch=True, sequential=sequential)
    (f,) = report.findings
    assert f.code == "GA007" and f.severity == "warning" and f.steps == [1, 2]
    assert "the LR scheduler stepped 4 times during the 4 micro-batches of optimizer step 1" in f.message
    assert report.ok  # a warning: the schedule's length may count micro-batches on purpose


@pytest.mark.parametrize("sequential", [False, True])
def test_scheduler_stepped_after_the_optimizer_is_ok(sequential: bool) -> None:
    report = _scheduler_loop(per_micro_batch=False, sequential=sequential)
    assert not report.findings and [r.verdict for r in report.rows] == ["ok", "ok"]


def test_ga016_backward_after_a_loop_of_forward_passes() -> None:
    """`loss = model(x) / K` reassigned K times, one backward after the loop: the probe sees one
    micro-batch carrying 1/K, and K - 1 forward passes of the same model that no backward reached."""
    model = mlp()
    data = batches(8)
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for window in range(2):
            for x, y in data[window * K:(window + 1) * K]:
                loss = F.cross_entropy(model(x), y) / K
            loss.backward()
            opt.step()
            opt.zero_grad()
    report = probe.report
    assert not report.ok
    (f,) = report.findings
    assert f.code == "GA016" and f.severity == "error" and f.steps == [1, 2]
    assert f.name == "backward-after-micro-batch-loop"
    assert "1 of the 4 forward passes of `Sequential`" in f.message and "divided by 4" in f.message
    assert f.row == test_ga016_backward_after_a_loop_of_forward_passes.__code__.co_firstlineno + 10  # the backward
    assert [r.window for r in report.rows] == [1, 1]


def test_accumulated_losses_over_a_loop_are_ok() -> None:
    """The look-alike: the loop sums the K losses and backpropagates the sum once."""
    model = mlp()
    data = batches(8)
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for window in range(2):
            total = 0
            for x, y in data[window * K:(window + 1) * K]:
                total = total + F.cross_entropy(model(x), y) / K
            total.backward()
            opt.step()
            opt.zero_grad()
    # One backward of the sum reads as one micro-batch carrying 1/K (GA101, info), as any summed loss
    # does; every forward pass reached it, so it is not GA016.
    report = probe.report
    assert report.ok and [f.code for f in report.findings] == ["GA101"]


def test_forward_passes_without_a_backward_elsewhere_stay_a_weight() -> None:
    """A weight of 1/2 and one unreached forward of another model (an EMA copy run with autograd
    on) in each window: not GA016, which needs passes of the backpropagated model itself."""
    model, ema = mlp(), mlp(seed=3)
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in batches(3):
            ema(x)
            (0.5 * F.cross_entropy(model(x), y)).backward()
            opt.step()
            opt.zero_grad()
    assert {f.code for f in probe.report.findings} == {"GA101"} and probe.report.ok


def test_evaluation_passes_between_steps_are_not_ga016() -> None:
    """Evaluation forwards of the trained model with autograd on, between windows, in a number
    that does not match the loss's factor: no GA016."""
    model = mlp()
    with gp.watch() as probe:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in batches(3):
            (F.cross_entropy(model(x), y) / K).backward()
            opt.step()
            opt.zero_grad()
            for _ in range(5):
                model(x)
    assert "GA016" not in {f.code for f in probe.report.findings}
