"""The rule catalogue: rules as loaded from ``rules/*.toml``, compiled, cached."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import attrs

from xstate_check.engine.compiler import Evaluator, Offenders
from xstate_check.engine.nodes import Node
from xstate_check.errors import Location
from xstate_check.facts import BitRef, Kind
from xstate_check.report import Severity

if TYPE_CHECKING:
    # Examples are read by tests and ``explain``, not by a check: a catalogue loaded from
    # the cache reads them (and imports their module) on first use.
    from xstate_check.engine.examples import Example
    from xstate_check.engine.plan import Plan, Quick

__all__ = [
    "FAMILIES",
    "Catalogue",
    "CompiledRule",
    "FixGroup",
    "MessagePart",
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
    the names the rule reads, from which a finding's location is derived; ``offenders``,
    per variable a failing ``all`` of the check binds, lists the components it holds false,
    which the message names and the location comes from; ``attributes`` are the component
    attributes the rule reads.
    """

    test: Evaluator
    each: str | None
    lets: Mapping[str, Evaluator]
    let_kinds: Mapping[str, Kind]
    message: tuple[MessagePart, ...]
    facts: frozenset[str]
    functions: frozenset[str]
    needs: int = 0
    offenders: Mapping[str, Offenders] = attrs.field(factory=dict)
    attributes: frozenset[str] = frozenset()
    #: The check alone (no ``applies``) of a rule that ``defines`` a function.
    definition: Node | None = None
    #: The parsed check (``applies`` folded in) and lets, from which ``test`` and ``lets``
    #: are compiled: what a cached catalogue keeps, since closures cannot be stored.
    source: tuple[Node, tuple[tuple[str, Node], ...]] | None = None
    #: The plan's quick condition of ``source`` (``plan.quick_condition``), in a 1-tuple,
    #: as the loader works it out and a cached catalogue keeps it; None for an ``each`` rule
    #: (or a rule made otherwise: the plan then works it out).
    quick: tuple[Quick | None] | None = None


@attrs.frozen
class FixGroup:
    """One ``[[rule.autofix]]`` table: template bits a fix changes together.

    ``action`` ``clear``: the template clears every bit of ``bits`` still set, with those of
    ``also`` (the feature flags that go with them) unless clearing those too would bring a
    new finding; on the profiles where one bit of ``anchor`` is clear or, without an anchor,
    where the rule fails. ``restore``: the template's own pins on ``bits`` are dropped
    (written ``x``) where they change the table, so that its values stand.
    ``applicability`` ``safe`` for a clear is safe where the template already clears one
    bit of ``bits``, ``also`` or ``anchor`` (the fix completes what the template started)
    and unsafe otherwise; ``unsafe`` is always unsafe. The ``*specs`` are the bits as
    written in the rule file.
    """

    action: Literal["clear", "restore"]
    applicability: Literal["safe", "unsafe"]
    bits: tuple[BitRef, ...]
    also: tuple[BitRef, ...]
    anchor: tuple[BitRef, ...]
    summary: str
    specs: tuple[str, ...]
    also_specs: tuple[str, ...] = ()
    anchor_specs: tuple[str, ...] = ()


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
    passes: Sequence[Example]
    fails: Sequence[Example]
    location: Location
    compiled: CompiledRule = attrs.field(repr=False)
    #: The template changes that fix the rule's findings (``[[rule.autofix]]``), in the
    #: order they are tried (a tuple, or read on first use from a cached catalogue).
    autofix: Sequence[FixGroup] = ()
    #: The function (``valid_xcr0``) whose meaning this rule's check is part of.
    defines: str | None = None


@attrs.frozen(eq=False)
class Catalogue:
    """Every rule, ordered by id; look one up by id or name with ``get``."""

    rules: tuple[Rule, ...]
    paths: tuple[str, ...] = ()
    _index: Mapping[str, Rule] = attrs.field(init=False, repr=False)
    #: What evaluation walks; see ``plan.Plan``.
    plan: Plan = attrs.field(init=False, repr=False)
    #: Whether the rules read most CPUID feature bits (then evaluation sets them all at once).
    reads_features: bool = attrs.field(init=False, repr=False)
    #: Whether the rules read most of the facts ``Facts`` can set when made (``PRESET``):
    #: then they are set at once, else each is computed on its first read.
    reads_registers: bool = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        index = {rule.id.upper(): rule for rule in self.rules}
        index.update({rule.name: rule for rule in self.rules})
        object.__setattr__(self, "_index", index)
        from xstate_check.engine.plan import Plan

        object.__setattr__(self, "plan", Plan.of(self.rules))
        from xstate_check.cpuid import FEATURES

        read = {name for rule in self.rules for name in rule.compiled.facts if name in FEATURES}
        object.__setattr__(self, "reads_features", 2 * len(read) >= len(FEATURES))
        from xstate_check.facts.registry import PRESET

        read = {name for rule in self.rules for name in rule.compiled.facts if name in PRESET}
        object.__setattr__(self, "reads_registers", 2 * len(read) >= len(PRESET))

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
