"""Run the catalogue on subjects: findings with messages, consequences and locations.

Rules are compiled by ``compiler`` and ordered by ``plan``; this module runs them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping

from xstate_check.cpuid import ZERO, Provenance
from xstate_check.engine.catalogue import Catalogue, CompiledRule, Rule
from xstate_check.engine.compiler import Evaluator
from xstate_check.engine.quantify import components_of
from xstate_check.engine.shipped import load_catalogue
from xstate_check.errors import Location
from xstate_check.facts import (
    ATTRIBUTES,
    FACTS,
    FUNCTIONS,
    BitRef,
    EntryItem,
    Facts,
    Kind,
    MaskRefs,
    Missing,
    available_of,
)
from xstate_check.facts.components import feature_refs
from xstate_check.facts.enumeration import feature_layers
from xstate_check.facts.registry import component_sources, mask_refs
from xstate_check.facts.rendering import formatter
from xstate_check.report import Finding, Report, SubjectReport, make_finding
from xstate_check.subject import Subject
from xstate_check.xfeatures import SUPERVISOR_MASK

__all__ = ["FindingsCache", "Record", "check_subjects", "evaluate", "evaluate_rules",
           "finding_of", "run_rules", "walk_items"]


#: What a finding is, less its location: the rule, the index of its ``each`` item (-1 for
#: none), its message and the CPUID bits it is about (none without a template).
Record = tuple[Rule, int, str, "Bits"]

def evaluate_rules(subject: Subject, rules: Catalogue | Iterable[Rule],
                   record: list[Record] | None = None, *, planned: bool = True) -> list[Finding]:
    """Return the findings of ``rules`` on ``subject`` (unsorted).

    ``record``, where given, receives each finding's Record (see ``FindingsCache``).
    ``planned=False`` runs every rule's full test in turn, without the plan's shortcuts:
    the same findings, a little slower.
    """
    catalogue = rules if isinstance(rules, Catalogue) else Catalogue(tuple(rules))
    # The rules read most feature bits: setting them at once saves a lookup each.
    # Positional: a dict subclass's __init__ takes keywords through a dict made per call.
    facts = Facts(subject, feature_layers(subject.cpuid) if catalogue.reads_features else (),
                  catalogue.reads_registers)
    findings: list[Finding] = []
    if not planned:
        run_rules(facts, catalogue.rules, findings, record)
        return findings
    # The plan's passes (see ``plan.Plan``), for what this subject lacks and its role: the
    # groups (the rules with no quick condition among them), then the ``each`` rules.
    groups, walking = catalogue.plan.for_subject(~available_of(subject), subject.role)
    for name, zero_mask, small_mask, all_pass, steps in groups:
        value = None
        if name is not None:
            try:
                value = facts[name]
            except Missing:
                pass
            else:
                if (not value & zero_mask and all_pass is not None
                        and value & small_mask in all_pass):
                    continue  # every rule of the group passes
        for mask, values, test, rule in steps:
            if value is not None and value & mask in values:
                continue
            try:
                if test(facts):
                    continue
            except Missing:
                continue
            findings.append(finding_of(rule, facts, None, record))
    for test, rule, each in walking:
        try:
            items = facts[each]
        except Missing:
            continue
        if items:  # most subjects have none: no call
            walk_items(facts, rule, test, findings, record)
    return findings


def run_rules(facts: Facts, rules: Iterable[Rule], findings: list[Finding],
              record: list[Record] | None) -> None:
    """Run each rule's full test in turn, adding a finding per failing rule or item."""
    lacking = ~available_of(facts.subject)
    for rule in rules:
        compiled = rule.compiled
        if compiled.needs & lacking:
            continue  # the rule reads facts this subject lacks: it does not apply
        if rule.each is None:
            try:
                if not compiled.test(facts):
                    findings.append(finding_of(rule, facts, None, record))
            except Missing:
                pass
            continue
        walk_items(facts, rule, compiled.test, findings, record)


def walk_items(facts: Facts, rule: Rule, test: Evaluator, findings: list[Finding],
               record: list[Record] | None) -> None:
    """Run an ``each`` rule's test on every item of its list fact."""
    try:
        items = facts[str(rule.each)]
    except Missing:
        return
    assert isinstance(items, tuple)
    if not items:
        return
    for index, item in enumerate(items):
        facts["item"] = item
        try:
            passed = test(facts)
        except Missing:
            continue
        if not passed:
            findings.append(finding_of(rule, facts, item, record, index))
    facts.pop("item", None)


def evaluate(subject: Subject, catalogue: Catalogue | None = None) -> SubjectReport:
    """Evaluate every rule of the catalogue (the shipped one by default) on one subject."""
    started = time.perf_counter()
    findings = tuple(evaluate_rules(subject, catalogue or load_catalogue()))
    return SubjectReport(
        name=subject.name,
        source=subject.cpuid.source,
        template=subject.template,
        findings=findings,
        seconds=time.perf_counter() - started,
    )


def check_subjects(subjects: Iterable[Subject], catalogue: Catalogue | None = None) -> Report:
    """Evaluate the catalogue on each subject, in the order given."""
    chosen = catalogue or load_catalogue()
    return Report(tuple(evaluate(subject, chosen) for subject in subjects))


def finding_of(rule: Rule, facts: Facts, item: object, record: list[Record] | None = None,
               index: int = -1) -> Finding:
    """Return the finding of a failing rule (on ``item`` of an ``each`` rule)."""
    plan = _PLANS.get(id(rule.compiled))
    if plan is None or plan.source is not rule:
        plan = _plan(rule)
    found: _Found | None = {} if plan.offenders else None
    message = plan.constant
    if message is None:
        if plan.single is not None:
            text, part = plan.single
            message = text + part(facts, found) + plan.tail
        else:
            message = "".join([text + part(facts, found) for text, part in plan.parts]) + \
                plan.tail
    location = None
    if item is not None and isinstance(item, EntryItem):
        location = item.location
    cpuid = facts.cpuid
    provenance = cpuid.provenance
    placer = _PLACER[0] if _PLACER and _PLACER[0].provenance is provenance else \
        _placer(provenance)
    bits = _NO_BITS
    if (record is not None or location is None) and placer.owns:
        bits = _bits(plan, facts, found)
    if record is not None:
        record.append((rule, index, message, bits))
    if location is None:
        subject = facts.subject
        if placer.owns:
            location = placer.place(subject, bits)
        if location is None:
            table = subject.base or cpuid
            if table.is_file:
                location = Location(table.source)
    return make_finding(plan.rule, message, location)


class FindingsCache:
    """The findings of guest tables seen before, for subjects whose table is the same.

    Rules read the guest table, the table before the template, KVM's flags and the entries
    the template lacked; which template line set a bit only places a finding. So a subject
    whose caller-given ``key`` says all of those equal a subject seen before gets that
    subject's rules, messages and CPUID bits again, and only its locations are worked out
    anew from its own template lines. At most ``size`` tables are kept (oldest out first).
    """

    def __init__(self, catalogue: Catalogue | None = None, size: int = 2048) -> None:
        self.catalogue = catalogue or load_catalogue()
        self.size = size
        self._records: OrderedDict[Hashable, tuple[Record, ...]] = OrderedDict()
        self.hits = 0

    def evaluate(self, subject: Subject, key: Hashable,
                 details: Mapping[str, object] | None = None) -> SubjectReport:
        """Evaluate the catalogue on ``subject``, from the cache when ``key`` was seen.

        ``details`` become the report's (what the caller knows of the subject).
        """
        started = time.perf_counter()
        records = self._records.get(key)
        if records is None:
            made: list[Record] = []
            findings = evaluate_rules(subject, self.catalogue, made)
            if len(self._records) >= self.size:
                self._records.popitem(last=False)
            self._records[key] = tuple(made)
        else:
            self.hits += 1
            findings = _relocated(records, subject)
        # Positional: attrs's __init__ takes them with less work than keywords.
        return SubjectReport(subject.name, subject.cpuid.source, subject.template, findings,
                             details or {}, time.perf_counter() - started)


def _relocated(records: Iterable[Record], subject: Subject) -> list[Finding]:
    """Return the findings of ``records`` placed at ``subject``'s own template lines."""
    facts: Facts | None = None
    findings = []
    for rule, index, message, bits in records:
        item: object = None
        if index >= 0:
            facts = facts or Facts(subject)
            item = facts[str(rule.each)][index]
        findings.append(make_finding(_plan(rule).rule, message, _placed(subject, item, bits)))
    return findings


# --------------------------------------------------------------------------- findings
#
# A finding is made of its rule's constant parts, a message and a location. What of that
# depends on the rule alone (the message's parts, where its CPUID bits come from) is worked
# out once per rule (``_Plan``); what depends on a template alone (its lines' pins, by
# register) once per template (``_Placer``); each finding computes only its own values.

#: A failing rule's offending components, per variable, as a mask, asked once per finding
#: (None: Missing).
_Found = dict[str, int | None]
_Part = Callable[[Facts, _Found | None], str]


class _Plan:
    """What a rule's findings need, worked out once: what each says alike; the message's
    literal text and one function per placeholder; where its CPUID bits come from (its
    declared bits, else the sources of the facts and functions it reads, and its offending
    components)."""

    __slots__ = ("compiled", "constant", "declared", "dynamic", "features", "functions",
                 "masks", "offenders", "parts", "rule", "single", "source", "static",
                 "static_names", "static_refs", "tail")

    def __init__(self, rule: Rule) -> None:
        self.source = rule
        compiled = self.compiled = rule.compiled
        #: What every finding of the rule says alike (see ``make_finding``).
        self.rule = (rule.id, rule.name, rule.severity, rule.consequence, rule.fix)
        #: The message: per placeholder, the literal text before it and the function that
        #: shows it; the text after the last; the whole text of a rule without placeholders.
        parts: list[tuple[str, _Part]] = []
        text = ""
        for part in compiled.message:
            if isinstance(part, str):
                text += part
            else:
                parts.append((text, _placeholder(compiled, *part)))
                text = ""
        self.parts = tuple(parts)
        self.single = parts[0] if len(parts) == 1 else None  # the common case, without a join
        self.tail = text
        self.constant = text if not parts else None
        self.offenders = tuple(compiled.offenders.items())
        self.declared = tuple(rule.cpuid_bits)
        static: list[tuple[str, tuple[BitRef, ...]]] = []
        dynamic: list[tuple[str, Callable[[Facts, object], Iterable[BitRef]]]] = []
        masks: list[str] = []
        for name in sorted(compiled.facts):
            fact_sources = FACTS[name].sources
            if fact_sources is component_sources:
                masks.append(name)  # its bits: those of the xfeatures its value names
            elif callable(fact_sources):
                dynamic.append((name, fact_sources))
            elif fact_sources:
                static.append((name, tuple(fact_sources)))
        self.masks = tuple(masks)
        #: The facts whose bits are constant, and those bits, when every one is present.
        self.static = tuple(static)
        self.static_names = frozenset(name for name, _ in static)
        self.static_refs = tuple(ref for _, refs in static for ref in refs)
        self.dynamic = tuple(dynamic)
        self.functions = tuple(sources for name in sorted(compiled.functions)
                               if (sources := FUNCTIONS[name].sources) is not None)
        self.features = any(ATTRIBUTES[name].feature for name in compiled.attributes)


#: Per rule (by its compiled form, kept alive with the rule in its plan): its plan. A rule
#: made again around the same compiled form (``attrs.evolve``) gets a plan of its own.
_PLANS: dict[int, _Plan] = {}


def _plan(rule: Rule) -> _Plan:
    """Return the rule's plan, made on its first finding."""
    plan = _PLANS.get(id(rule.compiled))
    if plan is None or plan.source is not rule:
        plan = _PLANS[id(rule.compiled)] = _Plan(rule)
    return plan


def _offending(compiled: CompiledRule, facts: Facts, found: _Found | None,
               var: str) -> int | None:
    """Return the mask of the components a failing ``all`` of ``var`` holds false (None:
    Missing), computed once per finding for its message and its bits."""
    if found is not None and var in found:
        return found[var]
    try:
        failing: int | None = compiled.offenders[var].failing(facts)
    except Missing:
        failing = None
    if found is not None:
        found[var] = failing
    return failing


def _placeholder(compiled: CompiledRule, name: str, kind: Kind) -> _Part:
    """Return the function that shows one placeholder of a rule's message.

    ``{c}`` (the offending components, as a mask) or ``{c.name}`` (each distinct value of
    the attribute over them, in component order) of a quantified variable, a ``let``, an
    ``item`` field or a fact; "(unknown)" for what the subject lacks.
    """
    var, _, attribute = name.partition(".")
    show = formatter(kind)
    if var in compiled.offenders:
        def offenders(facts: Facts, found: _Found | None) -> str:
            failing = _offending(compiled, facts, found, var)
            if failing is None:
                return "(unknown)"
            if not attribute:
                return show(failing)
            spec = ATTRIBUTES[attribute]
            shown: list[str] = []
            for component in components_of(facts, failing, compiled.offenders[var].layout):
                try:
                    text = show(spec.value(facts, component))
                except Missing:
                    text = "(unknown)"
                if text and text not in shown:
                    shown.append(text)
            return ", ".join(shown) or "none"

        return offenders
    if name in compiled.lets:
        let = compiled.lets[name]

        def shown_let(facts: Facts, found: _Found | None) -> str:
            try:
                value = let(facts)
            except Missing:
                return "(unknown)"
            return show(value)

        return shown_let
    if name.startswith("item."):
        field = name[5:]

        def shown_field(facts: Facts, found: _Found | None) -> str:
            try:
                value = getattr(facts["item"], field)
            except Missing:
                return "(unknown)"
            return show(value)

        return shown_field

    def shown_fact(facts: Facts, found: _Found | None) -> str:
        try:
            value = facts[name]
        except Missing:
            return "(unknown)"
        return show(value)

    return shown_fact


#: What a finding is about: CPUID bits constant for its rule (its plan's, one tuple per
#: rule), other bits, and the xfeatures whose enumeration bits and subleaves are also about
#: (``mask_refs``, kept as a mask).
Bits = tuple[tuple[BitRef, ...], tuple[BitRef, ...], int]
_NO_BITS: Bits = ((), (), 0)


def _bits(plan: _Plan, facts: Facts, found: _Found | None) -> Bits:
    """Return the CPUID bits a finding is about: its rule's declared bits, else those of
    the facts and functions it reads and of its offending components."""
    if plan.declared:
        return plan.declared, (), 0
    static = plan.static_refs
    extra: list[BitRef] = []
    if not facts.keys() >= plan.static_names:
        # A fact not read yet may be Missing: its bits are then left out.
        static = ()
        for name, refs in plan.static:
            try:
                facts[name]
            except Missing:
                continue
            extra.extend(refs)
    mask = 0
    for name in plan.masks:
        try:
            value = facts[name]
        except Missing:
            continue
        if isinstance(value, int):
            mask |= value
    for name, fact_sources in plan.dynamic:
        try:
            value = facts[name]
        except Missing:
            continue
        got = fact_sources(facts, value)
        if isinstance(got, MaskRefs):
            mask |= got.mask
        else:
            extra.extend(got)
    for function_sources in plan.functions:
        try:
            got = function_sources(facts)
        except Missing:
            continue
        if isinstance(got, MaskRefs):
            mask |= got.mask
        else:
            extra.extend(got)
    for var, _ in plan.offenders:
        offending = _offending(plan.compiled, facts, found, var)
        if offending is None:
            continue
        # Its enumeration bits and subleaves, as the mask (``_Placer.place`` reads them as
        # mask_refs lists them), and the feature bits of its components where read.
        mask |= offending
        if plan.features:
            extra.extend(feature_refs(offending))
    return static, tuple(extra) if extra else (), mask


RegisterKey = tuple[int, int, str]

_ALL = 0xFFFF_FFFF
#: Where ``mask_refs`` puts an xfeature's enumeration bit: (register, the xfeatures it
#: holds, their shift).
_ENUMERATION: tuple[tuple[RegisterKey, int, int], ...] = (
    ((0xD, 0, "eax"), ~SUPERVISOR_MASK & _ALL, 0),
    ((0xD, 0, "edx"), ~SUPERVISOR_MASK & _ALL << 32, 32),
    ((0xD, 1, "ecx"), SUPERVISOR_MASK & _ALL, 0),
    ((0xD, 1, "edx"), SUPERVISOR_MASK & _ALL << 32, 32),
)
_SUBLEAF_REGISTERS = ("eax", "ebx", "ecx")


#: One pin owning bits a finding is about: its line, its entry and register index (None for
#: the entry's KVM flags), the bits it owns.
_Owner = tuple[Location, tuple[int, int], "int | None", int]


class _Static:
    """What one template's pins say of a rule's constant CPUID bits: those bits per register
    with pins; the pins owning them, earliest line first; and the xfeatures whose
    enumeration bits or subleaves would add bits to a register with pins (the rest of a
    finding's mask changes nothing)."""

    __slots__ = ("masks", "owners", "reach", "refs")

    def __init__(self, placer: _Placer, refs: tuple[BitRef, ...]) -> None:
        self.refs = refs
        pins = placer.pins
        masks = self.masks = {key: bits for key, bits in _by_register(refs).items()
                              if key in pins}
        self.owners = placer.owners(masks)
        reach = placer.subleaves & ~3
        for key, holds, _ in placer.enumeration:
            if masks.get(key, 0) != _ALL:
                reach |= holds
        self.reach = reach


#: Per tuple of a rule's constant CPUID bits (kept alive here): those bits by register.
_BY_REGISTER: dict[int, tuple[tuple[BitRef, ...], dict[RegisterKey, int]]] = {}


def _by_register(refs: tuple[BitRef, ...]) -> dict[RegisterKey, int]:
    """Return the bits of ``refs`` by register, worked out once per tuple (one per rule)."""
    known = _BY_REGISTER.get(id(refs))
    if known is not None and known[0] is refs:
        return known[1]
    masks: dict[RegisterKey, int] = {}
    for leaf, subleaf, register, bits in refs:
        key = (leaf, subleaf, register)
        masks[key] = masks.get(key, 0) | bits
    _BY_REGISTER[id(refs)] = (refs, masks)
    return masks


class _Placer:
    """One template's pins, by register: per register its lines own bits of, the pins in
    the order applied; the enumeration registers among them and the component subleaves it
    pins; per rule, what they say of its constant CPUID bits (``_Static``). A gate's pairs
    of one template share it."""

    __slots__ = ("enumeration", "owns", "pins", "provenance", "static", "subleaves")

    def __init__(self, provenance: Provenance) -> None:
        self.provenance = provenance
        #: Whether a template line owns a bit (else no finding points at one).
        self.owns = bool(provenance)
        pins = self.pins = provenance.by_register()
        self.enumeration = tuple(entry for entry in _ENUMERATION if entry[0] in pins)
        subleaves = 0
        for leaf, subleaf, register in pins:
            if leaf == 0xD and 2 <= subleaf < 64 and register in _SUBLEAF_REGISTERS:
                subleaves |= 1 << subleaf
        self.subleaves = subleaves
        self.static: dict[int, _Static] = {}

    def add(self, refs: Iterable[BitRef], masks: dict[RegisterKey, int]) -> None:
        """Add the bits of ``refs`` in registers with pins to ``masks``."""
        pins = self.pins
        for leaf, subleaf, register, bits in refs:
            key = (leaf, subleaf, register)
            if key in pins:
                masks[key] = masks.get(key, 0) | bits

    def owners(self, masks: dict[RegisterKey, int]) -> list[_Owner]:
        """Return the pins owning the bits of ``masks`` (each bit's last pin), earliest
        line first."""
        owners: list[_Owner] = []
        pins = self.pins
        for key, asked in masks.items():
            entry, index = key[:2], _REGISTER_INDEX.get(key[2])
            remaining = asked
            for pin_mask, where in reversed(pins[key]):  # the last applied owns its bits
                owned = pin_mask & remaining
                if owned:
                    owners.append((where, entry, index, owned))
                    remaining &= ~owned
                    if not remaining:
                        break
        if len(owners) > 1:
            owners.sort(key=_owner_key)
        return owners

    def place(self, subject: Subject, bits: Bits) -> Location | None:
        """Return the template line owning one of ``bits`` that the template changed (the
        earliest), else the earliest owning one; None where none owns one."""
        static, extra, mask = bits
        known = self.static.get(id(static))
        if known is None or known.refs is not static:
            known = self.static[id(static)] = _Static(self, static)
        if extra or mask & known.reach or mask >> 64:
            masks = dict(known.masks)
            self.add(extra, masks)
            if mask >> 64:  # not an xfeature mask: listed as mask_refs lists it
                self.add(mask_refs(mask), masks)
            else:
                for key, holds, shift in self.enumeration:
                    enumerated = (mask & holds) >> shift
                    if enumerated:
                        masks[key] = masks.get(key, 0) | enumerated
                subleaves = mask & self.subleaves & ~3
                while subleaves:
                    low = subleaves & -subleaves
                    subleaves ^= low
                    number = low.bit_length() - 1
                    for register in _SUBLEAF_REGISTERS:
                        key = (0xD, number, register)
                        if key in self.pins:
                            masks[key] = masks.get(key, 0) | _ALL
            owners = self.owners(masks)
        else:
            owners = known.owners
        if not owners:
            return None
        entries = subject.cpuid.entries
        base = subject.base
        base_entries = base.entries if base is not None else None
        for where, entry, index, owned in owners:
            if index is not None:
                new = entries.get(entry, ZERO)[index]
                old = base_entries.get(entry, ZERO)[index] if base_entries else new
                if (old ^ new) & owned:
                    return where  # the earliest line owning a bit the template changed
        return owners[0][0]


def _owner_key(owner: _Owner) -> tuple[str, int, int]:
    where = owner[0]
    return (where.path, where.line, where.column)


#: The placer of the provenance last asked about (a gate checks one template at a time).
_PLACER: list[_Placer] = []


def _placer(provenance: Provenance) -> _Placer:
    """Return the placer of a provenance: the last one's, else a new one (kept)."""
    if _PLACER and _PLACER[0].provenance is provenance:
        return _PLACER[0]
    placer = _Placer(provenance)
    _PLACER[:] = [placer]
    return placer


def _placed(subject: Subject, item: object, bits: Bits) -> Location | None:
    """Return a finding's location from its item and the CPUID bits it is about.

    An ``each`` item's own location first (a template's modifier line); else the template
    line that set or cleared one of the bits, preferring bits the template really changed
    (the earliest such line); else the file the table was read from.
    """
    if isinstance(item, EntryItem) and item.location is not None:
        return item.location
    cpuid = subject.cpuid
    placer = _placer(cpuid.provenance)
    if placer.owns:
        found = placer.place(subject, bits)
        if found is not None:
            return found
    table = subject.base or cpuid
    if table.is_file:
        return Location(table.source)
    return None


_REGISTER_INDEX = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}
