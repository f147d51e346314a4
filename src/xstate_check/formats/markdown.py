"""The Markdown format, for ``$GITHUB_STEP_SUMMARY`` and review comments.

First the template x profile matrix with the worst severity per cell (``not for host`` for
the pairs the gate did not check), then the problems grouped by rule, each with its
template line, the profiles it was seen on, and the fix; where the template's fix has edits
for it, the suggested bitmap of each modifier (leaf, subleaf, register, line, old and new
bitmap), unsafe ones marked so.
"""

from __future__ import annotations

import sys
from typing import IO

from xstate_check.errors import printable
from xstate_check.formats._findings import (
    ProblemCollector,
    repo_path,
    repo_root,
    shown,
)
from xstate_check.formats.stream import Tally
from xstate_check.report import SkippedPair, SubjectReport, SuggestedFix

__all__ = ["MarkdownWriter"]

_MARK = {"error": "**error**", "warning": "warning", "info": "info", None: "ok"}
_RANK = {"error": 0, "warning": 1, "info": 2}


def _cell(text: str) -> str:
    """Return text safe inside a Markdown table cell: one line, no bare pipes or markup."""
    flat = printable(" ".join(text.split()))
    for char in "\\|`*_<>[]":
        flat = flat.replace(char, f"\\{char}")
    return flat


def _code(path: str) -> str:
    """Return a path for a code span: control characters escaped, no backtick to end it."""
    return "`" + printable(path).replace("`", "'") + "`"


def _suggestions(fixes: tuple[SuggestedFix, ...]) -> list[str]:
    """Return one list item per modifier each fix changes: where, old -> new, how applied."""
    items: list[str] = []
    for fix in fixes:
        how = "safe, `--fix`" if fix.applicability == "safe" else \
            "**unsafe**, `--fix --unsafe-fixes`"
        for change in fix.bitmaps:
            bitmaps = f"new modifier {_code(change.new)}" if change.old is None else \
                f"{_code(change.old)} &rarr; {_code(change.new)}"
            items.append(f"  - suggested: leaf {change.leaf:#x} subleaf {change.subleaf:#x} "
                         f"{_cell(change.register)}, line {change.line}: {bitmaps} ({how})")
    return items


class MarkdownWriter:
    """Writes Markdown once every subject is in: a cell per pair, problems grouped."""

    def __init__(self, out: IO[str], *, min_severity: str | None = None,
                 strict: bool = False) -> None:
        self.out = out
        self.min_severity = min_severity
        self.strict = strict
        self.root = repo_root()
        self._rows: dict[str, dict[str, str | None]] = {}
        self._columns: dict[str, None] = {}
        self._problems = ProblemCollector(min_severity)

    def subject(self, subject: SubjectReport) -> None:
        """Take one subject's worst severity for its cell, and its problems."""
        row = repo_path(subject.template, self.root) if subject.template else subject.source
        column = sys.intern(str(subject.details.get("profile") or subject.name))
        self._columns.setdefault(column)
        worst = min((f.severity for f in subject.findings
                     if shown(f.severity, self.min_severity)
                     and subject.counts(f)),
                    key=_RANK.__getitem__, default=None)
        self._rows.setdefault(row, {})[column] = worst
        self._problems.add(subject)

    def skipped(self, pair: SkippedPair) -> None:
        """Mark one pair's cell ``not for host``."""
        column = sys.intern(pair.profile)
        self._columns.setdefault(column)
        self._rows.setdefault(repo_path(pair.template, self.root), {})[column] = "skip"

    def finish(self, tally: Tally) -> None:
        """Write the summary, the matrix and the problems by rule."""
        root = self.root
        rows, columns = self._rows, self._columns
        lines = ["# xstate-check", "", tally.summary_text(), ""]
        if rows:
            names = list(columns)
            lines.append("| template | " + " | ".join(_cell(n) for n in names) + " |")
            lines.append("| --- |" + " --- |" * len(names))
            for row, cells in rows.items():
                shown_cells = []
                for name in names:
                    if name not in cells:
                        shown_cells.append("")
                    elif cells[name] == "skip":
                        shown_cells.append("not for host")
                    else:
                        shown_cells.append(_MARK[cells[name]])
                lines.append(f"| {_cell(row)} | " + " | ".join(shown_cells) + " |")
            lines.append("")
        by_rule: dict[str, list[str]] = {}
        for problem in self._problems.problems():
            finding = problem.first
            where = problem.location
            place = (_code(f"{repo_path(where.path, root)}:{where.line}") if where is not None
                     and where.line else (_code(repo_path(where.path, root)) if where else ""))
            state = f" ({problem.state})" if problem.state else ""
            failing = problem.counts and (problem.severity == "error" or
                                          (self.strict and problem.severity == "warning"))
            mark = _MARK[problem.severity] + (" (fails)" if failing else "")
            item = (f"- {mark}{state} {place} on {_cell(problem.where)}: "
                    f"{_cell(finding.message)}\n  - fix: {_cell(finding.fix)}")
            if finding.fixes:
                item += "\n" + "\n".join(_suggestions(finding.fixes))
            by_rule.setdefault(f"{finding.rule} {finding.name}", []).append(item)
        if by_rule:
            lines.append("## Problems by rule")
            lines.append("")
            for rule, items in by_rule.items():
                lines.append(f"### {rule}")
                lines.append("")
                lines.extend(items)
                lines.append("")
        self.out.write("\n".join(lines) + "\n")
