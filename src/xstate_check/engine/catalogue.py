"""The rule catalogue: rules as loaded from ``rules/*.toml``, compiled, cached."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import attrs

from xstate_check.engine.evaluator import Evaluator, Quick
from xstate_check.engine.examples import Example
from xstate_check.engine.parser import Node
from xstate_check.errors import Location
from xstate_check.facts import BitRef, Kind
from xstate_check.report import Severity

__all__ = [
    "FAMILIES",
    "Catalogue",
    "CompiledRule",
    "MessagePart",
    "Plan",
    "Rule",
]

#: Rule families, in catalogue order, with the id block each owns (XS01xx, XS02xx, …).
FAMILIES: dict[str, int] = {
    "xcr0": 1,
    "layout": 2,
    "features": 3,
    "kvm": 4,
    "linux-guest": 5,
    "host": 6,
    "restore": 7,
}

#: A message is literal text and placeholders (name, kind to show it as).
MessagePart = str | tuple[str, Kind]


@attrs.frozen(eq=False)
class CompiledRule:
    """What evaluation needs of a rule: one closure that is true when the subject passes.

    ``test`` folds ``applies`` in (a rule that does not apply passes); ``each`` names the
    list fact the rule walks, one finding per failing item; ``facts`` and ``functions`` are
    the names the rule reads, from which a finding's location is derived.
    """

    test: Evaluator
    each: str | None
    lets: Mapping[str, Evaluator]
    let_kinds: Mapping[str, Kind]
    message: tuple[MessagePart, ...]
    facts: frozenset[str]
    functions: frozenset[str]
    needs: int = 0
    quick: Quick | None = None
    #: The parsed check (``applies`` folded in) and lets, from which ``test`` and ``lets``
    #: are compiled: what a cached catalogue keeps, since closures cannot be stored.
    source: tuple[Node, tuple[tuple[str, Node], ...]] | None = None


@attrs.frozen(eq=False)
class Rule:
    """One rule of the catalogue, as written in its TOML file, and compiled."""

    id: str
    name: str
    family: str
    severity: Severity
    summary: str
    check: str
    applies: str | None
    each: str | None
    lets: tuple[tuple[str, str], ...]
    message: str
    consequence: str
    fix: str
    explanation: str
    references: tuple[str, ...]
    cpuid_bits: tuple[BitRef, ...]
    passes: tuple[Example, ...]
    fails: tuple[Example, ...]
    location: Location
    compiled: CompiledRule = attrs.field(repr=False)


Step = tuple[int, Evaluator, Rule]
QuickStep = tuple[int, frozenset[int], int, Evaluator, Rule]
Group = tuple[str, int, int, frozenset[int] | None, tuple[QuickStep, ...]]


@attrs.frozen(eq=False)
class Plan:
    """The order evaluation walks the rules in, built once per catalogue.

    ``groups``: per fact, the rules with a quick pass condition on it, as
    (fact, zero_mask, small_mask, all_pass, steps). The whole group passes at once when
    ``fact & zero_mask == 0`` and ``fact & small_mask in all_pass`` (the conditions of
    every rule folded together; ``all_pass`` is None where they have too many bits to
    fold). Otherwise each step (mask, values, needs, test, rule) passes when
    ``fact & mask in values``, else the rule's full test runs. ``plain``: (needs, test,
    rule) of the other rules; ``walking``: the same for the ``each`` rules. ``needs`` are
    the NEEDS_* bits of the facts a rule reads.
    """

    groups: tuple[Group, ...]
    plain: tuple[Step, ...]
    walking: tuple[Step, ...]

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> Plan:
        """Return the plan of ``rules``."""
        groups: dict[str, list[QuickStep]] = {}
        plain: list[Step] = []
        walking: list[Step] = []
        for rule in rules:
            compiled = rule.compiled
            if rule.each is not None:
                walking.append((compiled.needs, compiled.test, rule))
            elif compiled.quick is not None:
                quick = compiled.quick
                groups.setdefault(quick.name, []).append(
                    (quick.mask, quick.values, compiled.needs, compiled.test, rule)
                )
            else:
                plain.append((compiled.needs, compiled.test, rule))
        return cls(tuple(_fold_group(name, tuple(steps)) for name, steps in groups.items()),
                   tuple(plain), tuple(walking))


#: Fold at most this many bits of small conditions into one table of passing values.
_FOLD_BITS = 14


def _fold_group(name: str, steps: tuple[QuickStep, ...]) -> Group:
    """Fold a group's conditions: ``x & m == 0`` ones into one mask, small ones into a table."""
    zero_mask = 0
    small: list[tuple[int, frozenset[int]]] = []
    for mask, values, *_ in steps:
        if values == frozenset({0}):
            zero_mask |= mask
        else:
            small.append((mask, values))
    small_mask = 0
    for mask, _ in small:
        small_mask |= mask
    if bin(small_mask).count("1") > _FOLD_BITS:
        return (name, zero_mask, small_mask, None, steps)
    candidates = [0]
    for bit in range(64):
        if small_mask >> bit & 1:
            candidates += [value | 1 << bit for value in candidates]
    all_pass = frozenset(value for value in candidates
                         if all(value & mask in values for mask, values in small))
    return (name, zero_mask, small_mask, all_pass, steps)


@attrs.frozen(eq=False)
class Catalogue:
    """Every rule, ordered by id; look one up by id or name with ``get``."""

    rules: tuple[Rule, ...]
    paths: tuple[str, ...] = ()
    _index: Mapping[str, Rule] = attrs.field(init=False, repr=False)
    #: What evaluation walks; see ``Plan``.
    plan: Plan = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        index = {rule.id.upper(): rule for rule in self.rules}
        index.update({rule.name: rule for rule in self.rules})
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "plan", Plan.of(self.rules))

    def get(self, id_or_name: str) -> Rule:
        """Return the rule with this id (``XS0108``, any case) or name; KeyError otherwise."""
        key = id_or_name.strip()
        rule = self._index.get(key.upper()) or self._index.get(key.lower())
        if rule is None:
            raise KeyError(id_or_name)
        return rule

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __contains__(self, id_or_name: object) -> bool:
        if not isinstance(id_or_name, str):
            return False
        try:
            self.get(id_or_name)
        except KeyError:
            return False
        return True

    def family(self, name: str) -> Catalogue:
        """Return the catalogue of one family's rules (``xcr0``, ``layout``, …)."""
        return Catalogue(tuple(rule for rule in self.rules if rule.family == name), self.paths)

    def select(self, ids_or_names: Iterable[str]) -> Catalogue:
        """Return the catalogue of the named rules, in id order."""
        wanted = {self.get(key).id for key in ids_or_names}
        return Catalogue(tuple(rule for rule in self.rules if rule.id in wanted), self.paths)
