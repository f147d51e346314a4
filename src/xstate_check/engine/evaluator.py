"""Compile a parsed rule expression into nested closures, once, at load time.

Constant subtrees are folded (``avx512 | ymm`` becomes one number), fact reads are
``operator.itemgetter`` on the lazily filled ``Facts`` dict, and the common shapes
(``fact & CONST``, ``CONST in fact``, ``x in [..]``) get closures of their own, so that
evaluating a rule costs a handful of calls. Nothing is ever passed to ``eval``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from xstate_check.engine.parser import Binary, Call, Compare, ListExpr, Literal, Name, Node, Unary
from xstate_check.facts import FUNCTIONS, Facts

__all__ = ["Evaluator", "compile_expression", "names_read"]

#: A compiled expression: facts in, value out (may raise ``facts.Missing``).
Evaluator = Callable[[Facts], Any]

_MASK64 = (1 << 64) - 1

_INT_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "|": operator.or_,
    "^": operator.xor,
    "&": operator.and_,
    "<<": operator.lshift,
    ">>": operator.rshift,
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_COMPARE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class _Const:
    """A value known when the rule is loaded."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value: Any = value


_Built = _Const | Evaluator


def _run(built: _Built) -> Evaluator:
    if isinstance(built, _Const):
        value = built.value
        return lambda facts: value
    return built


def _fold(node: Node, value: object) -> object:
    """Keep int results within 64 bits, as masks are (``~`` of a mask stays a mask)."""
    if node.type == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value & _MASK64 if value < 0 else value
    return value


def _build(node: Node, lets: Mapping[str, Evaluator]) -> _Built:
    if isinstance(node, Literal):
        return _Const(node.value)
    if isinstance(node, Name):
        return _build_name(node, lets)
    if isinstance(node, ListExpr):
        return _build_list(node, lets)
    if isinstance(node, Call):
        return _build_call(node, lets)
    if isinstance(node, Unary):
        return _build_unary(node, lets)
    if isinstance(node, Compare):
        return _build_compare(node, lets)
    return _build_binary(node, lets)


def _build_name(node: Name, lets: Mapping[str, Evaluator]) -> _Built:
    if node.role == "let":
        return lets[node.name]
    if node.role == "item":
        field = operator.attrgetter(node.name.split(".", 1)[1])
        return lambda facts: field(facts["item"])
    return operator.itemgetter(node.name)


def _build_list(node: ListExpr, lets: Mapping[str, Evaluator]) -> _Built:
    items = [_build(item, lets) for item in node.items]
    if all(isinstance(item, _Const) for item in items):
        return _Const(frozenset(item.value for item in items if isinstance(item, _Const)))
    runs = [_run(item) for item in items]
    return lambda facts: frozenset(run(facts) for run in runs)


def _build_call(node: Call, lets: Mapping[str, Evaluator]) -> _Built:
    function = FUNCTIONS[node.name].call
    args = [_run(_build(arg, lets)) for arg in node.args]
    if len(args) == 1:
        (arg,) = args
        return lambda facts: function(facts, arg(facts))
    return lambda facts: function(facts, *(run(facts) for run in args))


def _build_unary(node: Unary, lets: Mapping[str, Evaluator]) -> _Built:
    operand = _build(node.operand, lets)
    if isinstance(operand, _Const):
        if node.op == "not":
            return _Const(not operand.value)
        return _Const(_fold(node, ~operand.value if node.op == "~" else -operand.value))
    if node.op == "not":
        return lambda facts: not operand(facts)
    if node.op == "~":
        return lambda facts: operand(facts) ^ _MASK64
    return lambda facts: -operand(facts)


def _build_binary(node: Binary, lets: Mapping[str, Evaluator]) -> _Built:
    left = _build(node.left, lets)
    right = _build(node.right, lets)
    if node.op in ("and", "or", "=>"):
        return _build_logic(node.op, left, right)
    function = _INT_OPS[node.op]
    if isinstance(left, _Const) and isinstance(right, _Const):
        return _Const(_fold(node, function(left.value, right.value)))
    if isinstance(right, _Const):
        constant = right.value
        run = _run(left)
        if node.op == "&":
            return lambda facts: run(facts) & constant
        if node.op == "|":
            return lambda facts: run(facts) | constant
        return lambda facts: function(run(facts), constant)
    if isinstance(left, _Const):
        constant = left.value
        if node.op == "&":
            return lambda facts: constant & right(facts)
        return lambda facts: function(constant, right(facts))
    if node.op == "&":
        return lambda facts: left(facts) & right(facts)
    return lambda facts: function(left(facts), right(facts))


def _build_logic(op: str, left: _Built, right: _Built) -> _Built:
    if isinstance(left, _Const):
        if op == "and":
            return right if left.value else _Const(False)
        if op == "or":
            return _Const(True) if left.value else right
        return right if left.value else _Const(True)
    if isinstance(right, _Const):
        if op == "and":
            return left if right.value else _Const(False)
        if op == "or":
            return _Const(True) if right.value else left
        return _Const(True) if right.value else (lambda facts: not left(facts))
    if op == "and":
        return lambda facts: left(facts) and right(facts)
    if op == "or":
        return lambda facts: left(facts) or right(facts)
    return lambda facts: not left(facts) or right(facts)


def _build_compare(node: Compare, lets: Mapping[str, Evaluator]) -> _Built:
    left = _build(node.left, lets)
    right = _build(node.right, lets)
    op = node.op
    if op in ("in", "not in"):
        built = _build_membership(node, left, right)
        if op == "in":
            return built
        if isinstance(built, _Const):
            return _Const(not built.value)
        return lambda facts: not built(facts)
    function = _COMPARE_OPS[op]
    if isinstance(left, _Const) and isinstance(right, _Const):
        return _Const(function(left.value, right.value))
    if isinstance(right, _Const):
        constant = right.value
        run = _run(left)
        if op == "==":
            return lambda facts: run(facts) == constant
        if op == "!=":
            return lambda facts: run(facts) != constant
        return lambda facts: function(run(facts), constant)
    left_run = _run(left)
    return lambda facts: function(left_run(facts), right(facts))


def _build_membership(node: Compare, left: _Built, right: _Built) -> _Built:
    if node.right.type == "int":
        # Subset: every bit of the left mask is set in the right one.
        if isinstance(left, _Const) and isinstance(right, _Const):
            return _Const(left.value & ~right.value == 0)
        if isinstance(right, _Const):
            outside = ~right.value & _MASK64
            run = _run(left)
            return lambda facts: not run(facts) & outside
        if isinstance(left, _Const):
            bits = left.value
            return lambda facts: right(facts) & bits == bits
        return lambda facts: left(facts) & ~right(facts) == 0
    if isinstance(right, _Const):
        members = right.value
        if isinstance(left, _Const):
            return _Const(left.value in members)
        return lambda facts: left(facts) in members
    left_run = _run(left)
    return lambda facts: left_run(facts) in right(facts)


def compile_expression(node: Node, lets: Mapping[str, Evaluator] | None = None) -> Evaluator:
    """Return the closure that evaluates ``node`` on a subject's facts."""
    return _run(_build(node, lets or {}))


def constant_value(node: Node) -> tuple[bool, object]:
    """Return (True, value) when ``node`` needs no fact at all, else (False, None)."""
    built = _build(node, {})
    return (True, built.value) if isinstance(built, _Const) else (False, None)


def _walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, Unary):
        yield from _walk(node.operand)
    elif isinstance(node, Binary | Compare):
        yield from _walk(node.left)
        yield from _walk(node.right)
    elif isinstance(node, Call | ListExpr):
        for child in node.args if isinstance(node, Call) else node.items:
            yield from _walk(child)


def names_read(node: Node) -> tuple[set[str], set[str], set[str]]:
    """Return the facts, functions and ``let`` names an expression reads."""
    facts: set[str] = set()
    functions: set[str] = set()
    lets: set[str] = set()
    for child in _walk(node):
        if isinstance(child, Name):
            if child.role == "fact":
                facts.add(child.name)
            elif child.role == "let":
                lets.add(child.name)
        elif isinstance(child, Call):
            functions.add(child.name)
    return facts, functions, lets
