"""Is this expression K? Names of the accumulation count, compared the way real code spells them."""

from __future__ import annotations

import re

import libcst as cst

from gradlint.model.syntax import dotted, last_part, method_name, number, same_code

# The accumulation count's many names (`grad_accum_steps`, `accum_iter`, `update_freq`, ...).
_K_NAME = re.compile(
    r"(?i).*(accum|grad_acc|gradient_acc|iter_size|update_freq|accumulate|n_micro|micro_batches"
    r"|num_micro|^gas$|_gas$).*"
)


def is_k_name(name: str) -> bool:
    """`gradient_accumulation_steps`, `accum_iter`, `update_freq`: a name for K."""
    return bool(_K_NAME.fullmatch(name))


def looks_like_k(node: cst.BaseExpression | None) -> bool:
    """`args.gradient_accumulation_steps`, `self.accum_iter`, `engine.gradient_accumulation_steps()`."""
    if node is None:
        return False
    if isinstance(node, cst.Call):
        return looks_like_k(node.func) or (method_name(node) or "") == "gradient_accumulation_steps"
    text = dotted(node)
    return bool(text) and bool(_K_NAME.fullmatch(last_part(text)))


def same_quantity(a: cst.BaseExpression | None, b: cst.BaseExpression | None) -> bool:
    """The same K: equal literals, the same text, or the same last name (`args.k` and `k`)."""
    if a is None or b is None:
        return False
    left, right = number(a), number(b)
    if left is not None or right is not None:
        return left == right
    if same_code(a, b):
        return True
    da, db = dotted(a), dotted(b)
    return bool(da and db) and last_part(da) == last_part(db)
