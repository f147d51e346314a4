"""What the CI formats (sarif, junit, github) share: regression state and where a finding is.

A gate in regression mode (``gate --changed-since REV``) marks each finding ``new`` (the
change introduced it) or ``unchanged`` (REV had it) in ``Finding.baseline_state`` and records
the policy in each subject's ``details`` (``fail_on``). Reports outside one read as "every
finding counts".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import attrs

from xstate_check.errors import Location
from xstate_check.report import BaselineState, Finding, Report, Severity, SubjectReport

__all__ = [
    "BaselineState",
    "Problem",
    "finding_location",
    "findings_with_state",
    "problems",
    "repo_path",
    "repo_root",
    "shown",
]


def findings_with_state(subject: SubjectReport) -> Iterator[tuple[Finding, BaselineState]]:
    """Yield each finding of ``subject`` with its regression state (None outside one)."""
    for finding in subject.findings:
        yield finding, finding.baseline_state




def finding_location(finding: Finding, subject: SubjectReport) -> Location | None:
    """Return where a finding points: its own location, else the subject's template file."""
    if finding.location is not None:
        return finding.location
    if subject.template:
        return Location(subject.template)
    return None


_RANK = {"error": 0, "warning": 1, "info": 2}


def shown(severity: str, min_severity: str | None) -> bool:
    """Return whether a finding of ``severity`` is shown at ``min_severity`` (None: all)."""
    return min_severity is None or _RANK[severity] <= _RANK[min_severity]


@attrs.frozen
class Problem:
    """One problem: the findings of one rule at one place, on one or more subjects.

    A gate sees the same template line break on many profiles; CI formats report it once,
    naming the profiles. ``severity`` is the worst, ``state`` ``new`` if any finding is new,
    ``counts`` whether any can fail the run.
    """

    first: Finding
    location: Location | None
    severity: Severity
    subjects: tuple[str, ...]
    state: BaselineState
    counts: bool
    baseline: str | None

    @property
    def where(self) -> str:
        """Return the subjects the problem was seen on, as text."""
        names = self.subjects
        if len(names) == 1:
            return names[0]
        return f"{len(names)} profiles: {', '.join(names)}"


def _subject_label(subject: SubjectReport) -> str:
    profile = subject.details.get("profile")
    return str(profile) if profile else subject.name


def problems(report: Report, min_severity: str | None = None) -> list[Problem]:
    """Return the report's findings grouped by (rule, file, line), in first-seen order."""
    groups: dict[tuple[str, str, int], list[tuple[Finding, SubjectReport]]] = {}
    for subject in report.subjects:
        for finding in subject.findings:
            if not shown(finding.severity, min_severity):
                continue
            where = finding_location(finding, subject)
            key = (finding.rule, where.path if where else "", where.line if where else 0)
            groups.setdefault(key, []).append((finding, subject))
    out: list[Problem] = []
    for members in groups.values():
        first, subject = members[0]
        severity = min((f.severity for f, _ in members), key=_RANK.__getitem__)
        states = {f.baseline_state for f, _ in members}
        state: BaselineState = "new" if "new" in states else (
            "unchanged" if "unchanged" in states else None)
        labels = tuple(dict.fromkeys(_subject_label(s) for _, s in members))
        baseline = subject.details.get("baseline")
        out.append(Problem(
            first=first, location=finding_location(first, subject), severity=severity,
            subjects=labels, state=state,
            counts=any(s.counts(f) for f, s in members),
            baseline=str(baseline) if baseline else None,
        ))
    return out


def repo_root(start: str | None = None) -> Path | None:
    """Return the git work tree holding ``start`` (default: cwd), or None outside one."""
    folder = Path(os.path.abspath(start or os.getcwd()))
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def repo_path(path: str, root: Path | None) -> str:
    """Return ``path`` relative to the repository root where it lies under it, else absolute."""
    absolute = Path(os.path.abspath(path))
    if root is not None:
        try:
            return absolute.relative_to(root).as_posix()
        except ValueError:
            pass
    return absolute.as_posix()
