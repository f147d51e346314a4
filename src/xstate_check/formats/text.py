"""The text format, for a person at a terminal or in a log.

A check or host report lists each subject with the facts read and its findings. A gate
report lists each problem once, most severe first, at its template line with the profiles
it was seen on (a template line that breaks eight profiles is one entry); infos are counted,
not listed, unless ``min_severity="info"``; then the pairs not for their host, then the
summary. Every text that can come from input (names, paths, a dump's ``source``, messages
quoting input) is shown with its control characters escaped: input cannot colour, move the
cursor or forge a line such as "no findings".
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import attrs

from xstate_check.errors import printable
from xstate_check.formats._findings import (
    Problem,
    ProblemCollector,
    repo_path,
    repo_root,
    shown,
)
from xstate_check.formats.stream import Tally, copy_spool, spool, write_report
from xstate_check.report import Finding, Report, SkippedPair, SubjectReport

__all__ = ["TextWriter", "render_text"]

_COLORS = {"error": "\x1b[1;31m", "warning": "\x1b[1;33m", "info": "\x1b[1;36m"}
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{_RESET}" if color else text


def _mark(finding: Finding) -> str:
    """Return `` [*]`` for a finding ``--fix`` removes (a safe fix), as ruff marks them."""
    return " [*]" if any(fix.applicability == "safe" for fix in finding.fixes) else ""


def _suggested(finding: Finding, indent: str, color: bool) -> list[str]:
    """Return one line per modifier a finding's fix changes, with its applicability."""
    return [_paint(f"{indent}suggested ({fix.applicability}): {printable(change.text())}",
                   _DIM, color)
            for fix in finding.fixes for change in fix.bitmaps]


def _finding(finding: Finding, color: bool) -> list[str]:
    label = _paint(finding.severity, _COLORS[finding.severity], color)
    state = f" ({finding.baseline_state})" if finding.baseline_state else ""
    lines = [f"  {label} {finding.rule} {finding.name}{_mark(finding)}{state}: "
             f"{printable(finding.message)}"]
    if finding.location is not None:
        lines.append(f"    at {printable(str(finding.location))}")
    lines.append(_paint(f"    consequence: {printable(finding.consequence)}", _DIM, color))
    lines.append(_paint(f"    fix: {printable(finding.fix)}", _DIM, color))
    lines.extend(_suggested(finding, "    ", color))
    return lines


def _subject(subject: SubjectReport, color: bool) -> list[str]:
    title = subject.name
    if subject.template:
        title += f" + template {subject.template}"
    lines = [_paint(printable(title), _BOLD, color)]
    for key, value in subject.details.items():
        if isinstance(value, (str, int, bool)) or value is None:
            lines.append(printable(f"  {key}: {value}"))
        elif isinstance(value, (list, tuple)):
            # Notes say what could not be read: a report must not look whole when it is not.
            label = "note" if key == "notes" else key
            lines.extend(printable(f"  {label}: {item}") for item in value)
    if not subject.findings:
        lines.append("  no findings")
    for finding in subject.findings:
        lines.extend(_finding(finding, color))
    return lines


_ORDER = {"error": 0, "warning": 1, "info": 2}


def _problem(problem: Problem, color: bool, root: Path | None) -> list[str]:
    finding = problem.first
    label = _paint(problem.severity, _COLORS[problem.severity], color)
    where = problem.location
    place = ""
    if where is not None:
        place = printable(repo_path(where.path, root))
        if where.line:
            place += f":{where.line}:{where.column}" if where.column else f":{where.line}"
        place += ": "
    state = f" ({problem.state})" if problem.state else ""
    return [
        f"{place}{label} {finding.rule} {finding.name}{_mark(finding)}{state}: "
        f"{printable(finding.message)}",
        f"  on {printable(problem.where)}",
        _paint(f"  consequence: {printable(finding.consequence)}", _DIM, color),
        _paint(f"  fix: {printable(finding.fix)}", _DIM, color),
        *_suggested(finding, "  ", color),
    ]


class TextWriter:
    """Writes the text format subject by subject (a gate's problems at the end)."""

    def __init__(self, out: IO[str], *, kind: str = "check", color: bool = False,
                 quiet: bool = False, min_severity: str | None = None,
                 fix_hint: bool = True) -> None:
        self.out = out
        self.fix_hint = fix_hint
        self.color = color
        self.quiet = quiet
        self.min_severity = min_severity
        self.gate = kind == "gate" and not quiet
        self._notes: IO[str] | None = None
        #: The pairs not checked of the template last seen, not yet in the notes.
        self._template: list[SkippedPair] = []
        self._listed = ProblemCollector(min_severity or "warning")
        self._all = ProblemCollector() if min_severity is None else None

    def subject(self, subject: SubjectReport) -> None:
        """Write one subject (a gate's: group its findings into problems)."""
        if self.gate:
            self._listed.add(subject)
            if self._all is not None:
                self._all.add(subject)
            return
        if self.min_severity is not None:
            subject = attrs.evolve(subject, findings=tuple(
                f for f in subject.findings if shown(f.severity, self.min_severity)))
        lines: list[str] = []
        if self.quiet:
            for finding in subject.findings:
                lines.append(f"{printable(subject.name)}: "
                             + _finding(finding, self.color)[0].lstrip()
                             + (f" ({printable(str(finding.location))})"
                                if finding.location else ""))
        else:
            lines.extend(_subject(subject, self.color))
            lines.append("")
        if lines:
            self.out.write("\n".join(lines) + "\n")

    def skipped(self, pair: SkippedPair) -> None:
        """Keep one pair not checked for the notes (a template's pairs lacking the same
        entries are one note: its pairs come one after the other)."""
        if self.quiet:
            return
        if self._template and self._template[0].template != pair.template:
            self._fold()
        self._template.append(pair)

    def _fold(self) -> None:
        """Write the kept pairs of one template to the notes."""
        if not self._template:
            return
        from xstate_check.reportparts import folded_text

        if self._notes is None:
            self._notes = spool()
        self._notes.write("".join(printable(line) + "\n"
                                  for line in folded_text(self._template)))
        self._template = []

    def finish(self, tally: Tally) -> None:
        """Write a gate's problems, then the notes and the summary."""
        if self.quiet:
            return
        out = self.out
        if self.gate:
            root = repo_root()
            listed = self._listed.problems()
            listed.sort(key=lambda p: _ORDER[p.severity])
            lines: list[str] = []
            for problem in listed:
                lines.extend(_problem(problem, self.color, root))
                lines.append("")
            if self._all is not None:
                hidden = len(self._all.problems()) - len(listed)
                if hidden:
                    lines.append(f"{hidden} harmless info problem{'' if hidden == 1 else 's'} "
                                 "not listed (--min-severity info lists them)")
                    lines.append("")
            if lines:
                out.write("\n".join(lines) + "\n")
        self._fold()
        if self._notes is not None:
            copy_spool(self._notes, out)
            out.write("\n")
        out.write(tally.summary_text() + "\n")
        hint = tally.fix_text() if self.fix_hint else ""
        if hint:
            out.write(hint + "\n")


def render_text(report: Report, *, color: bool = False, quiet: bool = False,
                min_severity: str | None = None) -> str:
    """Return the report as text; ANSI colours only when ``color`` is true.

    ``quiet``: the findings alone (with their subject), no details, no summary.
    """
    out = io.StringIO()
    write_report(report, TextWriter(out, kind=report.kind, color=color, quiet=quiet,
                                    min_severity=min_severity))
    return out.getvalue()
