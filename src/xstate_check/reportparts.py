"""The parts of a report only the fix and gate outputs use: suggested fixes, the bitmaps they
change, the pairs a gate did not check. ``report`` gives them under its own names, importing
this module on first use, so that a check creates none of these classes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from xstate_check.report import Finding, SubjectReport

if TYPE_CHECKING:
    from xstate_check.fixes import Applicability, Edit, Fix

__all__ = [
    "BitmapChange",
    "SkippedPair",
    "SuggestedFix",
    "attach_fixes",
    "bitmap_changes",
    "edit_to_json",
    "folded_text",
]


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
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


def _inserted_bitmap(edit: Edit) -> str:
    """Return the bitmap of ``edit.register`` in an inserted register or cpuid modifier."""
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


@attrs.frozen
class SkippedPair:
    """A template x profile pair the gate did not check: the template is not for that host."""

    template: str
    profile: str
    reason: str
    #: The entries the template modifies and the profile lacks, as the reason names them
    #: (``0x7.0x1, 0xd.0x11``): pairs of one template lacking the same are one line of the
    #: text report (``folded_text``). Not part of the JSON.
    lacking: str = attrs.field(default="", eq=False)

    def to_json(self) -> dict[str, object]:
        """Return the pair as a JSON object."""
        return {"template": self.template, "profile": self.profile, "reason": self.reason}

    def text(self) -> str:
        """Return the pair as one report line."""
        return f"{self.template} on {self.profile}: not checked: {self.reason}"


def folded_text(pairs: Sequence[SkippedPair]) -> list[str]:
    """Return the report lines of one template's pairs not checked: one per pair, except
    that pairs lacking the same entries share one line, and a line of their profiles."""
    groups: dict[object, list[SkippedPair]] = {}
    for pair in pairs:
        # A pair without ``lacking`` (made elsewhere) stays a line of its own.
        groups.setdefault(pair.lacking or (pair.profile,), []).append(pair)
    lines: list[str] = []
    for lacking, group in groups.items():
        if len(group) == 1 or not isinstance(lacking, str):
            lines.extend(pair.text() for pair in group)
            continue
        lines.append(f"{group[0].template}: not checked on {len(group)} profiles, not for "
                     f"their host: the template modifies CPUID {lacking} (leaf.subleaf), "
                     "which they lack")
        lines.append("  on " + ", ".join(pair.profile for pair in group))
    return lines
