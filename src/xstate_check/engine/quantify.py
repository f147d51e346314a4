"""Quantifiers compiled to mask operations: ``all c in components(M): BODY`` on many
components at once.

A quantifier's body is a condition on one component. Compiled naively it is a closure
called once per component, a dozen calls each; here it becomes a function from the
*components still in question* (a mask, the "care" set) to those of them it holds for:

- ``and``, ``or``, ``not`` and ``=>`` combine masks, and pass on only the components whose
  answer is still open (``A and B`` asks ``B`` about the components ``A`` holds for), so
  a condition is never computed for a component the per-component order would not reach;
- a condition that does not read the component is computed once (for every component);
- ``c.mask in E`` is ``E``;
- a condition on the xfeature's number alone (``c.feature == ''``, ``c.arch_size == 0``)
  is a mask fixed when the rule is compiled;
- a condition on the component's subleaf alone (``c.size == 0``, ``c.supervisor``) is
  computed once per table, for the components it describes and once for all the others
  (which read as all zero), kept with the table's layout and shared by every rule and
  subject that asks it;
- a condition attribute with a mask of its own (``c.needed``) reads that mask;
- a comparison of the component's attributes (``(c.overlaps & xcr0) == 0``,
  ``c.size == c.host.size``) is computed a column at a time: each operand's values for
  all the components still in question, then the comparison of each pair;
- any other condition is asked of each component still in question, in turn;
- a whole body that reads nothing but the component's subleaf, its xfeature, the same
  subleaf in the host's table (``c.size == c.host.size``) and XCR0 or XSS remembers its
  answer per domain, host subleaves, XCR0 and XSS with the component subleaves, which a
  template that left them shares with its profile: asked once per profile and XCR0, not
  per guest table (``remembered``).

What depends on the subleaves alone (the shared conditions, the described mask, the
regions' overlaps) is kept with the subleaves in the same way (``XsaveLayout.of_components``).

Every form gives what the per-component evaluation gives; a test compares them.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Container, Mapping
from typing import Any

from xstate_check.engine.nodes import (
    Attribute,
    Binary,
    Call,
    Compare,
    Name,
    Node,
    Quantifier,
    Unary,
    walk,
)
from xstate_check.engine.operators import COMPARE_OPS, INT_OPS, MASK64, negate, subtract
from xstate_check.facts import ATTRIBUTES, Facts, Missing
from xstate_check.facts.components import COMPONENT_BITS, NOWHERE, bare, reference_components
from xstate_check.layout import Component, XsaveLayout

__all__ = ["MaskTest", "bound_key", "components_of", "lower", "numbers", "reads_layout",
           "remembered"]

#: The components of ``care`` (a mask) a condition holds for, on one subject's facts.
MaskTest = Callable[[Facts, int], int]
#: Compiles a node to its per-facts closure (the compiler's, with the rule's lets).
Build = Callable[[Node], Callable[[Facts], object]]

_atoms = itertools.count()


def bound_key(var: str) -> str:
    """Return the Facts key a quantifier binds ``var`` to (no fact's name has a ``$``)."""
    return "$" + var


@functools.lru_cache(maxsize=4096)
def numbers(mask: int) -> tuple[int, ...]:
    """Return the component numbers (2 to 62) of ``mask``, ascending."""
    mask &= COMPONENT_BITS
    return tuple(number for number in range(2, 63) if mask >> number & 1)


def _attributes_of(node: Node, var: str) -> set[str]:
    return {child.attribute for child in walk(node)
            if isinstance(child, Attribute) and child.var == var}


def reads_layout(node: Node, var: str) -> bool:
    """Return whether ``node`` reads the subleaf of the component bound to ``var``."""
    return any(ATTRIBUTES[name].layout for name in _attributes_of(node, var))


def components_of(facts: Facts, mask: int, layout: bool) -> list[Component]:
    """Return the components of ``mask``: the table's subleaves (``layout``) or bare ones."""
    if layout:
        get = facts.subleaves.components.get
        return [get(number) or bare(number) for number in numbers(mask)]
    return [bare(number) for number in numbers(mask)]


def _reads_var(node: Node, var: str) -> bool:
    for child in walk(node):  # noqa: SIM110 - a loop costs less than any() of a generator
        if isinstance(child, Attribute) and child.var == var:
            return True
    return False


def _pure(node: Node, var: str) -> bool:
    """Return whether ``node`` reads nothing but attributes of ``var`` and constants."""
    for child in walk(node):
        if isinstance(child, Name | Call | Quantifier):
            return False
        if isinstance(child, Attribute) and child.var != var:
            return False
    return True


def _shape(node: object, var: str) -> object:
    """Return ``node`` without its spans and with ``var`` renamed: equal for equal atoms."""
    if isinstance(node, Attribute):
        return ("attribute", node.attribute if node.var == var else f"{node.var}.{node.attribute}")
    if isinstance(node, tuple) and hasattr(node, "span"):
        fields = node._fields  # type: ignore[attr-defined]
        return (type(node).__name__, *(_shape(part, var) for name, part in
                                       zip(fields, node, strict=True) if name != "span"))
    if isinstance(node, tuple):
        return tuple(_shape(part, var) for part in node)
    return node


#: The Facts key of each shared subleaf condition, by its shape or register test.
_SHARED: dict[object, str] = {}


def lower(node: Node, var: str, build: Build) -> MaskTest:
    """Return the mask form of the condition ``node`` on the component bound to ``var``."""
    if not _reads_var(node, var):
        run = build(node)
        return lambda facts, care: care if care and run(facts) else 0
    if isinstance(node, Binary) and node.op in ("and", "or", "=>"):
        left, right = lower(node.left, var, build), lower(node.right, var, build)
        if node.op == "and":
            return lambda facts, care: right(facts, left(facts, care)) if care else 0

        if node.op == "or":
            def either(facts: Facts, care: int) -> int:
                held = left(facts, care)
                rest = care & ~held
                return held | right(facts, rest) if rest else held

            return either

        def implies(facts: Facts, care: int) -> int:
            held = left(facts, care)
            return (care & ~held) | right(facts, held) if held else care

        return implies
    if isinstance(node, Unary) and node.op == "not":
        inner = lower(node.operand, var, build)
        return lambda facts, care: care & ~inner(facts, care)
    return _atom(node, var, build)


def _atom(node: Node, var: str, build: Build) -> MaskTest:
    """Return the mask form of a condition that reads the component and is no ``and``,
    ``or``, ``not`` or ``=>``."""
    if (isinstance(node, Compare) and node.op == "in" and isinstance(node.left, Attribute)
            and node.left.var == var and node.left.attribute == "mask"
            and node.right.type == "int" and not _reads_var(node.right, var)):
        within = build(node.right)
        return lambda facts, care: within(facts) & care if care else 0  # type: ignore[operator]
    if isinstance(node, Attribute) and node.var == var:
        mask = ATTRIBUTES[node.attribute].mask
        if mask is not None:
            whole = mask
            return lambda facts, care: whole(facts) & care
    field = _field_test(node, var, build)
    if field is not None:
        return _field_shared(field)
    test = build(node)
    key = bound_key(var)
    names = _attributes_of(node, var)
    depends = {ATTRIBUTES[name].depends for name in names}
    pure = _pure(node, var)
    table: Table | None = None
    if isinstance(node, Compare):
        table = _compare_table(node, var, build)
    elif isinstance(node, Attribute) and ATTRIBUTES[node.attribute].values is not None:
        column = ATTRIBUTES[node.attribute].values
        assert column is not None

        def table(facts: Facts, components: list[Component]) -> int:
            held = 0
            for component, value in zip(components, column(facts, components), strict=True):
                if value:
                    held |= 1 << component.number
            return held

    if pure and depends == {"number"}:
        # The xfeature table's attributes need no subject: a mask fixed here, a column at a
        # time where the condition has one.
        fixed = (table or _one_by_one(test, key))({}, list(_BARE_COMPONENTS))  # type: ignore[arg-type]
        return lambda facts, care: fixed & care
    if pure and depends == {"subleaf"}:
        return _shared(node, var, table or _one_by_one(test, key))
    layout = any(ATTRIBUTES[name].layout for name in names)  # reads_layout(node, var)
    if table is not None:
            def tabled(facts: Facts, care: int) -> int:
                return table(facts, components_of(facts, care, layout)) if care else 0

            return tabled

    def each(facts: Facts, care: int) -> int:
        held = 0
        if care:
            found: Mapping[int, Component] = facts.subleaves.components if layout else {}
            for number in numbers(care):
                facts[key] = found.get(number) or bare(number)
                if test(facts):
                    held |= 1 << number
        return held

    return each


#: The bare components a quantifier walks (2 to 62).
_BARE_COMPONENTS = tuple(bare(number) for number in range(2, 63))

#: A value for each of a list of components (the variable's attribute, or an expression of
#: attributes and values that do not read the component).
Column = Callable[[Facts, list[Component]], list[Any]]

#: The components of a list a condition holds for, as a mask.
Table = Callable[[Facts, list[Component]], int]

_PAIRWISE: dict[str, Callable[[list[Any], list[Any]], list[Any]]] = {
    "&": lambda left, right: [a & b for a, b in zip(left, right, strict=True)],
    "|": lambda left, right: [a | b for a, b in zip(left, right, strict=True)],
    "^": lambda left, right: [a ^ b for a, b in zip(left, right, strict=True)],
    "+": lambda left, right: [a + b for a, b in zip(left, right, strict=True)],
    "-": lambda left, right: [subtract(a, b) for a, b in zip(left, right, strict=True)],
}
#: The same with a value that does not read the component on the right.
_WITH_VALUE: dict[str, Callable[[list[Any], Any], list[Any]]] = {
    "&": lambda left, k: [a & k for a in left],
    "|": lambda left, k: [a | k for a in left],
    "^": lambda left, k: [a ^ k for a in left],
    "+": lambda left, k: [a + k for a in left],
    "-": lambda left, k: [subtract(a, k) for a in left],
}
_COMMUTATIVE = frozenset({"&", "|", "^", "+"})


def _column(node: Node, var: str, build: Build) -> Column | None:
    """Return ``node``'s value for each of a list of components bound to ``var``, computed a
    column at a time, or None where ``node`` has a form this does not handle. ``node``
    reads the component."""
    if isinstance(node, Attribute) and node.var == var:
        spec = ATTRIBUTES[node.attribute]
        if spec.values is not None:
            return spec.values
        read, key = spec.read(bound_key(var)), bound_key(var)

        def bound(facts: Facts, components: list[Component]) -> list[Any]:
            values = []
            for component in components:
                facts[key] = component
                values.append(read(facts))
            return values

        return bound
    if isinstance(node, Unary) and node.op in ("~", "-"):
        inner = _column(node.operand, var, build)
        if inner is None:
            return None
        if node.op == "~":
            return lambda facts, components: [value ^ MASK64 for value in inner(facts, components)]
        return lambda facts, components: [negate(value) for value in inner(facts, components)]
    if isinstance(node, Binary) and node.op in INT_OPS:
        return _binary_column(node, var, build)
    return None


def _binary_column(node: Binary, var: str, build: Build) -> Column | None:
    left_reads, right_reads = _reads_var(node.left, var), _reads_var(node.right, var)
    with_value = _WITH_VALUE.get(node.op)
    if with_value is not None and left_reads != right_reads and (
            left_reads or node.op in _COMMUTATIVE):
        column_node, value_node = (node.left, node.right) if left_reads else (node.right, node.left)
        column, value = _column(column_node, var, build), build(value_node)
        if column is None:
            return None
        join = with_value
        return lambda facts, components: join(column(facts, components), value(facts))
    left, right = _operand(node.left, var, build), _operand(node.right, var, build)
    if left is None or right is None:
        return None
    pairwise = _PAIRWISE.get(node.op)
    if pairwise is not None:
        fast = pairwise
        return lambda facts, components: fast(left(facts, components), right(facts, components))
    function = INT_OPS[node.op]
    return lambda facts, components: [function(a, b) for a, b in zip(
        left(facts, components), right(facts, components), strict=True)]


def _operand(node: Node, var: str, build: Build) -> Column | None:
    """Return ``node``'s column: its values, or its one value repeated where it does not
    read the component."""
    if _reads_var(node, var):
        return _column(node, var, build)
    run = build(node)
    return lambda facts, components: [run(facts)] * len(components)


def _compare_table(node: Compare, var: str, build: Build) -> Table | None:
    """Return the components of a list a comparison holds for, a column at a time, or None
    where an operand has a form ``_column`` does not handle."""
    if node.op in ("==", "!=") and not _reads_var(node.right, var):
        column, value = _column(node.left, var, build), build(node.right)
        if column is None:
            return None
        equal = node.op == "=="

        def against(facts: Facts, components: list[Component]) -> int:
            k = value(facts)
            held = 0
            for component, a in zip(components, column(facts, components), strict=True):
                if (a == k) is equal:
                    held |= 1 << component[0]
            return held

        return against
    if node.op in COMPARE_OPS:
        function = COMPARE_OPS[node.op]
    elif node.right.type == "int":  # a in b: every bit of a is set in b
        def function(a: int, b: int) -> bool:
            return not a & ~b
    else:
        def function(a: object, b: Container[object]) -> bool:
            return a in b
    negated = node.op == "not in"

    def holds(a: Any, b: Any) -> bool:
        return function(a, b) is not negated

    left, right = _operand(node.left, var, build), _operand(node.right, var, build)
    if left is None or right is None:
        return None
    if node.op in ("==", "!="):
        equal = node.op == "=="

        def same(facts: Facts, components: list[Component]) -> int:
            held = 0
            for component, a, b in zip(components, left(facts, components),
                                       right(facts, components), strict=True):
                if (a == b) is equal:
                    held |= 1 << component[0]
            return held

        return same

    def table(facts: Facts, components: list[Component]) -> int:
        held = 0
        for component, a, b in zip(components, left(facts, components),
                                   right(facts, components), strict=True):
            if holds(a, b):
                held |= 1 << component.number
        return held

    return table


#: The position in ``layout.Component`` of each subleaf register an attribute is, and the
#: ECX bit of each flag attribute.
_FIELDS = {"size": 1, "offset": 2, "ecx": 3, "edx": 4}
_FLAGS = {"supervisor": 1, "aligned": 2, "xfd": 4}
#: A register test (position, mask, comparison, value): ``c[position] & mask OP value``.
FieldTest = tuple[int, int, str, int]

#: The components of a list (described subleaves) that pass a register test, by comparison.
_SELECT: dict[str, Callable[[list[Component], int, int, int], int]] = {
    "==": lambda cs, i, m, k: sum([1 << c[0] for c in cs if c[i] & m == k]),
    "<": lambda cs, i, m, k: sum([1 << c[0] for c in cs if c[i] & m < k]),
    "<=": lambda cs, i, m, k: sum([1 << c[0] for c in cs if c[i] & m <= k]),
    ">": lambda cs, i, m, k: sum([1 << c[0] for c in cs if c[i] & m > k]),
    ">=": lambda cs, i, m, k: sum([1 << c[0] for c in cs if c[i] & m >= k]),
}
_DESCRIBED = "$described"


def _constant(node: Node, build: Build) -> object:
    """Return the value of a node that reads nothing (None where it reads something)."""
    if any(isinstance(child, Name | Attribute | Call | Quantifier) for child in walk(node)):
        return None
    return build(node)({})  # type: ignore[arg-type]


def _field_test(node: Node, var: str, build: Build) -> FieldTest | None:
    """Return the register test ``node`` is (``c.size == 0``, ``(c.ecx & ~0x7) == 0``,
    ``c.supervisor``), or None."""
    if isinstance(node, Attribute) and node.var == var and node.attribute in _FLAGS:
        return 3, _FLAGS[node.attribute], "!=", 0
    if not isinstance(node, Compare) or node.op not in COMPARE_OPS:
        return None
    value = _constant(node.right, build)
    left, mask = node.left, MASK64
    if isinstance(left, Binary) and left.op == "&":
        for one, other in ((left.left, left.right), (left.right, left.left)):
            found = _constant(other, build)
            if isinstance(found, int) and isinstance(one, Attribute):
                left, mask = one, found
                break
    if (isinstance(left, Attribute) and left.var == var and left.attribute in _FIELDS
            and isinstance(value, int) and not isinstance(value, bool)):
        return _FIELDS[left.attribute], mask, node.op, value
    return None


def _described(layout: XsaveLayout) -> tuple[list[Component], int]:
    """Return the subleaves 2 to 62 the table describes, and their mask."""
    listed = [c for number, c in layout.components.items() if 2 <= number < 63]
    return listed, sum([1 << c.number for c in listed])


def _field_shared(test: FieldTest) -> MaskTest:
    """Return the mask form of a register test: one pass over the described subleaves per
    table (kept with its layout), for every rule and subject that asks it. ``!=`` is the
    complement of ``==``, so the two share their pass."""
    index, mask, op, value = test
    if op == "!=":
        equal = _field_shared((index, mask, "==", value))
        return lambda facts, care: care & ~equal(facts, care)
    slot = _SHARED.get(test)
    if slot is None:
        slot = _SHARED[test] = f"$atom{next(_atoms)}"
    select = _SELECT[op]
    bare_holds = COMPARE_OPS[op](0, value)  # what a component without a subleaf reads

    def compute(layout: XsaveLayout) -> int:
        listed, described = layout.of_components(_DESCRIBED, _described)
        found = select(listed, index, mask, value)
        return found | (COMPONENT_BITS & ~described) if bare_holds else found

    def held(facts: Facts, care: int) -> int:
        if not care:
            return 0
        kept = facts.get(_KEPT) or _kept(facts)
        found = kept.get(slot)
        if found is None:
            found = kept[slot] = compute(facts.subleaves)
        return found & care

    return held


def _one_by_one(test: Callable[[Facts], object], key: str) -> Table:
    """Return the table form of a condition asked of each component in turn."""
    def table(facts: Facts, components: list[Component]) -> int:
        held = 0
        for component in components:
            facts[key] = component
            if test(facts):
                held |= 1 << component.number
        return held

    return table


def _shared(node: Node, var: str, table: Table) -> MaskTest:
    """Return the mask form of a condition on the component's subleaf alone: worked out
    once per table (kept with its layout), for every rule and subject that asks it."""
    shape = _shape(node, var)
    slot = _SHARED.get(shape)
    if slot is None:
        slot = _SHARED[shape] = f"$atom{next(_atoms)}"
    nowhere = [NOWHERE]

    def whole(facts: Facts) -> int:
        def compute(layout: XsaveLayout) -> int:
            listed, described = layout.of_components(_DESCRIBED, _described)
            held = table(facts, listed)
            if table(facts, nowhere):  # every xfeature without a subleaf reads as all zero
                held |= COMPONENT_BITS & ~described
            return held

        kept = facts.get(_KEPT) or _kept(facts)
        found = kept.get(slot)
        if found is None:
            found = kept[slot] = compute(facts.subleaves)
        return found

    def held(facts: Facts, care: int) -> int:
        return whole(facts) & care if care else 0

    return held


#: Where the Facts hold their layout's ``components_memo`` (see ``_kept``).
_KEPT = "$kept"


def _kept(facts: Facts) -> dict[object, Any]:
    """Return what the facts' layout keeps with its component subleaves (``of_components``),
    and keep the dict in the Facts, where a mask test finds it without a call."""
    kept = facts[_KEPT] = facts.subleaves.components_memo
    return kept


#: The most answers one body keeps per set of subleaves (one per domain and reference).
_REMEMBERED = 64
#: The facts a remembered body may read besides the component: part of its answer's key.
_KEYED_FACTS = ("xcr0", "xss")


def _keyed_facts(node: Node, var: str) -> tuple[str, ...] | None:
    """Return the facts of ``_KEYED_FACTS`` ``node`` reads, or None where it reads anything
    else but attributes of ``var`` and constants."""
    found: set[str] = set()
    for child in walk(node):
        if isinstance(child, Name):
            if child.role != "fact" or child.name not in _KEYED_FACTS:
                return None
            found.add(child.name)
        elif isinstance(child, Call | Quantifier) or (
                isinstance(child, Attribute) and child.var != var):
            return None
    return tuple(sorted(found))


def remembered(node: Node, var: str, test: MaskTest) -> MaskTest:
    """Return ``test`` (the mask form of the body ``node``) remembering its answers where
    the body reads nothing but the component's subleaf, its xfeature, the same subleaf in
    the host's table and XCR0 or XSS: one answer per (subleaves, domain, host subleaves,
    XCR0, XSS), shared by every table with these subleaves (a template that left them)
    and every rule asking it."""
    names = _attributes_of(node, var)
    keyed = _keyed_facts(node, var)
    if (keyed is None or not names
            or not all(ATTRIBUTES[name].depends in ("number", "subleaf")
                       or name.startswith("host.") for name in names)):
        return test
    shape = ("body", _shape(node, var))
    slot = _SHARED.get(shape)
    if slot is None:
        slot = _SHARED[shape] = f"$atom{next(_atoms)}"
    host = any(name.startswith("host.") for name in names)

    first = keyed[0] if keyed else ""
    second = keyed[1] if len(keyed) > 1 else ""
    count = len(keyed)
    assert count <= 2 and set(_KEYED_FACTS) == {"xcr0", "xss"}

    if not host:
        # The answer's key: the domain, and XCR0 and XSS where the body reads them.
        def plain(facts: Facts, care: int) -> int:
            if not care:
                return 0
            try:
                kept = facts.get(_KEPT) or _kept(facts)
                found: dict[object, int] | None = kept.get(slot)
                if found is None:
                    found = kept[slot] = {}
                key = ((care, facts[first], facts[second]) if count == 2
                       else (care, facts[first]) if count else care)
            except Missing:  # the body alone says whether it reads what is missing
                return test(facts, care)
            held = found.get(key)
            if held is None:
                held = test(facts, care)
                if len(found) < _REMEMBERED:
                    found[key] = held
            return held

        return plain

    def memo(facts: Facts, care: int) -> int:
        if not care:
            return 0
        try:
            kept = facts.get(_KEPT) or _kept(facts)
            found: dict[object, tuple[object, int]] | None = kept.get(slot)
            if found is None:
                found = kept[slot] = {}
            # The reference's subleaves, kept in the answer: equal identity, same values.
            reference: object = reference_components(facts)
            key = ((care, id(reference), facts[first], facts[second]) if count == 2
                   else (care, id(reference), facts[first]) if count
                   else (care, id(reference)))
        except Missing:  # the body alone says whether it reads what is missing
            return test(facts, care)
        answer = found.get(key)
        if answer is not None and answer[0] is reference:
            return answer[1]
        held = test(facts, care)
        if len(found) < _REMEMBERED:
            found[key] = (reference, held)
        return held

    return memo
