"""Findings and reports: what a run of the rules says about its subjects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from xstate_check.errors import Location

if TYPE_CHECKING:
    from xstate_check.fixes import Applicability, Edit, Fix

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


def edit_to_json(edit: Edit) -> dict[str, object]:
    """Return a template edit as a JSON object: where (1-based line and column, exclusive
    end column, and character offsets into the original text), which modifier, the text
    replaced and its replacement, the rules it fixes and whether it is safe."""
    return {
        "path": edit.path,
        "line": edit.line,
        "column": edit.column,
        "end_line": edit.end_line,
        "end_column": edit.end_column,
        "start": edit.start,
        "end": edit.end,
        "leaf": f"{edit.leaf:#x}",
        "subleaf": f"{edit.subleaf:#x}",
        "register": edit.register,
        "original": edit.original,
        "replacement": edit.replacement,
        "rules": list(edit.rules),
        "applicability": edit.applicability,
    }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


@attrs.frozen
class BitmapChange:
    """One register modifier a template's fix changes, as a reviewer reads it: where, and
    its whole bitmap before (None: a modifier the fix inserts) and after every edit."""

    leaf: int
    subleaf: int
    register: str
    line: int
    old: str | None
    new: str

    def text(self, arrow: str = "->") -> str:
        """Return the change as ``leaf 0xd subleaf 0x0 eax, line 10: OLD -> NEW``."""
        where = f"leaf {self.leaf:#x} subleaf {self.subleaf:#x} {self.register}, line {self.line}"
        if self.old is None:
            return f"{where}: new modifier {self.new}"
        return f"{where}: {self.old} {arrow} {self.new}"


def _json_string(raw: str) -> str:
    """Return the value of a JSON string's raw characters (as written, if they do not parse)."""
    import json

    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


def _inserted_bitmap(edit: Edit) -> str:
    """Return the bitmap of ``edit.register`` in an inserted register or cpuid modifier."""
    import json

    text = edit.replacement
    try:
        value = json.loads(text[text.index("{"):text.rindex("}") + 1])
    except ValueError:
        return ""
    entries = value.get("modifiers", [value]) if isinstance(value, dict) else []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("register") == edit.register:
            return str(entry.get("bitmap", ""))
    return ""


def _string_around(text: str, start: int, end: int) -> int | None:
    """Return the offset of the opening quote of the one-line JSON string holding
    ``text[start:end]`` (a bitmap's characters), or None when no string holds them."""
    opening = text.rfind('"', 0, start)
    closing = text.find('"', end)
    if opening < 0 or closing < 0 or "\n" in text[opening:closing]:
        return None
    return opening


def bitmap_changes(original: str, edits: Sequence[Edit]) -> dict[Edit, BitmapChange]:
    """Return, for each of a fix's ``edits`` to ``original``, the modifier change it is part
    of: the edits of one bitmap string (runs of its characters) share one BitmapChange; an
    inserted modifier is one of its own (an edit of neither kind shows its own text)."""
    strings: dict[int, list[Edit]] = {}
    out: dict[Edit, BitmapChange] = {}
    for edit in sorted(edits, key=lambda edit: edit.start):
        opening = None if "{" in edit.replacement else _string_around(original, edit.start,
                                                                       edit.end)
        if opening is not None:  # characters of a bitmap string: keyed by its opening quote
            strings.setdefault(opening, []).append(edit)
        elif "{" in edit.replacement:
            out[edit] = BitmapChange(edit.leaf, edit.subleaf, edit.register, edit.line, None,
                                     _inserted_bitmap(edit))
        else:
            out[edit] = BitmapChange(edit.leaf, edit.subleaf, edit.register, edit.line,
                                     edit.original, edit.replacement)
    for opening, group in strings.items():
        closing = original.index('"', group[-1].end)
        raw = original[opening + 1:closing]
        pieces, position = [], opening + 1
        for edit in group:
            pieces.append(original[position:edit.start] + edit.replacement)
            position = edit.end
        new = "".join(pieces) + original[position:closing]
        first = group[0]
        change = BitmapChange(first.leaf, first.subleaf, first.register, first.line,
                              _json_string(raw), _json_string(new))
        for edit in group:
            out[edit] = change
    return out


@attrs.frozen
class SuggestedFix:
    """One way a template's fix removes a finding: ``safe`` (the edits ``--fix`` applies) or
    ``unsafe`` (those ``--fix --unsafe-fixes`` applies, one of them unsafe at least); its
    edits of the template's text and, as a reviewer reads them, the modifiers they change."""

    applicability: Applicability
    edits: tuple[Edit, ...]
    bitmaps: tuple[BitmapChange, ...]

    def to_json(self) -> dict[str, object]:
        """Return the fix as a JSON object: its applicability and its edits."""
        return {"applicability": self.applicability,
                "edits": [edit_to_json(edit) for edit in self.edits]}


def attach_fixes(subjects: Iterable[SubjectReport], safe: Fix,
                 unsafe: Fix | None = None) -> tuple[SubjectReport, ...]:
    """Return one template's ``subjects`` with each finding carrying how its template's fix
    removes it: the edits of ``safe`` (computed without unsafe fixes) whose rules name it
    or, where it has none, those of ``unsafe`` (computed with them).

    Equal suggestions are one object shared by all the findings of a rule (a template
    failing on many profiles holds its fix once).
    """
    kinds: list[tuple[Applicability, Fix, dict[Edit, BitmapChange]]] = [
        ("safe", safe, bitmap_changes(safe.original, safe.edits))]
    if unsafe is not None:
        kinds.append(("unsafe", unsafe, bitmap_changes(unsafe.original, unsafe.edits)))
    by_rule: dict[tuple[str, str], tuple[SuggestedFix, ...]] = {}

    def suggested(finding: Finding) -> tuple[SuggestedFix, ...]:
        key = (finding.rule, finding.name)
        found = by_rule.get(key)
        if found is None:
            ways: list[SuggestedFix] = []
            for applicability, fix, changes in kinds:
                own = tuple(edit for edit in fix.edits
                            if finding.name in edit.rules or finding.rule in edit.rules)
                if own:  # the safe fix where there is one, else the unsafe one
                    ways.append(SuggestedFix(applicability, own,
                                             tuple(dict.fromkeys(changes[e] for e in own))))
                    break
            found = by_rule[key] = tuple(ways)
        return found

    out = []
    for subject in subjects:
        findings = []
        for finding in subject.findings:
            ways = suggested(finding)
            findings.append(attrs.evolve(finding, fixes=ways) if ways else finding)
        out.append(attrs.evolve(subject, findings=findings)
                   if any(f.fixes for f in findings) else subject)
    return tuple(out)


def _sorted_findings(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=Finding.sort_key))


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


@attrs.frozen
class SkippedPair:
    """A template x profile pair the gate did not check: the template is not for that host."""

    template: str
    profile: str
    reason: str

    def to_json(self) -> dict[str, object]:
        """Return the pair as a JSON object."""
        return {"template": self.template, "profile": self.profile, "reason": self.reason}

    def text(self) -> str:
        """Return the pair as one report line."""
        return f"{self.template} on {self.profile}: not checked: {self.reason}"


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

    def merge(self, other: Report) -> Report:
        """Return a report holding the subjects of both."""
        return Report(self.subjects + other.subjects, skipped=self.skipped + other.skipped)

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
