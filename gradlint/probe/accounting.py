"""Per-optimizer accounting of one accumulation window.

Every parameter of a tracked optimizer has a gradient hook that receives each backward's
contribution g before it is added into `.grad`. The hook folds g into two fp32 accumulators of the
current *segment* (the part of the window since the last zero_grad):

* tok: sum of g * n/c (mean reduction) or g / c (sum): the summed-loss gradient, so
  tok / N is the token-weighted large-batch gradient;
* eq: sum of g / c (mean) or g / (c n) (sum), so eq / K is the equal-weight mean of micro-batch means.

A zero_grad moves the current segment aside, unconfirmed. It is folded back into the window when
the same backward call site runs again (zero_grad inside the window: GA001), dropped as a lost
remainder when that happens after an epoch boundary (GA004), and ignored as a foreign contribution
(a GAN generator loss reaching the discriminator) if its sites never come back before the step.
By default each parameter tensor is sampled (4096 elements), so a large model costs little."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from gradlint.probe.losses import Coefficient
from gradlint.probe.sites import Site


@dataclass
class BackwardRecord:
    serial: int
    site: Site
    epoch: int
    coef: Coefficient
    scale: torch.Tensor | None = None  # the GradScaler scale L was multiplied by
    scaler: Any = None
    _weights: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def weights(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        found = self._weights.get(device)
        if found is None:
            coef = self.coef
            c = coef.c if coef.c is not None else torch.ones(())
            c = c.to(device=device, dtype=torch.float32)
            inv = torch.where(c != 0, 1.0 / c, torch.zeros_like(c))
            n = coef.count.to(device=device, dtype=torch.float32) if coef.count is not None else None
            if coef.reduction == "sum":
                w_tok, w_eq = inv, (inv / n if n is not None else inv)
            else:
                w_tok, w_eq = (inv * n if n is not None else inv), inv
            found = self._weights[device] = (w_tok, w_eq)
        return found


@dataclass
class ForwardPass:
    """One outermost module call with autograd on (`model(x)`, not its submodules). A gradient hook
    on its outputs marks it reached when a backward gets to them; one never reached before the
    window's last backward was computed for nothing (GA016: `loss = model(x)` reassigned in a
    loop, and only the last pass's loss backpropagated)."""

    module: int  # id() of the module
    name: str  # its class name, for messages
    after: int  # the serial of the last backward started before it (0: none yet)
    reached: bool = False


@dataclass
class MicroBatch:
    records: list[BackwardRecord]
    epoch: int

    @property
    def first(self) -> BackwardRecord:
        return self.records[0]

    @property
    def sites(self) -> set[tuple[str, int, int]]:
        return {r.site.key for r in self.records}


class Segment:
    def __init__(self) -> None:
        self.acc: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mbs: list[MicroBatch] = []
        self.cleared_by: Site | None = None

    @property
    def sites(self) -> set[tuple[str, int, int]]:
        return {key for mb in self.mbs for key in mb.sites}

    def absorb(self, other: Segment) -> None:
        for key, (tok, eq) in other.acc.items():
            mine = self.acc.get(key)
            if mine is None:
                self.acc[key] = (tok, eq)
            else:
                mine[0].add_(tok)
                mine[1].add_(eq)
        self.mbs.extend(other.mbs)


@dataclass
class ClipEvent:
    position: int  # micro-batches in the window when the clip ran
    name: str
    site: Site
    max_norm: float | None
    total_norm: torch.Tensor | None  # what the clip measured
    scale: torch.Tensor | None = None  # set when the clip saw gradients still scaled by GradScaler


@dataclass
class Dropped:
    count: int
    site: Site | None


class Window:
    def __init__(self) -> None:
        self.past = Segment()  # confirmed segments cleared inside this window
        self.current = Segment()
        self.unconfirmed: list[Segment] = []
        self.clears: list[tuple[Site | None, int]] = []  # (zero_grad site, micro-batches it cleared)
        self.clips: list[ClipEvent] = []
        self.pre_clip: dict[int, torch.Tensor] | None = None
        self.pre_clip_event: ClipEvent | None = None
        self.new_mb = True
        self.dropped: list[Dropped] = []
        self.scale: torch.Tensor | None = None
        self.scaler: Any = None
        self.scheduler_steps = 0  # LR scheduler steps of this optimizer since its last step
        self.scheduler_site: Site | None = None

    @property
    def micro_batches(self) -> list[MicroBatch]:
        return self.past.mbs + self.current.mbs

    @property
    def size(self) -> int:
        return len(self.past.mbs) + len(self.current.mbs)

    @property
    def empty(self) -> bool:
        return self.size == 0 and not self.unconfirmed


class ParamState:
    __slots__ = ("handle", "idx", "key", "numel", "param_ref")

    def __init__(self, param: torch.Tensor, sample: int | None, generator: torch.Generator) -> None:
        self.param_ref = weakref.ref(param)
        self.key = id(param)
        self.numel = param.numel()
        self.idx: torch.Tensor | None = None
        if sample is not None and self.numel > sample:
            idx = torch.randperm(self.numel, generator=generator)[:sample].sort().values
            self.idx = idx.to(param.device)
        self.handle: Any = None

    def sampled(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.index_select(0, self.idx) if self.idx is not None else flat


class Track:
    """One optimizer and its current window."""

    def __init__(self, optimizer: torch.optim.Optimizer, label: str) -> None:
        self.opt_ref = weakref.ref(optimizer)
        self.label = label
        self.params: dict[int, ParamState] = {}
        self.window = Window()
        self.serial = -1
        self.steps = 0
        self.prehooks = 0
        self.sizes: list[int] = []  # window sizes of earlier judged windows
        self.cleared_since_step = True
        self.in_closure = False
        self.closure_evals = 0
        self.last_step_site: Site | None = None
        self.last_backward_site: Site | None = None
        self.adopted_late = False
        self.foreign: set[tuple[str, int, int]] = set()  # backward sites whose contributions are cleared unused
        # the first window's row and findings, held until the next window says whether it was a GA010
        self.pending_first: tuple[dict[str, Any], list[dict[str, Any]], float, Site] | None = None

    # -- folding -----------------------------------------------------------------------------
    def begin_backward(self, rec: BackwardRecord, on_drop: Any) -> None:
        self.serial = rec.serial
        self.last_backward_site = rec.site
        w = self.window
        w.pre_clip, w.pre_clip_event = None, None  # a clip before this backward was not the last one
        if rec.scale is not None:
            w.scale, w.scaler = rec.scale, rec.scaler
        for seg in list(w.unconfirmed):
            if rec.site.key in seg.sites:
                w.unconfirmed.remove(seg)
                if max(mb.epoch for mb in seg.mbs) < rec.epoch:
                    w.dropped.append(Dropped(len(seg.mbs), seg.cleared_by))
                    on_drop(self, len(seg.mbs), seg.cleared_by)
                else:
                    w.clears.append((seg.cleared_by, len(seg.mbs)))
                    w.past.absorb(seg)
        cur = w.current
        if w.new_mb or not cur.mbs or rec.site.key in cur.mbs[-1].sites:
            cur.mbs.append(MicroBatch([rec], rec.epoch))
            w.new_mb = False
        else:
            cur.mbs[-1].records.append(rec)

    def fold(self, ps: ParamState, grad: torch.Tensor, rec: BackwardRecord) -> None:
        g = ps.sampled(grad.detach().reshape(-1)).float()
        w_tok, w_eq = rec.weights(g.device)
        acc = self.window.current.acc.get(ps.key)
        if acc is None:
            self.window.current.acc[ps.key] = (g * w_tok, g * w_eq)
        else:
            acc[0].addcmul_(g, w_tok)
            acc[1].addcmul_(g, w_eq)

    # -- structure ---------------------------------------------------------------------------
    def clear(self, site: Site) -> None:
        """zero_grad on this optimizer's parameters."""
        self.cleared_since_step = True
        w = self.window
        if self.in_closure:  # a closure re-evaluates the loss from scratch: restart the window
            self.window = Window()
            return
        if w.current.mbs:
            w.current.cleared_by = site
            w.unconfirmed.append(w.current)
            w.current = Segment()
        w.new_mb = True
        w.pre_clip, w.pre_clip_event = None, None

    def reset(self) -> None:
        self.window = Window()

    def snapshot_grads(self, copy: bool) -> dict[int, torch.Tensor]:
        """The (sampled) gradients as fp32 vectors; `copy` when they must survive an in-place clip."""
        out: dict[int, torch.Tensor] = {}
        for ps in self.params.values():
            p = ps.param_ref()
            if p is not None and p.grad is not None:
                v = ps.sampled(p.grad.detach().reshape(-1)).float()
                out[ps.key] = v.clone() if copy and ps.idx is None else v
        return out


@dataclass
class Stats:
    """Dot products of the sampled vectors, as floats (one host sync per step)."""

    aa: float
    tt: float
    qq: float
    ss: float
    at: float
    aq: float
    as_: float
    d_t: float  # ||A - T||^2
    d_q: float

    @staticmethod
    def _cos(xy: float, xx: float, yy: float) -> float | None:
        if xx <= 0 or yy <= 0:
            return None
        return max(-1.0, min(1.0, xy / math.sqrt(xx * yy)))

    def versus(self, ref: str) -> tuple[float | None, float | None, float | None, float | None]:
        """(ratio, cosine, rel_err, projection) of A against T (token) or Q (mean)."""
        ee, ae, d = (self.tt, self.at, self.d_t) if ref == "token" else (self.qq, self.aq, self.d_q)
        if ee <= 0:
            return None, None, None, None
        return (math.sqrt(self.aa / ee), self._cos(ae, self.aa, ee), math.sqrt(max(d, 0.0) / ee), ae / ee)

    def survivors_cos(self) -> float | None:
        return self._cos(self.as_, self.aa, self.ss)


def _total(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    if not tensors:
        return None
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


def window_stats(track: Track, actual: dict[int, torch.Tensor], n_total: float | None,
                 include_unconfirmed: bool) -> Stats:
    w = track.window
    k = max(w.size, 1)
    segs = [w.past, w.current, *(w.unconfirmed if include_unconfirmed else [])]
    parts = []
    for ps in track.params.values():
        a = actual.get(ps.key)
        toks = [s.acc[ps.key][0] for s in segs if ps.key in s.acc]
        eqs = [s.acc[ps.key][1] for s in segs if ps.key in s.acc]
        if a is None and not toks:
            continue
        t = _total(toks)
        q = _total(eqs)
        ref = a if a is not None else (t if t is not None else q)
        zeros = torch.zeros_like(ref, dtype=torch.float32)
        a = a.float() if a is not None else zeros
        t = t / n_total if (t is not None and n_total) else (q / k if q is not None else zeros)
        q = q / k if q is not None else zeros
        surv = w.current.acc.get(ps.key)
        s = surv[1] if surv is not None else zeros
        d_t, d_q = a - t, a - q
        parts.append(torch.stack([a @ a, t @ t, q @ q, s @ s, a @ t, a @ q, a @ s, d_t @ d_t, d_q @ d_q]).double())
    if not parts:
        return Stats(0, 0, 0, 0, 0, 0, 0, 0, 0)
    try:
        total = torch.stack(parts).sum(0)
    except RuntimeError:  # parameters on several devices
        total = torch.stack([p.cpu() for p in parts]).sum(0)
    return Stats(*total.tolist())
