"""Evaluate the catalogue on subjects: findings with messages, consequences and locations."""

from __future__ import annotations

import time
from collections.abc import Iterable

from xstate_check.engine.catalogue import Catalogue, Rule
from xstate_check.engine.shipped import load_catalogue
from xstate_check.errors import Location
from xstate_check.facts import (
    FACTS,
    FUNCTIONS,
    BitRef,
    EntryItem,
    Facts,
    Missing,
    available_of,
    format_value,
)
from xstate_check.report import Finding, Report, SubjectReport
from xstate_check.subject import Subject

__all__ = ["check_subjects", "evaluate", "evaluate_rules"]

#: Sources that are not files a location could point at.
_PSEUDO_SOURCES = ("<", "host", "kvm", "profile:", "example:")


def evaluate_rules(subject: Subject, rules: Catalogue | Iterable[Rule]) -> list[Finding]:
    """Return the findings of ``rules`` on ``subject``, in plan order (unsorted)."""
    plan = (rules if isinstance(rules, Catalogue) else Catalogue(tuple(rules))).plan
    facts = Facts(subject)
    lacking = -1  # the NEEDS_* bits the subject lacks; worked out when first needed
    findings: list[Finding] = []
    for name, zero_mask, small_mask, all_pass, steps in plan.groups:
        try:
            value = facts[name]
        except Missing:
            value = None
        else:
            if not value & zero_mask and all_pass is not None and value & small_mask in all_pass:
                continue  # every rule of the group passes
        for mask, values, needs, test, rule in steps:
            if value is not None and value & mask in values:
                continue
            if needs:
                if lacking == -1:
                    lacking = ~available_of(subject)
                if needs & lacking:
                    continue
            try:
                if test(facts):
                    continue
            except Missing:
                continue
            findings.append(_finding(rule, facts, None))
    if lacking == -1 and (plan.plain or plan.walking):
        lacking = ~available_of(subject)
    for needs, test, rule in plan.plain:
        if needs & lacking:
            continue
        try:
            if test(facts):
                continue
        except Missing:
            continue
        findings.append(_finding(rule, facts, None))
    for needs, test, rule in plan.walking:
        if needs & lacking:
            continue
        try:
            items = facts[str(rule.each)]
        except Missing:
            continue
        assert isinstance(items, tuple)
        for item in items:
            facts["item"] = item
            try:
                passed = test(facts)
            except Missing:
                continue
            if not passed:
                findings.append(_finding(rule, facts, item))
        facts.pop("item", None)
    return findings


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


def _finding(rule: Rule, facts: Facts, item: object) -> Finding:
    return Finding(
        rule=rule.id,
        name=rule.name,
        severity=rule.severity,
        message=_message(rule, facts),
        consequence=rule.consequence,
        fix=rule.fix,
        location=_location(rule, facts, item),
    )


def _message(rule: Rule, facts: Facts) -> str:
    compiled = rule.compiled
    pieces: list[str] = []
    for part in compiled.message:
        if isinstance(part, str):
            pieces.append(part)
            continue
        name, kind = part
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


def _rule_bits(rule: Rule, facts: Facts) -> list[BitRef]:
    """Return the CPUID bits a rule is about: declared, else those of the facts it reads."""
    if rule.cpuid_bits:
        return list(rule.cpuid_bits)
    refs: list[BitRef] = []
    for name in sorted(rule.compiled.facts):
        try:
            value = facts[name]
        except Missing:
            continue
        refs.extend(FACTS[name].bit_refs(facts, value))
    for name in sorted(rule.compiled.functions):
        sources = FUNCTIONS[name].sources
        if sources is not None:
            try:
                refs.extend(sources(facts))
            except Missing:
                continue
    return refs


def _location(rule: Rule, facts: Facts, item: object) -> Location | None:
    """Return where a finding comes from.

    An ``each`` item's own location first (a template's modifier line); else the template
    line that set or cleared one of the rule's CPUID bits, preferring bits the template
    really changed; else the file the table was read from.
    """
    if isinstance(item, EntryItem) and item.location is not None:
        return item.location
    subject = facts.subject
    provenance = subject.cpuid.provenance
    if provenance:
        changed: list[Location] = []
        pinned: list[Location] = []
        for leaf, subleaf, register, mask in _rule_bits(rule, facts):
            owners = provenance.pinned(leaf, subleaf, register, mask)
            if not owners:
                continue
            new = subject.cpuid.register(leaf, subleaf, register)
            old = subject.base.register(leaf, subleaf, register) if subject.base else new
            for owned, where in owners:
                if owned & (old ^ new):
                    changed.append(where)
                if owned & ~(old ^ new):
                    pinned.append(where)
        if changed or pinned:
            return min(changed or pinned, key=_location_key)
    table = subject.base or subject.cpuid
    if table.source and not table.source.startswith(_PSEUDO_SOURCES):
        return Location(table.source)
    return None


def _location_key(location: Location) -> tuple[str, int, int]:
    """Order locations by file, line and column without attrs' generic comparison."""
    return (location.path, location.line, location.column)
