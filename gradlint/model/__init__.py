"""The training-loop model: what rules read instead of the syntax tree.

    module -> facts (roles, helpers) -> walker (events under guards) -> loops (kind, gate, K)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import libcst as cst

from gradlint.model import traversal
from gradlint.model.events import EventSpec, Framework, Kind
from gradlint.model.facts import ModuleFacts, Role, collect_facts
from gradlint.model.gates import Phase
from gradlint.model.loops import (
    Counter,
    LoopKind,
    TrainingLoop,
    When,
    build_loops,
    drained_iterable,
    loop_counter,
    loop_iterable,
)
from gradlint.model.provenance import Provenance, Scaling, trace
from gradlint.model.scopes import ScopeCache
from gradlint.model.walker import Event, Guard, Walker, iter_roots


@dataclass
class ModuleModel:
    module: cst.Module
    facts: ModuleFacts
    scopes: ScopeCache
    loops: list[TrainingLoop]
    source: str | None = None  # the file's text: the module's code, which a built tree lacks (comments)

    @property
    def text(self) -> str:
        """The file's text, comments included (LibCST's tree gives it back exactly; a tree built
        from CPython's has no comments)."""
        return self.source if self.source is not None else self.module.code

    @cached_property
    def parents(self) -> dict[int, cst.CSTNode]:
        """id(node) -> parent for the tree's significant nodes. Built on first use (by a fix), never
        for files without findings."""
        return traversal.parents(self.module)

    @cached_property
    def called_from_loops(self) -> frozenset[int]:
        """id() of each function a loop of this module calls for its backward. Such a function is
        also an implicit loop of its own (for callers out of sight); a rule whose verdict depends
        on what the caller passes (which scheduler) should judge it from the caller's loop."""
        return frozenset(id(event.frame.scope.node) for loop in self.loops if not loop.loop.implicit
                         for event in loop.of_kind(Kind.BACKWARD) if event.frame.via and loop.in_loop(event))

    def provenance(self, loop: TrainingLoop, backward: Event) -> Provenance:
        order = backward.frame.scope.call_order.get(id(backward.node))
        return trace(backward.spec.value, backward.frame, order, self.facts, self.scopes, loop.k_literal, loop.k)


def build_model(module: cst.Module, source: str | None = None, listed: traversal.Preorder | None = None) -> ModuleModel:
    """The model of `module` (of the file `source`, when known); `listed`: its nodes, when the
    tree's builder listed them (`traversal.index`)."""
    traversal.index(module, listed)
    facts = collect_facts(module)
    scopes = ScopeCache()
    return ModuleModel(module, facts, scopes, walk_loops(module, facts, scopes), source)


def walk_loops(module: cst.Module, facts: ModuleFacts, scopes: ScopeCache) -> list[TrainingLoop]:
    """The training loops of every function (and the module) from which a backward is reached."""
    walker = Walker(facts, scopes)
    best: dict[int, TrainingLoop] = {}
    for root, cls in iter_roots(module):
        if (0 if root is module else id(root)) not in facts.reaches_backward:
            continue  # no backward on any path from here: nothing to walk
        for loop in build_loops(walker.walk(root, cls), facts.prepared, facts.k_one_unless):
            key = id(loop.loop.node)
            # The same loop is reached from its own function and from every caller that
            # inlines it; the walk that saw the most enclosing loops knows the most, and of
            # walks that saw as many, one from a caller knows what its parameters are.
            if key not in best or _knows_more(loop, best[key]):
                best[key] = loop
    return list(best.values())


def _knows_more(loop: TrainingLoop, other: TrainingLoop) -> bool:
    mine, theirs = len(loop.loop.chain), len(other.loop.chain)
    return mine > theirs or (mine == theirs and len(loop.loop.frame.via) > len(other.loop.frame.via))


__all__ = [
    "Counter", "Event", "EventSpec", "Framework", "Guard", "Kind", "LoopKind", "ModuleFacts",
    "ModuleModel", "Phase", "Provenance", "Role", "Scaling", "TrainingLoop", "When", "build_model",
    "drained_iterable",
    "loop_counter",
    "loop_iterable",
    "walk_loops",
]
