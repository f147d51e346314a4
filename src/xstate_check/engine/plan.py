"""The plan: the order evaluation walks the rules in, and the shortcuts that skip some.

Nothing here changes a verdict: ``runner.evaluate_rules(..., planned=False)`` runs every
rule's full test in turn, and a test compares both on every bundled profile and example.
Deleting this module (with ``Catalogue.plan`` and the planned loop of ``runner``) leaves
that loop alone, about 6 % slower on real subjects.

- quick conditions: ``facts[name] & mask in values``, a condition under which a rule passes,
  derived from its parsed check (``quick_condition``);
- groups: the rules with a quick condition on the same fact, checked in one loop, their
  conditions folded so that the whole group passes at once on most subjects;
- three passes: the groups, the other rules, the ``each`` rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from xstate_check.engine.compiler import MASK64, Evaluator, constant_value
from xstate_check.engine.nodes import Binary, Compare, Literal, Name, Node, Unary
from xstate_check.records import NamedTuple

if TYPE_CHECKING:
    from xstate_check.engine.catalogue import Rule

__all__ = ["PASSING", "Plan", "Quick", "fold_conditions", "passes_for_role", "quick_condition",
           "rule_quick"]


#: Enumerate at most this many mask bits when combining two bit tests.
_ENUMERATE_BITS = 12


class Quick(NamedTuple):
    """``facts[name] & mask in values``: a condition under which a rule passes.

    ``exact`` says it is also necessary (the rule passes exactly then); otherwise it is only
    sufficient. Rules whose quick conditions read the same fact are checked in one loop.
    """

    name: str
    mask: int
    values: frozenset[int]
    exact: bool


def _subsets(mask: int) -> list[int]:
    result = [0]
    for bit in _bit_list(mask):
        result += [value | bit for value in result]
    return result


def _bit_list(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low)
        mask ^= low
    return out


def _fact_mask(node: Node) -> tuple[str, int] | None:
    """Return (fact, mask) when ``node`` is ``fact`` or ``fact & CONSTANT`` (an int fact)."""
    if isinstance(node, Name) and node.role == "fact" and node.type == "int":
        return node.name, MASK64
    if isinstance(node, Binary) and node.op == "&":
        for one, other in ((node.left, node.right), (node.right, node.left)):
            inner = _fact_mask(one)
            constant, value = constant_value(other)
            if inner is not None and constant and isinstance(value, int):
                return inner[0], inner[1] & value
    return None


def _int_constant(node: Node) -> int | None:
    constant, value = constant_value(node)
    return value if constant and isinstance(value, int) and not isinstance(value, bool) else None


def _complement(quick: Quick | None) -> Quick | None:
    if quick is None or not quick.exact or bin(quick.mask).count("1") > _ENUMERATE_BITS:
        return None
    values = frozenset(v for v in _subsets(quick.mask) if v not in quick.values)
    return Quick(quick.name, quick.mask, values, True)


def _combine(op: str, first: Quick, second: Quick) -> Quick | None:
    mask = first.mask | second.mask
    if first.name != second.name or bin(mask).count("1") > _ENUMERATE_BITS:
        return None
    if op == "and":
        values = [v for v in _subsets(mask)
                  if v & first.mask in first.values and v & second.mask in second.values]
    else:
        values = [v for v in _subsets(mask)
                  if v & first.mask in first.values or v & second.mask in second.values]
    return Quick(first.name, mask, frozenset(values), first.exact and second.exact)


def quick_condition(node: Node) -> Quick | None:
    """Return a mask condition on one fact under which ``node`` is true, where one exists."""
    if isinstance(node, Unary) and node.op == "not":
        return _complement(quick_condition(node.operand))
    if isinstance(node, Binary) and node.op in ("and", "or", "=>"):
        first = quick_condition(node.left)
        second = quick_condition(node.right)
        if node.op == "=>":
            first = _complement(first)
            if first is None:
                # The consequent alone is enough for the implication to hold.
                return None if second is None else second._replace(exact=False)
        if first is not None and second is not None:
            combined = _combine("or" if node.op == "=>" else node.op, first, second)
            if combined is not None:
                return combined
        if node.op == "and":
            return None
        either = first or second
        return None if either is None else either._replace(exact=False)
    if isinstance(node, Compare):
        return _quick_compare(node)
    return None


def _quick_compare(node: Compare) -> Quick | None:
    op = node.op
    if op in ("==", "!="):
        target = _fact_mask(node.left)
        value = _int_constant(node.right)
        if target is None or value is None:
            return None
        name, mask = target
        equal = Quick(name, mask, frozenset({value} if not value & ~mask else ()), True)
        return equal if op == "==" else _complement(equal)
    if op not in ("in", "not in"):
        return None
    quick: Quick | None = None
    if node.right.type == "int":
        inside = _int_constant(node.right)
        target = _fact_mask(node.left)
        if inside is not None and target is not None:
            quick = Quick(target[0], target[1] & ~inside & MASK64, frozenset({0}), True)
        required = _int_constant(node.left)
        target = _fact_mask(node.right)
        if required is not None and target is not None and not required & ~target[1]:
            quick = Quick(target[0], required, frozenset({required}), True)
    else:
        target = _fact_mask(node.left)
        constant, members = constant_value(node.right)
        if target is not None and constant and isinstance(members, frozenset):
            values = frozenset(v for v in members if isinstance(v, int) and not v & ~target[1])
            quick = Quick(target[0], target[1], values, True)
    return quick if op == "in" else _complement(quick)


def rule_quick(rule: Rule) -> Quick | None:
    """Return the quick condition of ``rule``'s check: kept with it, else worked out."""
    compiled = rule.compiled
    if compiled.quick is not None:
        return compiled.quick[0]
    return quick_condition(compiled.source[0]) if compiled.source else None


def _role_decides(node: Node, role: str) -> bool | None:
    """Return the value ``node`` has on every subject of ``role`` where its ``role == "…"``
    and ``role != "…"`` tests alone decide it (through ``and``, ``or``, ``not``); else
    None."""
    if (isinstance(node, Compare) and node.op in ("==", "!=") and isinstance(node.left, Name)
            and node.left.role == "fact" and node.left.name == "role"
            and isinstance(node.right, Literal) and isinstance(node.right.value, str)):
        return (node.right.value == role) == (node.op == "==")
    if isinstance(node, Unary) and node.op == "not":
        inner = _role_decides(node.operand, role)
        return None if inner is None else not inner
    if isinstance(node, Binary) and node.op in ("and", "or"):
        left, right = _role_decides(node.left, role), _role_decides(node.right, role)
        if node.op == "and":
            if left is False or right is False:
                return False
            return True if left and right else None
        if left or right:
            return True
        return False if left is False and right is False else None
    return None


def passes_for_role(rule: Rule, role: str | None) -> bool:
    """Return whether ``rule`` gives no finding on any subject of ``role``: its check (with
    ``applies`` folded in) is ``A => B`` and A is false for the role (``A`` reads
    ``role == "cpu"`` where the role is ``guest``, say). Whatever else it reads, it then
    passes or, where B's facts are Missing, does not apply."""
    source = rule.compiled.source
    if role is None or source is None:
        return False
    node = source[0]
    return (isinstance(node, Binary) and node.op == "=>"
            and _role_decides(node.left, role) is False)


# --- the plan ------------------------------------------------------------------------------

Step = tuple[int, Evaluator, "Rule"]
QuickStep = tuple[int, frozenset[int], int, Evaluator, "Rule"]
Group = tuple[str | None, int, int, frozenset[int] | None, tuple[QuickStep, ...]]
#: A step of a plan for one set of lacking NEEDS bits (see ``Plan.for_lacking``):
#: (mask, values, test, rule).
ReadyStep = tuple[int, frozenset[int], Evaluator, "Rule"]
#: A group of a plan for one set of lacking NEEDS bits: (fact, zero_mask, small_mask,
#: all_pass, steps); fact None: the steps run their tests, each in turn.
ReadyGroup = tuple[str | None, int, int, frozenset[int] | None, tuple[ReadyStep, ...]]
#: What evaluation walks on a subject lacking some NEEDS bits: the groups, the ``each`` rules
#: (test, rule, the list fact it walks).
Ready = tuple[tuple[ReadyGroup, ...], tuple[tuple[Evaluator, "Rule", str], ...]]


@attrs.frozen(eq=False)
class Plan:
    """The order evaluation walks the rules in, built once per catalogue.

    ``groups``: per fact, the rules with a quick pass condition on it, as
    (fact, zero_mask, small_mask, all_pass, steps). The whole group passes at once when
    ``fact & zero_mask == 0`` and ``fact & small_mask in all_pass`` (the conditions of
    every rule folded together; ``all_pass`` is None where they have too many bits to
    fold). Otherwise each step (mask, values, needs, test, rule) passes when
    ``fact & mask in values``, else the rule's full test runs. The last group, of fact
    None, holds the other rules (no quick condition). ``walking``: (needs, test, rule) of
    the ``each`` rules. ``needs`` are the NEEDS_* bits of the facts a rule reads.
    """

    groups: tuple[Group, ...]
    walking: tuple[Step, ...]
    #: ``for_subject``'s answers, by the role, then by the lacking NEEDS bits (two lookups
    #: cost less than a tuple key made per subject).
    _ready: dict[str | None, dict[int, Ready]] = attrs.field(factory=dict, init=False,
                                                             repr=False)

    def for_lacking(self, lacking: int) -> Ready:
        """Return the plan for a subject lacking the NEEDS bits ``lacking``, of any role."""
        return self.for_subject(lacking, None)

    def for_subject(self, lacking: int, role: str | None) -> Ready:
        """Return the plan for a subject of ``role`` lacking the NEEDS bits ``lacking``,
        worked out once: the rules whose facts need any of them left out (they do not
        apply), and those that pass on every subject of the role (``passes_for_role``); a
        group whose fact needs any of them run rule by rule, and neighbouring such groups
        joined."""
        by_lacking = self._ready.get(role)
        if by_lacking is None:
            by_lacking = self._ready[role] = {}
        ready = by_lacking.get(lacking)
        if ready is None:
            ready = by_lacking[lacking] = self._prepare(lacking, role)
        return ready

    def _prepare(self, lacking: int, role: str | None) -> Ready:
        from xstate_check.facts import FACTS

        def needs_of_fact(name: str | None) -> int:
            spec = FACTS.get(name) if name is not None else None
            return spec.needs if spec is not None else 0

        groups: list[ReadyGroup] = []
        for name, zero_mask, small_mask, all_pass, steps in self.groups:
            kept = tuple((mask, values, test, rule) for mask, values, needs, test, rule in steps
                         if not needs & lacking and not passes_for_role(rule, role))
            if not kept:
                continue
            if name is None or needs_of_fact(name) & lacking:
                plain: tuple[ReadyStep, ...] = tuple(
                    (0, frozenset(), test, rule) for _, _, test, rule in kept)
                if groups and groups[-1][0] is None:
                    groups[-1] = (None, 0, 0, None, groups[-1][4] + plain)
                else:
                    groups.append((None, 0, 0, None, plain))
            else:
                groups.append((name, zero_mask, small_mask, all_pass, kept))
        # An ``each`` rule whose list fact needs what the subject lacks has no item to walk.
        walking = tuple((test, rule, str(rule.each)) for needs, test, rule in self.walking
                        if not (needs | needs_of_fact(rule.each)) & lacking
                        and not passes_for_role(rule, role))
        return tuple(groups), walking

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> Plan:
        """Return the plan of ``rules``."""
        groups: dict[str, list[QuickStep]] = {}
        plain: list[QuickStep] = []
        walking: list[Step] = []
        for rule in rules:
            compiled = rule.compiled
            if rule.each is not None:
                walking.append((compiled.needs, compiled.test, rule))
                continue
            quick = rule_quick(rule)
            if quick is not None:
                groups.setdefault(quick.name, []).append(
                    (quick.mask, quick.values, compiled.needs, compiled.test, rule)
                )
            else:
                plain.append((0, frozenset(), compiled.needs, compiled.test, rule))
        folded = [_fold_group(name, tuple(steps)) for name, steps in groups.items()]
        if plain:
            folded.append((None, 0, 0, None, tuple(plain)))
        return cls(tuple(folded), tuple(walking))


#: Fold at most this many bits of small conditions into one table of passing values.
_FOLD_BITS = 14
#: The values passing every (mask, values) condition of a group, by its conditions: a pure
#: function of them (up to 2 ** _FOLD_BITS candidates each), worked out once and kept with
#: the shipped catalogue's cache (``engine.shipped``), so that a start does not redo it.
PASSING: dict[tuple[tuple[int, frozenset[int]], ...], frozenset[int]] = {}
_PASSING_KEPT = 4096


def _fold_group(name: str, steps: tuple[QuickStep, ...]) -> Group:
    """Fold a group's conditions: ``x & m == 0`` ones into one mask, small ones into a table."""
    return (name, *fold_conditions([(mask, values) for mask, values, *_ in steps]), steps)


def fold_conditions(conditions: Iterable[tuple[int, frozenset[int]]]) -> tuple[
        int, int, frozenset[int] | None]:
    """Return (zero_mask, small_mask, all_pass): every ``x & mask in values`` condition
    holds when ``x & zero_mask == 0`` and ``x & small_mask in all_pass`` (None where the
    small ones have too many bits to fold), as a plan's group folds them."""
    zero_mask = 0
    small: list[tuple[int, frozenset[int]]] = []
    for mask, values in conditions:
        if values == frozenset({0}):
            zero_mask |= mask
        else:
            small.append((mask, values))
    small_mask = 0
    for mask, _ in small:
        small_mask |= mask
    if bin(small_mask).count("1") > _FOLD_BITS:
        return zero_mask, small_mask, None
    folded = tuple(small)
    all_pass = PASSING.get(folded)
    if all_pass is None:
        all_pass = _passing(folded, small_mask)
    return zero_mask, small_mask, all_pass


def _passing(conditions: tuple[tuple[int, frozenset[int]], ...],
             small_mask: int) -> frozenset[int]:
    """Return the values of ``small_mask`` that pass every condition; keep them in PASSING."""
    if len(PASSING) >= _PASSING_KEPT:  # a process building many catalogues (fuzzing)
        PASSING.clear()
    candidates = [0]
    for bit in range(64):
        if small_mask >> bit & 1:
            candidates += [value | 1 << bit for value in candidates]
    found = PASSING[conditions] = frozenset(
        value for value in candidates
        if all(value & mask in values for mask, values in conditions))
    return found
