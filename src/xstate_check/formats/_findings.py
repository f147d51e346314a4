"""What the CI formats (sarif, junit, github) share: regression state and where a finding is.

A gate in regression mode (``gate --changed-since REV``) records in each subject's
``details`` the revision compared with (``baseline``), the policy (``fail_on``), and for
each finding, in order, whether the change introduced it (``baseline_state``: ``new`` or
``unchanged``). Reports without these details (``check``, ``host``) read as "every finding
counts".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from xstate_check.errors import Location
from xstate_check.report import Finding, SubjectReport

__all__ = ["BaselineState", "counts", "finding_location", "findings_with_state"]

BaselineState = Literal["new", "unchanged"] | None


def findings_with_state(subject: SubjectReport) -> Iterator[tuple[Finding, BaselineState]]:
    """Yield each finding of ``subject`` with its regression state (None outside one)."""
    states = subject.details.get("baseline_state")
    for index, finding in enumerate(subject.findings):
        state: BaselineState = None
        if isinstance(states, (list, tuple)) and index < len(states):
            value = states[index]
            if value in ("new", "unchanged"):
                state = value
        yield finding, state


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
