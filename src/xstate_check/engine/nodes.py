"""The nodes of a parsed rule expression, and ``walk`` over them.

``parser`` makes them; the compiler, the quantifiers and the plan read them, and the
compiled catalogue's cache holds them, so that a run loading the cache needs this module,
not the parser.
"""

from __future__ import annotations

from collections.abc import Iterator

from xstate_check.records import NamedTuple

__all__ = [
    "Attribute",
    "Binary",
    "Call",
    "Compare",
    "ListExpr",
    "Literal",
    "Name",
    "Node",
    "Quantifier",
    "Span",
    "Unary",
    "walk",
]

Span = tuple[int, int]


class Literal(NamedTuple):
    """A constant: a number, version, string, boolean, or an xfeature constant folded in."""

    value: object
    type: str
    span: Span


class Name(NamedTuple):
    """A fact, a ``let`` binding or an ``item`` field, read when the rule is evaluated."""

    name: str
    role: str
    type: str
    span: Span


class Call(NamedTuple):
    """A call of a function from the fixed table in ``facts.FUNCTIONS``."""

    name: str
    args: tuple[Node, ...]
    type: str
    span: Span


class Unary(NamedTuple):
    """``not x``, ``~x`` or ``-x``."""

    op: str
    operand: Node
    type: str
    span: Span


class Binary(NamedTuple):
    """A boolean (``and``, ``or``, ``=>``) or integer (``| ^ & << >> + - *``) operation."""

    op: str
    left: Node
    right: Node
    type: str
    span: Span


class Compare(NamedTuple):
    """A comparison (``== != < <= > >=``) or membership (``in``, ``not in``); a bool."""

    op: str
    left: Node
    right: Node
    span: Span
    type: str = "bool"


class ListExpr(NamedTuple):
    """A list literal ``[a, b, …]`` whose items share one type."""

    items: tuple[Node, ...]
    type: str
    span: Span


class Attribute(NamedTuple):
    """``c.size``: an attribute of the component the quantifier of ``c`` binds."""

    var: str
    attribute: str
    type: str
    span: Span


class Quantifier(NamedTuple):
    """``all c in components(MASK): BODY`` (``kind`` "all") or ``any …``: a condition."""

    kind: str
    var: str
    domain: Node
    body: Node
    span: Span
    type: str = "bool"


Node = Literal | Name | Call | Unary | Binary | Compare | ListExpr | Attribute | Quantifier


def walk(node: Node) -> Iterator[Node]:
    """Yield ``node`` and every node below it, depth first."""
    stack = [node]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        yield node
        # Children pushed last first, so that they come out in order.
        if isinstance(node, Binary | Compare):
            push(node.right)
            push(node.left)
        elif isinstance(node, Unary):
            push(node.operand)
        elif isinstance(node, Quantifier):
            push(node.body)
            push(node.domain)
        elif isinstance(node, Call | ListExpr):
            stack.extend(reversed(node.args if isinstance(node, Call) else node.items))
