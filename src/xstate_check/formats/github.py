"""The GitHub Actions format: one workflow command per problem, shown on the template line.

``::error file=…,line=…,col=…,title=…::message``, escaped as the workflow-commands
reference asks: ``%``, CR and LF in the message; the same plus ``:`` and ``,`` in property
values. Errors are ``error``, warnings ``warning``, infos ``notice``; in a regression gate
with ``--fail-on new``, findings the change did not introduce are shown as ``notice``. A
problem seen on several profiles is one annotation naming them, with the suggested bitmaps
of its template's fix where it has one; file paths are relative to
the repository root; infos are left out unless asked. A ``::notice`` with the summary ends
the output: every line is a workflow command. Other control characters from input are
escaped as text (``\\x1b``), so nothing from a template or a file name can start a workflow
command of its own. ``render_github_error`` writes an input error the same way, for stderr.
"""

from __future__ import annotations

from typing import IO

from xstate_check.errors import InputError, printable
from xstate_check.formats._findings import (
    ProblemCollector,
    repo_path,
    repo_root,
)
from xstate_check.formats.stream import Tally
from xstate_check.report import Severity, SkippedPair, SubjectReport

__all__ = ["GithubWriter", "escape_data", "escape_property", "render_github_error"]

_LEVELS: dict[Severity, str] = {"error": "error", "warning": "warning", "info": "notice"}


def escape_data(text: str) -> str:
    """Escape a workflow command's message: ``%``, CR and LF."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value: as data, plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _data(*lines: str) -> str:
    """Return lines as one message: other controls as text, then %, CR and LF escaped."""
    return escape_data("\n".join(printable(line, keep="\r\n") for line in lines))


def _property(text: str) -> str:
    return escape_property(printable(text, keep="\r\n"))


class GithubWriter:
    """Writes one workflow command per problem, once every subject is in."""

    def __init__(self, out: IO[str], *, min_severity: str | None = "warning") -> None:
        self.out = out
        self._problems = ProblemCollector(min_severity)

    def subject(self, subject: SubjectReport) -> None:
        """Group one subject's findings into problems."""
        self._problems.add(subject)

    def skipped(self, pair: SkippedPair) -> None:
        """Pairs not checked are counted in the summary only."""

    def finish(self, tally: Tally) -> None:
        """Write the annotations and the summary notice."""
        root = repo_root()
        lines: list[str] = []
        for problem in self._problems.problems():
            finding = problem.first
            level = _LEVELS[problem.severity] if problem.counts else "notice"
            properties: list[str] = []
            where = problem.location
            if where is not None:
                properties.append(f"file={_property(repo_path(where.path, root))}")
                if where.line:
                    properties.append(f"line={where.line}")
                    if where.column:
                        properties.append(f"col={where.column}")
            title = f"{finding.rule} {finding.name} ({problem.where})"
            if problem.state == "unchanged" and problem.baseline:
                title += f" present at {problem.baseline}"
            properties.append(f"title={_property(title)}")
            message = _data(finding.message, f"Consequence: {finding.consequence}",
                            f"Fix: {finding.fix}",
                            *(f"Suggested ({fix.applicability}): {change.text()}"
                              for fix in finding.fixes for change in fix.bitmaps))
            lines.append(f"::{level} {','.join(properties)}::{message}")
        lines.append(f"::notice title=xstate-check::{escape_data(tally.summary_text())}")
        self.out.write("\n".join(lines) + "\n")


def render_github_error(message: str, error: InputError | None = None) -> str:
    """Return one ``::error`` workflow command for a failure of the run (bad input, usage).

    ``message`` is the whole text (already escaped for a terminal); an ``InputError`` also
    gives the file, line and column of the annotation. Nothing in it can end the command
    or start another one.
    """
    properties: list[str] = []
    if error is not None and error.location.path:
        properties.append(f"file={_property(repo_path(error.location.path, repo_root()))}")
        if error.location.line:
            properties.append(f"line={error.location.line}")
            if error.location.column:
                properties.append(f"col={error.location.column}")
    properties.append("title=xstate-check")
    return f"::error {','.join(properties)}::{escape_data(message)}\n"
