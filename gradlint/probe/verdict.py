"""From the numbers of one window to a verdict and findings. Pure Python: no torch.

A is the gradient the optimizer is about to use, taken before any clip that ran after the last
micro-batch (clipping hides scale errors). E is the large-batch gradient the window stands for:
token-weighted when the loss function told us its element counts, else the mean of micro-batch
means. Structural events (zero_grad, clips, epoch boundaries, GradScaler) explain a mismatch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradlint.probe.model import StepRow
from gradlint.probe.sites import UNKNOWN, Site

PARALLEL = 1 - 1e-4  # cosine above which A and E differ by a factor only


@dataclass
class Versus:
    ratio: float | None = None
    cosine: float | None = None
    rel_err: float | None = None
    proj: float | None = None


@dataclass
class EarlyClip:
    position: int
    name: str
    site: Site
    active: bool


@dataclass
class FinalClip:
    name: str
    site: Site
    coef: float | None  # what the clip multiplied the gradient by
    measured: float | None  # the norm the clip measured
    max_norm: float | None
    scale: float | None  # GradScaler scale the clip saw, if it saw scaled gradients


@dataclass
class WindowFacts:
    step: int
    optimizer: str
    k: int
    coefs: list[float]
    counts: list[float | None]
    reduction: str
    token_ref: bool
    tok: Versus
    eq: Versus
    step_site: Site
    backward_site: Site
    loss_site: Site | None = None
    closure: int | None = None
    cos_survivors: float | None = None
    survivors: int = 0
    clears: list[tuple[Site | None, int]] = field(default_factory=list)
    zero_grad_before_step: Site | None = None
    early_clips: list[EarlyClip] = field(default_factory=list)
    final_clip: FinalClip | None = None
    leaked: int = 0
    prev_k: int | None = None
    scaled_step: float | None = None
    stale: bool = False
    scheduler_steps: int = 0  # LR scheduler steps during the window
    scheduler_site: Site | None = None
    judgeable: bool = True
    tol: float = 2e-3
    lost_forwards: int = 0  # forward passes of the backpropagated module in the window that no backward reached
    forward_name: str = ""  # that module's class


def _near(x: float | None, y: float, rel: float = 1e-2) -> bool:
    return x is not None and abs(x - y) <= rel * max(abs(y), 1e-12)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "?" if x is None else f"{x:.{digits}g}"


def _x(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}x"


def _cos(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"


def _nums(values: list[float | None]) -> str:
    return ", ".join("?" if v is None else f"{v:g}" for v in values)


class _Out:
    def __init__(self, facts: WindowFacts) -> None:
        self.facts = facts
        self.items: list[dict[str, Any]] = []

    def add(self, code: str, severity: str, message: str, site: Site | None) -> None:
        site = site or UNKNOWN
        self.items.append({
            "type": "finding", "code": code, "severity": severity, "message": message,
            "filename": site.filename, "row": site.row, "column": site.column,
            "step": self.facts.step, "optimizer": self.facts.optimizer,
        })

    def worst(self) -> str:
        for sev in ("error", "warning", "info"):
            if any(i["severity"] == sev for i in self.items):
                return sev
        return "ok"


def decide(f: WindowFacts) -> tuple[StepRow, list[dict[str, Any]]]:
    ref = "token" if f.token_ref else "mean"
    main = f.tok if f.token_ref else f.eq
    out = _Out(f)
    row = StepRow(step=f.step, optimizer=f.optimizer, verdict="ok", window=f.k, coefficients=f.coefs,
                  counts=f.counts, reference=ref, ratio=main.ratio, cosine=main.cosine, rel_err=main.rel_err,
                  clip=f.final_clip.coef if f.final_clip else None, closure=f.closure,
                  site=f.step_site.short())
    if not f.judgeable:
        row.verdict, row.summary = "unknown", "hand-written summed loss: item count unknown, not judged"
        return row, []

    varying = f.token_ref and len({c for c in f.counts if c is not None}) > 1
    if main.rel_err is not None and main.rel_err < f.tol:
        numeric = "match"
    elif varying and f.eq.rel_err is not None and f.eq.rel_err < f.tol:
        numeric = "mean-of-means"
    elif main.cosine is not None and main.cosine > PARALLEL:
        numeric = "scaled"
    elif varying and f.eq.cosine is not None and f.eq.cosine > PARALLEL:
        numeric = "scaled-mean-of-means"
    else:
        numeric = "different"
    explained = False
    mismatch = numeric != "match"
    cos_txt = f"cosine {_cos(main.cosine)} with the large-batch gradient"

    # GA006: the step ran on a gradient cleared after the last backward.
    if f.zero_grad_before_step is not None:
        out.add("GA006", "error",
                f"zero_grad at {f.zero_grad_before_step.short()} cleared the gradient after the last backward and "
                f"before optimizer step {f.step}: the optimizer stepped on a zero gradient",
                f.zero_grad_before_step)
        explained = True

    # GA001: zero_grad inside the window: only the micro-batches after the last clear survive.
    if f.clears and mismatch and not explained:
        site = f.clears[-1][0]
        where = f"zero_grad at {site.short()}" if site else "zero_grad"
        out.add("GA001", "error",
                f"only {f.survivors} of {f.k} micro-batches survived to optimizer step {f.step}: {where} cleared "
                f"the gradient {len(f.clears)} time(s) inside the window ({cos_txt}, "
                f"{_cos(f.cos_survivors)} with the surviving micro-batches)", site)
        explained = True

    # GA005: the clip measured gradients still multiplied by the GradScaler scale.
    fc = f.final_clip
    if fc is not None and fc.scale:
        true_norm = fc.measured / fc.scale if fc.measured is not None else None
        active = fc.coef is not None and fc.coef < 1
        threshold = fc.max_norm / fc.scale if fc.max_norm is not None else None
        msg = (f"{fc.name} saw scaled gradients: scale {fc.scale:g}, effective threshold {_fmt(threshold, 2)} "
               f"instead of {_fmt(fc.max_norm)} (it measured norm {_fmt(fc.measured)}, true norm {_fmt(true_norm)})")
        if active:
            out.add("GA005", "error", msg + f"; the step used {_fmt(fc.coef)}x the gradient. "
                    "Call scaler.unscale_(optimizer) before clipping", fc.site)
        else:
            out.add("GA005", "warning", msg + "; it did not clip this time. Call scaler.unscale_(optimizer) "
                    "before clipping", fc.site)
    if f.scaled_step is not None and mismatch and not explained:
        out.add("GA005", "error",
                f"optimizer step {f.step} used gradients still multiplied by the GradScaler scale "
                f"{f.scaled_step:g} (gradient is {_fmt(main.proj, 4)}x the large-batch gradient): use "
                "scaler.step(optimizer), or scaler.unscale_(optimizer) first", f.step_site)
        explained = True

    # GA003: a clip before the window was complete.
    if f.early_clips:
        positions = ", ".join(str(c.position) for c in f.early_clips)
        first = f.early_clips[0]
        active = any(c.active for c in f.early_clips)
        base = (f"{first.name} ran after {positions} of {f.k} micro-batches, before the window was complete")
        if mismatch and active and not explained:
            out.add("GA003", "error", f"{base} ({cos_txt}); clip once, after the last micro-batch", first.site)
            explained = True
        elif not active:
            out.add("GA003", "warning", f"{base}; it did not clip this time (norm below max_norm) but will once "
                    "gradients grow; clip once, after the last micro-batch", first.site)

    # GA004: micro-batches of the previous epoch leaked into this window.
    if f.leaked and mismatch and not explained:
        out.add("GA004", "error",
                f"{f.leaked} micro-batches from the end of the previous epoch leaked into step {f.step}: the window "
                f"has {f.k} micro-batches but {_coef_text(f)} (gradient is {_x(main.proj)} the large-batch "
                "gradient); step on the partial last window of each epoch", f.step_site)
        explained = True

    # GA014: no zero_grad since the previous step of this optimizer.
    if f.stale and mismatch and not explained:
        out.add("GA014", "error",
                f"the gradient was not cleared after the previous optimizer step: step {f.step} also used the "
                f"gradients of earlier windows ({cos_txt}, {_fmt(main.ratio)}x its norm)", f.step_site)
        explained = True

    # GA007: the LR schedule advanced once per micro-batch, not once per update.
    if f.k > 1 and f.scheduler_steps == f.k:
        out.add("GA007", "warning",
                f"the LR scheduler stepped {f.scheduler_steps} times during the {f.k} micro-batches of optimizer "
                f"step {f.step}: the schedule advances once per micro-batch, {f.k}x as fast as the updates; step it "
                "after the optimizer step, unless its length was counted in micro-batches", f.scheduler_site)

    loss_site = f.loss_site or f.backward_site
    if not explained:
        if numeric in ("mean-of-means", "scaled-mean-of-means"):
            total = sum(c for c in f.counts if c is not None)
            out.add("GA013", "warning",
                    f"window tokens differ ({_nums(f.counts)}): mean of means != token mean over the window "
                    f"(N={total:g}); the step used {_fmt(f.tok.ratio)}x the norm of the "
                    f"token-mean gradient, cosine {_cos(f.tok.cosine)}. Sum the loss and divide by the window's "
                    "token count", loss_site)
            if numeric == "scaled-mean-of-means":
                _scale_finding(out, f, f.eq.proj, loss_site)
        elif numeric == "scaled":
            _scale_finding(out, f, main.proj, loss_site)
        elif numeric == "different" and len({round(c, 12) for c in f.coefs}) > 1:
            out.add("GA002", "error",
                    f"micro-batches reach backward with different coefficients ({_nums(list(f.coefs))}): the window "
                    f"is weighted unequally ({cos_txt}, norm ratio {_fmt(main.ratio)})", loss_site)
        elif numeric == "different":
            out.add("GA000", "error",
                    f"the gradient of step {f.step} differs from the large-batch gradient ({cos_txt}, norm ratio "
                    f"{_fmt(main.ratio)}, relative error {_fmt(main.rel_err)}) and no known cause was seen",
                    f.step_site)

    row.verdict = out.worst()
    row.codes = sorted({i["code"] for i in out.items})
    row.summary = out.items[0]["message"] if out.items else "matches the large-batch gradient"
    return row, out.items


def _coef_text(f: WindowFacts) -> str:
    if f.coefs and len({round(c, 12) for c in f.coefs}) == 1 and f.coefs[0] not in (0,):
        inv = 1 / f.coefs[0]
        return f"the loss was divided by {inv:.4g}" if abs(inv - 1) > 1e-6 else "the loss was not divided"
    return f"the coefficients were {_nums(list(f.coefs))}"


def _scale_finding(out: _Out, f: WindowFacts, factor: float | None, site: Site) -> None:
    """A and E are parallel; say what the factor means."""
    if factor is None:
        return
    equal = len({round(c, 12) for c in f.coefs}) == 1
    c = f.coefs[0] if f.coefs else 1.0
    total = sum(x for x in f.counts if x is not None) if f.token_ref else None
    if f.reduction == "sum" and total:
        if _near(factor, total) or (equal and _near(c, 1.0)):
            out.add("GA002", "error", f"gradient is {factor:.4g}x the large-batch gradient: the summed loss is not "
                    f"divided by the window's item count N={total:g}", site)
        else:
            out.add("GA002", "error", f"gradient is {factor:.4g}x the large-batch gradient: the summed loss is "
                    f"divided by {1 / c if c else 0:.4g}, not by the window's item count N={total:g}", site)
        return
    if equal and f.k > 1 and _near(factor, f.k) and _near(c, 1.0):
        out.add("GA002", "error",
                f"gradient is {factor:.2f}x the large-batch gradient: loss not divided by K={f.k}", site)
    elif equal and f.prev_k and f.k < f.prev_k and _near(factor, f.k / f.prev_k) and _near(c * f.prev_k, 1.0):
        out.add("GA004", "warning",
                f"the last window has {f.k} micro-batches but the loss was divided by K={f.prev_k}: its gradient is "
                f"{factor:.2f}x the large-batch gradient; divide by the real window size", site)
    elif equal and f.k > 1 and _near(c * f.k * f.k, 1.0) and not (f.prev_k and _near(c * f.prev_k, 1.0)):
        out.add("GA011", "error",
                f"gradient is {factor:.2f}x the large-batch gradient: each micro-batch's loss reached backward "
                f"divided by {1 / c:.4g} = K*K (K={f.k}): divided by K twice (by hand, and by a backward that "
                "divides already?); divide once", site)
    elif equal and f.k > 1 and _near(factor, f.k * c) and not _near(factor, 1.0):
        if f.leaked:
            return
        what = "the loss was not divided" if _near(c, 1.0) else f"the loss was divided by {1 / c:.4g}"
        if f.prev_k is None or f.k <= f.prev_k:
            out.add("GA101", "info",
                    f"every micro-batch carries the same factor c*K = {factor:.3g}: reads as a deliberate loss "
                    f"weight, not an accumulation error ({what}, window of {f.k})", site)
        else:
            out.add("GA002", "error",
                    f"gradient is {factor:.2f}x the large-batch gradient: the window has {f.k} micro-batches but "
                    f"{what}", site)
    elif equal and f.k == 1 and f.lost_forwards and _near(c * (f.lost_forwards + 1), 1.0):
        passes = f.lost_forwards + 1
        out.add("GA016", "error",
                f"optimizer step {f.step} backpropagated the loss of 1 of the {passes} forward passes of "
                f"`{f.forward_name}` in its window, divided by {1 / c:.4g}: no backward reached the other "
                f"{f.lost_forwards} (their loss was replaced before backward), so the gradient is {factor:.3g}x "
                "that of one micro-batch; backpropagate each pass's loss, or accumulate the losses",
                f.backward_site)  # the backward, as the static rule reports it
    elif equal and f.k == 1 and not _near(factor, 1.0):
        out.add("GA101", "info", f"the loss carries a constant factor {factor:.3g}: reads as a deliberate loss "
                "weight", site)
    else:
        out.add("GA002", "error", f"gradient is {factor:.4g}x the large-batch gradient (coefficients "
                f"{_nums(list(f.coefs))})", site)
