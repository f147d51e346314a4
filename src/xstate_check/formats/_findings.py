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
    "ProblemCollector",
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


class _Group:
    """What a problem keeps while subjects go by: its first finding and small aggregates."""

    __slots__ = ("baseline", "counts", "first", "labels", "location", "severity", "states")

    def __init__(self, finding: Finding, subject: SubjectReport) -> None:
        self.first = finding
        self.location = finding_location(finding, subject)
        baseline = subject.details.get("baseline")
        self.baseline = str(baseline) if baseline else None
        self.severity: Severity = finding.severity
        self.states: set[BaselineState] = set()
        self.labels: dict[str, None] = {}
        self.counts = False


class ProblemCollector:
    """Groups findings into problems as subjects go by (one subject at a time).

    It keeps one small record per distinct (rule, file, line) and none per subject, so a
    streamed gate's memory follows the number of problems, not of template x profile pairs.
    """

    def __init__(self, min_severity: str | None = None) -> None:
        self.min_severity = min_severity
        self._groups: dict[tuple[str, str, int], _Group] = {}

    def add(self, subject: SubjectReport) -> None:
        """Add the findings of one subject."""
        groups = self._groups
        label: str | None = None
        least = _RANK[self.min_severity] if self.min_severity is not None else None
        # SubjectReport.counts, asked once per subject: only a finding REV already had, in
        # a gate failing on new findings, does not count.
        only_new = subject.details.get("fail_on") == "new"
        for finding in subject.findings:
            if least is not None and _RANK[finding.severity] > least:
                continue
            where = finding.location
            if where is None and subject.template:
                where = Location(subject.template)
            key = (finding.rule, where.path, where.line) if where is not None else (
                finding.rule, "", 0)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(finding, subject)
            elif _RANK[finding.severity] < _RANK[group.severity]:
                group.severity = finding.severity
            group.states.add(finding.baseline_state)
            if label is None:
                label = _subject_label(subject)
            group.labels[label] = None
            if not group.counts and not (only_new and finding.baseline_state == "unchanged"):
                group.counts = True

    def problems(self) -> list[Problem]:
        """Return the problems so far, in first-seen order."""
        out: list[Problem] = []
        for group in self._groups.values():
            states = group.states
            state: BaselineState = "new" if "new" in states else (
                "unchanged" if "unchanged" in states else None)
            out.append(Problem(
                first=group.first, location=group.location, severity=group.severity,
                subjects=tuple(group.labels), state=state, counts=group.counts,
                baseline=group.baseline,
            ))
        return out


def problems(report: Report, min_severity: str | None = None) -> list[Problem]:
    """Return the report's findings grouped by (rule, file, line), in first-seen order."""
    collector = ProblemCollector(min_severity)
    for subject in report.subjects:
        collector.add(subject)
    return collector.problems()


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

