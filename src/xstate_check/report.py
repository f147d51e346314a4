"""Findings and reports: what a run of the rules says about its subjects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from xstate_check import lazy_attributes
from xstate_check.errors import Location

if TYPE_CHECKING:
    from xstate_check.reportparts import (
        BitmapChange,
        SkippedPair,
        SuggestedFix,
        attach_fixes,
        bitmap_changes,
        edit_to_json,
    )

__all__ = [
    "SCHEMA",
    "SEVERITIES",
    "BaselineState",
    "BitmapChange",
    "Finding",
    "Report",
    "Severity",
    "SkippedPair",
    "SubjectReport",
    "SuggestedFix",
    "attach_fixes",
    "bitmap_changes",
    "edit_to_json",
]

SCHEMA = "xstate-check/1"

Severity = Literal["error", "warning", "info"]
BaselineState = Literal["new", "unchanged"] | None
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
_SEVERITY_ORDER = {name: rank for rank, name in enumerate(SEVERITIES)}


@attrs.frozen
class Finding:
    """One rule's verdict on one subject."""

    rule: str
    name: str
    severity: Severity
    message: str
    consequence: str
    fix: str
    location: Location | None = None
    #: In a regression gate: whether the change introduced the finding (``new``) or REV
    #: already had it (``unchanged``); None outside one.
    baseline_state: BaselineState = None
    #: How its template's fix (over the profiles the template was checked on) removes this
    #: finding: the safe fix (what ``--fix`` applies) or, where only an unsafe one does, that
    #: (what ``--fix --unsafe-fixes`` applies); one at most. Empty where none is known or
    #: none was asked for. A suggestion, not the verdict: two
    #: findings that differ only here are equal.
    fixes: tuple[SuggestedFix, ...] = attrs.field(default=(), eq=False)

    def sort_key(self) -> tuple[Any, ...]:
        """Return the key findings are sorted by: location, severity, rule id, message."""
        where = ("", 0, 0)
        if self.location is not None:
            where = (self.location.path, self.location.line, self.location.column)
        return (where, _SEVERITY_ORDER[self.severity], self.rule, self.message)

    def to_json(self) -> dict[str, object]:
        """Return the finding as a JSON object of schema xstate-check/1."""
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "message": self.message,
            "consequence": self.consequence,
            "fix": self.fix,
            "location": self.location.to_json() if self.location else None,
            **({"baseline_state": self.baseline_state} if self.baseline_state else {}),
            **({"fixes": [fix.to_json() for fix in self.fixes]} if self.fixes else {}),
        }


#: Finding's slots' own setters, in field order: a frozen class's slot set without the
#: refusing ``__setattr__`` (what attrs's ``__init__`` does through ``object.__setattr__``).
_FINDING_SETTERS = tuple(getattr(Finding, field.name).__set__
                         for field in attrs.fields(Finding))


def make_finding(rule: tuple[str, str, Severity, str, str], message: str,
                 location: Location | None) -> Finding:
    """Return the finding of ``rule`` (its id, name, severity, consequence and fix) with
    ``message`` at ``location``, as ``Finding(...)`` makes it, with less work (the engine
    makes one per failing rule and subject)."""
    made = object.__new__(Finding)
    set_rule, set_name, set_severity, set_message, set_consequence, set_fix, set_location, \
        set_baseline_state, set_fixes = _FINDING_SETTERS
    rule_id, name, severity, consequence, fix = rule
    set_rule(made, rule_id)
    set_name(made, name)
    set_severity(made, severity)
    set_message(made, message)
    set_consequence(made, consequence)
    set_fix(made, fix)
    set_location(made, location)
    set_baseline_state(made, None)
    set_fixes(made, ())
    return made


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


#: What only the fix and gate outputs use lives in ``reportparts``, imported on first use: a
#: check creates none of its classes.
__getattr__ = lazy_attributes(__name__, dict.fromkeys(
    ("BitmapChange", "SkippedPair", "SuggestedFix", "attach_fixes", "bitmap_changes",
     "edit_to_json"), "xstate_check.reportparts"), globals())


def _sorted_findings(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """Return ``findings`` in ``Finding.sort_key`` order (by the same key, flat)."""
    found = tuple(findings)
    if len(found) < 2:
        return found
    return tuple(sorted(found, key=_flat_sort_key))


def _flat_sort_key(finding: Finding) -> tuple[Any, ...]:
    where = finding.location
    if where is None:
        return ("", 0, 0, _SEVERITY_ORDER[finding.severity], finding.rule, finding.message)
    return (where.path, where.line, where.column, _SEVERITY_ORDER[finding.severity],
            finding.rule, finding.message)


@attrs.frozen
class SubjectReport:
    """The findings on one subject, with the facts the run read (``details``)."""

    name: str
    source: str
    template: str | None
    findings: tuple[Finding, ...] = attrs.field(converter=_sorted_findings, default=())
    details: Mapping[str, object] = attrs.field(factory=dict)
    #: How long the rules took on this subject (JUnit's ``time``; not in JSON, which must
    #: be byte-identical from run to run).
    seconds: float = attrs.field(default=0.0, eq=False)

    def counts(self, finding: Finding) -> bool:
        """Return whether ``finding`` can fail the run: in a regression gate failing only on
        new findings (``fail_on`` ``new``), one REV already had does not."""
        return not (self.details.get("fail_on") == "new"
                    and finding.baseline_state == "unchanged")

    def to_json(self) -> dict[str, object]:
        """Return the subject as a JSON object of schema xstate-check/1."""
        out: dict[str, object] = {
            "name": self.name,
            "source": self.source,
            "template": self.template,
            "findings": [finding.to_json() for finding in self.findings],
        }
        if self.details:
            out["details"] = dict(self.details)
        return out


def _subjects(subjects: Iterable[SubjectReport]) -> tuple[SubjectReport, ...]:
    return tuple(subjects)


@attrs.frozen
class Report:
    """The findings of one run over one or more subjects."""

    #: What made the report: ``check`` (one table per subject) or ``gate`` (templates x
    #: profiles, where one template line shows on many subjects); formats lay it out by it.
    kind: ClassVar[str] = "check"
    subjects: tuple[SubjectReport, ...] = attrs.field(converter=_subjects, default=())
    #: Template x profile pairs a gate did not check (not for that host), with the reason.
    skipped: tuple[SkippedPair, ...] = ()

    def findings(self, severity: Severity | None = None) -> list[Finding]:
        """Return every finding, or only those of one severity."""
        return [
            finding
            for subject in self.subjects
            for finding in subject.findings
            if severity is None or finding.severity == severity
        ]

    @property
    def errors(self) -> list[Finding]:
        """Return the error findings."""
        return self.findings("error")

    @property
    def warnings(self) -> list[Finding]:
        """Return the warning findings."""
        return self.findings("warning")

    @property
    def infos(self) -> list[Finding]:
        """Return the info findings."""
        return self.findings("info")

    def exit_code(self, strict: bool = False) -> int:
        """Return 1 when there are errors (or warnings, when ``strict``), else 0."""
        if self.errors or (strict and self.warnings):
            return 1
        return 0

    def notes(self) -> list[str]:
        """Return one line per template x profile pair that was not checked, and why."""
        return [pair.text() for pair in self.skipped]

    def summary(self) -> dict[str, int]:
        """Return the counts of subjects and findings by severity."""
        return {
            "subjects": len(self.subjects),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "infos": len(self.infos),
        }

    def summary_text(self) -> str:
        """Return the summary as one line: ``2 subjects: 1 error, 0 warnings, 3 infos``."""
        counts = self.summary()
        return (
            f"{_plural(counts['subjects'], 'subject')}: {_plural(counts['errors'], 'error')}, "
            f"{_plural(counts['warnings'], 'warning')}, {_plural(counts['infos'], 'info')}"
        )

    def to_json(self) -> dict[str, object]:
        """Return the report as a JSON object of schema xstate-check/1."""
        return {
            "schema": SCHEMA,
            "subjects": [subject.to_json() for subject in self.subjects],
            "summary": self.summary(),
        }

    def to_json_text(self) -> str:
        """Return the report as JSON text, byte-identical for the same input.

        The document is indented; each subject and pair not checked is one line.
        """
        from xstate_check.formats import render

        return render(self, "json")
