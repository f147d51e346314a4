"""The GitHub Actions format: one workflow command per finding, shown on the template line.

``::error file=…,line=…,col=…,title=…::message``, escaped as the workflow-commands
reference asks: ``%``, CR and LF in the message; the same plus ``:`` and ``,`` in property
values. Errors are ``error``, warnings ``warning``, infos ``notice``; in a regression gate
with ``--fail-on new``, findings the change did not introduce are shown as ``notice``.
A plain summary line ends the output.
"""

from __future__ import annotations

import os

from xstate_check.formats._findings import counts, finding_location, findings_with_state
from xstate_check.report import Report, Severity

__all__ = ["escape_data", "escape_property", "render_github"]

_LEVELS: dict[Severity, str] = {"error": "error", "warning": "warning", "info": "notice"}


def escape_data(text: str) -> str:
    """Escape a workflow command's message: ``%``, CR and LF."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value: as data, plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _relative(path: str) -> str:
    """Return ``path`` relative to the working folder (the workspace) where it lies under it."""
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    if os.path.commonpath([absolute, cwd]) == cwd:
        return os.path.relpath(absolute, cwd).replace(os.sep, "/")
    return path


def render_github(report: Report) -> str:
    """Return the report as GitHub Actions workflow commands, one per finding."""
    lines: list[str] = []
    for subject in report.subjects:
        baseline = subject.details.get("baseline")
        for finding, state in findings_with_state(subject):
            level = _LEVELS[finding.severity] if counts(subject, state) else "notice"
            properties: list[str] = []
            where = finding_location(finding, subject)
            if where is not None:
                properties.append(f"file={escape_property(_relative(where.path))}")
                if where.line:
                    properties.append(f"line={where.line}")
                    if where.column:
                        properties.append(f"col={where.column}")
            title = f"{finding.rule} {finding.name} ({subject.name})"
            if state == "unchanged":
                title += f" present at {baseline}"
            properties.append(f"title={escape_property(title)}")
            message = (
                f"{finding.message}\nConsequence: {finding.consequence}\nFix: {finding.fix}"
            )
            lines.append(f"::{level} {','.join(properties)}::{escape_data(message)}")
    lines.append(f"xstate-check: {report.summary_text()}")
    return "\n".join(lines) + "\n"
