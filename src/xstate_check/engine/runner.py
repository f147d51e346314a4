"""Run the catalogue on subjects: findings with messages, consequences and locations.

Rules are compiled by ``compiler`` and ordered by ``plan``; this module runs them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping

from xstate_check.cpuid import ZERO
from xstate_check.engine.catalogue import Catalogue, CompiledRule, Rule
from xstate_check.engine.compiler import Evaluator
from xstate_check.engine.shipped import load_catalogue
from xstate_check.errors import Location
from xstate_check.facts import (
    ATTRIBUTES,
    FACTS,
    FUNCTIONS,
    BitRef,
    EntryItem,
    Facts,
    FactSpec,
    Kind,
    Missing,
    available_of,
    format_value,
)
from xstate_check.facts.components import component_refs
from xstate_check.facts.enumeration import feature_values
from xstate_check.report import Finding, Report, SubjectReport
from xstate_check.subject import Subject

__all__ = ["FindingsCache", "Record", "check_subjects", "evaluate", "evaluate_rules",
           "finding_of", "run_rules", "walk_items"]


#: What a finding is, less its location: the rule, the index of its ``each`` item (-1 for
#: none), its message and the CPUID bits it is about (empty without a template).
Record = tuple[Rule, int, str, tuple[BitRef, ...]]

def evaluate_rules(subject: Subject, rules: Catalogue | Iterable[Rule],
                   record: list[Record] | None = None, *, planned: bool = True) -> list[Finding]:
    """Return the findings of ``rules`` on ``subject`` (unsorted).

    ``record``, where given, receives each finding's Record (see ``FindingsCache``).
    ``planned=False`` runs every rule's full test in turn, without the plan's shortcuts:
    the same findings, a little slower.
    """
    catalogue = rules if isinstance(rules, Catalogue) else Catalogue(tuple(rules))
    facts = Facts(subject)
    if catalogue.reads_features:
        # The rules read most feature bits: setting them at once saves a lookup each.
        facts.update(feature_values(subject.cpuid))
    findings: list[Finding] = []
    if not planned:
        run_rules(facts, catalogue.rules, findings, record)
        return findings
    # The plan's passes (see ``plan.Plan``), for what this subject lacks: the groups (the
    # rules with no quick condition among them), then the ``each`` rules.
    groups, walking = catalogue.plan.for_lacking(~available_of(subject))
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
    for test, rule in walking:
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
    message = _message(rule, facts)
    refs: tuple[BitRef, ...] | None = None
    if record is not None:
        refs = tuple(_rule_bits(rule, facts)) if facts.cpuid.provenance else ()
        record.append((rule, index, message, refs))
    return Finding(
        rule=rule.id,
        name=rule.name,
        severity=rule.severity,
        message=message,
        consequence=rule.consequence,
        fix=rule.fix,
        location=_location(rule, facts, item, refs),
    )


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
        return SubjectReport(
            name=subject.name,
            source=subject.cpuid.source,
            template=subject.template,
            findings=tuple(findings),
            details=details or {},
            seconds=time.perf_counter() - started,
        )


def _relocated(records: Iterable[Record], subject: Subject) -> list[Finding]:
    """Return the findings of ``records`` placed at ``subject``'s own template lines."""
    facts: Facts | None = None
    findings = []
    for rule, index, message, refs in records:
        item: object = None
        if index >= 0:
            facts = facts or Facts(subject)
            item = facts[str(rule.each)][index]
        findings.append(Finding(
            rule=rule.id, name=rule.name, severity=rule.severity, message=message,
            consequence=rule.consequence, fix=rule.fix,
            location=_placed(subject, item, refs),
        ))
    return findings


def _message(rule: Rule, facts: Facts) -> str:
    compiled = rule.compiled
    pieces: list[str] = []
    for part in compiled.message:
        if isinstance(part, str):
            pieces.append(part)
            continue
        name, kind = part
        var, _, attribute = name.partition(".")
        if var in compiled.offenders:
            pieces.append(_offenders_text(compiled, facts, var, attribute, kind))
            continue
        try:
            if name in compiled.lets:
                value = compiled.lets[name](facts)
            elif name.startswith("item."):
                value = getattr(facts["item"], name[5:])
            else:
                value = facts[name]
        except Missing:
            pieces.append("(unknown)")
            continue
        pieces.append(format_value(value, kind))
    return "".join(pieces)


def _offenders_text(compiled: CompiledRule, facts: Facts, var: str, attribute: str,
                    kind: Kind) -> str:
    """Return ``{c}`` (the offending components, as a mask) or ``{c.name}`` (each distinct
    value of the attribute over them, in component order) of a failing rule."""
    try:
        found = compiled.offenders[var](facts)
    except Missing:
        return "(unknown)"
    if not attribute:
        return format_value(sum(1 << component.number for component in found), kind)
    spec = ATTRIBUTES[attribute]
    shown: list[str] = []
    for component in found:
        try:
            text = format_value(spec.value(facts, component), kind)
        except Missing:
            text = "(unknown)"
        if text and text not in shown:
            shown.append(text)
    return ", ".join(shown) or "none"


def _rule_bits(rule: Rule, facts: Facts) -> list[BitRef]:
    """Return the CPUID bits a rule is about: declared, else those of the facts it reads."""
    if rule.cpuid_bits:
        return list(rule.cpuid_bits)
    refs: list[BitRef] = []
    fact_specs, function_sources = _bit_sources(rule)
    for spec in fact_specs:
        try:
            value = facts[spec.name]
        except Missing:
            continue
        refs.extend(spec.bit_refs(facts, value))
    for sources in function_sources:
        try:
            refs.extend(sources(facts))
        except Missing:
            continue
    for offenders in rule.compiled.offenders.values():
        try:
            mask = sum(1 << component.number for component in offenders(facts))
        except Missing:
            continue
        refs.extend(component_refs(facts, mask, rule.compiled.attributes))
    return refs


#: Per rule (by its compiled form, kept alive here): the specs of the facts it reads and the
#: source functions of the functions it calls, in name order (see ``_bit_sources``).
_BIT_SOURCES: dict[int, tuple[object, tuple[FactSpec, ...],
                              tuple[Callable[[Facts], Iterable[BitRef]], ...]]] = {}


def _bit_sources(rule: Rule) -> tuple[tuple[FactSpec, ...],
                                      tuple[Callable[[Facts], Iterable[BitRef]], ...]]:
    """Return what ``_rule_bits`` reads of a rule, in name order, worked out once."""
    compiled = rule.compiled
    found = _BIT_SOURCES.get(id(compiled))
    if found is None or found[0] is not compiled:
        specs = tuple(FACTS[name] for name in sorted(compiled.facts))
        functions = tuple(sources for name in sorted(compiled.functions)
                          if (sources := FUNCTIONS[name].sources) is not None)
        found = _BIT_SOURCES[id(compiled)] = (compiled, specs, functions)
    return found[1], found[2]


def _location(rule: Rule, facts: Facts, item: object,
              refs: Iterable[BitRef] | None = None) -> Location | None:
    """Return where a finding comes from.

    An ``each`` item's own location first (a template's modifier line); else the template
    line that set or cleared one of the rule's CPUID bits, preferring bits the template
    really changed; else the file the table was read from.
    """
    if isinstance(item, EntryItem) and item.location is not None:
        return item.location
    if refs is None and facts.cpuid.provenance:
        refs = _rule_bits(rule, facts)
    return _placed(facts.subject, None, refs or ())


def _placed(subject: Subject, item: object, refs: Iterable[BitRef]) -> Location | None:
    """Return a finding's location from its item and the CPUID bits it is about.

    The template line that set or cleared one of the bits, preferring bits the template
    really changed (the earliest such line); else the file the table was read from.
    """
    if isinstance(item, EntryItem) and item.location is not None:
        return item.location
    cpuid = subject.cpuid
    provenance = cpuid.provenance
    if provenance:
        changed: list[Location] = []
        pinned: list[Location] = []
        base = subject.base
        for leaf, subleaf, register, owners in provenance.owners(
                refs if isinstance(refs, tuple) else tuple(refs)):
            index = _REGISTER_INDEX.get(register)
            if index is None:  # the entry's KVM flags: no register bit of its own
                diff = 0
            else:
                new = cpuid.entries.get((leaf, subleaf), ZERO)[index]
                old = base.entries.get((leaf, subleaf), ZERO)[index] if base else new
                diff = old ^ new
            for owned, where in owners:
                if owned & diff:
                    changed.append(where)
                if owned & ~diff:
                    pinned.append(where)
        if changed or pinned:
            return min(changed or pinned, key=_location_key)
    table = subject.base or cpuid
    if table.is_file:
        return Location(table.source)
    return None


_REGISTER_INDEX = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}


def _location_key(location: Location) -> tuple[str, int, int]:
    """Order locations by file, line and column without attrs' generic comparison."""
    return (location.path, location.line, location.column)
