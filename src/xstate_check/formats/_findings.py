"""What the CI formats (sarif, junit, github) share: regression state and where a finding is.

A gate in regression mode (``gate --changed-since REV``) marks each finding ``new`` (the
change introduced it) or ``unchanged`` (REV had it) in ``Finding.baseline_state`` and records
the policy in each subject's ``details`` (``fail_on``). Reports outside one read as "every
finding counts".
"""

from __future__ import annotations

from collections.abc import Iterator

from xstate_check.errors import Location
from xstate_check.report import BaselineState, Finding, SubjectReport

__all__ = ["BaselineState", "counts", "finding_location", "findings_with_state"]


def findings_with_state(subject: SubjectReport) -> Iterator[tuple[Finding, BaselineState]]:
    """Yield each finding of ``subject`` with its regression state (None outside one)."""
    for finding in subject.findings:
        yield finding, finding.baseline_state


def counts(subject: SubjectReport, state: BaselineState) -> bool:
    """Return whether a finding in ``state`` can fail the run (fail_on=new skips old ones)."""
    return not (subject.details.get("fail_on") == "new" and state == "unchanged")


def finding_location(finding: Finding, subject: SubjectReport) -> Location | None:
    """Return where a finding points: its own location, else the subject's template file."""
    if finding.location is not None:
        return finding.location
    if subject.template:
        return Location(subject.template)
    return None
