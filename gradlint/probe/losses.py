"""Raw losses and the coefficient between the backwarded value L and the raw loss R.

The `torch.nn.functional` loss wrappers capture R together with what makes the large-batch
reference exact: `reduction` and the element count n (valid targets after `ignore_index`, or the
summed class `weight`). The coefficient c = dL/dR comes from `autograd.grad(L, R)`, which only walks
the few nodes between L and R; when no loss function was seen (hand-written loss, loss inside a
compiled region) the chain of scalar Mul/Div nodes below L gives c instead."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gradlint.probe.sites import Site, user_site

CLASS_INDEX_LOSSES = ("cross_entropy", "nll_loss")
ELEMENTWISE_LOSSES = (
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "soft_margin_loss", "poisson_nll_loss",
)
OTHER_LOSSES = (
    "kl_div", "gaussian_nll_loss", "multilabel_soft_margin_loss", "multilabel_margin_loss",
    "multi_margin_loss", "hinge_embedding_loss", "margin_ranking_loss", "cosine_embedding_loss",
    "triplet_margin_loss", "triplet_margin_with_distance_loss", "ctc_loss",
)


@dataclass
class RawLoss:
    tensor: torch.Tensor
    name: str
    reduction: str  # mean | sum
    count: torch.Tensor | None  # n: the number of elements the reduction runs over (weighted)
    site: Site


@dataclass
class Coefficient:
    c: torch.Tensor | None  # dL/dR, a 0-dim tensor; None: L is not a scalar we understand
    reduction: str = "mean"
    count: torch.Tensor | None = None
    how: str = "unknown"  # loss-fn | chain | unknown
    loss_site: Site | None = None
    loss_name: str = ""
    judgeable: bool = True  # False: a summed custom loss whose item count we cannot know


def _class_index_count(target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
                       logits: torch.Tensor) -> torch.Tensor:
    if target.is_floating_point():  # class probabilities: mean runs over batch x spatial
        n = logits.numel() // logits.shape[1] if logits.dim() > 1 else 1
        return torch.tensor(float(n))
    valid = target != ignore_index
    if weight is None:
        return valid.sum().to(torch.float32)
    safe = target.masked_fill(~valid, 0)
    return (weight[safe] * valid).sum().to(torch.float32)


def _count(name: str, bound: dict[str, Any], reduction: str) -> torch.Tensor | None:
    inp = bound.get("input")
    target = bound.get("target")
    if not isinstance(inp, torch.Tensor):
        return None
    with torch.no_grad():
        if name in CLASS_INDEX_LOSSES and isinstance(target, torch.Tensor):
            return _class_index_count(target, bound.get("weight"), int(bound.get("ignore_index", -100)), inp)
        if name in ELEMENTWISE_LOSSES:
            numel = max(inp.numel(), target.numel() if isinstance(target, torch.Tensor) else 0)
            return torch.tensor(float(numel))
        if name == "kl_div":
            return torch.tensor(float(inp.shape[0] if reduction == "batchmean" and inp.dim() else inp.numel()))
    return None


class LossCapture:
    """Wraps the `torch.nn.functional` losses; keeps the last few raw losses that require grad."""

    MAX_PENDING = 8

    def __init__(self) -> None:
        self.pending: list[RawLoss] = []
        self.originals: dict[str, Callable[..., Any]] = {}
        self._inside = False
        self.enabled = True

    def install(self) -> None:
        for name in (*CLASS_INDEX_LOSSES, *ELEMENTWISE_LOSSES, *OTHER_LOSSES):
            orig = getattr(F, name, None)
            if orig is None or name in self.originals:
                continue
            self.originals[name] = orig
            setattr(F, name, self._wrap(name, orig))

    def uninstall(self) -> None:
        for name, orig in self.originals.items():
            setattr(F, name, orig)
        self.originals.clear()
        self.pending.clear()

    def _wrap(self, name: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        try:
            signature: inspect.Signature | None = inspect.signature(orig)
        except (TypeError, ValueError):
            signature = None

        def loss_wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._inside or not self.enabled or torch.compiler.is_compiling():
                return orig(*args, **kwargs)
            self._inside = True  # outermost call only: cross_entropy calls nll_loss
            try:
                out = orig(*args, **kwargs)
            finally:
                self._inside = False
            if isinstance(out, torch.Tensor) and out.requires_grad and out.numel() == 1:
                self._record(name, signature, args, kwargs, out)
            return out

        loss_wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
        loss_wrapper.__name__ = getattr(orig, "__name__", name)
        loss_wrapper.__doc__ = getattr(orig, "__doc__", None)
        return loss_wrapper

    def _record(self, name: str, signature: inspect.Signature | None, args: tuple[Any, ...],
                kwargs: dict[str, Any], out: torch.Tensor) -> None:
        bound: dict[str, Any] = {}
        if signature is not None:
            try:
                ba = signature.bind(*args, **kwargs)
                ba.apply_defaults()
                bound = dict(ba.arguments)
            except TypeError:
                bound = {}
        if bound.get("size_average") is not None or bound.get("reduce") is not None:
            reduction, count = "mean", None  # legacy arguments: do not guess the count
        else:
            reduction = str(bound.get("reduction", "mean"))
            count = _count(name, bound, reduction) if reduction in ("mean", "sum", "batchmean") else None
        if reduction == "batchmean":
            reduction = "mean"
        if reduction not in ("mean", "sum"):
            return
        if any(r.tensor is out for r in self.pending):
            return
        self.pending.append(RawLoss(out, name, reduction, count, user_site(2)))
        if len(self.pending) > self.MAX_PENDING:
            del self.pending[0]

    def coefficient(self, loss: torch.Tensor) -> Coefficient:
        """c = dL/dR for the first captured raw loss that feeds `loss`; the scalar chain otherwise."""
        candidates = [r for r in self.pending if r.tensor.requires_grad]
        if candidates:
            try:
                grads = torch.autograd.grad(loss, [r.tensor for r in candidates], retain_graph=True,
                                            allow_unused=True)
            except RuntimeError:
                grads = (None,) * len(candidates)
            used = [(r, g) for r, g in zip(candidates, grads, strict=True) if g is not None]
            if used:
                raw, c = used[0]
                used_ids = {id(r) for r, _ in used}
                self.pending = [r for r in self.pending if id(r) not in used_ids]
                return Coefficient(c.detach().reshape(()), raw.reduction, raw.count, "loss-fn", raw.site, raw.name)
        return scalar_chain(loss)


_UNIT_NODES = ("ToCopyBackward0", "CloneBackward0", "AliasBackward0", "ViewBackward0", "ReshapeAliasBackward0",
               "UnsqueezeBackward0", "SqueezeBackward0", "SqueezeBackward1", "ExpandBackward0")


def scalar_chain(loss: torch.Tensor) -> Coefficient:
    """Fallback: multiply the constants of the scalar Mul/Div/Neg nodes below L. Python scalars
    (`loss / 4`, `loss * 0.25`) and GradScaler's scale show up as 0-dim saved tensors."""
    node = loss.grad_fn
    c = torch.ones((), dtype=torch.float32, device=loss.device)
    while node is not None:
        kind = type(node).__name__
        nxt = node.next_functions
        if kind in ("MulBackward0", "DivBackward0") and len(nxt) == 2:
            if nxt[1][0] is None:
                const, follow = getattr(node, "_saved_other", None), nxt[0][0]
            elif nxt[0][0] is None and kind == "MulBackward0":
                const, follow = getattr(node, "_saved_self", None), nxt[1][0]
            else:
                break
            if not isinstance(const, torch.Tensor) or const.numel() != 1:
                break
            const = const.detach().reshape(()).to(device=c.device, dtype=torch.float32)
            c = c * const if kind == "MulBackward0" else c / const
            node = follow
        elif kind == "NegBackward0":
            c = -c
            node = nxt[0][0]
        elif kind in _UNIT_NODES and len(nxt) >= 1:
            node = nxt[0][0]
        else:
            break
    kind = type(node).__name__ if node is not None else ""
    if kind == "MeanBackward0":
        sizes = getattr(node, "_saved_self_sym_sizes", None)
        count = None
        if sizes is not None:
            n = 1
            for s in sizes:
                n *= int(s)
            count = torch.tensor(float(n))
        return Coefficient(c, "mean", count, "chain")
    if kind == "SumBackward0":
        # A hand-written sum (often a masked token sum): without the item count the token mean
        # cannot be formed, so such windows are reported as not judgeable.
        return Coefficient(c, "sum", None, "chain", judgeable=False)
    return Coefficient(c, "mean", None, "chain")
