"""Compile a parsed rule expression into nested closures, once, at load time.

Constant subtrees are folded (``avx512 | ymm`` becomes one number), fact reads are
``operator.itemgetter`` on the lazily filled ``Facts`` dict, and the common shapes
(``fact & CONST``, ``CONST in fact``, ``x in [..]``) get closures of their own, so that
evaluating a rule costs a handful of calls. Nothing is ever passed to ``eval``. The order
rules are run in, and the shortcuts that skip some, are ``plan``'s.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xstate_check.engine.nodes import (
    Attribute,
    Binary,
    Call,
    Compare,
    ListExpr,
    Literal,
    Name,
    Node,
    Quantifier,
    Unary,
    walk,
)
from xstate_check.engine.operators import COMPARE_OPS, INT_OPS, MASK64, negate
from xstate_check.engine.quantify import (
    bound_key,
    components_of,
    lower,
    reads_layout,
    remembered,
)
from xstate_check.facts import ATTRIBUTES, FUNCTIONS, Facts
from xstate_check.facts.components import COMPONENT_BITS
from xstate_check.layout import Component

__all__ = [
    "MASK64",
    "Evaluator",
    "Offenders",
    "attributes_read",
    "compile_expression",
    "compile_rule",
    "constant_value",
    "names_read",
    "offending_quantifiers",
]

#: A compiled expression: facts in, value out (may raise ``facts.Missing``).
Evaluator = Callable[[Facts], Any]


class _Const:
    """A value known when the rule is loaded."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value: Any = value


class _Fact:
    """A fact read, kept as a name so that the operation around it can inline the read."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Masked:
    """``fact & MASK``, kept as data so that a comparison around it needs one closure."""

    __slots__ = ("mask", "name")

    def __init__(self, name: str, mask: int) -> None:
        self.name = name
        self.mask = mask


class _MaskTest:
    """``(fact & MASK == VALUE) == EQUAL``, kept as data so that ``and``, ``or`` and ``=>``
    around it read the fact inline instead of calling another closure."""

    __slots__ = ("equal", "mask", "name", "value")

    def __init__(self, name: str, mask: int, value: int, equal: bool) -> None:
        self.name = name
        self.mask = mask
        self.value = value
        self.equal = equal


class _Equals:
    """``(fact == VALUE) == EQUAL`` for a value that is no mask (a string), kept as data like
    ``_MaskTest``."""

    __slots__ = ("equal", "name", "value")

    def __init__(self, name: str, value: object, equal: bool) -> None:
        self.name = name
        self.value = value
        self.equal = equal


#: One operand of an ``and``/``or`` chain, read inline by the chain's one closure:
#: (kind, fact, mask, value, closure); see ``_KINDS``.
_Atom = tuple[int, str, int, Any, "Evaluator | None"]
#: The operand kinds: the fact's value, ``not`` it; ``fact & mask == value``, ``!=``;
#: ``fact == value``, ``!=``; a closure's value, ``not`` it. Each odd kind negates the even
#: one before it.
_FACT, _NOT_FACT, _MASK_EQ, _MASK_NE, _EQ, _NE, _RUN, _NOT_RUN = range(8)


class _Chain:
    """``a and b and …`` or ``a or b or …``: operands flattened into one tuple of atoms,
    so that one closure evaluates the whole chain (left to right, stopping as Python's
    ``and`` and ``or`` do, with the same value)."""

    __slots__ = ("atoms", "op")

    def __init__(self, op: str, atoms: tuple[_Atom, ...]) -> None:
        self.op = op
        self.atoms = atoms


_Built = _Const | _Fact | _Masked | _MaskTest | _Equals | _Chain | Evaluator


def _run(built: _Built) -> Evaluator:
    if isinstance(built, _Const):
        value = built.value
        return lambda facts: value
    if isinstance(built, _Fact):
        return operator.itemgetter(built.name)
    if isinstance(built, _Masked):
        name, mask = built.name, built.mask
        return lambda facts: facts[name] & mask
    if isinstance(built, _MaskTest):
        name, mask, value = built.name, built.mask, built.value
        if built.equal:
            return lambda facts: facts[name] & mask == value
        return lambda facts: facts[name] & mask != value
    if isinstance(built, _Equals):
        name, value = built.name, built.value
        if built.equal:
            return lambda facts: facts[name] == value
        return lambda facts: facts[name] != value
    if isinstance(built, _Chain):
        return _run_chain(built)
    return built


def _atom(built: _Built) -> _Atom:
    """Return ``built`` as a chain's operand."""
    if isinstance(built, _Fact):
        return (_FACT, built.name, 0, None, None)
    if isinstance(built, _MaskTest):
        return (_MASK_EQ if built.equal else _MASK_NE, built.name, built.mask, built.value, None)
    if isinstance(built, _Equals):
        return (_EQ if built.equal else _NE, built.name, 0, built.value, None)
    return (_RUN, "", 0, None, _run(built))


def _atoms(op: str, built: _Built) -> tuple[_Atom, ...]:
    """Return the operands ``built`` adds to an ``op`` chain: its own, where it is a chain
    of the same operator, else itself."""
    if isinstance(built, _Chain) and built.op == op:
        return built.atoms
    return (_atom(built),)


def _negated_atom(atom: _Atom) -> _Atom:
    kind, name, mask, value, run = atom
    return (kind ^ 1, name, mask, value, run)


def _run_atom(atom: _Atom) -> Evaluator:
    """Return the closure of one operand alone."""
    kind, name, mask, value, run = atom
    if kind in (_RUN, _NOT_RUN):
        assert run is not None
        return run if kind == _RUN else (lambda facts: not run(facts))
    if kind == _FACT:
        return operator.itemgetter(name)
    if kind == _NOT_FACT:
        return lambda facts: not facts[name]
    if kind in (_MASK_EQ, _MASK_NE):
        return _run(_MaskTest(name, mask, value, kind == _MASK_EQ))
    return _run(_Equals(name, value, kind == _EQ))


def _run_chain(chain: _Chain) -> Evaluator:
    """Return the closure of a chain (see ``_Chain``): a loop over the facts of a long chain
    of facts (or of negated ones), else one closure per operand but the last, each reading
    its own operand inline and calling the next."""
    atoms = chain.atoms
    kinds = {atom[0] for atom in atoms}
    if len(atoms) == 1:
        return _run_atom(atoms[0])
    if len(atoms) == 2 and kinds <= {_MASK_EQ, _MASK_NE}:
        (k1, n1, m1, v1, _), (k2, n2, m2, v2, _) = atoms
        e1, e2 = k1 == _MASK_EQ, k2 == _MASK_EQ
        if chain.op == "and":
            return lambda facts: (facts[n1] & m1 == v1) == e1 and (facts[n2] & m2 == v2) == e2
        return lambda facts: (facts[n1] & m1 == v1) == e1 or (facts[n2] & m2 == v2) == e2
    if len(atoms) > 2 and kinds in ({_FACT}, {_NOT_FACT}):
        return _facts_loop(chain.op, kinds == {_NOT_FACT}, tuple(atom[1] for atom in atoms))
    rest = _run_atom(atoms[-1])
    for atom in reversed(atoms[:-1]):
        rest = (_or_head if chain.op == "or" else _and_head)(atom, rest)
    return rest


def _facts_loop(op: str, negated: bool, names: tuple[str, ...]) -> Evaluator:
    """Return the closure of a chain of facts, or of negated facts, read in a loop."""
    if negated and op == "and":
        def none_true(facts: Facts) -> bool:
            for name in names:  # noqa: SIM110 - a loop costs less than all() of a generator
                if facts[name]:
                    return False
            return True

        return none_true
    if negated:
        def some_false(facts: Facts) -> bool:
            for name in names:  # noqa: SIM110 - a loop costs less than any() of a generator
                if not facts[name]:
                    return True
            return False

        return some_false
    if op == "or":
        def first_true(facts: Facts) -> Any:
            for name in names:
                value = facts[name]
                if value:
                    return value
            return value

        return first_true

    def first_false(facts: Facts) -> Any:
        for name in names:
            value = facts[name]
            if not value:
                return value
        return value

    return first_false


def _or_head(atom: _Atom, rest: Evaluator) -> Evaluator:
    """Return ``ATOM or rest``, the atom read inline."""
    kind, name, mask, value, run = atom
    if kind == _MASK_EQ:
        return lambda facts: facts[name] & mask == value or rest(facts)
    if kind == _MASK_NE:
        return lambda facts: facts[name] & mask != value or rest(facts)
    if kind == _FACT:
        return lambda facts: facts[name] or rest(facts)
    if kind == _NOT_FACT:
        return lambda facts: not facts[name] or rest(facts)
    if kind == _EQ:
        return lambda facts: facts[name] == value or rest(facts)
    if kind == _NE:
        return lambda facts: facts[name] != value or rest(facts)
    assert run is not None
    if kind == _RUN:
        return lambda facts: run(facts) or rest(facts)
    return lambda facts: not run(facts) or rest(facts)


def _and_head(atom: _Atom, rest: Evaluator) -> Evaluator:
    """Return ``ATOM and rest``, the atom read inline."""
    kind, name, mask, value, run = atom
    if kind == _MASK_EQ:
        return lambda facts: facts[name] & mask == value and rest(facts)
    if kind == _MASK_NE:
        return lambda facts: facts[name] & mask != value and rest(facts)
    if kind == _FACT:
        return lambda facts: facts[name] and rest(facts)
    if kind == _NOT_FACT:
        return lambda facts: not facts[name] and rest(facts)
    if kind == _EQ:
        return lambda facts: facts[name] == value and rest(facts)
    if kind == _NE:
        return lambda facts: facts[name] != value and rest(facts)
    assert run is not None
    if kind == _RUN:
        return lambda facts: run(facts) and rest(facts)
    return lambda facts: not run(facts) and rest(facts)


def _fold(node: Node, value: object) -> object:
    """Keep int results within 64 bits, as masks are (``~`` of a mask stays a mask)."""
    if node.type == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value & MASK64 if value < 0 else value
    return value


def _build(node: Node, lets: Mapping[str, Evaluator]) -> _Built:
    builder: Callable[[Any, Mapping[str, Evaluator]], _Built] = _BUILDERS[type(node)]
    return builder(node, lets)


def _build_name(node: Name, lets: Mapping[str, Evaluator]) -> _Built:
    if node.role == "let":
        return lets[node.name]
    if node.role == "item":
        field = operator.attrgetter(node.name.split(".", 1)[1])
        return lambda facts: field(facts["item"])
    return _Fact(node.name)


def _build_attribute(node: Attribute) -> _Built:
    return ATTRIBUTES[node.attribute].read(bound_key(node.var))


def _domain(node: Quantifier, lets: Mapping[str, Evaluator],
            domain: _Built | None = None) -> Callable[[Facts], int]:
    """Return the closure giving the components of ``node``'s domain (``domain``: built
    already), as a mask."""
    if domain is None:
        domain = _build(node.domain, lets)
    if isinstance(domain, _Const):
        mask = domain.value & COMPONENT_BITS
        return lambda facts: mask
    run = _run(domain)
    return lambda facts: run(facts) & COMPONENT_BITS


def _mask_test(node: Quantifier, lets: Mapping[str, Evaluator]) -> Callable[[Facts, int], int]:
    return remembered(node.body, node.var,
                      lower(node.body, node.var, lambda part: _run(_build(part, lets))))


def _build_quantifier(node: Quantifier, lets: Mapping[str, Evaluator],
                      keep: str = "") -> _Built:
    """Build a quantifier; an ``all`` given ``keep`` (a rule's root: see ``Offenders``) puts
    the mask of the components it holds false in the Facts under that key when it fails."""
    holds = _mask_test(node, lets)
    every = node.kind == "all"
    built = _build(node.domain, lets)
    # The domain read inline where it is a constant or a fact (masked): no call of its own.
    if isinstance(built, _Const):
        mask = built.value & COMPONENT_BITS
        if not mask:  # no component: true for ``all``, false for ``any`` (yet no constant
            # to the loader, which rejects a check that reads nothing)
            return lambda facts: every
        if every:
            def every_of_constant(facts: Facts) -> bool:
                if (held := holds(facts, mask)) == mask:
                    return True
                return _failed(facts, keep, mask & ~held)

            return every_of_constant
        return lambda facts: holds(facts, mask) != 0
    if isinstance(built, _Fact | _Masked):
        name = built.name
        bits = COMPONENT_BITS & (built.mask if isinstance(built, _Masked) else MASK64)
        if every:
            def every_of_fact(facts: Facts) -> bool:
                care = facts[name] & bits
                if not care or (held := holds(facts, care)) == care:
                    return True
                return _failed(facts, keep, care & ~held)

            return every_of_fact
        return lambda facts: (care := facts[name] & bits) != 0 and holds(facts, care) != 0
    if isinstance(node.domain, Binary) and node.domain.op == "|":
        parts = (_build(node.domain.left, lets), _build(node.domain.right, lets))
        if isinstance(parts[0], _Fact) and isinstance(parts[1], _Fact):
            one, two = parts[0].name, parts[1].name  # ``components(xcr0 | xss)``, inline
            if every:
                def every_of_union(facts: Facts) -> bool:
                    care = (facts[one] | facts[two]) & COMPONENT_BITS
                    if not care or (held := holds(facts, care)) == care:
                        return True
                    return _failed(facts, keep, care & ~held)

                return every_of_union
            return lambda facts: ((care := (facts[one] | facts[two]) & COMPONENT_BITS) != 0
                                  and holds(facts, care) != 0)
    domain = _domain(node, lets, built)
    if every:
        def every_of(facts: Facts) -> bool:
            care = domain(facts)
            if not care or (held := holds(facts, care)) == care:
                return True
            return _failed(facts, keep, care & ~held)

        return every_of
    return lambda facts: (care := domain(facts)) != 0 and holds(facts, care) != 0


def _failed(facts: Facts, keep: str, offending: int) -> bool:
    """Return False for a failing ``all``, keeping the components it held false
    (``offending``) in the facts under ``keep`` where given (its finding reads them)."""
    if keep:
        facts[keep] = offending
    return False


def _build_list(node: ListExpr, lets: Mapping[str, Evaluator]) -> _Built:
    items = [_build(item, lets) for item in node.items]
    if all(isinstance(item, _Const) for item in items):
        return _Const(frozenset(item.value for item in items if isinstance(item, _Const)))
    runs = [_run(item) for item in items]
    return lambda facts: frozenset(run(facts) for run in runs)


def _build_call(node: Call, lets: Mapping[str, Evaluator]) -> _Built:
    function = FUNCTIONS[node.name].call
    if len(node.args) == 1:
        built = _build(node.args[0], lets)
        if isinstance(built, _Fact):
            name = built.name  # ``std_size(xcr0)``: the fact read inline
            return lambda facts: function(facts, facts[name])
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
        return _negate(operand)
    run = _run(operand)
    if node.op == "~":
        return lambda facts: run(facts) ^ MASK64
    return lambda facts: negate(run(facts))


def _build_binary(node: Binary, lets: Mapping[str, Evaluator]) -> _Built:
    left = _build(node.left, lets)
    right = _build(node.right, lets)
    if node.op in ("and", "or", "=>"):
        return _build_logic(node.op, left, right)
    function = INT_OPS[node.op]
    if isinstance(left, _Const) and isinstance(right, _Const):
        return _Const(_fold(node, function(left.value, right.value)))
    if node.op == "&":
        if isinstance(left, _Const):
            left, right = right, left
        if isinstance(right, _Const):
            if isinstance(left, _Fact):
                return _Masked(left.name, right.value)
            if isinstance(left, _Masked):
                return _Masked(left.name, left.mask & right.value)
    if isinstance(left, _Fact) and isinstance(right, _Fact) and node.op in ("|", "&"):
        first, second = left.name, right.name  # both read inline
        if node.op == "|":
            return lambda facts: facts[first] | facts[second]
        return lambda facts: facts[first] & facts[second]
    run_left, run_right = _run(left), _run(right)
    if isinstance(right, _Const):
        constant = right.value
        if node.op == "|":
            return lambda facts: run_left(facts) | constant
        return lambda facts: function(run_left(facts), constant)
    if isinstance(left, _Const):
        constant = left.value
        return lambda facts: function(constant, run_right(facts))
    if node.op == "&":
        return lambda facts: run_left(facts) & run_right(facts)
    return lambda facts: function(run_left(facts), run_right(facts))


def _build_logic(op: str, left: _Built, right: _Built, *, root: bool = False) -> _Built:
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
        return _Const(True) if right.value else _negate(left)
    if op == "=>":
        # A => B is (not A) or B. At a rule's root, when B is a plain mask test and A is
        # not, B goes first: it usually holds, and A (a feature bit, a role) is then never
        # computed. There either order gives the same findings: where A is missing, B true
        # passes the rule and A first makes it not applicable, and neither is a finding.
        # Anywhere else the two differ (under ``not``, an ``and``, a quantifier), so the
        # order is the written one.
        if root and isinstance(right, _MaskTest) and not isinstance(left, _MaskTest):
            left, right = right, _negate(left)
        else:
            left = _negate(left)
        op = "or"
    return _Chain(op, _atoms(op, left) + _atoms(op, right))


def _negate(built: _Built) -> _Built:
    if isinstance(built, _MaskTest):
        return _MaskTest(built.name, built.mask, built.value, not built.equal)
    if isinstance(built, _Equals):
        return _Equals(built.name, built.value, not built.equal)
    if isinstance(built, _Fact):
        return _Chain("and", ((_NOT_FACT, built.name, 0, None, None),))
    if isinstance(built, _Chain):
        # not (a or b) is (not a) and (not b), the same value (a bool) either way.
        return _Chain("and" if built.op == "or" else "or",
                      tuple(_negated_atom(atom) for atom in built.atoms))
    run = _run(built)
    return lambda facts: not run(facts)


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
        return _negate(built)
    function = COMPARE_OPS[op]
    if isinstance(left, _Const) and isinstance(right, _Const):
        return _Const(function(left.value, right.value))
    if isinstance(right, _Const):
        constant = right.value
        if isinstance(left, _Masked) and op in ("==", "!="):
            return _MaskTest(left.name, left.mask, constant, op == "==")
        if isinstance(left, _Fact) and node.left.type == "int" and op in ("==", "!="):
            return _MaskTest(left.name, MASK64, constant, op == "==")
        if isinstance(left, _Fact):
            name = left.name
            if op in ("==", "!="):
                return _Equals(name, constant, op == "==")
            if op == ">=":
                return lambda facts: facts[name] >= constant
            if op == "<=":
                return lambda facts: facts[name] <= constant
        run = _run(left)
        return lambda facts: function(run(facts), constant)
    if isinstance(left, _Fact) and op in (">=", "<="):
        name, run = left.name, _run(right)  # ``size_max >= std_size(xcr0)``: the fact inline
        if op == ">=":
            return lambda facts: facts[name] >= run(facts)
        return lambda facts: facts[name] <= run(facts)
    run_left, run_right = _run(left), _run(right)
    return lambda facts: function(run_left(facts), run_right(facts))


def _build_membership(node: Compare, left: _Built, right: _Built) -> _Built:
    if node.right.type == "int":
        # Subset: every bit of the left mask is set in the right one.
        if isinstance(left, _Const) and isinstance(right, _Const):
            return _Const(left.value & ~right.value == 0)
        if isinstance(right, _Const):
            outside = ~right.value & MASK64
            if isinstance(left, _Fact | _Masked):
                if isinstance(left, _Masked):
                    outside &= left.mask
                return _MaskTest(left.name, outside, 0, True)
            run = _run(left)
            return lambda facts: not run(facts) & outside
        if isinstance(left, _Const):
            bits = left.value
            if isinstance(right, _Fact):
                return _MaskTest(right.name, bits, bits, True)
            run = _run(right)
            return lambda facts: run(facts) & bits == bits
        run_left, run_right = _run(left), _run(right)
        return lambda facts: run_left(facts) & ~run_right(facts) == 0
    if isinstance(right, _Const):
        members = right.value
        if isinstance(left, _Const):
            return _Const(left.value in members)
        if isinstance(left, _Masked):
            name, mask = left.name, left.mask
            return lambda facts: facts[name] & mask in members
        if isinstance(left, _Fact):
            name = left.name
            return lambda facts: facts[name] in members
        run = _run(left)
        return lambda facts: run(facts) in members
    run_left, run_right = _run(left), _run(right)
    return lambda facts: run_left(facts) in run_right(facts)


#: The builder of each node type.
_BUILDERS: dict[type, Callable[[Any, Mapping[str, Evaluator]], _Built]] = {
    Literal: lambda node, lets: _Const(node.value),
    Attribute: lambda node, lets: _build_attribute(node),
    Quantifier: _build_quantifier,
    Name: _build_name,
    ListExpr: _build_list,
    Call: _build_call,
    Unary: _build_unary,
    Compare: _build_compare,
    Binary: _build_binary,
}


def compile_expression(node: Node, lets: Mapping[str, Evaluator] | None = None) -> Evaluator:
    """Return the closure that evaluates ``node`` on a subject's facts."""
    return _run(_build(node, lets or {}))


def offending_quantifiers(node: Node) -> list[Quantifier]:
    """Return the ``all`` quantifiers whose failure fails ``node``: those reached from its
    root through ``and``, ``or`` and the right side of ``=>``. A message names what each
    holds false (``{c}``)."""
    if isinstance(node, Quantifier):
        return [node] if node.kind == "all" else []
    if isinstance(node, Binary) and node.op in ("and", "or"):
        return offending_quantifiers(node.left) + offending_quantifiers(node.right)
    if isinstance(node, Binary) and node.op == "=>":
        return offending_quantifiers(node.right)
    return []


class Offenders:
    """What a failing rule's ``all`` quantifiers of one variable hold false: called, the
    offending components; ``failing``, their mask. Compiled on first use: only a failing
    rule's finding asks.

    A rule whose check is one ``all`` puts that mask in the Facts when its test fails
    (under ``kept``), and ``failing`` takes it from there, once, instead of asking again:
    a finding is made right after its test failed, on the same Facts and item.
    """

    __slots__ = ("_lets", "_quantifiers", "_tests", "kept", "layout")

    def __init__(self, quantifiers: Sequence[Quantifier], lets: Mapping[str, Evaluator],
                 kept: str = "") -> None:
        self._quantifiers = tuple(quantifiers)
        self._lets = lets
        self.kept = kept
        self._tests: tuple[tuple[Callable[[Facts], int], Callable[[Facts, int], int]], ...] = ()
        #: Whether a body reads the components' subleaves (known once ``failing`` ran).
        self.layout = False

    def __call__(self, facts: Facts) -> list[Component]:
        """Return the offending components: the table's subleaves where a body reads them."""
        failing = self.failing(facts)
        return components_of(facts, failing, self.layout)

    def failing(self, facts: Facts) -> int:
        """Return the mask of the components the quantifiers hold false."""
        if self.kept:
            kept: int | None = facts.pop(self.kept, None)
            if kept is not None:
                return kept
        tests = self._tests
        if not tests:
            lets, quantifiers = self._lets, self._quantifiers
            self.layout = any(reads_layout(node.body, node.var) for node in quantifiers)
            tests = self._tests = tuple((_domain(node, lets), _mask_test(node, lets))
                                        for node in quantifiers)
        failing = 0
        for domain, holds in tests:
            care = domain(facts)
            failing |= care & ~holds(facts, care)
        return failing


def compile_rule(node: Node, let_nodes: Sequence[tuple[str, Node]]) -> tuple[
        Evaluator, dict[str, Evaluator], dict[str, Offenders]]:
    """Return a rule's test, its lets and, per variable a failing ``all`` binds, what it
    holds false (``Offenders``, for the finding)."""
    lets: dict[str, Evaluator] = {}
    for name, let_node in let_nodes:
        lets[name] = compile_expression(let_node, lets)
    if isinstance(node, Quantifier) and node.kind == "all":
        kept = f"$offenders:{next(_kept)}"  # no fact's or bound variable's name
        return (_run(_build_quantifier(node, lets, kept)), lets,
                {node.var: Offenders((node,), lets, kept)})
    by_var: dict[str, list[Quantifier]] = {}
    for quantifier in offending_quantifiers(node):
        by_var.setdefault(quantifier.var, []).append(quantifier)
    offenders = {var: Offenders(found, lets) for var, found in by_var.items()}
    return _run(_build_root(node, lets)), lets, offenders


#: Numbers the Facts keys where root quantifiers keep what they hold false.
_kept = itertools.count()


def _build_root(node: Node, lets: Mapping[str, Evaluator]) -> _Built:
    """Build a rule's test: as ``_build``, with a root ``=>`` free to read its right side
    first (see ``_build_logic``)."""
    if isinstance(node, Binary) and node.op == "=>":
        return _build_logic("=>", _build(node.left, lets), _build(node.right, lets), root=True)
    return _build(node, lets)


def constant_value(node: Node) -> tuple[bool, object]:
    """Return (True, value) when ``node`` needs no fact at all, else (False, None)."""
    built = _build(node, {name: _never for name in _let_names(node)})
    return (True, built.value) if isinstance(built, _Const) else (False, None)


def _never(facts: Facts) -> Any:
    raise AssertionError("a let read while folding constants")


def _let_names(node: Node) -> set[str]:
    return {child.name for child in walk(node) if isinstance(child, Name) and child.role == "let"}


def attributes_read(node: Node, var: str | None = None) -> set[str]:
    """Return the component attributes ``node`` reads (of ``var`` only, where given)."""
    return {child.attribute for child in walk(node)
            if isinstance(child, Attribute) and (var is None or child.var == var)}


def names_read(node: Node) -> tuple[set[str], set[str], set[str]]:
    """Return the facts, functions and ``let`` names an expression reads."""
    facts: set[str] = set()
    functions: set[str] = set()
    lets: set[str] = set()
    for child in walk(node):
        if isinstance(child, Name):
            if child.role == "fact":
                facts.add(child.name)
            elif child.role == "let":
                lets.add(child.name)
        elif isinstance(child, Call):
            functions.add(child.name)
    return facts, functions, lets
